//! `aws-sdk-kms` clients for tests, and the assertions and small calls every
//! test module uses.

use std::time::{Duration, SystemTime};

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime};

use crate::{REGION, key_arn};

// ---------------------------------------------------------------- clients

/// The real time shifted by `offset_seconds` (negative is the past).
pub fn shifted_now(offset_seconds: i64) -> SystemTime {
    let now = SystemTime::now();
    let delta = Duration::from_secs(offset_seconds.unsigned_abs());
    if offset_seconds >= 0 { now + delta } else { now - delta }
}

/// An SDK time source running `offset_seconds` ahead of (or behind) the
/// real clock, for signing requests to an enclave with a shifted clock.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedTimeSource {
    pub offset_seconds: i64,
}

impl aws_smithy_async::time::TimeSource for ShiftedTimeSource {
    fn now(&self) -> SystemTime {
        shifted_now(self.offset_seconds)
    }
}

/// A client configuration without an endpoint or HTTP client: these
/// credentials, [`REGION`], no retries (failures must be visible), an
/// optional operation timeout, signing with the real time shifted by
/// `offset_seconds`.
pub fn client_config(
    access_key_id: &str,
    secret: &str,
    op_timeout: Option<Duration>,
    offset_seconds: i64,
) -> aws_sdk_kms::config::Builder {
    let mut timeouts = TimeoutConfig::builder().connect_timeout(Duration::from_secs(10));
    if let Some(t) = op_timeout {
        timeouts = timeouts.operation_timeout(t);
    }
    aws_sdk_kms::Config::builder()
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .time_source(ShiftedTimeSource { offset_seconds })
        // The SDK learns a "clock skew" from the HTTP Date header, which the
        // host proxy sets from the host's real clock, and would then sign
        // with that time instead of the enclave's shifted one.
        .disable_clock_skew_correction(offset_seconds != 0)
}

// ---------------------------------------------------------------- errors

/// Unwraps an SDK result, panicking with the full error context.
#[track_caller]
pub fn must<T, E>(what: &str, result: Result<T, SdkError<E>>) -> T
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.unwrap_or_else(|e| panic!("{what}: {}", DisplayErrorContext(&e)))
}

/// HTTP status and AWS error code (`__type`) of a failed SDK call.
pub fn error_parts<E>(err: &SdkError<E>) -> (Option<u16>, Option<String>)
where
    E: ProvideErrorMetadata,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    (status, err.code().map(str::to_string))
}

/// Asserts that an SDK call failed with exactly this status and `__type`.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug, E>(what: &str, result: Result<T, SdkError<E>>, status: u16, code: &str)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(v) => panic!("{what}: expected {code} ({status}), but the call succeeded: {v:?}"),
        Err(err) => {
            let (got_status, got_code) = error_parts(&err);
            assert_eq!(
                (got_status, got_code.as_deref()),
                (Some(status), Some(code)),
                "{what}: wrong error: {}",
                DisplayErrorContext(&err)
            );
        }
    }
}

// ---------------------------------------------------------------- calls

pub type Context = std::collections::HashMap<String, String>;

pub fn context(pairs: &[(&str, &str)]) -> Context {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Creates a symmetric key and returns its KeyId (a uuid).
pub async fn create_key(client: &aws_sdk_kms::Client, description: &str) -> String {
    let out = must("CreateKey", client.create_key().description(description).send().await);
    let meta = out.key_metadata().expect("CreateKey returns KeyMetadata");
    meta.key_id().to_string()
}

/// Creates a key of this spec and usage (`None` leaves it to the service's
/// default) and returns its KeyId.
pub async fn create_key_of(
    client: &aws_sdk_kms::Client,
    spec: aws_sdk_kms::types::KeySpec,
    usage: Option<aws_sdk_kms::types::KeyUsageType>,
) -> String {
    let what = format!("CreateKey {spec:?} {usage:?}");
    let out = must(
        &what,
        client.create_key().key_spec(spec).set_key_usage(usage).send().await,
    );
    out.key_metadata()
        .unwrap_or_else(|| panic!("{what}: no KeyMetadata"))
        .key_id()
        .to_string()
}

pub async fn encrypt(client: &aws_sdk_kms::Client, key_id: &str, plaintext: &[u8], ctx: Option<&Context>) -> Vec<u8> {
    let out = must(
        "Encrypt",
        client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(ctx.cloned())
            .send()
            .await,
    );
    out.ciphertext_blob()
        .expect("Encrypt returns CiphertextBlob")
        .as_ref()
        .to_vec()
}

/// Decrypts (optionally naming the key) and returns the plaintext.
pub async fn decrypt(
    client: &aws_sdk_kms::Client,
    key_id: Option<&str>,
    ciphertext: &[u8],
    ctx: Option<&Context>,
) -> Vec<u8> {
    let out = must(
        "Decrypt",
        client
            .decrypt()
            .set_key_id(key_id.map(str::to_string))
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(ctx.cloned())
            .send()
            .await,
    );
    out.plaintext().expect("Decrypt returns Plaintext").as_ref().to_vec()
}

/// Whether `id` (as returned in a response's KeyId) names the key `key_id`
/// of the bootstrap tenant: its uuid or its ARN.
pub fn names_key(id: Option<&str>, key_id: &str) -> bool {
    id.is_some_and(|id| id == key_id || id == key_arn(key_id))
}

/// Every KeyId, following NextMarker with pages of `limit`.
pub async fn list_all_keys(client: &aws_sdk_kms::Client, limit: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10_000 {
        let out = must(
            "ListKeys",
            client.list_keys().limit(limit).set_marker(marker.take()).send().await,
        );
        ids.extend(out.keys().iter().filter_map(|e| e.key_id().map(str::to_string)));
        if !out.truncated() {
            return ids;
        }
        marker = Some(
            out.next_marker()
                .expect("truncated ListKeys page without NextMarker")
                .to_string(),
        );
    }
    panic!("ListKeys never stopped paginating");
}

// ---------------------------------------------------------------- values

/// The key uuid and key version of a ciphertext blob (byte 0 = 1, bytes
/// 1..17 the key uuid, bytes 17..21 the key version, big-endian).
pub fn blob_key_version(blob: &[u8]) -> (uuid::Uuid, u32) {
    assert!(blob.len() >= 21, "ciphertext blob of {} bytes is too short", blob.len());
    assert_eq!(blob[0], 1, "ciphertext blob format byte");
    let key = uuid::Uuid::from_slice(&blob[1..17]).expect("16 bytes");
    let version = u32::from_be_bytes(blob[17..21].try_into().expect("4 bytes"));
    (key, version)
}

/// Seconds since the epoch of a SystemTime.
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Asserts that an SDK timestamp lies within `tolerance` seconds of `expected`
/// (seconds since the epoch).
#[track_caller]
pub fn assert_near(what: &str, got: Option<&DateTime>, expected: i64, tolerance: i64) {
    let got = got.unwrap_or_else(|| panic!("{what}: missing timestamp"));
    let diff = got.secs() - expected;
    assert!(
        diff.abs() <= tolerance,
        "{what}: {got} is {diff} s away from the expected {} (tolerance {tolerance} s)",
        DateTime::from_secs(expected)
    );
}

// ---------------------------------------------------------------- pagination

/// Every entry of a paginated `List*` operation `op`, following NextMarker
/// with pages of `limit`; also returns the number of pages. `fetch` sends
/// one request with the given marker; `page` reads an answer's entries,
/// `Truncated` and `NextMarker`. Asserts that no page has more than `limit`
/// entries and that a truncated page is not empty and has a NextMarker;
/// gives up after 100 pages.
pub async fn all_pages<O, E, T, Fut>(
    op: &str,
    limit: Option<i32>,
    mut fetch: impl FnMut(Option<String>) -> Fut,
    page: impl Fn(&O) -> (&[T], bool, Option<&str>),
) -> (Vec<T>, usize)
where
    Fut: std::future::Future<Output = Result<O, SdkError<E>>>,
    E: std::error::Error + Send + Sync + 'static,
    T: Clone,
{
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    for number in 1..=100 {
        let resp = must(op, fetch(marker.take()).await);
        let (entries, truncated, next_marker) = page(&resp);
        if let Some(limit) = limit {
            assert!(
                entries.len() <= limit as usize,
                "{op} page {number} has {} entries for Limit {limit}",
                entries.len()
            );
        }
        out.extend(entries.iter().cloned());
        if !truncated {
            return (out, number);
        }
        assert!(!entries.is_empty(), "truncated {op} page {number} is empty");
        marker = Some(
            next_marker
                .unwrap_or_else(|| panic!("truncated {op} page {number} has no NextMarker"))
                .to_string(),
        );
    }
    panic!("{op} never stopped paginating");
}
