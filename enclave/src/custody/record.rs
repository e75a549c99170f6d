//! The boot record: what the host keeps so an enclave can come back.
//!
//! Stored at [`NAMESPACE`]/[`RECORD_KEY`] in CBOR, **not sealed** (it is
//! read before any key exists) and not secret. It is authenticated by what
//! it commits to: a root that does not derive [`RootCommitment`] is refused,
//! so a host that edits the record gains nothing but a deployment that
//! opens none of the sealed records (docs/custody.md, "What the host can do").

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::{CustodyError, DeploymentId, MAX_CUSTODIANS};
use crate::secret::Key256;
use keyward_custody::suite::PublicKey;

/// Store namespace of the boot record (the same `boot` namespace as the
/// mock root key and the dev credential pointers of `bootstrap`).
pub const NAMESPACE: &str = "boot";
/// The boot record's key in [`NAMESPACE`].
pub const RECORD_KEY: &str = "custody";
/// The boot record's format version.
pub const RECORD_FORMAT: u8 = 1;

/// The boot record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    pub format: u8,
    /// Random, created at genesis; named in every package, message and
    /// attestation binding of the deployment.
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    /// Genesis time, seconds since the Unix epoch (enclave clock).
    pub created: i64,
    pub custody: CustodyMethod,
    pub commitment: RootCommitment,
}

/// How the root is kept between starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustodyMethod {
    /// M-of-N custodians; custodian `i` (1-based) is `custodians[i - 1]`.
    Shamir { threshold: u8, custodians: Vec<Custodian> },
    /// An AWS-KMS-compatible key service holding the root as the
    /// `CiphertextBlob` of a `GenerateDataKey` with a Recipient.
    Kms {
        key_arn: String,
        endpoint: String,
        #[serde(with = "serde_bytes")]
        ciphertext_blob: Vec<u8>,
    },
}

impl CustodyMethod {
    pub fn name(&self) -> &'static str {
        match self {
            CustodyMethod::Shamir { .. } => "shamir",
            CustodyMethod::Kms { .. } => "kms",
        }
    }
}

/// One custodian of a Shamir custody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custodian {
    /// The key its share package was sealed to.
    pub public_key: PublicKey,
    /// [`keyward_custody::share::ShareSecret::digest`] of its share: a
    /// wrong share is refused on arrival, by index.
    #[serde(with = "serde_bytes")]
    pub share_digest: [u8; 32],
}

/// A public commitment to the root key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootCommitment {
    /// The audit signing public key the root derives (P-256
    /// SubjectPublicKeyInfo DER, `keys::hierarchy::audit_public_key_der`):
    /// the same key the enclave attests and signs audit heads with once
    /// Ready, so clients that pinned it also pin the root.
    AuditKey(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl std::fmt::Debug for RootCommitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCommitment::AuditKey(spki) => write!(f, "AuditKey({} bytes)", spki.len()),
        }
    }
}

impl RootCommitment {
    /// The commitment `root` makes.
    pub fn of(root: &Key256) -> Result<RootCommitment, CustodyError> {
        crate::keys::hierarchy::audit_public_key_der(root)
            .map(RootCommitment::AuditKey)
            .ok_or_else(|| CustodyError::Record("the audit key of the root could not be encoded".into()))
    }

    /// Whether `root` makes this commitment; compared in constant time.
    pub fn verify(&self, root: &Key256) -> Result<(), CustodyError> {
        let RootCommitment::AuditKey(expected) = self;
        let actual = crate::keys::hierarchy::audit_public_key_der(root).ok_or(CustodyError::CommitmentMismatch)?;
        if actual.len() == expected.len() && bool::from(actual.as_slice().ct_eq(expected)) {
            Ok(())
        } else {
            Err(CustodyError::CommitmentMismatch)
        }
    }

    /// The committed bytes (the audit key SPKI DER).
    pub fn as_bytes(&self) -> &[u8] {
        let RootCommitment::AuditKey(spki) = self;
        spki
    }
}

impl BootRecord {
    /// The canonical encoding (CBOR, fields in declaration order).
    pub fn encode(&self) -> Result<Vec<u8>, CustodyError> {
        serde_cbor::to_vec(self).map_err(|e| CustodyError::Record(e.to_string()))
    }

    /// Reads and checks a stored record: known format, sane custody, a
    /// commitment that is a P-256 public key. Trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<BootRecord, CustodyError> {
        let record: BootRecord = serde_cbor::from_slice(bytes).map_err(|e| CustodyError::Record(e.to_string()))?;
        record.check()?;
        Ok(record)
    }

    /// The invariants every record satisfies (checked on decode).
    pub fn check(&self) -> Result<(), CustodyError> {
        if self.format != RECORD_FORMAT {
            return Err(CustodyError::Record(format!(
                "format version {} (this build reads {RECORD_FORMAT})",
                self.format
            )));
        }
        match &self.custody {
            CustodyMethod::Shamir { threshold, custodians } => {
                check_threshold(usize::from(*threshold), custodians.len())?;
                check_distinct(custodians.iter().map(|c| &c.public_key))?;
            }
            CustodyMethod::Kms {
                key_arn,
                endpoint,
                ciphertext_blob,
            } => {
                if key_arn.is_empty() || endpoint.is_empty() || ciphertext_blob.is_empty() {
                    return Err(CustodyError::Record(
                        "KMS custody needs a key ARN, an endpoint and a CiphertextBlob".into(),
                    ));
                }
            }
        }
        let RootCommitment::AuditKey(spki) = &self.commitment;
        <p256::PublicKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(spki)
            .map_err(|_| CustodyError::Record("the root commitment is not a P-256 public key".into()))?;
        Ok(())
    }

    /// Threshold and custodians of a Shamir custody.
    pub fn shamir(&self) -> Result<(u8, &[Custodian]), CustodyError> {
        match &self.custody {
            CustodyMethod::Shamir { threshold, custodians } => Ok((*threshold, custodians)),
            other => Err(CustodyError::CustodyMethod {
                found: other.name(),
                needed: "shamir",
            }),
        }
    }
}

/// 1 ≤ M ≤ N ≤ [`MAX_CUSTODIANS`].
pub(crate) fn check_threshold(threshold: usize, custodians: usize) -> Result<(), CustodyError> {
    if threshold == 0 || threshold > custodians || custodians > MAX_CUSTODIANS {
        return Err(CustodyError::Threshold { threshold, custodians });
    }
    Ok(())
}

/// No key twice (1-based positions in the error).
pub(crate) fn check_distinct<'a>(keys: impl Iterator<Item = &'a PublicKey>) -> Result<(), CustodyError> {
    let keys: Vec<&PublicKey> = keys.collect();
    for (i, a) in keys.iter().enumerate() {
        if let Some(j) = keys[i + 1..].iter().position(|b| b == a) {
            return Err(CustodyError::DuplicateCustodian {
                first: i + 1,
                second: i + j + 2,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commitment() -> RootCommitment {
        RootCommitment::of(&Key256::from_bytes([1; 32])).expect("commitment")
    }

    fn custody() -> impl Strategy<Value = CustodyMethod> {
        let shamir = (1usize..=MAX_CUSTODIANS)
            .prop_flat_map(|n| (1..=n, proptest::collection::vec(any::<[u8; 32]>(), n)))
            .prop_map(|(m, seeds)| CustodyMethod::Shamir {
                threshold: u8::try_from(m).expect("small"),
                custodians: seeds
                    .iter()
                    .enumerate()
                    .map(|(i, seed)| {
                        // Distinct keys: the index in the first byte.
                        let mut key = *seed;
                        key[0] = u8::try_from(i).expect("small");
                        Custodian {
                            public_key: PublicKey::from_bytes(key),
                            share_digest: *seed,
                        }
                    })
                    .collect(),
            });
        let kms = (
            "arn:[a-z:0-9/-]{1,40}",
            "https://[a-z.]{1,20}",
            proptest::collection::vec(any::<u8>(), 1..64),
        )
            .prop_map(|(key_arn, endpoint, ciphertext_blob)| CustodyMethod::Kms {
                key_arn,
                endpoint,
                ciphertext_blob,
            });
        prop_oneof![shamir, kms]
    }

    proptest! {
        #[test]
        fn boot_record_round_trips_canonically(
            deployment_id in any::<[u8; 16]>(),
            created in any::<i64>(),
            custody in custody(),
        ) {
            let record = BootRecord { format: RECORD_FORMAT, deployment_id, created, custody, commitment: commitment() };
            let bytes = record.encode().expect("encodes");
            let read = BootRecord::decode(&bytes).expect("decodes");
            prop_assert_eq!(&read, &record);
            prop_assert_eq!(read.encode().expect("encodes"), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = BootRecord::decode(&bytes);
        }
    }

    fn shamir_record(threshold: u8, n: u8) -> BootRecord {
        BootRecord {
            format: RECORD_FORMAT,
            deployment_id: [2; 16],
            created: 0,
            custody: CustodyMethod::Shamir {
                threshold,
                custodians: (0..n)
                    .map(|i| Custodian {
                        public_key: PublicKey::from_bytes([i; 32]),
                        share_digest: [0; 32],
                    })
                    .collect(),
            },
            commitment: commitment(),
        }
    }

    #[test]
    fn invalid_records_are_refused() {
        let decode = |r: &BootRecord| BootRecord::decode(&r.encode().expect("encodes"));
        assert!(decode(&shamir_record(2, 3)).is_ok());
        assert!(matches!(
            decode(&shamir_record(0, 3)),
            Err(CustodyError::Threshold { .. })
        ));
        assert!(matches!(
            decode(&shamir_record(4, 3)),
            Err(CustodyError::Threshold { .. })
        ));
        assert!(matches!(
            decode(&shamir_record(1, 17)),
            Err(CustodyError::Threshold { .. })
        ));
        let mut duplicate = shamir_record(1, 3);
        if let CustodyMethod::Shamir { custodians, .. } = &mut duplicate.custody {
            custodians[2].public_key = custodians[0].public_key;
        }
        assert!(matches!(
            decode(&duplicate),
            Err(CustodyError::DuplicateCustodian { first: 1, second: 3 })
        ));
        let mut version = shamir_record(1, 1);
        version.format = 2;
        assert!(matches!(decode(&version), Err(CustodyError::Record(_))));
        let mut not_a_key = shamir_record(1, 1);
        not_a_key.commitment = RootCommitment::AuditKey(vec![1, 2, 3]);
        assert!(matches!(decode(&not_a_key), Err(CustodyError::Record(_))));
        let mut trailing = shamir_record(1, 1).encode().expect("encodes");
        trailing.push(0);
        assert!(BootRecord::decode(&trailing).is_err());
        let kms = BootRecord {
            custody: CustodyMethod::Kms {
                key_arn: String::new(),
                endpoint: "https://kms".into(),
                ciphertext_blob: vec![1],
            },
            ..shamir_record(1, 1)
        };
        assert!(matches!(decode(&kms), Err(CustodyError::Record(_))));
        assert!(matches!(
            kms.shamir(),
            Err(CustodyError::CustodyMethod { found: "kms", .. })
        ));
    }

    #[test]
    fn commitment_accepts_its_root_only() {
        let c = commitment();
        assert!(c.verify(&Key256::from_bytes([1; 32])).is_ok());
        assert!(matches!(
            c.verify(&Key256::from_bytes([2; 32])),
            Err(CustodyError::CommitmentMismatch)
        ));
        assert_eq!(format!("{c:?}"), format!("AuditKey({} bytes)", c.as_bytes().len()));
    }

    #[test]
    fn the_namespace_is_bootstraps() {
        assert_eq!(NAMESPACE, crate::bootstrap::BOOT_NAMESPACE);
    }
}
