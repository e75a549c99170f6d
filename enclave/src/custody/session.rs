//! The unseal session: one per sealed start (and a new one after a refusal
//! that spoils it, or on request), holding an ephemeral HPKE key whose
//! public half the enclave's attestation document binds
//! ([`keyward_custody::unseal::session_binding`]).
//!
//! Each [`UnsealMessage`] is checked in this order, each failure with its
//! own [`CustodyError`] and none counting toward the threshold: format →
//! deployment in the header → session in the header (replay) → custodian
//! index known → HPKE open under the session key (corrupt) → the share's
//! own deployment → header and share agree on the index → not already
//! received → the share's digest in the boot record (wrong share). After M
//! accepted shares it combines them and checks the root commitment; only a
//! root that matches is ever returned. Fewer than M shares: no root.

use std::collections::BTreeMap;

use keyward_custody::checkpoint::Checkpoint;
use keyward_custody::share::ShareSecret;
use keyward_custody::suite::{PrivateKey, PublicKey};
use keyward_custody::unseal::{self, SessionId, UnsealMessage};
use subtle::ConstantTimeEq as _;

use super::record::{BootRecord, Custodian, RootCommitment};
use super::{CustodyError, DeploymentId, deployment_hex};
use crate::nsm::Nsm;
use crate::secret::Key256;

/// Where an unseal stands after a share was accepted.
pub enum UnsealProgress {
    /// Still sealed: `received` of `threshold` shares so far.
    NeedMore { received: usize, threshold: usize },
    /// M shares rebuilt a root that matches the commitment.
    Unsealed(Key256),
}

impl std::fmt::Debug for UnsealProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnsealProgress::NeedMore { received, threshold } => f
                .debug_struct("NeedMore")
                .field("received", received)
                .field("threshold", threshold)
                .finish(),
            UnsealProgress::Unsealed(_) => f.write_str("Unsealed(<root>)"),
        }
    }
}

/// What the custodians whose shares rebuilt the root stated about
/// freshness (format-2 unseal messages): the highest epoch of each scope
/// any of them saw, and whether one of them accepts a store rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Merged over the custodians (`None`: none sent a checkpoint).
    pub seen: Option<Checkpoint>,
    /// The custodians that sent a checkpoint.
    pub custodians: Vec<u8>,
    pub accept_store_rollback: bool,
}

/// An unseal session of a Shamir custody.
pub struct UnsealSession {
    deployment_id: DeploymentId,
    threshold: u8,
    custodians: Vec<Custodian>,
    commitment: RootCommitment,
    key: PrivateKey,
    id: SessionId,
    received: BTreeMap<u8, ShareSecret>,
    /// Each accepted custodian's freshness statement.
    claims: BTreeMap<u8, unseal::Freshness>,
    /// The merged claim of the shares that rebuilt the root.
    claim: Option<Claim>,
    finished: bool,
}

impl std::fmt::Debug for UnsealSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealSession")
            .field("deployment", &deployment_hex(&self.deployment_id))
            .field("threshold", &self.threshold)
            .field("received", &self.received.keys().collect::<Vec<_>>())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl UnsealSession {
    /// A new session for `record` (a Shamir custody), its key pair derived
    /// from 32 bytes of NSM randomness.
    pub fn start(record: &BootRecord, nsm: &dyn Nsm) -> Result<UnsealSession, CustodyError> {
        let (threshold, custodians) = record.shamir()?;
        let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
        nsm.fill_random(ikm.as_mut())?;
        let key = PrivateKey::derive(&ikm);
        let id = unseal::session_id(&key.public_key());
        Ok(UnsealSession {
            deployment_id: record.deployment_id,
            threshold,
            custodians: custodians.to_vec(),
            commitment: record.commitment.clone(),
            key,
            id,
            received: BTreeMap::new(),
            claims: BTreeMap::new(),
            claim: None,
            finished: false,
        })
    }

    pub fn deployment_id(&self) -> &DeploymentId {
        &self.deployment_id
    }

    /// The session's HPKE public key (the document's `public_key`).
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// SHA-256 of the session public key.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The document's `user_data`:
    /// `"keyward/v1/unseal:" ‖ deployment id ‖ SHA-256(session public key)`.
    pub fn user_data(&self) -> Vec<u8> {
        unseal::session_binding(&self.deployment_id, &self.public_key())
    }

    /// An attestation document binding this session, echoing the
    /// custodian's fresh `nonce`.
    pub fn attestation_document(&self, nsm: &dyn Nsm, nonce: &[u8]) -> Result<Vec<u8>, CustodyError> {
        Ok(nsm.attest(Some(&self.user_data()), Some(nonce), Some(self.public_key().as_bytes()))?)
    }

    /// Shares accepted so far, and the threshold.
    pub fn progress(&self) -> (usize, usize) {
        (self.received.len(), usize::from(self.threshold))
    }

    /// The indices of the custodians whose shares were accepted.
    pub fn received(&self) -> impl Iterator<Item = u8> + '_ {
        self.received.keys().copied()
    }

    /// Takes one encoded [`UnsealMessage`]. A refusal changes nothing (the
    /// shares already accepted stay); the M-th valid share yields the root.
    pub fn accept(&mut self, message: &[u8]) -> Result<UnsealProgress, CustodyError> {
        if self.finished {
            return Err(CustodyError::SessionFinished);
        }
        let message = UnsealMessage::from_bytes(message)?;
        if message.deployment_id != self.deployment_id {
            return Err(self.wrong_deployment("unseal message", &message.deployment_id));
        }
        if !bool::from(message.session_id.ct_eq(&self.id)) {
            return Err(CustodyError::WrongSession);
        }
        let index = message.custodian_index;
        let custodian = usize::from(index)
            .checked_sub(1)
            .and_then(|i| self.custodians.get(i))
            .ok_or(CustodyError::UnknownCustodian {
                index,
                custodians: self.custodians.len(),
            })?;
        let share = message.open(&self.key).map_err(|e| match e {
            keyward_custody::FormatError::Undecryptable(_) => CustodyError::Undecryptable,
            other => CustodyError::Format(other),
        })?;
        // Authenticated by the decryption (it is in the associated data).
        let freshness = message.freshness()?;
        if share.deployment_id() != &self.deployment_id {
            return Err(self.wrong_deployment("share", share.deployment_id()));
        }
        if share.index() != index {
            return Err(CustodyError::IndexMismatch {
                header: index,
                inner: share.index(),
            });
        }
        if self.received.contains_key(&index) {
            return Err(CustodyError::DuplicateShare { index });
        }
        if !bool::from(share.digest().ct_eq(&custodian.share_digest)) {
            tracing::warn!(
                custodian = index,
                "unseal: a share that does not match the boot record was refused"
            );
            return Err(CustodyError::WrongShare { index });
        }
        self.received.insert(index, share);
        self.claims.insert(index, freshness);
        let (received, threshold) = self.progress();
        tracing::info!(custodian = index, received, threshold, "unseal: share accepted");
        if received < threshold {
            return Ok(UnsealProgress::NeedMore { received, threshold });
        }
        let shares: Vec<&ShareSecret> = self.received.values().collect();
        let combined = super::genesis::combine(&shares, self.threshold);
        // Whatever happens now, these shares are spent: a session never
        // keeps shares past an attempt to combine them.
        self.received.clear();
        let claims = std::mem::take(&mut self.claims);
        let root = combined?;
        self.commitment.verify(&root)?;
        self.finished = true;
        self.claim = Some(merge(claims));
        tracing::info!(deployment = %deployment_hex(&self.deployment_id), "unseal: root rebuilt and matches the commitment");
        Ok(UnsealProgress::Unsealed(root))
    }

    /// What the custodians whose shares rebuilt the root stated (after
    /// [`UnsealProgress::Unsealed`]; before it, nothing).
    pub fn claim(&self) -> Claim {
        self.claim.clone().unwrap_or_default()
    }

    fn wrong_deployment(&self, what: &'static str, found: &DeploymentId) -> CustodyError {
        CustodyError::WrongDeployment {
            what,
            expected: deployment_hex(&self.deployment_id),
            found: deployment_hex(found),
        }
    }
}

fn merge(claims: BTreeMap<u8, unseal::Freshness>) -> Claim {
    let mut out = Claim::default();
    for (index, freshness) in claims {
        out.accept_store_rollback |= freshness.accept_store_rollback;
        if let Some(checkpoint) = freshness.checkpoint {
            out.custodians.push(index);
            match &mut out.seen {
                Some(seen) => seen.merge(&checkpoint),
                None => out.seen = Some(checkpoint),
            }
        }
    }
    out
}
