//! # keyward-proxy: the untrusted host side of Keyward
//!
//! Forwards each client TCP connection, unread, to the enclave, where TLS
//! ends ([`forward`]); serves the enclave's store calls from a store of
//! sealed records: an embedded SQLite database, or PostgreSQL for a cluster
//! of nodes ([`store`]); and answers `/healthz` and `/metrics` on its own
//! admin listener ([`admin`]).
//!
//! ## What this crate is trusted with
//! Nothing secret. It never sees key material, plaintext records,
//! credentials' secrets, requests or responses in a form it can use: client
//! connections carry TLS that ends inside the enclave, and it makes no
//! authorization decision. A compromised proxy can deny service, drop or
//! replay stored records (see `THREAT-MODEL.md`), and see the sizes and
//! timing of TLS records.
//!
//! ## What it guarantees
//! * A client connection is forwarded or closed; a bound on concurrent
//!   connections and an idle timeout protect the host.
//! * A store write is durable (SQLite: the WAL `fdatasync`ed; PostgreSQL: its
//!   commit) before the enclave is told it is done.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod forward;
pub mod link;
pub mod metrics;
pub mod outbound;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use forward::ForwardConfig;
pub use link::{EnclaveEndpoint, EnclaveLink};
pub use store::{Store, StoreLocation};

/// Validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect (TLS, ending in the enclave).
    pub listen: SocketAddr,
    /// The admin listener (`/healthz`, `/metrics`; plain HTTP).
    pub admin_listen: SocketAddr,
    /// The sealed-record store: the embedded engine's directory
    /// (`<data-dir>/store` by default) or a PostgreSQL URL.
    pub store: StoreLocation,
    /// The enclave's host link (store calls, pings, status).
    pub enclave: EnclaveEndpoint,
    /// Long-lived link connections to the enclave.
    pub connections: usize,
    /// How client connections are forwarded (to the enclave's client-stream
    /// endpoint).
    pub forward: ForwardConfig,
    /// `host:port` targets the enclave may ask the host to connect to
    /// (outbound streams: `--custody-endpoint`, `--join-peer`).
    pub outbound: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error(transparent)]
    Store(#[from] store::StoreOpenError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving, proxy.
pub struct Proxy {
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    link: Arc<EnclaveLink>,
    forward: ForwardConfig,
    metrics: Arc<metrics::Metrics>,
}

impl Proxy {
    /// Opens the store, binds the listeners and starts connecting to the enclave.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        let metrics = Arc::new(metrics::Metrics::new());
        let store = Store::open(&config.store, Some(metrics.store_flush_histogram())).await?;
        // A store of the earlier sealed-record format is refused at start.
        store.refuse_old_records(&config.store).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ProxyError::Listen(config.listen, e))?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|e| ProxyError::Listen(config.admin_listen, e))?;
        let outbound = outbound::OutboundConfig {
            targets: config.outbound,
            streams: config.forward.endpoint.clone(),
            idle_timeout: config.forward.idle_timeout,
        };
        let link = EnclaveLink::start_with_outbound(config.enclave, store, config.connections, outbound);
        Ok(Proxy {
            listener,
            admin,
            link,
            forward: config.forward,
            metrics,
        })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn link(&self) -> Arc<EnclaveLink> {
        Arc::clone(&self.link)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let app = admin::router(admin::AdminState {
            link: Arc::clone(&self.link),
            metrics: Arc::clone(&self.metrics),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut admin_stop = stop_rx.clone();
        let admin = tokio::spawn(async move {
            axum::serve(self.admin, app)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.wait_for(|stop| *stop).await;
                })
                .await
        });
        let forwarding = tokio::spawn(forward::serve(self.listener, self.forward, self.metrics));
        shutdown.await;
        let _ = stop_tx.send(true);
        forwarding.abort();
        match admin.await {
            Ok(result) => result.map_err(ProxyError::Serve),
            Err(_) => Ok(()),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs a proxy until SIGTERM or Ctrl-C; prints `Keyward proxy listening on
/// https://ADDR` and the admin address on standard output once bound.
pub async fn run(config: ProxyConfig) -> Result<(), ProxyError> {
    let proxy = Proxy::bind(config).await?;
    let address = proxy.local_addr().map_err(ProxyError::Serve)?;
    let admin = proxy.admin_addr().map_err(ProxyError::Serve)?;
    println!("Keyward proxy listening on https://{address} (TLS ends in the enclave)");
    println!("Keyward proxy admin (healthz, metrics) on http://{admin}");
    proxy.serve(stop_signal()).await
}
