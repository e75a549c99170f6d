//! SIGKILL of the enclave under load: no request hangs, in-flight requests
//! fail with a 500-class error (or a dispatch error), the launcher restarts
//! the enclave, later requests succeed, and acknowledged keys survive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::harness::{
    REQUEST_TIMEOUT, Sandbox, create_key, decrypt, encrypt, list_all_keys, process_gone, random_bytes,
};

const LOOPS: usize = 32;
/// Successful operations before the kill (so the kill lands under load).
const OPS_BEFORE_KILL: usize = 64;
/// Operations each loop must complete successfully after the restart.
const OPS_AFTER_RESTART: usize = 3;

#[derive(Default)]
struct LoopReport {
    /// Keys whose CreateKey was acknowledged, and whether that was before the kill.
    created: Vec<(String, bool)>,
    /// (plaintext, ciphertext) of acknowledged Encrypts from before the kill.
    encrypted_before_kill: Vec<(Vec<u8>, Vec<u8>)>,
    /// Acceptable failures around the kill (for the log).
    tolerated: Vec<String>,
    /// Contract violations.
    failures: Vec<String>,
}

enum Outcome {
    Created(String),
    Encrypted(Vec<u8>, Vec<u8>),
}

/// An error is acceptable around the kill if it is an AWS-shaped 5xx error
/// or the connection failed / the response was cut off. Anything else (a
/// 4xx, a client-side timeout, ...) is a contract violation.
fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: &SdkError<E>,
) -> Result<String, String> {
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match (status, err.code()) {
                (500..=599, Some(code)) => Ok(format!("{status} {code}")),
                (500..=599, None) => Err(format!(
                    "{status} without an AWS error __type: {}",
                    DisplayErrorContext(err)
                )),
                _ => Err(format!("non-5xx error around the crash: {}", DisplayErrorContext(err))),
            }
        }
        SdkError::DispatchFailure(_) => Ok("dispatch failure".into()),
        SdkError::ResponseError(_) => Ok("response error (connection cut)".into()),
        _ => Err(format!("unexpected SDK error: {}", DisplayErrorContext(err))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enclave_sigkill_under_load() {
    sigkill_under_load(Sandbox::new()).await;
}

/// The test above on `sb` (also run on a PostgreSQL store: `storage.rs`).
pub(crate) async fn sigkill_under_load(mut sb: Sandbox) {
    let mut kw = sb.start().await;
    let setup = kw.client();
    let key_id = create_key(&setup, "crash").await;

    let client = kw.client_unbounded();
    let killed = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress_rx) = watch::channel(0usize);
    let (restarted_tx, restarted_rx) = watch::channel(false);

    let mut loops = JoinSet::new();
    for i in 0..LOOPS {
        let client = client.clone();
        let key_id = key_id.clone();
        let killed = killed.clone();
        let progress = progress_tx.clone();
        let mut restarted = restarted_rx.clone();
        loops.spawn(async move {
            let mut report = LoopReport::default();
            let mut ops_after_restart = 0;
            let mut n = i;
            while ops_after_restart < OPS_AFTER_RESTART {
                n += 1;
                let after_restart = *restarted.borrow();
                let plaintext = random_bytes(16 + n % 48);
                let op = async {
                    if n % 2 == 0 {
                        client
                            .create_key()
                            .description(format!("crash loop {i} op {n}"))
                            .send()
                            .await
                            .map_or_else(
                                |e| Err(classify(&e)),
                                |out| {
                                    Ok(Outcome::Created(
                                        out.key_metadata().map(|m| m.key_id().to_string()).unwrap_or_default(),
                                    ))
                                },
                            )
                    } else {
                        client
                            .encrypt()
                            .key_id(&key_id)
                            .plaintext(Blob::new(plaintext.clone()))
                            .send()
                            .await
                            .map_or_else(
                                |e| Err(classify(&e)),
                                |out| {
                                    let blob = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                                    Ok(Outcome::Encrypted(plaintext.clone(), blob))
                                },
                            )
                    }
                };
                let result = match tokio::time::timeout(REQUEST_TIMEOUT, op).await {
                    Ok(r) => r,
                    Err(_) => {
                        report
                            .failures
                            .push(format!("loop {i} op {n}: hung for {REQUEST_TIMEOUT:?}"));
                        return report;
                    }
                };
                let before_kill = !killed.load(Ordering::SeqCst);
                match result {
                    Ok(outcome) => {
                        match outcome {
                            Outcome::Created(id) if id.is_empty() => {
                                report
                                    .failures
                                    .push(format!("loop {i} op {n}: CreateKey without KeyMetadata"));
                            }
                            Outcome::Created(id) => report.created.push((id, before_kill)),
                            Outcome::Encrypted(_, blob) if blob.is_empty() => {
                                report
                                    .failures
                                    .push(format!("loop {i} op {n}: Encrypt without CiphertextBlob"));
                            }
                            Outcome::Encrypted(p, c) => {
                                if before_kill && report.encrypted_before_kill.len() < 2 {
                                    report.encrypted_before_kill.push((p, c));
                                }
                            }
                        }
                        if after_restart {
                            ops_after_restart += 1;
                        }
                        progress.send_modify(|count| *count += 1);
                    }
                    Err(Ok(tolerated)) if !after_restart => {
                        report.tolerated.push(format!("loop {i} op {n}: {tolerated}"));
                        // Wait (bounded) for the restart instead of spinning on errors.
                        if tokio::time::timeout(Duration::from_secs(120), restarted.wait_for(|r| *r))
                            .await
                            .is_err()
                        {
                            report
                                .failures
                                .push(format!("loop {i}: the restart was never signalled"));
                            return report;
                        }
                    }
                    Err(Ok(error)) => {
                        report
                            .failures
                            .push(format!("loop {i} op {n} (started after the restart): {error}"));
                        return report;
                    }
                    Err(Err(violation)) => {
                        report
                            .failures
                            .push(format!("loop {i} op {n} (after restart: {after_restart}): {violation}"));
                        return report;
                    }
                }
            }
            report
        });
    }
    drop(progress_tx);

    // Kill once the loops are well under way.
    tokio::time::timeout(Duration::from_secs(60), progress_rx.wait_for(|c| *c >= OPS_BEFORE_KILL))
        .await
        .unwrap_or_else(|_| panic!("fewer than {OPS_BEFORE_KILL} successful operations within 60 s"))
        .expect("progress channel");
    let old_pid = kw.enclave_pid;
    killed.store(true, Ordering::SeqCst);
    let kill = std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -9 {old_pid} failed");

    // The launcher restarts it: block on stdout for the new pid line.
    let new_pid = kw.wait_for_enclave_restart(Duration::from_secs(60)).await;
    assert_ne!(new_pid, old_pid, "restart line names the killed pid");
    assert!(process_gone(old_pid), "killed enclave {old_pid} still alive");
    kw.wait_healthy(Duration::from_secs(30)).await;
    restarted_tx.send(true).expect("loops listening");

    let mut reports = Vec::new();
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(180), loops.join_next())
        .await
        .expect("loops finish (each request is bounded)")
    {
        reports.push(joined.expect("loop task panicked"));
    }

    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    let tolerated: Vec<&String> = reports.iter().flat_map(|r| &r.tolerated).collect();
    eprintln!("{} errors tolerated around the kill: {tolerated:#?}", tolerated.len());
    assert!(
        failures.is_empty(),
        "{} contract violations:\n{failures:#?}",
        failures.len()
    );

    // No further restarts happened (the new enclave did not crash too).
    let extra = kw.drain_enclave_starts();
    assert!(extra.is_empty(), "the enclave restarted again: pids {extra:?}");

    // Requests succeed again; every acknowledged key is still there.
    let check = kw.client();
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&check, &key_id, &plaintext, None).await;
    assert_eq!(decrypt(&check, None, &ciphertext, None).await, plaintext);
    let created: Vec<&(String, bool)> = reports.iter().flat_map(|r| &r.created).collect();
    let before = created.iter().filter(|(_, before)| *before).count();
    assert!(before > 0, "no CreateKey was acknowledged before the kill");
    for (id, before_kill) in &created {
        let out = check.describe_key().key_id(id).send().await;
        assert!(
            out.is_ok(),
            "key {id} (acknowledged {} the kill) is gone: {}",
            if *before_kill { "before" } else { "after" },
            out.err()
                .map(|e| DisplayErrorContext(e).to_string())
                .unwrap_or_default()
        );
    }
    let listed: std::collections::HashSet<String> = list_all_keys(&check, 100).await.into_iter().collect();
    for (id, _) in &created {
        assert!(listed.contains(id), "acknowledged key {id} missing from ListKeys");
    }
    // Ciphertexts acknowledged before the kill still decrypt.
    for (plaintext, ciphertext) in reports.iter().flat_map(|r| &r.encrypted_before_kill) {
        assert_eq!(
            &decrypt(&check, None, ciphertext, None).await,
            plaintext,
            "ciphertext from before the kill"
        );
    }

    let status = kw.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "keyward must exit 0 on SIGTERM after a restart, got {status}"
    );
    assert!(
        process_gone(new_pid),
        "restarted enclave {new_pid} outlived the launcher"
    );
}
