//! Types for secrets: zeroized on drop, never `Clone`, `Debug` redacted, bytes
//! only through an explicit call, compared in constant time.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit symmetric key (root key, sealing key, KEK, CMK material).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Key256([u8; 32]);

impl Key256 {
    /// Takes ownership of `bytes`; the caller's copy should be zeroized too.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key256(bytes)
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Key256(bytes)
    }

    /// Copies a key out of a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Key256(array))
    }

    /// The key bytes. Every call site is a place where the key is used.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

impl PartialEq for Key256 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Variable-length secret bytes (plaintexts, data keys, secret access keys).
#[derive(Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// `len` random bytes from the OS CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality (length is not secret).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = Key256::from_bytes([0xAB; 32]);
        let secret = SecretBytes::new(b"hunter2-hunter2".to_vec());
        let shown = format!("{key:?} {secret:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(Key256::from_bytes([1; 32]), Key256::from_bytes([1; 32]));
        assert_ne!(Key256::from_bytes([1; 32]), Key256::from_bytes([2; 32]));
        assert!(SecretBytes::new(vec![1, 2]).ct_eq(&[1, 2]));
        assert!(!SecretBytes::new(vec![1, 2]).ct_eq(&[1, 2, 3]));
    }
}
