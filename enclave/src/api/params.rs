//! Request parameters: JSON → typed values, with AWS's validation rules and
//! messages, and key references (id, ARN, alias) → the caller's own key.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use super::error::KmsError;
use super::{aliases, lifecycle};
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
/// one of the caller's keys. Anything else, including another tenant's key or
/// alias, is "not found".
pub async fn resolve_key_id(ctx: &Ctx<'_>, key_id: &str) -> Result<Uuid, KmsError> {
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
            return resolve_alias(ctx, resource).await;
        }
        let id = resource.strip_prefix("key/").ok_or_else(not_found)?;
        return Uuid::try_parse(id).map_err(|_| not_found());
    }
    if key_id.starts_with("alias/") {
        return resolve_alias(ctx, key_id).await;
    }
    Uuid::try_parse(key_id).map_err(|_| not_found())
}

async fn resolve_alias(ctx: &Ctx<'_>, name: &str) -> Result<Uuid, KmsError> {
    aliases::lookup(ctx, name).await?.ok_or_else(|| {
        KmsError::NotFound(format!(
            "Alias {} is not found.",
            aliases::alias_arn(ctx.region(), &ctx.principal.tenant, &super::printable(name))
        ))
    })
}

/// Resolves and loads the caller's key (see [`resolve_key_id`], [`load_key`]).
pub async fn resolve_key(ctx: &Ctx<'_>, key_id: &str) -> Result<KeyRecord, KmsError> {
    let id = resolve_key_id(ctx, key_id).await?;
    load_key(ctx, &id).await
}

/// Loads the caller's key record, first applying what is due: a key past
/// its deletion date is destroyed (and reads as not found), an automatic
/// rotation past its date happens, expired imported material is deleted.
pub async fn load_key(ctx: &Ctx<'_>, key_id: &Uuid) -> Result<KeyRecord, KmsError> {
    load(ctx, key_id, false).await
}

/// [`load_key`] for a caller that already holds the key's write lock
/// (the lock is not reentrant).
pub async fn load_key_locked(ctx: &Ctx<'_>, key_id: &Uuid) -> Result<KeyRecord, KmsError> {
    load(ctx, key_id, true).await
}

async fn load(ctx: &Ctx<'_>, key_id: &Uuid, locked: bool) -> Result<KeyRecord, KmsError> {
    let name = record::record_key(&ctx.principal.tenant, key_id);
    let rec = read_key(ctx, &name, key_id).await?;
    let rec = match rec {
        Some(rec) if lifecycle::is_due(&rec, ctx.now.unix_timestamp()) => {
            let _guard = if locked {
                None
            } else {
                Some(ctx.enclave.locks.lock(&name).await)
            };
            match read_key(ctx, &name, key_id).await? {
                Some(rec) => lifecycle::apply_due(ctx, rec).await?,
                None => None,
            }
        }
        other => other,
    };
    if let Some(rec) = &rec {
        // Customer policy modules decide after built-in authorization, on every key acted on.
        super::policies::enforce(ctx, rec).await?;
    }
    rec.ok_or_else(|| {
        KmsError::NotFound(format!(
            "Key '{}' does not exist",
            key_arn(ctx.region(), &ctx.principal.tenant, key_id)
        ))
    })
}

async fn read_key(ctx: &Ctx<'_>, name: &str, key_id: &Uuid) -> Result<Option<KeyRecord>, KmsError> {
    let record: Option<KeyRecord> = ctx.records.get(record::NAMESPACE, name).await?;
    match record {
        Some(r) if r.key_id == *key_id && r.tenant == ctx.principal.tenant => {
            ctx.notes.key(&r.arn);
            Ok(Some(r))
        }
        Some(_) => {
            tracing::error!("key record names another key than its identity");
            Err(KmsError::Internal)
        }
        None => Ok(None),
    }
}

/// Persists a key record (the caller holds the key's lock).
pub async fn save_key(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<(), KmsError> {
    ctx.notes.key(&rec.arn);
    ctx.records
        .put(record::NAMESPACE, &record::record_key(&rec.tenant, &rec.key_id), rec)
        .await?;
    Ok(())
}

/// What an operation does to a key, for AWS's key-state rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Cryptographic use (Encrypt, Sign, GenerateMac, GetPublicKey, …).
    Crypto,
    /// A change of metadata or configuration (tags, description, rotation, aliases).
    Manage,
}

/// AWS's key-state table: cryptographic use needs Enabled (Disabled →
/// DisabledException); nothing but reads and CancelKeyDeletion works in
/// PendingDeletion; PendingImport allows management only.
pub fn check_state(key: &KeyRecord, access: Access) -> Result<(), KmsError> {
    match (key.state, access) {
        (KeyState::Enabled, _) => Ok(()),
        (KeyState::Disabled, Access::Crypto) => Err(KmsError::Disabled(format!("{} is disabled.", key.arn))),
        (KeyState::Disabled, Access::Manage) | (KeyState::PendingImport, Access::Manage) => Ok(()),
        (state, _) => Err(KmsError::InvalidState(format!(
            "{} is pending {}.",
            key.arn,
            pending(state)
        ))),
    }
}

fn pending(state: KeyState) -> &'static str {
    match state {
        KeyState::PendingDeletion => "deletion",
        KeyState::PendingImport => "import",
        _ => "a state change",
    }
}

/// A key that can be used cryptographically for `usage`.
pub fn require_usable(key: &KeyRecord, usage: &str) -> Result<(), KmsError> {
    check_state(key, Access::Crypto)?;
    if key.key_usage != usage {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} key usage is {}, not {usage}.",
            key.arn, key.key_usage
        )));
    }
    Ok(())
}

/// Pagination marker: opaque to clients, validated when it comes back.
pub fn marker_from(field_value: Option<&str>) -> Result<Option<String>, KmsError> {
    match field_value {
        None => Ok(None),
        Some(m) => {
            length("marker", m.len(), 1, 1024)?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(m)
                .map_err(|_| KmsError::InvalidMarker("The marker is not one this operation returned.".into()))?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| KmsError::InvalidMarker("The marker is not one this operation returned.".into()))
        }
    }
}

pub fn marker_to(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// A `Limit` parameter within `[1, max]`, defaulting to `default`.
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<u32, KmsError> {
    let limit = value.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(KmsError::validation(
            "limit",
            &format!("Member must have value between 1 and {max} (inclusive)"),
        ));
    }
    Ok(limit as u32)
}

/// AWS KMS: at most 10 grant tokens of 1–8192 characters each. Keyward has
/// no grants, so valid tokens are accepted and otherwise ignored.
pub fn check_grant_tokens(tokens: Option<&[String]>) -> Result<(), KmsError> {
    let Some(tokens) = tokens else {
        return Ok(());
    };
    if tokens.len() > 10 {
        return Err(KmsError::validation(
            "grantTokens",
            "Member must have length less than or equal to 10",
        ));
    }
    for token in tokens {
        length("grantTokens.member", token.len(), 1, 8192)?;
    }
    Ok(())
}

/// AWS KMS: a message to sign or MAC is 1–4096 bytes.
pub const MAX_MESSAGE: usize = 4096;

/// A `Message` parameter of 1–4096 bytes.
pub fn message(value: Option<String>) -> Result<Vec<u8>, KmsError> {
    let message = blob("message", &required("message", value)?)?;
    length("message", message.len(), 1, MAX_MESSAGE)?;
    Ok(message)
}
