//! The certificate chain of a document: the pinned [`TrustAnchor`], parsing of X.509 certificates
//! into the fields the verifier uses, verification of `leaf → intermediates → anchor` (signatures,
//! names, CA constraints, key usage) and the cache of chains already verified.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use der::oid::AssociatedOid;
use der::oid::db::rfc5912::ECDSA_WITH_SHA_384;
use der::{Decode, Encode, Reader, SliceReader};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use x509_cert::name::Name;

use super::super::document::AttestationDocument;
use super::{AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256, AttestationError, MAX_INTERMEDIATES};

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

/// What a verified chain yields: the leaf's key and the intersection of the
/// validity periods of every certificate (anchor included), in Unix seconds.
#[derive(Debug, Clone)]
pub(super) struct ChainSummary {
    pub(super) leaf_key: VerifyingKey,
    pub(super) not_before_s: u64,
    pub(super) not_after_s: u64,
}

#[derive(Debug, Default)]
pub(super) struct ChainCache {
    map: Mutex<HashMap<[u8; 32], ChainSummary>>,
    pub(super) hits: AtomicU64,
}

impl ChainCache {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ChainSummary>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// SHA-256 over the length-prefixed cabundle entries and leaf.
    pub(super) fn key(doc: &AttestationDocument) -> [u8; 32] {
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
pub(super) struct ParsedCert {
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
pub(super) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<(ParsedCert, &'a [u8]), AttestationError> {
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
pub(super) fn raw_tbs(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    let header = der::Header::decode(&mut reader)?;
    header.tag.assert_eq(der::Tag::Sequence)?;
    reader.tlv_bytes()
}

/// Verifies the chain `leaf → reversed(cabundle[1..]) → anchor` (or
/// `leaf → reversed(cabundle) → anchor` when `cabundle[0]` is not the anchor).
pub(super) fn verify_chain(anchor: &TrustAnchor, doc: &AttestationDocument) -> Result<ChainSummary, AttestationError> {
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

pub(super) fn check_ca(cert: &ParsedCert, cas_below: usize, what: &str) -> Result<(), AttestationError> {
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
