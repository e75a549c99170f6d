//! The `Recipient` parameter: release to an attested workload only, as AWS
//! KMS does for Nitro Enclaves. The attestation document is verified (chain
//! to the pinned root, ES384 signature, freshness); the answer carries
//! `CiphertextForRecipient` — CMS EnvelopedData to the RSA key inside the
//! verified document — and never the plaintext.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, blob, parse};
use crate::attestation::verify::{Expectations, VerifiedDocument};
use crate::context::Ctx;
use crate::keys::record::KeyRecord;

/// How old a recipient's attestation document may be.
pub const MAX_DOCUMENT_AGE: Duration = Duration::from_secs(5 * 60);
/// How far in the future its timestamp may lie (clock skew).
pub const MAX_DOCUMENT_FUTURE: Duration = Duration::from_secs(60);

const RSAES_OAEP_SHA_256: &str = "RSAES_OAEP_SHA_256";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientParam {
    key_encryption_algorithm: Option<String>,
    attestation_document: Option<String>,
}

/// A verified recipient: its attestation claims and RSA public key.
pub struct Recipient {
    pub document: VerifiedDocument,
    rsa_public_key: Vec<u8>,
}

impl Recipient {
    /// Seals `plaintext` to the recipient: base64 CMS EnvelopedData.
    pub fn envelope(&self, plaintext: &[u8]) -> Result<String, KmsError> {
        crate::attestation::recipient::envelope(&self.rsa_public_key, plaintext)
            .map(|cms| b64(&cms))
            .map_err(|e| {
                KmsError::Validation(format!(
                    "The public key in the attestation document cannot be used: {e}"
                ))
            })
    }

    /// PCR index → value, as the document states them.
    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.document.document.pcrs
    }
}

/// Parses and verifies a `Recipient` parameter; `None` when absent.
pub fn verify(ctx: &Ctx<'_>, param: Option<Value>) -> Result<Option<Recipient>, KmsError> {
    let Some(param) = param else { return Ok(None) };
    let param: RecipientParam = parse(param)?;
    match param.key_encryption_algorithm.as_deref() {
        Some(RSAES_OAEP_SHA_256) => {}
        None => return Err(KmsError::missing("recipient.keyEncryptionAlgorithm")),
        Some(_) => {
            return Err(KmsError::validation(
                "recipient.keyEncryptionAlgorithm",
                "Member must satisfy enum value set: [RSAES_OAEP_SHA_256]",
            ));
        }
    }
    let document = blob(
        "recipient.attestationDocument",
        &param
            .attestation_document
            .ok_or_else(|| KmsError::missing("recipient.attestationDocument"))?,
    )?;
    let Some(verifier) = ctx.enclave.verifier() else {
        return Err(KmsError::UnsupportedOperation(
            "This deployment has no attestation trust anchor.".into(),
        ));
    };
    let expect = Expectations {
        nonce: None,
        pcrs: BTreeMap::new(),
        allow_debug: ctx.enclave.config.allow_debug_attestation,
        max_age: Some(MAX_DOCUMENT_AGE),
        max_future: MAX_DOCUMENT_FUTURE,
    };
    let verified = verifier.verify(&document, ctx.now, &expect).map_err(|e| {
        tracing::info!(error = %e, "recipient attestation document rejected");
        KmsError::Validation(format!("The attestation document is not valid: {e}"))
    })?;
    let rsa_public_key = verified
        .document
        .public_key
        .clone()
        .ok_or_else(|| KmsError::Validation("The attestation document carries no public key.".into()))?;
    ctx.facts().attestation = Some(crate::policy::context::attestation_claims(
        verified.module_id(),
        &verified.document.pcrs,
        verified.timestamp_ms(),
    ));
    Ok(Some(Recipient {
        document: verified,
        rsa_public_key,
    }))
}

/// A key's attestation policy: with `require_recipient`, release only to a
/// verified recipient; with `allowed_pcrs`, only to one whose PCRs match.
pub fn enforce(key: &KeyRecord, recipient: Option<&Recipient>) -> Result<(), KmsError> {
    let Some(policy) = &key.attestation else { return Ok(()) };
    let Some(recipient) = recipient else {
        if policy.require_recipient {
            return Err(KmsError::AccessDenied(format!(
                "{} releases data only to an attested recipient (Recipient is required).",
                key.arn
            )));
        }
        return Ok(());
    };
    for (index, allowed) in &policy.allowed_pcrs {
        let actual = recipient.pcrs().get(index).map(hex::encode);
        if !actual
            .as_ref()
            .is_some_and(|a| allowed.iter().any(|v| v.eq_ignore_ascii_case(a)))
        {
            return Err(KmsError::AccessDenied(format!(
                "The recipient's PCR{index} does not match the key's attestation policy."
            )));
        }
    }
    Ok(())
}
