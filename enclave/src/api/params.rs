//! Request parameters: JSON → typed values, with AWS's validation rules and
//! messages, and key references (id, ARN, alias) → the caller's own key.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::KmsError;
use crate::keys::context::{ContextError, EncryptionContext};
pub use crate::text::printable;

/// Deserializes a request body into `T`; type mismatches are AWS's SerializationException.
pub fn parse<T: DeserializeOwned>(body: Value) -> Result<T, KmsError> {
    serde_json::from_value(body).map_err(|e| KmsError::Serialization(format!("Invalid request: {e}")))
}

/// Renders a typed response as the JSON body clients see.
pub fn render<T: Serialize>(response: &T) -> Result<Value, KmsError> {
    serde_json::to_value(response).map_err(|e| {
        tracing::error!(error = %e, "a response did not serialize");
        KmsError::Internal
    })
}

/// The answer of an operation that returns nothing: `{}`.
#[derive(Serialize)]
pub struct Empty {}

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
