//! Attested recipients: release to an attested workload only, as AWS KMS
//! does for Nitro Enclaves. A recipient's attestation document is verified
//! (chain to the pinned root, ES384 signature, freshness); a secret released
//! to it is CMS EnvelopedData to the RSA key inside the verified document
//! ([`Released::ForRecipient`]), never the plaintext. A key's attestation
//! policy decides who may receive its secrets ([`enforce`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::attestation::verify::{Expectations, VerifiedDocument};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{AttestationPolicy, KeyRecord};
use crate::secret::SecretBytes;

/// How old a recipient's attestation document may be.
pub const MAX_DOCUMENT_AGE: Duration = Duration::from_secs(5 * 60);
/// How far in the future its timestamp may lie (clock skew).
pub const MAX_DOCUMENT_FUTURE: Duration = Duration::from_secs(60);

/// A verified recipient: its attestation claims and RSA public key.
pub struct Recipient {
    pub document: VerifiedDocument,
    rsa_public_key: Vec<u8>,
}

impl Recipient {
    /// Seals `plaintext` to the recipient: CMS EnvelopedData in AWS KMS's BER layout.
    pub fn envelope(&self, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        crate::attestation::recipient::envelope(&self.rsa_public_key, plaintext).map_err(|e| {
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

/// Verifies a recipient's attestation document (already decoded from the
/// request) and records its claims in the request's policy facts. With
/// `nonce` (the Keyward extension `Recipient.Nonce`), the document's nonce
/// must equal it. Its public key must be RSA of 2048–4096 bits.
pub fn verify(ctx: &Ctx<'_>, document: &[u8], nonce: Option<&[u8]>) -> Result<Recipient, KmsError> {
    let Some(verifier) = ctx.enclave.verifier() else {
        return Err(KmsError::UnsupportedOperation(
            "This deployment has no attestation trust anchor.".into(),
        ));
    };
    let expect = Expectations {
        nonce: nonce.map(<[u8]>::to_vec),
        pcrs: BTreeMap::new(),
        allow_debug: ctx.enclave.config.allow_debug_attestation,
        max_age: Some(MAX_DOCUMENT_AGE),
        max_future: MAX_DOCUMENT_FUTURE,
    };
    let verified = verifier.verify(document, ctx.now, &expect).map_err(|e| {
        tracing::info!(error = %e, "recipient attestation document rejected");
        KmsError::Validation(format!("The attestation document is not valid: {e}"))
    })?;
    let rsa_public_key = verified
        .document
        .public_key
        .clone()
        .ok_or_else(|| KmsError::Validation("The attestation document carries no public key.".into()))?;
    crate::attestation::recipient::check_public_key(&rsa_public_key).map_err(|e| {
        KmsError::Validation(format!(
            "The public key in the attestation document cannot be used: {e}"
        ))
    })?;
    ctx.notes.recipient(verified.module_id(), &verified.document.pcrs);
    ctx.facts().attestation = Some(crate::policy::context::attestation_claims(
        verified.module_id(),
        &verified.document.pcrs,
        verified.timestamp_ms(),
    ));
    Ok(Recipient {
        document: verified,
        rsa_public_key,
    })
}

/// The attestation policy that governs `key`: its own, else the tenant's
/// default (`Keyward.UpdateTenantAttestationPolicy`).
pub fn effective_policy(ctx: &Ctx<'_>, key: &KeyRecord) -> Option<AttestationPolicy> {
    key.attestation
        .clone()
        .or_else(|| ctx.facts().tenant_attestation.clone())
}

/// Before `key` releases a key-derived secret (Decrypt, GenerateDataKey,
/// GenerateDataKeyPair, DeriveSharedSecret, GenerateMac, ReEncrypt out of
/// it): under an attestation policy (the key's own or the tenant's default)
/// only to a verified recipient whose PCRs the policy allows.
pub fn enforce(ctx: &Ctx<'_>, key: &KeyRecord, recipient: Option<&Recipient>) -> Result<(), KmsError> {
    match effective_policy(ctx, key) {
        Some(policy) => {
            // The audit records the recipient's PCRs the governing policy
            // checks (the key's own or the tenant's default).
            ctx.notes.checked_pcrs(policy.allowed_pcrs.keys().copied());
            check(&policy, &key.arn, recipient)?;
            if policy.allows_any_enclave() {
                ctx.notes.detail(
                    "Warning: released under AllowAnyEnclave (any attested enclave of any AWS account qualifies)",
                );
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// Before GenerateRandom releases random bytes (no key): under the tenant's
/// default attestation policy, only to a matching verified recipient.
pub fn enforce_tenant(ctx: &Ctx<'_>, recipient: Option<&Recipient>) -> Result<(), KmsError> {
    let policy = ctx.facts().tenant_attestation.clone();
    match policy {
        Some(policy) => {
            ctx.notes.checked_pcrs(policy.allowed_pcrs.keys().copied());
            check(
                &policy,
                &format!("Tenant {}'s default attestation policy", ctx.principal.tenant),
                recipient,
            )
        }
        None => Ok(()),
    }
}

/// `policy` against `recipient`; `whose` names the policy in messages.
fn check(policy: &AttestationPolicy, whose: &str, recipient: Option<&Recipient>) -> Result<(), KmsError> {
    let Some(recipient) = recipient else {
        return Err(KmsError::AccessDenied(format!(
            "{whose} releases key-derived secrets only to an attested Recipient whose measurements match \
             its attestation policy (Recipient is required)."
        )));
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

/// A secret as it leaves the enclave: in the clear to the caller, or sealed
/// to an attested recipient.
pub enum Released {
    Plaintext(SecretBytes),
    /// CMS EnvelopedData to the recipient's key (`CiphertextForRecipient`).
    ForRecipient(Vec<u8>),
}

/// Releases `secret`: sealed to `recipient` when there is one, as AWS KMS
/// does, else in the clear.
pub fn release(secret: &[u8], recipient: Option<&Recipient>) -> Result<Released, KmsError> {
    Ok(match recipient {
        Some(r) => Released::ForRecipient(r.envelope(secret)?),
        None => Released::Plaintext(SecretBytes::new(secret.to_vec())),
    })
}
