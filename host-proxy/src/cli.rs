//! The proxy's command line: raw [`Args`] validated into a [`ProxyConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{EnclaveEndpoint, ForwardConfig, ProxyConfig, StoreLocation};

/// Raw arguments of the proxy (`keyward-proxy` or `keyward proxy`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address for the AWS KMS JSON API over HTTPS, TLS ending in the
    /// enclave (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Address of the admin listener: `GET /healthz` and `GET /metrics`,
    /// plain HTTP, for the host only.
    #[arg(long, default_value = "127.0.0.1:7801")]
    pub admin_listen: SocketAddr,
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
    /// Mock mode: the enclave's socket for client streams. Default:
    /// `enclave-tls.sock` next to `--enclave-socket`.
    #[arg(long)]
    pub enclave_tls_socket: Option<PathBuf>,
    /// Nitro mode: the enclave's vsock port for client streams.
    #[arg(long, default_value_t = 5001)]
    pub enclave_tls_port: u32,
    /// Client connections forwarded at once; one more is closed at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds without a byte either way after which a client connection
    /// is closed.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout_secs: u64,
    /// Long-lived connections to the enclave (1-64).
    #[arg(long, default_value_t = 4)]
    pub enclave_connections: usize,
    /// The custody key service of `--custody kms` (`https://HOST[:PORT]`):
    /// the one endpoint besides `--join-peer` the host lets the enclave
    /// connect to. The host only relays bytes: TLS ends in the enclave.
    #[arg(long, value_name = "URL")]
    pub custody_endpoint: Option<String>,
    /// A cluster peer's client address (`HOST:PORT` or `https://HOST:PORT`)
    /// a sealed enclave may join from (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub join_peer: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    #[error("give --enclave-socket PATH (mock mode) or --enclave-cid CID (nitro mode)")]
    NoEnclave,
    #[error("--enclave-connections must be 1-64")]
    Connections,
    #[error("--idle-timeout-secs must be positive")]
    Timeout,
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    #[error("--enclave-tls-socket is only valid with --enclave-socket")]
    TlsSocketWithoutSocket,
    #[error("{0} is not an https://HOST[:PORT] or HOST:PORT endpoint")]
    Endpoint(String),
}

impl Args {
    pub fn validate(self) -> Result<ProxyConfig, ArgsError> {
        let (enclave, streams) = match (self.enclave_socket, self.enclave_cid) {
            (Some(path), None) => {
                let streams = self
                    .enclave_tls_socket
                    .unwrap_or_else(|| path.with_file_name("enclave-tls.sock"));
                (EnclaveEndpoint::Unix(path), EnclaveEndpoint::Unix(streams))
            }
            (None, Some(cid)) => {
                if self.enclave_tls_socket.is_some() {
                    return Err(ArgsError::TlsSocketWithoutSocket);
                }
                (
                    EnclaveEndpoint::Vsock {
                        cid,
                        port: self.enclave_port,
                    },
                    EnclaveEndpoint::Vsock {
                        cid,
                        port: self.enclave_tls_port,
                    },
                )
            }
            _ => return Err(ArgsError::NoEnclave),
        };
        if !(1..=64).contains(&self.enclave_connections) {
            return Err(ArgsError::Connections);
        }
        if self.idle_timeout_secs == 0 {
            return Err(ArgsError::Timeout);
        }
        if self.max_connections == 0 {
            return Err(ArgsError::MaxConnections);
        }
        let mut outbound = Vec::new();
        for endpoint in self.custody_endpoint.iter().chain(&self.join_peer) {
            let target = crate::outbound::target_of(endpoint).ok_or_else(|| ArgsError::Endpoint(endpoint.clone()))?;
            outbound.push(target);
        }
        Ok(ProxyConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            store: match self.store {
                Some(store) => StoreLocation::parse(&store),
                None => StoreLocation::Embedded(self.data_dir.join("store")),
            },
            enclave,
            connections: self.enclave_connections,
            forward: ForwardConfig {
                endpoint: streams,
                max_connections: self.max_connections,
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            },
            outbound,
        })
    }
}
