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
}

/// Cumulative request metrics since the enclave started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub requests: Vec<RequestCount>,
    pub histograms: Vec<HistogramSample>,
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
