//! The enclave's side of the host link: accept connections (Unix socket in
//! mock mode, vsock in nitro mode), handshake, then serve framed requests
//! concurrently while sending the store calls they make back over the same
//! connection.
//!
//! A connection that sends anything out of protocol — garbage, an oversize
//! length, a truncated frame, an unexpected frame — is closed. Other
//! connections are unaffected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyward_wire::{Frame, PROTOCOL_VERSION, StoreOp, StoreResult, WireError, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::service::Enclave;
use crate::store::{StoreError, StoreFuture, StoreTransport};

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
            Frame::Request { id, request } => {
                let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let (enclave, link, tx) = (Arc::clone(&enclave), Arc::clone(&link), tx.clone());
                tokio::spawn(async move {
                    let response = enclave.handle(request, &*link).await;
                    let frame = keyward_wire::encode(&Frame::Response { id, response }).or_else(|e| {
                        tracing::error!(error = %e, "response does not fit in a frame");
                        let response = crate::api::error::KmsError::Internal.to_response();
                        keyward_wire::encode(&Frame::Response { id, response })
                    });
                    if let Ok(frame) = frame {
                        let _ = tx.send(frame).await;
                    }
                    drop(permit);
                });
            }
            Frame::StoreReply { id, result } => {
                if let Some(waiter) = link.pending.lock().await.remove(&id) {
                    let _ = waiter.send(result);
                } else {
                    tracing::warn!(id, "store reply for no pending call; ignored");
                }
            }
            Frame::Ping { id } => {
                // Answer only once booted, so "the enclave answers" means it can serve.
                let (enclave, link, tx) = (Arc::clone(&enclave), Arc::clone(&link), tx.clone());
                tokio::spawn(async move {
                    if enclave.keyring(&*link).await.is_ok()
                        && let Ok(frame) = keyward_wire::encode(&Frame::Pong { id })
                    {
                        let _ = tx.send(frame).await;
                    }
                });
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
