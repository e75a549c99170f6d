//! HTTPS on one stream, with real rustls on both sides over an in-memory
//! duplex pipe. Timeout tests run on tokio's paused clock: the runtime
//! jumps to the next timer when every task waits, so they take no real time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keyward_wire::{ApiRequest, ApiResponse, Timing};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::tls::tests::{Fixture, OperatorCa, pem};
use crate::tls::{CertSlot, TlsIdentity, server_config};

struct Setup {
    fixture: Fixture,
    identity: TlsIdentity,
    slot: Arc<CertSlot>,
    server: Arc<TlsServer>,
}

async fn setup(limits: Limits) -> Setup {
    let fixture = Fixture::new();
    let identity = fixture.identity().await;
    let slot = CertSlot::new(identity.certified_key().expect("certified key"));
    let server = Arc::new(TlsServer::new(
        server_config(Arc::clone(&slot)).expect("config"),
        limits,
        crate::api::error::refusal,
    ));
    Setup {
        fixture,
        identity,
        slot,
        server,
    }
}

/// Answers with what it received, as JSON.
fn echo() -> Handler {
    handler(|request: ApiRequest| async move {
        let target = request
            .headers
            .iter()
            .find(|(name, _)| name == "x-amz-target")
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
        let body = serde_json::json!({
            "request_id": request.request_id,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "target": target,
            "body": String::from_utf8_lossy(&request.body),
            "body_len": request.body.len(),
        });
        ApiResponse {
            status: 200,
            error_type: None,
            body: body.to_string().into_bytes(),
            timing: Timing::default(),
        }
    })
}

fn client_config(anchor: &CertificateDer<'_>, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(anchor.clone().into_owned()).expect("anchor");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn spawn_server(setup: &Setup, handler: Handler) -> (DuplexStream, JoinHandle<Result<(), ServeError>>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = Arc::clone(&setup.server);
    let task = tokio::spawn(async move { serve_tls_stream(server_io, &server, handler, None).await });
    (client_io, task)
}

async fn connect(
    setup: &Setup,
    config: Arc<ClientConfig>,
    name: &str,
) -> (
    std::io::Result<TlsStream<DuplexStream>>,
    JoinHandle<Result<(), ServeError>>,
) {
    let (client_io, task) = spawn_server(setup, echo());
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, client_io).await;
    (stream, task)
}

/// A TLS connection to a server answering with `handler`.
async fn connect_with(
    setup: &Setup,
    config: Arc<ClientConfig>,
    handler: Handler,
) -> (TlsStream<DuplexStream>, JoinHandle<Result<(), ServeError>>) {
    let (client_io, task) = spawn_server(setup, handler);
    let name = ServerName::try_from("localhost".to_owned()).expect("server name");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, client_io)
        .await
        .expect("handshake");
    (stream, task)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_client(stream: TlsStream<DuplexStream>) -> (Sender, JoinHandle<Result<(), hyper::Error>>) {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    (sender, tokio::spawn(connection))
}

fn kms_request() -> hyper::http::request::Builder {
    hyper::Request::post("/?probe=1")
        .header("host", "localhost")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.ListKeys")
}

async fn post(
    sender: &mut Sender,
    request: hyper::Request<Full<Bytes>>,
) -> (hyper::StatusCode, hyper::HeaderMap, serde_json::Value) {
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, headers, serde_json::from_slice(&body).expect("JSON body"))
}

#[tokio::test]
async fn a_post_round_trips_through_the_handler_over_tls_13_with_keep_alive() {
    let setup = setup(Limits::default()).await;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    for name in ["localhost", "127.0.0.1"] {
        let (stream, server) = connect(&setup, Arc::clone(&config), name).await;
        let stream = stream.expect("handshake with the CA bundle and the right name");
        let (_, session) = stream.get_ref();
        assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, client) = http_client(stream).await;
        // Two requests on one connection.
        for round in 0..2 {
            let body = format!("{{\"round\":{round}}}");
            let request = kms_request()
                .body(Full::new(Bytes::from(body.clone())))
                .expect("request");
            let (status, headers, echoed) = post(&mut sender, request).await;
            assert_eq!(status, 200);
            assert_eq!(headers["content-type"], "application/x-amz-json-1.1");
            let request_id = headers["x-amzn-requestid"].to_str().expect("ascii");
            assert_eq!(echoed["request_id"], request_id);
            assert_eq!(echoed["method"], "POST");
            assert_eq!(echoed["path"], "/");
            assert_eq!(echoed["query"], "probe=1");
            assert_eq!(echoed["target"], "TrentService.ListKeys");
            assert_eq!(echoed["body"], body);
        }
        drop(sender);
        client
            .await
            .expect("client task")
            .expect("client connection ends cleanly");
        server
            .await
            .expect("server task")
            .expect("the server ends when the client closes");
    }
}

#[tokio::test]
async fn a_tls_12_only_client_is_served() {
    let setup = setup(Limits::default()).await;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS12]);
    let (stream, _server) = connect(&setup, config, "localhost").await;
    let stream = stream.expect("TLS 1.2 handshake");
    let (_, session) = stream.get_ref();
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    let suite = session.negotiated_cipher_suite().expect("suite").suite();
    assert_eq!(suite, rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let (mut sender, _client) = http_client(stream).await;
    let request = kms_request().body(Full::new(Bytes::from("{}"))).expect("request");
    let (status, _, echoed) = post(&mut sender, request).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["body"], "{}");
}

fn client_error(result: std::io::Result<TlsStream<DuplexStream>>) -> rustls::Error {
    let Err(error) = result else {
        panic!("the handshake succeeded");
    };
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a TLS error: {error}"))
}

#[tokio::test]
async fn a_wrong_name_or_another_ca_fails_the_handshake() {
    let setup = setup(Limits::default()).await;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, server) = connect(&setup, config, "kms.example.com").await;
    let error = client_error(stream);
    assert!(
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{error:?}"
    );
    assert!(matches!(
        server.await.expect("server task"),
        Err(ServeError::Handshake(_))
    ));

    let other = OperatorCa::new("Someone Else");
    let (stream, _server) = connect(
        &setup,
        client_config(&other.cert, &[&rustls::version::TLS13]),
        "localhost",
    )
    .await;
    assert!(matches!(
        client_error(stream),
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    ));
}

#[tokio::test]
async fn an_imported_chain_is_served_to_new_connections() {
    let mut setup = setup(Limits::default()).await;
    let root = OperatorCa::new("Operator Root");
    let leaf = root.issue_now(setup.identity.key().pair(), &["kms.example.com"]);
    setup
        .identity
        .import_chain(
            &setup.fixture.records(),
            &pem(&[&leaf, &root.cert]),
            OffsetDateTime::now_utc(),
        )
        .await
        .expect("imported");
    setup
        .slot
        .replace(setup.identity.certified_key().expect("certified key"));
    let config = client_config(&root.cert, &[&rustls::version::TLS13]);
    let (stream, _server) = connect(&setup, config, "kms.example.com").await;
    let stream = stream.expect("handshake with the operator's root");
    let (_, session) = stream.get_ref();
    let presented = session.peer_certificates().expect("certificates");
    assert_eq!(presented[0], leaf);
    assert_eq!(
        crate::tls::spki_sha256(&presented[0]).expect("SPKI"),
        setup.identity.spki_sha256(),
        "the connection's certificate carries the attested key"
    );
    // The enclave CA no longer vouches for the served certificate.
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, _server) = connect(&setup, config, "localhost").await;
    assert!(stream.is_err());
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_closed_promptly() {
    // A long handshake timeout: the close below is the refusal, not the timer.
    let limits = Limits {
        handshake_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let setup = setup(limits).await;
    // A well-behaved connection, open meanwhile.
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, _good_server) = connect(&setup, config, "localhost").await;
    let (mut sender, _good_client) = http_client(stream.expect("handshake")).await;

    let (mut client, server) = spawn_server(&setup, echo());
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let mut received = Vec::new();
    // The bound only turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut received))
        .await
        .expect("the server hung on plain HTTP")
        .expect("read");
    // Nothing but (at most) a TLS alert record.
    assert!(received.is_empty() || received[0] == 0x15, "{received:?}");
    assert!(!received.windows(4).any(|w| w == b"HTTP"));
    assert!(matches!(
        server.await.expect("server task"),
        Err(ServeError::Handshake(_))
    ));
    // Garbage on one stream closes that stream only.
    let request = kms_request().body(Full::new(Bytes::from("{}"))).expect("request");
    let (status, _, _) = post(&mut sender, request).await;
    assert_eq!(status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_silent_or_stalled_handshake_is_cut_off_by_the_handshake_timeout() {
    let setup = setup(Limits::default()).await;
    let limit = setup.server.limits().handshake_timeout;

    // Connects and sends nothing.
    let (_client, server_io) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let result = serve_tls_stream(server_io, &setup.server, echo(), None).await;
    assert!(matches!(result, Err(ServeError::HandshakeTimeout)), "{result:?}");
    assert!(started.elapsed() >= limit);

    // Sends the first bytes of a ClientHello, then stalls.
    let (mut client, server) = spawn_server(&setup, echo());
    client
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    client.read_to_end(&mut received).await.expect("closed");
    assert!(matches!(
        server.await.expect("server task"),
        Err(ServeError::HandshakeTimeout)
    ));
    assert!(started.elapsed() >= limit);
}

#[tokio::test(start_paused = true)]
async fn partial_headers_are_cut_off_by_the_header_timeout() {
    let setup = setup(Limits::default()).await;
    let limit = setup.server.limits().header_timeout;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, server) = connect(&setup, config, "localhost").await;
    let mut stream = stream.expect("handshake");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TrentService.ListKeys\r\n")
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    // Ends when the server drops the connection (with or without a 408, and
    // with or without close_notify).
    let _ = stream.read_to_end(&mut received).await;
    assert!(started.elapsed() >= limit);
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "{received:?}"
    );
    let result = server.await.expect("server task");
    assert!(
        matches!(&result, Err(ServeError::Http(e)) if e.is_timeout()),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let setup = setup(Limits::default()).await;
    let limit = setup.server.limits().header_timeout;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, server) = connect(&setup, config, "localhost").await;
    let (mut sender, client) = http_client(stream.expect("handshake")).await;
    let request = kms_request().body(Full::new(Bytes::from("{}"))).expect("request");
    let (status, _, _) = post(&mut sender, request).await;
    assert_eq!(status, 200);
    let started = tokio::time::Instant::now();
    // The client keeps the connection open; the server ends it.
    let _ = client.await.expect("client task");
    assert!(started.elapsed() >= limit);
    let _ = server.await.expect("server task");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_the_answer_is_cut_off_by_the_write_timeout() {
    // A header timeout far away: the write timeout is what ends it.
    let limits = Limits {
        header_timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let setup = setup(limits).await;
    let limit = setup.server.limits().write_timeout;
    let big = handler(|_request: ApiRequest| async move {
        ApiResponse {
            status: 200,
            error_type: None,
            body: vec![b'x'; 1024 * 1024],
            timing: Timing::default(),
        }
    });
    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    let server = Arc::clone(&setup.server);
    let task = tokio::spawn(async move { serve_tls_stream(server_io, &server, big, None).await });
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, client_io)
        .await
        .expect("handshake");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    // Never reads; keeps the stream open.
    let started = tokio::time::Instant::now();
    let result = task.await.expect("server task");
    let elapsed = started.elapsed();
    assert!(elapsed >= limit && elapsed < Duration::from_secs(3600), "{elapsed:?}");
    let Err(ServeError::Http(error)) = result else {
        panic!("not cut off by a write error: {result:?}");
    };
    let io = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::TimedOut),
        "{error:?}"
    );
    drop(stream);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_the_body_timeout() {
    let limits = Limits {
        body_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let setup = setup(limits).await;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let (stream, _server) = connect(&setup, config, "localhost").await;
    let mut stream = stream.expect("handshake");
    // Declares 10 bytes, sends 2, and waits.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n{}")
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the server waited for the body forever");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeoutException"), "{text}");
}

#[tokio::test]
async fn the_proxys_body_and_header_limits_apply() {
    let setup = setup(Limits::default()).await;
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);

    // Exactly the limit is accepted.
    let (stream, _server) = connect(&setup, Arc::clone(&config), "localhost").await;
    let (mut sender, _client) = http_client(stream.expect("handshake")).await;
    let body = vec![b'a'; MAX_BODY];
    let request = kms_request().body(Full::new(Bytes::from(body))).expect("request");
    let (status, _, echoed) = post(&mut sender, request).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["body_len"], MAX_BODY);

    // One byte more is a 413 ValidationException.
    let (stream, _server) = connect(&setup, Arc::clone(&config), "localhost").await;
    let (mut sender, _client) = http_client(stream.expect("handshake")).await;
    let body = vec![b'a'; MAX_BODY + 1];
    let request = kms_request().body(Full::new(Bytes::from(body))).expect("request");
    let (status, headers, error) = post(&mut sender, request).await;
    assert_eq!(status, 413);
    assert_eq!(error["__type"], "ValidationException");
    assert!(headers.contains_key("x-amzn-requestid"));

    // More than 64 headers is a 400 ValidationException.
    let (stream, _server) = connect(&setup, config, "localhost").await;
    let (mut sender, _client) = http_client(stream.expect("handshake")).await;
    let mut builder = kms_request();
    for i in 0..MAX_HEADERS {
        builder = builder.header(format!("x-filler-{i}"), "x");
    }
    let request = builder.body(Full::new(Bytes::from("{}"))).expect("request");
    let (status, _, error) = post(&mut sender, request).await;
    assert_eq!(status, 400);
    assert_eq!(error["__type"], "ValidationException");
    assert_eq!(error["message"], "Too many headers.");
}

#[tokio::test]
async fn pipelined_requests_are_answered_one_at_a_time_in_order() {
    let setup = setup(Limits::default()).await;
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = {
        let in_flight = Arc::clone(&in_flight);
        let most = Arc::clone(&most);
        handler(move |request: ApiRequest| {
            let in_flight = Arc::clone(&in_flight);
            let most = Arc::clone(&most);
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::task::yield_now().await;
                in_flight.fetch_sub(1, SeqCst);
                ApiResponse {
                    status: 200,
                    error_type: None,
                    body: request.body,
                    timing: Timing::default(),
                }
            }
        })
    };
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = Arc::clone(&setup.server);
    tokio::spawn(async move { serve_tls_stream(server_io, &server, counting, None).await });
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, client_io)
        .await
        .expect("handshake");
    let mut pipelined = Vec::new();
    for i in 0..4 {
        pipelined.extend_from_slice(
            format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\n<{i}>").as_bytes(),
        );
    }
    pipelined
        .extend_from_slice(b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 3\r\n\r\n<4>");
    stream.write_all(&pipelined).await.expect("write");
    stream.flush().await.expect("flush");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    let text = String::from_utf8_lossy(&received);
    let order: Vec<usize> = (0..5)
        .map(|i| text.find(&format!("<{i}>")).expect("every request answered"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bodies_in_flight_are_bounded_by_the_body_budget() {
    let limits = Limits {
        body_timeout: Duration::from_millis(300),
        body_budget: Some(body_budget(4 * 1024)),
        ..Limits::default()
    };
    let setup = setup(limits).await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let holding = {
        let entered = Arc::clone(&entered);
        let release = Arc::clone(&release);
        handler(move |_request: ApiRequest| {
            let entered = Arc::clone(&entered);
            let release = Arc::clone(&release);
            async move {
                entered.notify_one();
                release.notified().await;
                ApiResponse {
                    status: 200,
                    error_type: None,
                    body: b"{}".to_vec(),
                    timing: Timing::default(),
                }
            }
        })
    };
    let config = client_config(setup.identity.ca_certificate_der(), &[&rustls::version::TLS13]);
    let body = || Full::new(Bytes::from(vec![b'a'; 3 * 1024]));

    // A 3 KiB body is being handled: it holds 3 of the 4 KiB.
    let (stream, _a) = connect_with(&setup, Arc::clone(&config), Arc::clone(&holding)).await;
    let (mut first, _first_client) = http_client(stream).await;
    let request = kms_request().body(body()).expect("request");
    let held = tokio::spawn(async move { post(&mut first, request).await.0 });
    tokio::time::timeout(Duration::from_secs(20), entered.notified())
        .await
        .expect("the first request reached the handler");

    // Another 3 KiB body waits for it, then is refused as a throttle.
    let (stream, _b) = connect_with(&setup, Arc::clone(&config), Arc::clone(&holding)).await;
    let (mut second, _second_client) = http_client(stream).await;
    let (status, _, error) = post(&mut second, kms_request().body(body()).expect("request")).await;
    assert_eq!(status, 400);
    assert_eq!(error["__type"], "ThrottlingException");

    // Once the first is answered, its share is free again.
    release.notify_one();
    assert_eq!(held.await.expect("first"), 200);
    let (stream, _c) = connect_with(&setup, config, echo()).await;
    let (mut third, _third_client) = http_client(stream).await;
    let (status, _, echoed) = post(&mut third, kms_request().body(body()).expect("request")).await;
    assert_eq!(status, 200);
    assert_eq!(echoed["body_len"], 3 * 1024);
}
