//! The proxy's `GET /metrics` (admin listener): Prometheus / OpenMetrics
//! text.
//!
//! Requests reach the enclave inside TLS, so the proxy cannot count them:
//! the enclave counts them itself and reports aggregated counters and
//! histograms over the link (`Frame::Status`), which are rendered here next
//! to the proxy's own metrics (link, store, client connections). Labels are
//! drawn from fixed sets only — the operation is one of the operations
//! Keyward serves (anything else is `other`), the outcome is `ok` or an AWS
//! error type — and are checked again here, so no key id, tenant,
//! credential, plaintext or attacker-chosen string ever becomes a label,
//! and a client cannot grow the number of series.

use std::fmt::Write as _;

use keyward_wire::{HistogramKind, LATENCY_BOUNDS_MICROS, MetricsSnapshot, operation_label, outcome_label};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    link_connections: Gauge,
    link_configured: Gauge,
    store_flush: Histogram,
    client_connections: Gauge,
    client_connections_total: Counter,
    client_connections_refused: Counter,
    client_stream_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let link_connections = Gauge::default();
        let link_configured = Gauge::default();
        let store_flush = latency_histogram();
        let client_connections = Gauge::default();
        let client_connections_total = Counter::default();
        let client_connections_refused = Counter::default();
        let client_stream_failures = Counter::default();
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
        registry.register(
            "client_connections_open",
            "Client connections being forwarded to the enclave",
            client_connections.clone(),
        );
        registry.register(
            "client_connections",
            "Client connections accepted and forwarded",
            client_connections_total.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections closed at once because the connection bound was reached",
            client_connections_refused.clone(),
        );
        registry.register(
            "client_stream_failures",
            "Client connections that could not be forwarded (enclave unreachable) or broke",
            client_stream_failures.clone(),
        );
        Metrics {
            registry,
            link_connections,
            link_configured,
            store_flush,
            client_connections,
            client_connections_total,
            client_connections_refused,
            client_stream_failures,
        }
    }

    /// The histogram the store records its flushes in.
    pub fn store_flush_histogram(&self) -> Histogram {
        self.store_flush.clone()
    }

    pub fn connection_opened(&self) {
        self.client_connections.inc();
        self.client_connections_total.inc();
    }

    pub fn connection_closed(&self) {
        self.client_connections.dec();
    }

    pub fn connection_refused(&self) {
        self.client_connections_refused.inc();
    }

    pub fn stream_failed(&self) {
        self.client_stream_failures.inc();
    }

    /// The exposition text: the proxy's own metrics, the link's current
    /// state, and the enclave's request metrics (`None`: the enclave did not
    /// answer; its series are then absent).
    pub fn render(&self, connected: usize, configured: usize, enclave: Option<&MetricsSnapshot>) -> String {
        self.link_connections.set(i64::try_from(connected).unwrap_or(i64::MAX));
        self.link_configured.set(i64::try_from(configured).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let body_end = out.rfind("# EOF").unwrap_or(out.len());
        out.truncate(body_end);
        if let Some(snapshot) = enclave {
            render_enclave(&mut out, snapshot);
        }
        out.push_str("# EOF\n");
        out
    }
}

/// The enclave's counters and histograms, labels re-checked against the fixed sets.
fn render_enclave(out: &mut String, snapshot: &MetricsSnapshot) {
    let known = |operation: &str| operation_label(Some(operation.as_bytes()));
    out.push_str("# HELP keyward_unauthenticated_requests Requests that did not authenticate, by what the enclave did: rejected (their authentication error; none is written to a tenant's audit chain) or throttled (over their client address's or access key id's share), counted in the enclave.\n");
    out.push_str("# TYPE keyward_unauthenticated_requests counter\n");
    for (outcome, count) in [
        ("rejected", snapshot.unauthenticated_rejected),
        ("throttled", snapshot.unauthenticated_throttled),
    ] {
        let _ = writeln!(
            out,
            "keyward_unauthenticated_requests_total{{outcome=\"{outcome}\"}} {count}"
        );
    }
    out.push_str("# HELP keyward_freshness_violations Answers refused because the host store contradicted the enclave's authenticated index (a rolled-back, hidden or substituted record), by kind, counted in the enclave.\n");
    out.push_str("# TYPE keyward_freshness_violations counter\n");
    for (kind, count) in snapshot.freshness_violations.labelled() {
        let _ = writeln!(out, "keyward_freshness_violations_total{{kind=\"{kind}\"}} {count}");
    }
    out.push_str("# HELP keyward_requests Requests served, by operation and outcome (ok or the AWS error type), counted in the enclave.\n");
    out.push_str("# TYPE keyward_requests counter\n");
    for r in &snapshot.requests {
        let outcome = if r.outcome == "ok" {
            "ok".to_owned()
        } else {
            outcome_label(400, Some(&r.outcome))
        };
        let _ = writeln!(
            out,
            "keyward_requests_total{{operation=\"{}\",outcome=\"{outcome}\"}} {}",
            known(&r.operation),
            r.count
        );
    }
    for (kind, name, help) in [
        (
            HistogramKind::Request,
            "keyward_request_duration_seconds",
            "Time from a request's head arriving in the enclave to its answer",
        ),
        (
            HistogramKind::Enclave,
            "keyward_enclave_duration_seconds",
            "Time the enclave spent in the API handler on a request",
        ),
        (
            HistogramKind::Policy,
            "keyward_policy_duration_seconds",
            "Time the enclave spent in WebAssembly policy decisions (requests that ran one)",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for h in snapshot.histograms.iter().filter(|h| h.kind == kind) {
            let operation = known(&h.operation);
            let mut cumulative = 0u64;
            for (i, bound) in LATENCY_BOUNDS_MICROS.iter().enumerate() {
                cumulative += h.buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{}\",operation=\"{operation}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\",operation=\"{operation}\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "{name}_sum{{operation=\"{operation}\"}} {}",
                h.sum_micros as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{operation=\"{operation}\"}} {}", h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use keyward_wire::{HistogramSample, RequestCount};

    use super::*;

    #[test]
    fn render_shows_enclave_requests_and_link_state() {
        let m = Metrics::new();
        let snapshot = MetricsSnapshot {
            requests: vec![
                RequestCount {
                    operation: "TrentService.Decrypt".into(),
                    outcome: "ok".into(),
                    count: 1,
                },
                RequestCount {
                    operation: "key/1234-secret".into(),
                    outcome: "arn:aws:kms:secret".into(),
                    count: 2,
                },
            ],
            histograms: vec![HistogramSample {
                kind: HistogramKind::Policy,
                operation: "TrentService.Decrypt".into(),
                buckets: vec![1; LATENCY_BOUNDS_MICROS.len() + 1],
                sum_micros: 7,
                count: LATENCY_BOUNDS_MICROS.len() as u64 + 1,
            }],
            unauthenticated_rejected: 5,
            unauthenticated_throttled: 9,
            freshness_violations: keyward_wire::FreshnessViolations {
                omission: 0,
                rollback: 3,
                substitution: 0,
            },
        };
        m.connection_opened();
        let text = m.render(3, 4, Some(&snapshot));
        assert!(
            text.contains(r#"keyward_requests_total{operation="TrentService.Decrypt",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyward_requests_total{operation="other",outcome="error"} 2"#),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("keyward_enclave_link_connections 3"), "{text}");
        assert!(text.contains("keyward_client_connections_total 1"), "{text}");
        assert!(
            text.contains("keyward_policy_duration_seconds_count{operation=\"TrentService.Decrypt\"} 17"),
            "{text}"
        );
        assert!(
            text.contains(r#"keyward_unauthenticated_requests_total{outcome="rejected"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyward_unauthenticated_requests_total{outcome="throttled"} 9"#),
            "{text}"
        );
        assert!(
            text.contains(r#"keyward_freshness_violations_total{kind="rollback"} 3"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
