//! The rustls server configuration: the aws-lc-rs provider, TLS 1.3 and
//! 1.2, and only the cipher suites an ECDSA P-256 key can serve that the
//! AWS SDKs offer (AES-GCM and ChaCha20-Poly1305, forward secret).
//!
//! The certificate is resolved per handshake from a [`CertSlot`], so that an
//! imported chain (or a renewed enclave-CA certificate) takes effect for new
//! connections without rebuilding the configuration.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider, cipher_suite};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// ALPN: HTTP/1.1 only (see `docs/tls.md` on HTTP/2).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// aws-lc-rs with the suites the enclave serves, in its order of preference.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..provider::default_provider()
    }
}

/// The server configuration serving whatever `slot` holds.
pub fn server_config(slot: Arc<CertSlot>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The certificate and key served to new connections; replaced in place.
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    pub fn new(certified: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(CertSlot {
            current: RwLock::new(certified),
        })
    }

    /// Serves `certified` from the next handshake on.
    pub fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = certified;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertSlot")
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
