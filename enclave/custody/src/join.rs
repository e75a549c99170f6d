//! Cluster join: a Ready node releases the root to a sealed node of the same
//! deployment whose attestation document it verified (docs/custody.md,
//! "Adding a node").
//!
//! The joiner makes a fresh X25519 key and an attestation document with
//! `public_key` = that key and `user_data` = [`join_binding`] (the
//! deployment and the key's SHA-256). The peer, after verifying the document
//! against the deployment's allowed measurements, seals the root to the key
//! in a [`JoinPackage`]: HPKE of this crate's suite with
//! `info = "keyward/v1/custody/join" ‖ deployment ‖ key id` and the header
//! as associated data (the format byte among it). The sealed plaintext is
//! the root ‖ the peer's [`SignedCheckpoint`] (CBOR): the epochs of the
//! global and of every tenant scope's index root the peer reads now, signed
//! with the deployment's audit key. The joiner checks the root against its
//! boot record's commitment and the checkpoint's signature against the
//! same commitment, and refuses a store older than the peers have seen in
//! any scope (issue 19).
//!
//! Format [`JOIN_PACKAGE_FORMAT`] (2). Format 1 (root ‖ the peer's global
//! epoch only) is refused with [`FormatError::Outdated`]: reading it would
//! let a tenant root rolled back alone pass, and join came in the same
//! release as per-scope checkpoints, so no cluster mixes the two.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::checkpoint::SignedCheckpoint;
use crate::suite::{self, KEY_LEN, PrivateKey, PublicKey};
use crate::{DEPLOYMENT_ID_LEN, DeploymentId, FormatError, bind, to_cbor};

/// Prefix of the joiner's attestation `user_data`.
pub const JOIN_BINDING_PREFIX: &[u8] = b"keyward/v1/custody/join:";
/// HPKE `info` label of a join package.
pub const JOIN_INFO: &[u8] = b"keyward/v1/custody/join";
/// HPKE associated-data label of a join package.
pub const JOIN_AAD: &[u8] = b"keyward/v1/custody/join-header";
/// The root's length.
pub const ROOT_LEN: usize = 32;
/// The join package format that carries the peer's signed checkpoint.
pub const JOIN_PACKAGE_FORMAT: u8 = 2;
/// Why format 1 is refused.
const FORMAT_1_REFUSED: &str = "join package of format 1 (from a Keyward peer before per-scope checkpoints: it \
     states only its global epoch, not its tenant scopes'): refused; upgrade the peer, or unseal this node with its \
     custodians";

/// What a join package releases: the root (wiped on drop) and the
/// releasing peer's signed checkpoint (not yet verified: the caller checks
/// it against the boot record's commitment).
pub struct Released {
    pub root: Zeroizing<Vec<u8>>,
    pub checkpoint: SignedCheckpoint,
}

/// SHA-256 of the joiner's public key.
pub fn key_id(key: &PublicKey) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `user_data` of the joiner's document.
pub fn join_binding(deployment_id: &DeploymentId, key: &PublicKey) -> Vec<u8> {
    let mut out = JOIN_BINDING_PREFIX.to_vec();
    out.extend_from_slice(deployment_id);
    out.extend_from_slice(&key_id(key));
    out
}

/// Reads a [`join_binding`]: the deployment and key id it names.
pub fn parse_join_binding(user_data: &[u8]) -> Option<(DeploymentId, [u8; 32])> {
    let rest = user_data.strip_prefix(JOIN_BINDING_PREFIX)?;
    if rest.len() != DEPLOYMENT_ID_LEN + 32 {
        return None;
    }
    let (deployment, key) = rest.split_at(DEPLOYMENT_ID_LEN);
    Some((deployment.try_into().ok()?, key.try_into().ok()?))
}

/// The root on its way from a Ready peer to a joiner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPackage {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    #[serde(with = "serde_bytes")]
    pub key_id: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub enc: [u8; KEY_LEN],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl JoinPackage {
    /// Seals `root` of `deployment_id`, with the releasing peer's signed
    /// `checkpoint`, to the joiner's key.
    pub fn seal(
        deployment_id: &DeploymentId,
        root: &[u8; ROOT_LEN],
        checkpoint: &SignedCheckpoint,
        joiner: &PublicKey,
    ) -> Result<JoinPackage, FormatError> {
        let mut package = JoinPackage {
            format: JOIN_PACKAGE_FORMAT,
            deployment_id: *deployment_id,
            key_id: key_id(joiner),
            enc: [0; KEY_LEN],
            ciphertext: Vec::new(),
        };
        let checkpoint = checkpoint.to_bytes()?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(ROOT_LEN + checkpoint.len()));
        plaintext.extend_from_slice(root);
        plaintext.extend_from_slice(&checkpoint);
        let sealed = suite::seal(joiner, &package.info(), &package.aad(), &plaintext, "join package")?;
        package.enc = sealed.enc;
        package.ciphertext = sealed.ciphertext;
        Ok(package)
    }

    /// Opens the package with the joiner's key: the root and the peer's
    /// signed checkpoint. The caller checks the deployment, the root's
    /// commitment and the checkpoint's signature.
    pub fn open(&self, joiner: &PrivateKey) -> Result<Released, FormatError> {
        if self.key_id != key_id(&joiner.public_key()) {
            return Err(FormatError::Undecryptable("join package (sealed to another key)"));
        }
        let plaintext = suite::open(
            joiner,
            &self.enc,
            &self.info(),
            &self.aad(),
            &self.ciphertext,
            "join package",
        )?;
        if plaintext.len() <= ROOT_LEN {
            return Err(FormatError::Malformed("join package"));
        }
        let (root, checkpoint) = plaintext.split_at(ROOT_LEN);
        let checkpoint = SignedCheckpoint::from_bytes(checkpoint)?;
        Ok(Released {
            root: Zeroizing::new(root.to_vec()),
            checkpoint,
        })
    }

    fn info(&self) -> Vec<u8> {
        bind(JOIN_INFO, &[&self.deployment_id, &self.key_id])
    }

    fn aad(&self) -> Vec<u8> {
        bind(JOIN_AAD, &[&[self.format], &self.deployment_id, &self.key_id])
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "join package")
    }

    /// Reads format [`JOIN_PACKAGE_FORMAT`]; format 1 is refused as
    /// [`FormatError::Outdated`], any other as [`FormatError::Version`].
    pub fn from_bytes(bytes: &[u8]) -> Result<JoinPackage, FormatError> {
        let package: JoinPackage = serde_cbor::from_slice(bytes).map_err(|_| FormatError::Malformed("join package"))?;
        match package.format {
            JOIN_PACKAGE_FORMAT => Ok(package),
            1 => Err(FormatError::Outdated(FORMAT_1_REFUSED)),
            found => Err(FormatError::Version {
                what: "join package",
                found,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> SignedCheckpoint {
        SignedCheckpoint::new(vec![0xa0, 1, 2], vec![3, 4])
    }

    #[test]
    fn a_package_opens_for_its_key_only_and_every_header_field_is_bound() {
        let deployment = [7u8; DEPLOYMENT_ID_LEN];
        let joiner = PrivateKey::generate();
        let root = [0x42u8; ROOT_LEN];
        let package = JoinPackage::seal(&deployment, &root, &checkpoint(), &joiner.public_key()).expect("seals");
        assert_eq!(package.format, JOIN_PACKAGE_FORMAT);
        let bytes = package.to_bytes().expect("encodes");
        let back = JoinPackage::from_bytes(&bytes).expect("decodes");
        let released = back.open(&joiner).expect("opens");
        assert_eq!(released.root.as_slice(), &root);
        assert_eq!(
            released.checkpoint,
            checkpoint(),
            "the peer's checkpoint travels with the root"
        );
        assert!(back.open(&PrivateKey::generate()).is_err(), "another key opened it");
        let mut other_deployment = back.clone();
        other_deployment.deployment_id = [8; DEPLOYMENT_ID_LEN];
        assert!(other_deployment.open(&joiner).is_err());
        let mut downgraded = back.clone();
        downgraded.format = 3;
        assert!(downgraded.open(&joiner).is_err(), "the format is bound");
        let mut altered = back;
        altered.ciphertext[0] ^= 1;
        assert!(altered.open(&joiner).is_err());
    }

    #[test]
    fn format_1_is_refused_clearly_and_unknown_formats_too() {
        let joiner = PrivateKey::generate();
        let mut package = JoinPackage::seal(
            &[7; DEPLOYMENT_ID_LEN],
            &[1; ROOT_LEN],
            &checkpoint(),
            &joiner.public_key(),
        )
        .expect("seals");
        package.format = 1;
        let bytes = serde_cbor::to_vec(&package).expect("encodes");
        match JoinPackage::from_bytes(&bytes) {
            Err(FormatError::Outdated(why)) => assert!(why.contains("format 1"), "{why}"),
            other => panic!("format 1 read: {other:?}"),
        }
        package.format = 9;
        let bytes = serde_cbor::to_vec(&package).expect("encodes");
        assert!(matches!(
            JoinPackage::from_bytes(&bytes),
            Err(FormatError::Version { found: 9, .. })
        ));
    }

    #[test]
    fn bindings_round_trip_and_other_purposes_do_not_parse() {
        let key = PrivateKey::generate().public_key();
        let binding = join_binding(&[3; DEPLOYMENT_ID_LEN], &key);
        assert_eq!(
            parse_join_binding(&binding),
            Some(([3; DEPLOYMENT_ID_LEN], key_id(&key)))
        );
        let unseal = crate::unseal::session_binding(&[3; DEPLOYMENT_ID_LEN], &key);
        assert_eq!(parse_join_binding(&unseal), None);
        assert_eq!(parse_join_binding(&binding[..binding.len() - 1]), None);
    }
}
