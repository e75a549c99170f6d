//! The custody operations (docs/custody.md): `Keyward.InitCustody`
//! (genesis), `Keyward.GetUnsealDocument` and `Keyward.Unseal`. They are
//! served while sealed and before authentication (no credential can be
//! read without the root): their inputs authenticate themselves (shares by
//! their digests in the boot record, messages by the session key the
//! attestation document binds), and the state machine forbids a second
//! genesis. A signed request is accepted too; its signature is ignored.

use keyward_custody::suite::PublicKey;
use keyward_custody::{MAX_CUSTODIANS, deployment_hex};
use keyward_wire::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, blob, length, parse, render, required};
use crate::bootstrap::BootError;
use crate::config::Mode;
use crate::custody::CustodyError;
use crate::custody::genesis::ShamirGenesis;
use crate::service::Enclave;
use crate::store::StoreTransport;

/// `Keyward.InitCustody`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitCustodyRequest {
    /// M: shares needed to unseal.
    pub threshold: Option<i64>,
    /// The custodians' X25519 public keys (base64, 32 bytes each);
    /// custodian `i` is the `i`-th (1-based).
    pub custodian_public_keys: Option<Vec<String>>,
    /// The operator's X25519 public key (base64, 32 bytes): its first
    /// credential is sealed to it. Required in nitro mode.
    pub operator_public_key: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitCustodyResponse {
    /// 32 lowercase hex digits.
    pub deployment_id: String,
    /// Base64 CBOR `SharePackage`s, in the order of the keys.
    pub share_packages: Vec<String>,
    /// Base64 CBOR `OperatorCredentialPackage`, iff `OperatorPublicKey` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_credential: Option<String>,
    /// Base64 SPKI DER of the audit public key (the root commitment).
    pub root_commitment: String,
    pub state: &'static str,
}

/// `Keyward.GetUnsealDocument`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetUnsealDocumentRequest {
    /// The custodian's fresh nonce (base64, 1-512 bytes).
    pub nonce: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetUnsealDocumentResponse {
    pub deployment_id: String,
    /// Base64 COSE_Sign1 attestation document binding the unseal session.
    pub document: String,
    pub received: usize,
    pub threshold: usize,
    pub state: &'static str,
}

/// `Keyward.Unseal`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnsealRequest {
    /// Base64 CBOR `UnsealMessage`.
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnsealResponse {
    pub received: usize,
    pub threshold: usize,
    /// `Sealed` or `Ready`.
    pub state: &'static str,
}

/// What the `State` fields say.
pub const STATE_SEALED: &str = "Sealed";
pub const STATE_READY: &str = "Ready";

/// The largest unseal message accepted (a share message is ~150 bytes; a
/// format-2 one carries a checkpoint of up to
/// `keyward_custody::checkpoint::MAX_TENANTS` tenant scopes).
const MAX_MESSAGE: usize = 512 * 1024;
/// Nonce bounds of `Keyward.GetUnsealDocument` (as the NSM takes them).
const MAX_NONCE: usize = 512;

/// Serves a custody operation (`op.is_custody()`).
pub async fn serve(
    enclave: &Enclave,
    op: Operation,
    body: Value,
    transport: &dyn StoreTransport,
) -> Result<Value, KmsError> {
    match op {
        Operation::InitCustody => init_custody(enclave, body, transport).await,
        Operation::GetUnsealDocument => get_unseal_document(enclave, body, transport).await,
        Operation::Unseal => unseal(enclave, body, transport).await,
        Operation::JoinCluster => join_cluster(enclave, body, transport).await,
        Operation::GetCheckpoint => get_checkpoint(enclave, transport).await,
        _ => Err(KmsError::UnknownOperation(format!("{op} is not a custody operation"))),
    }
}

async fn init_custody(enclave: &Enclave, body: Value, transport: &dyn StoreTransport) -> Result<Value, KmsError> {
    let request: InitCustodyRequest = parse(body)?;
    if enclave.config.custody_kms.is_some() {
        return init_custody_kms(enclave, request, transport).await;
    }
    if request.threshold.is_none() && request.custodian_public_keys.is_none() {
        return Err(KmsError::Validation(
            "this enclave keeps its root by custodians' shares (--custody shamir): genesis needs Threshold and \
             CustodianPublicKeys (kmsctl init --custodian A.pub … --threshold M); a genesis without custodians \
             (kmsctl init --key-service) is only for an enclave started with --custody kms"
                .into(),
        ));
    }
    let threshold = required("threshold", request.threshold)?;
    let keys = required("custodianPublicKeys", request.custodian_public_keys)?;
    length("custodianPublicKeys", keys.len(), 1, MAX_CUSTODIANS)?;
    let custodians = keys
        .iter()
        .map(|key| public_key("custodianPublicKeys", key))
        .collect::<Result<Vec<_>, _>>()?;
    let operator_key = request
        .operator_public_key
        .as_deref()
        .map(|key| public_key("operatorPublicKey", key))
        .transpose()?;
    if operator_key.is_none() && enclave.config.mode == Mode::Nitro {
        return Err(KmsError::Validation(
            "OperatorPublicKey is required in nitro mode: the operator's first credential is sealed to it \
             (kmsctl init --operator-key OPERATOR.pub)."
                .into(),
        ));
    }
    let genesis = ShamirGenesis {
        threshold: usize::try_from(threshold).unwrap_or(0),
        custodians,
        operator_key,
    };
    let answer = enclave
        .init_custody(transport, &genesis)
        .await
        .map_err(|e| refusal("genesis", e))?;
    let packages = answer
        .packages
        .iter()
        .map(|package| package.to_bytes().map(|bytes| b64(&bytes)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal("a share package did not encode", &e))?;
    let operator_credential = answer
        .operator
        .as_ref()
        .map(|package| package.to_bytes().map(|bytes| b64(&bytes)))
        .transpose()
        .map_err(|e| internal("the operator credential did not encode", &e))?;
    load_tls(enclave, transport).await;
    render(&InitCustodyResponse {
        deployment_id: deployment_hex(&answer.record.deployment_id),
        share_packages: packages,
        operator_credential,
        root_commitment: b64(answer.record.commitment.as_bytes()),
        state: STATE_READY,
    })
}

async fn get_unseal_document(
    enclave: &Enclave,
    body: Value,
    transport: &dyn StoreTransport,
) -> Result<Value, KmsError> {
    let request: GetUnsealDocumentRequest = parse(body)?;
    let nonce = blob("Nonce", &required("nonce", request.nonce)?)?;
    length("nonce", nonce.len(), 1, MAX_NONCE)?;
    let (deployment, document, received, threshold) = enclave
        .unseal_document(transport, &nonce)
        .await
        .map_err(|e| refusal("unseal document", e))?;
    render(&GetUnsealDocumentResponse {
        deployment_id: deployment_hex(&deployment),
        document: b64(&document),
        received,
        threshold,
        state: STATE_SEALED,
    })
}

async fn unseal(enclave: &Enclave, body: Value, transport: &dyn StoreTransport) -> Result<Value, KmsError> {
    let request: UnsealRequest = parse(body)?;
    let message = blob("Message", &required("message", request.message)?)?;
    length("message", message.len(), 1, MAX_MESSAGE)?;
    let answer = enclave
        .unseal(transport, &message)
        .await
        .map_err(|e| refusal("unseal", e))?;
    if answer.ready {
        load_tls(enclave, transport).await;
    }
    render(&UnsealResponse {
        received: answer.received,
        threshold: answer.threshold,
        state: if answer.ready { STATE_READY } else { STATE_SEALED },
    })
}

/// `Keyward.GetCheckpoint`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetCheckpointResponse {
    pub deployment_id: String,
    /// Epoch of the global index root (also inside `Checkpoint`).
    pub global_epoch: u64,
    /// Tenant scopes the checkpoint lists.
    pub tenant_scopes: usize,
    /// Base64 CBOR `SignedCheckpoint` (signed by the root commitment).
    pub checkpoint: String,
}

/// `Keyward.GetCheckpoint {}` (Ready only; unauthenticated): the store's
/// index epochs now, signed with the audit key, for custodians to keep
/// (docs/custody.md, "Checkpoints"). Unauthenticated because custodians
/// hold no credential and the answer is signed; it states the deployment
/// id, the tenant ids and their write counts, which the host sees in its
/// store anyway (THREAT-MODEL.md). Not audited: custodians poll it.
async fn get_checkpoint(enclave: &Enclave, transport: &dyn StoreTransport) -> Result<Value, KmsError> {
    let signed = enclave
        .signed_checkpoint(transport)
        .await
        .map_err(|e| refusal("checkpoint", e))?;
    let checkpoint = keyward_custody::checkpoint::Checkpoint::from_bytes(&signed.checkpoint)
        .map_err(|e| internal("the checkpoint did not decode", &e))?;
    let bytes = signed
        .to_bytes()
        .map_err(|e| internal("the checkpoint did not encode", &e))?;
    render(&GetCheckpointResponse {
        deployment_id: deployment_hex(&checkpoint.deployment_id),
        global_epoch: checkpoint.global,
        tenant_scopes: checkpoint.tenants.len(),
        checkpoint: b64(&bytes),
    })
}

/// Genesis under `--custody kms`: no custodians; the custody key service
/// generates the root and releases it to this enclave.
async fn init_custody_kms(
    enclave: &Enclave,
    request: InitCustodyRequest,
    transport: &dyn StoreTransport,
) -> Result<Value, KmsError> {
    if request.threshold.is_some() || request.custodian_public_keys.is_some() {
        return Err(KmsError::Validation(
            "this enclave keeps its root with a custody key service (--custody kms): genesis takes no \
             Threshold or CustodianPublicKeys (kmsctl init --key-service --operator-key OPERATOR.pub)"
                .into(),
        ));
    }
    let operator_key = request
        .operator_public_key
        .as_deref()
        .map(|key| public_key("operatorPublicKey", key))
        .transpose()?;
    if operator_key.is_none() && enclave.config.mode == Mode::Nitro {
        return Err(KmsError::Validation(
            "OperatorPublicKey is required in nitro mode: the operator's first credential is sealed to it \
             (kmsctl init --operator-key OPERATOR.pub)."
                .into(),
        ));
    }
    let answer = enclave
        .init_custody_kms(transport, operator_key)
        .await
        .map_err(|e| refusal("genesis", e))?;
    let operator_credential = answer
        .operator
        .as_ref()
        .map(|package| package.to_bytes().map(|bytes| b64(&bytes)))
        .transpose()
        .map_err(|e| internal("the operator credential did not encode", &e))?;
    load_tls(enclave, transport).await;
    render(&InitCustodyResponse {
        deployment_id: deployment_hex(&answer.record.deployment_id),
        share_packages: Vec::new(),
        operator_credential,
        root_commitment: b64(answer.record.commitment.as_bytes()),
        state: STATE_READY,
    })
}

/// `Keyward.JoinCluster {Document}` (a Ready node; unauthenticated: the
/// document authenticates the joiner): the root sealed to the attested
/// join key, `{Package, DeploymentId}`.
async fn join_cluster(enclave: &Enclave, body: Value, transport: &dyn StoreTransport) -> Result<Value, KmsError> {
    let document = body
        .get("Document")
        .and_then(Value::as_str)
        .and_then(|text| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok())
        .filter(|bytes| !bytes.is_empty() && bytes.len() <= 16 * 1024)
        .ok_or_else(|| {
            KmsError::Validation("Document must be a base64 attestation document (at most 16 KiB)".into())
        })?;
    let (deployment, package) = enclave
        .release_root_for_join(transport, &document)
        .await
        .map_err(|e| refusal("join", e))?;
    Ok(serde_json::json!({
        "DeploymentId": deployment_hex(&deployment),
        "Package": b64(&package),
    }))
}

/// Once Ready, loads the persistent TLS identity (new client streams use
/// it; a failure is retried by the next stream).
async fn load_tls(enclave: &Enclave, transport: &dyn StoreTransport) {
    if let Ok(keyring) = enclave.keyring(transport).await {
        let records = keyring.records(transport);
        if let Err(e) = enclave.tls(&records, super::error::refusal).await {
            tracing::warn!(error = %e, "ready, but the TLS identity did not load yet");
        }
    }
}

/// A refused custody step as the caller sees it; recorded in the state
/// by `bootstrap` (the 503's "last refusal") and logged.
fn refusal(step: &'static str, error: BootError) -> KmsError {
    match error {
        // Logged, and recorded in the state, where refused (`bootstrap`).
        BootError::Custody(e) => custody_error(&e),
        BootError::NotNow(message) => {
            tracing::warn!(reason = %message, step, "custody: refused");
            KmsError::Validation(message)
        }
        BootError::Sealed(message) => KmsError::Sealed(message),
        other => {
            tracing::error!(error = %other, step, "custody: failed");
            boot_error(other)
        }
    }
}

/// A custody refusal: a share or message that does not open or does not
/// belong is `InvalidCiphertextException`; the rest `ValidationException`.
fn custody_error(error: &CustodyError) -> KmsError {
    use CustodyError as C;
    match error {
        C::WrongShare { .. }
        | C::Undecryptable
        | C::WrongSession
        | C::WrongDeployment { .. }
        | C::IndexMismatch { .. }
        | C::CommitmentMismatch
        | C::Format(_) => KmsError::InvalidCiphertext(error.to_string()),
        C::Nsm(_) => KmsError::InternalDetail(error.to_string()),
        // Still sealed, and staying so until the store is restored or a
        // custodian accepts the rollback: the 503 every request gets.
        C::StaleStore { .. } | C::StaleJoin { .. } => KmsError::Sealed(error.to_string()),
        _ => KmsError::Validation(error.to_string()),
    }
}

fn boot_error(error: BootError) -> KmsError {
    match error {
        BootError::Store(e) => KmsError::from(e),
        BootError::Sealed(message) => KmsError::Sealed(message),
        BootError::NotNow(message) => KmsError::Validation(message),
        BootError::Custody(e) => custody_error(&e),
        other => {
            tracing::error!(error = %other, "custody: start-up failed");
            KmsError::Internal
        }
    }
}

fn internal(what: &str, error: &dyn std::fmt::Display) -> KmsError {
    tracing::error!(error = %error, "{what}");
    KmsError::Internal
}

/// A base64 raw 32-byte X25519 public key.
pub(super) fn public_key(field: &str, value: &str) -> Result<PublicKey, KmsError> {
    let bytes = blob(field, value)?;
    PublicKey::from_slice(&bytes).map_err(|_| {
        KmsError::Validation(format!(
            "Value at '{field}' is not a raw 32-byte X25519 public key (base64); got {} bytes.",
            bytes.len()
        ))
    })
}
