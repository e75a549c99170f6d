//! The proxy's command line: raw [`Args`] validated into a [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{EnclaveEndpoint, ProxyConfig, StoreLocation};

/// Raw arguments of the proxy (`keyward-proxy` or `keyward proxy`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address for the AWS KMS JSON API (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Directory of the sealed-record store (`<DIR>/store`) unless `--store` is given.
    #[arg(long, default_value = "./keyward-data")]
    pub data_dir: PathBuf,
    /// The sealed-record store: a directory for the embedded engine, or
    /// `postgres://USER@HOST:PORT/DB` for PostgreSQL (shared by the nodes of
    /// a cluster). Default: `<DATA_DIR>/store`.
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<String>,
    /// Mock mode: the enclave's Unix socket.
    #[arg(long, conflicts_with = "enclave_cid")]
    pub enclave_socket: Option<PathBuf>,
    /// Nitro mode: the enclave's vsock CID.
    #[arg(long)]
    pub enclave_cid: Option<u32>,
    /// Nitro mode: the enclave's vsock port.
    #[arg(long, default_value_t = 5000)]
    pub enclave_port: u32,
    /// Long-lived connections to the enclave (1-64).
    #[arg(long, default_value_t = 4)]
    pub enclave_connections: usize,
    /// Seconds a request may wait for the enclave.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    #[error("give --enclave-socket PATH (mock mode) or --enclave-cid CID (nitro mode)")]
    NoEnclave,
    #[error("--enclave-connections must be 1-64")]
    Connections,
    #[error("--request-timeout-secs must be positive")]
    Timeout,
}

impl Args {
    pub fn validate(self) -> Result<ProxyConfig, ArgsError> {
        let enclave = match (self.enclave_socket, self.enclave_cid) {
            (Some(path), None) => EnclaveEndpoint::Unix(path),
            (None, Some(cid)) => EnclaveEndpoint::Vsock {
                cid,
                port: self.enclave_port,
            },
            _ => return Err(ArgsError::NoEnclave),
        };
        if !(1..=64).contains(&self.enclave_connections) {
            return Err(ArgsError::Connections);
        }
        if self.request_timeout_secs == 0 {
            return Err(ArgsError::Timeout);
        }
        Ok(ProxyConfig {
            listen: self.listen,
            store: match self.store {
                Some(store) => StoreLocation::parse(&store),
                None => StoreLocation::Embedded(self.data_dir.join("store")),
            },
            enclave,
            connections: self.enclave_connections,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
        })
    }
}
