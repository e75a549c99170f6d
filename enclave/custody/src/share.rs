//! A custodian's share of the root key, its digest, and the share package
//! that carries it to the custodian at genesis.
//!
//! A share is vsss-rs's byte-wise GF(256) Shamir share of the 32-byte root
//! key: `x ‖ y₁ … y₃₂`, `x` the custodian's 1-based index. With a threshold
//! of 1 the "polynomial" is the constant root: every share is `x ‖ root`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::suite::{self, KEY_LEN, PrivateKey, PublicKey};
use crate::{DeploymentId, FORMAT_VERSION, FormatError, Versioned, bind, from_cbor, to_cbor};

/// HPKE `info` label of a share package (then deployment id and index).
pub const SHARE_PACKAGE_INFO: &[u8] = b"keyward/v1/custody/share-package";
/// Associated-data label of a share package's header.
pub const SHARE_PACKAGE_AAD: &[u8] = b"keyward/v1/custody/share-package-header";
/// Label of a share's digest in the boot record.
pub const SHARE_DIGEST_LABEL: &[u8] = b"keyward/v1/custody/share-digest";

/// Length of a share's value: the x byte and one byte per root-key byte.
pub const SHARE_VALUE_LEN: usize = 1 + 32;

/// One share, with the deployment and index it belongs to. Zeroized on
/// drop; never `Clone`, `Debug` redacted, encoded only into HPKE plaintexts.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ShareSecret {
    deployment_id: DeploymentId,
    index: u8,
    value: Vec<u8>,
}

#[derive(Serialize)]
struct ShareWire<'a> {
    format: u8,
    #[serde(with = "serde_bytes")]
    deployment_id: &'a [u8],
    index: u8,
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct ShareWireOwned {
    format: u8,
    #[serde(with = "serde_bytes")]
    deployment_id: Vec<u8>,
    index: u8,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
}

impl ShareSecret {
    /// A share of deployment `deployment_id` for custodian `index` (1-based);
    /// `value` is `index ‖ 32 bytes`.
    pub fn new(deployment_id: DeploymentId, index: u8, value: Vec<u8>) -> Result<ShareSecret, FormatError> {
        let share = ShareSecret {
            deployment_id,
            index,
            value,
        };
        if index == 0 || share.value.len() != SHARE_VALUE_LEN || share.value[0] != index {
            return Err(FormatError::Malformed("share"));
        }
        Ok(share)
    }

    pub fn deployment_id(&self) -> &DeploymentId {
        &self.deployment_id
    }

    /// The custodian's 1-based index (the share's x-coordinate).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// `x ‖ y₁ … y₃₂`, the form vsss-rs combines.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// SHA-256(`SHARE_DIGEST_LABEL` ‖ deployment ‖ index ‖ value), length
    /// prefixed: what the boot record keeps per custodian, so a wrong share
    /// is named as soon as it arrives instead of spoiling a reconstruction.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(bind(
            SHARE_DIGEST_LABEL,
            &[&self.deployment_id, &[self.index], &self.value],
        ))
        .into()
    }

    /// The CBOR plaintext (wiped when dropped).
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        let wire = ShareWire {
            format: FORMAT_VERSION,
            deployment_id: &self.deployment_id,
            index: self.index,
            value: &self.value,
        };
        to_cbor(&wire, "share").map(Zeroizing::new)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<ShareSecret, FormatError> {
        let mut wire: ShareWireOwned = serde_cbor::from_slice(bytes).map_err(|_| FormatError::Malformed("share"))?;
        if wire.format != FORMAT_VERSION {
            return Err(FormatError::Version {
                what: "share",
                found: wire.format,
            });
        }
        let deployment_id: DeploymentId = wire
            .deployment_id
            .as_slice()
            .try_into()
            .map_err(|_| FormatError::Malformed("share"))?;
        ShareSecret::new(deployment_id, wire.index, std::mem::take(&mut wire.value))
    }
}

impl std::fmt::Debug for ShareSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareSecret")
            .field("deployment_id", &crate::deployment_hex(&self.deployment_id))
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What genesis hands to one custodian: its share, HPKE-sealed to the
/// custodian's public key. The header is public and authenticated (AAD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePackage {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    /// The custodian's 1-based index (its place in `kmsctl init`'s list).
    pub custodian_index: u8,
    /// M: shares needed to unseal.
    pub threshold: u8,
    /// N: custodians in all.
    pub custodians: u8,
    /// The custodian's public key the share is sealed to.
    pub custodian_key: PublicKey,
    /// The deployment's root commitment (the audit signing key, SPKI DER):
    /// what the enclave attests once unsealed; a custodian may pin it.
    #[serde(with = "serde_bytes")]
    pub root_commitment: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub enc: [u8; KEY_LEN],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl Versioned for SharePackage {
    fn format(&self) -> u8 {
        self.format
    }
}

impl SharePackage {
    /// Seals `share` to `custodian_key`.
    pub fn seal(
        share: &ShareSecret,
        threshold: u8,
        custodians: u8,
        custodian_key: &PublicKey,
        root_commitment: &[u8],
    ) -> Result<SharePackage, FormatError> {
        let mut package = SharePackage {
            format: FORMAT_VERSION,
            deployment_id: share.deployment_id,
            custodian_index: share.index,
            threshold,
            custodians,
            custodian_key: *custodian_key,
            root_commitment: root_commitment.to_vec(),
            enc: [0; KEY_LEN],
            ciphertext: Vec::new(),
        };
        let sealed = suite::seal(
            custodian_key,
            &package.info(),
            &package.aad(),
            &share.encode()?,
            "share package",
        )?;
        package.enc = sealed.enc;
        package.ciphertext = sealed.ciphertext;
        Ok(package)
    }

    /// Opens the package with the custodian's private key: the share inside
    /// must name the deployment and index of the header.
    pub fn open(&self, key: &PrivateKey) -> Result<ShareSecret, FormatError> {
        if key.public_key() != self.custodian_key {
            return Err(FormatError::Undecryptable(
                "share package (sealed to another custodian key)",
            ));
        }
        let plain = suite::open(
            key,
            &self.enc,
            &self.info(),
            &self.aad(),
            &self.ciphertext,
            "share package",
        )?;
        let share = ShareSecret::decode(&plain)?;
        if share.deployment_id != self.deployment_id || share.index != self.custodian_index {
            return Err(FormatError::Malformed("share package (header and share disagree)"));
        }
        Ok(share)
    }

    fn info(&self) -> Vec<u8> {
        bind(SHARE_PACKAGE_INFO, &[&self.deployment_id, &[self.custodian_index]])
    }

    fn aad(&self) -> Vec<u8> {
        bind(
            SHARE_PACKAGE_AAD,
            &[
                &self.deployment_id,
                &[self.custodian_index, self.threshold, self.custodians],
                self.custodian_key.as_bytes(),
                &self.root_commitment,
            ],
        )
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "share package")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SharePackage, FormatError> {
        from_cbor(bytes, "share package")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(deployment: u8, index: u8) -> ShareSecret {
        let mut value = vec![index];
        value.extend_from_slice(&[0x5A; 32]);
        ShareSecret::new([deployment; 16], index, value).expect("share")
    }

    #[test]
    fn package_round_trip_and_bindings() {
        let custodian = PrivateKey::generate();
        let package = SharePackage::seal(&share(1, 2), 2, 3, &custodian.public_key(), b"commitment").expect("seals");
        let bytes = package.to_bytes().expect("encodes");
        let read = SharePackage::from_bytes(&bytes).expect("decodes");
        assert_eq!(read, package);
        let opened = read.open(&custodian).expect("opens");
        assert_eq!(opened.index(), 2);
        assert_eq!(opened.deployment_id(), &[1; 16]);
        assert_eq!(opened.digest(), share(1, 2).digest());

        // Another key, or any header field changed: refused.
        assert!(package.open(&PrivateKey::generate()).is_err());
        for tamper in [
            |p: &mut SharePackage| p.custodian_index = 3,
            |p: &mut SharePackage| p.deployment_id[0] ^= 1,
            |p: &mut SharePackage| p.threshold = 1,
            |p: &mut SharePackage| p.custodians = 2,
            |p: &mut SharePackage| p.root_commitment.push(0),
        ] {
            let mut altered = package.clone();
            tamper(&mut altered);
            assert!(matches!(altered.open(&custodian), Err(FormatError::Undecryptable(_))));
        }
        let mut wrong_version = package.clone();
        wrong_version.format = 2;
        let bytes = wrong_version.to_bytes().expect("encodes");
        assert!(matches!(
            SharePackage::from_bytes(&bytes),
            Err(FormatError::Version { found: 2, .. })
        ));
    }

    #[test]
    fn digests_bind_deployment_index_and_value() {
        assert_ne!(share(1, 2).digest(), share(2, 2).digest());
        assert_ne!(share(1, 2).digest(), share(1, 3).digest());
        assert!(ShareSecret::new([1; 16], 2, vec![3; 33]).is_err());
        assert!(ShareSecret::new([1; 16], 0, vec![0; 33]).is_err());
        assert!(!format!("{:?}", share(1, 2)).contains("5a"));
    }
}
