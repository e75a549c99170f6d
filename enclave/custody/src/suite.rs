//! The HPKE suite of custody: RFC 9180 base mode with
//! DHKEM(X25519, HKDF-SHA256) (KEM 0x0020), HKDF-SHA256 (KDF 0x0001) and
//! ChaCha20-Poly1305 (AEAD 0x0003), single-shot, from the `hpke` crate.
//!
//! One key type serves custodians, operators and unseal sessions: a
//! [`PrivateKey`] is zeroized on drop, never `Clone`, `Debug` redacted; a
//! [`PublicKey`] is the 32-byte X25519 public key.

use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use zeroize::Zeroizing;

use crate::FormatError;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// Length of an X25519 public key, and of HPKE's encapsulated key.
pub const KEY_LEN: usize = 32;

/// The suite's name in docs and key files.
pub const SUITE_NAME: &str = "HPKE base, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305";

/// An X25519 public key (custodian, operator or unseal session).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PublicKey(#[serde(with = "serde_bytes")] [u8; KEY_LEN]);

impl PublicKey {
    /// A public key from its 32 bytes (every 32-byte string is one; the
    /// all-zero and other low-order points are refused when used).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// A public key from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<PublicKey, FormatError> {
        Ok(PublicKey(bytes.try_into().map_err(|_| FormatError::PublicKey)?))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn hpke(&self) -> Result<<Kem as hpke::Kem>::PublicKey, FormatError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0).map_err(|_| FormatError::PublicKey)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// An X25519 private key: zeroized on drop (the `hpke` key wraps
/// `x25519_dalek::StaticSecret`), never cloned or printed.
pub struct PrivateKey {
    key: <Kem as hpke::Kem>::PrivateKey,
    public: PublicKey,
}

impl PrivateKey {
    /// A fresh key pair from the operating system's CSPRNG.
    pub fn generate() -> PrivateKey {
        let (key, public) = Kem::gen_keypair();
        PrivateKey::from_parts(key, &public)
    }

    /// The key pair RFC 9180's DeriveKeyPair makes from `ikm` (32 bytes of
    /// fresh randomness, e.g. from the NSM): how the enclave makes unseal
    /// session keys from its own randomness source.
    pub fn derive(ikm: &[u8; KEY_LEN]) -> PrivateKey {
        let (key, public) = Kem::derive_keypair(ikm);
        PrivateKey::from_parts(key, &public)
    }

    /// A private key from its 32 stored bytes (a custodian key file).
    pub fn from_bytes(bytes: &[u8]) -> Result<PrivateKey, FormatError> {
        let key = <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes)
            .map_err(|_| FormatError::Malformed("X25519 private key (32 bytes)"))?;
        let public = Kem::sk_to_pk(&key);
        Ok(PrivateKey::from_parts(key, &public))
    }

    fn from_parts(key: <Kem as hpke::Kem>::PrivateKey, public: &<Kem as hpke::Kem>::PublicKey) -> PrivateKey {
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        PrivateKey {
            key,
            public: PublicKey(bytes),
        }
    }

    /// The 32 bytes to store (a custodian's key file), wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        let mut bytes = self.key.to_bytes();
        out.copy_from_slice(&bytes);
        zeroize::Zeroize::zeroize(bytes.as_mut_slice());
        out
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An HPKE ciphertext: the encapsulated key and the AEAD ciphertext.
pub struct Sealed {
    pub enc: [u8; KEY_LEN],
    pub ciphertext: Vec<u8>,
}

/// Single-shot HPKE seal of `plaintext` to `to` with `info` and `aad`.
pub fn seal(
    to: &PublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    what: &'static str,
) -> Result<Sealed, FormatError> {
    let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &to.hpke()?, info, plaintext, aad)
        .map_err(|_| FormatError::Seal(what))?;
    let mut enc_bytes = [0u8; KEY_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok(Sealed {
        enc: enc_bytes,
        ciphertext,
    })
}

/// Single-shot HPKE open; the plaintext is wiped when dropped.
pub fn open(
    key: &PrivateKey,
    enc: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| FormatError::Undecryptable(what))?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, &key.key, &enc, info, ciphertext, aad)
        .map(Zeroizing::new)
        .map_err(|_| FormatError::Undecryptable(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_every_binding_matters() {
        let key = PrivateKey::generate();
        let sealed = seal(&key.public_key(), b"info", b"aad", b"secret", "test").expect("seals");
        let open_with =
            |k: &PrivateKey, info: &[u8], aad: &[u8], ct: &[u8]| open(k, &sealed.enc, info, aad, ct, "test");
        assert_eq!(
            open_with(&key, b"info", b"aad", &sealed.ciphertext)
                .expect("opens")
                .as_slice(),
            b"secret"
        );
        assert!(open_with(&key, b"other", b"aad", &sealed.ciphertext).is_err());
        assert!(open_with(&key, b"info", b"other", &sealed.ciphertext).is_err());
        assert!(open_with(&PrivateKey::generate(), b"info", b"aad", &sealed.ciphertext).is_err());
        let mut flipped = sealed.ciphertext.clone();
        flipped[0] ^= 1;
        assert!(open_with(&key, b"info", b"aad", &flipped).is_err());
    }

    #[test]
    fn keys_round_trip_and_never_print() {
        let key = PrivateKey::derive(&[7u8; KEY_LEN]);
        let again = PrivateKey::from_bytes(key.to_bytes().as_slice()).expect("reads");
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(PrivateKey::derive(&[7u8; KEY_LEN]).public_key(), key.public_key());
        assert_ne!(PrivateKey::derive(&[8u8; KEY_LEN]).public_key(), key.public_key());
        let secret_hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!format!("{key:?}").contains(&secret_hex));
        assert!(PrivateKey::from_bytes(&[1u8; 31]).is_err());
        // The all-zero public key (low order) is refused, not used.
        assert!(seal(&PublicKey::from_bytes([0; KEY_LEN]), b"i", b"a", b"p", "test").is_err());
    }
}
