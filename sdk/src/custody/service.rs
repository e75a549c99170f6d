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

/// What `Keyward.ReshareCustody` asks for: the new M'-of-N' custodians.
#[derive(Debug, Clone)]
pub struct ReshareCustodyRequest {
    /// M', the shares the next unseal needs (1 ≤ M' ≤ N' ≤ 16).
    pub threshold: u8,
    /// The new custodians' public keys; custodian *i* is the key at position *i − 1*.
    pub custodians: Vec<PublicKey>,
}

/// What a re-share returned, checked against the request.
#[derive(Debug, Clone)]
pub struct ReshareCustodyOutput {
    /// The same deployment as before.
    pub deployment_id: DeploymentId,
    /// One per new custodian, in the order of the request.
    pub share_packages: Vec<SharePackage>,
    /// The same root commitment as before (the root did not change).
    pub root_commitment: Vec<u8>,
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

/// `Keyward.InitCustody` of a service under `--custody kms`: no custodians.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InitKeyServiceCustodyBody {
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
struct ReshareCustodyBody {
    threshold: u8,
    custodian_public_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_root_commitment: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReshareCustodyResponse {
    deployment_id: String,
    share_packages: Vec<String>,
    root_commitment: String,
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
const RESHARE_CUSTODY: &str = "ReshareCustody";
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

/// The share packages of a genesis or re-share answer, each checked to be
/// the one asked for: one per custodian, sealed to that custodian's key at
/// its index, all of one deployment, threshold, size and root commitment.
fn checked_packages(
    operation: &str,
    texts: &[String],
    custodians: &[PublicKey],
    threshold: u8,
    deployment_id: &DeploymentId,
    root_commitment: &[u8],
) -> Result<Vec<SharePackage>, Error> {
    let fail = |reason: String| decode_error(operation, reason);
    if texts.len() != custodians.len() {
        return Err(fail(format!(
            "{} share packages for {} custodians",
            texts.len(),
            custodians.len()
        )));
    }
    let n = custodians.len();
    let mut packages = Vec::with_capacity(n);
    for (i, (text, key)) in texts.iter().zip(custodians).enumerate() {
        let bytes = base64_field(operation, "SharePackages", text)?;
        let package = SharePackage::from_bytes(&bytes).map_err(|e| fail(format!("share package {}: {e}", i + 1)))?;
        let expected = (*deployment_id, i + 1, usize::from(threshold), n, *key, root_commitment);
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
                "share package {} is not custodian {}'s of this {threshold}-of-{n} deployment {} (swapped or altered)",
                i + 1,
                i + 1,
                deployment_hex(deployment_id)
            )));
        }
        packages.push(package);
    }
    Ok(packages)
}

/// The `OperatorCredential` of a genesis answer: present iff an operator
/// key was given, and sealed to that key for this deployment.
fn operator_credential(
    text: Option<&str>,
    operator_key: Option<PublicKey>,
    deployment_id: &DeploymentId,
) -> Result<Option<OperatorCredentialPackage>, Error> {
    let fail = |reason: String| decode_error(INIT_CUSTODY, reason);
    match (text, operator_key) {
        (None, None) => Ok(None),
        (Some(text), Some(key)) => {
            let bytes = base64_field(INIT_CUSTODY, "OperatorCredential", text)?;
            let package = OperatorCredentialPackage::from_bytes(&bytes)
                .map_err(|e| fail(format!("the operator credential: {e}")))?;
            if package.operator_key != key || package.deployment_id != *deployment_id {
                return Err(fail(
                    "the operator credential is not sealed to the operator key for this deployment".into(),
                ));
            }
            Ok(Some(package))
        }
        (None, Some(_)) => Err(fail("no OperatorCredential although an operator key was given".into())),
        (Some(_), None) => Err(fail("an OperatorCredential although no operator key was given".into())),
    }
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
        let share_packages = checked_packages(
            INIT_CUSTODY,
            &response.share_packages,
            &request.custodians,
            request.threshold,
            &deployment_id,
            &root_commitment,
        )?;
        let operator_credential = operator_credential(
            response.operator_credential.as_deref(),
            request.operator_key,
            &deployment_id,
        )?;
        Ok(InitCustodyOutput {
            deployment_id,
            share_packages,
            operator_credential,
            root_commitment,
            state: response.state,
        })
    }

    /// `Keyward.InitCustody` of a service whose root a custody key service
    /// keeps (`--custody kms`): the enclave has the key service generate the
    /// root and release it to it alone; there are no share packages. The
    /// operator credential, iff `operator_key` is given, must be sealed to it.
    pub async fn init_key_service_custody(&self, operator_key: Option<PublicKey>) -> Result<InitCustodyOutput, Error> {
        let body = InitKeyServiceCustodyBody {
            operator_public_key: operator_key.map(|k| STANDARD.encode(k.as_bytes())),
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
        if !response.share_packages.is_empty() {
            return Err(fail(
                "share packages from a custody key service genesis (expected none)".into(),
            ));
        }
        let root_commitment = base64_field(INIT_CUSTODY, "RootCommitment", &response.root_commitment)?;
        let operator_credential =
            operator_credential(response.operator_credential.as_deref(), operator_key, &deployment_id)?;
        Ok(InitCustodyOutput {
            deployment_id,
            share_packages: Vec::new(),
            operator_credential,
            root_commitment,
            state: response.state,
        })
    }

    /// `Keyward.ReshareCustody` (operator credentials): the Ready service
    /// splits its root anew for `request`'s custodians and replaces its
    /// boot record; the old shares no longer unseal it. The answer is
    /// checked as [`Client::init_custody`]'s is. `expected_commitment`
    /// (the deployment's pinned audit key, SPKI DER), when given, goes with
    /// the request: an enclave of another deployment refuses before
    /// changing anything, and the answer must carry it too.
    pub async fn reshare_custody(
        &self,
        request: &ReshareCustodyRequest,
        expected_commitment: Option<&[u8]>,
    ) -> Result<ReshareCustodyOutput, Error> {
        let body = ReshareCustodyBody {
            threshold: request.threshold,
            custodian_public_keys: request
                .custodians
                .iter()
                .map(|k| STANDARD.encode(k.as_bytes()))
                .collect(),
            expected_root_commitment: expected_commitment.map(|c| STANDARD.encode(c)),
        };
        let response: ReshareCustodyResponse = self
            .call(&format!("{KEYWARD_TARGET_PREFIX}{RESHARE_CUSTODY}"), &body)
            .await?;
        let fail = |reason: String| decode_error(RESHARE_CUSTODY, reason);
        let deployment_id = keyward_custody::parse_deployment_hex(&response.deployment_id).ok_or_else(|| {
            fail(format!(
                "DeploymentId {:?} is not 32 hex digits",
                response.deployment_id
            ))
        })?;
        let root_commitment = base64_field(RESHARE_CUSTODY, "RootCommitment", &response.root_commitment)?;
        if expected_commitment.is_some_and(|expected| expected != root_commitment.as_slice()) {
            return Err(fail(
                "the answer's root commitment is not the expected one (another deployment?)".into(),
            ));
        }
        let share_packages = checked_packages(
            RESHARE_CUSTODY,
            &response.share_packages,
            &request.custodians,
            request.threshold,
            &deployment_id,
            &root_commitment,
        )?;
        Ok(ReshareCustodyOutput {
            deployment_id,
            share_packages,
            root_commitment,
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
