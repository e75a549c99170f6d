//! Checkpoints: what a custodian last saw of the store (issue 19 item 3,
//! "freshness across restarts"; docs/custody.md, "Checkpoints").
//!
//! While an enclave runs, its in-memory index roots make a rollback of the
//! store detectable. Across a restart it knows nothing, and it cannot read
//! a sealed root before it has the root key. So the custodians remember for
//! it: a Ready enclave answers `Keyward.GetCheckpoint` with a [`Checkpoint`]
//! — the deployment, the epoch of the global index root and the epoch of
//! every tenant scope's root (the global root does not cover tenant roots:
//! a `DisableKey` moves only its tenant's) — signed with the audit key, the
//! deployment's root commitment ([`SignedCheckpoint`]). The custodian
//! verifies it against the commitment its share package names, keeps it
//! only if it is not older than the one it has, and sends it inside its
//! next unseal message (format 2, `unseal.rs`). At the end of that unseal
//! the enclave compares the store's roots with the highest epochs its
//! custodians sent and stays sealed if any is older.
//!
//! Encoding: CBOR with a `format` field (1), canonical (a tenant map in
//! ascending order, each tenant once); decoding refuses anything else.

use std::collections::BTreeMap;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};

use crate::{DeploymentId, FORMAT_VERSION, FormatError, Versioned, from_cbor, to_cbor};

/// The name of the global scope in messages (the enclave's `index::GLOBAL`).
pub const GLOBAL_SCOPE: &str = "@global";
/// What the enclave signs: this label, then the checkpoint's CBOR bytes
/// (ECDSA P-256 with SHA-256, DER signature, as audit heads are signed).
pub const SIGNATURE_LABEL: &[u8] = b"keyward/v1/checkpoint\0";
/// The most tenant scopes a checkpoint lists (its encoding is then at most
/// ~300 KiB, inside one unseal message).
pub const MAX_TENANTS: usize = 10_000;
/// The longest tenant scope name accepted (tenant ids are 12 digits).
pub const MAX_SCOPE_LEN: usize = 64;

/// The epochs of a deployment's index roots at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub deployment_id: DeploymentId,
    /// Epoch of the global index root (tenants, credentials, the
    /// operator's audit head).
    pub global: u64,
    /// Tenant id → epoch of that tenant scope's root.
    pub tenants: BTreeMap<String, u64>,
}

impl Versioned for Checkpoint {
    fn format(&self) -> u8 {
        self.format
    }
}

/// One scope where a store is older than a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// [`GLOBAL_SCOPE`] or a tenant id.
    pub scope: String,
    /// The epoch the store serves (0: no root at all).
    pub served: u64,
    /// The epoch the checkpoint holds.
    pub seen: u64,
}

impl Lag {
    /// The lag, naming who saw the newer epoch (`"custodian"`, `"peers"`).
    pub fn describe(&self, seen_by: &str) -> String {
        let scope = if self.scope == GLOBAL_SCOPE {
            "global scope".to_owned()
        } else {
            format!("tenant scope {}", self.scope)
        };
        if self.served == 0 {
            format!("{scope} root missing (omitted), {seen_by} saw epoch {}", self.seen)
        } else {
            format!("{scope} epoch served {}, {seen_by} saw {}", self.served, self.seen)
        }
    }
}

impl std::fmt::Display for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("custodian"))
    }
}

impl Checkpoint {
    pub fn new(deployment_id: DeploymentId, global: u64, tenants: BTreeMap<String, u64>) -> Checkpoint {
        Checkpoint {
            format: FORMAT_VERSION,
            deployment_id,
            global,
            tenants,
        }
    }

    /// The epoch this checkpoint holds for `scope` (0: none).
    pub fn epoch(&self, scope: &str) -> u64 {
        if scope == GLOBAL_SCOPE {
            self.global
        } else {
            self.tenants.get(scope).copied().unwrap_or(0)
        }
    }

    /// Where `served` (the store now) is older than this checkpoint, in
    /// scope order (global first). Empty: `served` is at least as new
    /// everywhere. A scope `served` lacks counts as epoch 0.
    pub fn lags(&self, served: &Checkpoint) -> Vec<Lag> {
        let mut out = Vec::new();
        if served.global < self.global {
            out.push(Lag {
                scope: GLOBAL_SCOPE.to_owned(),
                served: served.global,
                seen: self.global,
            });
        }
        for (tenant, &seen) in &self.tenants {
            let now = served.epoch(tenant);
            if now < seen {
                out.push(Lag {
                    scope: tenant.clone(),
                    served: now,
                    seen,
                });
            }
        }
        out
    }

    /// True when `self` is at least as new as `other` in every scope (and
    /// of the same deployment).
    pub fn covers(&self, other: &Checkpoint) -> bool {
        self.deployment_id == other.deployment_id && other.lags(self).is_empty()
    }

    /// The highest epoch of each scope over `self` and `other` (same
    /// deployment): what several custodians saw together.
    pub fn merge(&mut self, other: &Checkpoint) {
        self.global = self.global.max(other.global);
        for (tenant, &epoch) in &other.tenants {
            let e = self.tenants.entry(tenant.clone()).or_insert(0);
            *e = (*e).max(epoch);
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        self.check()?;
        to_cbor(self, "checkpoint")
    }

    /// Reads a checkpoint: format 1, at most [`MAX_TENANTS`] tenant scopes
    /// with printable names of 1-[`MAX_SCOPE_LEN`] characters (never the
    /// global scope's), canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, FormatError> {
        let checkpoint: Checkpoint = from_cbor(bytes, "checkpoint")?;
        checkpoint.check()?;
        // Canonical: one encoding per checkpoint (no repeated or unsorted
        // tenants, no trailing or alternative encodings).
        if to_cbor(&checkpoint, "checkpoint")? != bytes {
            return Err(FormatError::Malformed("checkpoint"));
        }
        Ok(checkpoint)
    }

    fn check(&self) -> Result<(), FormatError> {
        let scope_ok = |s: &String| {
            !s.is_empty() && s.len() <= MAX_SCOPE_LEN && s != GLOBAL_SCOPE && s.bytes().all(|b| b.is_ascii_graphic())
        };
        if self.tenants.len() > MAX_TENANTS || !self.tenants.keys().all(scope_ok) {
            return Err(FormatError::Malformed("checkpoint"));
        }
        Ok(())
    }
}

/// A checkpoint as a Ready enclave answers it: its exact bytes and the
/// audit key's signature over [`signed_message`] of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub format: u8,
    /// [`Checkpoint::to_bytes`], exactly as signed.
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    /// DER ECDSA P-256 signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Versioned for SignedCheckpoint {
    fn format(&self) -> u8 {
        self.format
    }
}

/// The message the enclave signs for a checkpoint's bytes.
pub fn signed_message(checkpoint: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_LABEL.len() + checkpoint.len());
    out.extend_from_slice(SIGNATURE_LABEL);
    out.extend_from_slice(checkpoint);
    out
}

/// Why a signed checkpoint is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Not signed by the deployment's root commitment.
    #[error("the checkpoint is not signed by the deployment's root commitment (altered, or another deployment's)")]
    Signature,
    /// Signed, but for another deployment.
    #[error("the checkpoint is for deployment {found}, not {expected}")]
    Deployment { expected: String, found: String },
}

impl SignedCheckpoint {
    pub fn new(checkpoint: Vec<u8>, signature: Vec<u8>) -> SignedCheckpoint {
        SignedCheckpoint {
            format: FORMAT_VERSION,
            checkpoint,
            signature,
        }
    }

    /// The checkpoint, once its signature verifies under `commitment` (the
    /// audit public key, SPKI DER: the share package's `root_commitment`)
    /// and it names `deployment`.
    pub fn verify(&self, commitment: &[u8], deployment: &DeploymentId) -> Result<Checkpoint, CheckpointError> {
        let key = VerifyingKey::from_public_key_der(commitment).map_err(|_| CheckpointError::Signature)?;
        let signature = Signature::from_der(&self.signature).map_err(|_| CheckpointError::Signature)?;
        key.verify(&signed_message(&self.checkpoint), &signature)
            .map_err(|_| CheckpointError::Signature)?;
        let checkpoint = Checkpoint::from_bytes(&self.checkpoint)?;
        if &checkpoint.deployment_id != deployment {
            return Err(CheckpointError::Deployment {
                expected: crate::deployment_hex(deployment),
                found: crate::deployment_hex(&checkpoint.deployment_id),
            });
        }
        Ok(checkpoint)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        to_cbor(self, "signed checkpoint")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCheckpoint, FormatError> {
        from_cbor(bytes, "signed checkpoint")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        Checkpoint::new(
            [3; 16],
            7,
            [("111122223333".to_owned(), 4), ("444455556666".to_owned(), 9)]
                .into_iter()
                .collect(),
        )
    }

    fn signed(key: &SigningKey, checkpoint: &Checkpoint) -> SignedCheckpoint {
        let bytes = checkpoint.to_bytes().expect("encodes");
        let signature: Signature = key.sign(&signed_message(&bytes));
        SignedCheckpoint::new(bytes, signature.to_der().as_bytes().to_vec())
    }

    #[test]
    fn lags_name_each_older_scope_and_a_missing_one() {
        let seen = sample();
        assert!(seen.lags(&seen).is_empty());
        let mut served = sample();
        served.global = 5;
        served.tenants.remove("444455556666");
        let lags = seen.lags(&served);
        assert_eq!(lags.len(), 2);
        assert_eq!(lags[0].to_string(), "global scope epoch served 5, custodian saw 7");
        assert_eq!(
            lags[1].to_string(),
            "tenant scope 444455556666 root missing (omitted), custodian saw epoch 9"
        );
        // Newer everywhere, and a tenant the custodian never saw: no lag.
        let mut newer = sample();
        newer.global = 8;
        newer.tenants.insert("777788889999".into(), 1);
        assert!(seen.lags(&newer).is_empty());
        assert!(newer.covers(&seen));
        assert!(!seen.covers(&newer));
    }

    #[test]
    fn merge_takes_the_highest_epoch_of_each_scope() {
        let mut a = sample();
        let mut b = sample();
        b.global = 3;
        b.tenants.insert("111122223333".into(), 10);
        b.tenants.insert("777788889999".into(), 2);
        a.merge(&b);
        assert_eq!(a.global, 7);
        assert_eq!(a.epoch("111122223333"), 10);
        assert_eq!(a.epoch("444455556666"), 9);
        assert_eq!(a.epoch("777788889999"), 2);
    }

    #[test]
    fn a_signed_checkpoint_verifies_only_under_its_commitment_and_deployment() {
        let key = SigningKey::from_slice(&[7; 32]).expect("a key");
        let commitment = key.verifying_key().to_public_key_der().expect("spki").into_vec();
        let good = signed(&key, &sample());
        let read = SignedCheckpoint::from_bytes(&good.to_bytes().expect("encodes")).expect("decodes");
        assert_eq!(read.verify(&commitment, &[3; 16]), Ok(sample()));
        assert!(matches!(
            read.verify(&commitment, &[4; 16]),
            Err(CheckpointError::Deployment { .. })
        ));
        let other = SigningKey::from_slice(&[8; 32]).expect("a key");
        let other_commitment = other.verifying_key().to_public_key_der().expect("spki").into_vec();
        assert_eq!(
            read.verify(&other_commitment, &[3; 16]),
            Err(CheckpointError::Signature)
        );
        let mut altered = good.clone();
        let last = altered.checkpoint.len() - 1;
        altered.checkpoint[last] ^= 1;
        assert_eq!(altered.verify(&commitment, &[3; 16]), Err(CheckpointError::Signature));
        assert!(good.verify(b"not a key", &[3; 16]).is_err());
    }

    #[test]
    fn decoding_refuses_bad_scopes_other_versions_and_non_canonical_bytes() {
        let mut bad = sample();
        bad.tenants.insert(GLOBAL_SCOPE.into(), 1);
        assert!(bad.to_bytes().is_err());
        bad.tenants.remove(GLOBAL_SCOPE);
        bad.tenants.insert(String::new(), 1);
        assert!(bad.to_bytes().is_err());
        let mut other_version = sample();
        other_version.format = 2;
        let bytes = serde_cbor::to_vec(&other_version).expect("encodes");
        assert!(matches!(
            Checkpoint::from_bytes(&bytes),
            Err(FormatError::Version { found: 2, .. })
        ));
        let mut trailing = sample().to_bytes().expect("encodes");
        trailing.push(0);
        assert!(Checkpoint::from_bytes(&trailing).is_err());
    }

    proptest! {
        /// Any checkpoint round-trips, and its encoding is the only one read.
        #[test]
        fn checkpoints_round_trip(
            deployment in any::<[u8; 16]>(),
            global in any::<u64>(),
            tenants in proptest::collection::btree_map("[0-9]{12}", any::<u64>(), 0..20),
        ) {
            let checkpoint = Checkpoint::new(deployment, global, tenants);
            let bytes = checkpoint.to_bytes().expect("encodes");
            prop_assert_eq!(Checkpoint::from_bytes(&bytes).expect("decodes"), checkpoint.clone());
            prop_assert!(checkpoint.lags(&checkpoint).is_empty());
        }

        /// Hostile bytes never panic the readers.
        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Checkpoint::from_bytes(&bytes);
            let _ = SignedCheckpoint::from_bytes(&bytes);
        }
    }
}
