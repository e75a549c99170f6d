//! `keyward dev`: a mock-mode enclave child process plus the host proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use keyward_enclave::auth::credentials::generate_access_key;
use keyward_enclave::config::{
    ENV_DEV_ACCESS_KEY_ID, ENV_DEV_OPERATOR_ACCESS_KEY_ID, ENV_DEV_OPERATOR_SECRET_ACCESS_KEY,
    ENV_DEV_SECRET_ACCESS_KEY, valid_access_key_id, valid_tenant_id,
};
use keyward_proxy::{EnclaveEndpoint, ForwardConfig, Proxy, ProxyConfig, StoreLocation};

use crate::dev_cluster::{Plan, Registry};
use crate::dev_custody::{Custody, DevCustodian, Outcome};
use tokio::sync::watch;

/// Options of `keyward dev`, validated.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where clients connect (HTTPS, TLS ending in the enclave).
    pub listen: SocketAddr,
    /// The proxy's admin listener (`/healthz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// `--tls-name` values (empty: `localhost` and `127.0.0.1`).
    pub tls_names: Vec<String>,
    pub data_dir: PathBuf,
    /// The sealed-record store; `None` for `<data_dir>/store`.
    pub store: Option<StoreLocation>,
    pub region: String,
    pub tenant: String,
    /// Seconds the enclave's clock is shifted by (0 for the real time).
    pub mock_clock_offset: i64,
    /// Requests per second each tenant may make.
    pub tenant_rate_limit: u32,
    /// The enclave's `--memory-budget` in MiB (`None`: its default).
    pub memory_budget: Option<u64>,
    /// PCR values of the mock NSM, `INDEX=HEX`.
    pub mock_pcrs: Vec<String>,
    /// The dev custodian's directory (`None`: `<data_dir>/dev-custodian`;
    /// [`crate::dev_custody`]).
    pub dev_custodian_dir: Option<PathBuf>,
    /// `--custody kms …`: the root is kept by a key service instead of the
    /// dev custodian ([`crate::dev_kms`]).
    pub custody: keyward_enclave::config::CustodyArgs,
    /// `--accept-store-rollback`: unseal even if the store is older than
    /// the dev custodian's checkpoint (audited by the enclave).
    pub accept_store_rollback: bool,
}

/// The bootstrap tenant's credential and where it came from.
struct DevCredential {
    access_key_id: String,
    secret_access_key: zeroize::Zeroizing<String>,
    generated: bool,
}

/// How long the launcher waits for a freshly started enclave to boot.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping enclave gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    if !valid_tenant_id(&options.tenant) {
        anyhow::bail!("--tenant must be 12 digits, like an AWS account id");
    }
    create_private_dir(&options.data_dir)?;
    let data_dir = options.data_dir.canonicalize().context("resolving --data-dir")?;
    let store = options
        .store
        .clone()
        .unwrap_or_else(|| StoreLocation::Embedded(data_dir.join("store")));
    // Before the enclave starts: a data dir from the sled version is refused
    // with the way to start fresh, not half-started.
    if let StoreLocation::Embedded(dir) = &store {
        keyward_proxy::store::legacy::refuse_sled(dir)?;
    }
    let credential = dev_credential(ENV_DEV_ACCESS_KEY_ID, ENV_DEV_SECRET_ACCESS_KEY)?;
    let operator = dev_credential(ENV_DEV_OPERATOR_ACCESS_KEY_ID, ENV_DEV_OPERATOR_SECRET_ACCESS_KEY)?;
    let socket = data_dir.join("enclave.sock");
    let exe = std::env::current_exe().context("locating the keyward executable")?;
    // Checked here (flags, CA file, AWS_* credential) so a bad flag stops
    // the launcher instead of a crash-looping enclave.
    let kms = options
        .custody
        .clone()
        .validate(&|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let custodian = match &kms {
        Some(_) if options.dev_custodian_dir.is_some() => {
            anyhow::bail!("--dev-custodian-dir is for the dev custodian; --custody kms keeps the root elsewhere")
        }
        Some(kms) => Custody::KeyService(crate::dev_kms::KeyServiceCustody::new(kms)),
        None => Custody::Dev(std::sync::Arc::new(DevCustodian::new(
            options.dev_custodian_dir.clone(),
            &data_dir,
            &options.mock_pcrs,
            options.mock_clock_offset,
            options.accept_store_rollback,
        )?)),
    };
    let mut outbound = crate::dev_kms::outbound_targets(kms.as_ref())?;
    drop(kms);
    // The cluster's shared records (`dev_cluster`): one mock attestation
    // root for every node, and where a node without a share joins from.
    let registry = Registry::open(&store).await?;
    registry.share_mock_root(&data_dir).await?;
    // A fixed --listen port names this node's own (stale) record: not a peer.
    let own = (options.listen.port() != 0).then(|| local_endpoint(options.listen, &options));
    let plan = match &custodian {
        Custody::Dev(dev) => registry.plan(dev.has_share(), dev.dir(), own.as_deref()).await?,
        // The enclave gets its root from the key service by itself.
        Custody::KeyService(_) => Plan::Custodian,
    };
    let mut enclave_args = enclave_args(&socket, &data_dir, &options);
    let (join_args, join_targets) = crate::dev_cluster::join_flags(&data_dir, &plan)?;
    enclave_args.extend(join_args);
    outbound.extend(join_targets);

    let (stop_tx, stop_rx) = watch::channel(false);
    // Counts enclave process starts: each new one starts sealed.
    let (starts_tx, mut starts) = watch::channel(0u64);
    let supervisor = tokio::spawn(supervise(
        exe,
        enclave_args,
        [
            (ENV_DEV_ACCESS_KEY_ID, credential.access_key_id.clone()),
            (ENV_DEV_SECRET_ACCESS_KEY, credential.secret_access_key.to_string()),
            (ENV_DEV_OPERATOR_ACCESS_KEY_ID, operator.access_key_id.clone()),
            (
                ENV_DEV_OPERATOR_SECRET_ACCESS_KEY,
                operator.secret_access_key.to_string(),
            ),
        ],
        stop_rx.clone(),
        starts_tx,
    ));

    let streams = keyward_enclave::config::default_tls_socket(&socket);
    let proxy = Proxy::bind(ProxyConfig {
        listen: options.listen,
        admin_listen: options.admin_listen,
        store,
        enclave: EnclaveEndpoint::Unix(socket),
        connections: 4,
        forward: ForwardConfig {
            endpoint: EnclaveEndpoint::Unix(streams),
            max_connections: 4096,
            idle_timeout: Duration::from_secs(120),
        },
        outbound,
    })
    .await?;
    let address = proxy.local_addr()?;
    let admin = proxy.admin_addr()?;
    let link = proxy.link();
    let mut shutdown = stop_rx.clone();
    let server = tokio::spawn(proxy.serve(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }));

    let ready = async {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if link.ping(Duration::from_secs(2)).await {
                return true;
            }
        }
        false
    };
    tokio::select! {
        ok = ready => if !ok {
            let _ = stop_tx.send(true);
            anyhow::bail!("the enclave did not become ready within {READY_TIMEOUT:?}");
        },
        () = keyward_proxy::stop_signal() => {
            let _ = stop_tx.send(true);
            let _ = supervisor.await;
            return Ok(());
        }
    }
    // The enclave starts sealed: genesis (first start) or unseal, through
    // the dev custodian; or, on a store with a deployment and no share
    // here, it joins the cluster from a Ready peer by itself (`--join-peer`).
    let endpoint = local_endpoint(address, &options);
    starts.borrow_and_update();
    let ceremony = async {
        let ready = match &plan {
            Plan::Custodian => custodian.make_ready(&link, &endpoint, READY_TIMEOUT).await?,
            Plan::Join(peers) => {
                println!(
                    "Keyward is sealed at {} (admin http://{admin}): this node has no dev custodian share; it joins \
                     the cluster from a Ready peer ({}) and stays sealed until one releases the root",
                    endpoint_url(address, &options),
                    peers.iter().map(|p| p.endpoint.as_str()).collect::<Vec<_>>().join(", ")
                );
                crate::dev_cluster::wait_joined(&link).await
            }
        };
        if let Outcome::StaleStore(_) = &ready.outcome {
            return Ok((ready.outcome, None));
        }
        persistent_status(&link, &endpoint, ready.sealed_ca_pem.as_deref(), READY_TIMEOUT)
            .await
            .map(|status| (ready.outcome, Some(status)))
    };
    let (outcome, status) = tokio::select! {
        result = ceremony => match result {
            Ok(done) => done,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = supervisor.await;
                return Err(e);
            }
        },
        () = keyward_proxy::stop_signal() => {
            let _ = stop_tx.send(true);
            let _ = supervisor.await;
            return Ok(());
        }
    };
    let Some(status) = status else {
        // The store is older than the dev custodian's checkpoint: stay
        // sealed (503, `/healthz` sealed) until stopped.
        if let Outcome::StaleStore(message) = &outcome {
            tracing::error!(reason = %message, "the enclave stays sealed");
            println!("  admin              http://{admin} (/healthz, /metrics)");
            println!(
                "Keyward stays SEALED at {}: {message}\nRestore the latest store, or start with \
                 --accept-store-rollback to accept this older state (audited).",
                endpoint_url(address, &options)
            );
        }
        keyward_proxy::stop_signal().await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        let _ = supervisor.await;
        return Ok(());
    };
    if outcome != Outcome::Joined {
        custodian.log_notice();
    }
    // The enclave CA certificate, what clients trust (`--ca-bundle`).
    let ca_path = write_ca(&data_dir, &status.ca_certificate_pem)?;
    print_banner(address, admin, &ca_path, &status, &options, &credential, &operator);
    println!();
    match &outcome {
        Outcome::Joined => println!(
            "dev cluster: joined the cluster from a Ready peer (cluster join by attestation; no dev custodian here)"
        ),
        Outcome::Genesis => println!("{} (a new deployment was created)", custodian.notice()),
        Outcome::Unsealed | Outcome::AlreadyReady | Outcome::StaleStore(_) => {
            println!("{} (unsealed with it)", custodian.notice())
        }
    }
    // Registered for nodes that join later (a hint; see `dev_cluster`).
    if let Err(e) = registry.register(&endpoint, &status.ca_certificate_pem).await {
        tracing::warn!(error = %format!("{e:#}"), "dev cluster: could not register this node in the store");
    }
    // The dev custodian's checkpoint: at once, then every second (a node
    // that joined, or whose root a key service keeps, has none).
    let recorder = match &custodian {
        Custody::Dev(dev) if outcome != Outcome::Joined => Some(checkpoint_recorder(
            std::sync::Arc::clone(dev),
            &endpoint,
            &status.ca_certificate_pem,
            options.accept_store_rollback && outcome == Outcome::Unsealed,
        )?),
        _ => None,
    };
    println!("Keyward is ready at {}", endpoint_url(address, &options));

    // A crashed enclave is restarted sealed: unseal it again.
    let keeper = {
        let link = std::sync::Arc::clone(&link);
        let endpoint = endpoint.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = starts.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                starts.borrow_and_update();
                if matches!(plan, Plan::Join(_)) {
                    tracing::info!("the restarted enclave joins the cluster from a Ready peer by itself (--join-peer)");
                    continue;
                }
                match custodian.make_ready(&link, &endpoint, READY_TIMEOUT).await {
                    Ok(ready) if matches!(ready.outcome, Outcome::StaleStore(_)) => {
                        tracing::error!(outcome = ?ready.outcome, "the restarted enclave stays sealed")
                    }
                    Ok(_) => tracing::info!("the restarted enclave was Ready again (unsealed by its custody)"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "the restarted enclave stays sealed"),
                }
            }
        })
    };

    keyward_proxy::stop_signal().await;
    tracing::info!("stopping");
    registry.deregister(&endpoint).await;
    // A last checkpoint before the enclave stops: the writes of this run.
    if let Some(recorder) = recorder {
        recorder.stop().await;
    }
    let _ = stop_tx.send(true);
    let served = server.await;
    let _ = supervisor.await;
    keeper.abort();
    match served {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(anyhow::anyhow!("proxy task failed: {e}")),
    }
}

/// How often a running `keyward dev` records the dev custodian's checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The task recording the dev custodian's checkpoint.
struct Recorder {
    task: tokio::task::JoinHandle<()>,
    custodian: std::sync::Arc<DevCustodian>,
    client: keyward_sdk::Client,
}

impl Recorder {
    /// Stops the periodic task and records once more (graceful stop).
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        match tokio::time::timeout(STOP_GRACE, self.custodian.record_checkpoint(&self.client, false)).await {
            Ok(Ok(_)) => tracing::info!("dev custodian: checkpoint recorded before stopping"),
            Ok(Err(e)) => tracing::warn!(error = %e, "dev custodian: no checkpoint recorded before stopping"),
            Err(_) => tracing::warn!("dev custodian: no checkpoint recorded before stopping (timed out)"),
        }
    }
}

/// Records the Ready enclave's signed checkpoint in the dev custodian's
/// directory at once and every [`CHECKPOINT_EVERY`] (issue 19 item 3);
/// `allow_older` for the first record after an accepted rollback.
fn checkpoint_recorder(
    custodian: std::sync::Arc<DevCustodian>,
    endpoint: &str,
    ca_pem: &str,
    allow_older: bool,
) -> anyhow::Result<Recorder> {
    let client = keyward_sdk::Client::unauthenticated(endpoint)
        .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(ca_pem.as_bytes().to_vec())))
        .map(|c| c.with_timeout(Duration::from_secs(10)))
        .map_err(|e| anyhow::anyhow!("a client for {endpoint}: {e}"))?;
    let task = {
        let custodian = std::sync::Arc::clone(&custodian);
        let client = client.clone();
        tokio::spawn(async move {
            let mut allow_older = allow_older;
            let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
            loop {
                ticks.tick().await;
                match custodian.record_checkpoint(&client, allow_older).await {
                    Ok(_) => allow_older = false,
                    Err(e @ keyward_sdk::custody::CustodyError::OlderCheckpoint(_)) => {
                        tracing::error!(error = %e, "dev custodian: the service's store went back")
                    }
                    // Sealed (a restarting enclave) or unreachable: next tick.
                    Err(e) => tracing::debug!(error = %e, "dev custodian: no checkpoint this time"),
                }
            }
        })
    };
    Ok(Recorder {
        task,
        custodian,
        client,
    })
}

/// Writes the enclave CA certificate to `<data-dir>/tls/ca.pem`.
fn write_ca(data_dir: &Path, pem: &str) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("ca.pem");
    // Written whole then renamed: a reader never sees half a certificate.
    let partial = dir.join("ca.pem.partial");
    std::fs::write(&partial, pem).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn enclave_args(socket: &Path, data_dir: &Path, options: &DevOptions) -> Vec<String> {
    [
        "enclave".into(),
        "--mode".into(),
        "mock".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--region".into(),
        options.region.clone(),
        "--dev-tenant".into(),
        options.tenant.clone(),
        "--exit-on-stdin-close".into(),
        format!("--mock-clock-offset={}", options.mock_clock_offset),
        format!("--tenant-rate-limit={}", options.tenant_rate_limit),
        format!("--data-dir={}", data_dir.display()),
    ]
    .into_iter()
    .chain(options.memory_budget.map(|mib| format!("--memory-budget={mib}")))
    .chain(options.mock_pcrs.iter().map(|p| format!("--mock-pcr={p}")))
    .chain(options.tls_names.iter().map(|n| format!("--tls-name={n}")))
    .chain(crate::dev_kms::enclave_args(&options.custody))
    .collect()
}

/// The enclave's status once it is Ready and serves its persistent TLS
/// identity (a sealed record, loaded once the root is there) rather than
/// `sealed_ca_pem`, the in-memory one of the sealed state. A fresh
/// connection makes an enclave that has not loaded it yet do so.
async fn persistent_status(
    link: &keyward_proxy::EnclaveLink,
    endpoint: &str,
    sealed_ca_pem: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<keyward_wire::EnclaveStatus> {
    const TICK: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = link
            .status(Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("the enclave's status: {e}"))?;
        if status.health == "ok"
            && !status.ca_certificate_pem.is_empty()
            && Some(status.ca_certificate_pem.as_str()) != sealed_ca_pem
        {
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("the enclave did not serve its TLS identity within {timeout:?} of becoming ready");
        }
        // A new connection (whatever its handshake's outcome) has the
        // enclave load its identity.
        if let Ok(probe) = keyward_sdk::Client::unauthenticated(endpoint) {
            let _ = probe
                .with_timeout(Duration::from_secs(5))
                .get_unseal_document(b"probe")
                .await;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Runs the enclave child until told to stop, restarting it whenever it
/// dies; `starts` counts the processes started.
async fn supervise(
    exe: PathBuf,
    args: Vec<String>,
    env: [(&'static str, String); 4],
    mut stop: watch::Receiver<bool>,
    starts: watch::Sender<u64>,
) {
    let mut quick_failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut command = tokio::process::Command::new(&exe);
        command
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the enclave process");
                return;
            }
        };
        let started = tokio::time::Instant::now();
        // Standard input stays open while we live: the child exits when it closes.
        let stdin = child.stdin.take();
        println!("enclave process started: pid {}", child.id().unwrap_or(0));
        starts.send_modify(|n| *n += 1);
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        drop(stdin);
        match exited {
            Some(status) => {
                if *stop.borrow() {
                    return;
                }
                tracing::warn!(status = ?status.ok(), "the enclave process exited; restarting it");
                quick_failures = if started.elapsed() < Duration::from_secs(2) {
                    quick_failures + 1
                } else {
                    0
                };
                if quick_failures > 0 {
                    // A crash loop: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(quick_failures.min(20)))).await;
                }
            }
            None => {
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    tracing::warn!("the enclave did not stop in time; killing it");
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}

/// A credential from a pair of environment variables, or a fresh one.
fn dev_credential(id_var: &str, secret_var: &str) -> anyhow::Result<DevCredential> {
    match (std::env::var(id_var).ok(), std::env::var(secret_var).ok()) {
        (Some(access_key_id), Some(secret)) => {
            if !valid_access_key_id(&access_key_id) {
                anyhow::bail!("{id_var} must be 16-128 letters and digits");
            }
            Ok(DevCredential {
                access_key_id,
                secret_access_key: zeroize::Zeroizing::new(secret),
                generated: false,
            })
        }
        (None, None) => {
            let (access_key_id, secret_access_key) = generate_access_key();
            Ok(DevCredential {
                access_key_id,
                secret_access_key,
                generated: true,
            })
        }
        _ => anyhow::bail!("set both {id_var} and {secret_var}, or neither"),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn print_banner(
    address: SocketAddr,
    admin: SocketAddr,
    ca_path: &Path,
    status: &keyward_wire::EnclaveStatus,
    options: &DevOptions,
    tenant: &DevCredential,
    operator: &DevCredential,
) {
    let endpoint = endpoint_url(address, options);
    let shown = |c: &DevCredential, secret_var: &str| {
        if c.generated {
            format!(
                "{} (generated for this run; set {secret_var} to choose)",
                c.secret_access_key.as_str()
            )
        } else {
            format!("(from {secret_var})")
        }
    };
    let secret_for_example = if tenant.generated {
        tenant.secret_access_key.to_string()
    } else {
        format!("\"${ENV_DEV_SECRET_ACCESS_KEY}\"")
    };
    println!();
    println!("Keyward — MOCK MODE, for development only: no enclave isolation, keys are not protected.");
    println!("  endpoint           {endpoint} (TLS ends inside the enclave)");
    println!("  CA certificate     {}", ca_path.display());
    println!("  TLS key SPKI hash  {}", hex::encode(&status.tls_spki_sha256));
    println!("  admin              http://{admin} (/healthz, /metrics)");
    println!("  region             {}", options.region);
    println!("  data dir           {}", options.data_dir.display());
    match &options.store {
        Some(store) => println!("  store              {store}"),
        None => println!("  store              {}", options.data_dir.join("store").display()),
    }
    // What a BYOK customer pins to check the (mock) enclave before importing.
    let pcr0 = options
        .mock_pcrs
        .iter()
        .find_map(|p| p.strip_prefix("0=").map(str::to_owned))
        .or_else(|| {
            keyward_enclave::attestation::mock::default_pcrs()
                .get(&0)
                .map(hex::encode)
        })
        .unwrap_or_default();
    println!(
        "  attestation root   {} (mock NSM)",
        options.data_dir.join("mock-attestation").join("root.crt.pem").display()
    );
    println!("  enclave PCR0       {pcr0}");
    println!("  tenant {} (KeyAdmin + KeyUser)", options.tenant);
    println!("    access key id      {}", tenant.access_key_id);
    println!("    secret access key  {}", shown(tenant, ENV_DEV_SECRET_ACCESS_KEY));
    println!("  operator (tenant administration only; cannot use keys)");
    println!("    access key id      {}", operator.access_key_id);
    println!(
        "    secret access key  {}",
        shown(operator, ENV_DEV_OPERATOR_SECRET_ACCESS_KEY)
    );
    println!();
    println!("Try it:");
    println!(
        "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws kms create-key --endpoint-url {endpoint} --ca-bundle {} --region {}",
        tenant.access_key_id,
        secret_for_example,
        ca_path.display(),
        options.region
    );
    println!();
    println!("The enclave CA certificate ({}):", ca_path.display());
    print!("{}", status.ca_certificate_pem);
}

/// Where this launcher reaches its own endpoint: `https://127.0.0.1:PORT`
/// (or `[::1]`) for an unspecified listen address when the certificate
/// names it (no `--tls-name`, or one of them is that address), else
/// [`endpoint_url`].
fn local_endpoint(address: SocketAddr, options: &DevOptions) -> String {
    if address.ip().is_unspecified() {
        let loopback = if address.is_ipv4() { "127.0.0.1" } else { "::1" };
        if options.tls_names.is_empty() || options.tls_names.iter().any(|n| n == loopback) {
            return match address {
                SocketAddr::V4(_) => format!("https://{loopback}:{}", address.port()),
                SocketAddr::V6(_) => format!("https://[{loopback}]:{}", address.port()),
            };
        }
    }
    endpoint_url(address, options)
}

/// `https://HOST:PORT`: an unspecified listen address is shown as the
/// first `--tls-name` (the certificate does not name `0.0.0.0`).
fn endpoint_url(address: SocketAddr, options: &DevOptions) -> String {
    if address.ip().is_unspecified() {
        let host = options.tls_names.first().map_or("localhost", String::as_str);
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]"),
            Err(_) => host.to_owned(),
        };
        format!("https://{host}:{}", address.port())
    } else {
        format!("https://{address}")
    }
}
