//! HTTPS out of the enclave: TLS (rustls, aws-lc-rs) with **pinned roots**
//! — the PEM bundle the operator gives (`--custody-ca`), never the system
//! or web roots — and one HTTP/1.1 `POST` per connection, over a stream the
//! host relays ([`super::Connect`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{Connect, OutboundError};

/// Largest response body read (a KMS answer is a few KiB).
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// How long one exchange (connect, handshake, request, answer) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an HTTPS exchange failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpsError {
    #[error("{0} is not an https://HOST[:PORT] endpoint")]
    Endpoint(String),
    #[error("the pinned CA bundle has no usable certificate: {0}")]
    Roots(String),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("TLS with {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("HTTP with {endpoint} failed: {reason}")]
    Http { endpoint: String, reason: String },
    #[error("{0} did not answer in time")]
    Timeout(String),
}

/// An `https://host[:port]` endpoint: the `host:port` the host connects to
/// and the name the certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://HOST[:PORT][/]` (port 443 by default). No path,
    /// query, user info or other scheme.
    pub fn parse(url: &str) -> Result<Endpoint, HttpsError> {
        let bad = || HttpsError::Endpoint(url.chars().take(200).collect());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ', '[', ']']) {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (authority, 443),
        };
        if host.is_empty() || ServerName::try_from(host.to_string()).is_err() {
            return Err(bad());
        }
        Ok(Endpoint {
            url: url.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// What the host is asked to connect to.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `Host` header (and SigV4's signed host).
    pub fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A TLS client configuration trusting exactly the certificates of
/// `ca_pem` (one or more PEM `CERTIFICATE`s).
pub fn pinned_client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| HttpsError::Roots(e.to_string()))?;
        roots.add(cert).map_err(|e| HttpsError::Roots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(HttpsError::Roots("no CERTIFICATE in the PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| HttpsError::Roots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// An HTTPS client of one endpoint, through a [`Connect`]or.
#[derive(Clone)]
pub struct HttpsClient {
    endpoint: Endpoint,
    tls: Arc<rustls::ClientConfig>,
    connector: Arc<dyn Connect>,
}

impl HttpsClient {
    pub fn new(endpoint: Endpoint, tls: Arc<rustls::ClientConfig>, connector: Arc<dyn Connect>) -> Self {
        HttpsClient {
            endpoint,
            tls,
            connector,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `POST /` with `headers` (lower-case names; `host` is added unless given) and
    /// `body`, on a fresh connection; the answer's status and body (at most
    /// [`MAX_RESPONSE`] bytes).
    pub async fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> Result<Answer, HttpsError> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(headers, body))
            .await
            .map_err(|_| HttpsError::Timeout(self.endpoint.url.clone()))?
    }

    async fn exchange(&self, headers: &[(String, String)], body: Vec<u8>) -> Result<Answer, HttpsError> {
        let endpoint = &self.endpoint.url;
        let target = self.endpoint.target();
        let stream = self.connector.connect(&target).await?;
        let name =
            ServerName::try_from(self.endpoint.host.clone()).map_err(|_| HttpsError::Endpoint(endpoint.clone()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, stream)
            .await
            .map_err(|e| HttpsError::Tls {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let http = |reason: String| HttpsError::Http {
            endpoint: endpoint.clone(),
            reason,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| http(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = hyper::Request::builder().method("POST").uri("/");
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request = request.header("host", self.endpoint.authority());
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http(e.to_string()))?;
        let answer = async {
            let response = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        }
        .await;
        driver.abort();
        answer
    }
}
