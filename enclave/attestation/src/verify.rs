//! Verification of Nitro attestation documents against a pinned trust anchor.
//!
//! Order of checks ([`Verifier::verify`]):
//! 1. size bound, COSE_Sign1 and payload structure ([`super::document`]);
//! 2. the certificate chain `leaf → reversed(cabundle[1..]) → anchor`
//!    (ECDSA P-384/SHA-384 signatures, issuer/subject names, basicConstraints
//!    CA and pathLen, keyUsage keyCertSign on CAs, leaf not a CA, no unknown
//!    critical extensions; AKI/SKI are not required because the NSM omits
//!    them), served from a cache once a chain has been verified;
//! 3. the COSE ES384 signature over the Sig_structure with the leaf's key;
//! 4. validity of every certificate at the document's own timestamp;
//! 5. freshness of the document relative to `now`;
//! 6. the chain must not have expired by `now`;
//! 7. nonce, PCR and debug-mode expectations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use der::oid::AssociatedOid;
use der::oid::db::rfc5912::ECDSA_WITH_SHA_384;
use der::{Decode, Encode, Reader, SliceReader};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use x509_cert::name::Name;

use super::document::{self, AttestationDocument, CoseSign1, MAX_DOCUMENT_LEN};

/// The AWS Nitro Enclaves root certificate (G1), as published by AWS.
pub const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("aws-nitro-enclaves-root-g1.pem");
/// SHA-256 of the DER of [`AWS_NITRO_ROOT_G1_PEM`] (not of AWS's zip file).
pub const AWS_NITRO_ROOT_G1_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";
/// Verified chains kept by a [`Verifier`]; the cache is cleared when full.
pub const CHAIN_CACHE_CAPACITY: usize = 1024;
/// Documents whose signature a [`Verifier`] remembers having verified (by
/// SHA-256 of their exact bytes); the set is cleared when full.
pub const SIGNATURE_CACHE_CAPACITY: usize = 4096;
/// Most intermediate certificates between the leaf and the anchor.
pub const MAX_INTERMEDIATES: usize = 8;
/// Default freshness window of [`Expectations::default`].
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Default tolerance for a document stamped ahead of `now`.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(30);

/// Why an attestation document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    #[error("malformed attestation document: {0}")]
    Malformed(String),
    #[error("attestation document larger than {MAX_DOCUMENT_LEN} bytes")]
    Oversized,
    #[error("unsupported algorithm in attestation document or certificate")]
    UnsupportedAlgorithm,
    #[error("attestation document signature is invalid")]
    BadSignature,
    #[error("certificate chain does not lead to the trusted root")]
    UntrustedRoot,
    #[error("invalid certificate chain: {0}")]
    ChainInvalid(String),
    #[error("a certificate in the chain has expired")]
    CertificateExpired,
    #[error("a certificate in the chain is not yet valid at the document's time")]
    NotYetValid,
    #[error("attestation document is stale ({age_ms} ms old)")]
    Stale { age_ms: u64 },
    #[error("attestation document is dated in the future")]
    FromTheFuture,
    #[error("attestation nonce does not match")]
    NonceMismatch,
    #[error("PCR{index} does not match any allowed value")]
    PcrMismatch { index: u8 },
    #[error("debug-mode enclave (PCR0, PCR1 and PCR2 all zero) not allowed")]
    DebugModePcrs,
    #[error("attestation document lacks {0}")]
    MissingField(&'static str),
}

/// A pinned root certificate: the top of every accepted chain.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    der: Vec<u8>,
    fingerprint: [u8; 32],
    cert: ParsedCert,
}

impl TrustAnchor {
    /// The embedded AWS Nitro Enclaves root G1, checked against its pin.
    pub fn aws_nitro_root() -> Result<Self, AttestationError> {
        let anchor = Self::from_pem(AWS_NITRO_ROOT_G1_PEM)?;
        if anchor.fingerprint_hex() != AWS_NITRO_ROOT_G1_SHA256 {
            return Err(AttestationError::UntrustedRoot);
        }
        Ok(anchor)
    }

    /// A root from one PEM `CERTIFICATE` block (e.g. the mock NSM's root).
    pub fn from_pem(pem: &str) -> Result<Self, AttestationError> {
        let (label, der) = der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| AttestationError::Malformed(format!("trust anchor PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(AttestationError::Malformed(format!("trust anchor PEM label {label}")));
        }
        Self::from_der(&der)
    }

    /// A root from its DER. It must be a self-signed P-384 CA certificate
    /// signed with ecdsa-with-SHA384.
    pub fn from_der(der: &[u8]) -> Result<Self, AttestationError> {
        let (cert, tbs) = parse_cert(der, "trust anchor")?;
        if cert.issuer != cert.subject {
            return Err(AttestationError::UntrustedRoot);
        }
        if !cert.signed_by(tbs, &cert.key) {
            return Err(AttestationError::UntrustedRoot);
        }
        if !cert.is_ca {
            return Err(AttestationError::ChainInvalid("trust anchor is not a CA".into()));
        }
        Ok(Self {
            der: der.to_vec(),
            fingerprint: Sha256::digest(der).into(),
            cert,
        })
    }

    /// The anchor certificate's DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SHA-256 of the anchor certificate's DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// [`Self::fingerprint`] in lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }
}

/// What a verified document must also satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// When set, the document's nonce must equal it.
    pub nonce: Option<Vec<u8>>,
    /// PCR index → allowed values; the document's PCR must equal one of them
    /// (an empty list allows nothing).
    pub pcrs: BTreeMap<u8, Vec<Vec<u8>>>,
    /// Accept debug-mode enclaves (PCR0, PCR1 and PCR2 all zero).
    pub allow_debug: bool,
    /// Largest accepted `now - timestamp`; `None` skips the check.
    pub max_age: Option<Duration>,
    /// Largest accepted `timestamp - now` (clock skew).
    pub max_future: Duration,
}

impl Default for Expectations {
    /// No nonce or PCR requirement, debug mode refused, documents at most
    /// [`DEFAULT_MAX_AGE`] old and [`DEFAULT_MAX_FUTURE`] ahead.
    fn default() -> Self {
        Self {
            nonce: None,
            pcrs: BTreeMap::new(),
            allow_debug: false,
            max_age: Some(DEFAULT_MAX_AGE),
            max_future: DEFAULT_MAX_FUTURE,
        }
    }
}

/// A document that passed every check of [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDocument {
    pub document: AttestationDocument,
}

impl VerifiedDocument {
    pub fn module_id(&self) -> &str {
        &self.document.module_id
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.document.timestamp_ms
    }

    pub fn pcr(&self, index: u8) -> Option<&[u8]> {
        self.document.pcrs.get(&index).map(Vec::as_slice)
    }

    pub fn public_key(&self) -> Option<&[u8]> {
        self.document.public_key.as_deref()
    }

    pub fn user_data(&self) -> Option<&[u8]> {
        self.document.user_data.as_deref()
    }

    pub fn nonce(&self) -> Option<&[u8]> {
        self.document.nonce.as_deref()
    }

    pub fn is_debug_mode(&self) -> bool {
        self.document.is_debug_mode()
    }
}

/// Verifies attestation documents against one trust anchor. Shareable across
/// threads; verified chains are cached.
#[derive(Debug)]
pub struct Verifier {
    anchor: TrustAnchor,
    cache: ChainCache,
    /// SHA-256 of documents whose COSE signature verified. The signature is
    /// a function of the exact bytes and the leaf key those bytes name, so a
    /// document seen before needs no second ES384 verification; every other
    /// check (chain, time, freshness, nonce, PCRs) still runs each time.
    signatures: Mutex<std::collections::HashSet<[u8; 32]>>,
    signature_hits: AtomicU64,
}

impl Verifier {
    pub fn new(anchor: TrustAnchor) -> Self {
        Self {
            anchor,
            cache: ChainCache::default(),
            signatures: Mutex::new(std::collections::HashSet::new()),
            signature_hits: AtomicU64::new(0),
        }
    }

    /// Verifications that skipped the ES384 check of a document already verified.
    pub fn signature_cache_hits(&self) -> u64 {
        self.signature_hits.load(Ordering::Relaxed)
    }

    fn signatures(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<[u8; 32]>> {
        self.signatures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Verifies `document` (COSE_Sign1 bytes) at `now` against `expect`.
    pub fn verify(
        &self,
        document: &[u8],
        now: OffsetDateTime,
        expect: &Expectations,
    ) -> Result<VerifiedDocument, AttestationError> {
        let cose = document::parse_cose(document)?;
        let doc = document::parse_payload(&cose.payload)?;

        let chain = self.chain(&doc)?;
        let digest: [u8; 32] = Sha256::digest(document).into();
        if self.signatures().contains(&digest) {
            self.signature_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            verify_cose_signature(&cose, &chain.leaf_key)?;
            let mut known = self.signatures();
            if known.len() >= SIGNATURE_CACHE_CAPACITY {
                known.clear();
            }
            known.insert(digest);
        }

        let timestamp_s = doc.timestamp_ms / 1000;
        if timestamp_s < chain.not_before_s {
            return Err(AttestationError::NotYetValid);
        }
        if timestamp_s > chain.not_after_s {
            return Err(AttestationError::CertificateExpired);
        }

        check_freshness(doc.timestamp_ms, now, expect)?;
        if i128::from(now.unix_timestamp()) > i128::from(chain.not_after_s) {
            return Err(AttestationError::CertificateExpired);
        }

        check_nonce(&doc, expect)?;
        for (&index, allowed) in &expect.pcrs {
            let actual = doc.pcrs.get(&index).ok_or(AttestationError::PcrMismatch { index })?;
            let mut matched = subtle::Choice::from(0);
            for value in allowed {
                matched |= actual.as_slice().ct_eq(value.as_slice());
            }
            if !bool::from(matched) {
                return Err(AttestationError::PcrMismatch { index });
            }
        }
        if !expect.allow_debug && doc.is_debug_mode() {
            return Err(AttestationError::DebugModePcrs);
        }
        Ok(VerifiedDocument { document: doc })
    }

    /// Chains currently cached.
    pub fn cache_len(&self) -> usize {
        self.cache.lock().len()
    }

    /// Verifications that found their chain in the cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache.hits.load(Ordering::Relaxed)
    }

    /// The verified chain of `doc`, from the cache or verified now.
    fn chain(&self, doc: &AttestationDocument) -> Result<ChainSummary, AttestationError> {
        let key = ChainCache::key(doc);
        if let Some(summary) = self.cache.lock().get(&key) {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(summary.clone());
        }
        let summary = verify_chain(&self.anchor, doc)?;
        let mut cache = self.cache.lock();
        if cache.len() >= CHAIN_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, summary.clone());
        Ok(summary)
    }
}

/// What a verified chain yields: the leaf's key and the intersection of the
/// validity periods of every certificate (anchor included), in Unix seconds.
#[derive(Debug, Clone)]
struct ChainSummary {
    leaf_key: VerifyingKey,
    not_before_s: u64,
    not_after_s: u64,
}

#[derive(Debug, Default)]
struct ChainCache {
    map: Mutex<HashMap<[u8; 32], ChainSummary>>,
    hits: AtomicU64,
}

impl ChainCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ChainSummary>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// SHA-256 over the length-prefixed cabundle entries and leaf.
    fn key(doc: &AttestationDocument) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((doc.cabundle.len() as u64).to_be_bytes());
        for cert in doc.cabundle.iter().chain(std::iter::once(&doc.certificate)) {
            hash.update((cert.len() as u64).to_be_bytes());
            hash.update(cert);
        }
        hash.finalize().into()
    }
}

/// The fields of a certificate the verifier uses.
#[derive(Debug, Clone)]
struct ParsedCert {
    subject: Name,
    issuer: Name,
    key: VerifyingKey,
    signature: Signature,
    not_before_s: u64,
    not_after_s: u64,
    is_ca: bool,
    path_len: Option<u8>,
    key_usage: Option<KeyUsage>,
}

impl ParsedCert {
    fn signed_by(&self, tbs: &[u8], issuer_key: &VerifyingKey) -> bool {
        issuer_key.verify(tbs, &self.signature).is_ok()
    }
}

/// Parses a certificate, returning it and its exact to-be-signed bytes.
fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<(ParsedCert, &'a [u8]), AttestationError> {
    let invalid = |reason: String| AttestationError::ChainInvalid(format!("{what}: {reason}"));
    let cert = Certificate::from_der(der).map_err(|e| invalid(format!("cannot parse: {e}")))?;
    let tbs = raw_tbs(der).map_err(|e| invalid(format!("cannot parse: {e}")))?;
    let tbs_cert = &cert.tbs_certificate;

    // ecdsa-with-SHA384, parameters absent (RFC 5758 §3.2), same inside and out.
    if cert.signature_algorithm.oid != ECDSA_WITH_SHA_384
        || cert.signature_algorithm.parameters.is_some()
        || tbs_cert.signature != cert.signature_algorithm
    {
        return Err(AttestationError::UnsupportedAlgorithm);
    }
    let signature = cert
        .signature
        .as_bytes()
        .and_then(|bytes| Signature::from_der(bytes).ok())
        .ok_or_else(|| invalid("malformed signature".into()))?;
    // id-ecPublicKey on secp384r1 (checked by the SPKI decoder).
    let spki = tbs_cert
        .subject_public_key_info
        .to_der()
        .map_err(|e| invalid(format!("public key: {e}")))?;
    let key = VerifyingKey::from_public_key_der(&spki).map_err(|_| AttestationError::UnsupportedAlgorithm)?;

    let not_before_s = tbs_cert.validity.not_before.to_unix_duration().as_secs();
    let not_after_s = tbs_cert.validity.not_after.to_unix_duration().as_secs();
    if not_before_s > not_after_s {
        return Err(invalid("empty validity period".into()));
    }

    let mut basic: Option<BasicConstraints> = None;
    let mut key_usage: Option<KeyUsage> = None;
    let mut seen = Vec::new();
    for ext in tbs_cert.extensions.iter().flatten() {
        if seen.contains(&ext.extn_id) {
            return Err(invalid(format!("duplicate extension {}", ext.extn_id)));
        }
        seen.push(ext.extn_id);
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == BasicConstraints::OID {
            basic = Some(BasicConstraints::from_der(value).map_err(|e| invalid(format!("basicConstraints: {e}")))?);
        } else if ext.extn_id == KeyUsage::OID {
            key_usage = Some(KeyUsage::from_der(value).map_err(|e| invalid(format!("keyUsage: {e}")))?);
        } else if ext.critical
            && ![
                SubjectKeyIdentifier::OID,
                AuthorityKeyIdentifier::OID,
                ExtendedKeyUsage::OID,
            ]
            .contains(&ext.extn_id)
        {
            return Err(invalid(format!("unsupported critical extension {}", ext.extn_id)));
        }
    }
    let is_ca = basic.as_ref().is_some_and(|b| b.ca);
    let path_len = basic.as_ref().and_then(|b| b.path_len_constraint);

    Ok((
        ParsedCert {
            subject: tbs_cert.subject.clone(),
            issuer: tbs_cert.issuer.clone(),
            key,
            signature,
            not_before_s,
            not_after_s,
            is_ca,
            path_len,
            key_usage,
        },
        tbs,
    ))
}

/// The TBSCertificate element exactly as encoded in `der`, so the signature
/// is checked over the signed bytes rather than a re-encoding.
fn raw_tbs(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let header = der::Header::decode(&mut reader)?;
    header.tag.assert_eq(der::Tag::Sequence)?;
    reader.tlv_bytes()
}

/// Verifies the chain `leaf → reversed(cabundle[1..]) → anchor` (or
/// `leaf → reversed(cabundle) → anchor` when `cabundle[0]` is not the anchor).
fn verify_chain(anchor: &TrustAnchor, doc: &AttestationDocument) -> Result<ChainSummary, AttestationError> {
    let bundle: &[Vec<u8>] = match doc.cabundle.split_first() {
        Some((first, rest)) if first.as_slice() == anchor.der() => rest,
        _ => &doc.cabundle,
    };
    if bundle.len() > MAX_INTERMEDIATES {
        return Err(AttestationError::ChainInvalid(format!(
            "{} intermediate certificates",
            bundle.len()
        )));
    }

    // chain[0] is the leaf, then intermediates from the leaf's issuer upwards.
    let mut chain: Vec<(ParsedCert, &[u8])> = Vec::with_capacity(bundle.len() + 1);
    chain.push(parse_cert(&doc.certificate, "leaf certificate")?);
    for (i, der) in bundle.iter().rev().enumerate() {
        chain.push(parse_cert(der, &format!("intermediate certificate {}", i + 1))?);
    }

    let mut not_before_s = anchor.cert.not_before_s;
    let mut not_after_s = anchor.cert.not_after_s;
    for (position, (cert, tbs)) in chain.iter().enumerate() {
        not_before_s = not_before_s.max(cert.not_before_s);
        not_after_s = not_after_s.min(cert.not_after_s);

        // Issued by the next certificate up, or by the anchor at the top.
        match chain.get(position + 1) {
            Some((issuer, _)) => {
                if cert.issuer != issuer.subject {
                    return Err(AttestationError::ChainInvalid(format!(
                        "certificate {position}'s issuer is not the subject of certificate {}",
                        position + 1
                    )));
                }
                if !cert.signed_by(tbs, &issuer.key) {
                    return Err(AttestationError::ChainInvalid(format!(
                        "certificate {position}'s signature does not verify"
                    )));
                }
            }
            None => {
                if cert.issuer != anchor.cert.subject || !cert.signed_by(tbs, &anchor.cert.key) {
                    return Err(AttestationError::UntrustedRoot);
                }
            }
        }

        if position == 0 {
            if cert.is_ca {
                return Err(AttestationError::ChainInvalid("the leaf certificate is a CA".into()));
            }
            if cert.key_usage.as_ref().is_some_and(|ku| !ku.digital_signature()) {
                return Err(AttestationError::ChainInvalid(
                    "the leaf's keyUsage lacks digitalSignature".into(),
                ));
            }
        } else {
            // `position - 1` intermediate CAs sit below this one.
            check_ca(cert, position - 1, &format!("intermediate certificate {position}"))?;
        }
    }
    check_ca(&anchor.cert, chain.len() - 1, "trust anchor")?;

    let (leaf, _) = chain.swap_remove(0);
    Ok(ChainSummary {
        leaf_key: leaf.key,
        not_before_s,
        not_after_s,
    })
}

fn check_ca(cert: &ParsedCert, cas_below: usize, what: &str) -> Result<(), AttestationError> {
    if !cert.is_ca {
        return Err(AttestationError::ChainInvalid(format!("{what} is not a CA")));
    }
    if cert.path_len.is_some_and(|max| cas_below > usize::from(max)) {
        return Err(AttestationError::ChainInvalid(format!(
            "{what}'s pathLenConstraint is exceeded"
        )));
    }
    if cert.key_usage.as_ref().is_some_and(|ku| !ku.key_cert_sign()) {
        return Err(AttestationError::ChainInvalid(format!(
            "{what}'s keyUsage lacks keyCertSign"
        )));
    }
    Ok(())
}

fn verify_cose_signature(cose: &CoseSign1, leaf_key: &VerifyingKey) -> Result<(), AttestationError> {
    let signature = Signature::from_slice(&cose.signature).map_err(|_| AttestationError::BadSignature)?;
    leaf_key
        .verify(&document::sig_structure(cose), &signature)
        .map_err(|_| AttestationError::BadSignature)
}

fn check_freshness(timestamp_ms: u64, now: OffsetDateTime, expect: &Expectations) -> Result<(), AttestationError> {
    let now_ms = now.unix_timestamp_nanos() / 1_000_000;
    let age_ms = now_ms - i128::from(timestamp_ms);
    if -age_ms > i128::try_from(expect.max_future.as_millis()).unwrap_or(i128::MAX) {
        return Err(AttestationError::FromTheFuture);
    }
    if let Some(max_age) = expect.max_age
        && age_ms > i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX)
    {
        return Err(AttestationError::Stale {
            age_ms: u64::try_from(age_ms).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

fn check_nonce(doc: &AttestationDocument, expect: &Expectations) -> Result<(), AttestationError> {
    let Some(expected) = &expect.nonce else {
        return Ok(());
    };
    match &doc.nonce {
        Some(actual) if bool::from(actual.as_slice().ct_eq(expected.as_slice())) => Ok(()),
        _ => Err(AttestationError::NonceMismatch),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::LazyLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    use der::asn1::BitString;
    use p384::ecdsa::signature::Signer as _;
    use p384::ecdsa::{DerSignature, SigningKey};
    use proptest::prelude::*;
    use spki::SubjectPublicKeyInfoOwned;
    use time::macros::datetime;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::ext::Extension;
    use x509_cert::ext::pkix::KeyUsages;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::time::{Time, Validity};

    use super::*;
    use crate::document::{encode_cose, encode_payload, parse_cose, parse_payload};

    const DOC1: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_production_definite_map.cbor"
    ));
    const DOC2: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_production_indefinite_map_nonce.cbor"
    ));
    const DOC3: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/nitro_real_debug_mode_long_nonce.cbor"
    ));
    const DOC1_PCR0: &str =
        "ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2";
    const DOC2_NONCE: &str = "0123456789abcdef0123456789abcdef01234567";

    /// One AWS verifier shared by the tests that do not inspect the cache.
    static AWS: LazyLock<Verifier> = LazyLock::new(aws);

    fn aws() -> Verifier {
        Verifier::new(TrustAnchor::aws_nitro_root().expect("aws root"))
    }

    fn decoded(bytes: &[u8]) -> AttestationDocument {
        parse_payload(&parse_cose(bytes).expect("cose").payload).expect("payload")
    }

    fn at_ms(ms: i128) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("time")
    }

    fn doc_ms(bytes: &[u8]) -> i128 {
        i128::from(decoded(bytes).timestamp_ms)
    }

    fn doc_time(bytes: &[u8]) -> OffsetDateTime {
        at_ms(doc_ms(bytes))
    }

    fn expect_debug(allow_debug: bool) -> Expectations {
        Expectations {
            allow_debug,
            ..Expectations::default()
        }
    }

    /// `bytes` with its payload edited (the signature no longer matches it).
    fn edited(bytes: &[u8], edit: impl FnOnce(&mut AttestationDocument)) -> Vec<u8> {
        let mut cose = parse_cose(bytes).expect("cose");
        let mut doc = parse_payload(&cose.payload).expect("payload");
        edit(&mut doc);
        cose.payload = encode_payload(&doc);
        encode_cose(&cose)
    }

    fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at] ^= 0x01;
        out
    }

    // ----- a synthetic P-384 PKI built with x509-cert's builder -----

    const TS_MS: u64 = 1_750_000_000_000;
    const TS_S: u64 = TS_MS / 1000;
    const HOUR: u64 = 3600;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_slice(&[n; 48]).expect("key")
    }

    fn spki(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).expect("spki")
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn validity(from_s: u64, to_s: u64) -> Validity {
        let time = |s: u64| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).expect("time");
        Validity {
            not_before: time(from_s),
            not_after: time(to_s),
        }
    }

    fn issue(
        profile: Profile,
        subject: &str,
        subject_spki: SubjectPublicKeyInfoOwned,
        issuer: &SigningKey,
    ) -> Certificate {
        issue_valid(
            profile,
            subject,
            subject_spki,
            issuer,
            validity(TS_S - 24 * HOUR, TS_S + 24 * HOUR),
        )
    }

    fn issue_valid(
        profile: Profile,
        subject: &str,
        subject_spki: SubjectPublicKeyInfoOwned,
        issuer: &SigningKey,
        validity: Validity,
    ) -> Certificate {
        CertificateBuilder::new(
            profile,
            SerialNumber::from(7u32),
            validity,
            name(subject),
            subject_spki,
            issuer,
        )
        .expect("builder")
        .build::<DerSignature>()
        .expect("certificate")
    }

    fn der_of(cert: &Certificate) -> Vec<u8> {
        cert.to_der().expect("der")
    }

    /// Re-signs `cert` (after an edit of its TBS) with `issuer`.
    fn resign(mut cert: Certificate, issuer: &SigningKey) -> Vec<u8> {
        let tbs = cert.tbs_certificate.to_der().expect("tbs");
        let signature: DerSignature = issuer.sign(&tbs);
        cert.signature = BitString::from_bytes(signature.as_bytes()).expect("bits");
        der_of(&cert)
    }

    const ROOT: &str = "CN=Test Root,O=Keyward";
    const INTER: &str = "CN=Test Intermediate,O=Keyward";
    const LEAF: &str = "CN=Test Leaf,O=Keyward";

    fn sub_ca(issuer: &str, path_len: Option<u8>) -> Profile {
        Profile::SubCA {
            issuer: name(issuer),
            path_len_constraint: path_len,
        }
    }

    fn leaf_profile(issuer: &str) -> Profile {
        Profile::Leaf {
            issuer: name(issuer),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        }
    }

    struct Pki {
        root_key: SigningKey,
        root: Vec<u8>,
        inter_key: SigningKey,
        inter: Vec<u8>,
        leaf_key: SigningKey,
        leaf: Vec<u8>,
    }

    impl Pki {
        fn new() -> Pki {
            let (root_key, inter_key, leaf_key) = (key(1), key(2), key(3));
            let root = der_of(&issue(Profile::Root, ROOT, spki(&root_key), &root_key));
            let inter = der_of(&issue(sub_ca(ROOT, Some(0)), INTER, spki(&inter_key), &root_key));
            let leaf = der_of(&issue(leaf_profile(INTER), LEAF, spki(&leaf_key), &inter_key));
            Pki {
                root_key,
                root,
                inter_key,
                inter,
                leaf_key,
                leaf,
            }
        }

        fn verifier(&self) -> Verifier {
            Verifier::new(TrustAnchor::from_der(&self.root).expect("anchor"))
        }

        fn doc(&self) -> AttestationDocument {
            synthetic(self.leaf.clone(), vec![self.root.clone(), self.inter.clone()])
        }

        fn sign(&self, doc: &AttestationDocument) -> Vec<u8> {
            sign_with(&self.leaf_key, doc)
        }
    }

    fn synthetic(certificate: Vec<u8>, cabundle: Vec<Vec<u8>>) -> AttestationDocument {
        AttestationDocument {
            module_id: "i-test-enc0".into(),
            digest: "SHA384".into(),
            timestamp_ms: TS_MS,
            pcrs: (0u8..16)
                .map(|i| (i, vec![if i < 3 { i + 1 } else { 0 }; 48]))
                .collect(),
            certificate,
            cabundle,
            public_key: Some(b"rsa key".to_vec()),
            user_data: None,
            nonce: Some(b"nonce".to_vec()),
        }
    }

    fn sign_with(key: &SigningKey, doc: &AttestationDocument) -> Vec<u8> {
        let mut cose = CoseSign1 {
            protected: document::protected_es384(),
            payload: encode_payload(doc),
            signature: vec![],
        };
        let signature: Signature = key.sign(&document::sig_structure(&cose));
        cose.signature = signature.to_bytes().to_vec();
        encode_cose(&cose)
    }

    fn ts() -> OffsetDateTime {
        at_ms(i128::from(TS_MS))
    }

    fn chain_error(r: Result<VerifiedDocument, AttestationError>) -> bool {
        matches!(r, Err(AttestationError::ChainInvalid(_)))
    }

    // ----- trust anchors -----

    #[test]
    fn aws_root_is_pinned() {
        let anchor = TrustAnchor::aws_nitro_root().expect("aws root");
        assert_eq!(anchor.fingerprint_hex(), AWS_NITRO_ROOT_G1_SHA256);
        assert_eq!(hex::encode(Sha256::digest(anchor.der())), AWS_NITRO_ROOT_G1_SHA256);
        let again = TrustAnchor::from_der(anchor.der()).expect("from der");
        assert_eq!(again.fingerprint(), anchor.fingerprint());
        // Every real document's cabundle[0] is this root.
        for bytes in [DOC1, DOC2, DOC3] {
            assert_eq!(decoded(bytes).cabundle[0], anchor.der());
        }
    }

    #[test]
    fn trust_anchor_inputs_are_checked() {
        assert!(matches!(
            TrustAnchor::from_der(b"garbage"),
            Err(AttestationError::ChainInvalid(_))
        ));
        assert!(matches!(
            TrustAnchor::from_pem("not pem"),
            Err(AttestationError::Malformed(_))
        ));
        let key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            TrustAnchor::from_pem(key_pem),
            Err(AttestationError::Malformed(_))
        ));
        // An intermediate is not a root.
        let pki = Pki::new();
        assert_eq!(
            TrustAnchor::from_der(&pki.inter).err(),
            Some(AttestationError::UntrustedRoot)
        );
        // A self-issued certificate whose signature is not its own key's.
        let forged = resign(Certificate::from_der(&pki.root).expect("root"), &pki.inter_key);
        assert_eq!(
            TrustAnchor::from_der(&forged).err(),
            Some(AttestationError::UntrustedRoot)
        );
        // PEM round trip.
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &pki.root).expect("pem");
        assert_eq!(TrustAnchor::from_pem(&pem).expect("pem").der(), pki.root);
    }

    // ----- the real documents -----

    #[test]
    fn real_documents_verify_at_their_own_time() {
        let verifier = aws();
        let v1 = verifier
            .verify(DOC1, doc_time(DOC1), &Expectations::default())
            .expect("doc 1");
        assert_eq!(v1.module_id(), "i-0de38b2b6853cc9e8-enc0193685e7fee7d85");
        assert_eq!(v1.timestamp_ms(), 1_732_983_768_387);
        assert_eq!(v1.pcr(0).map(hex::encode).as_deref(), Some(DOC1_PCR0));
        assert_eq!(v1.public_key().map(<[u8]>::len), Some(65));
        assert_eq!((v1.user_data(), v1.nonce(), v1.is_debug_mode()), (None, None, false));

        let v2 = verifier
            .verify(DOC2, doc_time(DOC2), &Expectations::default())
            .expect("doc 2");
        assert_eq!(v2.nonce().map(hex::encode).as_deref(), Some(DOC2_NONCE));
        assert_eq!(v2.public_key(), Some(&b"dummy"[..]));

        let v3 = verifier
            .verify(DOC3, doc_time(DOC3), &expect_debug(true))
            .expect("doc 3 with debug allowed");
        assert!(v3.is_debug_mode());
        assert_eq!(v3.nonce().map(<[u8]>::len), Some(256));
        assert_eq!(
            verifier.verify(DOC3, doc_time(DOC3), &expect_debug(false)),
            Err(AttestationError::DebugModePcrs)
        );

        // Without a freshness window, any `now` while the chain is valid works.
        let lenient = Expectations {
            max_age: None,
            ..Expectations::default()
        };
        let later = at_ms(doc_ms(DOC1) + 2 * 3600 * 1000);
        assert!(verifier.verify(DOC1, later, &lenient).is_ok());
    }

    #[test]
    fn tag_18_prefix_still_verifies() {
        for (bytes, debug) in [(DOC1, false), (DOC2, false), (DOC3, true)] {
            let mut tagged = vec![0xd2];
            tagged.extend_from_slice(bytes);
            assert!(AWS.verify(&tagged, doc_time(bytes), &expect_debug(debug)).is_ok());
        }
    }

    #[test]
    fn flipped_bytes_break_the_signature() {
        for bytes in [DOC1, DOC2, DOC3] {
            // Bytes 101..104 are `00 58 30`, the head of PCR0's 48-byte value.
            assert_eq!(&bytes[101..104], &[0x00, 0x58, 0x30]);
            for at in [151, 30, bytes.len() - 1] {
                let r = AWS.verify(&flipped(bytes, at), doc_time(bytes), &expect_debug(true));
                assert_eq!(r, Err(AttestationError::BadSignature), "byte {at}");
            }
        }
    }

    #[test]
    fn truncated_documents_fail_cleanly() {
        for bytes in [DOC1, DOC2, DOC3] {
            let r = AWS.verify(&bytes[..bytes.len() - 1], doc_time(bytes), &expect_debug(true));
            assert!(matches!(r, Err(AttestationError::Malformed(_))), "{r:?}");
        }
        assert_eq!(
            AWS.verify(
                &vec![0u8; MAX_DOCUMENT_LEN + 1],
                doc_time(DOC1),
                &Expectations::default()
            ),
            Err(AttestationError::Oversized)
        );
    }

    #[test]
    fn expired_chain_at_a_later_now() {
        let now = datetime!(2026-11-24 0:00 UTC);
        let no_window = Expectations {
            max_age: None,
            allow_debug: true,
            ..Expectations::default()
        };
        for bytes in [DOC1, DOC2, DOC3] {
            assert_eq!(
                AWS.verify(bytes, now, &no_window),
                Err(AttestationError::CertificateExpired)
            );
            // With a freshness window the age is reported first.
            assert!(matches!(
                AWS.verify(bytes, now, &expect_debug(true)),
                Err(AttestationError::Stale { .. })
            ));
        }
    }

    #[test]
    fn another_root_is_untrusted() {
        let other = key(9);
        let root = issue(
            Profile::Root,
            "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US",
            spki(&other),
            &other,
        );
        let verifier = Verifier::new(TrustAnchor::from_der(&der_of(&root)).expect("anchor"));
        for bytes in [DOC1, DOC2, DOC3] {
            assert_eq!(
                verifier.verify(bytes, doc_time(bytes), &expect_debug(true)),
                Err(AttestationError::UntrustedRoot)
            );
        }
        let unrelated = issue(Profile::Root, "CN=Someone Else", spki(&other), &other);
        let verifier = Verifier::new(TrustAnchor::from_der(&der_of(&unrelated)).expect("anchor"));
        assert_eq!(
            verifier.verify(DOC1, doc_time(DOC1), &Expectations::default()),
            Err(AttestationError::UntrustedRoot)
        );
    }

    #[test]
    fn freshness_window() {
        let ts = doc_ms(DOC1);
        let expect = Expectations {
            max_age: Some(Duration::from_secs(60)),
            max_future: Duration::from_secs(10),
            ..Expectations::default()
        };
        assert!(AWS.verify(DOC1, at_ms(ts + 60_000), &expect).is_ok());
        assert_eq!(
            AWS.verify(DOC1, at_ms(ts + 60_001), &expect),
            Err(AttestationError::Stale { age_ms: 60_001 })
        );
        assert!(AWS.verify(DOC1, at_ms(ts - 10_000), &expect).is_ok());
        assert_eq!(
            AWS.verify(DOC1, at_ms(ts - 10_001), &expect),
            Err(AttestationError::FromTheFuture)
        );
        // The future bound applies even without a freshness window.
        let no_window = Expectations {
            max_age: None,
            ..expect
        };
        assert_eq!(
            AWS.verify(DOC1, at_ms(ts - 10_001), &no_window),
            Err(AttestationError::FromTheFuture)
        );
    }

    #[test]
    fn nonce_expectations() {
        let nonce = hex::decode(DOC2_NONCE).expect("hex");
        let with_nonce = |n: &[u8]| Expectations {
            nonce: Some(n.to_vec()),
            ..Expectations::default()
        };
        assert!(AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&nonce)).is_ok());
        let mut wrong = nonce.clone();
        wrong[19] ^= 1;
        assert_eq!(
            AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&wrong)),
            Err(AttestationError::NonceMismatch)
        );
        assert_eq!(
            AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&nonce[..19])),
            Err(AttestationError::NonceMismatch)
        );
        assert_eq!(
            AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&[])),
            Err(AttestationError::NonceMismatch)
        );
        // Document 1's nonce is null.
        assert_eq!(
            AWS.verify(DOC1, doc_time(DOC1), &with_nonce(&nonce)),
            Err(AttestationError::NonceMismatch)
        );
    }

    #[test]
    fn pcr_expectations() {
        let pcr0 = hex::decode(DOC1_PCR0).expect("hex");
        let expect = |pcrs: Vec<(u8, Vec<Vec<u8>>)>| Expectations {
            pcrs: pcrs.into_iter().collect(),
            ..Expectations::default()
        };
        let now = doc_time(DOC1);
        assert!(AWS.verify(DOC1, now, &expect(vec![(0, vec![pcr0.clone()])])).is_ok());
        assert!(
            AWS.verify(
                DOC1,
                now,
                &expect(vec![(0, vec![vec![0; 48], pcr0.clone()]), (8, vec![vec![0; 48]])])
            )
            .is_ok()
        );
        let mut other = pcr0.clone();
        other[0] ^= 1;
        assert_eq!(
            AWS.verify(DOC1, now, &expect(vec![(0, vec![other])])),
            Err(AttestationError::PcrMismatch { index: 0 })
        );
        assert_eq!(
            AWS.verify(
                DOC1,
                now,
                &expect(vec![(0, vec![pcr0.clone()]), (1, vec![pcr0.clone()])])
            ),
            Err(AttestationError::PcrMismatch { index: 1 })
        );
        assert_eq!(
            AWS.verify(DOC1, now, &expect(vec![(0, vec![])])),
            Err(AttestationError::PcrMismatch { index: 0 })
        );
        assert_eq!(
            AWS.verify(DOC1, now, &expect(vec![(20, vec![vec![0; 48]])])),
            Err(AttestationError::PcrMismatch { index: 20 })
        );
        assert_eq!(
            AWS.verify(DOC1, now, &expect(vec![(0, vec![pcr0[..32].to_vec()])])),
            Err(AttestationError::PcrMismatch { index: 0 })
        );
    }

    // ----- the chain cache -----

    #[test]
    fn signature_cache_skips_only_the_signature_of_the_same_bytes() {
        let verifier = aws();
        verifier
            .verify(DOC1, doc_time(DOC1), &Expectations::default())
            .expect("first");
        assert_eq!(verifier.signature_cache_hits(), 0);
        verifier
            .verify(DOC1, doc_time(DOC1), &Expectations::default())
            .expect("second");
        assert_eq!(verifier.signature_cache_hits(), 1);
        // Other bytes (a tampered signature) are verified and refused.
        assert_eq!(
            verifier.verify(&flipped(DOC1, DOC1.len() - 1), doc_time(DOC1), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        assert_eq!(verifier.signature_cache_hits(), 1);
        // A known document is still held to time, freshness and nonce.
        let no_window = Expectations {
            max_age: None,
            ..Expectations::default()
        };
        assert_eq!(
            verifier.verify(DOC1, datetime!(2026-11-24 0:00 UTC), &no_window),
            Err(AttestationError::CertificateExpired)
        );
        assert!(matches!(
            verifier.verify(
                DOC1,
                doc_time(DOC1) + Duration::from_secs(3600),
                &Expectations::default()
            ),
            Err(AttestationError::Stale { .. })
        ));
        let wrong_nonce = Expectations {
            nonce: Some(vec![1, 2, 3]),
            ..Expectations::default()
        };
        assert_eq!(
            verifier.verify(DOC1, doc_time(DOC1), &wrong_nonce),
            Err(AttestationError::NonceMismatch)
        );
    }

    #[test]
    fn chain_cache_skips_chain_checks_but_not_the_signature_or_time() {
        let verifier = aws();
        assert_eq!((verifier.cache_len(), verifier.cache_hits()), (0, 0));
        verifier
            .verify(DOC1, doc_time(DOC1), &Expectations::default())
            .expect("first");
        assert_eq!((verifier.cache_len(), verifier.cache_hits()), (1, 0));
        verifier
            .verify(DOC1, doc_time(DOC1), &Expectations::default())
            .expect("second");
        assert_eq!((verifier.cache_len(), verifier.cache_hits()), (1, 1));

        // Same chain, tampered signature or payload: the cached chain is used and the document still fails.
        let tampered = flipped(DOC1, DOC1.len() - 1);
        assert_eq!(
            verifier.verify(&tampered, doc_time(DOC1), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        assert_eq!(
            verifier.verify(&flipped(DOC1, 151), doc_time(DOC1), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        assert_eq!(verifier.cache_hits(), 3);

        // Validity is still checked with a cached chain.
        let no_window = Expectations {
            max_age: None,
            ..Expectations::default()
        };
        assert_eq!(
            verifier.verify(DOC1, datetime!(2026-11-24 0:00 UTC), &no_window),
            Err(AttestationError::CertificateExpired)
        );
        assert_eq!(verifier.cache_hits(), 4);

        // Another chain is another entry; a failed chain is not cached.
        verifier
            .verify(DOC2, doc_time(DOC2), &Expectations::default())
            .expect("doc 2");
        assert_eq!(verifier.cache_len(), 2);
        let bad_chain = edited(DOC1, |d| d.cabundle.swap(1, 2));
        assert!(chain_error(verifier.verify(
            &bad_chain,
            doc_time(DOC1),
            &Expectations::default()
        )));
        assert_eq!(verifier.cache_len(), 2);
    }

    #[test]
    fn cached_validity_window_covers_the_whole_chain() {
        let pki = Pki::new();
        // The leaf lives one hour around TS; the intermediate ends before the leaf does.
        let inter = der_of(&issue_valid(
            sub_ca(ROOT, Some(0)),
            INTER,
            spki(&pki.inter_key),
            &pki.root_key,
            validity(TS_S - HOUR, TS_S + 10),
        ));
        let leaf = der_of(&issue_valid(
            leaf_profile(INTER),
            LEAF,
            spki(&pki.leaf_key),
            &pki.inter_key,
            validity(TS_S - 5, TS_S + HOUR),
        ));
        let verifier = pki.verifier();
        let lenient = Expectations {
            max_age: None,
            ..Expectations::default()
        };
        let doc = synthetic(leaf, vec![pki.root.clone(), inter]);
        assert!(verifier.verify(&pki.sign(&doc), ts(), &lenient).is_ok());
        for _ in 0..2 {
            // Stamped after the intermediate expired (first a miss, then a hit).
            let late = AttestationDocument {
                timestamp_ms: TS_MS + 11_000,
                ..doc.clone()
            };
            assert_eq!(
                verifier.verify(&pki.sign(&late), at_ms(i128::from(TS_MS) + 11_000), &lenient),
                Err(AttestationError::CertificateExpired)
            );
            // Stamped before the leaf's notBefore.
            let early = AttestationDocument {
                timestamp_ms: TS_MS - 6_000,
                ..doc.clone()
            };
            assert_eq!(
                verifier.verify(&pki.sign(&early), at_ms(i128::from(TS_MS) - 6_000), &lenient),
                Err(AttestationError::NotYetValid)
            );
        }
        assert!(verifier.cache_hits() >= 3);
    }

    #[test]
    fn chain_cache_is_bounded() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        let mut cache = verifier.cache.lock();
        for i in 0..CHAIN_CACHE_CAPACITY as u32 {
            let summary = ChainSummary {
                leaf_key: *pki.leaf_key.verifying_key(),
                not_before_s: 0,
                not_after_s: 0,
            };
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(k, summary);
        }
        drop(cache);
        assert_eq!(verifier.cache_len(), CHAIN_CACHE_CAPACITY);
        verifier
            .verify(&pki.sign(&pki.doc()), ts(), &Expectations::default())
            .expect("verifies");
        assert_eq!(verifier.cache_len(), 1);
    }

    // ----- forged chains -----

    #[test]
    fn forged_intermediates_are_refused() {
        let now = doc_time(DOC1);
        let expect = Expectations::default();
        let real = decoded(DOC1);
        let instance = Certificate::from_der(&real.cabundle[3]).expect("instance CA");

        // The leaf's issuer replaced by a CA of the same name under another key.
        let impostor_key = key(11);
        let mut impostor = instance.clone();
        impostor.tbs_certificate.subject_public_key_info = spki(&impostor_key);
        let impostor = resign(impostor, &impostor_key);
        let forged = edited(DOC1, |d| d.cabundle[3] = impostor.clone());
        assert!(chain_error(AWS.verify(&forged, now, &expect)));

        // An intermediate from another real chain.
        let other = decoded(DOC2);
        let forged = edited(DOC1, |d| d.cabundle[3] = other.cabundle[3].clone());
        assert!(chain_error(AWS.verify(&forged, now, &expect)));
        let forged = edited(DOC1, |d| d.cabundle[1] = other.cabundle[1].clone());
        assert!(chain_error(AWS.verify(&forged, now, &expect)));

        // A leaf from another chain under this chain's CAs.
        let forged = edited(DOC1, |d| d.certificate = other.certificate.clone());
        assert!(chain_error(AWS.verify(&forged, now, &expect)));

        // A root of the same name as AWS's in cabundle[0]: the real regional CA is not its child.
        let fake_root_key = key(12);
        let mut fake_root = Certificate::from_der(&real.cabundle[0]).expect("root");
        fake_root.tbs_certificate.subject_public_key_info = spki(&fake_root_key);
        let fake_root = resign(fake_root, &fake_root_key);
        let forged = edited(DOC1, |d| d.cabundle[0] = fake_root.clone());
        assert!(chain_error(AWS.verify(&forged, now, &expect)));

        // A whole forged chain under a fake root of AWS's name.
        let (i_key, l_key) = (key(13), key(14));
        let aws_name = "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US";
        let fake_root = der_of(&issue(Profile::Root, aws_name, spki(&fake_root_key), &fake_root_key));
        let fake_inter = der_of(&issue(sub_ca(aws_name, None), INTER, spki(&i_key), &fake_root_key));
        let fake_leaf = der_of(&issue(leaf_profile(INTER), LEAF, spki(&l_key), &i_key));
        let mut doc = synthetic(fake_leaf.clone(), vec![fake_root.clone(), fake_inter.clone()]);
        doc.timestamp_ms = real.timestamp_ms;
        let forged = sign_with(&l_key, &doc);
        let r = AWS.verify(&forged, now, &expect);
        assert!(
            chain_error(r.clone()) || r == Err(AttestationError::UntrustedRoot),
            "{r:?}"
        );
        doc.cabundle = vec![fake_inter];
        assert_eq!(
            AWS.verify(&sign_with(&l_key, &doc), now, &expect),
            Err(AttestationError::UntrustedRoot)
        );
        doc.cabundle = vec![TrustAnchor::aws_nitro_root().expect("root").der().to_vec()];
        assert!(AWS.verify(&sign_with(&l_key, &doc), now, &expect).is_err());
    }

    #[test]
    fn cabundle_without_the_root_is_accepted() {
        // The chain still ends at the anchor; only the signature fails because the payload changed.
        let forged = edited(DOC1, |d| {
            d.cabundle.remove(0);
        });
        assert_eq!(
            AWS.verify(&forged, doc_time(DOC1), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        // The same with a synthetic PKI verifies fully.
        let pki = Pki::new();
        let doc = AttestationDocument {
            cabundle: vec![pki.inter.clone()],
            ..pki.doc()
        };
        assert!(
            pki.verifier()
                .verify(&pki.sign(&doc), ts(), &Expectations::default())
                .is_ok()
        );
    }

    // ----- structural chain rules on a synthetic PKI -----

    #[test]
    fn synthetic_pki_verifies() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        let v = verifier
            .verify(&pki.sign(&pki.doc()), ts(), &Expectations::default())
            .expect("verifies");
        assert_eq!(v.nonce(), Some(&b"nonce"[..]));
        // Signed by a key other than the leaf's.
        assert_eq!(
            verifier.verify(&sign_with(&pki.inter_key, &pki.doc()), ts(), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        // A leaf directly under the root.
        let leaf = der_of(&issue(leaf_profile(ROOT), LEAF, spki(&pki.leaf_key), &pki.root_key));
        let doc = synthetic(leaf, vec![pki.root.clone()]);
        assert!(verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()).is_ok());
        // The AWS verifier does not trust it.
        assert_eq!(
            AWS.verify(&pki.sign(&pki.doc()), ts(), &Expectations::default()),
            Err(AttestationError::UntrustedRoot)
        );
    }

    #[test]
    fn path_length_is_enforced() {
        let pki = Pki::new();
        let ca2_key = key(20);
        // root → INTER (pathlen 0) → CA2 → leaf: INTER's pathlen is exceeded.
        let ca2 = der_of(&issue(sub_ca(INTER, None), "CN=CA2", spki(&ca2_key), &pki.inter_key));
        let leaf = der_of(&issue(leaf_profile("CN=CA2"), LEAF, spki(&pki.leaf_key), &ca2_key));
        let doc = synthetic(leaf.clone(), vec![pki.root.clone(), pki.inter.clone(), ca2.clone()]);
        assert!(chain_error(pki.verifier().verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
        // With pathlen 1 on the first intermediate it is fine.
        let inter1 = der_of(&issue(
            sub_ca(ROOT, Some(1)),
            INTER,
            spki(&pki.inter_key),
            &pki.root_key,
        ));
        let doc = synthetic(leaf, vec![pki.root.clone(), inter1, ca2]);
        assert!(
            pki.verifier()
                .verify(&pki.sign(&doc), ts(), &Expectations::default())
                .is_ok()
        );
    }

    #[test]
    fn anchor_path_length_is_enforced() {
        let root_key = key(21);
        let root = der_of(&issue(sub_ca(ROOT, Some(0)), ROOT, spki(&root_key), &root_key));
        let pki = Pki::new();
        let inter = der_of(&issue(sub_ca(ROOT, None), INTER, spki(&pki.inter_key), &root_key));
        let verifier = Verifier::new(TrustAnchor::from_der(&root).expect("anchor"));
        let doc = synthetic(pki.leaf.clone(), vec![root.clone(), inter]);
        assert!(chain_error(verifier.verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
    }

    #[test]
    fn leaf_must_not_be_a_ca_and_intermediates_must_be() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        let ca_leaf = der_of(&issue(sub_ca(INTER, None), LEAF, spki(&pki.leaf_key), &pki.inter_key));
        let doc = synthetic(ca_leaf, vec![pki.root.clone(), pki.inter.clone()]);
        let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
        assert_eq!(
            r,
            Err(AttestationError::ChainInvalid("the leaf certificate is a CA".into()))
        );

        let not_ca = der_of(&issue(leaf_profile(ROOT), INTER, spki(&pki.inter_key), &pki.root_key));
        let doc = synthetic(pki.leaf.clone(), vec![pki.root.clone(), not_ca]);
        let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
        assert_eq!(
            r,
            Err(AttestationError::ChainInvalid(
                "intermediate certificate 1 is not a CA".into()
            ))
        );
    }

    fn with_extension(cert: &[u8], issuer: &SigningKey, edit: impl FnOnce(&mut Vec<Extension>)) -> Vec<u8> {
        let mut cert = Certificate::from_der(cert).expect("cert");
        edit(cert.tbs_certificate.extensions.get_or_insert_with(Vec::new));
        resign(cert, issuer)
    }

    #[test]
    fn key_usage_and_critical_extensions() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        let sign = |inter: Vec<u8>, leaf: Vec<u8>| pki.sign(&synthetic(leaf, vec![pki.root.clone(), inter]));
        let key_usage = |usages| {
            let value = KeyUsage(usages).to_der().expect("ku");
            move |exts: &mut Vec<Extension>| {
                for ext in exts.iter_mut().filter(|e| e.extn_id == KeyUsage::OID) {
                    ext.extn_value = der::asn1::OctetString::new(value.clone()).expect("octets");
                }
            }
        };

        // A CA whose keyUsage lacks keyCertSign.
        let inter = with_extension(&pki.inter, &pki.root_key, key_usage(KeyUsages::DigitalSignature.into()));
        assert!(chain_error(verifier.verify(
            &sign(inter, pki.leaf.clone()),
            ts(),
            &Expectations::default()
        )));
        // A leaf whose keyUsage lacks digitalSignature.
        let leaf = with_extension(&pki.leaf, &pki.inter_key, key_usage(KeyUsages::KeyEncipherment.into()));
        assert!(chain_error(verifier.verify(
            &sign(pki.inter.clone(), leaf),
            ts(),
            &Expectations::default()
        )));
        // No keyUsage at all is fine (the check applies when present); no AKI/SKI is fine.
        let bare = |cert: &[u8], issuer: &SigningKey| {
            with_extension(cert, issuer, |exts| {
                exts.retain(|e| e.extn_id == BasicConstraints::OID);
            })
        };
        let doc = sign(bare(&pki.inter, &pki.root_key), bare(&pki.leaf, &pki.inter_key));
        assert!(verifier.verify(&doc, ts(), &Expectations::default()).is_ok());
        // An unknown critical extension.
        let unknown = |exts: &mut Vec<Extension>| {
            exts.push(Extension {
                extn_id: der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
                critical: true,
                extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).expect("octets"),
            });
        };
        let leaf = with_extension(&pki.leaf, &pki.inter_key, unknown);
        assert!(chain_error(verifier.verify(
            &sign(pki.inter.clone(), leaf),
            ts(),
            &Expectations::default()
        )));
        // A duplicated extension.
        let leaf = with_extension(&pki.leaf, &pki.inter_key, |exts| {
            let first = exts[0].clone();
            exts.push(first);
        });
        assert!(chain_error(verifier.verify(
            &sign(pki.inter.clone(), leaf),
            ts(),
            &Expectations::default()
        )));
        // A CA without basicConstraints.
        let inter = with_extension(&pki.inter, &pki.root_key, |exts| {
            exts.retain(|e| e.extn_id != BasicConstraints::OID)
        });
        assert!(chain_error(verifier.verify(
            &sign(inter, pki.leaf.clone()),
            ts(),
            &Expectations::default()
        )));
    }

    #[test]
    fn certificate_signatures_and_names_are_checked() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        // The leaf signed by the root instead of its named issuer.
        let leaf = resign(Certificate::from_der(&pki.leaf).expect("leaf"), &pki.root_key);
        let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
        assert!(chain_error(verifier.verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
        // The leaf naming another issuer.
        let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
        leaf.tbs_certificate.issuer = name("CN=Someone Else");
        let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
        assert!(chain_error(verifier.verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
        // Garbage as a certificate.
        let doc = synthetic(b"not a certificate".to_vec(), vec![pki.root.clone(), pki.inter.clone()]);
        assert!(chain_error(verifier.verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
        // Too many intermediates.
        let doc = synthetic(pki.leaf.clone(), vec![pki.inter.clone(); MAX_INTERMEDIATES + 2]);
        assert!(chain_error(verifier.verify(
            &pki.sign(&doc),
            ts(),
            &Expectations::default()
        )));
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        let pki = Pki::new();
        let verifier = pki.verifier();
        // A P-256 leaf key.
        let p256_key = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("p256");
        let p256_spki = SubjectPublicKeyInfoOwned::from_key(*p256_key.verifying_key()).expect("spki");
        let leaf = der_of(&issue(leaf_profile(INTER), LEAF, p256_spki, &pki.inter_key));
        let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
        assert_eq!(
            verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
            Err(AttestationError::UnsupportedAlgorithm)
        );
        // A certificate claiming ecdsa-with-SHA256.
        let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
        let sha256 = der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
        leaf.signature_algorithm.oid = sha256;
        leaf.tbs_certificate.signature.oid = sha256;
        let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
        assert_eq!(
            verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
            Err(AttestationError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn invalid_signature_scalars_are_bad_signatures() {
        let pki = Pki::new();
        let mut cose = parse_cose(&pki.sign(&pki.doc())).expect("cose");
        for fill in [0x00, 0xff] {
            cose.signature = vec![fill; 96];
            let r = pki
                .verifier()
                .verify(&encode_cose(&cose), ts(), &Expectations::default());
            assert_eq!(r, Err(AttestationError::BadSignature));
        }
    }

    #[test]
    fn mock_documents_verify_under_the_mock_root_only() {
        use crate::mock::{MockAttester, MockPki};
        let attester = MockAttester::new(MockPki::ephemeral().expect("mock pki"));
        let verifier = Verifier::new(TrustAnchor::from_der(attester.pki().root_der()).expect("mock anchor"));
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis();
        let now_ms = u64::try_from(now_ms).expect("ms");
        let doc = attester
            .attest(Some(b"ud"), Some(b"n0"), Some(b"pk"), now_ms)
            .expect("attest");
        let now = at_ms(i128::from(now_ms));
        let expect = Expectations {
            nonce: Some(b"n0".to_vec()),
            ..Expectations::default()
        };
        let v = verifier.verify(&doc, now, &expect).expect("mock document verifies");
        assert_eq!(v.public_key(), Some(&b"pk"[..]));
        assert!(verifier.verify(&doc, now, &expect).is_ok());
        assert_eq!(verifier.cache_hits(), 1);
        assert_eq!(AWS.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
        let other = MockPki::ephemeral().expect("other mock pki");
        let other = Verifier::new(TrustAnchor::from_der(other.root_der()).expect("anchor"));
        assert_eq!(other.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic_verify(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            prop_assert!(AWS.verify(&bytes, doc_time(DOC1), &Expectations::default()).is_err());
        }

        #[test]
        fn mutated_real_documents_never_panic_or_verify(
            which in 0usize..3,
            at in any::<usize>(),
            value in 1u8..=255,
        ) {
            let bytes = [DOC1, DOC2, DOC3][which];
            let mut mutated = bytes.to_vec();
            let at = at % mutated.len();
            mutated[at] ^= value;
            let r = AWS.verify(&mutated, doc_time(bytes), &expect_debug(true));
            prop_assert!(r.is_err(), "byte {} ^ {} verified", at, value);
        }
    }
}
