use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn open_request(frame: &[u8]) -> (u64, String) {
    match keyward_wire::decode(&frame[4..]) {
        Ok(Frame::OutboundOpen { id, target }) => (id, target),
        other => panic!("expected OutboundOpen, got {other:?}"),
    }
}

/// A request goes out on the link; the stream the host hands over under
/// its id is the one the caller gets.
#[tokio::test]
async fn a_request_is_answered_by_the_stream_handed_over_under_its_id() {
    let hub = std::sync::Arc::new(Outbound::new());
    let (tx, mut host) = mpsc::channel(4);
    hub.attach(tx);
    let opening = {
        let hub = std::sync::Arc::clone(&hub);
        tokio::spawn(async move { hub.open("kms.example:443").await })
    };
    let (id, target) = open_request(&host.recv().await.expect("a frame"));
    assert_eq!(target, "kms.example:443");
    let (near, mut far) = tokio::io::duplex(64);
    // A stream under another id is not this request's.
    let (stray, _) = tokio::io::duplex(64);
    hub.deliver(id.wrapping_add(1000), Box::new(stray));
    hub.deliver(id, Box::new(near));
    let mut stream = opening.await.expect("joins").expect("a stream");
    stream.write_all(b"hello").await.expect("write");
    let mut got = [0u8; 5];
    far.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"hello");
}

/// The host's refusal reaches the caller with its reason; without a link
/// nothing is asked.
#[tokio::test]
async fn a_refusal_or_no_link_is_an_error() {
    let hub = std::sync::Arc::new(Outbound::new());
    assert!(matches!(hub.open("a:1").await, Err(OutboundError::NoLink(_))));
    let (tx, mut host) = mpsc::channel(4);
    hub.attach(tx);
    let opening = {
        let hub = std::sync::Arc::clone(&hub);
        tokio::spawn(async move { hub.open("a:1").await })
    };
    let (id, _) = open_request(&host.recv().await.expect("a frame"));
    hub.failed(id, "connection refused".into());
    match opening.await.expect("joins") {
        Err(OutboundError::Refused { target, reason }) => {
            assert_eq!(target, "a:1");
            assert_eq!(reason, "connection refused");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // A closed link is not used.
    drop(host);
    assert!(matches!(hub.open("a:1").await, Err(OutboundError::NoLink(_))));
}

mod https_tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::super::https::{Endpoint, HttpsClient, HttpsError, pinned_client_config};
    use super::super::{BoxedStream, Connect, ConnectFuture};
    use crate::tls::tests::{OperatorCa, pem};

    /// A connector to an in-test TLS server for `name` under `ca`: a
    /// rustls + hyper server on a duplex pipe echoing the request body with
    /// the `x-amz-target` header in front.
    struct TestServer {
        config: Arc<rustls::ServerConfig>,
        targets: std::sync::Mutex<Vec<String>>,
    }

    impl TestServer {
        fn new(ca: &OperatorCa, name: &str) -> Arc<Self> {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = ca.issue_now(&key, &[name]);
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("server config");
            Arc::new(TestServer {
                config: Arc::new(config),
                targets: Default::default(),
            })
        }
    }

    impl Connect for TestServer {
        fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a> {
            self.targets.lock().expect("lock").push(target.to_string());
            let (near, far) = tokio::io::duplex(64 * 1024);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(far).await else { return };
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let target = request
                        .headers()
                        .get("x-amz-target")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let host = request
                        .headers()
                        .get("host")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let body = request.into_body().collect().await?.to_bytes();
                    let mut answer = target;
                    answer.push(b'|');
                    answer.extend_from_slice(&host);
                    answer.push(b'|');
                    answer.extend_from_slice(&body);
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(answer))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
            Box::pin(async move { Ok(Box::new(near) as BoxedStream) })
        }
    }

    #[test]
    fn endpoints_parse_strictly() {
        let e = Endpoint::parse("https://kms.example:8443").expect("endpoint");
        assert_eq!(
            (e.target(), e.authority()),
            ("kms.example:8443".into(), "kms.example:8443".into())
        );
        let e = Endpoint::parse("https://kms.eu-west-1.amazonaws.com/").expect("endpoint");
        assert_eq!(e.target(), "kms.eu-west-1.amazonaws.com:443");
        assert_eq!(e.authority(), "kms.eu-west-1.amazonaws.com");
        for bad in [
            "http://kms.example",
            "https://",
            "https://a/b",
            "https://u@a",
            "https://a:x",
            "kms:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(pinned_client_config(b"not pem").is_err());
    }

    /// A POST reaches the server through the connector over TLS verified
    /// against the pinned CA, and its answer comes back.
    #[tokio::test]
    async fn a_post_round_trips_over_tls_to_the_pinned_ca() {
        let ca = OperatorCa::new("custody CA");
        let server = TestServer::new(&ca, "custody.test");
        let client = HttpsClient::new(
            Endpoint::parse("https://custody.test:7800").expect("endpoint"),
            pinned_client_config(&pem(&[&ca.cert])).expect("roots"),
            Arc::clone(&server) as Arc<dyn Connect>,
        );
        let headers = vec![("x-amz-target".to_string(), "TrentService.Decrypt".to_string())];
        let answer = client.post(&headers, b"{\"a\":1}".to_vec()).await.expect("answer");
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], b"TrentService.Decrypt|custody.test:7800|{\"a\":1}");
        assert_eq!(
            *server.targets.lock().expect("lock"),
            vec!["custody.test:7800".to_string()]
        );
    }

    /// A server whose certificate is not under the pinned CA, or not for
    /// the endpoint's name, fails the handshake: nothing is sent.
    #[tokio::test]
    async fn another_ca_or_name_fails_the_handshake() {
        let ca = OperatorCa::new("custody CA");
        let other = OperatorCa::new("the host's CA");
        for (server, name) in [
            (TestServer::new(&other, "custody.test"), "custody.test"),
            (TestServer::new(&ca, "elsewhere.test"), "custody.test"),
        ] {
            let client = HttpsClient::new(
                Endpoint::parse(&format!("https://{name}:7800")).expect("endpoint"),
                pinned_client_config(&pem(&[&ca.cert])).expect("roots"),
                server as Arc<dyn Connect>,
            );
            match client.post(&[], b"secret".to_vec()).await {
                Err(HttpsError::Tls { reason, .. }) => assert!(reason.contains("certificate"), "{reason}"),
                other => panic!("expected a TLS failure, got {:?}", other.map(|a| a.status)),
            }
        }
    }
}
