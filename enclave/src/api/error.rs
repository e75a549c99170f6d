//! The one place where failures become AWS error shapes:
//! `{"__type": "<Name>Exception", "message": "…"}` with AWS's status codes.

use keyward_wire::ApiResponse;

/// An error answered to the client. Messages never contain secrets.
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
    /// Details go to the log under the request id; the client sees a generic message.
    Internal,
}

impl KmsError {
    pub fn aws_type(&self) -> &'static str {
        match self {
            KmsError::Serialization(_) => "SerializationException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::UnrecognizedClient(_) => "UnrecognizedClientException",
            KmsError::InvalidSignature(_) => "InvalidSignatureException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::DryRunOperation(_) => "DryRunOperationException",
            KmsError::Throttling(_) => "ThrottlingException",
            KmsError::InvalidMac(_) => "KMSInvalidMacException",
            KmsError::InvalidSignatureValue(_) => "KMSInvalidSignatureException",
            KmsError::Tag(_) => "TagException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::InvalidImportToken(_) => "InvalidImportTokenException",
            KmsError::ExpiredImportToken(_) => "ExpiredImportTokenException",
            KmsError::IncorrectKeyMaterial(_) => "IncorrectKeyMaterialException",
            KmsError::Internal => "KMSInternalException",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            KmsError::Internal => 500,
            KmsError::DryRunOperation(_) => 412,
            _ => 400,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            KmsError::Serialization(m)
            | KmsError::UnknownOperation(m)
            | KmsError::Validation(m)
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
            | KmsError::InvalidAliasName(m)
            | KmsError::LimitExceeded(m)
            | KmsError::Tag(m)
            | KmsError::InvalidSignatureValue(m)
            | KmsError::InvalidMac(m) => m,
            KmsError::Internal => "The request could not be completed due to an internal error. Retry the request.",
        }
    }

    pub fn to_response(&self) -> ApiResponse {
        let body = serde_json::json!({ "__type": self.aws_type(), "message": self.message() });
        ApiResponse {
            status: self.status(),
            error_type: Some(self.aws_type().to_owned()),
            body: body.to_string().into_bytes(),
            timing: keyward_wire::Timing::default(),
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
        tracing::error!(error = %e, "store failure");
        KmsError::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_aws() {
        let r = KmsError::NotFound("Key 'x' does not exist".into()).to_response();
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["__type"], "NotFoundException");
        assert_eq!(v["message"], "Key 'x' does not exist");
        let r = KmsError::Internal.to_response();
        assert_eq!(r.status, 500);
        assert_eq!(r.error_type.as_deref(), Some("KMSInternalException"));
    }
}
