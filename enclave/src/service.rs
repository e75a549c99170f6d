//! The enclave service: state shared by every connection, and the entry point
//! that turns one forwarded request into one response.

use std::sync::Arc;

use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::audit::chain::ChainWriter;
use crate::audit::record::AuditEntry;
use crate::auth::ratelimit::{RateLimit, RateLimiter};

use crate::auth::credentials::CredentialCache;
use crate::bootstrap::{self, Keyring};
use crate::clock::Clock;
use crate::config::EnclaveConfig;
use crate::nsm::Nsm;
use crate::store::StoreTransport;

pub struct Enclave {
    pub(crate) config: EnclaveConfig,
    pub(crate) nsm: Box<dyn Nsm>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) credentials: CredentialCache,
    pub(crate) locks: crate::locks::RecordLocks,
    keyring: OnceCell<Keyring>,
    /// Live host connections, for work no request carries (the sweep).
    links: std::sync::Mutex<Vec<std::sync::Weak<dyn StoreTransport>>>,
    sweeper_started: std::sync::atomic::AtomicBool,
    pub(crate) rate_limiter: RateLimiter,
    /// Requests that fail authentication: limits, counts, samples.
    pub(crate) auth_failures: crate::auth::failures::AuthFailures,
    started: std::time::Instant,
    audit_tx: mpsc::Sender<AuditJob>,
    audit_rx: std::sync::Mutex<Option<mpsc::Receiver<AuditJob>>>,
    /// Verifies recipients' attestation documents (the pinned root of this mode).
    verifier: Option<crate::attestation::verify::Verifier>,
    /// The wasmtime sandbox for policy modules, created on first use.
    policy_engine: std::sync::OnceLock<Option<Arc<crate::policy::sandbox::PolicyEngine>>>,
    pub(crate) policy_modules: crate::policy::modules::ModuleCache,
    /// The TLS identity and server, loaded once after boot.
    tls: OnceCell<Arc<crate::tls::LiveTls>>,
    /// Request metrics, exported to the host aggregated (`Frame::Status`).
    pub metrics: crate::metrics::RequestMetrics,
    /// Round-robin position among the live host connections.
    next_link: std::sync::atomic::AtomicUsize,
    /// Where compilations and heavy decisions run, fairly between tenants.
    pub(crate) policy_scheduler: crate::policy::scheduler::Scheduler,
    /// Sealed records as the store last confirmed them (`store/cache.rs`).
    pub(crate) record_cache: crate::store::RecordCache,
}

/// One record waiting to be appended, and who waits for it.
type AuditJob = (AuditEntry, oneshot::Sender<Result<(), AuditFailure>>);

/// Why an audit record was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditFailure {
    /// The host store contradicted the authenticated index (a hidden or
    /// older chain head, a rolled-back index root): appends are refused
    /// until it serves the state the enclave knows, never restarted.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Records appended per store batch at most.
const AUDIT_BATCH: usize = 512;
/// How long a request waits for its audit record to become durable.
const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the sweep looks for keys whose deletion or rotation is due.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Enclave {
    pub fn new(config: EnclaveConfig, nsm: Box<dyn Nsm>, clock: Arc<dyn Clock>) -> Self {
        let rate = f64::from(config.tenant_rate_limit);
        let rate_limiter = RateLimiter::new(RateLimit {
            per_second: rate,
            burst: 2.0 * rate,
        });
        let (audit_tx, audit_rx) = mpsc::channel(4 * AUDIT_BATCH);
        let policy_modules = crate::policy::modules::ModuleCache::new(config.budget.cache);
        // Never more sandbox jobs at once than the budget's pool has slots.
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let slots = usize::try_from(config.budget.sandbox_slots).unwrap_or(usize::MAX);
        let policy_scheduler = crate::policy::scheduler::Scheduler::new(
            crate::policy::scheduler::SchedulerLimits::for_cpus(cpus.min(slots)),
        );
        Enclave {
            config,
            nsm,
            clock,
            credentials: CredentialCache::default(),
            locks: Default::default(),
            keyring: OnceCell::new(),
            links: Default::default(),
            sweeper_started: Default::default(),
            rate_limiter,
            auth_failures: Default::default(),
            started: std::time::Instant::now(),
            audit_tx,
            audit_rx: std::sync::Mutex::new(Some(audit_rx)),
            verifier: None,
            policy_engine: std::sync::OnceLock::new(),
            policy_modules,
            tls: OnceCell::new(),
            metrics: Default::default(),
            next_link: Default::default(),
            policy_scheduler,
            record_cache: Default::default(),
        }
    }

    /// The keyring, booting it through `transport` on first use. A failed boot
    /// is retried by the next caller.
    pub async fn keyring(&self, transport: &dyn StoreTransport) -> Result<&Keyring, bootstrap::BootError> {
        self.keyring
            .get_or_try_init(|| async {
                let now = self.clock.now().unix_timestamp();
                let keyring = bootstrap::boot(
                    self.config.mode,
                    &*self.nsm,
                    transport,
                    self.config.dev_credential.as_ref(),
                    self.config.dev_operator.as_ref(),
                    now,
                )
                .await;
                match &keyring {
                    Ok(_) => tracing::info!("enclave booted"),
                    Err(e) => tracing::error!(error = %e, "enclave boot failed"),
                }
                keyring
            })
            .await
    }

    /// Registers a live host connection and, on the first one, starts the
    /// sweep: destruction and rotation of keys nobody touches happen on time.
    pub fn attach(self: &Arc<Self>, link: std::sync::Weak<dyn StoreTransport>) {
        {
            let mut links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            links.retain(|l| l.strong_count() > 0);
            links.push(link);
        }
        if !self.sweeper_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let enclave = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    enclave.sweep_once().await;
                    // A periodic timer, not synchronisation.
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                }
            });
        }
        let receiver = self
            .audit_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(Arc::clone(self).run_auditor(receiver));
        }
    }

    /// Seconds since this enclave started (monotonic).
    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Requests refused before or at authentication since start, in aggregate.
    pub fn auth_failure_counts(&self) -> crate::auth::failures::FailureCounts {
        self.auth_failures.counts()
    }

    /// Appends `entry` to its chain; `Ok` once the record is durable.
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), AuditFailure> {
        let (done, wait) = oneshot::channel();
        self.audit_tx
            .send((entry, done))
            .await
            .map_err(|_| AuditFailure::Failed("the audit appender stopped".into()))?;
        match tokio::time::timeout(AUDIT_TIMEOUT, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditFailure::Failed("the audit appender dropped the record".into())),
            Err(_) => Err(AuditFailure::Failed("the audit record was not written in time".into())),
        }
    }

    /// The single appender: group-commits queued records, one store batch at a time.
    async fn run_auditor(self: Arc<Self>, mut receiver: mpsc::Receiver<AuditJob>) {
        let mut writer = ChainWriter::default();
        while let Some(first) = receiver.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < AUDIT_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (entries, waiters): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            let result = self.write_audit(&mut writer, entries).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn write_audit(&self, writer: &mut ChainWriter, entries: Vec<AuditEntry>) -> Result<(), AuditFailure> {
        let link = self
            .live_link()
            .ok_or_else(|| AuditFailure::Failed("no host connection for the audit log".into()))?;
        let keyring = self
            .keyring(&*link)
            .await
            .map_err(|e| AuditFailure::Failed(e.to_string()))?;
        let records = keyring.records(&*link);
        writer.append(&records, entries).await.map_err(|e| match e {
            crate::store::StoreError::Freshness { .. } => AuditFailure::Refused(e.to_string()),
            e => AuditFailure::Failed(e.to_string()),
        })
    }

    fn live_link(&self) -> Option<Arc<dyn StoreTransport>> {
        let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        links.iter().rev().find_map(std::sync::Weak::upgrade)
    }

    /// A live host connection for the store calls of a request that came in
    /// on a client stream (round robin over the connections).
    pub fn store_link(&self) -> Option<Arc<dyn StoreTransport>> {
        let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let live: Vec<Arc<dyn StoreTransport>> = links.iter().filter_map(std::sync::Weak::upgrade).collect();
        if live.is_empty() {
            return None;
        }
        let index = self.next_link.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % live.len();
        live.into_iter().nth(index)
    }

    /// The TLS state, loading (or creating) the identity through `records`
    /// on first use, for the configured names, with certificates dated by
    /// the real clock (not a mock clock offset). A failed load is retried
    /// by the next caller.
    pub async fn tls(
        &self,
        records: &crate::store::Records<'_>,
        refuse: crate::tls::Refuser,
    ) -> Result<&Arc<crate::tls::LiveTls>, crate::tls::TlsError> {
        self.tls
            .get_or_try_init(|| async {
                let live = crate::tls::LiveTls::load(
                    records,
                    &self.config.tls_names,
                    time::OffsetDateTime::now_utc(),
                    crate::tls::Limits {
                        body_budget: Some(crate::tls::serve::body_budget(self.config.budget.body_bytes_in_flight)),
                        ..crate::tls::Limits::default()
                    },
                    refuse,
                )
                .await;
                match &live {
                    Ok(live) => tracing::info!(
                        spki_sha256 = %hex::encode(live.spki_sha256()),
                        "TLS identity loaded"
                    ),
                    Err(e) => tracing::error!(error = %e, "the TLS identity could not be loaded"),
                }
                live.map(Arc::new)
            })
            .await
    }

    /// The TLS state if it is loaded.
    pub fn tls_loaded(&self) -> Option<&Arc<crate::tls::LiveTls>> {
        self.tls.get()
    }

    /// What the host may know: the CA certificate, the serving key's SPKI
    /// hash and the aggregated request metrics.
    pub fn status(&self) -> keyward_wire::EnclaveStatus {
        let tls = self.tls.get();
        keyward_wire::EnclaveStatus {
            ca_certificate_pem: tls.map(|t| t.ca_certificate_pem().to_owned()).unwrap_or_default(),
            tls_spki_sha256: tls.map(|t| t.spki_sha256().to_vec()).unwrap_or_default(),
            metrics: {
                let mut metrics = self.metrics.snapshot();
                if let Some(keyring) = self.keyring.get() {
                    metrics.freshness_violations = keyring.index.violation_counts();
                }
                metrics
            },
        }
    }

    async fn sweep_once(&self) {
        let Some(link) = self.live_link() else { return };
        let Ok(keyring) = self.keyring(&*link).await else {
            return;
        };
        let records = keyring.records(&*link);
        let now = self.clock.now().unix_timestamp();
        let mut events = Vec::new();
        if let Err(e) = crate::keystore::due::sweep(&records, &keyring.hierarchy, &self.locks, now, &mut events).await {
            tracing::warn!(error = %e, "sweep failed; retrying at the next interval");
        }
        for event in events {
            if let Err(e) = self.audit(event).await {
                tracing::error!(error = %e, "audit of an enclave event failed");
            }
        }
    }

    /// An invalidation hint from the host: `namespace`/`key` was written at
    /// `version` (by any node sharing the store). Untrusted; it only drops
    /// cached entries early (the bound is `store::cache::REVALIDATE_AFTER`).
    pub fn invalidate(&self, namespace: &str, key: &str, version: u64) {
        self.record_cache.hint(namespace, key, version);
        if namespace == crate::store::index::NAMESPACE
            && let Some((scope, "root")) = key.split_once('/')
            && let Some(keyring) = self.keyring.get()
        {
            keyring.index.hint(scope, version);
        }
    }

    /// A hint that the host may have missed writes: drops every cached
    /// record and makes every index root be read again before its next use.
    pub fn invalidate_all(&self) {
        self.record_cache.clear();
        if let Some(keyring) = self.keyring.get() {
            keyring.index.expire(None);
        }
    }

    /// The enclave's freshness epoch: the epoch of the global index root it
    /// last verified (0 before boot). Monotonic while the enclave runs; what
    /// custody and peers are to compare across restarts (issue 19 item 3).
    pub fn freshness_epoch(&self) -> u64 {
        self.keyring.get().map_or(0, |k| k.index.epoch())
    }

    /// Trusts `verifier`'s root for recipients' attestation documents.
    pub fn with_verifier(mut self, verifier: crate::attestation::verify::Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The policy sandbox (`None` if wasmtime could not start; policies then fail closed).
    pub fn policy_engine(&self) -> Option<&Arc<crate::policy::sandbox::PolicyEngine>> {
        self.policy_engine
            .get_or_init(
                || match crate::policy::sandbox::PolicyEngine::with_slots(self.config.budget.sandbox_slots) {
                    Ok(engine) => Some(Arc::new(engine)),
                    Err(e) => {
                        tracing::error!(error = %e, "the policy engine could not start");
                        None
                    }
                },
            )
            .as_ref()
    }

    /// Policy modules compiled since start (0 before the sandbox's first use).
    pub fn policy_compilations(&self) -> u64 {
        self.policy_engine
            .get()
            .and_then(Option::as_ref)
            .map_or(0, |engine| engine.compilations())
    }

    /// Compiled policy modules cached for `tenant` now.
    pub fn cached_policy_modules(&self, tenant: &str) -> usize {
        self.policy_modules.cached_for(tenant)
    }

    pub fn verifier(&self) -> Option<&crate::attestation::verify::Verifier> {
        self.verifier.as_ref()
    }

    pub fn config(&self) -> &EnclaveConfig {
        &self.config
    }
}
