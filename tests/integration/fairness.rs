//! Fair sandbox scheduling (issue 21): one tenant keeping the policy sandbox
//! busy — looping modules on many concurrent Decrypts, and
//! `Keyward.TestPolicy` with 1 MiB modules — gets `ThrottlingException` once
//! over its share, while another tenant's decisions, which need the pool
//! too, never wait past the scheduler's bound: not one is throttled. (Speed
//! is not asserted by tests; the latency ratio is measured with
//! `keyward-load abuse --scenario neighbour`, BENCHMARKS.md.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use serde_json::json;

use crate::harness::{Sandbox, create_key, encrypt, wat_module};
use crate::policies::{attach, attach_as, keyward};
use crate::principals::{b64, create_key_as, create_tenant, kms as kms_as};

/// The infinite-loop policy with `code_bytes` of extra function code and a
/// custom section filling it up to `total` bytes (distinct per `n`).
fn big_looping_module(n: usize, code_bytes: usize, total: usize) -> Vec<u8> {
    let per_function = 600;
    let repetitions = code_bytes / 7;
    let mut wat = String::from(
        r#"(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32) (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
"#,
    );
    let mut left = repetitions;
    while left > 0 {
        let here = left.min(per_function);
        wat.push_str("  (func (param i32) (result i32)\n");
        for _ in 0..here {
            wat.push_str("    local.get 0 i32.const 7 i32.add local.set 0\n");
        }
        wat.push_str("    local.get 0)\n");
        left -= here;
    }
    wat.push_str(")\n");
    let mut wasm = wat::parse_str(&wat).expect("the generated module parses");
    let name = format!("pad-{n}");
    // A custom section: id 0, size, name, payload.
    let header = 1 + 5 + 1 + name.len();
    let payload = total.saturating_sub(wasm.len() + header);
    let size = (1 + name.len() + payload) as u32;
    wasm.push(0);
    let mut v = size;
    for i in 0..5 {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        wasm.push(if i < 4 { byte | 0x80 } else { byte });
    }
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name.as_bytes());
    wasm.extend(std::iter::repeat_n(0u8, payload));
    wasm
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let index = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    samples.get(index).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_hogging_the_sandbox_does_not_slow_another_tenants_decrypts() {
    const LOOPING_KEYS: usize = 4;
    const STORM: usize = 24;
    const SAMPLES: usize = 100;
    let mut sandbox = Sandbox::new();
    let kw = Arc::new(sandbox.start().await);
    let hog = kw.client();
    let victim = create_tenant(&kw).await;
    let theirs = kms_as(&kw, &victim.user);
    let their_key = create_key_as(&kw, &victim.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    // Every decision of the victim outgrows the inline budget and runs on the
    // scheduler's pool, the place the hog competes for: a hog that could take
    // the whole pool would make these wait and, past the scheduler's wait,
    // be throttled.
    attach_as(
        &kw,
        &victim.admin,
        &format!("arn:aws:kms:{}:{}:key/{their_key}", crate::harness::REGION, victim.id),
        &their_key,
        &wat_module("policy_allow_after_long_loop"),
    )
    .await;
    let their_ciphertext = encrypt(&theirs, &their_key, b"victim", None).await;
    let decrypt_once = |client: aws_sdk_kms::Client, blob: Vec<u8>| async move {
        let sent = Instant::now();
        let out = client
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the other tenant's Decrypt: {e:?}"));
        assert_eq!(out.plaintext().expect("Plaintext").as_ref(), b"victim");
        sent.elapsed()
    };
    let mut idle = Vec::new();
    for _ in 0..SAMPLES {
        idle.push(decrypt_once(theirs.clone(), their_ciphertext.clone()).await);
    }
    let idle_p99 = p99(&mut idle);

    // The hog: distinct looping modules on several keys (hostile, at most
    // 1 MiB each), Decrypted concurrently, plus TestPolicy of 1 MiB modules.
    let mut looping = Vec::new();
    for n in 0..LOOPING_KEYS {
        let key = create_key(&hog, &format!("looping {n}")).await;
        let blob = encrypt(&hog, &key, b"hog", None).await;
        attach(&kw, &key, &big_looping_module(n, 16 * 1024, 64 * 1024)).await;
        looping.push(blob);
    }
    let big = big_looping_module(1000, 64 * 1024, 1024 * 1024);
    assert!(big.len() <= 1024 * 1024 && big.len() > 1000 * 1024, "{}", big.len());
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
    let count = |outcomes: &std::sync::Mutex<std::collections::BTreeMap<String, usize>>, what: String| {
        *outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(what)
            .or_default() += 1;
    };
    let mut tasks = Vec::new();
    for i in 0..STORM {
        let (hog, blob, stop, outcomes) = (
            hog.clone(),
            looping[i % LOOPING_KEYS].clone(),
            Arc::clone(&stop),
            Arc::clone(&outcomes),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = hog.decrypt().ciphertext_blob(Blob::new(blob.clone())).send().await;
                let code = match &result {
                    Ok(_) => "allowed?!".to_string(),
                    Err(e) => e.code().unwrap_or("no code").to_string(),
                };
                count(&outcomes, format!("Decrypt {code}"));
            }
        }));
    }
    for _ in 0..2 {
        let (kw, big, stop, outcomes) = (Arc::clone(&kw), big.clone(), Arc::clone(&stop), Arc::clone(&outcomes));
        tasks.push(tokio::spawn(async move {
            let client = keyward(&kw, &kw.creds);
            while !stop.load(Ordering::Relaxed) {
                let result = client
                    .call::<_, serde_json::Value>(
                        "Keyward.TestPolicy",
                        &json!({ "Module": b64(&big), "Context": { "version": 1 } }),
                    )
                    .await;
                let what = match result {
                    Ok(v) => format!("TestPolicy allow={}", v["Allow"]),
                    Err(keyward_sdk::Error::Service { error_type, .. }) => format!("TestPolicy {error_type}"),
                    Err(e) => format!("TestPolicy {e}"),
                };
                count(&outcomes, what);
            }
        }));
    }
    // Let the hog get going: wait until it has been throttled at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outcomes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .any(|k| k.contains("ThrottlingException"))
    {
        assert!(Instant::now() < deadline, "the hog was never throttled");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut during = Vec::new();
    for _ in 0..SAMPLES {
        during.push(decrypt_once(theirs.clone(), their_ciphertext.clone()).await);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a hog task");
    }
    let during_p99 = p99(&mut during);
    let outcomes = outcomes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!(
        "other tenant's Decrypt p99: idle {idle_p99:?}, while one tenant hogs the sandbox {during_p99:?} \
         (max {:?}); the hog's outcomes: {outcomes:?}",
        during.last().copied().unwrap_or_default()
    );
    assert!(
        !outcomes
            .keys()
            .any(|k| k.contains("allowed?!") || k.contains("allow=true")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.keys().any(|k| k.contains("TestPolicy allow=false")),
        "a 1 MiB module compiled and ran: {outcomes:?}"
    );
    assert!(
        outcomes.keys().any(|k| k == "Decrypt AccessDeniedException"),
        "the looping modules ran and were stopped: {outcomes:?}"
    );
    // The 2x-idle-p99 target is measured, not asserted (a timed assertion
    // on a shared 2-core machine measures the machine): `keyward-load abuse
    // --scenario neighbour` (BENCHMARKS.md). Asserted above: every one of the
    // other tenant's decisions, each on the pool the hog was throttled on,
    // succeeded.
    assert_eq!(during.len(), SAMPLES, "every Decrypt of the other tenant succeeded");
}
