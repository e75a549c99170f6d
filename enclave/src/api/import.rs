//! BYOK: GetParametersForImport, ImportKeyMaterial and
//! DeleteImportedKeyMaterial for keys created with `Origin: EXTERNAL`, with
//! AWS KMS's rules and errors. The cryptography is in `keys::import`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::lifecycle::with_locked_key;
use super::params::{self, b64, blob, parse, required};
use crate::context::Ctx;
use crate::keys::import::{self, ImportError, ImportParameters, WrappingAlgorithm, WrappingKeySpec};
use crate::keys::record::{self, ExpirationModel, KeyRecord, KeyState, Origin};
pub use crate::keystore::due::remove_material;
use crate::secret::SecretBytes;

pub const EXPIRES: &str = "KEY_MATERIAL_EXPIRES";
pub const DOES_NOT_EXPIRE: &str = "KEY_MATERIAL_DOES_NOT_EXPIRE";

/// AWS: `ValidTo` is at most 365 days after the request.
const MAX_VALID_TO_SECONDS: i64 = 365 * 86_400;

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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersForImportRequest {
    key_id: Option<String>,
    wrapping_algorithm: Option<String>,
    wrapping_key_spec: Option<String>,
}

pub async fn get_parameters_for_import(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetParametersForImportRequest = parse(body)?;
    let algorithm_name = required("wrappingAlgorithm", req.wrapping_algorithm)?;
    let spec_name = required("wrappingKeySpec", req.wrapping_key_spec)?;
    let algorithm = WrappingAlgorithm::parse(&algorithm_name).ok_or_else(|| {
        KmsError::validation(
            "wrappingAlgorithm",
            &format!(
                "Member must satisfy enum value set: [{}]",
                WrappingAlgorithm::NAMES.join(", ")
            ),
        )
    })?;
    let spec = WrappingKeySpec::parse(&spec_name).ok_or_else(|| {
        KmsError::validation(
            "wrappingKeySpec",
            &format!(
                "Member must satisfy enum value set: [{}]",
                WrappingKeySpec::NAMES.join(", ")
            ),
        )
    })?;
    let valid_to = ctx.now.unix_timestamp() + import::PARAMETERS_LIFETIME_SECONDS;
    with_locked_key(ctx, req.key_id, async |rec| {
        check_importable(&rec)?;
        let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
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
        Ok(json!({
            "KeyId": rec.arn,
            "ImportToken": b64(&new.token),
            "PublicKey": b64(&new.parameters.public_key),
            "ParametersValidTo": valid_to,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportKeyMaterialRequest {
    key_id: Option<String>,
    import_token: Option<String>,
    encrypted_key_material: Option<String>,
    expiration_model: Option<String>,
    valid_to: Option<f64>,
}

pub async fn import_key_material(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ImportKeyMaterialRequest = parse(body)?;
    let token = blob("importToken", &required("importToken", req.import_token)?)?;
    params::length("importToken", token.len(), 1, 6144)?;
    let encrypted = blob(
        "encryptedKeyMaterial",
        &required("encryptedKeyMaterial", req.encrypted_key_material)?,
    )?;
    params::length("encryptedKeyMaterial", encrypted.len(), 1, 6144)?;
    let now = ctx.now.unix_timestamp();
    let model = req.expiration_model.unwrap_or_else(|| EXPIRES.to_owned());
    let (model, valid_to) = match (model.as_str(), req.valid_to) {
        (EXPIRES, Some(t)) => {
            let t = t.floor();
            if !t.is_finite() || t <= now as f64 || t > (now + MAX_VALID_TO_SECONDS) as f64 {
                return Err(KmsError::Validation(
                    "ValidTo must be in the future and at most 365 days from now.".into(),
                ));
            }
            (ExpirationModel::KeyMaterialExpires, Some(t as i64))
        }
        (EXPIRES, None) => {
            return Err(KmsError::Validation(
                "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.".into(),
            ));
        }
        (DOES_NOT_EXPIRE, None) => (ExpirationModel::KeyMaterialDoesNotExpire, None),
        (DOES_NOT_EXPIRE, Some(_)) => {
            return Err(KmsError::Validation(
                "ValidTo is not valid when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.".into(),
            ));
        }
        _ => {
            return Err(KmsError::validation(
                "expirationModel",
                "Member must satisfy enum value set: [KEY_MATERIAL_EXPIRES, KEY_MATERIAL_DOES_NOT_EXPIRE]",
            ));
        }
    };
    with_locked_key(ctx, req.key_id, async |mut rec| {
        check_importable(&rec)?;
        let name = parameters_name(&rec);
        let stored: Option<ImportParameters> = ctx.records.get(import::NAMESPACE, &name).await?;
        let parameters = match stored {
            Some(p) if p.key_id == rec.key_id && p.tenant == rec.tenant && p.token_matches(&token) => p,
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
        let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
        let material = unwrap_off_reactor(Arc::clone(&kek), rec.arn.clone(), parameters, encrypted).await?;
        if material.len() != 32 {
            return Err(KmsError::IncorrectKeyMaterial(
                "SYMMETRIC_DEFAULT key material must be 256 bits.".into(),
            ));
        }
        let fingerprint_key = ctx.keyring.hierarchy.material_fingerprint_key(&rec.tenant);
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
        rec.expiration_model = Some(model);
        rec.valid_to = valid_to;
        params::save_key(ctx, &rec).await?;
        ctx.notes.detail(&format!(
            "key material imported; fingerprint {}",
            hex::encode(fingerprint)
        ));
        tracing::info!(key_id = %rec.key_id, "key material imported");
        Ok(json!({ "KeyId": rec.arn }))
    })
    .await
}

async fn unwrap_off_reactor(
    kek: Arc<crate::secret::Key256>,
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn delete_imported_key_material(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    with_locked_key(ctx, req.key_id, async |mut rec| {
        check_importable(&rec)?;
        let fingerprint = rec.material_fingerprint.map(hex::encode).unwrap_or_default();
        remove_material(&mut rec);
        params::save_key(ctx, &rec).await?;
        ctx.notes
            .detail(&format!("key material deleted; fingerprint {fingerprint}"));
        tracing::info!(key_id = %rec.key_id, "imported key material deleted");
        Ok(json!({ "KeyId": rec.arn }))
    })
    .await
}

#[cfg(test)]
mod tests;
