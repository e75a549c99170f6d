//! The HTTP limit of the machine: an echo server answering each request with its body, driven by
//! the same client as the service. By default a rustls + hyper HTTPS echo with a certificate of
//! the enclave's shape (the service serves HTTPS from inside the enclave, so the limit to compare
//! with includes TLS); with `--plain-http` the former plain-HTTP axum echo, for the "before"
//! benchmark of builds that served plain HTTP.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::client::Endpoint;
use crate::tls::{ClientTls, EchoPki};

/// An echo server on its own runtime and threads, on a loopback port it picked.
pub(crate) struct Baseline {
    pub(crate) endpoint: Endpoint,
    /// How the report names it.
    pub(crate) label: &'static str,
}

impl Baseline {
    /// The HTTPS echo, or with `plain_http` the plain-HTTP axum echo.
    pub(crate) fn start(plain_http: bool) -> anyhow::Result<Baseline> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("echo")
            .build()?;
        if plain_http {
            std::thread::Builder::new()
                .name("axum-echo".into())
                .spawn(move || runtime.block_on(serve_plain(listener)))?;
            return Ok(Baseline {
                endpoint: Endpoint {
                    addr,
                    host: addr.to_string(),
                    tls: None,
                },
                label: "http echo",
            });
        }
        let pki = EchoPki::generate()?;
        let config = pki.server_config()?;
        let tls = ClientTls::new(pki.ca_pem.as_bytes(), "127.0.0.1")?;
        std::thread::Builder::new()
            .name("tls-echo".into())
            .spawn(move || runtime.block_on(serve_tls(listener, config)))?;
        Ok(Baseline {
            endpoint: Endpoint {
                addr,
                host: addr.to_string(),
                tls: Some(tls),
            },
            label: "tls echo",
        })
    }
}

/// rustls + hyper HTTP/1.1 (keep-alive), one task per connection, as the enclave serves.
async fn serve_tls(listener: std::net::TcpListener, config: Arc<rustls::ServerConfig>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return eprintln!("TLS echo baseline cannot listen: {e}"),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("TLS echo baseline: accept failed: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(echo);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(request: http::Request<hyper::body::Incoming>) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let mut response = http::Response::new(Full::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    Ok(response)
}

/// The former baseline, unchanged: axum 0.8 `POST /` echo over plain HTTP.
async fn serve_plain(listener: std::net::TcpListener) {
    let app = axum::Router::new().fallback(echo_plain);
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("axum echo baseline stopped: {e}");
            }
        }
        Err(e) => eprintln!("axum echo baseline cannot listen: {e}"),
    }
}

async fn echo_plain(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")], body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Prepared, Signer, connect, send};

    fn signer() -> Signer {
        Signer {
            access_key_id: "AKIABASELINEBASELINE".into(),
            secret: "baseline".repeat(5),
            region: "us-east-1".into(),
        }
    }

    async fn echo_round_trip(baseline: &Baseline) -> anyhow::Result<()> {
        let prepared = Prepared {
            endpoint: baseline.endpoint.clone(),
            target: "TrentService.Decrypt",
            body: Bytes::from_static(br#"{"CiphertextBlob":"AAAA"}"#),
        };
        let mut conn = connect(&baseline.endpoint).await?;
        // Two requests on one kept-alive connection.
        for _ in 0..2 {
            let (status, body) = send(&mut conn, &prepared, &signer()).await?;
            assert_eq!(status, 200);
            assert_eq!(body, prepared.body);
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_tls_echo_answers_over_https_only() -> anyhow::Result<()> {
        let baseline = Baseline::start(false)?;
        assert_eq!(baseline.label, "tls echo");
        echo_round_trip(&baseline).await?;

        // Plain HTTP to it gets no HTTP answer.
        let plain = Endpoint {
            tls: None,
            ..baseline.endpoint.clone()
        };
        let prepared = Prepared {
            endpoint: plain.clone(),
            target: "TrentService.Decrypt",
            body: Bytes::from_static(b"{}"),
        };
        let outcome = match connect(&plain).await {
            Ok(mut conn) => send(&mut conn, &prepared, &signer()).await.map(|(status, _)| status),
            Err(e) => Err(e),
        };
        assert!(outcome.is_err(), "plain HTTP got {outcome:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_refuses_the_tls_echo() -> anyhow::Result<()> {
        let baseline = Baseline::start(false)?;
        let other = EchoPki::generate()?;
        let endpoint = Endpoint {
            tls: Some(ClientTls::new(other.ca_pem.as_bytes(), "127.0.0.1")?),
            ..baseline.endpoint.clone()
        };
        let err = connect(&endpoint).await.err().map(|e| format!("{e:#}"));
        assert!(err.as_deref().is_some_and(|e| e.contains("UnknownIssuer")), "{err:?}");
        // And with the right CA but a name the certificate does not carry.
        let ca = baseline
            .endpoint
            .tls
            .as_ref()
            .map(|t| Arc::clone(&t.config))
            .ok_or_else(|| anyhow::anyhow!("no TLS"))?;
        let wrong_name = Endpoint {
            tls: Some(ClientTls {
                config: ca,
                server_name: rustls::pki_types::ServerName::try_from("example.com")?,
            }),
            ..baseline.endpoint.clone()
        };
        assert!(connect(&wrong_name).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn the_plain_echo_still_answers_for_the_before_benchmark() -> anyhow::Result<()> {
        let baseline = Baseline::start(true)?;
        assert_eq!(baseline.label, "http echo");
        assert!(baseline.endpoint.tls.is_none());
        assert!(baseline.endpoint.addr.ip().is_loopback());
        echo_round_trip(&baseline).await
    }
}
