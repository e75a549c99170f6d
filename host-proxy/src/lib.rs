//! # keyward-proxy: the untrusted host side of Keyward
//!
//! Speaks the AWS KMS JSON 1.1 protocol over HTTP, forwards every request to
//! the enclave as one frame, and serves the enclave's store calls from a
//! store of sealed records: an embedded SQLite database, or PostgreSQL for
//! a cluster of nodes ([`store`]).
//!
//! ## What this crate is trusted with
//! Nothing secret. It never sees key material, plaintext records or
//! credentials' secrets in a form it can use, and it makes no authorization
//! decision: the enclave verifies every request's SigV4 signature itself and
//! authenticates every record it reads back. A compromised proxy can deny
//! service, drop or replay stored records (see `THREAT-MODEL.md`), and read
//! the plaintexts that clients send over HTTP to it — as any TLS terminator
//! in front of AWS KMS could.
//!
//! ## What it guarantees
//! * Every request gets an answer: the enclave's, or an AWS-shaped 500-class
//!   error when the enclave is unreachable, restarted mid-request or too slow.
//! * A store write is durable (SQLite: the WAL `fdatasync`ed; PostgreSQL: its
//!   commit) before the enclave is told it is done.
#![forbid(unsafe_code)]

pub mod cli;
pub mod http;
pub mod link;
pub mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use link::{EnclaveEndpoint, EnclaveLink};
pub use store::{Store, StoreLocation};

/// Validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// The sealed-record store: the embedded engine's directory
    /// (`<data-dir>/store` by default) or a PostgreSQL URL.
    pub store: StoreLocation,
    pub enclave: EnclaveEndpoint,
    /// Long-lived connections to the enclave.
    pub connections: usize,
    /// Longest a request may wait for the enclave.
    pub request_timeout: Duration,
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
    link: Arc<EnclaveLink>,
    request_timeout: Duration,
    metrics: Arc<metrics::Metrics>,
}

impl Proxy {
    /// Opens the store, binds the listener and starts connecting to the enclave.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        let metrics = Arc::new(metrics::Metrics::new());
        let store = Store::open(&config.store, Some(metrics.store_flush_histogram())).await?;
        // A store of the earlier sealed-record format is refused at start.
        store.refuse_old_records(&config.store).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ProxyError::Listen(config.listen, e))?;
        let link = EnclaveLink::start(config.enclave, store, config.connections);
        Ok(Proxy {
            listener,
            link,
            request_timeout: config.request_timeout,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn link(&self) -> Arc<EnclaveLink> {
        Arc::clone(&self.link)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let app = http::router(http::AppState {
            link: self.link,
            request_timeout: self.request_timeout,
            metrics: self.metrics,
        });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ProxyError::Serve)
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
/// http://ADDR` on standard output once bound.
pub async fn run(config: ProxyConfig) -> Result<(), ProxyError> {
    let proxy = Proxy::bind(config).await?;
    let address = proxy.local_addr().map_err(ProxyError::Serve)?;
    println!("Keyward proxy listening on http://{address}");
    proxy.serve(stop_signal()).await
}
