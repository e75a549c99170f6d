//! The enclave's two listeners (Unix sockets in mock mode, vsock ports in
//! nitro mode):
//!
//! * the **host link** ([`serve_connection`]): framed, for the store calls
//!   the enclave makes, liveness pings and the status (CA certificate,
//!   aggregated metrics) the host may know. API calls never travel on it:
//!   a `Frame::Request` closes the connection.
//! * **client streams** ([`serve_client_stream`]): one per client TCP
//!   connection the host forwards, a stream header (the client's address,
//!   untrusted) and then the client's TLS session, which ends here
//!   (`tls::serve_tls_stream`). Its requests make their store calls over
//!   the host link.
//!
//! A connection or stream that sends anything out of protocol — garbage, an
//! oversize length, a truncated frame, an unexpected frame, a bad TLS
//! record — is closed. Others are unaffected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyward_wire::{Frame, PROTOCOL_VERSION, StoreOp, StoreResult, WireError, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::service::Enclave;
use crate::store::{StoreError, StoreFuture, StoreTransport};

/// How long a client stream has to send its header.
const STREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new connection has to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a store call may take before the request fails.
const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in progress per connection; further frames wait (back-pressure).
const MAX_IN_FLIGHT: usize = 512;
/// Frames queued for writing per connection.
const WRITE_QUEUE: usize = 1024;
/// Read buffer per connection.
const READ_BUFFER: usize = 64 * 1024;

/// Serves one accepted connection until it closes or breaks protocol.
pub async fn serve_connection<S>(stream: S, enclave: Arc<Enclave>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    // Buffered: one read system call brings in many frames on a busy link.
    let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER, reader);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader)).await {
        Ok(Ok(Frame::Hello { version })) if version == PROTOCOL_VERSION => {}
        Ok(Ok(Frame::Hello { version })) => {
            tracing::warn!(version, "host speaks an unsupported protocol version; closing");
            let _ = write_frame(
                &mut writer,
                &Frame::HelloAck {
                    version: PROTOCOL_VERSION,
                },
            )
            .await;
            return;
        }
        Ok(Ok(_)) => {
            tracing::warn!("connection did not start with a handshake; closing");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handshake failed; closing");
            return;
        }
        Err(_) => {
            tracing::warn!("handshake timed out; closing");
            return;
        }
    }
    if write_frame(
        &mut writer,
        &Frame::HelloAck {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .is_err()
    {
        return;
    }

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let write_task = tokio::spawn(async move {
        if let Err(e) = keyward_wire::write_batches(&mut writer, &mut rx).await {
            tracing::warn!(error = %e, "write to host failed");
        }
    });
    let link = Arc::new(LinkTransport {
        tx: tx.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let weak: std::sync::Weak<LinkTransport> = Arc::downgrade(&link);
    enclave.attach(weak);
    // Outbound connections (custody key service, cluster peers) are asked for here.
    enclave.outbound.attach(tx.clone());
    // `--custody kms`: ask the custody key service for the root.
    enclave.start_key_service_unseal();
    // `--join-peer`: ask a Ready peer of the cluster for the root.
    enclave.start_join();
    // Boot and load the TLS identity as soon as a host link is up.
    {
        let (enclave, link) = (Arc::clone(&enclave), Arc::clone(&link));
        tokio::spawn(async move {
            let _ = ensure_tls(&enclave, &*link).await;
        });
    }

    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(WireError::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "host sent a bad frame; closing the connection");
                break;
            }
        };
        match frame {
            Frame::Request { .. } => {
                // No plaintext path into the API: requests arrive only inside TLS.
                tracing::warn!("host sent an API request on the link (they arrive only inside TLS); closing");
                break;
            }
            Frame::StatusRequest { id } => {
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                if let Ok(frame) = keyward_wire::encode(&Frame::Status {
                    id,
                    status: enclave.status(),
                }) {
                    let _ = tx.send(frame).await;
                }
                drop(permit);
            }
            Frame::StoreReply { id, result } => {
                if let Some(waiter) = link.pending.lock().await.remove(&id) {
                    let _ = waiter.send(result);
                } else {
                    tracing::warn!(id, "store reply for no pending call; ignored");
                }
            }
            Frame::Ping { id } => {
                // Answer only once booted with its TLS identity, so "the
                // enclave answers" means it can serve clients.
                let (enclave, link, tx) = (Arc::clone(&enclave), Arc::clone(&link), tx.clone());
                tokio::spawn(async move {
                    if ensure_tls(&enclave, &*link).await.is_some()
                        && let Ok(frame) = keyward_wire::encode(&Frame::Pong { id })
                    {
                        let _ = tx.send(frame).await;
                    }
                });
            }
            Frame::OutboundFailed { id, reason } => {
                enclave.outbound.failed(id, reason);
            }
            Frame::Invalidate { hints } => {
                for hint in hints {
                    match hint {
                        keyward_wire::StoreHint::Record {
                            namespace,
                            key,
                            version,
                        } => {
                            enclave.invalidate(&namespace, &key, version);
                        }
                        _ => enclave.invalidate_all(),
                    }
                }
            }
            _ => {
                tracing::warn!("host sent a frame only the enclave may send; closing the connection");
                break;
            }
        }
    }
    // Fail the store calls still waiting on this connection.
    link.pending.lock().await.clear();
    drop(tx);
    drop(link);
    write_task.abort();
}

/// The TLS identity to serve: the persistent one (loaded through
/// `transport` once Ready), or while sealed the in-memory one
/// (`Enclave::sealed_tls`), so the custody operations can be reached.
pub(crate) async fn ensure_tls(enclave: &Enclave, transport: &dyn StoreTransport) -> Option<Arc<crate::tls::LiveTls>> {
    if let Some(live) = enclave.tls_loaded() {
        return Some(Arc::clone(live));
    }
    match enclave.keyring(transport).await {
        Ok(keyring) => {
            let records = keyring.records(transport);
            enclave
                .tls(&records, crate::api::error::refusal)
                .await
                .ok()
                .map(Arc::clone)
        }
        Err(crate::bootstrap::BootError::Sealed(_)) => enclave
            .sealed_tls(crate::api::error::refusal)
            .await
            .ok()
            .map(Arc::clone),
        Err(_) => None,
    }
}

/// Serves one client stream: its header, then the client's TLS session
/// with `api::handle` answering each request; store calls go over the host
/// link. `permit` is the stream's place under the concurrent-stream cap.
pub async fn serve_client_stream<S>(mut stream: S, enclave: Arc<Enclave>, permit: tokio::sync::OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_addr =
        match tokio::time::timeout(STREAM_HEADER_TIMEOUT, keyward_wire::read_stream_start(&mut stream)).await {
            Ok(Ok(keyward_wire::StreamStart::Client(addr))) => addr,
            Ok(Ok(keyward_wire::StreamStart::Outbound(id))) => {
                // The enclave's own connection out: handed to its waiting
                // request, which runs a TLS client on it (src/outbound).
                enclave.outbound.deliver(id, Box::new(stream));
                drop(permit);
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "client stream without a valid header; closing");
                return;
            }
            Err(_) => {
                tracing::debug!("client stream header timed out; closing");
                return;
            }
        };
    let live = match enclave.tls_loaded() {
        Some(live) => Arc::clone(live),
        None => {
            let Some(link) = enclave.store_link() else {
                tracing::warn!("client stream before any host link; closing");
                return;
            };
            match ensure_tls(&enclave, &*link).await {
                Some(live) => live,
                None => return,
            }
        }
    };
    let handler = crate::tls::serve::handler(move |request: keyward_wire::ApiRequest| {
        let enclave = Arc::clone(&enclave);
        async move {
            let started = std::time::Instant::now();
            let target = request
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("x-amz-target"))
                .map(|(_, value)| value.to_vec());
            let answer = match enclave.store_link() {
                Some(link) => enclave.handle(request, &*link).await,
                None => crate::api::error::refusal(&crate::tls::Refusal::Unavailable),
            };
            enclave.metrics.record(target.as_deref(), &answer, started.elapsed());
            answer
        }
    });
    if let Err(e) = crate::tls::serve_tls_stream(stream, live.server(), handler, client_addr).await {
        tracing::debug!(error = %e, "client stream ended");
    }
    drop(permit);
}

/// Store calls over the connection the request arrived on.
struct LinkTransport {
    /// Encoded frames for the connection's writer.
    tx: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<StoreResult>>>,
    next_id: AtomicU64,
}

impl StoreTransport for LinkTransport {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        Box::pin(async move {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (done, wait) = oneshot::channel();
            let frame = keyward_wire::encode(&Frame::StoreCall { id, op })
                .map_err(|e| StoreError::Unavailable(format!("store call: {e}")))?;
            self.pending.lock().await.insert(id, done);
            if self.tx.send(frame).await.is_err() {
                self.pending.lock().await.remove(&id);
                return Err(StoreError::Unavailable("connection closed".into()));
            }
            match tokio::time::timeout(STORE_CALL_TIMEOUT, wait).await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(_)) => Err(StoreError::Unavailable("connection closed".into())),
                Err(_) => {
                    self.pending.lock().await.remove(&id);
                    Err(StoreError::Unavailable("store call timed out".into()))
                }
            }
        })
    }
}
