//! Sealing: authenticated encryption of every record the enclave hands to the
//! host, with the record's identity (namespace and key) as associated data,
//! so the host can neither read a record nor move it to another identity.
//!
//! Format: `0x01 ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag)`.

use std::sync::Arc;

use crate::keys::aead::{self, AeadError, Cipher, NONCE_LEN, TAG_LEN};
use crate::secret::Key256;

const SEAL_VERSION: u8 = 1;

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error("sealed record {0} is malformed")]
    Malformed(String),
    #[error("sealed record {0} failed authentication (altered, moved or sealed by another root)")]
    Forged(String),
    /// Encryption itself failed (an input beyond AES-GCM's limit): never
    /// an empty or partial record.
    #[error("record {0} could not be sealed")]
    Seal(String),
}

/// Seals and opens records under the sealing key.
pub struct Sealer {
    cipher: Cipher,
}

impl Sealer {
    pub fn new(key: Arc<Key256>) -> Self {
        Sealer {
            cipher: Cipher::new(&key),
        }
    }

    /// Seals `plaintext` as record `namespace`/`key` under a fresh nonce.
    pub fn seal(&self, namespace: &str, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = aead::random_nonce();
        let ct = self
            .cipher
            .seal(&nonce, &identity(namespace, key), plaintext)
            .map_err(|_: AeadError| SealError::Seal(format!("{namespace}/{key}")))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, namespace: &str, key: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let who = || format!("{namespace}/{key}");
        let (version, rest) = sealed.split_first().ok_or_else(|| SealError::Malformed(who()))?;
        if *version != SEAL_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed(who()));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .open(nonce, &identity(namespace, key), ct)
            .map_err(|_| SealError::Forged(who()))
    }
}

/// Unambiguous encoding of a record identity.
pub(crate) fn identity(namespace: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + namespace.len() + key.len());
    aad.extend_from_slice(b"keyward/v1/record\0");
    aad.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    aad.extend_from_slice(namespace.as_bytes());
    aad.extend_from_slice(&(key.len() as u32).to_be_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(Arc::new(Key256::from_bytes([byte; 32])))
    }

    proptest! {
        #[test]
        fn seal_open_roundtrip(ns in "[a-z]{1,8}", key in ".{0,40}", data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = sealer(1);
            let sealed = s.seal(&ns, &key, &data).expect("seals");
            prop_assert_eq!(s.open(&ns, &key, &sealed).expect("opens"), data);
        }

        #[test]
        fn any_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 0..64), pos in any::<usize>(), bit in 0u8..8) {
            let s = sealer(1);
            let mut sealed = s.seal("key", "t/k", &data).expect("seals");
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(s.open("key", "t/k", &sealed).is_err());
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = sealer(1).open("key", "x", &bytes);
        }
    }

    #[test]
    fn moved_or_foreign_records_do_not_open() {
        let s = sealer(1);
        let sealed = s.seal("key", "tenant-a/k1", b"record").expect("seals");
        assert!(matches!(
            s.open("key", "tenant-b/k1", &sealed),
            Err(SealError::Forged(_))
        ));
        assert!(matches!(
            s.open("cred", "tenant-a/k1", &sealed),
            Err(SealError::Forged(_))
        ));
        assert!(matches!(
            sealer(2).open("key", "tenant-a/k1", &sealed),
            Err(SealError::Forged(_))
        ));
        // Identity encoding is unambiguous: ("ab","c") is not ("a","bc").
        let sealed = s.seal("ab", "c", b"x").expect("seals");
        assert!(s.open("a", "bc", &sealed).is_err());
    }

    #[test]
    fn plaintext_does_not_appear_in_sealed_bytes() {
        let secret = b"a very recognisable plaintext, 42 bytes!!";
        let sealed = sealer(3).seal("key", "k", secret).expect("seals");
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    }
}
