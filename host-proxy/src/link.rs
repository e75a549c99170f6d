//! The host's side of the enclave link: a few long-lived connections,
//! reconnected whenever the enclave restarts, that carry the enclave's store
//! calls, liveness pings and status requests. Clients' API requests never
//! travel here: they reach the enclave inside TLS on client streams
//! ([`crate::forward`]).
//!
//! An exchange whose connection dies, or that the enclave does not answer in
//! time, fails; nothing waits forever.
//! Store calls from the enclave are served from [`Store`]: embedded reads
//! inline, writes (which wait for the durable group commit) and PostgreSQL
//! calls on tasks of their own. A write's reply is queued for the enclave
//! only once its commit is durable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt as _;
use keyward_wire::{EnclaveStatus, Frame, PROTOCOL_VERSION, StoreResult, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use crate::outbound::OutboundConfig;
use crate::store::Store;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_QUEUE: usize = 1024;
const READ_BUFFER: usize = 64 * 1024;

/// Where the enclave listens.
#[derive(Debug, Clone)]
pub enum EnclaveEndpoint {
    Unix(PathBuf),
    Vsock { cid: u32, port: u32 },
}

impl std::fmt::Display for EnclaveEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnclaveEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            EnclaveEndpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    #[error("the enclave is not reachable")]
    Unavailable,
    #[error("the connection to the enclave was lost while the request was in progress")]
    Lost,
    #[error("the enclave did not answer in time")]
    Timeout,
    #[error("the request does not fit in a frame")]
    TooLarge,
}

enum Reply {
    Status(Box<EnclaveStatus>),
    Pong,
}

struct Conn {
    /// Encoded frames for the connection's writer.
    tx: mpsc::Sender<Vec<u8>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Conn {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct EnclaveLink {
    slots: Vec<RwLock<Option<Arc<Conn>>>>,
    next_slot: AtomicUsize,
    generation: watch::Sender<u64>,
}

impl EnclaveLink {
    /// Starts `connections` connection managers (at least one); the enclave
    /// may open no outbound connection.
    pub fn start(endpoint: EnclaveEndpoint, store: Store, connections: usize) -> Arc<Self> {
        let outbound = OutboundConfig {
            targets: Vec::new(),
            streams: endpoint.clone(),
            idle_timeout: Duration::from_secs(60),
        };
        Self::start_with_outbound(endpoint, store, connections, outbound)
    }

    /// Starts `connections` connection managers (at least one) that serve
    /// the enclave's outbound connections as `outbound` allows.
    pub fn start_with_outbound(
        endpoint: EnclaveEndpoint,
        store: Store,
        connections: usize,
        outbound: OutboundConfig,
    ) -> Arc<Self> {
        let outbound = Arc::new(outbound);
        let (generation, _) = watch::channel(0);
        let link = Arc::new(EnclaveLink {
            slots: (0..connections.max(1)).map(|_| RwLock::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
            generation,
        });
        for slot in 0..link.slots.len() {
            tokio::spawn(manage(
                Arc::downgrade(&link),
                slot,
                endpoint.clone(),
                store.clone(),
                Arc::clone(&outbound),
            ));
        }
        link
    }

    /// Number of connections the link keeps.
    pub fn configured(&self) -> usize {
        self.slots.len()
    }

    /// Number of connections currently established.
    pub fn connected(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.read().map(|c| c.is_some()).unwrap_or(false))
            .count()
    }

    /// The enclave's public status (CA certificate, SPKI hash, aggregated
    /// request metrics), waiting at most `timeout`.
    pub async fn status(&self, timeout: Duration) -> Result<EnclaveStatus, LinkError> {
        match self.exchange(|id| Frame::StatusRequest { id }, timeout).await? {
            Reply::Status(status) => Ok(*status),
            Reply::Pong => Err(LinkError::Lost),
        }
    }

    /// True when the enclave answers a ping (it answers only once booted).
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(self.exchange(|id| Frame::Ping { id }, timeout).await, Ok(Reply::Pong))
    }

    async fn exchange(&self, make: impl FnOnce(u64) -> Frame, timeout: Duration) -> Result<Reply, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = self.pick(deadline).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, wait) = oneshot::channel();
        conn.pending().insert(id, done);
        // Encoded here, once, on the caller's task; the writer only copies bytes.
        let Ok(frame) = keyward_wire::encode(&make(id)) else {
            conn.pending().remove(&id);
            return Err(LinkError::TooLarge);
        };
        if conn.tx.send(frame).await.is_err() {
            conn.pending().remove(&id);
            return Err(LinkError::Lost);
        }
        // The connection may have closed between pick and insert: its pending
        // map was drained already, so make sure nobody waits on a dead link.
        if conn.closed.load(Ordering::Acquire) {
            conn.pending().remove(&id);
            return Err(LinkError::Lost);
        }
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(LinkError::Lost),
            Err(_) => {
                conn.pending().remove(&id);
                Err(LinkError::Timeout)
            }
        }
    }

    /// A live connection, waiting until `deadline` for one to come up.
    async fn pick(&self, deadline: tokio::time::Instant) -> Result<Arc<Conn>, LinkError> {
        let mut changes = self.generation.subscribe();
        loop {
            let n = self.slots.len();
            let start = self.next_slot.fetch_add(1, Ordering::Relaxed);
            for i in 0..n {
                let slot = &self.slots[(start + i) % n];
                if let Ok(guard) = slot.read()
                    && let Some(conn) = guard.as_ref()
                    && !conn.closed.load(Ordering::Acquire)
                {
                    return Ok(Arc::clone(conn));
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(LinkError::Unavailable),
            }
        }
    }

    fn set_slot(&self, slot: usize, conn: Option<Arc<Conn>>) {
        if let Some(s) = self.slots.get(slot) {
            *s.write().unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Keeps one slot connected for as long as the link exists.
async fn manage(
    link: std::sync::Weak<EnclaveLink>,
    slot: usize,
    endpoint: EnclaveEndpoint,
    store: Store,
    outbound: Arc<OutboundConfig>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        if link.strong_count() == 0 {
            return;
        }
        let connected = match &endpoint {
            EnclaveEndpoint::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(s) => run_connection(&link, slot, s, &store, &outbound).await,
                Err(e) => Err(e.to_string()),
            },
            EnclaveEndpoint::Vsock { cid, port } => {
                match tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await {
                    Ok(s) => run_connection(&link, slot, s, &store, &outbound).await,
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match connected {
            Ok(()) => {
                tracing::warn!(slot, %endpoint, "enclave connection closed; reconnecting");
                backoff = Duration::from_millis(20);
            }
            Err(e) => {
                tracing::debug!(slot, %endpoint, error = %e, "enclave not reachable yet");
                // Reconnect back-off while the enclave is down (not test synchronisation).
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Queues the store's answer to call `id` for the enclave. A reply too large
/// for a frame fails the call instead; a full queue never blocks the reader.
fn reply(tx: &mpsc::Sender<Vec<u8>>, id: u64, result: StoreResult) {
    let frame = keyward_wire::encode(&Frame::StoreReply { id, result }).or_else(|e| {
        let error = StoreResult::Error(format!("store reply: {e}"));
        keyward_wire::encode(&Frame::StoreReply { id, result: error })
    });
    let Ok(frame) = frame else { return };
    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(frame).await;
        });
    }
}

/// Hints sent in one frame at most.
const HINT_BATCH: usize = 256;

/// Forwards the store's invalidation hints to the enclave as
/// [`Frame::Invalidate`], batching those that queued up meanwhile. Starts
/// with "everything": hints sent while this connection was down are lost.
async fn relay_hints(
    mut hints: tokio::sync::broadcast::Receiver<crate::store::Invalidation>,
    tx: mpsc::Sender<Vec<u8>>,
) {
    use keyward_wire::StoreHint;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let wire = |hint: crate::store::Invalidation| match hint {
        crate::store::Invalidation::Record {
            namespace,
            key,
            version,
        } => StoreHint::Record {
            namespace,
            key,
            version,
        },
        crate::store::Invalidation::All => StoreHint::All,
    };
    let mut batch = vec![StoreHint::All];
    loop {
        while batch.len() < HINT_BATCH {
            match hints.try_recv() {
                Ok(hint) => batch.push(wire(hint)),
                Err(TryRecvError::Lagged(_)) => batch.push(StoreHint::All),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if !batch.is_empty() {
            let Ok(frame) = keyward_wire::encode(&Frame::Invalidate {
                hints: std::mem::take(&mut batch),
            }) else {
                continue;
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        match hints.recv().await {
            Ok(hint) => batch.push(wire(hint)),
            Err(RecvError::Lagged(_)) => batch.push(StoreHint::All),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Handshakes and serves one connection until it breaks. `Ok` once it was up.
async fn run_connection<S>(
    link: &std::sync::Weak<EnclaveLink>,
    slot: usize,
    stream: S,
    store: &Store,
    outbound: &Arc<OutboundConfig>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    // Buffered: one read system call brings in many frames on a busy link.
    let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER, reader);
    write_frame(
        &mut writer,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut reader)).await {
        Ok(Ok(Frame::HelloAck { version })) if version == PROTOCOL_VERSION => {}
        Ok(Ok(Frame::HelloAck { version })) => return Err(format!("enclave speaks protocol version {version}")),
        Ok(Ok(_)) => return Err("enclave did not acknowledge the handshake".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("handshake timed out".into()),
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let conn = Arc::new(Conn {
        tx: tx.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        closed: AtomicBool::new(false),
    });
    let writer_task = tokio::spawn(async move {
        if let Err(e) = keyward_wire::write_batches(&mut writer, &mut rx).await {
            tracing::debug!(slot, error = %e, "write to the enclave failed");
        }
    });
    if let Some(l) = link.upgrade() {
        l.set_slot(slot, Some(Arc::clone(&conn)));
    }
    tracing::info!(slot, "connected to the enclave");
    // Slot 0 relays the store's invalidation hints to the enclave's cache.
    let hints_task = (slot == 0).then(|| tokio::spawn(relay_hints(store.invalidations(), tx.clone())));

    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(slot, error = %e, "enclave connection ended");
                break;
            }
        };
        match frame {
            Frame::Status { id, status } => {
                if let Some(waiter) = conn.pending().remove(&id) {
                    let _ = waiter.send(Reply::Status(Box::new(status)));
                }
            }
            Frame::Pong { id } => {
                if let Some(waiter) = conn.pending().remove(&id) {
                    let _ = waiter.send(Reply::Pong);
                }
            }
            Frame::StoreCall { id, op } => {
                let mut call = store.call(op);
                // A read of the embedded store is done by `call` itself (a
                // lookup in SQLite's page cache, about a microsecond): its
                // future is ready and is answered inline, since a task hop
                // would cost more than the read. A write's future completes
                // after the durable group commit, and a PostgreSQL call's
                // after the server's answer: those wait on a task of their
                // own, so the reader goes on with the next frame.
                match (&mut call).now_or_never() {
                    Some(result) => reply(&tx, id, result),
                    None => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let result = call.await;
                            reply(&tx, id, result);
                        });
                    }
                }
            }
            Frame::OutboundOpen { id, target } => {
                let (outbound, tx) = (Arc::clone(outbound), tx.clone());
                tokio::spawn(async move { crate::outbound::open(&outbound, id, target, tx).await });
            }
            _ => {
                tracing::warn!(slot, "enclave sent an unexpected frame; reconnecting");
                break;
            }
        }
    }
    conn.closed.store(true, Ordering::Release);
    if let Some(l) = link.upgrade() {
        l.set_slot(slot, None);
    }
    // Dropping the waiters fails every request still in flight on this connection.
    conn.pending().clear();
    writer_task.abort();
    if let Some(task) = hints_task {
        task.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keyward_wire::{Frame, StoreHint};
    use tokio::sync::mpsc;

    use super::relay_hints;
    use crate::store::Invalidation;

    fn hints(frame: Vec<u8>) -> Vec<StoreHint> {
        match keyward_wire::decode(&frame[4..]) {
            Ok(Frame::Invalidate { hints }) => hints,
            other => panic!("expected Invalidate, got {other:?}"),
        }
    }

    /// The store's hints reach the enclave as `Invalidate` frames: first
    /// "everything" (hints sent while the connection was down are lost),
    /// then each committed write, and "everything" again after a lag.
    #[tokio::test]
    async fn store_hints_are_relayed_to_the_enclave() {
        let source = crate::store::invalidation_channel();
        let (tx, mut rx) = mpsc::channel(16);
        let relay = tokio::spawn(relay_hints(source.subscribe(), tx));
        assert_eq!(hints(rx.recv().await.expect("a frame")), vec![StoreHint::All]);
        source
            .send(Invalidation::Record {
                namespace: "key".into(),
                key: "t/k".into(),
                version: 7,
            })
            .expect("a subscriber");
        assert_eq!(
            hints(rx.recv().await.expect("a frame")),
            vec![StoreHint::Record {
                namespace: "key".into(),
                key: "t/k".into(),
                version: 7
            }]
        );
        source.send(Invalidation::All).expect("a subscriber");
        assert_eq!(hints(rx.recv().await.expect("a frame")), vec![StoreHint::All]);
        drop(source);
        relay.await.expect("the relay ends with the store");
    }
}
