//! `keyward-load`: drives Keyward (or any AWS-KMS-compatible endpoint) with
//! SigV4-signed AWS KMS JSON requests at a fixed concurrency for a fixed
//! duration, and reports throughput, latency percentiles, CPU time per
//! request of the client and of the service's processes, and the service's
//! peak RSS — each figure next to the same client's figure against a bare
//! axum echo server on the same machine, in the same run (the HTTP limit).
//!
//! ```text
//! # one command: start `keyward dev` on a temp data dir, run every operation
//! # at 16 and 64 connections against it and against the echo baseline
//! keyward-load --spawn --op all --concurrency 16,64 --duration 10
//! # an endpoint already running (credentials from KEYWARD_DEV_ACCESS_KEY_ID /
//! # KEYWARD_DEV_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
//! keyward-load --endpoint http://127.0.0.1:7800 --op decrypt --concurrency 64
//! # the baseline alone
//! keyward-load --baseline --concurrency 64
//! # the price of a policy module, five interleaved rounds (median ratios)
//! keyward-load --spawn --op decrypt,decrypt-policy --concurrency 16,64 \
//!     --rounds 5 --no-baseline --policy-module context_tenant.wasm
//! ```
//!
//! Every connection is a kept-alive HTTP/1.1 connection driven by one task,
//! one request at a time. Each request is signed afresh (as an SDK does), so
//! the client's own cost is the same against the service and the baseline.
#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

const READY_MARKER: &str = "Keyward is ready at ";
const ENCLAVE_MARKER: &str = "enclave process started: pid ";
const ALLOW_ALL_WAT: &str = include_str!("../../tests/data/policy_allow_all.wat");

#[derive(Parser, Debug)]
#[command(
    name = "keyward-load",
    about = "Load generator for Keyward / AWS-KMS-compatible endpoints, with an axum echo baseline."
)]
struct Args {
    /// The endpoint to drive (e.g. http://127.0.0.1:7800).
    #[arg(long, conflicts_with = "spawn")]
    endpoint: Option<String>,
    /// Start `keyward dev` on a temporary data dir and drive it.
    #[arg(long)]
    spawn: bool,
    /// Run only the axum echo baseline (no service).
    #[arg(long, conflicts_with_all = ["endpoint", "spawn"])]
    baseline: bool,
    /// Skip the baseline runs (no ratio is printed).
    #[arg(long)]
    no_baseline: bool,
    /// The `keyward` executable for --spawn (default: next to this one).
    #[arg(long)]
    keyward_bin: Option<PathBuf>,
    /// Operations, comma-separated: generate-data-key, encrypt, decrypt,
    /// decrypt-policy, recipient-decrypt, or all.
    #[arg(long, value_delimiter = ',', default_value = "generate-data-key")]
    op: Vec<String>,
    /// Connections (one request in flight on each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    concurrency: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts, per run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Plaintext bytes for encrypt / decrypt (1-4096).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Before the runs, create this many extra keys (to measure memory and
    /// start-up with a large key set).
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// With --spawn: after the runs, restart the service on the same data dir
    /// and report the time from start to ready.
    #[arg(long)]
    restart: bool,
    /// The enclave's `<data-dir>/mock-attestation` for recipient-decrypt
    /// against --endpoint (with --spawn it is known).
    #[arg(long)]
    mock_attestation_dir: Option<PathBuf>,
    /// decrypt-policy: attach this policy module (.wasm) to its key instead
    /// of the allow-all WAT module (`tests/data/policy_allow_all.wat`). Every
    /// Decrypt then carries the encryption context `{"tenant": <the caller's
    /// tenant>}`, with and without the policy, which is what the
    /// `context-tenant` example requires.
    #[arg(long)]
    policy_module: Option<PathBuf>,
    /// Extra pids whose peak RSS (VmHWM) and CPU time per request to
    /// report, for --endpoint.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Run the whole sequence (every operation at every concurrency) this
    /// many times, interleaved, and report the median of the
    /// decrypt-policy / decrypt ratios: drift of a shared machine then hits
    /// both operations alike.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    GenerateDataKey,
    Encrypt,
    Decrypt,
    DecryptPolicy,
    RecipientDecrypt,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::GenerateDataKey,
        Op::Encrypt,
        Op::Decrypt,
        Op::DecryptPolicy,
        Op::RecipientDecrypt,
    ];

    fn parse(s: &str) -> anyhow::Result<Vec<Op>> {
        Ok(match s.trim() {
            "all" => Op::ALL.to_vec(),
            "generate-data-key" => vec![Op::GenerateDataKey],
            "encrypt" => vec![Op::Encrypt],
            "decrypt" => vec![Op::Decrypt],
            "decrypt-policy" => vec![Op::DecryptPolicy],
            "recipient-decrypt" => vec![Op::RecipientDecrypt],
            other => bail!("unknown --op {other:?}"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "generate-data-key",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::DecryptPolicy => "decrypt-policy",
            Op::RecipientDecrypt => "recipient-decrypt",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "TrentService.GenerateDataKey",
            Op::Encrypt => "TrentService.Encrypt",
            Op::Decrypt | Op::DecryptPolicy | Op::RecipientDecrypt => "TrentService.Decrypt",
        }
    }
}

/// Who signs: an access key and its secret.
#[derive(Clone)]
struct Signer {
    access_key_id: String,
    secret: String,
    region: String,
}

/// One prepared request: where, which operation, which body.
#[derive(Clone)]
struct Prepared {
    addr: SocketAddr,
    host: String,
    target: &'static str,
    body: Bytes,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut ops = Vec::new();
    for s in &args.op {
        for op in Op::parse(s)? {
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.concurrency.contains(&0) {
        bail!("--concurrency must be at least 1");
    }
    if !(1..=4096).contains(&args.size) {
        bail!("--size must be 1-4096");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(run(args, ops))
}

async fn run(args: Args, ops: Vec<Op>) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "keyward-load: {} cores, {}s measured after {}s warm-up per run, {} B plaintexts",
        cores, args.duration, args.warmup, args.size
    );
    let baseline = if args.no_baseline && !args.baseline {
        None
    } else {
        Some(Baseline::start()?)
    };
    let mut service = if args.spawn {
        Some(Service::spawn(&args).await?)
    } else {
        None
    };
    let mut rows = Vec::new();
    println!("{}", header());

    let target = match (&service, &args.endpoint) {
        (Some(s), _) => Some((s.url.clone(), s.signer.clone(), Some(s.mock_attestation_dir()))),
        (None, Some(endpoint)) => Some((
            endpoint.clone(),
            env_signer(&args.region)?,
            args.mock_attestation_dir.clone(),
        )),
        (None, None) if args.baseline => None,
        (None, None) => bail!("give --endpoint URL, --spawn or --baseline"),
    };

    let setup = match &target {
        Some((url, signer, attestation_dir)) => {
            let setup = Setup::prepare(url, signer, attestation_dir.as_deref(), &ops, &args).await?;
            if args.keys > 0 {
                populate(url, signer, args.keys).await?;
            }
            Some(setup)
        }
        None => None,
    };

    // Whose CPU time each run measures (besides this process's own).
    let service_pids: Vec<(String, u32)> = match &service {
        Some(s) => vec![("proxy".into(), s.proxy_pid), ("enclave".into(), s.enclave_pid)],
        None => args.pid.iter().map(|p| (format!("pid {p}"), *p)).collect(),
    };
    for round in 0..args.rounds {
        for &op in &ops {
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
        for (name, pid) in &pids {
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
    target: &Option<(String, Signer, Option<PathBuf>)>,
    setup: Option<&Setup>,
    service_pids: &[(String, u32)],
    args: &Args,
) -> anyhow::Result<()> {
    let mut base_rps = None;
    if let Some(b) = baseline {
        // The echo baseline gets the very same signed request as the service.
        let body = match setup {
            Some(s) => s.body(op)?,
            None => Setup::standalone_body(op, args.size),
        };
        let prepared = Prepared {
            addr: b.addr,
            host: b.addr.to_string(),
            target: op.target(),
            body,
        };
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
            what: "axum echo",
            result,
            ratio: None,
        });
        print_row(rows.last().expect("a row was pushed"));
    }
    if let (Some((url, signer, _)), Some(setup)) = (target, setup) {
        let (addr, host) = resolve(url)?;
        let prepared = Prepared {
            addr,
            host,
            target: op.target(),
            body: setup.body(op)?,
        };
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

fn env_signer(region: &str) -> anyhow::Result<Signer> {
    let pick = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
    let access_key_id = pick("KEYWARD_DEV_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        .context("set KEYWARD_DEV_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID)")?;
    let secret = pick("KEYWARD_DEV_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
        .context("set KEYWARD_DEV_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)")?;
    Ok(Signer {
        access_key_id,
        secret,
        region: region.to_owned(),
    })
}

fn resolve(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad endpoint {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// endpoints are supported (put TLS in front separately)");
    }
    let authority = uri.authority().context("endpoint without host")?;
    let host = authority.as_str().to_owned();
    let port = authority.port_u16().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))?
        .next()
        .context("endpoint does not resolve")?;
    Ok((addr, host))
}

// ---------------------------------------------------------------- setup

/// Keys and bodies for each operation, created through the API.
struct Setup {
    key_id: String,
    plaintext: Vec<u8>,
    ciphertext: Option<String>,
    policy_ciphertext: Option<String>,
    recipient_document: Option<String>,
    /// The encryption context of every Decrypt (with --policy-module).
    encryption_context: Option<Value>,
    size: usize,
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

impl Setup {
    async fn prepare(
        url: &str,
        signer: &Signer,
        attestation_dir: Option<&Path>,
        ops: &[Op],
        args: &Args,
    ) -> anyhow::Result<Setup> {
        let client = keyward_sdk::Client::new(url, &signer.region, &signer.access_key_id, &signer.secret)?;
        let key_id = create_key(&client, "keyward-load").await?;
        let plaintext = vec![0x5a; args.size];
        let encryption_context = match &args.policy_module {
            Some(_) => {
                let described: Value = client
                    .call("TrentService.DescribeKey", &json!({"KeyId": key_id}))
                    .await?;
                let tenant = described["KeyMetadata"]["AWSAccountId"]
                    .as_str()
                    .context("DescribeKey returned no AWSAccountId")?;
                Some(json!({ "tenant": tenant }))
            }
            None => None,
        };
        let encrypt = |key: String| {
            let client = &client;
            let plaintext = &plaintext;
            let encryption_context = &encryption_context;
            async move {
                let mut request = json!({"KeyId": key, "Plaintext": b64(plaintext)});
                if let Some(context) = encryption_context {
                    request["EncryptionContext"] = context.clone();
                }
                let out: Value = client.call("TrentService.Encrypt", &request).await?;
                out["CiphertextBlob"]
                    .as_str()
                    .map(str::to_owned)
                    .context("Encrypt returned no CiphertextBlob")
            }
        };
        let needs_ciphertext = ops.iter().any(|o| matches!(o, Op::Decrypt | Op::RecipientDecrypt));
        let ciphertext = if needs_ciphertext {
            Some(encrypt(key_id.clone()).await?)
        } else {
            None
        };
        let policy_ciphertext = if ops.contains(&Op::DecryptPolicy) {
            let guarded = create_key(&client, "keyward-load: policy").await?;
            let module = match &args.policy_module {
                Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                None => wat::parse_str(ALLOW_ALL_WAT).context("allow-all WAT")?,
            };
            let _: Value = client
                .call(
                    "Keyward.PutKeyPolicyModule",
                    &json!({"KeyId": guarded, "Module": b64(&module)}),
                )
                .await?;
            Some(encrypt(guarded).await?)
        } else {
            None
        };
        let recipient_document = if ops.contains(&Op::RecipientDecrypt) {
            let dir = attestation_dir.context("recipient-decrypt needs --mock-attestation-dir (or --spawn)")?;
            let workload = keyward_sdk::recipient::RecipientKey::generate();
            let document = keyward_sdk::attestation::mock_document(
                dir,
                keyward_sdk::attestation::DEFAULT_MODULE_ID,
                &keyward_sdk::attestation::default_pcrs(),
                workload.public_key_der(),
                None,
            )?;
            if args.duration + args.warmup > 240.0 {
                eprintln!("note: recipient-decrypt runs longer than 4 minutes outlive the document's freshness");
            }
            Some(b64(&document))
        } else {
            None
        };
        Ok(Setup {
            key_id,
            plaintext,
            ciphertext,
            policy_ciphertext,
            recipient_document,
            encryption_context,
            size: args.size,
        })
    }

    fn body(&self, op: Op) -> anyhow::Result<Bytes> {
        let missing = || anyhow::anyhow!("no setup for {}", op.name());
        let value = match op {
            Op::GenerateDataKey => json!({"KeyId": self.key_id, "KeySpec": "AES_256"}),
            Op::Encrypt => json!({"KeyId": self.key_id, "Plaintext": b64(&self.plaintext)}),
            Op::Decrypt => json!({"CiphertextBlob": self.ciphertext.as_ref().ok_or_else(missing)?}),
            Op::DecryptPolicy => json!({"CiphertextBlob": self.policy_ciphertext.as_ref().ok_or_else(missing)?}),
            Op::RecipientDecrypt => json!({
                "CiphertextBlob": self.ciphertext.as_ref().ok_or_else(missing)?,
                "Recipient": {
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": self.recipient_document.as_ref().ok_or_else(missing)?,
                },
            }),
        };
        let _ = self.size;
        let mut value = value;
        if let (Some(context), Op::Decrypt | Op::DecryptPolicy | Op::RecipientDecrypt) = (&self.encryption_context, op)
        {
            value["EncryptionContext"] = context.clone();
        }
        Ok(Bytes::from(serde_json::to_vec(&value)?))
    }

    /// Bodies of the same sizes when only the baseline runs.
    fn standalone_body(op: Op, size: usize) -> Bytes {
        let key = "0f8f6a6e-1c84-4d86-9a37-3b8e6d1c2f10";
        // A ciphertext blob is 1 + 16 + 4 + 12 + size + 16 bytes.
        let blob = b64(&vec![1u8; 49 + size]);
        let value = match op {
            Op::GenerateDataKey => json!({"KeyId": key, "KeySpec": "AES_256"}),
            Op::Encrypt => json!({"KeyId": key, "Plaintext": b64(&vec![0x5a; size])}),
            Op::Decrypt | Op::DecryptPolicy => json!({"CiphertextBlob": blob}),
            Op::RecipientDecrypt => json!({
                "CiphertextBlob": blob,
                "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(&[0u8; 4600])},
            }),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }
}

async fn create_key(client: &keyward_sdk::Client, description: &str) -> anyhow::Result<String> {
    let out: Value = client
        .call("TrentService.CreateKey", &json!({"Description": description}))
        .await?;
    out["KeyMetadata"]["KeyId"]
        .as_str()
        .map(str::to_owned)
        .context("CreateKey returned no KeyId")
}

/// Creates `n` keys over 32 connections.
async fn populate(url: &str, signer: &Signer, n: usize) -> anyhow::Result<()> {
    let (addr, host) = resolve(url)?;
    let prepared = Arc::new(Prepared {
        addr,
        host,
        target: "TrentService.CreateKey",
        body: Bytes::from_static(b"{}"),
    });
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (prepared, signer, next) = (Arc::clone(&prepared), signer.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(prepared.addr).await?;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let (status, body) = send(&mut conn, &prepared, &signer).await?;
                if status != 200 {
                    bail!("CreateKey answered {status}: {}", String::from_utf8_lossy(&body));
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "created {n} keys in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------- the client

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (send, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

fn signed(prepared: &Prepared, signer: &Signer) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let headers = [
        ("host", prepared.host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", prepared.target),
    ];
    let identity = Credentials::new(&signer.access_key_id, &signer.secret, None, None, "keyward-load").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signer.region)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let url = format!("http://{}/", prepared.host);
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(&prepared.body),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut builder = http::Request::builder().method(http::Method::POST).uri("/");
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Full::new(prepared.body.clone()))?)
}

async fn send(conn: &mut Conn, prepared: &Prepared, signer: &Signer) -> anyhow::Result<(u16, Bytes)> {
    let request = signed(prepared, signer)?;
    conn.ready().await?;
    let response = conn.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What one run measured.
struct RunResult {
    throughput: f64,
    /// CPU time (user + system) per answered request over the measured
    /// window, in microseconds, per measured process (this client first).
    cpu_per_request: Vec<(String, f64)>,
    /// Sorted latencies of the measured window, in microseconds.
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl RunResult {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        f64::from(self.latencies[index]) / 1000.0
    }
}

/// `concurrency` connections, each sending `prepared` back to back; the CPU
/// time of this process and of `pids` is read at both ends of the measured
/// window.
async fn drive(
    prepared: &Prepared,
    signer: &Signer,
    concurrency: usize,
    args: &Args,
    pids: &[(String, u32)],
) -> anyhow::Result<RunResult> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.duration);
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(connect(prepared.addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let (from, until) = (start + warmup, start + warmup + measured);
    let mut measured_pids = vec![("client".to_owned(), std::process::id())];
    measured_pids.extend(pids.iter().cloned());
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before: Vec<Option<u64>> = measured_pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        tokio::time::sleep_until(until.into()).await;
        measured_pids
            .into_iter()
            .zip(before)
            .filter_map(|((name, pid), before)| Some((name, cpu_ticks(pid)?.checked_sub(before?)?)))
            .collect::<Vec<(String, u64)>>()
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for mut conn in conns {
        let (prepared, signer) = (prepared.clone(), signer.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::with_capacity(4096);
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = send(&mut conn, &prepared, &signer).await;
                let done = Instant::now();
                let ok = match &outcome {
                    Ok((200, _)) => true,
                    Ok((status, body)) => {
                        if first_error.is_none() {
                            first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
                        }
                        false
                    }
                    Err(e) => {
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        false
                    }
                };
                if sent >= from && done <= until {
                    if ok {
                        latencies.push(u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
                if outcome.is_err() {
                    // A broken connection: open a new one and go on.
                    conn = match connect(prepared.addr).await {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (l, e, f) = task.await?;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    latencies.sort_unstable();
    let answered = latencies.len().max(1) as f64;
    let cpu_per_request = cpu
        .await?
        .into_iter()
        .map(|(name, ticks)| (name, ticks as f64 * 1e6 / CLOCK_TICKS_PER_SECOND / answered))
        .collect();
    Ok(RunResult {
        cpu_per_request,
        throughput: latencies.len() as f64 / measured.as_secs_f64(),
        latencies,
        errors,
        first_error,
    })
}

// ---------------------------------------------------------------- the baseline

/// An axum echo server (`POST /` answers the request body) on its own
/// runtime and threads, on a loopback port it picked.
struct Baseline {
    addr: SocketAddr,
}

impl Baseline {
    fn start() -> anyhow::Result<Baseline> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("axum-echo")
            .build()?;
        std::thread::Builder::new().name("axum-echo".into()).spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(echo);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(e) = axum::serve(listener, app).await {
                            eprintln!("axum echo baseline stopped: {e}");
                        }
                    }
                    Err(e) => eprintln!("axum echo baseline cannot listen: {e}"),
                }
            });
        })?;
        Ok(Baseline { addr })
    }
}

async fn echo(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")], body)
}

// ---------------------------------------------------------------- keyward dev

/// A `keyward dev` started on a temporary data dir.
struct Service {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    child: Child,
    url: String,
    signer: Signer,
    operator: Signer,
    proxy_pid: u32,
    enclave_pid: u32,
}

fn random_id(n: usize, alphabet: &[u8]) -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

impl Service {
    async fn spawn(args: &Args) -> anyhow::Result<Service> {
        let dir = tempfile::Builder::new().prefix("keyward-load-").tempdir()?;
        let data_dir = dir.path().join("data");
        let signer = |region: &str| Signer {
            access_key_id: format!("AKIA{}", random_id(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            secret: random_id(40, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
            region: region.to_owned(),
        };
        let (tenant, operator) = (signer(&args.region), signer(&args.region));
        let (child, url, enclave_pid, _) = start_dev(args, &data_dir, &tenant, &operator)?;
        Ok(Service {
            _dir: dir,
            data_dir,
            proxy_pid: child.id(),
            child,
            url,
            signer: tenant,
            operator,
            enclave_pid,
        })
    }

    fn mock_attestation_dir(&self) -> PathBuf {
        self.data_dir.join("mock-attestation")
    }

    async fn restart(&mut self, args: &Args) -> anyhow::Result<Duration> {
        terminate(&mut self.child);
        let (child, url, enclave_pid, elapsed) = start_dev(args, &self.data_dir, &self.signer, &self.operator)?;
        self.proxy_pid = child.id();
        self.child = child;
        self.url = url;
        self.enclave_pid = enclave_pid;
        Ok(elapsed)
    }

    fn stop(mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Starts `keyward dev` and waits for its ready line: (child, url, enclave
/// pid, time from start to ready).
fn start_dev(
    args: &Args,
    data_dir: &Path,
    tenant: &Signer,
    operator: &Signer,
) -> anyhow::Result<(Child, String, u32, Duration)> {
    let exe = match &args.keyward_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the current executable")?
            .join("keyward"),
    };
    let stderr = std::fs::File::create(
        data_dir
            .parent()
            .context("data dir without parent")?
            .join("keyward.stderr.log"),
    )?;
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args(["dev", "--listen", "127.0.0.1:0", "--tenant-rate-limit", "4000000000"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--region")
        .arg(&args.region)
        .env("KEYWARD_DEV_ACCESS_KEY_ID", &tenant.access_key_id)
        .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &tenant.secret)
        .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
        .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut enclave_pid = 0;
    let url = loop {
        let Some(line) = lines.next() else {
            bail!("keyward dev exited before it was ready (see its stderr log)");
        };
        let line = line?;
        if let Some(rest) = line.split(ENCLAVE_MARKER).nth(1) {
            enclave_pid = rest.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.split(READY_MARKER).nth(1) {
            break rest.trim().trim_end_matches('/').to_owned();
        }
    };
    let elapsed = started.elapsed();
    // Keep draining its standard output.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, url, enclave_pid, elapsed))
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    rss_kib(pid, "VmHWM:")
}

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat`'s CPU times: 100 on
/// every architecture Linux exposes it to user space with (`sysconf` would
/// need `unsafe`).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of every thread `pid` has run, in clock ticks
/// (`/proc/<pid>/stat` fields 14 and 15, counted after the parenthesised
/// command name, which may itself contain spaces).
fn cpu_ticks(pid: u32) -> Option<u64> {
    cpu_ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

// ---------------------------------------------------------------- output

struct Row {
    op: Op,
    concurrency: usize,
    round: usize,
    what: &'static str,
    result: RunResult,
    ratio: Option<f64>,
}

fn header() -> String {
    format!(
        "{:<18} {:>5} {:<10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}  cpu µs/request",
        "operation", "conns", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "vs echo"
    )
}

fn format_row(row: &Row) -> String {
    let r = &row.result;
    let cpu: Vec<String> = r
        .cpu_per_request
        .iter()
        .map(|(name, us)| format!("{name} {us:.0}"))
        .collect();
    format!(
        "{:<18} {:>5} {:<10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>9}  {}",
        row.op.name(),
        row.concurrency,
        row.what,
        r.throughput,
        r.percentile_ms(50.0),
        r.percentile_ms(90.0),
        r.percentile_ms(99.0),
        r.percentile_ms(100.0),
        r.errors,
        row.ratio
            .map(|x| format!("{:.1} %", x * 100.0))
            .unwrap_or_else(|| "-".into()),
        cpu.join(", "),
    )
}

fn print_row(row: &Row) {
    println!("{}", format_row(row));
}

fn print_table(rows: &[Row]) {
    println!("{}", header());
    for row in rows {
        println!("{}", format_row(row));
        if let Some(e) = &row.result.first_error {
            println!("    first error: {}", truncate(e, 300));
        }
    }
    // decrypt-policy / decrypt, per round and concurrency: throughput, and
    // CPU time per request of every measured process (client included: on
    // a machine the client shares, that ratio is what throughput tends to).
    let concurrencies: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.concurrency).collect();
    for &c in &concurrencies {
        let (mut throughput, mut cpu) = (Vec::new(), Vec::new());
        for round in 0..=rows.iter().map(|r| r.round).max().unwrap_or(0) {
            let find = |op: Op| {
                rows.iter()
                    .find(|r| r.what == "keyward" && r.op == op && r.concurrency == c && r.round == round)
            };
            let (Some(policy), Some(plain)) = (find(Op::DecryptPolicy), find(Op::Decrypt)) else {
                continue;
            };
            throughput.push(policy.result.throughput / plain.result.throughput);
            let total = |r: &Row| r.result.cpu_per_request.iter().map(|(_, us)| us).sum::<f64>();
            if total(policy) > 0.0 {
                cpu.push(total(plain) / total(policy));
            }
        }
        let line = |what: &str, ratios: Vec<f64>| {
            let each: Vec<String> = ratios.iter().map(|r| format!("{:.1}", r * 100.0)).collect();
            let Some(median) = median(ratios) else {
                return;
            };
            if each.len() == 1 {
                println!(
                    "decrypt-policy / decrypt at {c} connections, {what}: {:.1} %",
                    median * 100.0
                );
            } else {
                println!(
                    "decrypt-policy / decrypt at {c} connections, {what}: median {:.1} % (rounds: {} %)",
                    median * 100.0,
                    each.join(", ")
                );
            }
        };
        line("throughput", throughput);
        line("CPU per request (inverse)", cpu);
    }
}

/// The median (the mean of the middle two for an even count); `None` for none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_the_command_name() {
        // A command name with spaces and a ')' of its own; utime 1200, stime 34.
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 1200 34 0 0 20 0 9 0 55 0 0";
        assert_eq!(cpu_ticks_of(stat), Some(1234));
        assert_eq!(cpu_ticks_of("4242 (truncated) S 1 2"), None);
        assert_eq!(cpu_ticks_of("no command name at all"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![0.9]), Some(0.9));
        assert_eq!(median(vec![1.2, 0.8, 1.0]), Some(1.0));
        assert_eq!(median(vec![1.0, 0.5, 0.9, 0.7]), Some(0.8));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        // The count is whole ticks: burn CPU until one is counted (a
        // process that never ran would read 0 forever).
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_ticks(std::process::id()).is_none_or(|t| t == 0) {
            assert!(Instant::now() < give_up, "no CPU time counted after 20 s of work");
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert_eq!(cpu_ticks(u32::MAX), None, "no such process");
    }
}
