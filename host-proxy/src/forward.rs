//! The client front end: for each client TCP connection, one stream to the
//! enclave (a Unix-socket connection in mock mode, vsock in nitro mode),
//! a stream header with the client's address, then the bytes copied both
//! ways unread. TLS ends inside the enclave: the proxy parses neither TLS
//! nor HTTP, and what it could record is ciphertext.
//!
//! The host protects itself with a bound on concurrent connections (one
//! over it is closed at once) and an idle timeout (no byte either way for
//! that long closes both sides). Closing either side closes the other.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::link::EnclaveEndpoint;
use crate::metrics::Metrics;

/// How long opening a stream to the enclave may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How client connections are forwarded.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Where the enclave accepts client streams.
    pub endpoint: EnclaveEndpoint,
    /// Client connections forwarded at once.
    pub max_connections: usize,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

/// Accepts client connections on `listener` and forwards each, until the
/// task is dropped.
pub async fn serve(listener: TcpListener, config: ForwardConfig, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.connection_refused();
            tracing::warn!("too many client connections; closing a new one");
            drop(client);
            continue;
        };
        let (config, metrics) = (Arc::clone(&config), Arc::clone(&metrics));
        tokio::spawn(async move {
            metrics.connection_opened();
            if let Err(e) = forward(client, peer, &config).await {
                metrics.stream_failed();
                tracing::debug!(error = %e, "client connection not forwarded");
            }
            metrics.connection_closed();
            drop(permit);
        });
    }
}

/// Forwards one client connection until either side closes or it idles.
async fn forward(client: TcpStream, peer: std::net::SocketAddr, config: &ForwardConfig) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let header = keyward_wire::encode_stream_header(Some(peer));
    match &config.endpoint {
        EnclaveEndpoint::Unix(path) => {
            let mut enclave = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the enclave"))??;
            enclave.write_all(&header).await?;
            relay(client, enclave, config.idle_timeout).await
        }
        EnclaveEndpoint::Vsock { cid, port } => {
            let connect = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port));
            let mut enclave = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the enclave"))??;
            enclave.write_all(&header).await?;
            relay(client, enclave, config.idle_timeout).await
        }
    }
}

/// Copies bytes both ways (`copy_bidirectional`: an end of stream on one
/// side is passed on as a shutdown of the other) until both directions end,
/// an error ends the connection, or nothing moves for `idle`.
pub async fn relay<A, B>(client: A, mut enclave: B, idle: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        inner: client,
        started,
        last: Arc::clone(&last),
    };
    let idle_watch = async {
        loop {
            let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = quiet_since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut enclave) => copied.map(|_| ()),
        () = idle_watch => {
            tracing::debug!("client connection idle; closing");
            Ok(())
        }
    }
}

/// A stream that notes when bytes last moved through it.
struct Activity<S> {
    inner: S,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Activity<S> {
    fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn bytes_pass_unchanged_and_a_close_passes_on() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (enclave, mut enclave_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client, enclave, Duration::from_secs(30)));
        client_far.write_all(b"\x16\x03\x01 opaque").await.expect("write");
        let mut got = [0u8; 10];
        enclave_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\x16\x03\x01 opaque");
        enclave_far.write_all(b"answer").await.expect("write");
        let mut answer = [0u8; 6];
        client_far.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"answer");
        // The enclave closes: the client sees the end of the stream.
        drop(enclave_far);
        let mut rest = Vec::new();
        client_far.read_to_end(&mut rest).await.expect("read to end");
        assert!(rest.is_empty());
        drop(client_far);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the relay ends")
            .expect("joins")
            .ok();
    }

    #[tokio::test]
    async fn the_connection_bound_closes_one_connection_too_many_and_the_header_names_the_client() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("enclave-tls.sock");
        let enclave = tokio::net::UnixListener::bind(&socket).expect("bind");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        let config = ForwardConfig {
            endpoint: EnclaveEndpoint::Unix(socket),
            max_connections: 1,
            idle_timeout: Duration::from_secs(30),
        };
        let server = tokio::spawn(serve(listener, config, Arc::clone(&metrics)));
        // The first connection is forwarded: the enclave side reads the
        // header (with the client's address), then the client's bytes.
        let mut first = TcpStream::connect(addr).await.expect("connect");
        let first_local = first.local_addr().expect("local addr");
        first.write_all(b"client hello").await.expect("write");
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), enclave.accept())
            .await
            .expect("forwarded in time")
            .expect("accept");
        let client = keyward_wire::read_stream_header(&mut stream).await.expect("header");
        assert_eq!(client, Some(first_local.to_string()));
        let mut got = [0u8; 12];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"client hello");
        // A second one while the first is open: closed at once, not forwarded.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the second connection was kept"
        );
        assert!(
            metrics
                .render(0, 0, None)
                .contains("keyward_client_connections_refused_total 1")
        );
        // The enclave closing its side closes the client's.
        drop(stream);
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "the client connection outlived the enclave stream");
        server.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (enclave, _enclave_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client, enclave, Duration::from_millis(300)));
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), client_far.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the idle connection was not closed");
        task.await.expect("joins").expect("idle close is not an error");
    }
}
