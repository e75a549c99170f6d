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
//!
//! This file holds [`Verifier`] and the order above; `chain` the trust anchor and the
//! certificate chain (steps 2 and 4's validity window), `expectations` steps 5 and 7.

mod chain;
mod expectations;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::document::{self, AttestationDocument, CoseSign1, MAX_DOCUMENT_LEN};
pub use chain::TrustAnchor;
use chain::{ChainCache, ChainSummary, verify_chain};
pub use expectations::Expectations;
use expectations::{check_freshness, check_nonce, check_pcrs};

/// The AWS Nitro Enclaves root certificate (G1), as published by AWS.
pub const AWS_NITRO_ROOT_G1_PEM: &str = include_str!("../aws-nitro-enclaves-root-g1.pem");
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
    signatures: Mutex<HashSet<[u8; 32]>>,
    signature_hits: AtomicU64,
}

impl Verifier {
    pub fn new(anchor: TrustAnchor) -> Self {
        Self {
            anchor,
            cache: ChainCache::default(),
            signatures: Mutex::new(HashSet::new()),
            signature_hits: AtomicU64::new(0),
        }
    }

    /// Verifications that skipped the ES384 check of a document already verified.
    pub fn signature_cache_hits(&self) -> u64 {
        self.signature_hits.load(Ordering::Relaxed)
    }

    fn signatures(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
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
        check_pcrs(&doc, expect)?;
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

fn verify_cose_signature(cose: &CoseSign1, leaf_key: &VerifyingKey) -> Result<(), AttestationError> {
    let signature = Signature::from_slice(&cose.signature).map_err(|_| AttestationError::BadSignature)?;
    leaf_key
        .verify(&document::sig_structure(cose), &signature)
        .map_err(|_| AttestationError::BadSignature)
}

#[cfg(test)]
mod tests;
