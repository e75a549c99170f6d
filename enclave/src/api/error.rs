//! The one place where failures become AWS error shapes:
//! `{"__type": "<Name>Exception", "message": "…"}` with AWS's status codes.
//! The error type itself lives below the request layer ([`crate::error`]).

use keyward_wire::ApiResponse;

pub use crate::error::KmsError;

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
            KmsError::PayloadTooLarge(_) => "ValidationException",
            KmsError::RequestTimeout(_) => "RequestTimeoutException",
            KmsError::Internal | KmsError::InternalDetail(_) | KmsError::Conflict(_) => "KMSInternalException",
            KmsError::DependencyTimeout(_) => "DependencyTimeoutException",
            KmsError::Sealed(_) => crate::custody::state::SEALED_ERROR_TYPE,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            KmsError::Internal | KmsError::InternalDetail(_) | KmsError::Conflict(_) => 500,
            KmsError::DependencyTimeout(_) => 503,
            KmsError::Sealed(_) => crate::custody::state::SEALED_STATUS,
            KmsError::DryRunOperation(_) => 412,
            KmsError::PayloadTooLarge(_) => 413,
            KmsError::RequestTimeout(_) => 408,
            _ => 400,
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
}

/// The answer to a request the TLS front end refused before the API saw it
/// (`tls::serve`): the same shapes as every other error.
pub fn refusal(refusal: &crate::tls::serve::Refusal) -> ApiResponse {
    use crate::tls::serve::Refusal;
    let error = match refusal {
        Refusal::TooManyHeaders => KmsError::Validation("Too many headers.".into()),
        Refusal::BodyTooLarge(limit) => KmsError::PayloadTooLarge(format!("The request body exceeds {limit} bytes.")),
        Refusal::BodyUnreadable => KmsError::Validation("The request body could not be read.".into()),
        Refusal::BodyTimeout => KmsError::RequestTimeout("The request body did not arrive in time.".into()),
        Refusal::Unavailable => KmsError::Internal,
        Refusal::Busy => KmsError::Throttling("Too many request bodies in flight; retry.".into()),
    };
    error.to_response()
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
