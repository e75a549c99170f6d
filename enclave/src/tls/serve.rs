//! HTTPS on one byte stream: the TLS handshake (rustls), then HTTP/1.1 with
//! keep-alive (hyper), each request handed to a [`Handler`] as an
//! [`ApiRequest`] and its [`ApiResponse`] written back.
//!
//! The limits the host proxy used to apply move here with the same
//! semantics: a body of at most [`MAX_BODY`]
//! bytes (else 413 `ValidationException`), at most [`MAX_HEADERS`] headers
//! (else 400 `ValidationException`), the request id made here and returned
//! as `x-amzn-RequestId`, `content-type: application/x-amz-json-1.1`. The
//! timeouts are new, because the enclave now faces clients' bytes:
//!
//! * the handshake must finish within [`Limits::handshake_timeout`]: a peer
//!   that sends nothing, or something that is not TLS (plain HTTP gets an
//!   alert), is dropped;
//! * each request's head must arrive within [`Limits::header_timeout`],
//!   counted from when the connection is ready for it, so it also bounds
//!   an idle keep-alive connection (slowloris);
//! * its body within [`Limits::body_timeout`];
//! * a write that the client does not read for [`Limits::write_timeout`]
//!   ends the connection (slow read).
//!
//! HTTP/1.1 serves the requests of one connection one at a time (hyper does
//! not run pipelined requests concurrently), so the per-connection in-flight
//! limit is one by construction; connections are bounded by whoever accepts
//! them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keyward_wire::{ApiRequest, ApiResponse};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::write_deadline::WriteDeadline;

/// Largest request body accepted (as the proxy enforced).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Most headers accepted (as the proxy enforced).
pub const MAX_HEADERS: usize = 64;

/// What a request handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ApiResponse> + Send>>;
/// Answers one request (later: `api::handle` on the enclave).
pub type Handler = Arc<dyn Fn(ApiRequest) -> HandlerFuture + Send + Sync>;

/// A [`Handler`] from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ApiResponse> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

/// A request refused before the handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// More than [`Limits::max_headers`] headers.
    TooManyHeaders,
    /// A body over the limit (the limit in bytes).
    BodyTooLarge(usize),
    /// The body broke off or was malformed.
    BodyUnreadable,
    /// The body did not arrive within [`Limits::body_timeout`].
    BodyTimeout,
    /// The service cannot take the request (not booted, no host link).
    Unavailable,
    /// The bodies in flight fill [`Limits::body_budget`] and none finished
    /// within [`Limits::body_timeout`].
    Busy,
}

/// Renders a [`Refusal`] as the answer the client gets.
pub type Refuser = fn(&Refusal) -> ApiResponse;

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// For each request head, and so for an idle keep-alive connection.
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long a write may wait for the client to read.
    pub write_timeout: Duration,
    pub max_body: usize,
    pub max_headers: usize,
    /// Bytes of request bodies being read or handled at once, over all
    /// connections (a semaphore of KiB, from [`body_budget`]; `None`:
    /// unbounded). A request reserves its declared length (`max_body` when
    /// it declares none) before its body is read and holds it until it is
    /// answered; one that waits longer than `body_timeout` is refused
    /// ([`Refusal::Busy`]). The enclave sizes it from `--memory-budget`.
    pub body_budget: Option<Arc<tokio::sync::Semaphore>>,
}

/// A [`Limits::body_budget`] of `bytes` (rounded down to KiB).
pub fn body_budget(bytes: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        (bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS),
    ))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_body: MAX_BODY,
            max_headers: MAX_HEADERS,
            body_budget: None,
        }
    }
}

/// The TLS configuration and limits every connection is served with.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    limits: Limits,
    refuse: Refuser,
}

impl TlsServer {
    /// `refuse` renders the answers to requests refused here (the enclave
    /// passes `api::error::refusal`).
    pub fn new(config: Arc<ServerConfig>, limits: Limits, refuse: Refuser) -> Self {
        TlsServer {
            acceptor: TlsAcceptor::from(config),
            limits,
            refuse,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// How a connection ended, when not by the client closing it cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("the TLS handshake did not finish in time")]
    HandshakeTimeout,
    #[error("the TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("the HTTP connection failed: {0}")]
    Http(hyper::Error),
}

/// Serves one client stream (a forwarded TCP connection) until it closes,
/// breaks protocol or times out. Never panics on the client's input.
/// `client_addr` is the client's address as the host reports it
/// (untrusted), copied into every request's `ApiRequest::client_addr`.
pub async fn serve_tls_stream<S>(
    stream: S,
    server: &TlsServer,
    handler: Handler,
    client_addr: Option<String>,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = server.limits.clone();
    let stream = WriteDeadline::new(stream, limits.write_timeout);
    let tls = match tokio::time::timeout(limits.handshake_timeout, server.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(ServeError::Handshake(e)),
        Err(_) => return Err(ServeError::HandshakeTimeout),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let refuse = server.refuse;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        let limits = limits.clone();
        let client_addr = client_addr.clone();
        async move { Ok::<_, Infallible>(answer(request, &limits, refuse, &handler, client_addr).await) }
    });
    match builder.serve_connection(TokioIo::new(tls), service).await {
        // Failing to say goodbye to a client that already left is not an error.
        Err(e) if !e.is_shutdown() => Err(ServeError::Http(e)),
        _ => Ok(()),
    }
}

async fn answer(
    request: Request<Incoming>,
    limits: &Limits,
    refuse: Refuser,
    handler: &Handler,
    client_addr: Option<String>,
) -> Response<Full<Bytes>> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    // A refusal closes the connection: the rest of the request may still be on the wire.
    let refused = |refusal: Refusal| {
        let answer = refuse(&refusal);
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        respond(&request_id, status, answer.body, true)
    };
    if parts.headers.len() > limits.max_headers {
        return refused(Refusal::TooManyHeaders);
    }
    // A declared length over the limit is refused before reading any of it.
    if body.size_hint().lower() > limits.max_body as u64 {
        return refused(Refusal::BodyTooLarge(limits.max_body));
    }
    // Held until the request is answered (its parsed form lives that long).
    let _reserved = match &limits.body_budget {
        Some(budget) => {
            let declared = body
                .size_hint()
                .upper()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(limits.max_body)
                .min(limits.max_body);
            let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
            match tokio::time::timeout(limits.body_timeout, Arc::clone(budget).acquire_many_owned(kib)).await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_)) | Err(_) => return refused(Refusal::Busy),
            }
        }
        None => None,
    };
    let body = match tokio::time::timeout(limits.body_timeout, Limited::new(body, limits.max_body).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refused(Refusal::BodyTooLarge(limits.max_body));
        }
        Ok(Err(_)) => return refused(Refusal::BodyUnreadable),
        Err(_) => return refused(Refusal::BodyTimeout),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                serde_bytes::ByteBuf::from(value.as_bytes().to_vec()),
            )
        })
        .collect();
    let forwarded = ApiRequest {
        request_id: request_id.clone(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body: Vec::from(body),
        client_addr,
    };
    let answer = handler(forwarded).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(&request_id, status, answer.body, false)
}

fn respond(request_id: &str, status: StatusCode, body: Vec<u8>, close: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.1"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests;
