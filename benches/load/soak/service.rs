//! The service under soak: a `keyward dev` (the proxy, which owns the store,
//! plus the enclave child it supervises and restarts when it dies, `src/dev.rs`)
//! on a temporary data dir, and the two disruptions: [`Target::restart_enclave`]
//! (SIGKILL the enclave, wait for `keyward dev` to start the next one, wait
//! until it answers) and [`Target::restart_store`] (the embedded store:
//! SIGKILL the proxy and its enclave, start `keyward dev` again on the same
//! data dir; or run `--store-restart-command`).
//!
//! The load's connections find the current endpoint in [`Target::endpoint`]'s
//! shared slot: a restarted proxy listens on a new port.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;

use crate::client::{Endpoint, Prepared, Signer, connect, send};
use crate::service::{Launch, endpoint_of, random_signer, start_dev};
use crate::soak::args::SoakArgs;
use crate::stats::peak_rss_kib;

/// How long a restarted enclave or proxy may take to answer again (debug
/// builds on a loaded 2-core machine included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// The endpoint the load uses now (replaced when the proxy restarts).
pub(crate) type EndpointSlot = Arc<RwLock<Endpoint>>;

pub(crate) fn current(slot: &EndpointSlot) -> Endpoint {
    slot.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// What one disruption did.
pub(crate) struct Disruption {
    pub(crate) what: &'static str,
    /// Since the start of the soak, when it began.
    pub(crate) at: Duration,
    /// From the kill (or the command's start) to the first answered request.
    pub(crate) downtime: Duration,
    /// The peak RSS (VmHWM) of the enclave process that was killed, KiB.
    pub(crate) enclave_peak_kib: Option<u64>,
}

/// A `keyward dev` on a temporary data dir.
pub(crate) struct Target {
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    launch: Launch,
    child: Child,
    enclave_pid: Arc<AtomicU32>,
    endpoint: EndpointSlot,
    store_restart_command: Option<String>,
    /// The dev tenant's credential (KeyAdmin + KeyUser).
    pub(crate) dev: Signer,
    /// The operator's credential (creates the other tenants).
    pub(crate) operator: Signer,
}

impl Target {
    pub(crate) async fn spawn(args: &SoakArgs) -> anyhow::Result<Target> {
        let dir = tempfile::Builder::new().prefix("keyward-soak-").tempdir()?;
        let data_dir = dir.path().join("data");
        let mut launch = Launch::new(args.keyward_bin.as_deref(), &args.region)?;
        if let Some(store) = &args.store {
            launch.extra.extend(["--store".to_owned(), store.clone()]);
        }
        if let Some(mib) = args.memory_budget {
            launch.extra.push(format!("--memory-budget={mib}"));
        }
        let (dev, operator) = (random_signer(&args.region), random_signer(&args.region));
        let started = {
            let (launch, data_dir, dev, operator) = (launch.clone(), data_dir.clone(), dev.clone(), operator.clone());
            tokio::task::spawn_blocking(move || start_dev(&launch, &data_dir, &dev, &operator)).await??
        };
        let endpoint = endpoint_of(&started.url, &data_dir, false)?;
        Ok(Target {
            dir: Some(dir),
            data_dir,
            launch,
            child: started.child,
            enclave_pid: started.enclave_pid,
            endpoint: Arc::new(RwLock::new(endpoint)),
            store_restart_command: args.store_restart_command.clone(),
            dev,
            operator,
        })
    }

    pub(crate) fn endpoint(&self) -> EndpointSlot {
        Arc::clone(&self.endpoint)
    }

    pub(crate) fn proxy_pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn enclave_pid(&self) -> u32 {
        self.enclave_pid.load(Ordering::Relaxed)
    }

    pub(crate) fn mock_attestation_dir(&self) -> PathBuf {
        self.data_dir.join("mock-attestation")
    }

    /// Kills the enclave process with SIGKILL, waits until `keyward dev`'s
    /// supervisor (`src/dev.rs`, `supervise`) has started the next one, and
    /// until a request is answered again.
    pub(crate) async fn restart_enclave(&self, soak_started: Instant) -> anyhow::Result<Disruption> {
        let old = self.enclave_pid();
        let enclave_peak_kib = peak_rss_kib(old);
        let killed = Instant::now();
        kill(old)?;
        let deadline = killed + READY_TIMEOUT;
        while matches!(self.enclave_pid(), 0) || self.enclave_pid() == old {
            if Instant::now() > deadline {
                bail!("keyward dev did not start a new enclave within {READY_TIMEOUT:?} of the SIGKILL of {old}");
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        // A restarted enclave starts Sealed; `keyward dev`'s supervisor
        // unseals it with the dev custodian's share (`<data-dir>/dev-custodian/`,
        // `keyward_sdk::custody::unseal_with_share`): readiness covers that.
        self.wait_ready(deadline).await?;
        Ok(Disruption {
            what: "enclave SIGKILL",
            at: killed.duration_since(soak_started),
            downtime: killed.elapsed(),
            enclave_peak_kib,
        })
    }

    /// Restarts the store: `--store-restart-command` if given, else (the
    /// embedded store, owned by the proxy) SIGKILLs `keyward dev` and its
    /// enclave and starts it again on the same data dir.
    pub(crate) async fn restart_store(&mut self, soak_started: Instant) -> anyhow::Result<Disruption> {
        let began = Instant::now();
        let deadline = began + READY_TIMEOUT;
        if let Some(command) = &self.store_restart_command {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .status()
                .await
                .with_context(|| format!("running {command:?}"))?;
            if !status.success() {
                bail!("the store restart command {command:?} failed: {status}");
            }
            self.wait_ready(deadline).await?;
            return Ok(Disruption {
                what: "store restart (command)",
                at: began.duration_since(soak_started),
                downtime: began.elapsed(),
                enclave_peak_kib: None,
            });
        }
        let enclave_peak_kib = self.restart_proxy().await?;
        self.wait_ready(deadline).await?;
        Ok(Disruption {
            what: "proxy+store SIGKILL",
            at: began.duration_since(soak_started),
            downtime: began.elapsed(),
            enclave_peak_kib,
        })
    }

    /// SIGKILLs the proxy and its enclave, waits until both are gone and
    /// starts `keyward dev` again; returns the old enclave's peak RSS.
    async fn restart_proxy(&mut self) -> anyhow::Result<Option<u64>> {
        let enclave = self.enclave_pid();
        let enclave_peak_kib = peak_rss_kib(enclave);
        kill(self.child.id())?;
        let _ = self.child.wait();
        // It would exit by itself (its standard input closed); not waiting
        // for that keeps two enclaves from ever sharing the data dir.
        let _ = kill(enclave);
        let deadline = Instant::now() + READY_TIMEOUT;
        while alive(enclave) {
            if Instant::now() > deadline {
                bail!("the enclave {enclave} outlived its SIGKILL by {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        let started = {
            let (launch, data_dir, dev, operator) = (
                self.launch.clone(),
                self.data_dir.clone(),
                self.dev.clone(),
                self.operator.clone(),
            );
            tokio::task::spawn_blocking(move || start_dev(&launch, &data_dir, &dev, &operator)).await??
        };
        let endpoint = endpoint_of(&started.url, &self.data_dir, false)?;
        self.child = started.child;
        self.enclave_pid = started.enclave_pid;
        *self.endpoint.write().unwrap_or_else(PoisonError::into_inner) = endpoint;
        Ok(enclave_peak_kib)
    }

    /// Polls until the dev tenant's `ListKeys` is answered 200.
    async fn wait_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        let mut last = String::new();
        while Instant::now() < deadline {
            let endpoint = current(&self.endpoint);
            let prepared = Prepared {
                endpoint: endpoint.clone(),
                target: "TrentService.ListKeys",
                body: Bytes::from_static(br#"{"Limit":1}"#),
            };
            let attempt = async {
                let mut conn = connect(&endpoint).await?;
                send(&mut conn, &prepared, &self.dev).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok((200, _))) => return Ok(()),
                Ok(Ok((status, body))) => last = format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
                Ok(Err(e)) => last = format!("{e:#}"),
                Err(_) => last = "no answer within 5 s".into(),
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        bail!("the service did not answer within {READY_TIMEOUT:?}: {last}")
    }

    /// Stops the service (SIGTERM); keeps its directory (the data dir and
    /// `keyward.stderr.log`) with `keep`.
    pub(crate) fn stop(mut self, keep: bool) -> Option<PathBuf> {
        crate::service::terminate(&mut self.child);
        let dir = self.dir.take()?;
        keep.then(|| dir.keep())
    }
}

fn kill(pid: u32) -> anyhow::Result<()> {
    if pid == 0 {
        bail!("no process to kill (pid 0)");
    }
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -KILL {pid} failed: {status}");
    }
    Ok(())
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
