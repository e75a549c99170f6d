//! The operator-CA path, second half: validating the chain an operator
//! imports (`Keyward.ImportTlsCertificate {CertificateChain}`, PEM, leaf
//! first). The enclave refuses anything it should not serve:
//!
//! * not PEM certificates, or more than [`MAX_CHAIN`] of them;
//! * a leaf whose SubjectPublicKeyInfo is not the enclave's serving key's;
//! * a list that is not a chain: each certificate must name the next as its
//!   issuer and be signed by its key, up to the last one, which is taken as
//!   the anchor (its own issuer, usually the operator's root, is the
//!   clients' business); the path is checked as rustls clients check it
//!   (rustls-webpki: signatures, CA basic constraints, server-auth usage);
//! * any certificate expired, or not yet valid, at the enclave's time.
//!
//! Each refusal has its own [`ImportError`], whose text becomes the
//! `ValidationException` message.

use der::{Decode, Encode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

/// Most certificates accepted in one chain.
pub const MAX_CHAIN: usize = 8;
/// Largest PEM text accepted.
pub const MAX_PEM: usize = 64 * 1024;

/// Why an imported chain was refused. Certificates are numbered from 1, the leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("The certificate chain is not PEM: expected one or more -----BEGIN CERTIFICATE----- blocks, leaf first.")]
    NotPem,
    #[error("The certificate chain is too long: at most {MAX_CHAIN} certificates and {MAX_PEM} bytes.")]
    TooLong,
    #[error("The certificate chain is not a chain: certificate {0} is not a valid X.509 certificate.")]
    Malformed(usize),
    #[error(
        "The certificate does not match the enclave's key: the leaf's public key is not the one in the enclave's certificate signing request."
    )]
    KeyMismatch,
    #[error("The certificate chain is not a chain: certificate {0} is not issued by certificate {next}.", next = .0 + 1)]
    NotIssuedByNext(usize),
    #[error("The certificate chain is not a chain: {0}.")]
    BadSignature(String),
    #[error("The certificate chain is expired: certificate {0} expired at {1}.")]
    Expired(usize, String),
    #[error("The certificate chain is not yet valid: certificate {0} is valid from {1}.")]
    NotYetValid(usize, String),
    #[error("The certificate chain cannot serve TLS: {0}.")]
    Unsuitable(String),
}

/// Validates `pem` for the serving key whose DER SubjectPublicKeyInfo is
/// `enclave_spki`, at `now`. Returns the chain, leaf first.
pub fn validate_chain(
    pem: &[u8],
    enclave_spki: &[u8],
    now: OffsetDateTime,
) -> Result<Vec<CertificateDer<'static>>, ImportError> {
    if pem.len() > MAX_PEM {
        return Err(ImportError::TooLong);
    }
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|_| ImportError::NotPem)?;
        if chain.len() == MAX_CHAIN {
            return Err(ImportError::TooLong);
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(ImportError::NotPem);
    }
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| x509_cert::Certificate::from_der(der).map_err(|_| ImportError::Malformed(i + 1)))
        .collect::<Result<Vec<_>, _>>()?;

    let leaf_spki = parsed[0]
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| ImportError::Malformed(1))?;
    if leaf_spki != enclave_spki {
        return Err(ImportError::KeyMismatch);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].tbs_certificate.issuer != pair[1].tbs_certificate.subject {
            return Err(ImportError::NotIssuedByNext(i + 1));
        }
    }
    for (i, cert) in parsed.iter().enumerate() {
        let (not_before, not_after) = validity_of(cert).ok_or(ImportError::Malformed(i + 1))?;
        if now > not_after {
            return Err(ImportError::Expired(i + 1, rfc3339(not_after)));
        }
        if now < not_before {
            return Err(ImportError::NotYetValid(i + 1, rfc3339(not_before)));
        }
    }
    if chain.len() > 1 {
        verify_path(&chain, now)?;
    }
    Ok(chain)
}

/// The path from the leaf to the last certificate, as rustls clients check
/// it, with the last certificate as the trust anchor.
fn verify_path(chain: &[CertificateDer<'static>], now: OffsetDateTime) -> Result<(), ImportError> {
    let last = chain.len() - 1;
    let anchor = webpki::anchor_from_trusted_cert(&chain[last]).map_err(|e| unsuitable(last + 1, &e))?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| unsuitable(1, &e))?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    leaf.verify_for_usage(
        algorithms,
        &[anchor],
        &chain[1..last],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer
        | webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            ImportError::BadSignature("a certificate is not signed by the key of the certificate after it".to_owned())
        }
        other => ImportError::Unsuitable(format!("{other:?}")),
    })
}

fn unsuitable(index: usize, e: &webpki::Error) -> ImportError {
    ImportError::Unsuitable(format!("certificate {index}: {e:?}"))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub(crate) fn leaf_spki(certificate: &CertificateDer<'_>) -> Result<Vec<u8>, ImportError> {
    x509_cert::Certificate::from_der(certificate)
        .ok()
        .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
        .ok_or(ImportError::Malformed(1))
}

/// `(notBefore, notAfter)` of a certificate.
pub(crate) fn validity(certificate: &CertificateDer<'_>) -> Result<(OffsetDateTime, OffsetDateTime), ImportError> {
    x509_cert::Certificate::from_der(certificate)
        .ok()
        .as_ref()
        .and_then(validity_of)
        .ok_or(ImportError::Malformed(1))
}

fn validity_of(cert: &x509_cert::Certificate) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let v = &cert.tbs_certificate.validity;
    let at = |t: &x509_cert::time::Time| {
        let seconds = i64::try_from(t.to_unix_duration().as_secs()).ok()?;
        OffsetDateTime::from_unix_timestamp(seconds).ok()
    };
    Some((at(&v.not_before)?, at(&v.not_after)?))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
