//! The host ↔ enclave wire protocol.
//!
//! Every message is one **frame**: a `u32` big-endian length followed by that
//! many bytes of CBOR ([`Frame`]). The length is checked against
//! [`MAX_FRAME_LEN`] *before* any buffer is allocated, on both sides.
//!
//! One connection carries many concurrent exchanges in both directions:
//! the host sends [`Frame::Request`]s and the enclave answers with
//! [`Frame::Response`]s; while it works on a request the enclave calls the
//! host's sealed-record store with [`Frame::StoreCall`] and the host answers
//! with [`Frame::StoreReply`]. Ids are chosen by the side that opens an
//! exchange and are only meaningful on that connection and in that direction.
//!
//! # Trust
//! This crate trusts nothing it decodes. It guarantees only that a decoded
//! frame is well-formed CBOR of the right shape and at most [`MAX_FRAME_LEN`]
//! bytes; every field is still attacker-controlled for the receiver. The
//! enclave authenticates requests (SigV4) and seals every stored value itself.
#![forbid(unsafe_code)]

mod operation;
mod status;
mod stream;
pub use operation::{Operation, actions};
pub use status::{
    EnclaveStatus, FreshnessViolations, HistogramKind, HistogramSample, LATENCY_BOUNDS_MICROS, MetricsSnapshot,
    RequestCount, operation_label, outcome_label,
};
pub use stream::{
    MAX_STREAM_ADDR, OUTBOUND_MAGIC, STREAM_MAGIC, StreamStart, encode_outbound_header, encode_stream_header,
    read_stream_header, read_stream_start,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version spoken in the handshake. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame body either side accepts (4 MiB): room for a 1 MiB policy
/// module in base64 inside a JSON body inside a frame, and nothing more.
pub const MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// One message on the host ↔ enclave link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// First frame from the host on a new connection.
    Hello { version: u32 },
    /// The enclave's answer to [`Frame::Hello`]; `version` is the one it speaks.
    HelloAck { version: u32 },
    /// Retired (protocol 1): API calls no longer travel on the framed link.
    /// Clients' requests reach the enclave only inside TLS, on client streams
    /// (see [`stream`](crate::read_stream_header)); an enclave that receives
    /// this frame closes the connection.
    Request { id: u64, request: ApiRequest },
    /// Retired with [`Frame::Request`]; never sent.
    Response { id: u64, response: ApiResponse },
    /// Enclave → host: a call to the sealed-record store.
    StoreCall { id: u64, op: StoreOp },
    /// Host → enclave: the store's answer to the call with the same id.
    StoreReply { id: u64, result: StoreResult },
    /// Liveness probe (host → enclave); answered with [`Frame::Pong`].
    Ping { id: u64 },
    /// Answer to [`Frame::Ping`].
    Pong { id: u64 },
    /// Host → enclave: asks for the enclave's public status (the enclave
    /// CA certificate and the aggregated request metrics).
    StatusRequest { id: u64 },
    /// Enclave → host: the answer to [`Frame::StatusRequest`].
    Status { id: u64, status: EnclaveStatus },
    /// Host → enclave: records the store saw change (this node's writes and,
    /// on a shared store, every other node's), so the enclave can drop cached
    /// copies early. An untrusted hint, never answered: the enclave's bound
    /// on staleness comes from re-reading, not from these.
    Invalidate { hints: Vec<StoreHint> },
    /// Enclave → host: open a TCP connection to `target` (`host:port`) and
    /// hand it to the enclave as an outbound stream (header
    /// [`encode_outbound_header`]`(id)` on the client-stream endpoint). The
    /// host connects only to targets it was configured with
    /// (`--custody-endpoint`, `--join-peer`); the enclave runs TLS with
    /// pinned roots on the stream, so the host relays ciphertext only.
    OutboundOpen { id: u64, target: String },
    /// Host → enclave: the outbound connection `id` could not be opened
    /// (refused target, connection failure); the text is for logs and for
    /// the sealed reason. Success is the stream itself.
    OutboundFailed { id: u64, reason: String },
}

/// One invalidation hint of [`Frame::Invalidate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreHint {
    /// `namespace`/`key` now has `version` (a deletion included).
    Record {
        namespace: String,
        key: String,
        version: u64,
    },
    /// Hints may have been missed: every cached record is suspect.
    All,
}

/// An HTTP request as the enclave needs it to verify SigV4 and serve it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRequest {
    /// Host-chosen id for logs on both sides (not trusted for anything else).
    pub request_id: String,
    pub method: String,
    /// Path as sent, percent-encoding untouched.
    pub path: String,
    /// Raw query string without the `?` (may be empty).
    pub query: String,
    /// Header names (lower-case) and raw values, in arrival order.
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The client's address as the host reports it (`ip:port`). Untrusted:
    /// used only to rate-limit requests that fail authentication, never to
    /// authorize. `None` when the host does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
}

impl std::fmt::Debug for ApiRequest {
    // Bodies carry plaintexts and headers carry signatures: neither is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("request_id", &self.request_id)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The enclave's complete HTTP answer; the host relays it unchanged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiResponse {
    pub status: u16,
    /// AWS error type when `status` is not 200 (for the host's metrics only).
    pub error_type: Option<String>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Where the enclave spent the request's time, for the host's metrics
    /// (absent from older enclaves: all zero).
    #[serde(default)]
    pub timing: Timing,
}

/// Time the enclave spent on one request, in microseconds, and whether it
/// was refused before authenticating, for the host's metrics. Nothing about
/// keys, tenants or contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From the request frame's arrival in the handler to its answer.
    pub enclave_micros: u64,
    /// In policy enforcement (request context and WebAssembly decisions).
    pub policy_micros: u64,
    /// Set when the request did not authenticate (absent from older enclaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<Unauthenticated>,
}

/// What became of a request that did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unauthenticated {
    /// Answered with its authentication error.
    Rejected,
    /// Over its client address's or access key id's share of failures:
    /// answered `ThrottlingException`.
    Throttled,
}

impl Unauthenticated {
    /// The label of the host's `keyward_unauthenticated_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Unauthenticated::Rejected => "rejected",
            Unauthenticated::Throttled => "throttled",
        }
    }
}

impl std::fmt::Debug for ApiResponse {
    // Successful bodies may carry plaintexts and data keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("error_type", &self.error_type)
            .field("body_len", &self.body.len())
            .field("timing", &self.timing)
            .finish()
    }
}

/// A call to the host's store. Values are opaque sealed bytes; keys are
/// record identities chosen by the enclave (they are not secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreOp {
    Get {
        namespace: String,
        key: String,
    },
    /// Durable before the reply is sent.
    Put {
        namespace: String,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Several values in one namespace, written atomically (all or none) and
    /// durable before the reply is sent.
    PutBatch {
        namespace: String,
        entries: Vec<(String, serde_bytes::ByteBuf)>,
    },
    /// Durable before the reply is sent.
    Delete {
        namespace: String,
        key: String,
    },
    /// Keys with `prefix`, in byte order, strictly after `start_after`, at most `limit`.
    List {
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    },
    /// A record with its version: answered with [`StoreResult::Versioned`].
    ///
    /// Every record identity (namespace and key) has a version: 0 until it is
    /// first written, then one more on every write, deletions included (a
    /// deleted record keeps its version, without a value). So versions of
    /// one identity never repeat, even across a delete and a re-creation.
    GetVersioned {
        namespace: String,
        key: String,
    },
    /// Compare-and-swap put: written only if the record is as `expected`;
    /// the new version is the record's current version plus one. Durable
    /// before the reply ([`StoreResult::Committed`] with one version, or
    /// [`StoreResult::Conflict`] and nothing written).
    CasPut {
        namespace: String,
        key: String,
        expected: Expected,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Several compare-and-swap writes, possibly across namespaces, applied
    /// atomically: all of them (durable before the reply, answered with
    /// [`StoreResult::Committed`], one version per write in order) or none
    /// ([`StoreResult::Conflict`] naming a write whose expectation failed).
    /// One identity may appear at most once.
    Batch {
        writes: Vec<StoreWrite>,
    },
    /// Like [`StoreOp::List`], with versions and a cursor: answered with
    /// [`StoreResult::Records`]. Deleted records are not listed.
    ListVersioned {
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    },
}

/// What a compare-and-swap write expects of the record it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Expected {
    /// The record has no value: never written, or deleted (whatever its version).
    Absent,
    /// The record's current version is exactly this (0: never written; a
    /// deleted record's version matches too).
    Version(u64),
}

/// One write of a [`StoreOp::Batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreWrite {
    Put {
        namespace: String,
        key: String,
        expected: Expected,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Deletes the record, which must be at version `expected` and have a
    /// value; the deletion gets version `expected + 1`.
    Delete {
        namespace: String,
        key: String,
        expected: u64,
    },
}

/// A listed record: its key, version and sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedEntry {
    pub key: String,
    pub version: u64,
    pub value: serde_bytes::ByteBuf,
}

/// The store's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreResult {
    /// Answer to `Get`.
    Value(Option<serde_bytes::ByteBuf>),
    /// Answer to `Put`, `PutBatch` and `Delete`.
    Done,
    /// Answer to `List`: keys and sealed values.
    Entries(Vec<(String, serde_bytes::ByteBuf)>),
    /// Answer to `GetVersioned`: the record's version (0 if never written)
    /// and its value (none if never written or deleted).
    Versioned {
        version: u64,
        value: Option<serde_bytes::ByteBuf>,
    },
    /// Answer to `CasPut` and `Batch`: durable; the new version of each
    /// write, in order.
    Committed(Vec<u64>),
    /// Answer to `CasPut` and `Batch`: nothing was written, because write
    /// `index` (0 for `CasPut`) found the record at `version` (with a value
    /// or not, `exists`) instead of what it expected.
    Conflict { index: u32, version: u64, exists: bool },
    /// Answer to `ListVersioned`: at most `limit` records in key order, and
    /// the `start_after` of the next page when there may be more.
    Records {
        entries: Vec<VersionedEntry>,
        next: Option<String>,
    },
    /// The store failed; the text is for logs.
    Error(String),
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME_LEN}")]
    TooLarge(u64),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `frame` with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Appends `frame` with its length prefix to `out`; on error `out` is left
/// as it was.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    if let Err(e) = serde_cbor::to_writer(&mut *out, frame) {
        out.truncate(start);
        return Err(WireError::Malformed(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME_LEN as usize {
        out.truncate(start);
        return Err(WireError::TooLarge(len as u64));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Most bytes one [`write_batches`] write gathers from queued frames.
const WRITE_BATCH: usize = 256 * 1024;

/// Writes already-encoded frames from `queue` until it closes or a write
/// fails: every frame queued while a write is in progress goes out in the
/// next single write, so a busy connection costs one system call per batch
/// rather than per frame.
pub async fn write_batches<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), WireError> {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        if queue.is_empty() {
            writer.write_all(&first).await?;
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            writer.write_all(&batch).await?;
        }
        writer.flush().await?;
    }
    Ok(())
}

/// Decodes one frame body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
    if body.len() > MAX_FRAME_LEN as usize {
        return Err(WireError::TooLarge(body.len() as u64));
    }
    serde_cbor::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Reads one frame. The length prefix is validated before the body buffer is
/// allocated. A clean end of stream before the prefix is [`WireError::Closed`].
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Frame, WireError> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(WireError::Io(e)),
    }
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge(u64::from(len)));
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Malformed("truncated frame".into())
        } else {
            WireError::Io(e)
        }
    })?;
    decode(&body)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> Result<(), WireError> {
    let bytes = encode(frame)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..256)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            any::<u32>().prop_map(|version| Frame::Hello { version }),
            any::<u64>().prop_map(|id| Frame::Ping { id }),
            (
                any::<u64>(),
                ".{0,20}",
                ".{0,20}",
                arb_bytes(),
                proptest::collection::vec((".{0,10}", arb_bytes()), 0..5)
            )
                .prop_map(|(id, request_id, path, body, headers)| Frame::Request {
                    id,
                    request: ApiRequest {
                        request_id,
                        method: "POST".into(),
                        path,
                        query: String::new(),
                        headers: headers
                            .into_iter()
                            .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v)))
                            .collect(),
                        body,
                        client_addr: None,
                    },
                }),
            (any::<u64>(), any::<u16>(), proptest::option::of(".{0,20}"), arb_bytes()).prop_map(
                |(id, status, error_type, body)| {
                    Frame::Response {
                        id,
                        response: ApiResponse {
                            status,
                            error_type,
                            body,
                            timing: Timing {
                                enclave_micros: u64::from(status),
                                policy_micros: 3,
                                unauthenticated: (status % 2 == 0).then_some(Unauthenticated::Throttled),
                            },
                        },
                    }
                }
            ),
            (any::<u64>(), ".{0,10}", ".{0,10}", arb_bytes()).prop_map(|(id, namespace, key, value)| {
                Frame::StoreCall {
                    id,
                    op: StoreOp::Put { namespace, key, value },
                }
            }),
            (any::<u64>(), proptest::option::of(arb_bytes())).prop_map(|(id, v)| Frame::StoreReply {
                id,
                result: StoreResult::Value(v.map(serde_bytes::ByteBuf::from))
            }),
            (any::<u64>(), ".{0,10}", any::<Option<u64>>(), arb_bytes()).prop_map(|(id, key, version, value)| {
                Frame::StoreCall {
                    id,
                    op: StoreOp::Batch {
                        writes: vec![
                            StoreWrite::Put {
                                namespace: "key".into(),
                                key: key.clone(),
                                expected: version.map_or(Expected::Absent, Expected::Version),
                                value,
                            },
                            StoreWrite::Delete {
                                namespace: "alias".into(),
                                key,
                                expected: version.unwrap_or(1),
                            },
                        ],
                    },
                }
            }),
            (any::<u64>(), any::<u64>(), proptest::option::of(arb_bytes())).prop_map(|(id, version, v)| {
                Frame::StoreReply {
                    id,
                    result: StoreResult::Versioned {
                        version,
                        value: v.map(serde_bytes::ByteBuf::from),
                    },
                }
            }),
            (any::<u64>(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(id, index, version, exists)| {
                Frame::StoreReply {
                    id,
                    result: StoreResult::Conflict { index, version, exists },
                }
            }),
            (any::<u64>(), ".{0,10}", any::<u64>(), arb_bytes()).prop_map(|(id, key, version, value)| {
                Frame::StoreReply {
                    id,
                    result: StoreResult::Records {
                        entries: vec![VersionedEntry {
                            key: key.clone(),
                            version,
                            value: serde_bytes::ByteBuf::from(value),
                        }],
                        next: Some(key),
                    },
                }
            }),
            (any::<u64>(), ".{0,30}").prop_map(|(id, target)| Frame::OutboundOpen { id, target }),
            (any::<u64>(), ".{0,30}").prop_map(|(id, reason)| Frame::OutboundFailed { id, reason }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(frame in arb_frame()) {
            let bytes = encode(&frame).expect("encodes");
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            prop_assert_eq!(len, bytes.len() - 4);
            prop_assert_eq!(decode(&bytes[4..]).expect("decodes"), frame);
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }

    /// The store calls the enclave sends today keep their exact encoding
    /// (the versioned calls were added beside them, not in their place).
    #[test]
    fn unversioned_store_calls_keep_their_encoding() {
        use serde_cbor::Value;
        let text = |s: &str| Value::Text(s.into());
        let map = |entries: Vec<(Value, Value)>| Value::Map(entries.into_iter().collect());
        let put = Frame::StoreCall {
            id: 3,
            op: StoreOp::Put {
                namespace: "key".into(),
                key: "t/k".into(),
                value: vec![1, 2],
            },
        };
        let expected = map(vec![(
            text("StoreCall"),
            map(vec![
                (text("id"), Value::Integer(3)),
                (
                    text("op"),
                    map(vec![(
                        text("Put"),
                        map(vec![
                            (text("namespace"), text("key")),
                            (text("key"), text("t/k")),
                            (text("value"), Value::Bytes(vec![1, 2])),
                        ]),
                    )]),
                ),
            ]),
        )]);
        let encoded = encode(&put).expect("encodes");
        let decoded: Value = serde_cbor::from_slice(&encoded[4..]).expect("CBOR");
        assert_eq!(decoded, expected);
        let done = encode(&Frame::StoreReply {
            id: 3,
            result: StoreResult::Done,
        })
        .expect("encodes");
        let decoded: Value = serde_cbor::from_slice(&done[4..]).expect("CBOR");
        assert_eq!(
            decoded,
            map(vec![(
                text("StoreReply"),
                map(vec![(text("id"), Value::Integer(3)), (text("result"), text("Done"))]),
            )])
        );
    }

    #[tokio::test]
    async fn oversize_prefix_is_rejected_before_reading_the_body() {
        // Only the prefix is sent: a reader that tried to allocate and fill
        // 4 GiB would block or abort; ours must refuse at once.
        let prefix = u32::MAX.to_be_bytes();
        let mut reader: &[u8] = &prefix;
        match read_frame(&mut reader).await {
            Err(WireError::TooLarge(n)) => assert_eq!(n, u64::from(u32::MAX)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_frame_is_malformed_and_empty_stream_is_closed() {
        let mut bytes = encode(&Frame::Ping { id: 7 }).expect("encodes");
        bytes.pop();
        let mut reader: &[u8] = &bytes;
        assert!(matches!(read_frame(&mut reader).await, Err(WireError::Malformed(_))));
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty).await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn frame_roundtrips_through_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frame = Frame::StoreCall {
            id: 3,
            op: StoreOp::List {
                namespace: "key".into(),
                prefix: "t/".into(),
                start_after: None,
                limit: 10,
            },
        };
        let sent = frame.clone();
        let writer = tokio::spawn(async move { write_frame(&mut a, &sent).await });
        assert_eq!(read_frame(&mut b).await.expect("reads"), frame);
        writer.await.expect("joins").expect("writes");
    }
}
