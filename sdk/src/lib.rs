//! # keyward-sdk: client library for Keyward
//!
//! Keyward speaks the AWS KMS JSON 1.1 API, so for every `TrentService.*`
//! operation (CreateKey, Encrypt, Decrypt, GenerateDataKey, …) use an
//! unmodified AWS SDK with its endpoint pointed at Keyward, for example the
//! official `aws-sdk-kms` crate:
//!
//! ```text
//! let config = aws_sdk_kms::Config::builder()
//!     .endpoint_url("http://127.0.0.1:7800")
//!     .region(aws_sdk_kms::config::Region::new("us-east-1"))
//!     .credentials_provider(aws_sdk_kms::config::Credentials::new(akid, secret, None, None, "keyward"))
//!     .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
//!     .build();
//! let kms = aws_sdk_kms::Client::from_conf(config);
//! ```
//!
//! This crate will carry what no AWS SDK has: typed calls for the
//! `Keyward.*` extension operations (tenants, access keys, policy modules,
//! attestation, audit) and the client-side verifiers (attestation documents,
//! the audit hash chain). The extensions arrive with the capabilities that
//! define them; until then this crate only names the protocol constants.
#![forbid(unsafe_code)]

/// `X-Amz-Target` prefix of the AWS KMS operations.
pub const AWS_KMS_TARGET_PREFIX: &str = "TrentService.";
/// `X-Amz-Target` prefix of Keyward's extension operations.
pub const KEYWARD_TARGET_PREFIX: &str = "Keyward.";
/// Content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
