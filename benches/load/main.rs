//! `keyward-load`: drives Keyward (or any AWS-KMS-compatible endpoint) with
//! SigV4-signed AWS KMS JSON requests at a fixed concurrency for a fixed
//! duration, and reports throughput, latency percentiles, CPU time per
//! request of the client and of the service's processes, and the service's
//! peak RSS — each figure next to the same client's figure against a bare
//! rustls + hyper HTTPS echo server on the same machine, in the same run (the
//! HTTPS limit; its certificate has the enclave's shape, `tls.rs`).
//!
//! ```text
//! # one command: start `keyward dev` on a temp data dir, run every operation
//! # at 16 and 64 connections against it and against the echo baseline
//! # (HTTPS trusting the <data-dir>/tls/ca.pem it writes)
//! keyward-load --spawn --op all --concurrency 16,64 --duration 10
//! # an endpoint already running (credentials from KEYWARD_DEV_ACCESS_KEY_ID /
//! # KEYWARD_DEV_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY;
//! # the CA from --ca-bundle or AWS_CA_BUNDLE)
//! keyward-load --endpoint https://127.0.0.1:7800 --ca-bundle data/tls/ca.pem --op decrypt --concurrency 64
//! # the baseline alone
//! keyward-load --baseline --concurrency 64
//! # benchmark of an old build that served plain HTTP, against the former
//! # plain-HTTP axum echo (Keyward itself has no plain-HTTP path)
//! keyward-load --spawn --plain-http --keyward-bin old/target/release/keyward --op decrypt
//! # a cluster: connections spread over three nodes (the setup on the first),
//! # CPU per request of their processes (same labels are added up)
//! keyward-load --endpoint https://127.0.0.1:17801,https://127.0.0.1:17802,https://127.0.0.1:17803 \
//!     --ca-bundle all-nodes-ca.pem --op mixed,create-key --no-baseline \
//!     --pid proxy=PID1,enclave=PID2,... --pid-tree postgres=POSTMASTER_PID
//! # how long a DisableKey on node 1 takes to be enforced on node 2, 100 times
//! keyward-load --endpoint https://127.0.0.1:17801,https://127.0.0.1:17802 --ca-bundle all-nodes-ca.pem \
//!     --invalidation 100
//! # the price of a policy module, five interleaved rounds (median ratios)
//! keyward-load --spawn --op decrypt,decrypt-policy --concurrency 16,64 \
//!     --rounds 5 --no-baseline --policy-module context_tenant.wasm
//! ```
//!
//! Every connection is a kept-alive HTTP/1.1 connection (its TLS handshake
//! done once, before the measured window) driven by one task, one request at
//! a time. Each request is signed afresh (as an SDK does), so
//! the client's own cost is the same against the service and the baseline.
#![forbid(unsafe_code)]

mod abuse;
mod args;
mod baseline;
mod client;
mod invalidation;
mod report;
mod service;
mod setup;
mod soak;
mod stats;
mod tls;

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use args::{Args, Invocation, Op};
use baseline::Baseline;
use client::{Endpoint, Prepared, Signer, drive, env_signer};
use report::{Row, header, print_row, print_table};
use service::Service;
use setup::{Setup, populate};
use stats::{Measured, peak_rss_kib, rss_kib};

fn main() -> anyhow::Result<()> {
    let invocation = Invocation::from_env()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match invocation {
        Invocation::Bench(args) => match args.invalidation {
            Some(samples) => runtime.block_on(async {
                let endpoints = endpoints(&args)?;
                invalidation::measure(&endpoints, &env_signer(&args.region)?, samples).await
            }),
            None => runtime.block_on(run(args)),
        },
        Invocation::Soak(args) => runtime.block_on(soak::run(args)),
        Invocation::Abuse(args) => runtime.block_on(abuse::run(args)),
    }
}

/// The `--endpoint`s, trusting the `--ca-bundle`.
fn endpoints(args: &Args) -> anyhow::Result<Vec<Endpoint>> {
    let ca_pem = match &args.ca_bundle {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    (args.endpoint.iter())
        .map(|url| Endpoint::new(url, args.plain_http, ca_pem.as_deref()))
        .collect()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "keyward-load: {} cores, {}s measured after {}s warm-up per run, {} B plaintexts",
        cores, args.duration, args.warmup, args.size
    );
    let baseline = if args.no_baseline && !args.baseline {
        None
    } else {
        Some(Baseline::start(args.plain_http)?)
    };
    let mut service = if args.spawn {
        Some(Service::spawn(&args).await?)
    } else {
        None
    };
    let mut rows = Vec::new();
    println!("{}", header());

    let target = match &service {
        Some(s) => Some((
            vec![s.endpoint.clone()],
            s.signer.clone(),
            Some(s.mock_attestation_dir()),
        )),
        None if !args.endpoint.is_empty() => Some((
            endpoints(&args)?,
            env_signer(&args.region)?,
            args.mock_attestation_dir.clone(),
        )),
        None if args.baseline => None,
        None => bail!("give --endpoint URL, --spawn or --baseline"),
    };

    let setup = match &target {
        Some((endpoints, signer, attestation_dir)) => {
            let first = endpoints.first().context("no endpoint")?;
            let setup = Setup::prepare(first, signer, attestation_dir.as_deref(), &args.ops, &args).await?;
            if args.keys > 0 {
                populate(first, signer, args.keys).await?;
            }
            Some(setup)
        }
        None => None,
    };

    // Whose CPU time each run measures (besides this process's own).
    let service_pids: Vec<Measured> = match &service {
        Some(s) => [("proxy", s.proxy_pid), ("enclave", s.enclave_pid)]
            .map(|(label, pid)| Measured {
                label: label.into(),
                pid,
                tree: false,
            })
            .to_vec(),
        None => args.pid.clone(),
    };
    for round in 0..args.rounds {
        for &op in &args.ops {
            for &concurrency in &args.concurrency {
                run_one(
                    &mut rows,
                    round,
                    op,
                    concurrency,
                    baseline.as_ref(),
                    &target,
                    setup.as_ref(),
                    &service_pids,
                    &args,
                )
                .await?;
            }
        }
    }

    println!();
    print_table(&rows);
    let pids = service_pids;
    if !pids.is_empty() {
        let mut total = 0u64;
        for Measured { label: name, pid, .. } in &pids {
            match peak_rss_kib(*pid) {
                Some(kib) => {
                    total += kib;
                    println!("peak RSS (VmHWM) {name}: {:.1} MiB", kib as f64 / 1024.0);
                }
                None => println!("peak RSS (VmHWM) {name}: unavailable"),
            }
        }
        println!("peak RSS (VmHWM) total: {:.1} MiB", total as f64 / 1024.0);
    }
    if let Some(s) = service.as_mut()
        && args.restart
    {
        let elapsed = s.restart(&args).await?;
        println!(
            "start to ready (restart on the same data dir, {} extra keys): {:.3} s",
            args.keys,
            elapsed.as_secs_f64()
        );
        println!(
            "RSS after restart (VmRSS): proxy {:.1} MiB, enclave {:.1} MiB",
            rss_kib(s.proxy_pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
            rss_kib(s.enclave_pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
        );
    }
    if let Some(s) = service {
        s.stop();
    }
    Ok(())
}

/// One operation at one concurrency: against the echo baseline (if any),
/// then against the service.
#[allow(clippy::too_many_arguments)]
async fn run_one(
    rows: &mut Vec<Row>,
    round: usize,
    op: Op,
    concurrency: usize,
    baseline: Option<&Baseline>,
    target: &Option<(Vec<Endpoint>, Signer, Option<PathBuf>)>,
    setup: Option<&Setup>,
    service_pids: &[Measured],
    args: &Args,
) -> anyhow::Result<()> {
    let mut base_rps = None;
    if let Some(b) = baseline {
        // The echo baseline gets the very same signed requests as the service.
        let body = |part: Op| match setup {
            Some(s) => s.body(part),
            None => Ok(Setup::standalone_body(part, args.size)),
        };
        let prepared = prepared(std::slice::from_ref(&b.endpoint), op, body)?;
        let signer = target.as_ref().map(|t| t.1.clone()).unwrap_or_else(|| Signer {
            access_key_id: "AKIABASELINEBASELINE".into(),
            secret: "baseline".repeat(5),
            region: args.region.clone(),
        });
        let result = drive(&prepared, &signer, concurrency, args, &[]).await?;
        base_rps = Some(result.throughput);
        rows.push(Row {
            op,
            concurrency,
            round,
            what: b.label,
            result,
            ratio: None,
        });
        print_row(rows.last().expect("a row was pushed"));
    }
    if let (Some((endpoints, signer, _)), Some(setup)) = (target, setup) {
        let prepared = prepared(endpoints, op, |part| setup.body(part))?;
        let result = drive(&prepared, signer, concurrency, args, service_pids).await?;
        let ratio = base_rps.map(|b| result.throughput / b);
        rows.push(Row {
            op,
            concurrency,
            round,
            what: "keyward",
            result,
            ratio,
        });
        print_row(rows.last().expect("a row was pushed"));
    }
    Ok(())
}

/// What the connections of a run of `op` send, connection i the i-th entry
/// (cyclically): each part of `op` to each endpoint.
fn prepared(
    endpoints: &[Endpoint],
    op: Op,
    body: impl Fn(Op) -> anyhow::Result<bytes::Bytes>,
) -> anyhow::Result<Vec<Prepared>> {
    let mut all = Vec::new();
    for part in op.parts() {
        let body = body(part)?;
        for endpoint in endpoints {
            all.push(Prepared {
                endpoint: endpoint.clone(),
                target: part.target(),
                body: body.clone(),
            });
        }
    }
    Ok(all)
}
