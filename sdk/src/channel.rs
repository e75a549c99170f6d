//! The attested channel: a client that talks only to the measured enclave.
//!
//! TLS ends inside the enclave, with a key born there
//! (`docs/tls.md`). The enclave's attestation document binds the SHA-256 of
//! that key's SubjectPublicKeyInfo in `user_data`
//! ([`EnclaveIdentity::tls_spki_sha256`]). [`Client::verify_enclave_channel`]
//! fetches the document, verifies it ([`verify_enclave`]: anchor, nonce,
//! PCRs), and checks that the certificate of **the very connection that
//! carried it** has the attested key. A host that terminates the client's
//! TLS itself — even with a valid certificate from the same CA, relaying a
//! genuine document from the real enclave — fails that check: it cannot
//! present the enclave's key. The client it returns is pinned to the attested
//! key ([`crate::TlsOptions::pin_spki_sha256`]), so every later connection,
//! from any pool, must end in the same enclave.
//!
//! Before the check the only request sent is `Keyward.GetAttestationDocument`
//! (SigV4-signed: the secret access key never leaves the client, and the
//! signature covers that request and its nonce only); no other credential
//! or data goes to an endpoint that fails it.
//!
//! ```no_run
//! # async fn demo(client: keyward_sdk::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use keyward_sdk::attestation::TrustAnchor;
//! let expected_pcr0: Vec<u8> = hex::decode("…the enclave image's PCR0…")?;
//! let mut nonce = [0u8; 32];
//! rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
//! let channel = client
//!     .verify_enclave_channel(TrustAnchor::aws_nitro_root()?, &nonce, &BTreeMap::from([(0, expected_pcr0)]))
//!     .await?;
//! // Every request of `channel.client` goes to the attested enclave only.
//! let tenants = channel.client.list_tenants().await?;
//! # let _ = tenants; Ok(()) }
//! ```

use std::collections::BTreeMap;

use crate::Client;
use crate::attestation::{AttestationError, EnclaveIdentity, MAX_NONCE_LEN, TrustAnchor, verify_enclave};

/// A verified enclave and a client pinned to its TLS key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttestedChannel {
    /// The client to send everything else with: the same endpoint, CA bundle,
    /// credential, timeout and clock offset, and
    /// [`crate::TlsOptions::pin_spki_sha256`] set to the attested key.
    pub client: Client,
    /// What the document attested (audit key, PCRs, TLS key hash).
    pub identity: EnclaveIdentity,
}

impl Client {
    /// Verifies that this client's endpoint is the measured enclave and that
    /// TLS ends in it: fetches `Keyward.GetAttestationDocument` with `nonce`
    /// (1-512 bytes, fresh), verifies the document against `anchor`, `nonce`
    /// and `expected_pcrs` (at least one) with [`verify_enclave`], and checks
    /// that the certificate of the connection that carried the document has
    /// the SubjectPublicKeyInfo the document binds
    /// ([`AttestationError::ChannelMismatch`] otherwise). Returns a client
    /// pinned to that key. Nothing is sent when `nonce` or `expected_pcrs`
    /// is unusable.
    pub async fn verify_enclave_channel(
        &self,
        anchor: TrustAnchor,
        nonce: &[u8],
        expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    ) -> Result<AttestedChannel, AttestationError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(AttestationError::BadNonce(nonce.len()));
        }
        if expected_pcrs.is_empty() {
            return Err(AttestationError::NoExpectedPcrs);
        }
        let (document, connection_spki_sha256) = self.get_attestation_document_and_tls_spki(nonce).await?;
        let identity = verify_enclave(&document, anchor, nonce, expected_pcrs)?;
        // Both hashes are public: no constant-time compare needed.
        if connection_spki_sha256 != identity.tls_spki_sha256 {
            return Err(AttestationError::ChannelMismatch {
                attested: identity.tls_spki_sha256,
                connection: connection_spki_sha256,
            });
        }
        let pinned = self.tls_options().clone().with_pinned_spki(identity.tls_spki_sha256);
        Ok(AttestedChannel {
            client: self.clone().with_tls(pinned)?,
            identity,
        })
    }
}

#[cfg(test)]
mod tests;
