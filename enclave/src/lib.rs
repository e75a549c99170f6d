//! # keyward-enclave: the trusted core of Keyward
//!
//! Everything that decides or touches secrets runs here: SigV4 verification,
//! authorization, the key hierarchy, every cryptographic operation, and the
//! sealing of every record the enclave persists.
//!
//! ## What this crate trusts
//! * Its own memory and code (the enclave image, measured by the NSM in nitro mode).
//! * The NSM for randomness (the OS CSPRNG stands in for it in mock mode).
//! * The RustCrypto implementations it calls (AES-256-GCM, HKDF-SHA256, HMAC-SHA256).
//!
//! ## What it does not trust
//! * The host: every frame is bounded and parsed defensively; every stored
//!   record is sealed (AES-256-GCM, identity in the associated data) and
//!   authenticated when read back; every request is authenticated with SigV4
//!   here, whatever the host claims.
//! * Clients: every input is validated and answered with an AWS-shaped error.
//!
//! ## What it guarantees
//! * No plaintext key material, secret or plaintext leaves the enclave except
//!   as the answer to an authenticated request that asked for it.
//! * Nothing the host stores is readable or forgeable by the host.
//! * No input panics the process.
//!
//! Known limits of the current design are in `THREAT-MODEL.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod attestation;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod budget;
pub mod clock;
pub mod config;
pub mod context;
pub mod custody;
pub mod error;
pub mod joining;
pub mod keys;
pub mod keystore;
pub mod locks;
pub mod metrics;
pub mod nsm;
pub mod outbound;
pub mod policy;
pub mod seal;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;
pub mod text;
pub mod tls;

use std::sync::Arc;

use attestation::mock::{MockAttester, MockPki};
use attestation::verify::{TrustAnchor, Verifier};
use config::Listen;
pub use config::{Args, EnclaveConfig, Mode};
pub use service::Enclave;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("attestation trust anchor: {0}")]
    TrustAnchor(#[from] attestation::verify::AttestationError),
    #[error("mock attestation PKI: {0}")]
    MockPki(#[from] attestation::mock::MockError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error(transparent)]
    Nsm(#[from] nsm::NsmError),
}

/// Runs the enclave until it is told to stop (SIGTERM, Ctrl-C, or standard
/// input closing when `exit_on_stdin_close` is set).
pub async fn run(config: EnclaveConfig) -> Result<(), RunError> {
    let clock: Arc<dyn clock::Clock> = match config.clock_offset {
        0 => Arc::new(clock::SystemClock),
        offset_seconds => {
            tracing::warn!(offset_seconds, "MOCK MODE: the enclave clock is shifted");
            Arc::new(clock::OffsetClock { offset_seconds })
        }
    };
    // Only the leaves differ between modes: the NSM and the trust anchor.
    let (nsm, anchor): (Box<dyn nsm::Nsm>, TrustAnchor) = match config.mode {
        Mode::Mock => {
            tracing::warn!(
                "MOCK MODE: no enclave isolation, a mock NSM and a mock attestation root on disk. \
                 Never use mock mode for real keys."
            );
            let pki = match &config.data_dir {
                Some(dir) => MockPki::load_or_create(dir)?,
                None => {
                    tracing::warn!("no --data-dir: the mock attestation root is ephemeral");
                    MockPki::ephemeral()?
                }
            };
            let anchor = TrustAnchor::from_der(pki.root_der())?;
            let mut attester = MockAttester::new(pki);
            for (index, value) in &config.mock_pcrs {
                attester = attester.with_pcr(*index, value.clone())?;
            }
            tracing::info!(root_sha256 = %anchor.fingerprint_hex(), "mock attestation root (never trusted in nitro mode)");
            (
                Box::new(nsm::MockAttestingNsm::with_clock(attester, Arc::clone(&clock))),
                anchor,
            )
        }
        Mode::Nitro => {
            // Checks the embedded AWS root against its pinned SHA-256.
            let anchor = TrustAnchor::aws_nitro_root()?;
            (Box::new(nsm::NitroNsm::open()?), anchor)
        }
    };
    let listen = config.listen.clone();
    let tls_listen = config.tls_listen.clone();
    let max_streams = config.max_client_streams;
    let exit_on_stdin_close = config.exit_on_stdin_close;
    // Sealed until genesis or an unseal (`bootstrap`): the boot record is
    // read through the first host link, the same way in both modes.
    let enclave = Arc::new(Enclave::new(config, nsm, clock).with_verifier(Verifier::new(anchor)));
    let stop = shutdown_signal(exit_on_stdin_close);
    let streams = Arc::new(tokio::sync::Semaphore::new(max_streams));
    let mut sockets = Vec::new();
    let link_loop = match listen {
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            tracing::info!(socket = %path.display(), "enclave listening (host link)");
            sockets.push(path);
            let enclave = Arc::clone(&enclave);
            tokio::spawn(async move { accept_loop(|| listener.accept(), enclave).await })
        }
        Listen::Vsock { port } => {
            let listener = bind_vsock(port)?;
            tracing::info!(port, "enclave listening on vsock (host link)");
            let enclave = Arc::clone(&enclave);
            tokio::spawn(async move { accept_loop(|| listener.accept(), enclave).await })
        }
    };
    let stream_loop = match tls_listen {
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            tracing::info!(socket = %path.display(), "enclave listening (client TLS streams)");
            sockets.push(path);
            let enclave = Arc::clone(&enclave);
            tokio::spawn(async move { stream_accept_loop(|| listener.accept(), enclave, streams).await })
        }
        Listen::Vsock { port } => {
            let listener = bind_vsock(port)?;
            tracing::info!(port, "enclave listening on vsock (client TLS streams)");
            let enclave = Arc::clone(&enclave);
            tokio::spawn(async move { stream_accept_loop(|| listener.accept(), enclave, streams).await })
        }
    };
    stop.await;
    tracing::info!("enclave stopping");
    link_loop.abort();
    stream_loop.abort();
    for path in sockets {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, RunError> {
    // A stale socket from a previous run would make bind fail.
    if path.exists() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| RunError::Listen(path.display().to_string(), e))?;
    restrict_socket(path);
    Ok(listener)
}

fn bind_vsock(port: u32) -> Result<tokio_vsock::VsockListener, RunError> {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    tokio_vsock::VsockListener::bind(addr).map_err(|e| RunError::Listen(format!("vsock port {port}"), e))
}

async fn accept_loop<F, Fut, S, A>(accept: F, enclave: Arc<Enclave>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, A)>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    loop {
        match accept().await {
            Ok((stream, _)) => {
                tokio::spawn(server::serve_connection(stream, Arc::clone(&enclave)));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts client streams; over the cap of concurrent streams, a new one
/// is closed at once (the host's connection bound should keep it from
/// getting there).
async fn stream_accept_loop<F, Fut, S, A>(accept: F, enclave: Arc<Enclave>, streams: Arc<tokio::sync::Semaphore>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, A)>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    loop {
        match accept().await {
            Ok((stream, _)) => match Arc::clone(&streams).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(server::serve_client_stream(stream, Arc::clone(&enclave), permit));
                }
                Err(_) => {
                    tracing::warn!("too many client streams; closing a new one");
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn restrict_socket(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(error = %e, "could not restrict the socket's permissions");
    }
}

async fn shutdown_signal(exit_on_stdin_close: bool) {
    use tokio::io::AsyncReadExt;
    let stdin_closed = async {
        if exit_on_stdin_close {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            // Anything the parent writes is ignored; end of file means it is gone.
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = stdin_closed => {}
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
