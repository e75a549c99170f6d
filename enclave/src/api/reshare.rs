//! `Keyward.ReshareCustody` (operator, audited): replaces the custodians
//! of a Ready Shamir deployment by splitting its root anew
//! (docs/custody.md, "Replacing a custodian by re-sharing").
//!
//! Request: `Threshold` (M', 1 ≤ M' ≤ N'), `CustodianPublicKeys` (base64
//! raw 32-byte X25519 keys, N' ≤ 16, distinct; custodian `i` is the `i`-th).
//! Response: `DeploymentId`, `SharePackages` (base64 CBOR, in the order of
//! the keys), `RootCommitment` (base64 SPKI DER, unchanged), `Threshold`,
//! `Custodians`. With `ExpectedRootCommitment` (base64 SPKI DER) another
//! deployment's enclave refuses before changing anything.

use keyward_custody::{MAX_CUSTODIANS, deployment_hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::custody::public_key;
use super::error::KmsError;
use super::params::{b64, blob, length, parse, render, required};
use crate::context::Ctx;
use crate::custody::reshare::Reshare;
use crate::keystore::custody::reshare_custody as reshare;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReshareCustodyRequest {
    threshold: Option<i64>,
    custodian_public_keys: Option<Vec<String>>,
    /// Base64 SPKI DER: if given, the deployment's root commitment must be
    /// this one (the caller's pinned audit key), or nothing changes.
    expected_root_commitment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReshareCustodyResponse {
    deployment_id: String,
    share_packages: Vec<String>,
    root_commitment: String,
    threshold: u8,
    custodians: usize,
}

pub async fn reshare_custody(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let request: ReshareCustodyRequest = parse(body)?;
    let threshold = required("threshold", request.threshold)?;
    let keys = required("custodianPublicKeys", request.custodian_public_keys)?;
    length("custodianPublicKeys", keys.len(), 1, MAX_CUSTODIANS)?;
    let custodians = keys
        .iter()
        .map(|key| public_key("custodianPublicKeys", key))
        .collect::<Result<Vec<_>, _>>()?;
    let expected_commitment = request
        .expected_root_commitment
        .as_deref()
        .map(|text| blob("expectedRootCommitment", text))
        .transpose()?;
    let request = Reshare {
        // Out of range (negative, huge) is refused by the domain as 0.
        threshold: usize::try_from(threshold).unwrap_or(0),
        custodians,
    };
    let outcome = reshare(ctx, &request, expected_commitment.as_deref()).await?;
    let share_packages = outcome
        .packages
        .iter()
        .map(|package| package.to_bytes().map(|bytes| b64(&bytes)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KmsError::InternalDetail(format!("a share package did not encode: {e}")))?;
    let threshold = match &outcome.record.custody {
        crate::custody::record::CustodyMethod::Shamir { threshold, .. } => *threshold,
        crate::custody::record::CustodyMethod::Kms { .. } => 0,
    };
    render(&ReshareCustodyResponse {
        deployment_id: deployment_hex(&outcome.record.deployment_id),
        share_packages,
        root_commitment: b64(outcome.record.commitment.as_bytes()),
        threshold,
        custodians: outcome.packages.len(),
    })
}
