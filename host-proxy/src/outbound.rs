//! Outbound streams: the enclave's own connections out (the custody key
//! service of `--custody kms`, a cluster peer it joins from). The enclave
//! asks over the link ([`Frame::OutboundOpen`]); the host connects to the
//! target — only one it was configured with (`--custody-endpoint`,
//! `--join-peer`) — opens a stream to the enclave's client-stream endpoint
//! with the outbound header, and copies bytes both ways unread, as for a
//! client connection. The enclave runs TLS with pinned roots on it: the
//! host relays ciphertext and can only refuse, delay or cut the connection.

use std::time::Duration;

use keyward_wire::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::forward::relay;
use crate::link::EnclaveEndpoint;

/// How long connecting to a target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest target name the host accepts from the enclave.
const MAX_TARGET_LEN: usize = 300;

/// Where the host lets the enclave connect, and how.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// `host:port` targets the enclave may ask for (empty: none).
    pub targets: Vec<String>,
    /// The enclave's client-stream endpoint, where outbound streams are handed over.
    pub streams: EnclaveEndpoint,
    /// A stream with no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

/// `host:port` of an endpoint given as `https://host[:port][/]` (port 443
/// by default) or as `host:port`.
pub fn target_of(endpoint: &str) -> Option<String> {
    let rest = match endpoint.split_once("://") {
        Some(("https", rest)) => rest,
        Some(_) => return None,
        None => endpoint,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if has_port {
        Some(authority.to_string())
    } else if endpoint.contains("://") && !authority.contains(':') {
        Some(format!("{authority}:443"))
    } else {
        None
    }
}

/// Serves one [`Frame::OutboundOpen`]: connects and hands the stream over,
/// or answers [`Frame::OutboundFailed`] on `tx` (the link connection the
/// request came on).
pub async fn open(config: &OutboundConfig, id: u64, target: String, tx: mpsc::Sender<Vec<u8>>) {
    let failed = |reason: String| async {
        tracing::warn!(id, %reason, "outbound connection for the enclave not opened");
        if let Ok(frame) = keyward_wire::encode(&Frame::OutboundFailed { id, reason }) {
            let _ = tx.send(frame).await;
        }
    };
    if target.len() > MAX_TARGET_LEN || !config.targets.contains(&target) {
        let shown: String = target.chars().take(80).collect();
        return failed(format!(
            "the host does not connect to {shown:?}: not a configured --custody-endpoint or --join-peer"
        ))
        .await;
    }
    let remote = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(format!("the host cannot connect to {target}: {e}")).await,
        Err(_) => return failed(format!("the host's connection to {target} timed out")).await,
    };
    let _ = remote.set_nodelay(true);
    let header = keyward_wire::encode_outbound_header(id);
    let result = match &config.streams {
        EnclaveEndpoint::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(mut enclave) => match enclave.write_all(&header).await {
                Ok(()) => relay(remote, enclave, config.idle_timeout).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        EnclaveEndpoint::Vsock { cid, port } => {
            match tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await {
                Ok(mut enclave) => match enclave.write_all(&header).await {
                    Ok(()) => relay(remote, enclave, config.idle_timeout).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(id, %target, error = %e, "outbound stream ended");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn endpoints_name_their_target() {
        assert_eq!(
            target_of("https://kms.example:8443").as_deref(),
            Some("kms.example:8443")
        );
        assert_eq!(target_of("https://kms.example/").as_deref(), Some("kms.example:443"));
        assert_eq!(target_of("127.0.0.1:7800").as_deref(), Some("127.0.0.1:7800"));
        assert_eq!(target_of("http://kms.example:80"), None);
        assert_eq!(target_of("https://kms.example/path"), None);
        assert_eq!(target_of("kms.example"), None);
        assert_eq!(target_of("https://user@kms.example:1"), None);
    }

    fn config(dir: &std::path::Path, targets: Vec<String>) -> OutboundConfig {
        OutboundConfig {
            targets,
            streams: EnclaveEndpoint::Unix(dir.join("enclave-tls.sock")),
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// An allowed target is connected and handed to the enclave's stream
    /// endpoint behind the outbound header; bytes pass both ways unchanged.
    #[tokio::test]
    async fn an_allowed_target_is_relayed_to_the_enclave_behind_the_outbound_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let enclave = tokio::net::UnixListener::bind(dir.path().join("enclave-tls.sock")).expect("bind");
        let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = remote.local_addr().expect("addr").to_string();
        let config = config(dir.path(), vec![target.clone()]);
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(async move { open(&config, 42, target, tx).await });
        let (mut far, _) = tokio::time::timeout(Duration::from_secs(10), remote.accept())
            .await
            .expect("connected in time")
            .expect("accept");
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), enclave.accept())
            .await
            .expect("handed over in time")
            .expect("accept");
        assert_eq!(
            keyward_wire::read_stream_start(&mut stream).await.expect("header"),
            keyward_wire::StreamStart::Outbound(42)
        );
        stream.write_all(b"client hello").await.expect("write");
        let mut got = [0u8; 12];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"client hello");
        far.write_all(b"server hello").await.expect("write");
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"server hello");
        drop(far);
        drop(stream);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the relay ends")
            .expect("joins");
        assert!(rx.try_recv().is_err(), "a success sends no failure frame");
    }

    /// A target the host was not configured with is refused with a reason,
    /// and nothing is connected.
    #[tokio::test]
    async fn a_target_not_configured_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), vec!["127.0.0.1:1".into()]);
        let (tx, mut rx) = mpsc::channel(4);
        open(&config, 7, "169.254.169.254:80".into(), tx).await;
        let frame = rx.recv().await.expect("a frame");
        match keyward_wire::decode(&frame[4..]) {
            Ok(Frame::OutboundFailed { id, reason }) => {
                assert_eq!(id, 7);
                assert!(reason.contains("not a configured --custody-endpoint"), "{reason}");
            }
            other => panic!("expected OutboundFailed, got {other:?}"),
        }
    }
}
