//! Re-sharing a Shamir custody (`Keyward.ReshareCustody`, operator): the
//! root a Ready enclave holds is split anew, M'-of-N', for a new set of
//! custodians. The boot record keeps its deployment id, creation time and
//! root commitment; only the custody (threshold, custodian keys, share
//! digests) changes, so the old shares are refused at the next unseal by
//! their digests (a new random polynomial gives every index a new share).
//!
//! What it cannot do: **M old shares still rebuild the same root offline**
//! (re-sharing does not change the root). Re-share when a custodian leaves;
//! when shares are believed compromised, move the keys to a new deployment
//! (docs/custody.md, "Replacing a custodian by re-sharing"). With M' = 1
//! every share is the root itself (`x ‖ root`), so the new share of an
//! index equals the old one of that index.
//!
//! Writes nothing: the caller stores the record (compare-and-swap on the
//! version it read) and answers the packages.

use keyward_custody::share::SharePackage;
use keyward_custody::suite::PublicKey;

use super::genesis::split;
use super::record::{self, BootRecord, Custodian, CustodyMethod};
use super::{CustodyError, deployment_hex};
use crate::secret::Key256;

/// What `kmsctl custodian reshare` asks for.
#[derive(Debug, Clone)]
pub struct Reshare {
    /// M': shares the next unseal needs (1 ≤ M' ≤ N').
    pub threshold: usize,
    /// The new custodians' public keys; custodian `i` is the `i`-th (1-based).
    pub custodians: Vec<PublicKey>,
}

/// The new boot record and one share package per new custodian (package
/// `i` for custodian `i + 1`).
#[derive(Debug)]
pub struct ReshareOutcome {
    pub record: BootRecord,
    pub packages: Vec<SharePackage>,
}

/// Splits `root` anew for `request`'s custodians. `current` is the boot
/// record as stored now: it must be a Shamir custody and commit to `root`.
pub fn reshare(root: &Key256, current: &BootRecord, request: &Reshare) -> Result<ReshareOutcome, CustodyError> {
    if !matches!(current.custody, CustodyMethod::Shamir { .. }) {
        return Err(CustodyError::CustodyMethod {
            found: current.custody.name(),
            needed: "shamir (re-sharing splits the root among custodians; a custody key service keeps it whole)",
        });
    }
    current.commitment.verify(root)?;
    record::check_threshold(request.threshold, request.custodians.len())?;
    record::check_distinct(request.custodians.iter())?;
    let bad = || CustodyError::Threshold {
        threshold: request.threshold,
        custodians: request.custodians.len(),
    };
    let threshold = u8::try_from(request.threshold).map_err(|_| bad())?;
    let custodians = u8::try_from(request.custodians.len()).map_err(|_| bad())?;
    let shares = split(root, &current.deployment_id, threshold, custodians)?;
    let mut packages = Vec::with_capacity(shares.len());
    let mut entries = Vec::with_capacity(shares.len());
    for (share, key) in shares.iter().zip(&request.custodians) {
        packages.push(SharePackage::seal(
            share,
            threshold,
            custodians,
            key,
            current.commitment.as_bytes(),
        )?);
        entries.push(Custodian {
            public_key: *key,
            share_digest: share.digest(),
        });
    }
    let record = BootRecord {
        custody: CustodyMethod::Shamir {
            threshold,
            custodians: entries,
        },
        ..current.clone()
    };
    record.check()?;
    tracing::info!(
        deployment = %deployment_hex(&current.deployment_id),
        threshold,
        custodians,
        "custody re-shared: the root is split anew among the new custodians"
    );
    Ok(ReshareOutcome { record, packages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::genesis::{ShamirGenesis, genesis};
    use crate::custody::record::RootCommitment;
    use crate::nsm::MockNsm;

    fn keys(n: usize) -> Vec<PublicKey> {
        (0..n)
            .map(|_| keyward_custody::suite::PrivateKey::generate().public_key())
            .collect()
    }

    fn digests(record: &BootRecord) -> Vec<[u8; 32]> {
        match &record.custody {
            CustodyMethod::Shamir { custodians, .. } => custodians.iter().map(|c| c.share_digest).collect(),
            CustodyMethod::Kms { .. } => Vec::new(),
        }
    }

    #[test]
    fn a_reshare_keeps_the_deployment_and_commitment_and_changes_every_digest() {
        let old = genesis(
            &ShamirGenesis {
                threshold: 2,
                custodians: keys(3),
                operator_key: None,
            },
            &MockNsm,
            7,
        )
        .expect("genesis");
        let request = Reshare {
            threshold: 3,
            custodians: keys(4),
        };
        let new = reshare(&old.root, &old.record, &request).expect("reshare");
        assert_eq!(new.record.deployment_id, old.record.deployment_id);
        assert_eq!(new.record.created, old.record.created);
        assert_eq!(new.record.commitment, old.record.commitment);
        assert_eq!(new.packages.len(), 4);
        let (before, after) = (digests(&old.record), digests(&new.record));
        assert!(before.iter().all(|d| !after.contains(d)), "an old share still matches");
        for (package, key) in new.packages.iter().zip(&request.custodians) {
            assert_eq!(&package.custodian_key, key);
            assert_eq!(package.threshold, 3);
            assert_eq!(package.root_commitment, old.record.commitment.as_bytes());
        }
    }

    #[test]
    fn another_root_and_a_key_service_custody_are_refused() {
        let old = genesis(
            &ShamirGenesis {
                threshold: 1,
                custodians: keys(1),
                operator_key: None,
            },
            &MockNsm,
            0,
        )
        .expect("genesis");
        let request = Reshare {
            threshold: 1,
            custodians: keys(2),
        };
        assert!(matches!(
            reshare(&Key256::generate(), &old.record, &request),
            Err(CustodyError::CommitmentMismatch)
        ));
        let kms = BootRecord {
            custody: CustodyMethod::Kms {
                key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
                endpoint: "https://kms.example".into(),
                ciphertext_blob: vec![1],
            },
            commitment: RootCommitment::of(&old.root).expect("commitment"),
            ..old.record.clone()
        };
        assert!(matches!(
            reshare(&old.root, &kms, &request),
            Err(CustodyError::CustodyMethod { found: "kms", .. })
        ));
    }
}
