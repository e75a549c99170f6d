//! # keyward-test-support: what Keyward's tests and benchmarks share
//!
//! Not part of any product: a `publish = false` workspace member that the
//! integration tests (`tests/integration`, `tests/inprocess`), the criterion
//! benchmarks and other crates' tests depend on, so that none of them keeps
//! its own copy of the same helpers.
//!
//! * [`enclave`]: a mock-mode [`keyward_enclave::Enclave`] as `keyward dev`
//!   builds it (mock NSM, mock attestation PKI), its configuration, and a
//!   clock that can be set.
//! * [`inprocess`]: [`inprocess::Service`], an enclave over an in-memory store
//!   served in process through `keyward_enclave::api::handle`, with an
//!   `aws-sdk-kms` client whose HTTP client calls it directly (real SigV4, no
//!   sockets, no processes).
//! * [`sdk`]: `aws-sdk-kms` client configuration and assertions (`must`,
//!   `expect_error`, `create_key`, `encrypt`, ...).
//! * [`sigv4`]: signing raw requests; [`raw`]: raw AWS JSON responses.
//! * [`tls`]: TLS clients trusting a deployment's enclave CA.
//! * [`tamper`]: a host store that lies on request (omits, rolls back,
//!   swaps, reorders), in front of every in-process service.
//! * [`random`], [`b64`] and the example policy modules ([`policies`]).
//!
//! The enclave's own unit tests cannot use this crate (it depends on
//! `keyward-enclave`, so they would see two copies of its types).
#![forbid(unsafe_code)]

pub mod b64;
pub mod custody;
pub mod enclave;
pub mod inprocess;
pub mod kmstool_cms;
pub mod policies;
pub mod random;
pub mod raw;
pub mod sdk;
pub mod sigv4;
pub mod tamper;
pub mod tls;

pub use b64::{b64, unb64};
pub use random::{Creds, random_alnum, random_bytes};

/// The bootstrap tenant of `keyward dev` (and of [`inprocess::Service`]).
pub const ACCOUNT: &str = "111122223333";
/// The region `keyward dev` answers for by default.
pub const REGION: &str = "us-east-1";
/// One day, in seconds.
pub const DAY: i64 = 24 * 3600;

/// ARN of a key of the bootstrap tenant.
pub fn key_arn(key_id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
}

/// Milliseconds since the epoch, now (attestation documents' timestamps).
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
}
