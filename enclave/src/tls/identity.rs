//! The enclave's TLS identity: the serving key, the enclave CA, and the
//! certificate chain served, each kept as a sealed record in [`NAMESPACE`].
//!
//! The serving key is generated here (aws-lc-rs, ECDSA P-256) the first time
//! the enclave starts and never leaves it except sealed. It does not change
//! afterwards: certificates come and go (the enclave CA re-issues when the
//! names change or expiry nears; an operator imports a chain of their own),
//! the key and therefore its SPKI hash, which attestation binds, stay.
//!
//! The host can drop or replay these records like any other (availability
//! only): a dropped serving key means a new key and a new certificate, a
//! dropped CA record a new CA (clients then need the new `ca.pem`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::ca::EnclaveCa;
use super::{NAMESPACE, TlsError, TlsName, canonical_names, csr, import};
use crate::store::Records;

const KEY_RECORD: &str = "serving-key";
const CERTIFICATE_RECORD: &str = "certificate";

/// An enclave-issued serving certificate is re-issued at start when it has
/// less than this left.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// An ECDSA P-256 private key generated inside the enclave. No `Debug`,
/// `Clone` or `Serialize`; the PKCS#8 copy is wiped on drop (aws-lc frees
/// its own copy with a cleanse).
pub struct PrivateKey {
    pair: rcgen::KeyPair,
}

impl PrivateKey {
    /// A fresh key from aws-lc-rs's generator (the NSM-fed kernel RNG in
    /// nitro mode).
    pub(crate) fn generate() -> Result<Self, TlsError> {
        Ok(PrivateKey {
            pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        })
    }

    /// The key a sealed record holds; `name` says which record, for errors.
    pub(crate) fn from_record(record: &KeyRecord, name: &'static str) -> Result<Self, TlsError> {
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(record.pkcs8.as_slice()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .map(|pair| PrivateKey { pair })
        .map_err(|e| TlsError::Record(name, e.to_string()))
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(&self.pair)
    }

    pub(crate) fn pair(&self) -> &rcgen::KeyPair {
        &self.pair
    }

    pub(crate) fn to_record(&self) -> KeyRecord {
        KeyRecord {
            pkcs8: self.pair.serialized_der().to_vec(),
        }
    }

    /// The key as rustls signs handshakes with it.
    fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
        // Borrowed: no further copy of the PKCS#8 bytes is made here.
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pair.serialized_der()));
        rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&der).map_err(|e| TlsError::Config(e.to_string()))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.pair.zeroize();
    }
}

/// The sealed form of a private key: PKCS#8, wiped on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct KeyRecord {
    #[serde(with = "serde_bytes")]
    pkcs8: Vec<u8>,
}

/// Where the served chain came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainSource {
    /// Issued by the enclave CA for the configured names.
    EnclaveCa,
    /// Imported by the operator (`Keyward.ImportTlsCertificate`).
    Operator,
}

#[derive(Serialize, Deserialize)]
struct CertificateRecord {
    source: ChainSource,
    /// The configured names it was issued for (enclave CA only).
    names: Vec<String>,
    /// SHA-256 of the issuing enclave CA certificate (enclave CA only).
    #[serde(with = "serde_bytes")]
    issuer_sha256: Vec<u8>,
    /// Leaf first.
    chain: Vec<serde_bytes::ByteBuf>,
}

/// The serving key, the enclave CA and the chain currently served.
pub struct TlsIdentity {
    key: PrivateKey,
    ca: EnclaveCa,
    chain: Vec<CertificateDer<'static>>,
    source: ChainSource,
    names: Vec<TlsName>,
}

impl TlsIdentity {
    /// Loads the identity from its sealed records, creating what is missing:
    /// the serving key and the enclave CA on first start, and an enclave-CA
    /// certificate when there is none, the configured names changed, it is
    /// not from the current CA, or it expires within [`RENEW_BEFORE`]. An
    /// operator-imported chain is kept as long as it matches the key.
    ///
    /// `now` is the real time the certificates are dated with (not a mock
    /// clock offset, which clients would see as not yet valid).
    pub async fn load_or_create(
        records: &Records<'_>,
        names: &[TlsName],
        now: OffsetDateTime,
    ) -> Result<Self, TlsError> {
        let names = canonical_names(names)?;
        let key = match records.get::<KeyRecord>(NAMESPACE, KEY_RECORD).await? {
            Some(record) => PrivateKey::from_record(&record, KEY_RECORD)?,
            None => {
                let key = PrivateKey::generate()?;
                records.put(NAMESPACE, KEY_RECORD, &key.to_record()).await?;
                tracing::info!("TLS: generated the enclave's serving key");
                key
            }
        };
        let ca = EnclaveCa::load_or_create(records, now).await?;
        let stored = records.get::<CertificateRecord>(NAMESPACE, CERTIFICATE_RECORD).await?;
        let mut identity = TlsIdentity {
            key,
            ca,
            chain: Vec::new(),
            source: ChainSource::EnclaveCa,
            names,
        };
        if let Some(record) = stored {
            let chain: Vec<CertificateDer<'static>> = record
                .chain
                .into_iter()
                .map(|der| CertificateDer::from(der.into_vec()))
                .collect();
            let matches_key = chain
                .first()
                .is_some_and(|leaf| import::leaf_spki(leaf).is_ok_and(|spki| spki == identity.key.spki_der()));
            match record.source {
                ChainSource::Operator if matches_key => {
                    if chain
                        .first()
                        .is_some_and(|leaf| import::validity(leaf).is_ok_and(|(_, end)| end < now))
                    {
                        tracing::warn!("TLS: the imported certificate has expired; import a new one");
                    }
                    identity.chain = chain;
                    identity.source = ChainSource::Operator;
                    return Ok(identity);
                }
                ChainSource::Operator => {
                    tracing::warn!(
                        "TLS: the imported certificate does not match the serving key (key record lost?); \
                         falling back to the enclave CA"
                    );
                }
                ChainSource::EnclaveCa => {
                    let current = matches_key
                        && record.issuer_sha256 == identity.ca.certificate_sha256()
                        && record.names == name_strings(&identity.names)
                        && !renewal_due(&chain, now);
                    if current {
                        identity.chain = chain;
                        return Ok(identity);
                    }
                }
            }
        }
        identity.issue_from_enclave_ca(records, now).await?;
        Ok(identity)
    }

    /// Issues a serving certificate from the enclave CA for the configured
    /// names, persists it and serves it from now on.
    pub async fn issue_from_enclave_ca(&mut self, records: &Records<'_>, now: OffsetDateTime) -> Result<(), TlsError> {
        let leaf = self.ca.issue(&self.key, &self.names, now)?;
        let record = CertificateRecord {
            source: ChainSource::EnclaveCa,
            names: name_strings(&self.names),
            issuer_sha256: self.ca.certificate_sha256(),
            chain: vec![serde_bytes::ByteBuf::from(leaf.to_vec())],
        };
        records.put(NAMESPACE, CERTIFICATE_RECORD, &record).await?;
        tracing::info!(names = ?record.names, "TLS: issued the serving certificate from the enclave CA");
        self.chain = vec![leaf];
        self.source = ChainSource::EnclaveCa;
        Ok(())
    }

    /// Validates an operator's chain (PEM, leaf first) against the serving
    /// key at `now`, persists it and serves it from now on. A refused chain
    /// changes nothing; the error says why (for a `ValidationException`).
    pub async fn import_chain(
        &mut self,
        records: &Records<'_>,
        pem: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), TlsError> {
        let chain = import::validate_chain(pem, &self.key.spki_der(), now)?;
        let record = CertificateRecord {
            source: ChainSource::Operator,
            names: Vec::new(),
            issuer_sha256: Vec::new(),
            chain: chain.iter().map(|c| serde_bytes::ByteBuf::from(c.to_vec())).collect(),
        };
        records.put(NAMESPACE, CERTIFICATE_RECORD, &record).await?;
        tracing::info!(
            certificates = chain.len(),
            "TLS: installed the operator's certificate chain"
        );
        self.chain = chain;
        self.source = ChainSource::Operator;
        Ok(())
    }

    /// A PKCS#10 request (PEM) for the serving key and the configured names
    /// (`Keyward.GetTlsCertificateRequest`).
    pub fn certificate_request_pem(&self) -> Result<String, TlsError> {
        csr::certificate_request_pem(&self.key, &self.names)
    }

    /// Whether an enclave-issued certificate should be re-issued (a long
    /// running enclave checks this daily; operator chains are the operator's).
    pub fn renewal_due(&self, now: OffsetDateTime) -> bool {
        self.source == ChainSource::EnclaveCa && renewal_due(&self.chain, now)
    }

    /// The chain served, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn source(&self) -> ChainSource {
        self.source
    }

    pub fn names(&self) -> &[TlsName] {
        &self.names
    }

    /// The enclave CA certificate, PEM (`<data-dir>/tls/ca.pem` in dev).
    pub fn ca_certificate_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    pub fn ca_certificate_der(&self) -> &CertificateDer<'static> {
        self.ca.certificate_der()
    }

    /// The serving key's DER SubjectPublicKeyInfo (that of every chain served).
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.spki_der()
    }

    /// SHA-256 of the serving key's SubjectPublicKeyInfo, which
    /// `Keyward.GetAttestationDocument` binds in `user_data`.
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.key.spki_der()).into()
    }

    /// The chain and key in the form rustls serves them (for [`super::CertSlot`]).
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let certified = rustls::sign::CertifiedKey::new(self.chain.clone(), self.key.signing_key()?);
        certified.keys_match().map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(certified))
    }

    #[cfg(test)]
    pub(crate) fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// SHA-256 of the SubjectPublicKeyInfo of a certificate (DER): what a
/// client compares with the attested value for the certificate its
/// connection presented.
pub fn spki_sha256(certificate: &CertificateDer<'_>) -> Result<[u8; 32], import::ImportError> {
    Ok(Sha256::digest(import::leaf_spki(certificate)?).into())
}

fn name_strings(names: &[TlsName]) -> Vec<String> {
    names.iter().map(ToString::to_string).collect()
}

fn renewal_due(chain: &[CertificateDer<'_>], now: OffsetDateTime) -> bool {
    match chain.first().map(|leaf| import::validity(leaf)) {
        Some(Ok((_, not_after))) => not_after - now < RENEW_BEFORE,
        _ => true,
    }
}
