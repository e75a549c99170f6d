//! Attestation extensions: `Keyward.UpdateKeyAttestationPolicy`,
//! `Keyward.DescribeKeyAttestationPolicy` and `Keyward.GetAttestationDocument`
//! (the enclave attests itself, binding its audit public key, or with
//! `KeyId` the BYOK wrapping key of that key's outstanding import parameters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, blob, length, parse, render, required};
use crate::context::Ctx;
use crate::keys::record::AttestationPolicy;
use crate::keystore::attestation::{self, KeyAttestation};

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

/// A key's attestation policy as `UpdateKeyAttestationPolicy` and
/// `DescribeKeyAttestationPolicy` answer it (no policy: nothing required).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttestationPolicyResponse<'a> {
    key_id: &'a str,
    require_recipient: bool,
    /// PCR index (as a string) → allowed values in hex.
    #[serde(rename = "AllowedPCRs")]
    allowed_pcrs: &'a BTreeMap<u8, Vec<String>>,
}

fn describe(key: &KeyAttestation) -> Result<Value, KmsError> {
    static NONE: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    let (require_recipient, allowed_pcrs) = match &key.policy {
        Some(p) => (p.require_recipient, &p.allowed_pcrs),
        None => (false, &NONE),
    };
    render(&AttestationPolicyResponse {
        key_id: &key.key_arn,
        require_recipient,
        allowed_pcrs,
    })
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
    describe(&attestation::update_policy(ctx, req.key_id, new_policy).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeRequest {
    key_id: Option<String>,
}

pub async fn describe_key_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeRequest = parse(body)?;
    describe(&attestation::policy(ctx, &required("keyId", req.key_id)?).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentRequest {
    nonce: Option<String>,
    /// Bind this key's BYOK wrapping public key instead of the audit key.
    key_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentResponse {
    /// Base64 of the COSE_Sign1 document.
    attestation_document: String,
}

/// A document from the enclave's own NSM (see
/// [`crate::keystore::attestation::document`] for what it binds).
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
    let tls = super::tls_ops::live(ctx).await?;
    let document = attestation::document(ctx, nonce.as_deref(), req.key_id.as_deref(), tls.spki_sha256()).await?;
    render(&GetAttestationDocumentResponse {
        attestation_document: b64(&document),
    })
}
