//! Attestation extensions: `Keyward.UpdateKeyAttestationPolicy`,
//! `Keyward.DescribeKeyAttestationPolicy` and `Keyward.GetAttestationDocument`
//! (the enclave attests itself, binding its audit public key, or with
//! `KeyId` the BYOK wrapping key of that key's outstanding import parameters).

use std::collections::BTreeMap;

use p256::pkcs8::EncodePublicKey;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::KmsError;
use super::lifecycle::modify;
use super::params::{self, Access, b64, blob, check_state, length, parse, required};
use crate::context::Ctx;
use crate::keys::record::AttestationPolicy;

/// At most this many allowed values per PCR.
const MAX_PCR_VALUES: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyParam {
    require_recipient: Option<bool>,
    #[serde(rename = "AllowedPCRs")]
    allowed_pcrs: Option<BTreeMap<String, Vec<String>>>,
}

/// Validates an attestation policy parameter (PCR indexes 0–31, values of
/// 32, 48 or 64 bytes in hex).
pub fn policy(param: PolicyParam) -> Result<Option<AttestationPolicy>, KmsError> {
    let mut allowed_pcrs = BTreeMap::new();
    for (index, values) in param.allowed_pcrs.unwrap_or_default() {
        let index: u8 = index
            .parse()
            .ok()
            .filter(|i| *i < 32)
            .ok_or_else(|| KmsError::validation("allowedPCRs", "PCR indexes are 0-31"))?;
        if values.is_empty() || values.len() > MAX_PCR_VALUES {
            return Err(KmsError::validation(
                "allowedPCRs",
                "Each PCR lists 1-16 allowed values",
            ));
        }
        let mut normalized = Vec::with_capacity(values.len());
        for value in values {
            let bytes = hex::decode(&value).map_err(|_| KmsError::validation("allowedPCRs", "PCR values are hex"))?;
            if ![32, 48, 64].contains(&bytes.len()) {
                return Err(KmsError::validation("allowedPCRs", "PCR values are 32, 48 or 64 bytes"));
            }
            normalized.push(hex::encode(bytes));
        }
        allowed_pcrs.insert(index, normalized);
    }
    let require_recipient = param.require_recipient.unwrap_or(false);
    if !require_recipient && allowed_pcrs.is_empty() {
        return Ok(None);
    }
    Ok(Some(AttestationPolicy {
        require_recipient,
        allowed_pcrs,
    }))
}

fn describe(policy: Option<&AttestationPolicy>) -> Value {
    let (require, pcrs) = match policy {
        Some(p) => (
            p.require_recipient,
            p.allowed_pcrs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect(),
        ),
        None => (false, serde_json::Map::new()),
    };
    json!({ "RequireRecipient": require, "AllowedPCRs": pcrs })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest {
    key_id: Option<String>,
    #[serde(flatten)]
    policy: PolicyParam,
}

pub async fn update_key_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: UpdateRequest = parse(body)?;
    let new_policy = policy(req.policy)?;
    let (rec, ()) = modify(ctx, req.key_id, |rec| {
        check_state(rec, Access::Manage)?;
        rec.attestation = new_policy;
        Ok(())
    })
    .await?;
    let mut out = describe(rec.attestation.as_ref());
    out["KeyId"] = json!(rec.arn);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeRequest {
    key_id: Option<String>,
}

pub async fn describe_key_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeRequest = parse(body)?;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    let mut out = describe(rec.attestation.as_ref());
    out["KeyId"] = json!(rec.arn);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentRequest {
    nonce: Option<String>,
    /// Bind this key's BYOK wrapping public key instead of the audit key.
    key_id: Option<String>,
}

/// What the enclave binds in its own attestation document's `user_data`.
pub const USER_DATA_PREFIX: &[u8] = b"keyward/v1/audit-key-sha256:";

/// A document from the enclave's own NSM, `nonce` the caller's. Without
/// `KeyId`: `public_key` is the audit signing key (SubjectPublicKeyInfo DER),
/// `user_data` is `keyward/v1/audit-key-sha256:` ‖ SHA-256 of it. With
/// `KeyId`: `public_key` is the wrapping public key of the key's outstanding
/// import parameters (the `PublicKey` GetParametersForImport returned),
/// `user_data` is `keyward/v1/import-wrapping-key-sha256:` ‖ SHA-256 of it ‖
/// the key ARN — the enclave only ever attests a key whose private half it holds.
pub async fn get_attestation_document(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetAttestationDocumentRequest = parse(body)?;
    let nonce = match req.nonce {
        Some(n) => {
            let n = blob("nonce", &n)?;
            length("nonce", n.len(), 1, 512)?;
            Some(n)
        }
        None => None,
    };
    let (public_key, user_data) = match req.key_id {
        Some(key_id) => import_binding(ctx, &key_id).await?,
        None => {
            let audit_key = ctx
                .keyring
                .hierarchy
                .audit_signing_key()
                .verifying_key()
                .to_public_key_der()
                .map_err(|_| KmsError::Internal)?;
            let mut user_data = USER_DATA_PREFIX.to_vec();
            user_data.extend_from_slice(&Sha256::digest(audit_key.as_bytes()));
            (audit_key.as_bytes().to_vec(), user_data)
        }
    };
    let document = ctx
        .enclave
        .nsm
        .attest(Some(&user_data), nonce.as_deref(), Some(&public_key))
        .map_err(|e| {
            tracing::error!(error = %e, "the NSM did not attest");
            KmsError::Internal
        })?;
    Ok(json!({ "AttestationDocument": b64(&document) }))
}

/// The wrapping public key of `key_id`'s outstanding import parameters and
/// the `user_data` binding it to the key.
async fn import_binding(ctx: &Ctx<'_>, key_id: &str) -> Result<(Vec<u8>, Vec<u8>), KmsError> {
    use crate::keys::import::{self, ImportParameters};
    let rec = params::resolve_key(ctx, key_id).await?;
    let parameters: Option<ImportParameters> = ctx
        .records
        .get(import::NAMESPACE, &crate::keystore::import::parameters_name(&rec))
        .await?;
    match parameters {
        Some(p) if p.key_id == rec.key_id && p.private_key.is_some() && p.valid_to > ctx.now.unix_timestamp() => {
            let user_data = import::attestation_binding(&p.public_key, &rec.arn);
            Ok((p.public_key, user_data))
        }
        _ => Err(KmsError::InvalidState(format!(
            "{} has no valid import parameters to attest. Call GetParametersForImport first.",
            rec.arn
        ))),
    }
}
