//! `keyward-proxy`: the host proxy on its own, in front of an enclave that
//! runs elsewhere (a Nitro Enclave over vsock, or a mock-mode enclave's
//! Unix socket). `keyward dev` runs the same code in one command.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use keyward_proxy::{EnclaveEndpoint, Proxy, ProxyConfig};

#[derive(Parser)]
#[command(name = "keyward-proxy", version, about = "The Keyward host proxy (untrusted).")]
struct Cli {
    /// Address for the AWS KMS JSON API.
    #[arg(long, default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// Directory of the sealed-record store.
    #[arg(long, default_value = "./keyward-data")]
    data_dir: PathBuf,
    /// Mock mode: the enclave's Unix socket.
    #[arg(long, conflicts_with = "enclave_cid")]
    enclave_socket: Option<PathBuf>,
    /// Nitro mode: the enclave's vsock CID.
    #[arg(long, requires = "enclave_port")]
    enclave_cid: Option<u32>,
    /// Nitro mode: the enclave's vsock port.
    #[arg(long, default_value_t = 5000)]
    enclave_port: u32,
    /// Long-lived connections to the enclave.
    #[arg(long, default_value_t = 4)]
    enclave_connections: usize,
    /// Seconds a request may wait for the enclave.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let enclave = match (cli.enclave_socket, cli.enclave_cid) {
        (Some(path), None) => EnclaveEndpoint::Unix(path),
        (None, Some(cid)) => EnclaveEndpoint::Vsock {
            cid,
            port: cli.enclave_port,
        },
        _ => {
            eprintln!("keyward-proxy: give --enclave-socket PATH (mock mode) or --enclave-cid CID (nitro mode)");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.enclave_connections == 0 || cli.enclave_connections > 64 || cli.request_timeout_secs == 0 {
        eprintln!("keyward-proxy: --enclave-connections must be 1-64 and --request-timeout-secs positive");
        return std::process::ExitCode::from(2);
    }
    let config = ProxyConfig {
        listen: cli.listen,
        store_dir: cli.data_dir.join("store"),
        enclave,
        connections: cli.enclave_connections,
        request_timeout: Duration::from_secs(cli.request_timeout_secs),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-proxy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let proxy = Proxy::bind(config).await?;
        tracing::info!(address = %proxy.local_addr().map_err(keyward_proxy::ProxyError::Serve)?, "proxy listening");
        proxy.serve(keyward_proxy::stop_signal()).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
