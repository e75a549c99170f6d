//! The symmetric ciphertext blob:
//! `version (1) ‖ key id (16, UUID) ‖ key version (u32 BE) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)`.
//!
//! The associated data is the 33-byte header followed by the canonical
//! encryption context, so neither the key reference nor the context can be
//! changed without the tag failing.

use uuid::Uuid;

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::context::EncryptionContext;
use crate::secret::{Key256, SecretBytes};

pub const BLOB_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 16 + 4;
/// Smallest well-formed blob (empty plaintext).
pub const MIN_BLOB_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The parsed, not yet authenticated, header of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub key_id: Uuid,
    pub key_version: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext failed authentication")]
    Forged,
    /// Encryption itself failed (never an empty or partial blob).
    #[error("plaintext could not be encrypted")]
    Seal,
}

/// Reads the header without authenticating anything.
pub fn parse_header(blob: &[u8]) -> Result<BlobHeader, BlobError> {
    if blob.len() < MIN_BLOB_LEN || blob.first() != Some(&BLOB_VERSION) {
        return Err(BlobError::Malformed);
    }
    let key_id = Uuid::from_slice(blob.get(1..17).ok_or(BlobError::Malformed)?).map_err(|_| BlobError::Malformed)?;
    let version_bytes: [u8; 4] = blob
        .get(17..21)
        .and_then(|b| b.try_into().ok())
        .ok_or(BlobError::Malformed)?;
    Ok(BlobHeader {
        key_id,
        key_version: u32::from_be_bytes(version_bytes),
    })
}

/// Encrypts `plaintext` under `material` with a fresh nonce, into a blob
/// naming `header`'s key and version.
pub fn seal(
    header: BlobHeader,
    material: &Key256,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::with_capacity(MIN_BLOB_LEN + plaintext.len());
    out.push(BLOB_VERSION);
    out.extend_from_slice(header.key_id.as_bytes());
    out.extend_from_slice(&header.key_version.to_be_bytes());
    let nonce = aead::random_nonce();
    let mut aad = out.clone();
    aad.extend_from_slice(&context.canonical());
    let ct = aead::seal(material, &nonce, &aad, plaintext).map_err(|_| BlobError::Seal)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub fn open(blob: &[u8], material: &Key256, context: &EncryptionContext) -> Result<SecretBytes, BlobError> {
    parse_header(blob)?;
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.canonical());
    aead::open(material, nonce, &aad, ct)
        .map(SecretBytes::new)
        .map_err(|_| BlobError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).expect("valid")
    }

    proptest! {
        #[test]
        fn wrap_unwrap_roundtrip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..4096),
            key in any::<[u8; 32]>(),
            version in any::<u32>(),
            pairs in proptest::collection::btree_map("[a-z]{1,8}", ".{0,8}", 0..4),
        ) {
            let material = Key256::from_bytes(key);
            let context = EncryptionContext::new(pairs.clone().into_iter().collect::<BTreeMap<_, _>>()).expect("valid");
            let header = BlobHeader { key_id: Uuid::new_v4(), key_version: version };
            let blob = seal(header, &material, &context, &plaintext).expect("seals");
            prop_assert_eq!(parse_header(&blob).expect("header"), header);
            let opened = open(&blob, &material, &context).expect("opens");
            prop_assert_eq!(opened.expose(), plaintext.as_slice());
        }

        #[test]
        fn every_bit_of_the_blob_is_authenticated(pos in any::<usize>(), bit in 0u8..8) {
            let material = Key256::from_bytes([9; 32]);
            let context = ctx(&[("purpose", "test")]);
            let mut blob = seal(BlobHeader { key_id: Uuid::new_v4(), key_version: 1 }, &material, &context, b"secret").expect("seals");
            let i = pos % blob.len();
            blob[i] ^= 1 << bit;
            prop_assert!(open(&blob, &material, &context).is_err());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_header(&bytes);
            let _ = open(&bytes, &Key256::from_bytes([0; 32]), &EncryptionContext::default());
        }
    }

    #[test]
    fn context_and_key_are_bound() {
        let material = Key256::from_bytes([9; 32]);
        let header = BlobHeader {
            key_id: Uuid::new_v4(),
            key_version: 1,
        };
        let blob = seal(header, &material, &ctx(&[("a", "1")]), b"secret").expect("seals");
        assert_eq!(
            open(&blob, &material, &ctx(&[("a", "2")])).err(),
            Some(BlobError::Forged)
        );
        assert_eq!(open(&blob, &material, &ctx(&[])).err(), Some(BlobError::Forged));
        assert_eq!(
            open(&blob, &Key256::from_bytes([8; 32]), &ctx(&[("a", "1")])).err(),
            Some(BlobError::Forged)
        );
        assert_eq!(
            open(&blob[..MIN_BLOB_LEN - 1], &material, &ctx(&[("a", "1")])).err(),
            Some(BlobError::Malformed)
        );
    }
}
