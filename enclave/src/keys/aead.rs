//! AES-256-GCM: the enclave's one authenticated cipher. Record sealing
//! (`seal`), CMK material wrapping under a tenant KEK (`keys::record`),
//! ciphertext blobs (`keys::blob`) and the mock root key (`bootstrap`) all
//! use it, each with its own framing and associated data; none of them calls
//! `aes_gcm` directly.
//!
//! Both directions return `Result`: sealing fails only for inputs beyond
//! GCM's limit (64 GiB), far above anything the enclave handles, but such a
//! failure is an error to propagate, never an empty or truncated ciphertext.
//! The nonce is explicit: the caller draws it ([`random_nonce`] or the NSM)
//! and frames it; [`Cipher::open`] refuses a nonce of the wrong length
//! instead of panicking. The key schedule is zeroized on drop (`aes-gcm`'s
//! `zeroize` feature); keys come in as [`Key256`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce as GcmNonce};

use crate::secret::Key256;

/// Bytes of a GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of a GCM tag (appended to the ciphertext).
pub const TAG_LEN: usize = 16;

/// A 96-bit GCM nonce.
pub type Nonce = [u8; NONCE_LEN];

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AeadError {
    /// Encryption failed: the input exceeds what AES-GCM can encrypt.
    #[error("AES-256-GCM encryption failed")]
    Seal,
    /// The nonce is malformed, or the ciphertext, tag, key or associated
    /// data do not match.
    #[error("AES-256-GCM authentication failed")]
    Open,
}

/// A fresh random nonce from the OS CSPRNG (random 96-bit nonces: at most
/// 2^32 messages per key, far beyond any key's use here).
pub fn random_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    nonce
}

/// An AES-256-GCM key schedule, for a key that seals many messages.
pub struct Cipher(Aes256Gcm);

impl Cipher {
    pub fn new(key: &Key256) -> Self {
        Cipher(Aes256Gcm::new(key.expose().into()))
    }

    /// `ciphertext ‖ tag` of `plaintext` under `nonce`, bound to `aad`.
    pub fn seal(&self, nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        self.0
            .encrypt(GcmNonce::from_slice(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| AeadError::Seal)
    }

    /// The plaintext of `ciphertext ‖ tag`, if it authenticates under
    /// `nonce` (which must be [`NONCE_LEN`] bytes) and `aad`. The caller
    /// wraps a secret plaintext in [`crate::secret::SecretBytes`].
    pub fn open(&self, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, AeadError> {
        if nonce.len() != NONCE_LEN {
            return Err(AeadError::Open);
        }
        self.0
            .decrypt(GcmNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| AeadError::Open)
    }
}

/// [`Cipher::seal`] under `key`, for a key used once.
pub fn seal(key: &Key256, nonce: &Nonce, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    Cipher::new(key).seal(nonce, aad, plaintext)
}

/// [`Cipher::open`] under `key`, for a key used once.
pub fn open(key: &Key256, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, AeadError> {
    Cipher::new(key).open(nonce, aad, ciphertext)
}

#[cfg(test)]
mod tests;
