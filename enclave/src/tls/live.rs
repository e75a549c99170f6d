//! The TLS state of a running enclave: the identity, the certificate slot
//! every handshake reads, and the server configuration built on it. Loaded
//! once after boot (`Enclave::tls`), reachable from every request's
//! context (`ctx.enclave`) so that the operator's CA operations
//! (`Keyward.GetTlsCertificateRequest`, `Keyward.ImportTlsCertificate`)
//! act on the identity that serves.

use std::sync::Arc;

use time::OffsetDateTime;

use super::serve::{Limits, Refuser, TlsServer};
use super::{CertSlot, TlsError, TlsIdentity, TlsName, server_config};
use crate::store::Records;

pub struct LiveTls {
    identity: tokio::sync::Mutex<TlsIdentity>,
    slot: Arc<CertSlot>,
    server: TlsServer,
    spki_sha256: [u8; 32],
    ca_pem: String,
}

impl LiveTls {
    /// Loads (or creates) the identity for `names`, dating certificates
    /// with `now` (the real clock), and builds the server on it.
    pub async fn load(
        records: &Records<'_>,
        names: &[TlsName],
        now: OffsetDateTime,
        limits: Limits,
        refuse: Refuser,
    ) -> Result<Self, TlsError> {
        let identity = TlsIdentity::load_or_create(records, names, now).await?;
        let slot = CertSlot::new(identity.certified_key()?);
        let server = TlsServer::new(server_config(Arc::clone(&slot))?, limits, refuse);
        Ok(LiveTls {
            spki_sha256: identity.spki_sha256(),
            ca_pem: identity.ca_certificate_pem(),
            identity: tokio::sync::Mutex::new(identity),
            slot,
            server,
        })
    }

    /// What serves each client stream.
    pub fn server(&self) -> &TlsServer {
        &self.server
    }

    /// SHA-256 of the serving key's SubjectPublicKeyInfo (fixed for the
    /// key's life, whatever certificate is served).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// The enclave CA certificate, PEM.
    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A PKCS#10 request for the serving key (PEM).
    pub async fn certificate_request_pem(&self) -> Result<String, TlsError> {
        self.identity.lock().await.certificate_request_pem()
    }

    /// Validates, persists and serves an operator's chain; new connections
    /// get it at once, connections already open keep theirs.
    pub async fn import_chain(&self, records: &Records<'_>, pem: &[u8], now: OffsetDateTime) -> Result<(), TlsError> {
        let mut identity = self.identity.lock().await;
        identity.import_chain(records, pem, now).await?;
        self.slot.replace(identity.certified_key()?);
        Ok(())
    }
}
