//! AWS Signature Version 4 verification for header-signed requests (`AWS4-HMAC-SHA256`).
//!
//! Keyward speaks the AWS KMS JSON API, so unmodified AWS clients (the AWS SDKs via `aws-sigv4`,
//! botocore / the AWS CLI) authenticate to it with SigV4. This module checks such a request inside
//! the enclave; the host proxy that delivered the bytes is not trusted.
//!
//! # What is verified
//!
//! * The `Authorization` header is exactly one `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
//!   Signature=…` value (bounded to [`MAX_AUTHORIZATION_LEN`] bytes and [`MAX_SIGNED_HEADERS`]
//!   signed headers); `x-amz-date` is exactly one `YYYYMMDD'T'HHMMSS'Z'` value. Presigned URLs
//!   (query-string SigV4), the `Date` header fallback, SigV4a and chunked/streaming payloads are
//!   not supported and are rejected.
//! * Credential scope: the service and region equal what the caller expects, the scope date is the
//!   date of `x-amz-date`, the terminator is `aws4_request`.
//! * Freshness: `x-amz-date` is within ±[`MAX_CLOCK_SKEW`] of the caller's clock.
//! * Coverage: `host` and `x-amz-target` (which selects the KMS operation) must be signed, as must
//!   `x-amz-security-token` when present; every signed header must be present in the request.
//!   Headers whose meaning must be unambiguous (`authorization`, `x-amz-date`, `host`,
//!   `x-amz-target`, `x-amz-content-sha256`, `x-amz-security-token`, `content-type`) may appear at
//!   most once.
//! * Body: the payload hash in the canonical request is always recomputed from the body; an
//!   `x-amz-content-sha256` header, if present, must equal it (so `UNSIGNED-PAYLOAD` is refused).
//! * Signature: the canonical request and string to sign are rebuilt from the request as received,
//!   HMAC-SHA-256'd with the [`SigningKey`], and compared in constant time.
//!
//! # What is trusted
//!
//! * The caller's [`SignedRequest`] is a faithful split of the HTTP request the enclave will act
//!   on (method, raw path, raw query, header list in arrival order, exact body). The caller must
//!   act on the same header values and body that were verified here.
//! * The caller's `now` (the enclave's notion of time), and the secret access key it looked up for
//!   [`Authorization::access_key_id`].
//! * SigV4 itself: a valid signature proves knowledge of the secret, not that the request is new.
//!   Replays within the ±5 minute window are possible (as with AWS); idempotency/replay handling,
//!   if needed, belongs to the caller.
//!
//! # Canonicalization notes
//!
//! The canonical URI is built the way AWS clients build it for non-S3 services: the raw path is
//! normalized (dot segments and empty segments removed) and then percent-encoded once more, so an
//! already-encoded path ends up double-encoded. A caller that routes on the path should only
//! accept `/` (all KMS operations are `POST /`), since `/./` or `//` would verify as `/`.
//!
//! # Layout
//!
//! This file holds the types and [`verify`] with its checks, in order; `header` parses
//! `Authorization` and `x-amz-date` ([`parse`]), `canonical` rebuilds the canonical request and
//! `key` derives the [`SigningKey`].

mod canonical;
mod header;
mod key;

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};
use zeroize::Zeroizing;

use canonical::canonical_request;
pub use header::parse;
use header::{parse_with_date, single_header};
pub use key::SigningKey;
use key::hmac_sha256;

/// The only supported signing algorithm.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Longest accepted `Authorization` header value, in bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most entries accepted in `SignedHeaders`.
pub const MAX_SIGNED_HEADERS: usize = 64;
/// Largest accepted difference between `x-amz-date` and the verifier's clock, in either direction.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

const TERMINATOR: &str = "aws4_request";
const MAX_ACCESS_KEY_ID_LEN: usize = 128;
const MAX_SCOPE_PART_LEN: usize = 64;
const MAX_HEADER_NAME_LEN: usize = 128;
const MAX_METHOD_LEN: usize = 32;
const MAX_QUERY_PARAMS: usize = 256;

/// Headers that must not be repeated: the verifier or the KMS front end interprets them, and a
/// second copy would make "which value was meant" ambiguous.
const SINGLE_VALUED: &[&str] = &[
    "authorization",
    "x-amz-date",
    "host",
    "x-amz-target",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "content-type",
];

/// One HTTP request as received (headers: lower-case names and raw values, arrival order;
/// duplicates possible).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Raw path as sent, e.g. `/`.
    pub path: &'a str,
    /// Raw query string without `?`, possibly empty.
    pub query: &'a str,
    pub headers: &'a [(String, serde_bytes::ByteBuf)],
    pub body: &'a [u8],
}

/// The parsed `Authorization` header and `x-amz-date`.
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// As listed (lower-case, strictly ascending).
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
    /// From `x-amz-date` (UTC). The `Date` header fallback is not supported.
    pub request_time: OffsetDateTime,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("access_key_id", &self.access_key_id)
            .field(
                "scope",
                &format_args!("{}/{}/{}/{TERMINATOR}", self.scope_date, self.region, self.service),
            )
            .field("signed_headers", &self.signed_headers)
            .field("request_time", &self.request_time)
            .finish_non_exhaustive()
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header at all.
    #[error("missing Authorization header")]
    Missing,
    /// Unparsable `Authorization` / `x-amz-date`, unknown algorithm, duplicated header, etc.
    #[error("malformed SigV4 request: {0}")]
    Malformed(String),
    /// A header that must be signed is not in `SignedHeaders`, or a signed header is absent.
    #[error("header {0} must be signed and present")]
    MissingSignedHeader(&'static str),
    /// The credential scope does not match this service, region or request date.
    #[error("credential scope mismatch: {0}")]
    WrongScope(String),
    /// `x-amz-date` is too far from the verifier's clock.
    #[error("request time {request_time} is more than 5 minutes away from server time {now}")]
    Expired { request_time: String, now: String },
    /// `x-amz-content-sha256` does not match the body (`UNSIGNED-PAYLOAD` included).
    #[error("x-amz-content-sha256 does not match the request body")]
    PayloadHashMismatch,
    /// The signature does not match the request.
    #[error("signature does not match")]
    SignatureMismatch,
}

fn malformed(what: &str) -> SigV4Error {
    SigV4Error::Malformed(what.to_owned())
}

/// Verifies `req` against `auth` (which must be what [`parse`] returns for `req`) and `key`.
///
/// Checks, in order: scope (`expected_region`, `expected_service`, scope date = date of
/// `x-amz-date`), clock skew (±5 minutes against `now`), required signed headers, payload hash,
/// then the signature (constant-time comparison).
pub fn verify(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    key: &SigningKey,
    now: OffsetDateTime,
    expected_region: &str,
    expected_service: &str,
) -> Result<(), SigV4Error> {
    // `auth` must describe this very request: everything below is computed from `req`.
    let (reparsed, amz_date) = parse_with_date(req)?;
    if !same_authorization(auth, &reparsed) {
        return Err(malformed("authorization does not belong to this request"));
    }

    check_scope(auth, amz_date, expected_region, expected_service)?;
    check_freshness(auth.request_time, now)?;
    check_signed_headers(req, &auth.signed_headers)?;
    let payload_hash = check_payload_hash(req)?;
    check_signature(req, auth, amz_date, &payload_hash, key)
}

fn same_authorization(a: &Authorization, b: &Authorization) -> bool {
    a.access_key_id == b.access_key_id
        && a.scope_date == b.scope_date
        && a.region == b.region
        && a.service == b.service
        && a.signed_headers == b.signed_headers
        && a.signature == b.signature
        && a.request_time == b.request_time
}

fn check_scope(
    auth: &Authorization,
    amz_date: &str,
    expected_region: &str,
    expected_service: &str,
) -> Result<(), SigV4Error> {
    if auth.service != expected_service {
        return Err(SigV4Error::WrongScope(format!(
            "service {:?}, expected {expected_service:?}",
            auth.service
        )));
    }
    if auth.region != expected_region {
        return Err(SigV4Error::WrongScope(format!(
            "region {:?}, expected {expected_region:?}",
            auth.region
        )));
    }
    if amz_date.get(..8) != Some(auth.scope_date.as_str()) {
        return Err(SigV4Error::WrongScope(format!(
            "scope date {} is not the date of x-amz-date {amz_date}",
            auth.scope_date
        )));
    }
    Ok(())
}

fn check_freshness(request_time: OffsetDateTime, now: OffsetDateTime) -> Result<(), SigV4Error> {
    let skew = now - request_time;
    if skew > MAX_CLOCK_SKEW || skew < -MAX_CLOCK_SKEW {
        let show = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_else(|_| t.to_string());
        return Err(SigV4Error::Expired {
            request_time: show(request_time),
            now: show(now),
        });
    }
    Ok(())
}

fn check_signed_headers(req: &SignedRequest<'_>, signed: &[String]) -> Result<(), SigV4Error> {
    let is_signed = |name: &str| signed.iter().any(|s| s == name);
    for required in ["host", "x-amz-target"] {
        if !is_signed(required) {
            return Err(SigV4Error::MissingSignedHeader(required));
        }
    }
    let present = |name: &str| req.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if present("x-amz-security-token") && !is_signed("x-amz-security-token") {
        return Err(SigV4Error::MissingSignedHeader("x-amz-security-token"));
    }
    for name in signed {
        if !present(name) {
            return Err(SigV4Error::MissingSignedHeader(static_header_name(name)));
        }
    }
    Ok(())
}

/// `MissingSignedHeader` carries a `&'static str`; name the usual suspects, lump the rest.
fn static_header_name(name: &str) -> &'static str {
    match name {
        "host" => "host",
        "x-amz-target" => "x-amz-target",
        "x-amz-date" => "x-amz-date",
        "x-amz-content-sha256" => "x-amz-content-sha256",
        "x-amz-security-token" => "x-amz-security-token",
        "content-type" => "content-type",
        "content-length" => "content-length",
        _ => "(other signed header)",
    }
}

/// Returns hex(SHA-256(body)), after checking `x-amz-content-sha256` against it if present.
fn check_payload_hash(req: &SignedRequest<'_>) -> Result<String, SigV4Error> {
    let payload_hash = hex::encode(Sha256::digest(req.body));
    if let Some(claimed) = single_header(req, "x-amz-content-sha256")?
        && claimed != payload_hash.as_bytes()
    {
        return Err(SigV4Error::PayloadHashMismatch);
    }
    Ok(payload_hash)
}

fn check_signature(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    amz_date: &str,
    payload_hash: &str,
    key: &SigningKey,
) -> Result<(), SigV4Error> {
    let creq = canonical_request(req, &auth.signed_headers, payload_hash)?;
    let sts = string_to_sign(auth, amz_date, &creq);
    // The correct signature for an attacker-chosen request is itself sensitive: wipe it.
    let expected = Zeroizing::new(hmac_sha256(&key.0, sts.as_bytes()));
    if bool::from(expected.ct_eq(&auth.signature)) {
        Ok(())
    } else {
        Err(SigV4Error::SignatureMismatch)
    }
}

fn string_to_sign(auth: &Authorization, amz_date: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/{TERMINATOR}\n{}",
        auth.scope_date,
        auth.region,
        auth.service,
        hex::encode(Sha256::digest(canonical_request))
    )
}

#[cfg(test)]
mod tests;
