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
use crate::secret::Key256;
use crate::store::StoreTransport;

mod freshness;

pub struct Enclave {
    pub(crate) config: EnclaveConfig,
    pub(crate) nsm: Box<dyn Nsm>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) credentials: CredentialCache,
    pub(crate) locks: crate::locks::RecordLocks,
    /// The keyring: filled once, by the transition to Ready (genesis or
    /// unseal, `bootstrap`); empty while sealed.
    keyring: OnceCell<Keyring>,
    /// The custody state, read from the store on first use (`None` until
    /// then); the lock also serialises genesis and unseal steps.
    custody: tokio::sync::Mutex<Option<bootstrap::Custody>>,
    /// A TLS identity made in memory at start, served while sealed (the
    /// persistent one is a sealed record: it needs the root).
    sealed_tls: OnceCell<Arc<crate::tls::LiveTls>>,
    /// Wakes the sweep when the enclave becomes Ready (its first sweep).
    ready: tokio::sync::Notify,
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
    /// The enclave's own connections out through the host (custody key
    /// service, cluster peers): `src/outbound`.
    pub outbound: Arc<crate::outbound::Outbound>,
    /// Whether the `--custody kms` unseal task was started.
    key_service_unseal: std::sync::atomic::AtomicBool,
    /// Whether the `--join-peer` join task was started (`joining`).
    pub(crate) join_started: std::sync::atomic::AtomicBool,
    /// Unseals refused because the store was older than the custodians'
    /// checkpoint, (rollback, omission): counted here, since the keyring
    /// of a refused unseal is dropped (`keyward_freshness_violations_total`).
    stale_unseals: [std::sync::atomic::AtomicU64; 2],
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

pub use freshness::ACCEPTED_ROLLBACK;

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
            custody: tokio::sync::Mutex::new(None),
            sealed_tls: OnceCell::new(),
            ready: tokio::sync::Notify::new(),
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
            outbound: Default::default(),
            key_service_unseal: Default::default(),
            join_started: Default::default(),
            stale_unseals: Default::default(),
        }
    }

    /// The keyring once Ready. While sealed: `BootError::Sealed` with what
    /// the enclave waits for (reading the boot record through `transport`
    /// on first use; a failed read is retried by the next caller).
    pub async fn keyring(&self, transport: &dyn StoreTransport) -> Result<&Keyring, bootstrap::BootError> {
        if let Some(keyring) = self.keyring.get() {
            return Ok(keyring);
        }
        let custody = self.custody(transport).await?;
        if let Some(keyring) = self.keyring.get() {
            return Ok(keyring);
        }
        let message = custody
            .as_ref()
            .and_then(|c| c.state.sealed_response())
            .map(|sealed| sealed.message)
            .unwrap_or_else(|| "Keyward is sealed.".to_owned());
        Err(bootstrap::BootError::Sealed(message))
    }

    /// The custody state, locked (read from the store on first use). Hold
    /// it across a genesis or unseal step: steps never interleave.
    pub async fn custody(
        &self,
        transport: &dyn StoreTransport,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<bootstrap::Custody>>, bootstrap::BootError> {
        let mut custody = self.custody.lock().await;
        if custody.is_none() && self.keyring.get().is_none() {
            *custody = Some(bootstrap::read_custody(&*self.nsm, transport).await?);
        }
        Ok(custody)
    }

    /// Ready: `keyring` becomes the enclave's, for good (this process).
    pub(crate) fn become_ready(&self, keyring: Keyring) {
        if self.keyring.set(keyring).is_err() {
            tracing::error!("a second keyring was offered to a ready enclave; ignored");
        }
        // The sweep runs at once: what fell due while sealed is done now.
        self.ready.notify_one();
    }

    /// Genesis (`Keyward.InitCustody`): only while awaiting it; Ready after.
    pub async fn init_custody(
        &self,
        transport: &dyn StoreTransport,
        request: &crate::custody::genesis::ShamirGenesis,
    ) -> Result<bootstrap::GenesisAnswer, bootstrap::BootError> {
        let now = self.clock.now().unix_timestamp();
        let mut custody = self.custody(transport).await?;
        let Some(state) = custody.as_mut() else {
            return Err(bootstrap::BootError::NotNow(
                "this deployment is already initialised; genesis runs once".into(),
            ));
        };
        let genesis = bootstrap::genesis(state, request, &*self.nsm, transport, self.dev_credentials(), now).await?;
        self.become_ready(genesis.keyring);
        Ok(genesis.answer)
    }

    /// The custody key service's client (`--custody kms`), through the
    /// host's outbound streams; `None` with Shamir custody.
    pub fn key_service(&self) -> Option<crate::outbound::kms::KmsClient> {
        let kms = self.config.custody_kms.as_ref()?;
        let endpoint = match crate::outbound::https::Endpoint::parse(&kms.endpoint) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::error!(error = %e, "--custody-endpoint");
                return None;
            }
        };
        let tls = match crate::outbound::https::pinned_client_config(&kms.ca_pem) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, "--custody-ca");
                return None;
            }
        };
        let connector: Arc<dyn crate::outbound::Connect> = self.outbound.clone();
        Some(crate::outbound::kms::KmsClient::new(
            crate::outbound::https::HttpsClient::new(endpoint, tls, connector),
            kms.region.clone(),
            Arc::clone(&kms.credential),
            Arc::clone(&self.clock),
        ))
    }

    /// Genesis with the custody key service (`Keyward.InitCustody` under
    /// `--custody kms`): only while awaiting it; Ready after.
    pub async fn init_custody_kms(
        &self,
        transport: &dyn StoreTransport,
        operator_key: Option<keyward_custody::suite::PublicKey>,
    ) -> Result<bootstrap::GenesisAnswer, bootstrap::BootError> {
        let (Some(kms), Some(service)) = (self.config.custody_kms.as_ref(), self.key_service()) else {
            return Err(bootstrap::BootError::NotNow(
                "this enclave does not run --custody kms".into(),
            ));
        };
        let request = crate::custody::kms::KmsGenesis {
            key_arn: kms.key_arn.clone(),
            endpoint: kms.endpoint.clone(),
            operator_key,
        };
        self.init_custody_kms_with(transport, &request, &service).await
    }

    /// [`Enclave::init_custody_kms`] with `service` as the custody key service.
    pub async fn init_custody_kms_with(
        &self,
        transport: &dyn StoreTransport,
        request: &crate::custody::kms::KmsGenesis,
        service: &dyn crate::custody::kms::KeyService,
    ) -> Result<bootstrap::GenesisAnswer, bootstrap::BootError> {
        let now = self.clock.now().unix_timestamp();
        let mut custody = self.custody(transport).await?;
        let Some(state) = custody.as_mut() else {
            return Err(bootstrap::BootError::NotNow(
                "this deployment is already initialised; genesis runs once".into(),
            ));
        };
        let genesis = bootstrap::kms_genesis(
            state,
            request,
            service,
            &*self.nsm,
            transport,
            self.dev_credentials(),
            now,
        )
        .await?;
        self.become_ready(genesis.keyring);
        Ok(genesis.answer)
    }

    /// One unseal attempt by the custody key service `service` (`--custody
    /// kms`): Ready when it released the committed root; otherwise Sealed
    /// with the reason. `Ok(false)` when there is nothing to do (Ready, or
    /// not a KMS custody).
    pub async fn unseal_by_key_service(
        &self,
        transport: &dyn StoreTransport,
        service: &dyn crate::custody::kms::KeyService,
    ) -> Result<bool, bootstrap::BootError> {
        if self.is_ready() {
            return Ok(false);
        }
        let now = self.clock.now().unix_timestamp();
        let mut custody = self.custody(transport).await?;
        let Some(state) = custody.as_mut() else {
            return Ok(false);
        };
        let is_kms = state
            .record
            .as_ref()
            .is_some_and(|r| matches!(r.custody, crate::custody::record::CustodyMethod::Kms { .. }));
        if !is_kms || state.state.is_ready() {
            return Ok(false);
        }
        let keyring = bootstrap::kms_unseal(state, service, &*self.nsm, transport, self.dev_credentials(), now).await?;
        self.become_ready(keyring);
        Ok(true)
    }

    /// Under `--custody kms`, keeps asking the custody key service for the
    /// root (over the first live host link) until Ready: at once, then
    /// backing off up to a minute between attempts. Each failure's reason
    /// is the 503's message meanwhile.
    pub fn start_key_service_unseal(self: &Arc<Self>) {
        if self.config.custody_kms.is_none() || self.key_service_unseal.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let enclave = Arc::clone(self);
        tokio::spawn(async move {
            let Some(service) = enclave.key_service() else { return };
            let mut backoff = std::time::Duration::from_secs(1);
            while !enclave.is_ready() {
                if let Some(link) = enclave.store_link() {
                    match enclave.unseal_by_key_service(&*link, &service).await {
                        Ok(_) if enclave.is_ready() => return,
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "custody key service unseal: retrying"),
                    }
                }
                // Retry back-off against an unreachable or refusing service.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
            }
        });
    }

    /// A Ready node's side of cluster join (`Keyward.JoinCluster`): the
    /// root, sealed to the join key of `document` once the document is
    /// verified against this node's own image PCRs (`custody::join`).
    pub async fn release_root_for_join(
        &self,
        transport: &dyn StoreTransport,
        document: &[u8],
    ) -> Result<(crate::custody::DeploymentId, Vec<u8>), bootstrap::BootError> {
        let Some(keyring) = self.keyring.get() else {
            return Err(bootstrap::BootError::NotNow(
                "this node is sealed: it has no root to release".into(),
            ));
        };
        let Some(verifier) = self.verifier() else {
            return Err(bootstrap::BootError::NotNow(
                "this node has no attestation trust anchor to verify a joining node".into(),
            ));
        };
        let record = match crate::bootstrap::read_boot_record(transport).await? {
            Some(record) => record,
            None => return Err(bootstrap::BootError::NotNow("this node has no boot record".into())),
        };
        let allowed = crate::custody::join::own_measurements(&*self.nsm)?;
        let joiner = crate::custody::join::verify_joiner(
            &record,
            verifier,
            document,
            &allowed,
            self.config.allow_debug_attestation,
            self.clock.now(),
        )?;
        // Only for a verified joiner: the store's epochs in every scope,
        // read now (a rolled-back or hidden root is refused here: no release
        // over a store this node sees as older), signed — the joiner's floor.
        let checkpoint = self.signed_checkpoint(transport).await?;
        let package = crate::custody::join::seal_for(keyring.hierarchy.root(), &record, &joiner, &checkpoint)?;
        Ok((
            record.deployment_id,
            package.to_bytes().map_err(crate::custody::CustodyError::from)?,
        ))
    }

    /// One unseal message (`Keyward.Unseal`) of the current session; the
    /// M-th valid share makes the enclave Ready.
    pub async fn unseal(
        &self,
        transport: &dyn StoreTransport,
        message: &[u8],
    ) -> Result<bootstrap::UnsealAnswer, bootstrap::BootError> {
        if self.is_ready() {
            return Err(bootstrap::BootError::NotNow("the service is not sealed".into()));
        }
        let now = self.clock.now().unix_timestamp();
        let mut custody = self.custody(transport).await?;
        let Some(state) = custody.as_mut() else {
            return Err(bootstrap::BootError::NotNow("the service is not sealed".into()));
        };
        let unsealed = bootstrap::unseal(state, message, &*self.nsm, transport, self.dev_credentials(), now).await;
        if let Err(bootstrap::BootError::Custody(crate::custody::CustodyError::StaleStore { omission, .. })) = &unsealed
        {
            self.count_stale_store(*omission);
        }
        match unsealed? {
            bootstrap::Unsealed::NeedMore { received, threshold } => Ok(bootstrap::UnsealAnswer {
                received,
                threshold,
                ready: false,
            }),
            bootstrap::Unsealed::Ready(keyring, accepted) => {
                let threshold = state
                    .record
                    .as_ref()
                    .and_then(|record| record.shamir().ok())
                    .map_or(0, |(threshold, _)| usize::from(threshold));
                drop(custody);
                self.become_ready(*keyring);
                if let Some(lags) = accepted {
                    self.audit_accepted_rollback(&lags).await;
                }
                Ok(bootstrap::UnsealAnswer {
                    received: threshold,
                    threshold,
                    ready: true,
                })
            }
        }
    }

    /// An attestation document binding the current unseal session
    /// (`Keyward.GetUnsealDocument`), echoing `nonce`: the deployment id,
    /// the document, and the shares received of the threshold.
    pub async fn unseal_document(
        &self,
        transport: &dyn StoreTransport,
        nonce: &[u8],
    ) -> Result<(crate::custody::DeploymentId, Vec<u8>, usize, usize), bootstrap::BootError> {
        if self.is_ready() {
            return Err(bootstrap::BootError::NotNow("the service is not sealed".into()));
        }
        let custody = self.custody(transport).await?;
        let Some(custody) = custody.as_ref() else {
            return Err(bootstrap::BootError::NotNow("the service is not sealed".into()));
        };
        let (Some(session), Some(record)) = (custody.session.as_ref(), custody.record.as_ref()) else {
            return Err(bootstrap::BootError::NotNow(bootstrap::not_unsealing(&custody.state)));
        };
        let document = session.attestation_document(&*self.nsm, nonce)?;
        let (received, threshold) = session.progress();
        Ok((record.deployment_id, document, received, threshold))
    }

    /// Genesis 1-of-1 for a fresh custodian key nobody keeps, when not
    /// Ready yet: for unit tests, benchmarks and fuzz targets that need a
    /// Ready enclave and never restart it. Then the keyring.
    pub async fn ready_for_tests(&self, transport: &dyn StoreTransport) -> Result<&Keyring, bootstrap::BootError> {
        if !self.is_ready() {
            let request = crate::custody::genesis::ShamirGenesis {
                threshold: 1,
                custodians: vec![keyward_custody::suite::PrivateKey::generate().public_key()],
                operator_key: None,
            };
            self.init_custody(transport, &request).await?;
        }
        self.keyring(transport).await
    }

    /// Whether the enclave has its root (genesis or unseal done).
    pub fn is_ready(&self) -> bool {
        self.keyring.get().is_some()
    }

    /// What `/healthz` reports: `ok` when Ready, `sealed` otherwise.
    pub fn health(&self) -> &'static str {
        if self.is_ready() {
            crate::custody::state::HEALTH_READY
        } else {
            crate::custody::state::HEALTH_SEALED
        }
    }

    /// The dev credentials of mock mode, provisioned at every transition to Ready.
    pub(crate) fn dev_credentials(&self) -> bootstrap::DevCredentials<'_> {
        bootstrap::DevCredentials {
            tenant: self.config.dev_credential.as_ref(),
            operator: self.config.dev_operator.as_ref(),
        }
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
                    // A periodic timer, not synchronisation; becoming Ready
                    // sweeps at once.
                    tokio::select! {
                        () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                        () = enclave.ready.notified() => {}
                    }
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

    /// The TLS state served while sealed: an identity made in memory on
    /// first use (a fresh CA and leaf for the configured names, never
    /// stored), so custodians and the operator can reach the custody
    /// operations. Its CA is what `status()` reports until Ready.
    pub async fn sealed_tls(
        &self,
        refuse: crate::tls::Refuser,
    ) -> Result<&Arc<crate::tls::LiveTls>, crate::tls::TlsError> {
        self.sealed_tls
            .get_or_try_init(|| async {
                let mut key = [0u8; 32];
                self.nsm
                    .fill_random(&mut key)
                    .map_err(|e| crate::tls::TlsError::Store(crate::store::StoreError::Protocol(e.to_string())))?;
                let sealer = crate::seal::Sealer::new(Arc::new(Key256::from_bytes(key)));
                zeroize::Zeroize::zeroize(&mut key);
                let memory = crate::store::MemoryStore::new();
                let records = crate::store::Records::new(&*memory, &sealer);
                let live = crate::tls::LiveTls::load(
                    &records,
                    &self.config.tls_names,
                    time::OffsetDateTime::now_utc(),
                    crate::tls::Limits {
                        body_budget: Some(crate::tls::serve::body_budget(self.config.budget.body_bytes_in_flight)),
                        ..crate::tls::Limits::default()
                    },
                    refuse,
                )
                .await?;
                tracing::info!(
                    spki_sha256 = %hex::encode(live.spki_sha256()),
                    "sealed: serving an in-memory TLS identity until ready"
                );
                Ok(Arc::new(live))
            })
            .await
    }

    /// What the host may know: the CA certificate, the serving key's SPKI
    /// hash and the aggregated request metrics.
    pub fn status(&self) -> keyward_wire::EnclaveStatus {
        let tls = self.tls.get().or_else(|| self.sealed_tls.get());
        keyward_wire::EnclaveStatus {
            ca_certificate_pem: tls.map(|t| t.ca_certificate_pem().to_owned()).unwrap_or_default(),
            tls_spki_sha256: tls.map(|t| t.spki_sha256().to_vec()).unwrap_or_default(),
            metrics: {
                let mut metrics = self.metrics.snapshot();
                if let Some(keyring) = self.keyring.get() {
                    metrics.freshness_violations = keyring.index.violation_counts();
                }
                let stale = |i: usize| self.stale_unseals[i].load(std::sync::atomic::Ordering::Relaxed);
                metrics.freshness_violations.rollback += stale(0);
                metrics.freshness_violations.omission += stale(1);
                metrics
            },
            health: self.health().to_owned(),
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
