//! The client-stream header. For each client TCP connection the host opens
//! one stream to the enclave (a Unix-socket connection in mock mode, vsock
//! in nitro mode), writes this header, and then copies the client's bytes
//! both ways without reading them: everything after the header is the
//! client's TLS session, which ends inside the enclave.
//!
//! `"KWS1"` ‖ u8 length ‖ the client's address as the host reports it
//! (`ip:port`, UTF-8, at most [`MAX_STREAM_ADDR`] bytes; length 0: unknown).
//! The address is untrusted: the enclave uses it only to rate-limit
//! requests that fail authentication.
//!
//! **Outbound streams** run the other way round: the enclave asks the host
//! over the link ([`crate::Frame::OutboundOpen`]) to connect to a target
//! (the custody key service, a cluster peer); the host connects, opens a
//! stream to the enclave's client-stream endpoint as for a client, writes
//! `"KWO1"` ‖ the request's id (u64, big-endian) and copies bytes both ways
//! unread. The enclave runs a TLS *client* on it with pinned roots, so the
//! host sees ciphertext only; the id only pairs the stream with the
//! enclave's waiting request (a host that mixes them up fails the
//! handshake, nothing more).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::WireError;

/// First bytes of every client stream.
pub const STREAM_MAGIC: &[u8; 4] = b"KWS1";
/// First bytes of every outbound stream.
pub const OUTBOUND_MAGIC: &[u8; 4] = b"KWO1";
/// Longest address a header carries.
pub const MAX_STREAM_ADDR: usize = 64;

/// The header for a client at `addr` (`None`: unknown).
pub fn encode_stream_header(addr: Option<std::net::SocketAddr>) -> Vec<u8> {
    let text = addr.map(|a| a.to_string()).unwrap_or_default();
    let text = if text.len() > MAX_STREAM_ADDR {
        ""
    } else {
        text.as_str()
    };
    let mut out = Vec::with_capacity(5 + text.len());
    out.extend_from_slice(STREAM_MAGIC);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
    out
}

/// The header of the outbound stream that answers the enclave's
/// [`crate::Frame::OutboundOpen`] with this `id`.
pub fn encode_outbound_header(id: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(OUTBOUND_MAGIC);
    out[4..].copy_from_slice(&id.to_be_bytes());
    out
}

/// What a stream the host opened to the enclave's stream endpoint carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStart {
    /// A client's connection; its address when the host gave a valid one.
    Client(Option<String>),
    /// The enclave's own outbound connection requested with this id.
    Outbound(u64),
}

/// Reads a stream header: the client's address when the host gave a valid
/// one. Anything else than a client header (an outbound header, wrong
/// magic, oversize length) is an error.
pub async fn read_stream_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<String>, WireError> {
    match read_stream_start(reader).await? {
        StreamStart::Client(addr) => Ok(addr),
        StreamStart::Outbound(_) => Err(WireError::Malformed("not a client stream header".into())),
    }
}

/// Reads a client or outbound stream header. Anything else (wrong magic,
/// oversize length, truncation) is an error.
pub async fn read_stream_start<R: AsyncRead + Unpin>(reader: &mut R) -> Result<StreamStart, WireError> {
    let mut magic = [0u8; 4];
    match reader.read_exact(&mut magic).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(WireError::Io(e)),
    }
    let truncated = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Malformed("truncated stream header".into())
        } else {
            WireError::Io(e)
        }
    };
    if &magic == OUTBOUND_MAGIC {
        let mut id = [0u8; 8];
        reader.read_exact(&mut id).await.map_err(truncated)?;
        return Ok(StreamStart::Outbound(u64::from_be_bytes(id)));
    }
    if &magic != STREAM_MAGIC {
        return Err(WireError::Malformed("not a client stream header".into()));
    }
    let mut len = [0u8; 1];
    reader.read_exact(&mut len).await.map_err(truncated)?;
    let len = usize::from(len[0]);
    if len > MAX_STREAM_ADDR {
        return Err(WireError::Malformed("client address too long".into()));
    }
    let mut addr = vec![0u8; len];
    reader.read_exact(&mut addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Malformed("truncated client stream header".into())
        } else {
            WireError::Io(e)
        }
    })?;
    Ok(StreamStart::Client(
        std::str::from_utf8(&addr)
            .ok()
            .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn headers_round_trip_and_garbage_is_refused() {
        let addr: std::net::SocketAddr = "192.0.2.7:51234".parse().expect("addr");
        let bytes = encode_stream_header(Some(addr));
        let mut reader = &bytes[..];
        assert_eq!(
            read_stream_header(&mut reader).await.expect("header").as_deref(),
            Some("192.0.2.7:51234")
        );
        let unknown = encode_stream_header(None);
        assert_eq!(read_stream_header(&mut &unknown[..]).await.expect("header"), None);
        let mut bogus = STREAM_MAGIC.to_vec();
        bogus.extend_from_slice(&[5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(read_stream_header(&mut &bogus[..]).await.expect("header"), None);
        assert!(read_stream_header(&mut &b"GET / HTTP/1.1\r\n"[..]).await.is_err());
        let mut long = STREAM_MAGIC.to_vec();
        long.push(200);
        assert!(read_stream_header(&mut &long[..]).await.is_err());
        let mut short = STREAM_MAGIC.to_vec();
        short.extend_from_slice(&[10, b'1']);
        assert!(read_stream_header(&mut &short[..]).await.is_err());
    }

    #[tokio::test]
    async fn outbound_headers_round_trip_and_are_no_client_header() {
        let header = encode_outbound_header(0x0102_0304_0506_0708);
        assert_eq!(
            read_stream_start(&mut &header[..]).await.expect("header"),
            StreamStart::Outbound(0x0102_0304_0506_0708)
        );
        // A client stream's reader refuses it.
        assert!(read_stream_header(&mut &header[..]).await.is_err());
        // Truncated id.
        assert!(read_stream_start(&mut &header[..9]).await.is_err());
        let client = encode_stream_header(None);
        assert_eq!(
            read_stream_start(&mut &client[..]).await.expect("header"),
            StreamStart::Client(None)
        );
    }
}
