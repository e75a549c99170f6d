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
    keyring: OnceCell<Keyring>,
}

impl Enclave {
    pub fn new(config: EnclaveConfig, nsm: Box<dyn Nsm>, clock: Arc<dyn Clock>) -> Self {
        Enclave {
            config,
            nsm,
            clock,
            credentials: CredentialCache::default(),
            keyring: OnceCell::new(),
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

    pub fn config(&self) -> &EnclaveConfig {
        &self.config
    }
}
