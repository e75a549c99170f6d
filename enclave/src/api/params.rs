//! Request parameters: JSON → typed values, with AWS's validation rules and
//! messages, and key references (id, ARN, alias) → the caller's own key.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use super::error::KmsError;
use crate::keys::context::{ContextError, EncryptionContext};
use crate::keys::record::{self, KeyRecord, KeyState};

/// Deserializes a request body into `T`; type mismatches are AWS's SerializationException.
pub fn parse<T: DeserializeOwned>(body: Value) -> Result<T, KmsError> {
    serde_json::from_value(body).map_err(|e| KmsError::Serialization(format!("Invalid request: {e}")))
}

/// Decodes a base64 blob field.
pub fn blob(field: &str, value: &str) -> Result<Vec<u8>, KmsError> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|_| KmsError::Serialization(format!("Value at '{field}' is not valid base64.")))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A required field.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, KmsError> {
    value.ok_or_else(|| KmsError::missing(field))
}

/// A length in `[min, max]`.
pub fn length(field: &str, len: usize, min: usize, max: usize) -> Result<(), KmsError> {
    if len < min || len > max {
        return Err(KmsError::validation(
            field,
            &format!("Member must have length between {min} and {max} (inclusive)"),
        ));
    }
    Ok(())
}

pub fn context(pairs: Option<BTreeMap<String, String>>) -> Result<EncryptionContext, KmsError> {
    EncryptionContext::new(pairs.unwrap_or_default()).map_err(|e| match e {
        ContextError::TooLarge => KmsError::validation(
            "encryptionContext",
            "Member must have a total size of at most 8192 bytes",
        ),
        ContextError::EmptyKey => KmsError::validation("encryptionContext", "Keys must not be empty"),
    })
}

pub fn key_arn(region: &str, tenant: &str, key_id: &Uuid) -> String {
    format!("arn:aws:kms:{region}:{tenant}:key/{key_id}")
}

/// Resolves a `KeyId` parameter (key id, key ARN, alias name or alias ARN) to
/// one of the caller's keys. Anything else, including another tenant's key, is
/// "not found".
pub fn resolve_key_id(ctx: &Ctx<'_>, key_id: &str) -> Result<Uuid, KmsError> {
    length("keyId", key_id.len(), 1, 2048)?;
    let not_found = || KmsError::NotFound(format!("Invalid keyId '{}'", super::printable(key_id)));
    if let Some(rest) = key_id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return Err(not_found());
        };
        if *partition != "aws" || *service != "kms" || *region != ctx.region() || *account != ctx.principal.tenant {
            return Err(not_found());
        }
        if resource.starts_with("alias/") {
            return Err(alias_not_found(ctx, resource));
        }
        let id = resource.strip_prefix("key/").ok_or_else(not_found)?;
        return Uuid::try_parse(id).map_err(|_| not_found());
    }
    if key_id.starts_with("alias/") {
        return Err(alias_not_found(ctx, key_id));
    }
    Uuid::try_parse(key_id).map_err(|_| not_found())
}

fn alias_not_found(ctx: &Ctx<'_>, alias: &str) -> KmsError {
    KmsError::NotFound(format!(
        "Alias arn:aws:kms:{}:{}:{} is not found.",
        ctx.region(),
        ctx.principal.tenant,
        super::printable(alias)
    ))
}

/// Loads the caller's key record.
pub async fn load_key(ctx: &Ctx<'_>, key_id: &Uuid) -> Result<KeyRecord, KmsError> {
    let name = record::record_key(&ctx.principal.tenant, key_id);
    let record: Option<KeyRecord> = ctx.records.get(record::NAMESPACE, &name).await?;
    match record {
        Some(r) if r.key_id == *key_id && r.tenant == ctx.principal.tenant => Ok(r),
        Some(_) => {
            tracing::error!("key record names another key than its identity");
            Err(KmsError::Internal)
        }
        None => Err(KmsError::NotFound(format!(
            "Key '{}' does not exist",
            key_arn(ctx.region(), &ctx.principal.tenant, key_id)
        ))),
    }
}

/// Cryptographic operations need an enabled key.
pub fn require_enabled(key: &KeyRecord) -> Result<(), KmsError> {
    match key.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", key.arn))),
        state => Err(KmsError::InvalidState(format!("{} is {}", key.arn, state.as_str()))),
    }
}
