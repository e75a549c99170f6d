//! `keyward-load abuse`: the latency a tenant sees idle and while it is
//! abused (issue 21's "within 2x p99" lines, measured rather than asserted,
//! since no test asserts speed). A `keyward dev` on a temporary data dir; the
//! victim Decrypts back to back on `--concurrency` connections in windows
//! that alternate idle and abused, `--rounds` times each, and the report
//! gives p50 and p99 of every window and the ratio of the abused p99 to the
//! idle p99 (per round and the median).
//!
//! - `--scenario flood`: `--flood-requests` requests naming the dev tenant's
//!   access key id with a wrong signature, from `--flood-connections`
//!   connections; the victim is the dev tenant itself.
//! - `--scenario neighbour`: the dev tenant hogs the policy sandbox
//!   (Decrypts under `--looping-modules` keys each guarded by its own looping
//!   module, on `--hog-connections` connections, plus TestPolicy of a 1 MiB
//!   looping module); the victim is another tenant, without a policy.
//!
//! ```text
//! keyward-load abuse --scenario flood
//! keyward-load abuse --scenario neighbour --looping-modules 100
//! ```

pub(crate) mod args;
mod modules;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::client::{Conn, Endpoint, Prepared, Signer, call, connect, send};
use crate::service::{Launch, endpoint_of, random_signer, start_dev, terminate};
use crate::stats::median;
use args::{AbuseArgs, Scenario};

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// Outcomes of the abusive requests, by kind.
type Outcomes = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(outcomes: &Outcomes, kind: String) {
    *outcomes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(kind)
        .or_default() += 1;
}

fn kind_of(outcome: &anyhow::Result<(u16, Bytes)>) -> String {
    match outcome {
        Ok((status, body)) => {
            let kind = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v["__type"]
                    .as_str()
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            });
            match kind {
                Some(kind) => kind,
                None => format!("HTTP {status}"),
            }
        }
        Err(_) => "transport".to_owned(),
    }
}

/// The victim: who, and the Decrypt it repeats.
struct Victim {
    signer: Signer,
    prepared: Prepared,
    plaintext: Vec<u8>,
}

pub(crate) async fn run(args: AbuseArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("keyward-abuse-").tempdir()?;
    let data_dir = dir.path().join("data");
    let mut launch = Launch::new(args.keyward_bin.as_deref(), &args.region)?;
    if let Some(mib) = args.memory_budget {
        launch.extra.push(format!("--memory-budget={mib}"));
    }
    let (dev, operator) = (random_signer(&args.region), random_signer(&args.region));
    let mut started = {
        let (launch, data_dir, dev, operator) = (launch, data_dir.clone(), dev.clone(), operator.clone());
        tokio::task::spawn_blocking(move || start_dev(&launch, &data_dir, &dev, &operator)).await??
    };
    let endpoint = endpoint_of(&started.url, &data_dir, false)?;
    let outcome = scenario(&args, &endpoint, &dev, &operator).await;
    terminate(&mut started.child);
    outcome
}

async fn scenario(args: &AbuseArgs, endpoint: &Endpoint, dev: &Signer, operator: &Signer) -> anyhow::Result<()> {
    let mut conn = connect(endpoint).await?;
    let victim_signer = match args.scenario {
        Scenario::Flood => dev.clone(),
        Scenario::Neighbour => {
            let id: String = (0..12).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            let created = call(
                &mut conn,
                endpoint,
                operator,
                "Keyward.CreateTenant",
                &json!({ "TenantId": id }),
            )
            .await?;
            let field = |v: &Value, name: &str| v[name].as_str().map(str::to_owned).context("CreateTenant's answer");
            Signer {
                access_key_id: field(&created, "AccessKeyId")?,
                secret: field(&created, "SecretAccessKey")?,
                region: dev.region.clone(),
            }
        }
    };
    // The victim's key and ciphertext (a tenant's first credential is a
    // KeyAdmin: its KeyUser makes the Decrypts).
    let key = call(
        &mut conn,
        endpoint,
        &victim_signer,
        "TrentService.CreateKey",
        &json!({}),
    )
    .await?["KeyMetadata"]["KeyId"]
        .as_str()
        .context("CreateKey's KeyId")?
        .to_owned();
    let user = if args.scenario == Scenario::Neighbour {
        let created = call(
            &mut conn,
            endpoint,
            &victim_signer,
            "Keyward.CreateAccessKey",
            &json!({ "Role": "KeyUser" }),
        )
        .await?;
        Signer {
            access_key_id: created["AccessKeyId"].as_str().context("AccessKeyId")?.to_owned(),
            secret: created["SecretAccessKey"]
                .as_str()
                .context("SecretAccessKey")?
                .to_owned(),
            region: dev.region.clone(),
        }
    } else {
        victim_signer
    };
    let plaintext = b"the victim's plaintext".to_vec();
    let blob = call(
        &mut conn,
        endpoint,
        &user,
        "TrentService.Encrypt",
        &json!({ "KeyId": key, "Plaintext": b64(&plaintext) }),
    )
    .await?["CiphertextBlob"]
        .as_str()
        .context("CiphertextBlob")?
        .to_owned();
    let victim = Arc::new(Victim {
        signer: user,
        prepared: Prepared {
            endpoint: endpoint.clone(),
            target: "TrentService.Decrypt",
            body: Bytes::from(serde_json::to_vec(&json!({ "CiphertextBlob": blob }))?),
        },
        plaintext,
    });
    let hog = match args.scenario {
        Scenario::Neighbour => Some(Arc::new(Hog::prepare(args, endpoint, dev, &mut conn).await?)),
        Scenario::Flood => None,
    };

    println!(
        "keyward-load abuse --scenario {}: the victim Decrypts on {} connections; {} idle and {} abused windows, alternately",
        match args.scenario {
            Scenario::Flood => "flood",
            Scenario::Neighbour => "neighbour",
        },
        args.concurrency,
        args.rounds,
        args.rounds
    );
    println!(
        "{:<6} {:<8} {:>8} {:>9} {:>8} {:>8} {:>8}  abusive requests",
        "round", "window", "seconds", "requests", "p50 ms", "p99 ms", "max ms"
    );
    let mut ratios = Vec::new();
    let (mut idle_p99s, mut abused_p99s) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // Idle.
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = measure(Arc::clone(&victim), args.concurrency, Arc::clone(&stop));
        tokio::time::sleep(args.duration).await;
        stop.store(true, Ordering::Relaxed);
        let idle = measuring.await?;
        print_window(round, "idle", &idle, "");
        // Abused.
        let outcomes: Outcomes = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = measure(Arc::clone(&victim), args.concurrency, Arc::clone(&stop));
        match (&hog, args.scenario) {
            (_, Scenario::Flood) => {
                flood(args, endpoint, dev, &outcomes).await?;
            }
            (Some(hog), Scenario::Neighbour) => {
                let hog_stop = Arc::new(AtomicBool::new(false));
                let hogging = hog.run(args, endpoint, dev, Arc::clone(&hog_stop), Arc::clone(&outcomes));
                tokio::time::sleep(args.duration).await;
                hog_stop.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                for task in hogging {
                    task.await?;
                }
            }
            (None, Scenario::Neighbour) => bail!("no hog prepared"),
        }
        stop.store(true, Ordering::Relaxed);
        let abused = measuring.await?;
        let outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let total: u64 = outcomes.values().sum();
        let kinds: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        print_window(round, "abused", &abused, &format!("{total}: {}", kinds.join(", ")));
        if abused.errors > 0 || idle.errors > 0 {
            println!(
                "       the victim's errors: idle {}, abused {} (first: {})",
                idle.errors,
                abused.errors,
                abused
                    .first_error
                    .as_deref()
                    .or(idle.first_error.as_deref())
                    .unwrap_or("-")
            );
        }
        let (i, a) = (idle.percentile_ms(99.0), abused.percentile_ms(99.0));
        idle_p99s.push(i);
        abused_p99s.push(a);
        ratios.push(a / i);
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "victim's Decrypt p99: idle median {:.2} ms, abused median {:.2} ms; abused / idle p99 median {:.2} (rounds: {})",
        median(idle_p99s).unwrap_or(f64::NAN),
        median(abused_p99s).unwrap_or(f64::NAN),
        median(ratios).unwrap_or(f64::NAN),
        each.join(", ")
    );
    Ok(())
}

/// One window of the victim's Decrypts.
struct Window {
    seconds: f64,
    /// Sorted, microseconds.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Window {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        f64::from(self.latencies[rank.clamp(1, self.latencies.len()) - 1]) / 1000.0
    }
}

fn print_window(round: usize, what: &str, w: &Window, abusive: &str) {
    println!(
        "{:<6} {:<8} {:>8.1} {:>9} {:>8.2} {:>8.2} {:>8.2}  {}",
        round,
        what,
        w.seconds,
        w.latencies.len(),
        w.percentile_ms(50.0),
        w.percentile_ms(99.0),
        w.percentile_ms(100.0),
        abusive
    );
}

/// The victim's Decrypts on `concurrency` connections until `stop`.
fn measure(victim: Arc<Victim>, concurrency: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Window> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (victim, stop) = (Arc::clone(&victim), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let outcome = match conn.as_mut() {
                        Some(c) => send(c, &victim.prepared, &victim.signer).await,
                        None => match connect(&victim.prepared.endpoint).await {
                            Ok(mut c) => {
                                let outcome = send(&mut c, &victim.prepared, &victim.signer).await;
                                conn = Some(c);
                                outcome
                            }
                            Err(e) => Err(e),
                        },
                    };
                    let took = sent.elapsed();
                    let good = match &outcome {
                        Ok((200, body)) => serde_json::from_slice::<Value>(body)
                            .ok()
                            .and_then(|v| v["Plaintext"].as_str().map(str::to_owned))
                            .is_some_and(|p| p == b64(&victim.plaintext)),
                        _ => false,
                    };
                    if good {
                        latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(match &outcome {
                                Ok((status, body)) => format!("HTTP {status}: {}", String::from_utf8_lossy(body)),
                                Err(e) => format!("{e:#}"),
                            });
                        }
                        if outcome.is_err() {
                            conn = None;
                        }
                    }
                }
                (latencies, errors, first_error)
            }));
        }
        let mut window = Window {
            seconds: 0.0,
            latencies: Vec::new(),
            errors: 0,
            first_error: None,
        };
        for task in tasks {
            if let Ok((l, e, f)) = task.await {
                window.latencies.extend(l);
                window.errors += e;
                window.first_error = window.first_error.or(f);
            }
        }
        window.latencies.sort_unstable();
        window.seconds = started.elapsed().as_secs_f64();
        window
    })
}

/// `--flood-requests` GenerateRandom requests naming the dev tenant's access
/// key id, signed with a wrong secret, over `--flood-connections` connections.
async fn flood(args: &AbuseArgs, endpoint: &Endpoint, dev: &Signer, outcomes: &Outcomes) -> anyhow::Result<()> {
    let forged = Signer {
        access_key_id: dev.access_key_id.clone(),
        secret: random_signer(&dev.region).secret,
        region: dev.region.clone(),
    };
    let prepared = Prepared {
        endpoint: endpoint.clone(),
        target: "TrentService.GenerateRandom",
        body: Bytes::from_static(br#"{"NumberOfBytes":16}"#),
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.flood_connections {
        let (prepared, forged, next, outcomes, n) = (
            prepared.clone(),
            forged.clone(),
            Arc::clone(&next),
            Arc::clone(outcomes),
            args.flood_requests,
        );
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if conn.is_none() {
                    conn = connect(&prepared.endpoint).await.ok();
                }
                let outcome = match conn.as_mut() {
                    Some(c) => send(c, &prepared, &forged).await,
                    None => Err(anyhow::anyhow!("cannot connect")),
                };
                if outcome.is_err() {
                    conn = None;
                }
                count(&outcomes, kind_of(&outcome));
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// The neighbour: ciphertexts under keys guarded by looping modules, and a
/// 1 MiB looping module for TestPolicy.
struct Hog {
    blobs: Vec<String>,
    big_module: String,
}

impl Hog {
    async fn prepare(args: &AbuseArgs, endpoint: &Endpoint, dev: &Signer, conn: &mut Conn) -> anyhow::Result<Hog> {
        let started = Instant::now();
        let mut blobs = Vec::with_capacity(args.looping_modules);
        for n in 0..args.looping_modules {
            let key = call(conn, endpoint, dev, "TrentService.CreateKey", &json!({})).await?["KeyMetadata"]["KeyId"]
                .as_str()
                .context("CreateKey's KeyId")?
                .to_owned();
            let blob = call(
                conn,
                endpoint,
                dev,
                "TrentService.Encrypt",
                &json!({ "KeyId": key, "Plaintext": b64(b"hog") }),
            )
            .await?["CiphertextBlob"]
                .as_str()
                .context("CiphertextBlob")?
                .to_owned();
            let module = modules::looping_module(n, 16 * 1024, 64 * 1024)?;
            call(
                conn,
                endpoint,
                dev,
                "Keyward.PutKeyPolicyModule",
                &json!({ "KeyId": key, "Module": b64(&module) }),
            )
            .await?;
            blobs.push(blob);
        }
        println!(
            "the neighbour: {} keys each guarded by its own looping module (64 KiB), set up in {:.1} s",
            args.looping_modules,
            started.elapsed().as_secs_f64()
        );
        Ok(Hog {
            blobs,
            big_module: b64(&modules::looping_module(usize::MAX, 64 * 1024, 1024 * 1024)?),
        })
    }

    fn run(
        self: &Arc<Self>,
        args: &AbuseArgs,
        endpoint: &Endpoint,
        dev: &Signer,
        stop: Arc<AtomicBool>,
        outcomes: Outcomes,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let connections = args.hog_connections + args.test_policy_connections;
        for i in 0..connections {
            let (hog, endpoint, dev, stop, outcomes) = (
                Arc::clone(self),
                endpoint.clone(),
                dev.clone(),
                Arc::clone(&stop),
                Arc::clone(&outcomes),
            );
            let test_policy = i >= args.hog_connections;
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let (target, body, what) = if test_policy {
                        (
                            "Keyward.TestPolicy",
                            json!({ "Module": hog.big_module, "Context": { "version": 1 } }),
                            "TestPolicy",
                        )
                    } else {
                        n = (n + 1) % hog.blobs.len();
                        (
                            "TrentService.Decrypt",
                            json!({ "CiphertextBlob": hog.blobs[n] }),
                            "Decrypt",
                        )
                    };
                    let prepared = Prepared {
                        endpoint: endpoint.clone(),
                        target,
                        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                    };
                    if conn.is_none() {
                        conn = connect(&endpoint).await.ok();
                    }
                    let outcome = match conn.as_mut() {
                        Some(c) => send(c, &prepared, &dev).await,
                        None => Err(anyhow::anyhow!("cannot connect")),
                    };
                    if outcome.is_err() {
                        conn = None;
                    }
                    let kind = match &outcome {
                        Ok((200, body)) => {
                            let allow = serde_json::from_slice::<Value>(body).ok().map(|v| v["Allow"].clone());
                            format!("allow={}", allow.unwrap_or(Value::Null))
                        }
                        _ => kind_of(&outcome),
                    };
                    count(&outcomes, format!("{what} {kind}"));
                }
            }));
        }
        tasks
    }
}
