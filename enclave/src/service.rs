//! The enclave service: state shared by every connection, and the entry point
//! that turns one forwarded request into one response.

use std::sync::Arc;

use keyward_wire::{ApiRequest, ApiResponse};
use tokio::sync::OnceCell;

use crate::api;
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
}

/// How often the sweep looks for keys whose deletion or rotation is due.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Enclave {
    pub fn new(config: EnclaveConfig, nsm: Box<dyn Nsm>, clock: Arc<dyn Clock>) -> Self {
        Enclave {
            config,
            nsm,
            clock,
            credentials: CredentialCache::default(),
            locks: Default::default(),
            keyring: OnceCell::new(),
            links: Default::default(),
            sweeper_started: Default::default(),
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

    /// Handles one request. Never panics on input; every failure is an AWS-shaped response.
    pub async fn handle(&self, request: ApiRequest, transport: &dyn StoreTransport) -> ApiResponse {
        api::handle(self, request, transport).await
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
    }

    async fn sweep_once(&self) {
        let link = {
            let links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            links.iter().find_map(std::sync::Weak::upgrade)
        };
        let Some(link) = link else { return };
        let Ok(keyring) = self.keyring(&*link).await else { return };
        let records = crate::store::Records::new(&*link, &keyring.sealer);
        let now = self.clock.now().unix_timestamp();
        if let Err(e) = crate::api::lifecycle::sweep(&records, &keyring.hierarchy, &self.locks, now).await {
            tracing::warn!(error = %e, "sweep failed; retrying at the next interval");
        }
    }

    pub fn config(&self) -> &EnclaveConfig {
        &self.config
    }
}
