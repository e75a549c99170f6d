//! BYOK: GetParametersForImport, ImportKeyMaterial and
//! DeleteImportedKeyMaterial for keys created with `Origin: EXTERNAL`:
//! AWS's parameters and validation, then [`crate::keystore::import`] (the
//! cryptography is in `keys::import`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, b64, blob, parse, render, required};
use crate::context::Ctx;
use crate::keys::import::{WrappingAlgorithm, WrappingKeySpec};
use crate::keys::record::ExpirationModel;
use crate::keystore::import::{self as domain, Expiry};

/// AWS: `ValidTo` is at most 365 days after the request.
const MAX_VALID_TO_SECONDS: i64 = 365 * 86_400;
/// AWS: an import token and wrapped material are at most 6144 bytes.
const MAX_BLOB: usize = 6144;

/// The request names one of `names`.
fn one_of<T>(field: &str, parsed: Option<T>, names: &[&str]) -> Result<T, KmsError> {
    parsed.ok_or_else(|| {
        KmsError::validation(
            field,
            &format!("Member must satisfy enum value set: [{}]", names.join(", ")),
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersForImportRequest {
    key_id: Option<String>,
    wrapping_algorithm: Option<String>,
    wrapping_key_spec: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersForImportResponse {
    key_id: String,
    import_token: String,
    public_key: String,
    parameters_valid_to: i64,
}

pub async fn get_parameters_for_import(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetParametersForImportRequest = parse(body)?;
    let algorithm_name = required("wrappingAlgorithm", req.wrapping_algorithm)?;
    let spec_name = required("wrappingKeySpec", req.wrapping_key_spec)?;
    let algorithm = one_of(
        "wrappingAlgorithm",
        WrappingAlgorithm::parse(&algorithm_name),
        WrappingAlgorithm::NAMES,
    )?;
    let spec = one_of(
        "wrappingKeySpec",
        WrappingKeySpec::parse(&spec_name),
        WrappingKeySpec::NAMES,
    )?;
    let key_id = required("keyId", req.key_id)?;
    let issued = domain::issue_parameters(ctx, &key_id, algorithm, spec).await?;
    render(&GetParametersForImportResponse {
        key_id: issued.key_arn,
        import_token: b64(&issued.import_token),
        public_key: b64(&issued.public_key),
        parameters_valid_to: issued.valid_to,
    })
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

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdResponse {
    key_id: String,
}

/// `ExpirationModel` (default `KEY_MATERIAL_EXPIRES`) and `ValidTo`, with AWS's rules.
fn expiry(model: Option<String>, valid_to: Option<f64>, now: i64) -> Result<Expiry, KmsError> {
    let model = match model {
        None => Some(ExpirationModel::KeyMaterialExpires),
        Some(name) => ExpirationModel::parse(&name),
    };
    match (model, valid_to) {
        (Some(ExpirationModel::KeyMaterialExpires), Some(t)) => {
            let t = t.floor();
            if !t.is_finite() || t <= now as f64 || t > (now + MAX_VALID_TO_SECONDS) as f64 {
                return Err(KmsError::Validation(
                    "ValidTo must be in the future and at most 365 days from now.".into(),
                ));
            }
            Ok(Expiry::At(t as i64))
        }
        (Some(ExpirationModel::KeyMaterialExpires), None) => Err(KmsError::Validation(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES.".into(),
        )),
        (Some(ExpirationModel::KeyMaterialDoesNotExpire), None) => Ok(Expiry::Never),
        (Some(ExpirationModel::KeyMaterialDoesNotExpire), Some(_)) => Err(KmsError::Validation(
            "ValidTo is not valid when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.".into(),
        )),
        _ => Err(KmsError::validation(
            "expirationModel",
            "Member must satisfy enum value set: [KEY_MATERIAL_EXPIRES, KEY_MATERIAL_DOES_NOT_EXPIRE]",
        )),
    }
}

pub async fn import_key_material(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ImportKeyMaterialRequest = parse(body)?;
    let token = blob("importToken", &required("importToken", req.import_token)?)?;
    params::length("importToken", token.len(), 1, MAX_BLOB)?;
    let encrypted = blob(
        "encryptedKeyMaterial",
        &required("encryptedKeyMaterial", req.encrypted_key_material)?,
    )?;
    params::length("encryptedKeyMaterial", encrypted.len(), 1, MAX_BLOB)?;
    let expiry = expiry(req.expiration_model, req.valid_to, ctx.now.unix_timestamp())?;
    let key_id = required("keyId", req.key_id)?;
    let key_arn = domain::import_material(ctx, &key_id, &token, encrypted, expiry).await?;
    render(&KeyIdResponse { key_id: key_arn })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn delete_imported_key_material(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let key_arn = domain::delete_material(ctx, &required("keyId", req.key_id)?).await?;
    render(&KeyIdResponse { key_id: key_arn })
}

#[cfg(test)]
mod tests;
