//! Request metrics counted inside the enclave (requests reach it inside
//! TLS, so the host cannot count them) and exported to the host over the
//! framed link as an aggregated [`MetricsSnapshot`] (`Frame::Status`).
//!
//! Labels come from fixed sets only: the operation is an [`Operation`]
//! target or `other`; the outcome `ok`, an AWS error type the enclave
//! itself answered (letters only, ending in `Exception`), or `error`. So no
//! key id, tenant, credential or client-chosen string becomes a label, and a
//! client cannot grow the number of series.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keyward_wire::{
    ApiResponse, HistogramKind, HistogramSample, LATENCY_BOUNDS_MICROS, MetricsSnapshot, RequestCount, operation_label,
    outcome_label,
};

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
    sum_micros: u64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, micros: u64) {
        let index = LATENCY_BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BOUNDS_MICROS.len());
        self.buckets[index] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: HashMap<(&'static str, String), u64>,
    histograms: HashMap<(HistogramKind, &'static str), Histogram>,
    unauthenticated_rejected: u64,
    unauthenticated_throttled: u64,
}

/// The enclave's request metrics.
#[derive(Default)]
pub struct RequestMetrics {
    inner: Mutex<Inner>,
}

impl RequestMetrics {
    /// Records one answered request of `target` that took `total` in the
    /// enclave (from its head's arrival to its answer).
    pub fn record(&self, target: Option<&[u8]>, answer: &ApiResponse, total: Duration) {
        let operation = operation_label(target);
        let outcome = outcome_label(answer.status, answer.error_type.as_deref());
        let micros = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.requests.entry((operation, outcome)).or_default() += 1;
        match answer.timing.unauthenticated {
            Some(keyward_wire::Unauthenticated::Rejected) => inner.unauthenticated_rejected += 1,
            Some(keyward_wire::Unauthenticated::Throttled) => inner.unauthenticated_throttled += 1,
            None => {}
        }
        inner
            .histograms
            .entry((HistogramKind::Request, operation))
            .or_default()
            .observe(micros);
        if answer.timing.enclave_micros > 0 {
            inner
                .histograms
                .entry((HistogramKind::Enclave, operation))
                .or_default()
                .observe(answer.timing.enclave_micros);
        }
        if answer.timing.policy_micros > 0 {
            inner
                .histograms
                .entry((HistogramKind::Policy, operation))
                .or_default()
                .observe(answer.timing.policy_micros);
        }
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut requests: Vec<RequestCount> = inner
            .requests
            .iter()
            .map(|((operation, outcome), count)| RequestCount {
                operation: (*operation).to_owned(),
                outcome: outcome.clone(),
                count: *count,
            })
            .collect();
        requests.sort_by(|a, b| (&a.operation, &a.outcome).cmp(&(&b.operation, &b.outcome)));
        let mut histograms: Vec<HistogramSample> = inner
            .histograms
            .iter()
            .map(|((kind, operation), h)| HistogramSample {
                kind: *kind,
                operation: (*operation).to_owned(),
                buckets: h.buckets.to_vec(),
                sum_micros: h.sum_micros,
                count: h.count,
            })
            .collect();
        histograms.sort_by(|a, b| a.operation.cmp(&b.operation));
        MetricsSnapshot {
            requests,
            histograms,
            unauthenticated_rejected: inner.unauthenticated_rejected,
            unauthenticated_throttled: inner.unauthenticated_throttled,
            freshness_violations: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, error_type: Option<&str>) -> ApiResponse {
        ApiResponse {
            status,
            error_type: error_type.map(str::to_owned),
            body: Vec::new(),
            timing: keyward_wire::Timing {
                enclave_micros: 120,
                policy_micros: 0,
                unauthenticated: None,
            },
        }
    }

    #[test]
    fn unauthenticated_requests_are_counted_by_what_was_done() {
        let m = RequestMetrics::default();
        let refused = |what| {
            let mut a = answer(400, Some("UnrecognizedClientException"));
            a.timing.unauthenticated = Some(what);
            a
        };
        let target = Some(&b"TrentService.Decrypt"[..]);
        m.record(
            target,
            &refused(keyward_wire::Unauthenticated::Rejected),
            Duration::ZERO,
        );
        m.record(
            target,
            &refused(keyward_wire::Unauthenticated::Throttled),
            Duration::ZERO,
        );
        m.record(
            target,
            &refused(keyward_wire::Unauthenticated::Throttled),
            Duration::ZERO,
        );
        m.record(target, &answer(200, None), Duration::ZERO);
        let snapshot = m.snapshot();
        assert_eq!(snapshot.unauthenticated_rejected, 1);
        assert_eq!(snapshot.unauthenticated_throttled, 2);
    }

    #[test]
    fn labels_are_fixed_and_counts_add_up() {
        let m = RequestMetrics::default();
        m.record(
            Some(b"TrentService.Decrypt"),
            &answer(200, None),
            Duration::from_micros(300),
        );
        m.record(
            Some(b"TrentService.Decrypt"),
            &answer(200, None),
            Duration::from_secs(5),
        );
        m.record(
            Some(b"TrentService.NoSuchThing"),
            &answer(400, Some("key/1234 Exception")),
            Duration::from_micros(10),
        );
        let snapshot = m.snapshot();
        let count = |op: &str, outcome: &str| {
            snapshot
                .requests
                .iter()
                .find(|r| r.operation == op && r.outcome == outcome)
                .map_or(0, |r| r.count)
        };
        assert_eq!(count("TrentService.Decrypt", "ok"), 2);
        assert_eq!(count("other", "error"), 1);
        let request = snapshot
            .histograms
            .iter()
            .find(|h| h.kind == HistogramKind::Request && h.operation == "TrentService.Decrypt")
            .expect("histogram");
        assert_eq!(request.count, 2);
        assert_eq!(request.buckets.iter().sum::<u64>(), 2);
        assert_eq!(request.buckets[LATENCY_BOUNDS_MICROS.len()], 1, "5 s overflows");
        assert!(!format!("{snapshot:?}").contains("NoSuchThing"));
    }
}
