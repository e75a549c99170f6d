//! The custody operations of a sealed service (`Keyward.InitCustody`,
//! `Keyward.GetUnsealDocument`, `Keyward.Unseal`) and [`unseal_with_share`],
//! the one unseal path `kmsctl unseal` and `keyward dev` both run.
//!
//! These operations are unauthenticated (a sealed service can read no
//! credential): use [`Client::unauthenticated`]. Their inputs authenticate
//! themselves — shares by the digests in the boot record, the unseal
//! message by the attested session key — and what comes back is checked
//! here: every share package of a genesis must be the one asked for.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::{
    CustodyError, CustodyKey, DeploymentId, OperatorCredentialPackage, PublicKey, SharePackage, UnsealMessage,
    deployment_hex, seal_share_fresh_for_at,
};
use crate::attestation::TrustAnchor;
use crate::{Client, Error, KEYWARD_TARGET_PREFIX};

/// `"Ready"`: the service holds its root and answers the API.
pub const STATE_READY: &str = "Ready";
/// `"Sealed"`: the service waits for genesis or for its custodians.
pub const STATE_SEALED: &str = "Sealed";

/// The PCRs a custodian expects, index → value.
pub type ExpectedPcrs = BTreeMap<u8, Vec<u8>>;

/// What `Keyward.InitCustody` creates: an M-of-N Shamir custody.
#[derive(Debug, Clone)]
pub struct InitCustodyRequest {
    /// M, the shares an unseal needs (1 ≤ M ≤ N ≤ 16).
    pub threshold: u8,
    /// The custodians' public keys; custodian *i* is the key at position *i − 1*.
    pub custodians: Vec<PublicKey>,
    /// The key the operator's first credential is sealed to (required in
    /// nitro mode; in mock mode the operator credential may come from the
    /// environment instead).
    pub operator_key: Option<PublicKey>,
}

/// What genesis returned, checked against the request.
#[derive(Debug, Clone)]
pub struct InitCustodyOutput {
    pub deployment_id: DeploymentId,
    /// One per custodian, in the order of the request.
    pub share_packages: Vec<SharePackage>,
    /// Present iff an operator key was given.
    pub operator_credential: Option<OperatorCredentialPackage>,
    /// The root commitment: the audit signing public key (SPKI DER).
    pub root_commitment: Vec<u8>,
    pub state: String,
}

/// A sealed service's current unseal-session document (not yet verified).
#[derive(Debug, Clone)]
pub struct UnsealDocument {
    /// The deployment the service says it unseals (the verified document's
    /// binding is what counts).
    pub deployment_id: String,
    /// COSE_Sign1 attestation document: the session key in `public_key`,
    /// the unseal binding in `user_data`, the caller's nonce.
    pub document: Vec<u8>,
    pub received: u32,
    pub threshold: u32,
    pub state: String,
}

/// Where an unseal stands after a share was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnsealProgress {
    /// Shares accepted in this unseal session.
    pub received: u32,
    /// Shares needed.
    pub threshold: u32,
    /// [`STATE_SEALED`] or [`STATE_READY`].
    pub state: String,
}

impl UnsealProgress {
    pub fn is_ready(&self) -> bool {
        self.state == STATE_READY
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InitCustodyBody {
    threshold: u8,
    custodian_public_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator_public_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitCustodyResponse {
    deployment_id: String,
    share_packages: Vec<String>,
    #[serde(default)]
    operator_credential: Option<String>,
    root_commitment: String,
    state: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NonceBody {
    nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UnsealDocumentResponse {
    deployment_id: String,
    document: String,
    received: u32,
    threshold: u32,
    state: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MessageBody {
    message: String,
}

const INIT_CUSTODY: &str = "InitCustody";
const GET_UNSEAL_DOCUMENT: &str = "GetUnsealDocument";
const UNSEAL: &str = "Unseal";
const GET_CHECKPOINT: &str = "GetCheckpoint";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckpointResponse {
    checkpoint: String,
}

fn decode_error(operation: &str, reason: String) -> Error {
    Error::Decode {
        operation: format!("{KEYWARD_TARGET_PREFIX}{operation}"),
        reason,
    }
}

fn base64_field(operation: &str, field: &str, text: &str) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(text)
        .map_err(|e| decode_error(operation, format!("{field} is not base64: {e}")))
}

impl Client {
    /// `Keyward.InitCustody`: genesis of a new deployment (only a service
    /// awaiting genesis accepts it). The answer is checked before it is
    /// returned: one package per custodian, each sealed to that custodian's
    /// key at its index, all of one deployment, threshold, size and root
    /// commitment, and an operator credential sealed to the operator key
    /// iff one was given.
    pub async fn init_custody(&self, request: &InitCustodyRequest) -> Result<InitCustodyOutput, Error> {
        let body = InitCustodyBody {
            threshold: request.threshold,
            custodian_public_keys: request
                .custodians
                .iter()
                .map(|k| STANDARD.encode(k.as_bytes()))
                .collect(),
            operator_public_key: request.operator_key.map(|k| STANDARD.encode(k.as_bytes())),
        };
        let response: InitCustodyResponse = self
            .call(&format!("{KEYWARD_TARGET_PREFIX}{INIT_CUSTODY}"), &body)
            .await?;
        let fail = |reason: String| decode_error(INIT_CUSTODY, reason);
        let deployment_id = keyward_custody::parse_deployment_hex(&response.deployment_id).ok_or_else(|| {
            fail(format!(
                "DeploymentId {:?} is not 32 hex digits",
                response.deployment_id
            ))
        })?;
        let root_commitment = base64_field(INIT_CUSTODY, "RootCommitment", &response.root_commitment)?;
        if response.share_packages.len() != request.custodians.len() {
            return Err(fail(format!(
                "{} share packages for {} custodians",
                response.share_packages.len(),
                request.custodians.len()
            )));
        }
        let n = request.custodians.len();
        let mut share_packages = Vec::with_capacity(n);
        for (i, (text, key)) in response.share_packages.iter().zip(&request.custodians).enumerate() {
            let bytes = base64_field(INIT_CUSTODY, "SharePackages", text)?;
            let package =
                SharePackage::from_bytes(&bytes).map_err(|e| fail(format!("share package {}: {e}", i + 1)))?;
            let expected = (
                deployment_id,
                i + 1,
                usize::from(request.threshold),
                n,
                *key,
                root_commitment.as_slice(),
            );
            let got = (
                package.deployment_id,
                usize::from(package.custodian_index),
                usize::from(package.threshold),
                usize::from(package.custodians),
                package.custodian_key,
                package.root_commitment.as_slice(),
            );
            if got != expected {
                return Err(fail(format!(
                    "share package {} is not custodian {}'s of this {}-of-{n} deployment {} (swapped or altered)",
                    i + 1,
                    i + 1,
                    request.threshold,
                    deployment_hex(&deployment_id)
                )));
            }
            share_packages.push(package);
        }
        let operator_credential = match (&response.operator_credential, request.operator_key) {
            (None, None) => None,
            (Some(text), Some(key)) => {
                let bytes = base64_field(INIT_CUSTODY, "OperatorCredential", text)?;
                let package = OperatorCredentialPackage::from_bytes(&bytes)
                    .map_err(|e| fail(format!("the operator credential: {e}")))?;
                if package.operator_key != key || package.deployment_id != deployment_id {
                    return Err(fail(
                        "the operator credential is not sealed to the operator key for this deployment".into(),
                    ));
                }
                Some(package)
            }
            (None, Some(_)) => return Err(fail("no OperatorCredential although an operator key was given".into())),
            (Some(_), None) => return Err(fail("an OperatorCredential although no operator key was given".into())),
        };
        Ok(InitCustodyOutput {
            deployment_id,
            share_packages,
            operator_credential,
            root_commitment,
            state: response.state,
        })
    }

    /// `Keyward.GetUnsealDocument`: the current unseal session's attestation
    /// document for `nonce` (1-512 fresh bytes). Verify it before use
    /// ([`super::seal_share_for`]).
    pub async fn get_unseal_document(&self, nonce: &[u8]) -> Result<UnsealDocument, Error> {
        let response: UnsealDocumentResponse = self
            .call(
                &format!("{KEYWARD_TARGET_PREFIX}{GET_UNSEAL_DOCUMENT}"),
                &NonceBody {
                    nonce: STANDARD.encode(nonce),
                },
            )
            .await?;
        Ok(UnsealDocument {
            document: base64_field(GET_UNSEAL_DOCUMENT, "Document", &response.document)?,
            deployment_id: response.deployment_id,
            received: response.received,
            threshold: response.threshold,
            state: response.state,
        })
    }

    /// `Keyward.GetCheckpoint` (a Ready service; unauthenticated): the
    /// store's index epochs now, signed by the root commitment. Not yet
    /// verified: [`super::record_checkpoint`] verifies it.
    pub async fn get_checkpoint(&self) -> Result<keyward_custody::checkpoint::SignedCheckpoint, Error> {
        let response: CheckpointResponse = self
            .call(
                &format!("{KEYWARD_TARGET_PREFIX}{GET_CHECKPOINT}"),
                &serde_json::json!({}),
            )
            .await?;
        let bytes = base64_field(GET_CHECKPOINT, "Checkpoint", &response.checkpoint)?;
        keyward_custody::checkpoint::SignedCheckpoint::from_bytes(&bytes)
            .map_err(|e| decode_error(GET_CHECKPOINT, e.to_string()))
    }

    /// `Keyward.Unseal`: sends one sealed share.
    pub async fn unseal(&self, message: &UnsealMessage) -> Result<UnsealProgress, Error> {
        let bytes = message
            .to_bytes()
            .map_err(|e| Error::Request(format!("encoding the unseal message: {e}")))?;
        self.call(
            &format!("{KEYWARD_TARGET_PREFIX}{UNSEAL}"),
            &MessageBody {
                message: STANDARD.encode(bytes),
            },
        )
        .await
    }
}

/// Unseals with one custodian's share, as of now; see [`unseal_with_share_at`].
pub async fn unseal_with_share(
    client: &Client,
    package: &SharePackage,
    key: &CustodyKey,
    expected_pcrs: &ExpectedPcrs,
    anchor: TrustAnchor,
) -> Result<UnsealProgress, CustodyError> {
    unseal_with_share_at(client, package, key, expected_pcrs, anchor, SystemTime::now()).await
}

/// The custodian's unseal step: opens `package` with `key` (nothing goes
/// out if it does not open), fetches the sealed service's unseal document
/// for a fresh random 32-byte nonce, verifies it as of `now`
/// ([`seal_share_for_at`]: `anchor`, exactly `expected_pcrs`, at most five
/// minutes old, the nonce, the binding of the session key to the share's
/// deployment), and only then sends the share sealed to that session key.
pub async fn unseal_with_share_at(
    client: &Client,
    package: &SharePackage,
    key: &CustodyKey,
    expected_pcrs: &ExpectedPcrs,
    anchor: TrustAnchor,
    now: SystemTime,
) -> Result<UnsealProgress, CustodyError> {
    unseal_with_share_fresh_at(
        client,
        package,
        key,
        expected_pcrs,
        anchor,
        &super::Freshness::default(),
        now,
    )
    .await
}

/// [`unseal_with_share_at`] stating `freshness` to the enclave: the
/// custodian's last checkpoint ([`super::read_checkpoint`]), which the
/// enclave compares with its store before it becomes Ready, and whether
/// the custodian accepts a store older than it (audited).
pub async fn unseal_with_share_fresh_at(
    client: &Client,
    package: &SharePackage,
    key: &CustodyKey,
    expected_pcrs: &ExpectedPcrs,
    anchor: TrustAnchor,
    freshness: &super::Freshness,
    now: SystemTime,
) -> Result<UnsealProgress, CustodyError> {
    let share = key.open_share(package)?;
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let document = client.get_unseal_document(&nonce).await?;
    let message = seal_share_fresh_for_at(
        &document.document,
        anchor,
        &nonce,
        expected_pcrs,
        &share,
        freshness,
        now,
    )?;
    Ok(client.unseal(&message).await?)
}
