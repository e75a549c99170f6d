//! Attestation: documents for attested workloads, and verification of the
//! Keyward enclave itself.
//!
//! ## Workloads: `Recipient` requests
//!
//! A workload that wants data keys, plaintexts, random bytes or shared
//! secrets released only to itself sends `Recipient {KeyEncryptionAlgorithm:
//! "RSAES_OAEP_SHA_256", AttestationDocument}` (with any AWS SDK, e.g.
//! aws-sdk-kms's `RecipientInfo`). The document must carry the workload's
//! RSA public key ([`crate::recipient::RecipientKey::public_key_der`]) in
//! `public_key`, and be at most five minutes old:
//!
//! - inside a Nitro Enclave, [`nitro_document`] asks the Nitro Secure Module
//!   (`/dev/nsm`) for one;
//! - against a mock-mode Keyward, [`mock_document`] issues one under the
//!   mock NSM's root (`<data-dir>/mock-attestation/`, created by the enclave
//!   on its first start), as if the workload were another mock enclave.
//!
//! ## Verifying the enclave
//!
//! `Keyward.GetAttestationDocument` returns a document from the enclave's
//! own NSM whose `public_key` is the enclave's audit signing key (P-256,
//! SubjectPublicKeyInfo DER) and whose `user_data` (108 bytes) is
//! [`AUDIT_KEY_BINDING_PREFIX`] ‖ SHA-256 of that key ‖
//! [`TLS_SPKI_BINDING_LABEL`] ‖ SHA-256 of the SubjectPublicKeyInfo of the
//! enclave's TLS serving key. [`verify_enclave`] checks the document against
//! a pinned [`TrustAnchor`] (the AWS Nitro root in production, the mock root
//! in mock mode), the caller's fresh nonce and the expected PCRs, and
//! returns the attested audit key, to pin for [`crate::audit::verify_chain`]
//! instead of trusting the `AuditPublicKey` the (untrusted) host relays, and
//! the attested TLS key hash ([`EnclaveIdentity::tls_spki_sha256`]), to pin
//! with [`crate::TlsOptions::pin_spki_sha256`].
//!
//! ```no_run
//! # async fn demo(client: keyward_sdk::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use keyward_sdk::attestation::TrustAnchor;
//! let expected_pcr0: Vec<u8> = hex::decode("…the enclave image's PCR0…")?;
//! let identity = client
//!     .attest_enclave(TrustAnchor::aws_nitro_root()?, &BTreeMap::from([(0, expected_pcr0)]))
//!     .await?;
//! let chain = client.fetch_audit_chain().await?;
//! chain.verify_with(&identity.audit_public_key)?;
//! # Ok(()) }
//! ```
//!
//! ## What is trusted
//!
//! Only the anchor and the expected PCRs the caller passes. Everything in a
//! document is checked by [`keyward_attestation::verify::Verifier`] (chain
//! to the anchor, ES384 signature, certificate validity, freshness) before
//! any field is believed. The mock root's private key sits in the data
//! directory in the clear: mock documents prove nothing about isolation, and
//! nitro mode never trusts the mock root.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use keyward_attestation::mock::{MockPki, attest_with};
use keyward_attestation::verify::{DEFAULT_MAX_AGE, DEFAULT_MAX_FUTURE, Expectations, VerifiedDocument, Verifier};
use p256::pkcs8::DecodePublicKey as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::{Client, Error, KEYWARD_TARGET_PREFIX};

pub use keyward_attestation::mock::{DEFAULT_MODULE_ID, MockError, default_pcrs, mock_dir};
/// Why a document failed verification (chain, signature, freshness, nonce, PCRs).
pub use keyward_attestation::verify::AttestationError as DocumentError;
pub use keyward_attestation::verify::TrustAnchor;

/// What the enclave puts before SHA-256(audit key SPKI) in its document's
/// `user_data`.
pub const AUDIT_KEY_BINDING_PREFIX: &[u8] = b"keyward/v2/audit-key-sha256:";
/// What follows SHA-256(audit key SPKI) in `user_data`, before SHA-256 of
/// the TLS serving key's SPKI.
pub const TLS_SPKI_BINDING_LABEL: &[u8] = b"tls-spki-sha256:";
/// Length of the enclave's own `user_data`: 28 + 32 + 16 + 32.
pub const ENCLAVE_USER_DATA_LEN: usize = 108;

/// The NSM's limit on a nonce; [`verify_enclave`] also wants at least one byte.
pub const MAX_NONCE_LEN: usize = 512;

/// Why an attestation document could not be made, fetched or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The mock root could not be loaded (missing or unreadable
    /// `root.crt.pem` / `root.key.pem`) or the document not issued.
    #[error("mock attestation: {0}")]
    Mock(#[from] MockError),
    /// `/dev/nsm` could not be opened: not running inside a Nitro Enclave.
    #[error("the Nitro Secure Module is not available (not inside a Nitro Enclave?)")]
    NsmUnavailable,
    /// The NSM answered something other than a document.
    #[error("the Nitro Secure Module did not attest: {0}")]
    Nsm(String),
    /// [`verify_enclave`] needs a nonce of 1-512 bytes.
    #[error("the nonce must be 1-{MAX_NONCE_LEN} bytes, got {0}")]
    BadNonce(usize),
    /// [`verify_enclave`] needs at least one expected PCR: without one, any
    /// enclave under the anchor would pass as Keyward's.
    #[error("no expected PCR values: an enclave is identified by its measurements")]
    NoExpectedPcrs,
    /// The document did not verify: untrusted root, bad signature, stale,
    /// wrong nonce, PCR mismatch, malformed, …
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The document verified but does not bind a usable audit key.
    #[error("the attestation document does not bind an audit key: {0}")]
    Unbound(&'static str),
    /// Fetching the document from the service failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// The document verified, but the connection that carried it was served
    /// a certificate for another key than the TLS key the enclave attests:
    /// the TLS session ends somewhere else (a host terminating TLS itself,
    /// even with a valid certificate, relaying the enclave's document).
    /// SHA-256 of each SubjectPublicKeyInfo.
    #[error(
        "the TLS connection does not end in the attested enclave: its certificate's key (SPKI SHA-256 {}) is not \
         the attested one ({})",
        hex::encode(connection),
        hex::encode(attested)
    )]
    ChannelMismatch { attested: [u8; 32], connection: [u8; 32] },
}

/// A verified Keyward enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnclaveIdentity {
    /// The enclave's audit signing key (P-256 SubjectPublicKeyInfo DER):
    /// pin it for [`crate::audit::verify_chain`].
    pub audit_public_key: Vec<u8>,
    /// The enclave's module id (NSM).
    pub module_id: String,
    /// Every PCR the document states.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// When the NSM issued the document, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// SHA-256 of the SubjectPublicKeyInfo (DER) of the enclave's TLS
    /// serving key: pin it ([`crate::TlsOptions::pin_spki_sha256`]) or
    /// compare it with the certificate of the connection used
    /// ([`Client::get_attestation_document_and_tls_spki`]).
    pub tls_spki_sha256: [u8; 32],
}

// ------------------------------------------------------------ workloads

/// A document from the mock NSM's PKI, as the mock enclave `module_id` with
/// `pcrs` (PCR0-15 are always present, zero unless given; values are 48
/// bytes), carrying `public_key` (e.g. a
/// [`crate::recipient::RecipientKey::public_key_der`]) and `nonce`, stamped
/// now. `mock_attestation_dir` is the enclave's
/// `<data-dir>/mock-attestation` ([`mock_dir`]), which must hold
/// `root.crt.pem` and `root.key.pem`; nothing is created there.
pub fn mock_document(
    mock_attestation_dir: &Path,
    module_id: &str,
    pcrs: &BTreeMap<u8, Vec<u8>>,
    public_key: &[u8],
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>, AttestationError> {
    let pki = MockPki::from_root_files(mock_attestation_dir)?;
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    Ok(attest_with(
        &pki,
        module_id,
        pcrs,
        None,
        nonce,
        Some(public_key),
        now_ms,
    )?)
}

/// A document from this Nitro Enclave's NSM carrying `public_key` and
/// `nonce`. Off Nitro (no `/dev/nsm`) it fails with
/// [`AttestationError::NsmUnavailable`].
pub fn nitro_document(public_key: &[u8], nonce: Option<&[u8]>) -> Result<Vec<u8>, AttestationError> {
    use aws_nitro_enclaves_nsm_api::api::{Request, Response};
    use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};
    use serde_bytes::ByteBuf;

    let fd = nsm_init();
    if fd < 0 {
        return Err(AttestationError::NsmUnavailable);
    }
    let response = nsm_process_request(
        fd,
        Request::Attestation {
            user_data: None,
            nonce: nonce.map(|n| ByteBuf::from(n.to_vec())),
            public_key: Some(ByteBuf::from(public_key.to_vec())),
        },
    );
    nsm_exit(fd);
    match response {
        Response::Attestation { document } if !document.is_empty() => Ok(document),
        Response::Error(code) => Err(AttestationError::Nsm(format!("{code:?}"))),
        _ => Err(AttestationError::Nsm("an unexpected response".into())),
    }
}

// ------------------------------------------------------------ the enclave

/// Verifies the enclave's own attestation document (from
/// `Keyward.GetAttestationDocument`) at the current time; see
/// [`verify_enclave_at`].
pub fn verify_enclave(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
) -> Result<EnclaveIdentity, AttestationError> {
    verify_enclave_at(document, anchor, nonce, expected_pcrs, SystemTime::now())
}

/// Verifies the enclave's own attestation document as of `now`: it must
/// chain to `anchor`, be at most five minutes old (30 s of clock skew
/// ahead), echo `nonce` (1-512 bytes, fresh from the caller), have exactly
/// the `expected_pcrs` values (at least one; debug-mode enclaves are
/// refused), carry a P-256 `public_key`, and bind it in `user_data`
/// ([`AUDIT_KEY_BINDING_PREFIX`] ‖ SHA-256 of the key ‖
/// [`TLS_SPKI_BINDING_LABEL`] ‖ the 32-byte TLS key hash, returned as
/// [`EnclaveIdentity::tls_spki_sha256`]).
pub fn verify_enclave_at(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    now: SystemTime,
) -> Result<EnclaveIdentity, AttestationError> {
    let verified = verify_enclave_document(document, anchor, nonce, expected_pcrs, now)?;
    let public_key = verified
        .public_key()
        .ok_or(AttestationError::Unbound("it carries no public_key"))?;
    p256::PublicKey::from_public_key_der(public_key)
        .map_err(|_| AttestationError::Unbound("public_key is not a P-256 SubjectPublicKeyInfo"))?;
    let mut binding = AUDIT_KEY_BINDING_PREFIX.to_vec();
    binding.extend_from_slice(&Sha256::digest(public_key));
    binding.extend_from_slice(TLS_SPKI_BINDING_LABEL);
    let tls_spki_sha256 = match verified.user_data() {
        Some(user_data) if user_data.len() == ENCLAVE_USER_DATA_LEN && user_data.starts_with(&binding) => {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&user_data[binding.len()..]);
            hash
        }
        _ => {
            return Err(AttestationError::Unbound(
                "user_data is not keyward/v2/audit-key-sha256:, the SHA-256 of public_key, tls-spki-sha256: and 32 bytes",
            ));
        }
    };
    Ok(EnclaveIdentity {
        audit_public_key: public_key.to_vec(),
        module_id: verified.module_id().to_owned(),
        pcrs: verified.document.pcrs.clone(),
        timestamp_ms: verified.timestamp_ms(),
        tls_spki_sha256,
    })
}

/// The checks every document from the Keyward enclave itself passes
/// before its bindings are looked at: chain to `anchor`, at most five
/// minutes old, `nonce` (1-512 bytes) echoed, exactly the `expected_pcrs`
/// (at least one), not debug mode.
pub(crate) fn verify_enclave_document(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    now: SystemTime,
) -> Result<VerifiedDocument, AttestationError> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(AttestationError::BadNonce(nonce.len()));
    }
    if expected_pcrs.is_empty() {
        return Err(AttestationError::NoExpectedPcrs);
    }
    let expect = Expectations {
        nonce: Some(nonce.to_vec()),
        pcrs: expected_pcrs
            .iter()
            .map(|(&index, value)| (index, vec![value.clone()]))
            .collect(),
        allow_debug: false,
        max_age: Some(DEFAULT_MAX_AGE),
        max_future: DEFAULT_MAX_FUTURE,
    };
    Ok(Verifier::new(anchor).verify(document, OffsetDateTime::from(now), &expect)?)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentRequest {
    nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentResponse {
    attestation_document: String,
}

impl Client {
    /// `Keyward.GetAttestationDocument`: the enclave's own attestation
    /// document (COSE_Sign1 bytes) echoing `nonce` (1-512 bytes). Not yet
    /// verified: pass it to [`verify_enclave`].
    pub async fn get_attestation_document(&self, nonce: &[u8]) -> Result<Vec<u8>, Error> {
        self.get_attestation_document_and_tls_spki(nonce)
            .await
            .map(|(document, _)| document)
    }

    /// [`Client::get_attestation_document`], with the SHA-256 of the
    /// SubjectPublicKeyInfo of the certificate served on the very connection
    /// that carried the document: equal to the verified
    /// [`EnclaveIdentity::tls_spki_sha256`] when that connection ends in the
    /// attested enclave.
    pub async fn get_attestation_document_and_tls_spki(&self, nonce: &[u8]) -> Result<(Vec<u8>, [u8; 32]), Error> {
        const OPERATION: &str = "GetAttestationDocument";
        let body = GetAttestationDocumentRequest {
            nonce: base64::engine::general_purpose::STANDARD.encode(nonce),
        };
        let (response, spki): (GetAttestationDocumentResponse, [u8; 32]) = self
            .call_with_tls_spki(&format!("{KEYWARD_TARGET_PREFIX}{OPERATION}"), &body)
            .await?;
        let document = base64::engine::general_purpose::STANDARD
            .decode(response.attestation_document)
            .map_err(|e| Error::Decode {
                operation: format!("{KEYWARD_TARGET_PREFIX}{OPERATION}"),
                reason: format!("AttestationDocument is not base64: {e}"),
            })?;
        Ok((document, spki))
    }

    /// Fetches the enclave's attestation document with a fresh random
    /// 32-byte nonce and verifies it ([`verify_enclave`]).
    pub async fn attest_enclave(
        &self,
        anchor: TrustAnchor,
        expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    ) -> Result<EnclaveIdentity, AttestationError> {
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let document = self.get_attestation_document(&nonce).await?;
        verify_enclave(&document, anchor, &nonce, expected_pcrs)
    }
}

#[cfg(test)]
mod tests;
