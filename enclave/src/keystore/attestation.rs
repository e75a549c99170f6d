//! Attestation: a key's attestation policy (which recipients may receive
//! what it releases), and documents from the enclave's own NSM that bind
//! either its audit public key or a key's BYOK wrapping public key.

use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

use super::keys::{Access, check_state, modify, resolve_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::import::{self, ImportParameters};
use crate::keys::record::AttestationPolicy;

/// What the enclave binds in its own attestation document's `user_data`:
/// `USER_DATA_PREFIX` ‖ SHA-256(audit public key SPKI DER) ‖
/// [`TLS_SPKI_LABEL`] ‖ SHA-256(TLS serving key SPKI DER), 108 bytes.
pub const USER_DATA_PREFIX: &[u8] = b"keyward/v2/audit-key-sha256:";
/// Label of the TLS serving key's SPKI hash in `user_data`.
pub const TLS_SPKI_LABEL: &[u8] = b"tls-spki-sha256:";

/// A key's attestation policy (`None`: none).
pub struct KeyAttestation {
    pub key_arn: String,
    pub policy: Option<AttestationPolicy>,
}

/// Replaces the attestation policy of the key `key_id` (a `KeyId` parameter).
pub async fn update_policy(
    ctx: &Ctx<'_>,
    key_id: Option<String>,
    policy: Option<AttestationPolicy>,
) -> Result<KeyAttestation, KmsError> {
    let (rec, ()) = modify(ctx, key_id, |rec| {
        check_state(rec, Access::Manage)?;
        rec.attestation = policy;
        Ok(())
    })
    .await?;
    Ok(KeyAttestation {
        key_arn: rec.arn,
        policy: rec.attestation,
    })
}

/// The attestation policy of the key `key_id`.
pub async fn policy(ctx: &Ctx<'_>, key_id: &str) -> Result<KeyAttestation, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    Ok(KeyAttestation {
        key_arn: rec.arn,
        policy: rec.attestation,
    })
}

/// A document from the enclave's own NSM, `nonce` the caller's. Without
/// `key_id`: `public_key` is the audit signing key (SubjectPublicKeyInfo DER),
/// `user_data` is `keyward/v2/audit-key-sha256:` ‖ SHA-256 of it ‖
/// `tls-spki-sha256:` ‖ `tls_spki_sha256` (the SHA-256 of the TLS serving
/// key's SubjectPublicKeyInfo, so a client can check that the connection it
/// used ends in this enclave). With
/// `key_id`: `public_key` is the wrapping public key of the key's outstanding
/// import parameters (the `PublicKey` GetParametersForImport returned),
/// `user_data` is `keyward/v1/import-wrapping-key-sha256:` ‖ SHA-256 of it ‖
/// the key ARN — the enclave only ever attests a key whose private half it holds.
pub async fn document(
    ctx: &Ctx<'_>,
    nonce: Option<&[u8]>,
    key_id: Option<&str>,
    tls_spki_sha256: [u8; 32],
) -> Result<Vec<u8>, KmsError> {
    let (public_key, user_data) = match key_id {
        Some(key_id) => import_binding(ctx, key_id).await?,
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
            user_data.extend_from_slice(TLS_SPKI_LABEL);
            user_data.extend_from_slice(&tls_spki_sha256);
            (audit_key.as_bytes().to_vec(), user_data)
        }
    };
    ctx.enclave
        .nsm
        .attest(Some(&user_data), nonce, Some(&public_key))
        .map_err(|e| {
            tracing::error!(error = %e, "the NSM did not attest");
            KmsError::Internal
        })
}

/// The wrapping public key of `key_id`'s outstanding import parameters and
/// the `user_data` binding it to the key.
async fn import_binding(ctx: &Ctx<'_>, key_id: &str) -> Result<(Vec<u8>, Vec<u8>), KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    let parameters: Option<ImportParameters> = ctx
        .records
        .get(import::NAMESPACE, &super::import::parameters_name(&rec))
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
