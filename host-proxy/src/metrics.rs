//! The proxy's `GET /metrics`: Prometheus / OpenMetrics text.
//!
//! Labels are drawn from fixed sets only — the operation is one of the
//! operations Keyward serves (anything else is `other`), the outcome is `ok`
//! or an AWS error type — so no key id, tenant, credential, plaintext or
//! attacker-chosen string ever becomes a label, and a client cannot grow the
//! number of series.

use std::time::Duration;

use keyward_wire::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The operation label for a raw `X-Amz-Target` value: a known operation or `other`.
pub fn operation_label(target: Option<&[u8]>) -> &'static str {
    target
        .and_then(Operation::from_target_bytes)
        .map_or("other", Operation::target)
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    operation: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnauthenticatedLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    enclave_time: Family<OperationLabels, Histogram, fn() -> Histogram>,
    policy_time: Family<OperationLabels, Histogram, fn() -> Histogram>,
    link_failures: Family<FailureLabels, Counter>,
    unauthenticated: Family<UnauthenticatedLabels, Counter>,
    link_connections: Gauge,
    link_configured: Gauge,
    store_flush: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let enclave_time = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let policy_time = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let link_failures = Family::<FailureLabels, Counter>::default();
        let unauthenticated = Family::<UnauthenticatedLabels, Counter>::default();
        let link_connections = Gauge::default();
        let link_configured = Gauge::default();
        let store_flush = latency_histogram();
        registry.register(
            "requests",
            "Requests served, by operation and outcome (ok or the AWS error type)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's body being read to its answer, at the proxy",
            latency.clone(),
        );
        registry.register(
            "enclave_duration_seconds",
            "Time the enclave reports it spent on a request",
            enclave_time.clone(),
        );
        registry.register(
            "policy_duration_seconds",
            "Time the enclave reports it spent in WebAssembly policy decisions (requests that ran one)",
            policy_time.clone(),
        );
        registry.register(
            "enclave_link_failures",
            "Requests the enclave did not answer, by reason",
            link_failures.clone(),
        );
        registry.register(
            "unauthenticated_requests",
            "Requests that did not authenticate, by what the enclave did: rejected (their authentication error; none is written to a tenant's audit chain) or throttled (over their client address's or access key id's share)",
            unauthenticated.clone(),
        );
        registry.register(
            "enclave_link_connections",
            "Connections to the enclave currently established",
            link_connections.clone(),
        );
        registry.register(
            "enclave_link_connections_configured",
            "Connections to the enclave the proxy keeps",
            link_configured.clone(),
        );
        registry.register(
            "store_flush_duration_seconds",
            "Time each flush of the sealed-record store to disk took (every write and audit batch waits for one)",
            store_flush.clone(),
        );
        Metrics {
            store_flush,
            registry,
            requests,
            latency,
            enclave_time,
            policy_time,
            link_failures,
            unauthenticated,
            link_connections,
            link_configured,
        }
    }

    /// The histogram the store records its flushes in.
    pub fn store_flush_histogram(&self) -> Histogram {
        self.store_flush.clone()
    }

    /// Records one request the enclave answered.
    pub fn answered(
        &self,
        operation: &'static str,
        status: u16,
        error_type: Option<&str>,
        total: Duration,
        timing: keyward_wire::Timing,
    ) {
        self.requests
            .get_or_create(&OutcomeLabels {
                operation,
                outcome: outcome_label(status, error_type),
            })
            .inc();
        if let Some(refused) = timing.unauthenticated {
            self.unauthenticated
                .get_or_create(&UnauthenticatedLabels {
                    outcome: refused.label(),
                })
                .inc();
        }
        let labels = OperationLabels { operation };
        self.latency.get_or_create(&labels).observe(total.as_secs_f64());
        if timing.enclave_micros > 0 {
            self.enclave_time
                .get_or_create(&labels)
                .observe(timing.enclave_micros as f64 / 1e6);
        }
        if timing.policy_micros > 0 {
            self.policy_time
                .get_or_create(&labels)
                .observe(timing.policy_micros as f64 / 1e6);
        }
    }

    /// Records one request the enclave did not answer.
    pub fn failed(&self, operation: &'static str, reason: &'static str, aws_type: &str, total: Duration) {
        self.requests
            .get_or_create(&OutcomeLabels {
                operation,
                outcome: outcome_label(500, Some(aws_type)),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(total.as_secs_f64());
        self.link_failures.get_or_create(&FailureLabels { reason }).inc();
    }

    /// The exposition text, with the link's current state.
    pub fn render(&self, connected: usize, configured: usize) -> String {
        self.link_connections.set(i64::try_from(connected).unwrap_or(i64::MAX));
        self.link_configured.set(i64::try_from(configured).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
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

    #[test]
    fn render_shows_requests_and_link_state() {
        let m = Metrics::new();
        let timing = keyward_wire::Timing {
            enclave_micros: 120,
            policy_micros: 7,
            unauthenticated: None,
        };
        m.answered("TrentService.Decrypt", 200, None, Duration::from_micros(300), timing);
        let refused = keyward_wire::Timing {
            enclave_micros: 20,
            policy_micros: 0,
            unauthenticated: Some(keyward_wire::Unauthenticated::Throttled),
        };
        m.answered(
            "TrentService.Decrypt",
            400,
            Some("ThrottlingException"),
            Duration::from_micros(30),
            refused,
        );
        m.failed(
            "TrentService.Encrypt",
            "timeout",
            "DependencyTimeoutException",
            Duration::from_secs(1),
        );
        let text = m.render(3, 4);
        assert!(
            text.contains(r#"keyward_requests_total{operation="TrentService.Decrypt",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"outcome="DependencyTimeoutException"} 1"#), "{text}");
        assert!(text.contains("keyward_enclave_link_connections 3"), "{text}");
        assert!(
            text.contains(r#"keyward_unauthenticated_requests_total{outcome="throttled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("keyward_policy_duration_seconds_count{operation=\"TrentService.Decrypt\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"keyward_enclave_link_failures_total{reason="timeout"} 1"#),
            "{text}"
        );
    }
}
