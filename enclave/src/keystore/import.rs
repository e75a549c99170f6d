//! BYOK: import parameters, importing and deleting key material of keys
//! created with `Origin: EXTERNAL`, with AWS KMS's rules. The cryptography
//! (wrapping key pairs, unwrapping, fingerprints) is in `keys::import`;
//! expiry of imported material is in [`super::due`].

use std::sync::Arc;

use super::due::remove_material;
use super::keys::{save_key, with_locked_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::import::{self, ImportError, ImportParameters, WrappingAlgorithm, WrappingKeySpec};
use crate::keys::record::{self, ExpirationModel, KeyRecord, KeyState, Origin};
use crate::secret::{Key256, SecretBytes};

/// Bytes of imported SYMMETRIC_DEFAULT material.
const MATERIAL_LEN: usize = 32;

/// When imported material expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `KEY_MATERIAL_EXPIRES` at this time (seconds since the epoch).
    At(i64),
    /// `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    Never,
}

/// Import parameters just issued by [`issue_parameters`].
pub struct IssuedParameters {
    pub key_arn: String,
    pub import_token: Vec<u8>,
    /// The wrapping public key, DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// When the parameters expire (seconds since the epoch).
    pub valid_to: i64,
}

/// The record name of a key's outstanding import parameters.
pub fn parameters_name(rec: &KeyRecord) -> String {
    record::record_key(&rec.tenant, &rec.key_id)
}

/// Import operations need an `EXTERNAL` key that is not pending deletion.
fn check_importable(rec: &KeyRecord) -> Result<(), KmsError> {
    if rec.origin != Origin::External {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} origin is {} which is not valid for this operation.",
            rec.arn, rec.origin
        )));
    }
    if rec.state == KeyState::PendingDeletion {
        return Err(KmsError::InvalidState(format!("{} is pending deletion.", rec.arn)));
    }
    Ok(())
}

/// Issues import parameters (a fresh RSA wrapping key pair and a token) for
/// the caller's EXTERNAL key `key_id`; they replace, and so revoke, any
/// outstanding set.
pub async fn issue_parameters(
    ctx: &Ctx<'_>,
    key_id: &str,
    algorithm: WrappingAlgorithm,
    spec: WrappingKeySpec,
) -> Result<IssuedParameters, KmsError> {
    let valid_to = ctx.now.unix_timestamp() + import::PARAMETERS_LIFETIME_SECONDS;
    with_locked_key(ctx, Some(key_id.to_owned()), async |rec| {
        check_importable(&rec)?;
        let kek = ctx.tenant_kek(&rec.tenant)?;
        let (key_id, tenant, arn) = (rec.key_id, rec.tenant.clone(), rec.arn.clone());
        // RSA key generation takes up to a second (RSA-4096): off the reactor.
        let new = tokio::task::spawn_blocking(move || {
            import::generate(&kek, key_id, &tenant, &arn, algorithm, spec, valid_to)
        })
        .await
        .map_err(|_| KmsError::Internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "import parameters");
            KmsError::Internal
        })?;
        // One outstanding set per key: this replaces (and so revokes) the previous one.
        ctx.records
            .put(import::NAMESPACE, &parameters_name(&rec), &new.parameters)
            .await?;
        tracing::info!(key_id = %rec.key_id, algorithm = algorithm.as_str(), spec = spec.as_str(), "import parameters issued");
        Ok(IssuedParameters {
            key_arn: rec.arn,
            import_token: new.token,
            public_key: new.parameters.public_key,
            valid_to,
        })
    })
    .await
}

/// Imports material wrapped to the outstanding parameters of the caller's
/// EXTERNAL key `key_id` (the token is single-use); returns the key's ARN.
/// A key that had material before takes only the same material again.
pub async fn import_material(
    ctx: &Ctx<'_>,
    key_id: &str,
    token: &[u8],
    encrypted: Vec<u8>,
    expiry: Expiry,
) -> Result<String, KmsError> {
    let now = ctx.now.unix_timestamp();
    with_locked_key(ctx, Some(key_id.to_owned()), async |mut rec| {
        check_importable(&rec)?;
        let name = parameters_name(&rec);
        let stored: Option<ImportParameters> = ctx.records.get(import::NAMESPACE, &name).await?;
        let parameters = match stored {
            Some(p) if p.key_id == rec.key_id && p.tenant == rec.tenant && p.token_matches(token) => p,
            _ => {
                return Err(KmsError::InvalidImportToken(
                    "The import token is not valid for this KMS key. Call GetParametersForImport for a new one.".into(),
                ));
            }
        };
        // Single use: the wrapping key is gone before anything is decrypted with it.
        ctx.records.delete(import::NAMESPACE, &name).await?;
        if parameters.valid_to <= now || parameters.private_key.is_none() {
            return Err(KmsError::ExpiredImportToken(
                "The import token has expired. Call GetParametersForImport for a new one.".into(),
            ));
        }
        let kek = ctx.tenant_kek(&rec.tenant)?;
        let material = unwrap_off_reactor(Arc::clone(&kek), rec.arn.clone(), parameters, encrypted).await?;
        if material.len() != MATERIAL_LEN {
            return Err(KmsError::IncorrectKeyMaterial(
                "SYMMETRIC_DEFAULT key material must be 256 bits.".into(),
            ));
        }
        let fingerprint_key = ctx.material_fingerprint_key(&rec.tenant)?;
        let fingerprint = import::fingerprint(&fingerprint_key, &rec.arn, material.expose());
        if let Some(known) = &rec.material_fingerprint
            && !bool::from(subtle::ConstantTimeEq::ct_eq(known.as_slice(), fingerprint.as_slice()))
        {
            return Err(KmsError::IncorrectKeyMaterial(
                "The key material is not the same key material that was previously imported into this KMS key.".into(),
            ));
        }
        if rec.versions.is_empty() {
            rec.push_version(&kek, material.expose()).map_err(|e| {
                tracing::error!(error = %e, "imported key material");
                KmsError::Internal
            })?;
        }
        if rec.state == KeyState::PendingImport {
            rec.state = KeyState::Enabled;
        }
        rec.material_fingerprint = Some(fingerprint);
        let (model, valid_to) = match expiry {
            Expiry::At(t) => (ExpirationModel::KeyMaterialExpires, Some(t)),
            Expiry::Never => (ExpirationModel::KeyMaterialDoesNotExpire, None),
        };
        rec.expiration_model = Some(model);
        rec.valid_to = valid_to;
        save_key(ctx, &rec).await?;
        ctx.notes.detail(&format!(
            "key material imported; fingerprint {}",
            hex::encode(fingerprint)
        ));
        tracing::info!(key_id = %rec.key_id, "key material imported");
        Ok(rec.arn)
    })
    .await
}

async fn unwrap_off_reactor(
    kek: Arc<Key256>,
    arn: String,
    parameters: ImportParameters,
    encrypted: Vec<u8>,
) -> Result<SecretBytes, KmsError> {
    let result = tokio::task::spawn_blocking(move || parameters.unwrap_material(&kek, &arn, &encrypted))
        .await
        .map_err(|_| KmsError::Internal)?;
    result.map_err(|e| match e {
        ImportError::Undecryptable => KmsError::InvalidCiphertext(
            "The encrypted key material could not be decrypted with the import parameters.".into(),
        ),
        other => {
            tracing::error!(error = %other, "import parameters");
            KmsError::Internal
        }
    })
}

/// Deletes the imported material of the caller's EXTERNAL key `key_id`
/// (it goes to PendingImport; see [`remove_material`]); returns its ARN.
pub async fn delete_material(ctx: &Ctx<'_>, key_id: &str) -> Result<String, KmsError> {
    with_locked_key(ctx, Some(key_id.to_owned()), async |mut rec| {
        check_importable(&rec)?;
        let fingerprint = rec.material_fingerprint.map(hex::encode).unwrap_or_default();
        remove_material(&mut rec);
        save_key(ctx, &rec).await?;
        ctx.notes
            .detail(&format!("key material deleted; fingerprint {fingerprint}"));
        tracing::info!(key_id = %rec.key_id, "imported key material deleted");
        Ok(rec.arn)
    })
    .await
}
