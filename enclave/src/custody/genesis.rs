//! Genesis of a Shamir custody: a fresh root from the NSM, split M-of-N,
//! each share sealed to its custodian, the boot record, and the operator's
//! first credential sealed to the operator.
//!
//! The caller (the wiring) stores the boot record, stores the operator's
//! credential record under the new root's sealer, answers the packages, and
//! moves the state to Ready with the root. Genesis itself writes nothing.

use keyward_custody::operator::OperatorCredentialPackage;
use keyward_custody::share::{SHARE_VALUE_LEN, SharePackage, ShareSecret};
use keyward_custody::suite::PublicKey;
use zeroize::{Zeroize as _, Zeroizing};

use super::record::{self, BootRecord, Custodian, CustodyMethod, RECORD_FORMAT, RootCommitment};
use super::{CustodyError, DeploymentId};
use crate::auth::credentials::{CredentialRecord, Role};
use crate::nsm::Nsm;
use crate::secret::Key256;

/// What `kmsctl init` asks for.
#[derive(Debug, Clone)]
pub struct ShamirGenesis {
    /// M: shares needed to unseal (1 ≤ M ≤ N).
    pub threshold: usize,
    /// The custodians' public keys, in order: custodian `i` is the `i`-th
    /// (1-based), N ≤ 16, all distinct.
    pub custodians: Vec<PublicKey>,
    /// The operator's public key: the first operator credential is sealed
    /// to it. `None` creates no credential (`keyward dev`, whose operator
    /// credential comes from its environment).
    pub operator_key: Option<PublicKey>,
}

/// The operator's first credential: the record to store (under the new
/// root) and the package to answer. The secret is wiped when dropped.
pub struct OperatorGrant {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub package: OperatorCredentialPackage,
}

impl OperatorGrant {
    /// The operator credential record to store (`auth::credentials`).
    pub fn record(&self, now: i64) -> CredentialRecord {
        CredentialRecord {
            access_key_id: self.access_key_id.clone(),
            tenant: crate::auth::OPERATOR.to_owned(),
            secret_access_key: self.secret_access_key.as_bytes().to_vec(),
            roles: vec![Role::Operator],
            created: now,
        }
    }
}

impl std::fmt::Debug for OperatorGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorGrant")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What genesis produces. `root` never leaves the enclave.
pub struct GenesisOutcome {
    pub root: Key256,
    pub record: BootRecord,
    /// One per custodian, in the order given (package `i` for custodian `i + 1`).
    pub packages: Vec<SharePackage>,
    pub operator: Option<OperatorGrant>,
}

impl std::fmt::Debug for GenesisOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesisOutcome")
            .field("record", &self.record)
            .field("packages", &self.packages.len())
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// Runs genesis: root and deployment id from the NSM, shares, packages,
/// record, operator grant. `now` is the enclave clock (seconds).
pub fn genesis(request: &ShamirGenesis, nsm: &dyn Nsm, now: i64) -> Result<GenesisOutcome, CustodyError> {
    record::check_threshold(request.threshold, request.custodians.len())?;
    record::check_distinct(request.custodians.iter())?;
    let threshold = u8::try_from(request.threshold).map_err(|_| threshold_error(request))?;
    let custodians = u8::try_from(request.custodians.len()).map_err(|_| threshold_error(request))?;

    let mut root_bytes = [0u8; 32];
    nsm.fill_random(&mut root_bytes)?;
    let root = Key256::from_bytes(root_bytes);
    root_bytes.zeroize();
    let mut deployment_id: DeploymentId = [0; 16];
    nsm.fill_random(&mut deployment_id)?;

    let commitment = RootCommitment::of(&root)?;
    let shares = split(&root, &deployment_id, threshold, custodians)?;
    let mut packages = Vec::with_capacity(shares.len());
    let mut entries = Vec::with_capacity(shares.len());
    for (share, key) in shares.iter().zip(&request.custodians) {
        packages.push(SharePackage::seal(
            share,
            threshold,
            custodians,
            key,
            commitment.as_bytes(),
        )?);
        entries.push(Custodian {
            public_key: *key,
            share_digest: share.digest(),
        });
    }
    let record = BootRecord {
        format: RECORD_FORMAT,
        deployment_id,
        created: now,
        custody: CustodyMethod::Shamir {
            threshold,
            custodians: entries,
        },
        commitment,
    };
    record.check()?;
    let operator = match &request.operator_key {
        Some(key) => Some(grant_operator(&deployment_id, key)?),
        None => None,
    };
    tracing::info!(
        deployment = %super::deployment_hex(&deployment_id),
        threshold,
        custodians,
        "custody genesis: new root split among the custodians"
    );
    Ok(GenesisOutcome {
        root,
        record,
        packages,
        operator,
    })
}

/// The operator's first credential of `deployment_id`, sealed to `key`.
pub fn grant_operator(deployment_id: &DeploymentId, key: &PublicKey) -> Result<OperatorGrant, CustodyError> {
    let (access_key_id, secret_access_key) = crate::auth::credentials::generate_access_key();
    let package = OperatorCredentialPackage::seal(deployment_id, &access_key_id, secret_access_key.as_bytes(), key)?;
    Ok(OperatorGrant {
        access_key_id,
        secret_access_key,
        package,
    })
}

fn threshold_error(request: &ShamirGenesis) -> CustodyError {
    CustodyError::Threshold {
        threshold: request.threshold,
        custodians: request.custodians.len(),
    }
}

/// M-of-N shares of `root`, custodian `i` at x = `i` (1-based). Threshold 1
/// is the constant polynomial (every share is `x ‖ root`), which vsss-rs
/// does not split; otherwise vsss-rs's byte-wise GF(256) Shamir.
pub(crate) fn split(
    root: &Key256,
    deployment_id: &DeploymentId,
    threshold: u8,
    custodians: u8,
) -> Result<Vec<ShareSecret>, CustodyError> {
    let values: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(if threshold == 1 {
        (1..=custodians)
            .map(|x| {
                let mut value = Vec::with_capacity(SHARE_VALUE_LEN);
                value.push(x);
                value.extend_from_slice(root.expose());
                value
            })
            .collect()
    } else {
        let ids = (1..=custodians).map(|x| vsss_rs::IdentifierGf256(vsss_rs::Gf256(x)));
        vsss_rs::Gf256::split_bytes_with_participant_ids_iter(
            usize::from(threshold),
            usize::from(custodians),
            root.expose(),
            getrandom::rand_core::UnwrapErr(getrandom::SysRng),
            ids,
        )
        .map_err(|e| CustodyError::Sharing(format!("{e:?}")))?
    });
    values
        .iter()
        .map(|value| {
            let x = value.first().copied().unwrap_or(0);
            ShareSecret::new(*deployment_id, x, value.clone()).map_err(CustodyError::from)
        })
        .collect()
}

/// The root from `threshold` shares of distinct custodians (already checked
/// against their digests).
pub(crate) fn combine(shares: &[&ShareSecret], threshold: u8) -> Result<Key256, CustodyError> {
    if shares.len() != usize::from(threshold) || shares.is_empty() {
        return Err(CustodyError::Sharing(format!(
            "{} shares for a threshold of {threshold}",
            shares.len()
        )));
    }
    let secret: Zeroizing<Vec<u8>> = if threshold == 1 {
        Zeroizing::new(shares[0].value().get(1..).unwrap_or_default().to_vec())
    } else {
        let values: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(shares.iter().map(|s| s.value().to_vec()).collect());
        Zeroizing::new(
            vsss_rs::Gf256::combine_bytes(values.as_slice()).map_err(|e| CustodyError::Sharing(format!("{e:?}")))?,
        )
    };
    Key256::from_slice(&secret).ok_or_else(|| CustodyError::Sharing("the combined secret is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsm::MockNsm;
    use keyward_custody::suite::PrivateKey;

    fn keys(n: usize) -> Vec<PrivateKey> {
        (0..n).map(|_| PrivateKey::generate()).collect()
    }

    fn request(threshold: usize, keys: &[PrivateKey], operator: Option<&PrivateKey>) -> ShamirGenesis {
        ShamirGenesis {
            threshold,
            custodians: keys.iter().map(PrivateKey::public_key).collect(),
            operator_key: operator.map(PrivateKey::public_key),
        }
    }

    #[test]
    fn every_threshold_subset_rebuilds_the_root_and_fewer_do_not() {
        let root = Key256::from_bytes([0x42; 32]);
        for (m, n) in [(1u8, 1u8), (1, 3), (2, 3), (3, 3), (3, 5), (16, 16)] {
            let shares = split(&root, &[1; 16], m, n).expect("splits");
            assert_eq!(shares.len(), usize::from(n));
            let first: Vec<&ShareSecret> = shares.iter().take(usize::from(m)).collect();
            assert!(combine(&first, m).expect("combines") == root, "{m} of {n}");
            let last: Vec<&ShareSecret> = shares.iter().rev().take(usize::from(m)).collect();
            assert!(combine(&last, m).expect("combines") == root, "{m} of {n}");
            if m > 1 {
                let fewer: Vec<&ShareSecret> = shares.iter().take(usize::from(m) - 1).collect();
                assert!(combine(&fewer, m).is_err());
                // M-1 shares padded with a repeat do not combine either.
                let mut repeated = fewer.clone();
                repeated.push(&shares[0]);
                assert!(combine(&repeated, m).is_err());
            }
        }
    }

    #[test]
    fn genesis_makes_a_consistent_record_and_packages() {
        let custodians = keys(3);
        let operator = PrivateKey::generate();
        let outcome = genesis(&request(2, &custodians, Some(&operator)), &MockNsm, 1_700_000_000).expect("genesis");
        outcome.record.commitment.verify(&outcome.root).expect("commitment");
        let (threshold, entries) = outcome.record.shamir().expect("shamir");
        assert_eq!(threshold, 2);
        for (i, (package, key)) in outcome.packages.iter().zip(&custodians).enumerate() {
            let share = package.open(key).expect("opens");
            assert_eq!(usize::from(share.index()), i + 1);
            assert_eq!(share.deployment_id(), &outcome.record.deployment_id);
            assert_eq!(entries[i].share_digest, share.digest());
            assert_eq!(package.root_commitment, outcome.record.commitment.as_bytes());
        }
        let grant = outcome.operator.as_ref().expect("operator grant");
        let secret = grant.package.open(&operator).expect("opens");
        assert_eq!(secret.as_slice(), grant.secret_access_key.as_bytes());
        assert_eq!(grant.record(5).roles, vec![Role::Operator]);
        // Nothing secret in the record or the packages' public parts.
        let record_bytes = outcome.record.encode().expect("encodes");
        assert!(!record_bytes.windows(32).any(|w| w == outcome.root.expose()));
        assert!(!format!("{outcome:?}").contains(grant.secret_access_key.as_str()));
        // A second genesis is another deployment with another root.
        let again = genesis(&request(2, &custodians, None), &MockNsm, 0).expect("genesis");
        assert_ne!(again.record.deployment_id, outcome.record.deployment_id);
        assert!(again.record.commitment.verify(&outcome.root).is_err());
        assert!(again.operator.is_none());
    }

    #[test]
    fn genesis_refuses_bad_parameters() {
        let five = keys(17);
        for (m, n) in [(0usize, 3usize), (4, 3), (1, 0), (2, 17)] {
            assert!(
                matches!(
                    genesis(&request(m, &five[..n], None), &MockNsm, 0),
                    Err(CustodyError::Threshold { .. })
                ),
                "{m} of {n}"
            );
        }
        let mut twice = request(2, &five[..3], None);
        twice.custodians[2] = twice.custodians[0];
        let err = genesis(&twice, &MockNsm, 0).expect_err("duplicate");
        assert!(matches!(err, CustodyError::DuplicateCustodian { first: 1, second: 3 }));
        assert!(err.to_string().contains("same public key"), "{err}");
    }
}
