//! `keyward-load soak`: a `keyward dev` on a temporary data dir under mixed
//! load from several tenants (GenerateDataKey, Encrypt, Decrypt, Decrypt of a
//! key guarded by a policy module, Decrypt with a Recipient, CreateKey), its
//! enclave killed with SIGKILL every `--kill-every` seconds and its store
//! restarted every `--store-restart-every` seconds, for `--duration`; then
//! one more restart of the store and the check that every acknowledged
//! CreateKey, Encrypt and GenerateDataKey is still usable. Reports RSS over
//! time of the proxy and the enclave (`/proc`), errors and latency
//! percentiles per operation, and each disruption's downtime. Exits non-zero
//! if an acknowledged write was lost (or could not be checked), or if an
//! operation never succeeded.
//!
//! ```text
//! keyward-load soak --duration 1800            # 30 minutes, the defaults otherwise
//! keyward-load soak --duration 180 --store postgres://keyward@127.0.0.1:5432/soak \
//!     --store-restart-command 'bash .ci/postgres.sh stop-server DIR && bash .ci/postgres.sh start-server DIR'
//! ```

pub(crate) mod args;
mod report;
mod service;
mod verify;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use args::SoakArgs;
use report::Sample;
use service::{Disruption, Target};
use workload::{Recipient, Shared, SoakOp};

/// How often the recipient's mock attestation document is renewed.
const RENEW_DOCUMENT_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: SoakArgs) -> anyhow::Result<()> {
    println!(
        "keyward-load soak: {:.0} s, {} tenants x {} connections, {}, enclave SIGKILL every {}, store restart every {}{}",
        args.duration.as_secs_f64(),
        args.tenants,
        args.concurrency,
        args.rate
            .map_or_else(|| "unpaced".to_owned(), |r| format!("{r:.0} req/s")),
        args.kill_every
            .map_or_else(|| "never".to_owned(), |d| format!("{:.0} s", d.as_secs_f64())),
        args.store_restart_every
            .map_or_else(|| "never".to_owned(), |d| format!("{:.0} s", d.as_secs_f64())),
        match (&args.store, &args.store_restart_command) {
            (Some(store), Some(_)) => format!(" (store {store}, restarted by the command)"),
            (Some(store), None) => format!(" (store {store}; the proxy is restarted)"),
            (None, _) => " (embedded store; the proxy is restarted)".to_owned(),
        }
    );
    let mut target = Target::spawn(&args).await?;
    println!(
        "service started: proxy pid {}, enclave pid {}",
        target.proxy_pid(),
        target.enclave_pid()
    );
    let outcome = soak(&args, &mut target).await;
    // A failed soak keeps its data dir and logs.
    let kept = target.stop(args.keep || outcome.is_err());
    if let Some(dir) = kept {
        println!("data dir and logs kept in {}", dir.display());
    }
    outcome
}

async fn soak(args: &SoakArgs, target: &mut Target) -> anyhow::Result<()> {
    let slot = target.endpoint();
    let tenants = workload::setup_tenants(&slot, &target.dev, &target.operator, args.tenants).await?;
    let mock_dir = target.mock_attestation_dir();
    let workers = args.tenants * args.concurrency;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        slot: Arc::clone(&slot),
        recipient: Recipient::new(&mock_dir)?,
        started,
        until: started + args.duration,
        interval: args.rate.map(|r| Duration::from_secs_f64(workers as f64 / r)),
    });
    let mut tasks = Vec::with_capacity(workers);
    for tenant in &tenants {
        for _ in 0..args.concurrency {
            tasks.push(tokio::spawn(workload::worker(Arc::clone(tenant), Arc::clone(&shared))));
        }
    }

    let mut samples = Vec::new();
    let mut disruptions = Vec::new();
    let chaos = chaos(args, target, &shared, &mut samples, &mut disruptions).await;
    if let Err(e) = chaos {
        for t in &tasks {
            t.abort();
        }
        report::disruptions(&disruptions);
        return Err(e.context("the soak stopped"));
    }
    let mut events = Vec::new();
    for t in tasks {
        events.extend(t.await?);
    }
    let load_ended = started.elapsed();

    // One more restart of the store, then read every acknowledged write back.
    match target.restart_store(started).await {
        Ok(d) => disruptions.push(d),
        Err(e) => {
            report::disruptions(&disruptions);
            return Err(e.context("the final restart failed"));
        }
    }
    let verify_started = Instant::now();
    let verdict = verify::verify(&tenants, &slot).await;
    let verify_took = verify_started.elapsed();

    report::per_op(&events, &disruptions, load_ended);
    report::timeline(&events, &samples, &disruptions, args.report_every, load_ended);
    report::disruptions(&disruptions);
    report::memory(&samples);
    println!(
        "final check (after one more restart of the store): {} keys described, {} ciphertexts decrypted in {:.1} s: {} lost, {} unverified",
        verdict.keys,
        verdict.ciphertexts,
        verify_took.as_secs_f64(),
        verdict.lost_count,
        verdict.unverified_count
    );
    for line in verdict.lost.iter().chain(&verdict.unverified) {
        println!("    {line}");
    }
    if verdict.lost_count > 0 || verdict.unverified_count > 0 {
        bail!(
            "{} acknowledged writes lost, {} not verifiable",
            verdict.lost_count,
            verdict.unverified_count
        );
    }
    let never = SoakOp::ALL
        .iter()
        .filter(|op| !events.iter().any(|e| e.op == **op && e.error.is_none()))
        .map(|op| op.name())
        .collect::<Vec<_>>();
    if !never.is_empty() {
        bail!("never succeeded: {}", never.join(", "));
    }
    println!("soak passed: every acknowledged write is usable");
    Ok(())
}

/// Until the load ends: samples the processes' RSS, renews the recipient's
/// document, kills the enclave and restarts the store when due.
async fn chaos(
    args: &SoakArgs,
    target: &mut Target,
    shared: &Shared,
    samples: &mut Vec<Sample>,
    disruptions: &mut Vec<Disruption>,
) -> anyhow::Result<()> {
    let started = shared.started;
    let mut next_kill = args.kill_every.map(|d| started + d);
    let mut next_store = args.store_restart_every.map(|d| started + d);
    let mut next_sample = started;
    let mut next_renew = started + RENEW_DOCUMENT_EVERY;
    let mock_dir = target.mock_attestation_dir();
    loop {
        let wake = [
            Some(next_sample),
            Some(next_renew),
            next_kill,
            next_store,
            Some(shared.until),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(shared.until);
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        if now >= shared.until {
            return Ok(());
        }
        if now >= next_sample {
            samples.push(Sample::take(
                now.duration_since(started),
                target.proxy_pid(),
                target.enclave_pid(),
            ));
            next_sample += args.sample_every;
        }
        if now >= next_renew {
            shared.recipient.renew(&mock_dir)?;
            next_renew += RENEW_DOCUMENT_EVERY;
        }
        if next_store.is_some_and(|t| now >= t) {
            let d = target.restart_store(started).await?;
            println!(
                "{:>7.1} s  {}: answering again after {:.2} s",
                d.at.as_secs_f64(),
                d.what,
                d.downtime.as_secs_f64()
            );
            disruptions.push(d);
            next_store = args.store_restart_every.map(|d| Instant::now() + d);
            // The enclave was restarted with the proxy: its clock starts over.
            next_kill = args.kill_every.map(|d| Instant::now() + d);
        } else if next_kill.is_some_and(|t| now >= t) {
            let d = target.restart_enclave(started).await?;
            println!(
                "{:>7.1} s  {}: answering again after {:.2} s (the killed enclave's peak RSS {:.1} MiB)",
                d.at.as_secs_f64(),
                d.what,
                d.downtime.as_secs_f64(),
                d.enclave_peak_kib.unwrap_or(0) as f64 / 1024.0
            );
            disruptions.push(d);
            next_kill = args.kill_every.map(|d| Instant::now() + d);
        }
    }
}
