//! What the enclave tells the host about itself on request
//! ([`crate::Frame::StatusRequest`]): public facts only.
//!
//! The metrics are aggregated inside the enclave (the host no longer sees
//! requests: they arrive inside TLS) and exported as counters and
//! histograms whose labels come from fixed sets: the operation is an
//! [`crate::Operation`] target or `other`, the outcome `ok`, an AWS error
//! type the enclave made, or `error`. No key id, tenant, credential or
//! client-chosen string is in a snapshot.

use serde::{Deserialize, Serialize};

/// The operation label for a raw `X-Amz-Target` value: a known operation or `other`.
pub fn operation_label(target: Option<&[u8]>) -> &'static str {
    target
        .and_then(crate::Operation::from_target_bytes)
        .map_or("other", crate::Operation::target)
}

/// The outcome label for an answer: `ok`, or the AWS error type when it
/// looks like one (`…Exception`, letters only, bounded), else `error`.
pub fn outcome_label(status: u16, error_type: Option<&str>) -> String {
    if status == 200 {
        return "ok".into();
    }
    match error_type {
        Some(t) if t.len() <= 64 && t.ends_with("Exception") && t.bytes().all(|b| b.is_ascii_alphabetic()) => {
            t.to_owned()
        }
        _ => "error".into(),
    }
}

/// Upper bounds of the latency histograms' buckets, in microseconds
/// (50 µs doubling up to about 1.6 s; a last bucket catches the rest).
pub const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600, 819_200, 1_638_400,
];

/// The enclave's answer to a status request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnclaveStatus {
    /// The enclave CA certificate (PEM), what clients trust as `--ca-bundle`
    /// (empty until the TLS identity is loaded).
    pub ca_certificate_pem: String,
    /// SHA-256 of the TLS serving key's SubjectPublicKeyInfo (empty until loaded).
    #[serde(with = "serde_bytes")]
    pub tls_spki_sha256: Vec<u8>,
    pub metrics: MetricsSnapshot,
    /// What the proxy's `/healthz` reports: `ok` when the enclave is
    /// Ready, `sealed` while it waits for genesis or an unseal (HTTP 503).
    #[serde(default)]
    pub health: String,
}

/// Cumulative request metrics since the enclave started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub requests: Vec<RequestCount>,
    pub histograms: Vec<HistogramSample>,
    /// Requests that did not authenticate and were answered with their
    /// authentication error (`auth::failures`).
    #[serde(default)]
    pub unauthenticated_rejected: u64,
    /// Requests that did not authenticate and were over their client
    /// address's or claimed access key id's share.
    #[serde(default)]
    pub unauthenticated_throttled: u64,
    /// Answers the enclave refused because the host store contradicted its
    /// authenticated index (issue 19), by kind.
    #[serde(default)]
    pub freshness_violations: FreshnessViolations,
}

/// Freshness violations detected, by kind (the fixed `kind` labels of
/// `keyward_freshness_violations_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessViolations {
    /// A record (or index root, or listing entry) the index holds was served absent.
    pub omission: u64,
    /// An older version, a deleted record, or an older index root was served.
    pub rollback: u64,
    /// Bytes the index does not hold at that version were served.
    pub substitution: u64,
}

impl FreshnessViolations {
    /// `(kind label, count)` for each kind.
    pub fn labelled(&self) -> [(&'static str, u64); 3] {
        [
            ("omission", self.omission),
            ("rollback", self.rollback),
            ("substitution", self.substitution),
        ]
    }
}

/// Requests answered with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    pub operation: String,
    pub outcome: String,
    pub count: u64,
}

/// Which duration a histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HistogramKind {
    /// From the request head's arrival in the enclave to its answer.
    Request,
    /// In the API handler (authentication to audit record).
    Enclave,
    /// In policy decisions (requests that ran one).
    Policy,
}

/// One histogram of one operation: per-bucket (not cumulative) counts for
/// [`LATENCY_BOUNDS_MICROS`] plus one overflow bucket, and the sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSample {
    pub kind: HistogramKind,
    pub operation: String,
    pub buckets: Vec<u64>,
    pub sum_micros: u64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_operations_become_labels() {
        assert_eq!(operation_label(Some(b"TrentService.Decrypt")), "TrentService.Decrypt");
        assert_eq!(operation_label(Some(b"TrentService.Decrypt2")), "other");
        assert_eq!(
            operation_label(Some(b"arn:aws:kms:us-east-1:111122223333:key/x")),
            "other"
        );
        assert_eq!(operation_label(None), "other");
    }

    #[test]
    fn outcomes_are_ok_or_an_exception_name() {
        assert_eq!(outcome_label(200, None), "ok");
        assert_eq!(outcome_label(400, Some("NotFoundException")), "NotFoundException");
        assert_eq!(outcome_label(400, Some("key/1234 Exception")), "error");
        assert_eq!(outcome_label(400, Some("Secret")), "error");
        assert_eq!(outcome_label(500, None), "error");
    }
}
