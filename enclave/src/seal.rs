//! Sealing: authenticated encryption of every record the enclave hands to the
//! host, with the record's identity (namespace and key) **and its store
//! version** as associated data, so the host can neither read a record, nor
//! move it to another identity, nor pass one version's bytes off as
//! another's.
//!
//! Format: `0x02 ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖ tag)`. Format `0x01`
//! (records before versions were bound in) is refused with
//! [`SealError::OldFormat`]: Keyward is pre-1.0 and does not migrate.

use std::sync::Arc;

use crate::keys::aead::{self, AeadError, Cipher, NONCE_LEN, TAG_LEN};
use crate::secret::Key256;

const SEAL_VERSION: u8 = 2;
/// The format before store versions were bound into the associated data.
const OLD_SEAL_VERSION: u8 = 1;

/// How to start fresh when the store holds records of an older format.
pub const START_FRESH: &str = "Keyward is pre-1.0 and does not migrate stores: to start fresh, stop Keyward and \
     move the store aside or delete it (`<data-dir>/store`, or the PostgreSQL table `keyward_records`)";

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error("sealed record {0} is malformed")]
    Malformed(String),
    #[error(
        "sealed record {0} failed authentication (altered, moved, served under another version, or sealed by another root)"
    )]
    Forged(String),
    #[error("record {0} was written by an earlier Keyward (record format 1, before store versions); {START_FRESH}")]
    OldFormat(String),
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

    /// Seals `plaintext` as version `version` of record `namespace`/`key`
    /// under a fresh nonce.
    pub fn seal(&self, namespace: &str, key: &str, version: u64, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = aead::random_nonce();
        let ct = self
            .cipher
            .seal(&nonce, &identity(namespace, key, version), plaintext)
            .map_err(|_: AeadError| SealError::Seal(format!("{namespace}/{key}@{version}")))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens `sealed` as version `version` of record `namespace`/`key`.
    pub fn open(&self, namespace: &str, key: &str, version: u64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let who = || format!("{namespace}/{key} (served as version {version})");
        let (format, rest) = sealed.split_first().ok_or_else(|| SealError::Malformed(who()))?;
        if *format == OLD_SEAL_VERSION {
            return Err(SealError::OldFormat(format!("{namespace}/{key}")));
        }
        if *format != SEAL_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed(who()));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .open(nonce, &identity(namespace, key, version), ct)
            .map_err(|_| SealError::Forged(who()))
    }
}

/// Unambiguous encoding of a record identity and version.
pub(crate) fn identity(namespace: &str, key: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + namespace.len() + key.len());
    aad.extend_from_slice(b"keyward/v2/record\0");
    aad.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    aad.extend_from_slice(namespace.as_bytes());
    aad.extend_from_slice(&(key.len() as u32).to_be_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
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
            let sealed = s.seal(&ns, &key, 3, &data).expect("seals");
            prop_assert_eq!(s.open(&ns, &key, 3, &sealed).expect("opens"), data);
        }

        #[test]
        fn any_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 0..64), pos in any::<usize>(), bit in 0u8..8) {
            let s = sealer(1);
            let mut sealed = s.seal("key", "t/k", 1, &data).expect("seals");
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(s.open("key", "t/k", 1, &sealed).is_err());
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = sealer(1).open("key", "x", 1, &bytes);
        }
    }

    #[test]
    fn moved_or_foreign_records_do_not_open() {
        let s = sealer(1);
        let sealed = s.seal("key", "tenant-a/k1", 4, b"record").expect("seals");
        assert!(s.open("key", "tenant-a/k1", 4, &sealed).is_ok());
        assert!(matches!(
            s.open("key", "tenant-b/k1", 4, &sealed),
            Err(SealError::Forged(_))
        ));
        assert!(matches!(
            s.open("cred", "tenant-a/k1", 4, &sealed),
            Err(SealError::Forged(_))
        ));
        assert!(matches!(
            sealer(2).open("key", "tenant-a/k1", 4, &sealed),
            Err(SealError::Forged(_))
        ));
        // Identity encoding is unambiguous: ("ab","c") is not ("a","bc").
        let sealed = s.seal("ab", "c", 1, b"x").expect("seals");
        assert!(s.open("a", "bc", 1, &sealed).is_err());
    }

    #[test]
    fn a_version_s_bytes_do_not_open_as_another_version() {
        let s = sealer(1);
        let sealed = s.seal("key", "t/k", 7, b"record").expect("seals");
        for other in [0, 6, 8, u64::MAX] {
            let err = s.open("key", "t/k", other, &sealed).expect_err("another version");
            assert!(matches!(err, SealError::Forged(_)));
            assert!(err.to_string().contains(&format!("served as version {other}")), "{err}");
        }
    }

    #[test]
    fn the_previous_format_is_refused_with_how_to_start_fresh() {
        let mut sealed = sealer(1).seal("key", "t/k", 1, b"record").expect("seals");
        sealed[0] = OLD_SEAL_VERSION;
        let err = sealer(1).open("key", "t/k", 1, &sealed).expect_err("old format");
        assert!(matches!(err, SealError::OldFormat(_)));
        let text = err.to_string();
        assert!(
            text.contains("does not migrate") && text.contains("<data-dir>/store"),
            "{text}"
        );
    }

    #[test]
    fn plaintext_does_not_appear_in_sealed_bytes() {
        let secret = b"a very recognisable plaintext, 42 bytes!!";
        let sealed = sealer(3).seal("key", "k", 1, secret).expect("seals");
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    }
}
