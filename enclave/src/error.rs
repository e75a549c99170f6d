//! The enclave's error type, returned by every layer below the request
//! layer (authentication, the keystore domain, sealing, the store). It says
//! what went wrong in AWS KMS terms (each variant is one AWS error type) but
//! knows nothing of HTTP: `api/error.rs` maps it to AWS's wire shape.

/// An error answered to the client (mapped to its AWS shape by
/// `api::error`). Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KmsError {
    Serialization(String),
    UnknownOperation(String),
    Validation(String),
    NotFound(String),
    InvalidCiphertext(String),
    InvalidKeyUsage(String),
    IncorrectKey(String),
    Disabled(String),
    InvalidState(String),
    InvalidMarker(String),
    UnsupportedOperation(String),
    UnrecognizedClient(String),
    InvalidSignature(String),
    AccessDenied(String),
    MalformedPolicyDocument(String),
    /// HTTP 412: the request would have succeeded (`DryRun: true`).
    DryRunOperation(String),
    Throttling(String),
    InvalidMac(String),
    /// `KMSInvalidSignatureException`: Verify found the signature invalid
    /// (`InvalidSignature` is the SigV4 authentication failure).
    InvalidSignatureValue(String),
    Tag(String),
    LimitExceeded(String),
    InvalidAliasName(String),
    AlreadyExists(String),
    InvalidImportToken(String),
    ExpiredImportToken(String),
    IncorrectKeyMaterial(String),
    /// HTTP 413 `ValidationException`: a request body over the limit.
    PayloadTooLarge(String),
    /// HTTP 408 `RequestTimeoutException`: a body that did not arrive in time.
    RequestTimeout(String),
    /// Details go to the log under the request id; the client sees a generic message.
    Internal,
    /// `KMSInternalException` with a message the client may see: a stored
    /// record failed authentication, or the store is of an older format.
    InternalDetail(String),
    /// `KMSInternalException`: the request's write found its record changed
    /// concurrently (AWS KMS has no conflict error), after it had written
    /// something else, or after repeated tries; the client may retry.
    Conflict(String),
    /// `DependencyTimeoutException` (503): the host store did not answer.
    DependencyTimeout(String),
    /// `ServiceUnavailableException` (503): the enclave is sealed (no root
    /// yet); the message says what it waits for and how to unseal it.
    Sealed(String),
}

impl KmsError {
    pub fn message(&self) -> &str {
        match self {
            KmsError::Serialization(m)
            | KmsError::UnknownOperation(m)
            | KmsError::Validation(m)
            | KmsError::Sealed(m)
            | KmsError::NotFound(m)
            | KmsError::InvalidCiphertext(m)
            | KmsError::InvalidKeyUsage(m)
            | KmsError::IncorrectKey(m)
            | KmsError::Disabled(m)
            | KmsError::InvalidState(m)
            | KmsError::InvalidMarker(m)
            | KmsError::UnsupportedOperation(m)
            | KmsError::UnrecognizedClient(m)
            | KmsError::InvalidSignature(m)
            | KmsError::AccessDenied(m)
            | KmsError::MalformedPolicyDocument(m)
            | KmsError::DryRunOperation(m)
            | KmsError::Throttling(m)
            | KmsError::AlreadyExists(m)
            | KmsError::InvalidImportToken(m)
            | KmsError::ExpiredImportToken(m)
            | KmsError::IncorrectKeyMaterial(m)
            | KmsError::PayloadTooLarge(m)
            | KmsError::RequestTimeout(m)
            | KmsError::InvalidAliasName(m)
            | KmsError::LimitExceeded(m)
            | KmsError::Tag(m)
            | KmsError::InvalidSignatureValue(m)
            | KmsError::InvalidMac(m)
            | KmsError::InternalDetail(m)
            | KmsError::Conflict(m)
            | KmsError::DependencyTimeout(m) => m,
            KmsError::Internal => "The request could not be completed due to an internal error. Retry the request.",
        }
    }

    pub fn validation(field: &str, constraint: &str) -> Self {
        KmsError::Validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: {constraint}"
        ))
    }

    pub fn missing(field: &str) -> Self {
        KmsError::Validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    }
}

impl From<crate::store::StoreError> for KmsError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::seal::SealError;
        use crate::store::StoreError;
        tracing::error!(error = %e, "store failure");
        match e {
            StoreError::Conflict { record, .. } => KmsError::Conflict(format!(
                "The record {record} was changed concurrently by another request; retry the request."
            )),
            StoreError::Seal(SealError::OldFormat(_)) | StoreError::NoGeneration(_) => {
                KmsError::InternalDetail(e.to_string())
            }
            StoreError::Seal(SealError::Forged(_)) => KmsError::InternalDetail(format!(
                "The host store served a record that does not authenticate: {e}. Nothing was released."
            )),
            StoreError::Freshness { .. } => KmsError::InternalDetail(format!(
                "{e}: the store was rolled back or a record was hidden. Nothing was released."
            )),
            StoreError::Unavailable(_) => {
                KmsError::DependencyTimeout("The key store did not answer in time. Retry the request.".into())
            }
            _ => KmsError::Internal,
        }
    }
}
