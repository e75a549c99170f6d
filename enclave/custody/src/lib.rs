//! # keyward-custody: the root-key custody formats
//!
//! What the enclave and a custodian's `kmsctl` exchange during genesis and
//! unseal, defined once so the two sides cannot drift (docs/custody.md):
//!
//! - [`suite`]: the one HPKE suite (RFC 9180, base mode,
//!   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) and the
//!   key types of custodians, operators and unseal sessions;
//! - [`share`]: a Shamir share as the enclave hands it out
//!   ([`share::ShareSecret`]), its digest, and the **share package**
//!   encrypted to one custodian at genesis;
//! - [`unseal`]: the attestation `user_data` that binds an unseal session's
//!   key ([`unseal::session_binding`]) and the **unseal message** carrying
//!   one share to that session;
//! - [`backup`]: the **backup manifest** the enclave signs with the audit key
//!   (the root commitment) and the backup file `kmsctl` writes and restores;
//! - [`checkpoint`]: what a custodian last saw of the store (the epochs of
//!   the index roots), signed by the enclave's audit key, carried in
//!   format-2 unseal messages (freshness across restarts);
//! - [`join`]: the **join package**, the root sealed by a Ready node to a
//!   sealed node of the same deployment whose attestation it verified;
//! - [`operator`]: the **operator credential package**, the operator's first
//!   secret access key encrypted to the operator's key at genesis.
//!
//! Every encoding is CBOR (the records' encoding elsewhere in Keyward) with a
//! `format` field; every HPKE call names its purpose in `info` and binds the
//! deployment, the custodian index and (for unseal messages) the session in
//! `info` or the associated data, so a ciphertext made for one purpose,
//! deployment, custodian or session never opens as another.
//!
//! Nothing here decides anything: the enclave's `custody` module (genesis,
//! the unseal session, the boot record) and the SDK's `custody` module (key
//! files, opening packages, sealing a share for an attested session) do.
#![forbid(unsafe_code)]

pub mod backup;
pub mod checkpoint;
pub mod join;
pub mod operator;
pub mod share;
pub mod suite;
pub mod unseal;

/// The version of every format in this crate.
pub const FORMAT_VERSION: u8 = 1;

/// Length of a deployment id (random, created at genesis).
pub const DEPLOYMENT_ID_LEN: usize = 16;

/// A deployment id: 16 random bytes created at genesis, named in every
/// package, message and attestation binding of that deployment.
pub type DeploymentId = [u8; DEPLOYMENT_ID_LEN];

/// The most custodians a Shamir custody has.
pub const MAX_CUSTODIANS: usize = 16;

/// Why a custody format could not be made, read or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes are not a well-formed package or message of this version.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A format version this build does not read.
    #[error("{what} has format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { what: &'static str, found: u8 },
    /// A format version this build knows and refuses (the reason).
    #[error("{0}")]
    Outdated(&'static str),
    /// A public key that is not 32 bytes of X25519.
    #[error("not an X25519 public key (32 bytes)")]
    PublicKey,
    /// HPKE decryption failed: wrong key, or the ciphertext, its header or
    /// its binding was altered.
    #[error("{0} does not decrypt with this key (wrong key, or altered)")]
    Undecryptable(&'static str),
    /// HPKE encryption failed (never expected with a valid public key).
    #[error("{0} could not be encrypted")]
    Seal(&'static str),
}

/// Hex of a deployment id, as logs and messages show it.
pub fn deployment_hex(id: &DeploymentId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses the hex form of a deployment id.
pub fn parse_deployment_hex(text: &str) -> Option<DeploymentId> {
    if text.len() != 2 * DEPLOYMENT_ID_LEN || !text.is_ascii() {
        return None;
    }
    let mut id = [0u8; DEPLOYMENT_ID_LEN];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// CBOR encoding of a format struct (infallible for the plain structs here).
pub(crate) fn to_cbor<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, FormatError> {
    serde_cbor::to_vec(value).map_err(|_| FormatError::Malformed(what))
}

/// Reads a CBOR format struct and checks its version.
pub(crate) fn from_cbor<T: serde::de::DeserializeOwned + Versioned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, FormatError> {
    let value: T = serde_cbor::from_slice(bytes).map_err(|_| FormatError::Malformed(what))?;
    if value.format() != FORMAT_VERSION {
        return Err(FormatError::Version {
            what,
            found: value.format(),
        });
    }
    Ok(value)
}

/// A format struct with a `format` field.
pub(crate) trait Versioned {
    fn format(&self) -> u8;
}

/// Length-prefixed concatenation: an unambiguous encoding of `info` and
/// associated data (`label ‖ (len ‖ part)*`).
pub(crate) fn bind(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    out.extend_from_slice(label);
    for part in parts {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_hex_round_trips_and_refuses_garbage() {
        let id = [0xAB; DEPLOYMENT_ID_LEN];
        let text = deployment_hex(&id);
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(parse_deployment_hex(&text), Some(id));
        assert_eq!(parse_deployment_hex("ab"), None);
        assert_eq!(parse_deployment_hex(&"zz".repeat(16)), None);
        assert_eq!(parse_deployment_hex(&"é".repeat(16)), None);
    }

    proptest::proptest! {
        /// Hostile bytes never panic a reader (they arrive from the host or
        /// from files).
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = share::SharePackage::from_bytes(&bytes);
            let _ = unseal::UnsealMessage::from_bytes(&bytes);
            let _ = operator::OperatorCredentialPackage::from_bytes(&bytes);
            let _ = share::ShareSecret::decode(&bytes);
            let _ = unseal::parse_session_binding(&bytes);
            let _ = checkpoint::Checkpoint::from_bytes(&bytes);
            let _ = checkpoint::SignedCheckpoint::from_bytes(&bytes);
        }
    }

    #[test]
    fn binding_is_unambiguous() {
        assert_ne!(bind(b"l", &[b"ab", b"c"]), bind(b"l", &[b"a", b"bc"]));
        assert_ne!(bind(b"l", &[b"a"]), bind(b"m", &[b"a"]));
    }
}
