//! HTTPS for [`crate::Client`]: TLS ends inside the Keyward enclave, so the
//! client checks the certificate like any HTTPS client (WebPKI, against the
//! CA bundle it is given or the system's roots) and can, on top, pin the
//! enclave's TLS key: [`TlsOptions::pin_spki_sha256`] requires the SHA-256
//! of the end-entity certificate's SubjectPublicKeyInfo to be the pinned
//! value, the one `Keyward.GetAttestationDocument` binds in `user_data`
//! (`EnclaveIdentity::tls_spki_sha256`). With the pin, a host that holds a
//! valid certificate from the same CA but not the enclave's key is refused.
//!
//! Every connection also reports the SPKI hash of the certificate it was
//! served ([`crate::Client::get_attestation_document_and_tls_spki`]), so a
//! caller can check that the very connection that carried an attestation
//! document ends at the key the document attests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use der::{Decode as _, Encode as _};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::Error;

/// The environment variable naming a PEM CA bundle, as the aws CLI and the
/// AWS SDKs read it.
pub const AWS_CA_BUNDLE: &str = "AWS_CA_BUNDLE";

/// How the client checks the server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM certificates to trust as roots *instead of* the system's (the
    /// deployment's enclave CA, `<data-dir>/tls/ca.pem` in dev, or an
    /// operator's CA). `None`: the system's roots.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Also require SHA-256(end-entity SubjectPublicKeyInfo DER) to be this
    /// value (the attested `tls-spki-sha256` of the enclave). The normal
    /// WebPKI verification still runs.
    pub pin_spki_sha256: Option<[u8; 32]>,
}

impl TlsOptions {
    /// Trust the certificates of `pem` (instead of the system's roots).
    pub fn with_ca_bundle(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_bundle_pem = Some(pem.into());
        self
    }

    /// Pin the server's key (see [`TlsOptions::pin_spki_sha256`]).
    pub fn with_pinned_spki(mut self, spki_sha256: [u8; 32]) -> Self {
        self.pin_spki_sha256 = Some(spki_sha256);
        self
    }

    /// The CA bundle of [`AWS_CA_BUNDLE`] when that variable names a file.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var_os(AWS_CA_BUNDLE) {
            Some(path) if !path.is_empty() => {
                let pem = std::fs::read(&path).map_err(|e| {
                    Error::Request(format!(
                        "{AWS_CA_BUNDLE}={}: {e}",
                        std::path::Path::new(&path).display()
                    ))
                })?;
                Ok(TlsOptions::default().with_ca_bundle(pem))
            }
            _ => Ok(TlsOptions::default()),
        }
    }
}

/// SHA-256 of the SubjectPublicKeyInfo (DER) of a certificate (DER).
pub fn spki_sha256(certificate_der: &[u8]) -> Result<[u8; 32], Error> {
    let certificate = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| Error::Transport(format!("the server's certificate does not parse: {e}")))?;
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::Transport(format!("the server's certificate: {e}")))?;
    Ok(Sha256::digest(spki).into())
}

/// The rustls configuration of `options` (aws-lc-rs, TLS 1.3 and 1.2, ALPN
/// `http/1.1`).
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_bundle_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Request(format!("the CA bundle is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Request(format!("the CA bundle: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Request("the CA bundle holds no certificate".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| Error::Request(format!("TLS verifier: {e}")))?;
    let verifier = Arc::new(PinningVerifier {
        webpki,
        pin: options.pin_spki_sha256,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Request(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI verification, then the SPKI pin when there is one.
#[derive(Debug)]
struct PinningVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pin: Option<[u8; 32]>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if let Some(pin) = self.pin {
            let actual = spki_sha256(end_entity)
                .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&actual[..], &pin[..])) {
                return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(PinMismatch)),
                )));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The server's key is not the pinned one.
struct PinMismatch;

impl std::fmt::Debug for PinMismatch {
    // rustls shows the error with `Debug`: say what happened.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server's key is not the pinned (attested) key")
    }
}

impl std::error::Error for PinMismatch {}

/// The SPKI hash of the certificate a connection was served, found in the
/// extensions of every response that connection carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSpki(pub [u8; 32]);

/// hyper-util connector: TCP, then TLS; `https://` only.
#[derive(Clone)]
pub(crate) struct HttpsConnector {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl HttpsConnector {
    pub(crate) fn new(config: Arc<rustls::ClientConfig>, connect_timeout: std::time::Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(connect_timeout));
        HttpsConnector {
            tcp,
            tls: tokio_rustls::TlsConnector::from(config),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for HttpsConnector {
    type Response = HttpsStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpsStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("https") {
                return Err("only https:// is supported".into());
            }
            let host = uri
                .host()
                .ok_or("the URL has no host")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(host)?;
            let stream = tcp.call(uri).await?.into_inner();
            let stream = tls.connect(name, stream).await?;
            let spki = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| spki_sha256(leaf))
                .transpose()?
                .ok_or("the server sent no certificate")?;
            Ok(HttpsStream {
                io: TokioIo::new(stream),
                spki,
            })
        })
    }
}

/// One TLS connection, which tells the HTTP client its certificate's SPKI hash.
pub(crate) struct HttpsStream {
    io: TokioIo<TlsStream<TcpStream>>,
    spki: [u8; 32],
}

impl Connection for HttpsStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(PeerSpki(self.spki))
    }
}

impl hyper::rt::Read for HttpsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for HttpsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A loopback HTTPS server identity for unit tests: a CA and a leaf for
/// `127.0.0.1` it issued (made once per test process).
#[cfg(test)]
pub(crate) mod test_identity {
    use std::sync::{Arc, OnceLock};

    use super::TlsOptions;

    pub(crate) struct TestIdentity {
        pub ca_pem: String,
        pub acceptor: tokio_rustls::TlsAcceptor,
        pub leaf_spki_sha256: [u8; 32],
    }

    /// A CA and a leaf for `names` (the leaf's key fresh).
    pub(crate) fn make(names: &[&str]) -> TestIdentity {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keyward-sdk test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("names");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf certificate");
        let leaf_spki_sha256 = super::spki_sha256(leaf.der()).expect("SPKI");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .expect("server config");
        TestIdentity {
            ca_pem: ca.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            leaf_spki_sha256,
        }
    }

    /// The shared loopback identity (`127.0.0.1`).
    pub(crate) fn loopback() -> &'static TestIdentity {
        static IDENTITY: OnceLock<TestIdentity> = OnceLock::new();
        IDENTITY.get_or_init(|| make(&["127.0.0.1"]))
    }

    /// Client options trusting the loopback CA.
    pub(crate) fn options() -> TlsOptions {
        TlsOptions::default().with_ca_bundle(loopback().ca_pem.clone())
    }
}
