//! Hostile policy modules through the service: every
//! `tests/data/fail_policy_*.wat` is either refused at upload
//! (`MalformedPolicyDocumentException`) or attached and then denies every
//! use, within a bounded time, naming the failure; a module that never
//! returns does not starve the tenant's other keys or other tenants; and a
//! module that grows its memory to the limit does not grow the enclave's.

use std::time::{Duration, Instant};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::primitives::Blob;
use serde_json::json;

use crate::harness::{Keyward, Sandbox, create_key, decrypt, encrypt, hostile_policy_modules, rss_bytes, wat_module};
use crate::policies::{assert_deny_audited, attach, denied_by, keyward, put_key_module, sha256_hex};
use crate::principals::{b64, create_key_as, create_tenant, expect_sdk_error, kms as kms_as};

/// Bound on any single request here: far above any sane latency, far below
/// "forever" (the sandbox's own wall-clock limit is about 100 ms).
const BOUND: Duration = Duration::from_secs(20);

/// What a hostile module must do.
enum Expect {
    /// Refused at upload; the message names this.
    Refused(&'static str),
    /// Attached; every use denies with a reason naming one of these.
    Denies(&'static [&'static str]),
}

/// The expectation for each known hostile module. A module added to
/// `tests/data` later without an entry here is held to the general rule
/// (refused, or denies every use).
fn expectation(name: &str) -> Option<Expect> {
    Some(match name {
        "fail_policy_imports" => Expect::Refused("imports"),
        "fail_policy_start_function" => Expect::Refused("start function"),
        "fail_policy_shared_memory" => Expect::Refused("shared memory"),
        "fail_policy_missing_marker" => Expect::Refused("keyward_policy_abi_v1"),
        "fail_policy_bad_export_type" => Expect::Refused("keyward_evaluate"),
        "fail_policy_huge_data_segment" => Expect::Refused("minimum"),
        // Fuel normally; the epoch deadline if the machine is loaded.
        "fail_policy_infinite_loop" => Expect::Denies(&["ran out of fuel", "epoch deadline"]),
        "fail_policy_memory_grow_bomb" => Expect::Denies(&["memory limit"]),
        "fail_policy_deep_recursion" => Expect::Denies(&["stack overflow"]),
        "fail_policy_data_segment_out_of_bounds" => Expect::Denies(&["instantiation failed"]),
        "fail_policy_unreachable" => Expect::Denies(&["trapped: unreachable"]),
        "fail_policy_out_of_bounds_result" => Expect::Denies(&["out of bounds"]),
        "fail_policy_non_json_result" => Expect::Denies(&["malformed"]),
        "fail_policy_allow_not_bool" => Expect::Denies(&["malformed"]),
        _ => return None,
    })
}

/// `request`'s output, failing the test if it takes over [`BOUND`].
async fn within<F: std::future::Future>(what: &str, request: F) -> F::Output {
    tokio::time::timeout(BOUND, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {BOUND:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_are_refused_at_upload_or_deny_every_use() {
    let names = hostile_policy_modules();
    assert!(names.len() >= 14, "hostile modules in tests/data: {names:?}");
    let mut sandbox = Sandbox::new();
    crate::memcap::budget_for_cap(&mut sandbox);
    let kw = sandbox.start().await;
    let cap = crate::memcap::MemoryCap::for_enclave(kw.enclave_pid);
    let kms = kw.client();
    let mut refused = Vec::new();
    let mut denying = Vec::new();
    for name in &names {
        let module = wat_module(name);
        let key_id = create_key(&kms, name).await;
        let arn = Keyward::key_arn(&key_id);
        let ciphertext = encrypt(&kms, &key_id, b"hostile module test", None).await;
        let uploaded = tokio::time::timeout(BOUND, put_key_module(&kw, &kw.creds, &key_id, &module))
            .await
            .unwrap_or_else(|_| panic!("{name}: PutKeyPolicyModule took over {BOUND:?}"));
        let expect = expectation(name);
        match uploaded {
            Err(keyward_sdk::Error::Service {
                error_type, message, ..
            }) => {
                assert_eq!(error_type, "MalformedPolicyDocumentException", "{name}: {message}");
                match expect {
                    Some(Expect::Refused(what)) => {
                        assert!(message.contains(what), "{name}: {message:?} lacks {what:?}")
                    }
                    Some(Expect::Denies(_)) => panic!("{name} must be accepted and deny, but was refused: {message}"),
                    None => {}
                }
                // Nothing was attached: the key still answers without a policy.
                assert_eq!(
                    decrypt(&kms, None, &ciphertext, None).await,
                    b"hostile module test",
                    "{name}"
                );
                expect_sdk_error(
                    &format!("{name}: GetKeyPolicyModule"),
                    keyward(&kw, &kw.creds)
                        .call::<_, serde_json::Value>("Keyward.GetKeyPolicyModule", &json!({ "KeyId": key_id }))
                        .await,
                    400,
                    "NotFoundException",
                );
                refused.push(name.clone());
            }
            Ok(out) => {
                if let Some(Expect::Refused(what)) = expect {
                    panic!("{name} must be refused at upload ({what}), but was attached: {out}");
                }
                let sha = sha256_hex(&module);
                assert_eq!(out["ModuleSha256"], json!(sha), "{name}");
                let wanted: &[&str] = match expect {
                    Some(Expect::Denies(any_of)) => any_of,
                    _ => &[],
                };
                // Every use denies: crypto, a read, a management operation.
                let decrypted = within(
                    name,
                    kms.decrypt().ciphertext_blob(Blob::new(ciphertext.clone())).send(),
                )
                .await;
                let decrypt_denial = denied_by(&format!("{name}: Decrypt"), decrypted, &sha);
                let encrypted = within(
                    name,
                    kms.encrypt().key_id(&key_id).plaintext(Blob::new(b"x".to_vec())).send(),
                )
                .await;
                let described = within(name, kms.describe_key().key_id(&key_id).send()).await;
                let disabled = within(name, kms.disable_key().key_id(&key_id).send()).await;
                let denials = [
                    decrypt_denial,
                    denied_by(&format!("{name}: Encrypt"), encrypted, &sha),
                    denied_by(&format!("{name}: DescribeKey"), described, &sha),
                    denied_by(&format!("{name}: DisableKey"), disabled, &sha),
                ];
                for denial in &denials {
                    assert!(
                        wanted.is_empty() || wanted.iter().any(|w| denial.reason.contains(w)),
                        "{name}: reason {:?} names none of {wanted:?}",
                        denial.reason
                    );
                    assert!(
                        denial.reason.starts_with("policy "),
                        "{name}: the sandbox, not the module, names the failure: {:?}",
                        denial.reason
                    );
                }
                assert_deny_audited(&kw, &kw.creds, &denials[0], "TrentService.Decrypt", &arn, &sha).await;
                // The KeyAdmin can still remove it.
                keyward(&kw, &kw.creds)
                    .call::<_, serde_json::Value>("Keyward.DeleteKeyPolicyModule", &json!({ "KeyId": key_id }))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: DeleteKeyPolicyModule: {e}"));
                assert_eq!(
                    decrypt(&kms, None, &ciphertext, None).await,
                    b"hostile module test",
                    "{name}"
                );
                denying.push(name.clone());
            }
            Err(other) => panic!("{name}: PutKeyPolicyModule failed unexpectedly: {other}"),
        }
    }
    eprintln!("refused at upload: {refused:?}\nattached, denying: {denying:?}");
    if let Some(cap) = &cap {
        cap.assert_no_oom_kill("hostile_modules_are_refused_at_upload_or_deny_every_use");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_are_not_policies_are_refused_at_upload() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "not policies").await;
    let allow_all = wat_module("policy_allow_all");
    let component_header = b"\0asm\x0d\0\x01\0".to_vec();
    let text_format =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/policy_allow_all.wat"))
            .expect("wat source");
    for (what, module) in [
        ("not wasm", b"this is not WebAssembly".to_vec()),
        ("a truncated module", allow_all[..allow_all.len() / 2].to_vec()),
        ("a component", component_header),
        ("the text format", text_format),
    ] {
        let uploaded = put_key_module(&kw, &kw.creds, &key_id, &module).await;
        expect_sdk_error(what, uploaded, 400, "MalformedPolicyDocumentException");
    }
    // Over 1 MiB: a valid module padded with a custom section.
    let mut oversized = allow_all.clone();
    let payload = 1024 * 1024;
    oversized.push(0); // custom section
    let mut size = payload + 1 + 1; // name length + name + payload
    let mut leb = Vec::new();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            leb.push(byte);
            break;
        }
        leb.push(byte | 0x80);
    }
    oversized.extend_from_slice(&leb);
    oversized.push(1);
    oversized.push(b'x');
    oversized.extend(std::iter::repeat_n(0u8, payload));
    assert!(oversized.len() > 1024 * 1024);
    let uploaded = put_key_module(&kw, &kw.creds, &key_id, &oversized).await;
    match uploaded {
        // ABI.md §6 and the issue: MalformedPolicyDocumentException. The
        // service's length check answers ValidationException (reported as a
        // deviation); either way the module is refused at upload.
        Err(keyward_sdk::Error::Service { error_type, status, .. }) => assert!(
            status == 400 && (error_type == "MalformedPolicyDocumentException" || error_type == "ValidationException"),
            "over 1 MiB: {error_type} ({status})"
        ),
        other => panic!("a module over 1 MiB was not refused: {other:?}"),
    }
    // TestPolicy applies the same checks.
    let tested = keyward(&kw, &kw.creds)
        .call::<_, serde_json::Value>(
            "Keyward.TestPolicy",
            &json!({ "Module": b64(b"this is not WebAssembly"), "Context": { "version": 1 } }),
        )
        .await;
    expect_sdk_error("TestPolicy of garbage", tested, 400, "MalformedPolicyDocumentException");
    // Nothing was attached.
    expect_sdk_error(
        "GetKeyPolicyModule",
        keyward(&kw, &kw.creds)
            .call::<_, serde_json::Value>("Keyward.GetKeyPolicyModule", &json!({ "KeyId": key_id }))
            .await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_does_not_starve_other_keys_or_tenants() {
    const STORM: usize = 100;
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let plaintext = b"still answering";
    let looping = create_key(&kms, "infinite loop").await;
    let looping_ciphertext = encrypt(&kms, &looping, plaintext, None).await;
    let quiet = create_key(&kms, "same tenant, no policy").await;
    let quiet_ciphertext = encrypt(&kms, &quiet, plaintext, None).await;
    let tenant = create_tenant(&kw).await;
    let theirs = kms_as(&kw, &tenant.user);
    let their_key = create_key_as(&kw, &tenant.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let their_ciphertext = encrypt(&theirs, &their_key, plaintext, None).await;
    let sha = attach(&kw, &looping, &wat_module("fail_policy_infinite_loop")).await;

    // 100 concurrent Decrypts under the looping module.
    let started = Instant::now();
    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            let kms = kms.clone();
            let ciphertext = looping_ciphertext.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let result = within(
                    "a looping Decrypt",
                    kms.decrypt().ciphertext_blob(Blob::new(ciphertext)).send(),
                )
                .await;
                (result, sent.elapsed())
            })
        })
        .collect();

    // Meanwhile the tenant's other key and another tenant's key keep answering.
    let mut latencies = Vec::new();
    let mut rounds = 0;
    while rounds < 5 || !storm.iter().all(|task| task.is_finished()) {
        for (who, client, ciphertext) in [
            ("same tenant, other key", &kms, &quiet_ciphertext),
            ("other tenant", &theirs, &their_ciphertext),
        ] {
            let sent = Instant::now();
            let out = within(
                &format!("{who}: Decrypt during the storm"),
                client.decrypt().ciphertext_blob(Blob::new(ciphertext.clone())).send(),
            )
            .await
            .unwrap_or_else(|e| panic!("{who}: Decrypt during the storm: {}", DisplayErrorContext(&e)));
            assert_eq!(out.plaintext().expect("Plaintext").as_ref(), plaintext, "{who}");
            latencies.push(sent.elapsed());
        }
        rounds += 1;
        assert!(started.elapsed() < 6 * BOUND, "the storm did not end");
    }

    let mut storm_latencies = Vec::new();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for task in storm {
        let (result, took) = task.await.expect("storm task");
        // Over the tenant's share of the sandbox (issue 21): throttled;
        // otherwise denied by the module's failure.
        if let Err(e) = &result
            && e.code() == Some("ThrottlingException")
        {
            *reasons.entry("ThrottlingException".into()).or_default() += 1;
            storm_latencies.push(took);
            continue;
        }
        let denial = denied_by("Decrypt under an infinite loop", result, &sha);
        assert!(
            denial.reason.contains("ran out of fuel") || denial.reason.contains("epoch deadline"),
            "{denial:?}"
        );
        *reasons.entry(denial.reason).or_default() += 1;
        storm_latencies.push(took);
    }
    assert!(
        reasons.keys().any(|r| r != "ThrottlingException"),
        "the module ran and was stopped at least once: {reasons:?}"
    );
    let storm_took = started.elapsed();
    latencies.sort();
    storm_latencies.sort();
    eprintln!(
        "{STORM} looping Decrypts all denied in {storm_took:?} (median {:?}, max {:?}); {} other-key Decrypts \
         during it: median {:?}, max {:?}; reasons: {reasons:?}",
        storm_latencies[storm_latencies.len() / 2],
        storm_latencies.last().expect("latencies"),
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies.last().expect("latencies"),
    );
    // The service is healthy afterwards.
    assert_eq!(decrypt(&kms, None, &quiet_ciphertext, None).await, plaintext);
    denied_by(
        "DescribeKey under an infinite loop, after the storm",
        kms.describe_key().key_id(&looping).send().await,
        &sha,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_grow_bombs_do_not_grow_the_enclave() {
    const EVALUATIONS: usize = 200;
    const CONCURRENCY: usize = 4;
    const SLACK: u64 = 64 * 1024 * 1024;
    let mut sandbox = Sandbox::new();
    crate::memcap::budget_for_cap(&mut sandbox);
    let kw = sandbox.start().await;
    let cap = crate::memcap::MemoryCap::for_enclave(kw.enclave_pid);
    let kms = kw.client();
    let key_id = create_key(&kms, "memory bomb").await;
    let ciphertext = encrypt(&kms, &key_id, b"bomb", None).await;
    let sha = attach(&kw, &key_id, &wat_module("fail_policy_memory_grow_bomb")).await;
    // Warm up the request path (on another key) before the baseline.
    let other = create_key(&kms, "warm-up").await;
    for _ in 0..5 {
        encrypt(&kms, &other, b"warm-up", None).await;
    }
    let baseline = rss_bytes(kw.enclave_pid);

    let mut peak = baseline;
    let mut by_memory_limit = 0usize;
    for _ in 0..EVALUATIONS / CONCURRENCY {
        let batch: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let kms = kms.clone();
                let ciphertext = ciphertext.clone();
                tokio::spawn(async move {
                    within(
                        "a memory-bomb Decrypt",
                        kms.decrypt().ciphertext_blob(Blob::new(ciphertext)).send(),
                    )
                    .await
                })
            })
            .collect();
        for task in batch {
            let result = task.await.expect("memory-bomb Decrypt task");
            let denial = denied_by("Decrypt under a memory bomb", result, &sha);
            // On a saturated machine the wall-clock backstop can fire first;
            // either way the bomb is denied, and most hit the memory limit.
            assert!(
                denial.reason.contains("memory limit") || denial.reason.contains("epoch deadline"),
                "{denial:?}"
            );
            by_memory_limit += usize::from(denial.reason.contains("memory limit"));
        }
        peak = peak.max(rss_bytes(kw.enclave_pid));
    }
    assert!(
        by_memory_limit > 0,
        "no memory bomb of {EVALUATIONS} was stopped by the memory limit"
    );
    let after = rss_bytes(kw.enclave_pid);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "enclave VmRSS: baseline {:.1} MiB, peak between batches {:.1} MiB, after {EVALUATIONS} bombs {:.1} MiB",
        mib(baseline),
        mib(peak),
        mib(after)
    );
    assert!(
        after < baseline + SLACK,
        "the enclave's RSS grew from {:.1} MiB to {:.1} MiB over {EVALUATIONS} memory bombs",
        mib(baseline),
        mib(after)
    );
    if let Some(cap) = &cap {
        cap.assert_no_oom_kill("memory_grow_bombs_do_not_grow_the_enclave");
    }
}

/// Decisions are independent through the whole service: the isolation probe
/// (`tests/data/policy_isolation_probe.wat`) counts its calls in a global,
/// its data segment, a page it grows and a table slot, and allows only when
/// every count is 1, so every Decrypt of its key must succeed — one after
/// another, concurrently, and after the same slots served a module that
/// trapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_state_survives_from_one_decision_to_the_next() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "isolation probe").await;
    let ciphertext = encrypt(&kms, &key_id, b"probe", None).await;
    attach(&kw, &key_id, &wat_module("policy_isolation_probe")).await;
    let trapping = create_key(&kms, "traps").await;
    let trapping_ciphertext = encrypt(&kms, &trapping, b"trap", None).await;
    attach(&kw, &trapping, &wat_module("fail_policy_unreachable")).await;
    for round in 0..20 {
        let plaintext = within("a probed Decrypt", decrypt(&kms, None, &ciphertext, None)).await;
        assert_eq!(plaintext, b"probe", "round {round}");
        let trapped = within(
            "a trapping Decrypt",
            kms.decrypt()
                .ciphertext_blob(Blob::new(trapping_ciphertext.clone()))
                .send(),
        )
        .await;
        assert!(trapped.is_err(), "round {round}: the trapping module allowed");
    }
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let kms = kms.clone();
            let ciphertext = ciphertext.clone();
            tokio::spawn(
                async move { within("a concurrent probed Decrypt", decrypt(&kms, None, &ciphertext, None)).await },
            )
        })
        .collect();
    for task in concurrent {
        assert_eq!(task.await.expect("probed Decrypt task"), b"probe");
    }
}

/// A legitimate module that needs more fuel than the enclave's inline
/// attempt (`tests/data/policy_allow_after_long_loop.wat`, ~500,000 units
/// against 200,000) is run again with the full budget and allows, through
/// the service: heavy is not hostile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_needing_more_than_the_inline_budget_still_allows() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "heavy policy").await;
    let ciphertext = encrypt(&kms, &key_id, b"heavy", None).await;
    attach(&kw, &key_id, &wat_module("policy_allow_after_long_loop")).await;
    for round in 0..5 {
        let plaintext = within("a Decrypt under a heavy policy", decrypt(&kms, None, &ciphertext, None)).await;
        assert_eq!(plaintext, b"heavy", "round {round}");
    }
}
