//! The enclave's own connections out, through the host: the custody key
//! service of `--custody kms` and a cluster peer a sealed node joins from.
//!
//! A Nitro Enclave has no network. To connect out, the enclave asks the
//! host over a link connection (`Frame::OutboundOpen { id, target }`); the
//! host connects to `target` — only to one it was configured with — and
//! hands the TCP connection to the enclave as a stream on the client-stream
//! endpoint, behind the outbound header `"KWO1" ‖ id` (keyward-wire
//! `stream`). [`Outbound`] pairs such streams with the waiting requests.
//! [`https`] runs a TLS client with **pinned roots** and HTTP/1.1 on it, so
//! the host relays ciphertext only: it can refuse, delay or cut a
//! connection, and read sizes and timing, nothing else.
//!
//! Trust: everything the host says here is untrusted. A stream handed over
//! under the wrong id, or a connection to the wrong place, fails the TLS
//! handshake (the peer must prove a certificate under the pinned roots for
//! the expected name); a failure reason the host sends is only shown.

pub mod https;
pub mod join;
pub mod kms;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyward_wire::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// A byte stream to a remote peer, relayed by the host.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed outbound stream.
pub type BoxedStream = Box<dyn Stream>;

/// How long the host has to hand over an outbound stream.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no outbound connection was opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundError {
    #[error("no host link is up to ask for an outbound connection to {0}")]
    NoLink(String),
    #[error("the host did not open the connection to {target}: {reason}")]
    Refused { target: String, reason: String },
    #[error("the host did not open the connection to {0} in time")]
    Timeout(String),
}

/// The future of [`Connect::connect`].
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxedStream, OutboundError>> + Send + 'a>>;

/// Opens byte streams to `host:port` targets: through the host
/// ([`Outbound`]) in the enclave, directly in tests.
pub trait Connect: Send + Sync {
    fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a>;
}

type Waiter = oneshot::Sender<Result<BoxedStream, String>>;

/// Outbound connections through the host: requests sent on a live link
/// connection, streams delivered by the client-stream acceptor.
#[derive(Default)]
pub struct Outbound {
    /// Link connections' frame queues (closed ones are pruned on use).
    links: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
}

impl Outbound {
    pub fn new() -> Self {
        Self::default()
    }

    /// A link connection came up: outbound requests may use it.
    pub fn attach(&self, tx: mpsc::Sender<Vec<u8>>) {
        let mut links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        links.retain(|l| !l.is_closed());
        links.push(tx);
    }

    fn link(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        let mut links = self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        links.retain(|l| !l.is_closed());
        links.last().cloned()
    }

    fn take(&self, id: u64) -> Option<Waiter> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id)
    }

    /// The host handed over the stream of request `id` (a stream for no
    /// pending request is dropped, which closes it).
    pub fn deliver(&self, id: u64, stream: BoxedStream) {
        match self.take(id) {
            Some(waiter) => {
                let _ = waiter.send(Ok(stream));
            }
            None => tracing::warn!(id, "outbound stream for no pending request; closed"),
        }
    }

    /// The host could not open request `id`'s connection.
    pub fn failed(&self, id: u64, reason: String) {
        if let Some(waiter) = self.take(id) {
            let _ = waiter.send(Err(reason));
        }
    }

    /// Asks the host for a connection to `target` and waits for its stream.
    pub async fn open(&self, target: &str) -> Result<BoxedStream, OutboundError> {
        let Some(link) = self.link() else {
            return Err(OutboundError::NoLink(target.to_string()));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, wait) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, done);
        let frame = keyward_wire::encode(&Frame::OutboundOpen {
            id,
            target: target.to_string(),
        });
        let sent = match frame {
            Ok(frame) => link.send(frame).await.is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.take(id);
            return Err(OutboundError::NoLink(target.to_string()));
        }
        match tokio::time::timeout(OPEN_TIMEOUT, wait).await {
            Ok(Ok(Ok(stream))) => Ok(stream),
            Ok(Ok(Err(reason))) => Err(OutboundError::Refused {
                target: target.to_string(),
                reason,
            }),
            Ok(Err(_)) => Err(OutboundError::NoLink(target.to_string())),
            Err(_) => {
                self.take(id);
                Err(OutboundError::Timeout(target.to_string()))
            }
        }
    }
}

impl Connect for Outbound {
    fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a> {
        Box::pin(self.open(target))
    }
}

#[cfg(test)]
mod tests;
