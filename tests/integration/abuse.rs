//! Abuse resistance end to end (issue 21): a flood of requests that fail
//! authentication, through the proxy, naming the dev tenant's access key id.
//! The tenant's audit chain does not grow by one record for it, the
//! tenant's own requests keep succeeding, and `/metrics` counts the flood.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Creds, Keyward, Sandbox};
use crate::principals::{call_as, sdk, sdk_ok};

/// The head sequence of the dev tenant's chain (the read itself is one more record).
async fn tenant_head(kw: &Keyward) -> u64 {
    sdk_ok(
        "GetAuditLog head",
        sdk(kw, &kw.creds).get_audit_log(None, None, Some(1), None).await,
    )
    .head
    .sequence
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let index = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    samples.get(index).copied().unwrap_or_default()
}

/// `n` GenerateRandom calls of the dev tenant, one at a time (each must succeed).
async fn legitimate(kw: &Keyward, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let resp = call_as(kw, &kw.creds, "GenerateRandom", &json!({ "NumberOfBytes": 16 })).await;
        latencies.push(started.elapsed());
        crate::principals::ok_json(&format!("legitimate request {i}"), &resp);
    }
    latencies
}

async fn scrape(kw: &Keyward) -> String {
    let response = kw.admin_get("/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics");
    String::from_utf8(response.body).expect("metrics are text")
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_flood_leaves_the_tenants_chain_alone() {
    const FLOOD: usize = 10_000;
    const SENDERS: usize = 8;
    let mut sandbox = Sandbox::new();
    crate::memcap::budget_for_cap(&mut sandbox);
    let kw = Arc::new(sandbox.start().await);
    let cap = crate::memcap::MemoryCap::for_enclave(kw.enclave_pid);
    let idle = p99(&mut legitimate(&kw, 100).await);
    let head_before = tenant_head(&kw).await;

    let forged = Arc::new(Creds {
        access_key_id: kw.creds.access_key_id.clone(),
        secret: Creds::random().secret,
    });
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (kw, forged) = (Arc::clone(&kw), Arc::clone(&forged));
            tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..FLOOD / SENDERS {
                    let resp = call_as(&kw, &forged, "GenerateRandom", &json!({})).await;
                    let kind = resp.error_type().unwrap_or_default();
                    assert!(
                        kind == "InvalidSignatureException" || kind == "ThrottlingException",
                        "{kind}"
                    );
                    refused += 1;
                }
                refused
            })
        })
        .collect();
    let mut during = Vec::new();
    while !senders.iter().all(|s| s.is_finished()) {
        during.extend(legitimate(&kw, 10).await);
    }
    let mut refused = 0;
    for sender in senders {
        refused += sender.await.expect("a flood sender");
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let during_p99 = p99(&mut during);
    let metrics = scrape(&kw).await;
    let rejected = counter(
        &metrics,
        r#"keyward_unauthenticated_requests_total{outcome="rejected"}"#,
    );
    let throttled = counter(
        &metrics,
        r#"keyward_unauthenticated_requests_total{outcome="throttled"}"#,
    );
    println!(
        "through the proxy: legitimate GenerateRandom p99 idle {idle:?}, during {FLOOD} forged requests \
         {during_p99:?} ({} requests; flood took {flood_secs:.1} s); rejected {rejected}, throttled {throttled}",
        during.len()
    );
    assert_eq!(refused, FLOOD);
    assert_eq!(rejected + throttled, FLOOD as u64, "{metrics}");
    // Exactly: the first head read, then the tenant's own requests.
    assert_eq!(
        tenant_head(&kw).await,
        head_before + 1 + during.len() as u64,
        "the tenant's chain holds only the tenant's requests"
    );
    // The latency (the 2x-idle-p99 target) is measured, not asserted:
    // `keyward-load abuse --scenario flood` (BENCHMARKS.md). Asserted: every
    // legitimate request succeeded (`legitimate`), the chain holds none of
    // the flood, and the flood was counted.
    if let Some(cap) = &cap {
        cap.assert_no_oom_kill("unauthenticated_flood_leaves_the_tenants_chain_alone");
    }
}

/// `--memory-budget` too small for the sandbox pool, the module cache,
/// bodies in flight and client streams: the enclave refuses to start (exit
/// status 2) and names the flag and what it cannot hold.
#[test]
fn an_enclave_refuses_to_start_with_a_memory_budget_that_cannot_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |mib: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([
                "enclave",
                "--mode",
                "mock",
                "--exit-on-stdin-close",
                "--memory-budget",
                mib,
            ])
            .arg("--socket")
            .arg(dir.path().join("enclave.sock"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run keyward enclave")
    };
    let refused = run("200");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--memory-budget 200 MiB cannot hold 4 policy sandbox slots"),
        "{stderr}"
    );
    assert!(stderr.contains("raise --memory-budget"), "{stderr}");
    // The minimum the message names is accepted (the enclave starts, then
    // exits when its closed standard input is seen).
    let needed = stderr
        .split("needs at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the message names the minimum");
    let started = run(needed);
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(!stderr.contains("cannot hold"), "{stderr}");
    assert_ne!(started.status.code(), Some(2), "{stderr}");
}
