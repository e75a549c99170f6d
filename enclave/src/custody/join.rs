//! Cluster join (issue 18 item 4): a sealed node of a deployment gets the
//! root from a Ready node of the same deployment (same store, same boot
//! record), released only to an enclave whose attestation document shows
//! the deployment's allowed measurements. Only a full outage needs the
//! custodians (or the custody key service) again.
//!
//! - Joiner ([`JoinSession`]): a fresh X25519 key; a document binding it
//!   (`keyward_custody::join::join_binding`); the peer's
//!   [`JoinPackage`]s opened, the root checked against the boot record's
//!   commitment and each peer's signed checkpoint against the same
//!   commitment ([`JoinSession::open`]). One session (one key, one
//!   document) asks every peer of a round.
//! - Peer ([`verify_joiner`], then [`seal_for`]; [`release`] does both):
//!   verifies the document (chain to the pinned root,
//!   freshness, not debug, the allowed PCRs — by default its own image's,
//!   [`own_measurements`]) and that it binds its key for this deployment;
//!   then seals the root and its signed checkpoint (the store's epochs it
//!   reads now, every scope) to that key.
//!
//! Domain layer: no JSON or HTTP. The transport (the joiner's outbound
//! HTTPS call to the peer, or a host relay) is the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};
use keyward_custody::join::{JoinPackage, join_binding, key_id, parse_join_binding};
use keyward_custody::suite::{PrivateKey, PublicKey};
use subtle::ConstantTimeEq as _;

use super::record::BootRecord;
use super::{CustodyError, deployment_hex};
use crate::attestation::verify::{Expectations, Verifier};
use crate::nsm::Nsm;
use crate::secret::Key256;

/// How old a joiner's document may be.
pub const MAX_DOCUMENT_AGE: Duration = Duration::from_secs(5 * 60);
/// How far in the future its timestamp may lie (clock skew).
pub const MAX_DOCUMENT_FUTURE: Duration = Duration::from_secs(60);
/// The PCRs that name an enclave image (Nitro: image, kernel, application).
pub const IMAGE_PCRS: [u8; 3] = [0, 1, 2];

/// A sealed node's request for the root.
pub struct JoinSession {
    key: PrivateKey,
    deployment_id: super::DeploymentId,
}

impl JoinSession {
    /// A fresh join key for the deployment of `record`.
    pub fn start(record: &BootRecord) -> JoinSession {
        JoinSession {
            key: PrivateKey::generate(),
            deployment_id: record.deployment_id,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The attestation document a peer verifies before releasing the root.
    pub fn document(&self, nsm: &dyn Nsm) -> Result<Vec<u8>, CustodyError> {
        let public = self.key.public_key();
        Ok(nsm.attest(
            Some(&join_binding(&self.deployment_id, &public)),
            None,
            Some(public.as_bytes()),
        )?)
    }

    /// Opens one peer's package: the root, only if it is this deployment's
    /// and matches `record`'s commitment, and the peer's checkpoint (the
    /// epochs of every index scope it read), only if signed under the same
    /// commitment for this deployment. The session stays usable for the
    /// other peers' packages of the round.
    pub fn open(&self, package: &[u8], record: &BootRecord) -> Result<(Key256, Checkpoint), CustodyError> {
        let package = JoinPackage::from_bytes(package)?;
        if package.deployment_id != record.deployment_id || package.deployment_id != self.deployment_id {
            return Err(CustodyError::WrongDeployment {
                what: "join package",
                expected: deployment_hex(&record.deployment_id),
                found: deployment_hex(&package.deployment_id),
            });
        }
        let released = package.open(&self.key)?;
        let root =
            Key256::from_slice(&released.root).ok_or(CustodyError::Join("the released root is not 32 bytes".into()))?;
        record.commitment.verify(&root)?;
        let checkpoint = released
            .checkpoint
            .verify(record.commitment.as_bytes(), &record.deployment_id)
            .map_err(|e| CustodyError::Join(format!("the peer's checkpoint was refused: {e}")))?;
        Ok((root, checkpoint))
    }
}

/// The measurements a peer allows by default: its own image's PCRs
/// ([`IMAGE_PCRS`]), read from a document of its own NSM.
pub fn own_measurements(nsm: &dyn Nsm) -> Result<BTreeMap<u8, Vec<Vec<u8>>>, CustodyError> {
    let document = nsm.attest(None, None, None)?;
    let payload = crate::attestation::document::parse_cose(&document)
        .and_then(|cose| crate::attestation::document::parse_payload(&cose.payload))
        .map_err(|e| CustodyError::Join(format!("this node's own document does not parse: {e}")))?;
    let mut allowed = BTreeMap::new();
    for index in IMAGE_PCRS {
        let value = payload
            .pcrs
            .get(&index)
            .ok_or_else(|| CustodyError::Join(format!("this node's own document has no PCR{index}")))?;
        allowed.insert(index, vec![value.clone()]);
    }
    Ok(allowed)
}

/// The peer's side: [`verify_joiner`], then [`seal_for`] with this
/// peer's signed `checkpoint`.
#[allow(clippy::too_many_arguments)]
pub fn release(
    root: &Key256,
    record: &BootRecord,
    verifier: &Verifier,
    document: &[u8],
    allowed: &BTreeMap<u8, Vec<Vec<u8>>>,
    allow_debug: bool,
    now: time::OffsetDateTime,
    checkpoint: &SignedCheckpoint,
) -> Result<JoinPackage, CustodyError> {
    let joiner = verify_joiner(record, verifier, document, allowed, allow_debug, now)?;
    seal_for(root, record, &joiner, checkpoint)
}

/// Verifies a joiner's `document` (anchor, freshness at `now`, not debug
/// unless `allow_debug`, PCRs as `allowed`) and its join binding for this
/// deployment: the join key to seal to. Cheap enough to run before the
/// peer does any store work for an unauthenticated request.
pub fn verify_joiner(
    record: &BootRecord,
    verifier: &Verifier,
    document: &[u8],
    allowed: &BTreeMap<u8, Vec<Vec<u8>>>,
    allow_debug: bool,
    now: time::OffsetDateTime,
) -> Result<PublicKey, CustodyError> {
    if allowed.get(&0).is_none_or(Vec::is_empty) {
        return Err(CustodyError::Join(
            "no allowed PCR0: a join policy must name the enclave image".into(),
        ));
    }
    let expect = Expectations {
        nonce: None,
        pcrs: allowed.clone(),
        allow_debug,
        max_age: Some(MAX_DOCUMENT_AGE),
        max_future: MAX_DOCUMENT_FUTURE,
    };
    let verified = verifier
        .verify(document, now, &expect)
        .map_err(|e| CustodyError::Join(format!("the joining enclave's attestation document was refused: {e}")))?;
    let user_data = verified.document.user_data.as_deref().unwrap_or_default();
    let Some((deployment, bound_key)) = parse_join_binding(user_data) else {
        return Err(CustodyError::Join(
            "the joining enclave's document does not bind a join key".into(),
        ));
    };
    if deployment != record.deployment_id {
        return Err(CustodyError::WrongDeployment {
            what: "join request",
            expected: deployment_hex(&record.deployment_id),
            found: deployment_hex(&deployment),
        });
    }
    let public_key = verified
        .document
        .public_key
        .as_deref()
        .map(PublicKey::from_slice)
        .transpose()?
        .ok_or(CustodyError::Join(
            "the joining enclave's document carries no key".into(),
        ))?;
    if !bool::from(key_id(&public_key).ct_eq(&bound_key)) {
        return Err(CustodyError::Join(
            "the joining enclave's document binds another key than it carries".into(),
        ));
    }
    tracing::info!(
        deployment = %deployment_hex(&record.deployment_id),
        module = %verified.module_id(),
        "cluster join: an attested node of the allowed image asks for the root"
    );
    Ok(public_key)
}

/// Seals `root` (only one `record` commits to) and this peer's signed
/// `checkpoint` (`Keyward.GetCheckpoint`'s: every scope's epoch) to a
/// verified joiner's key.
pub fn seal_for(
    root: &Key256,
    record: &BootRecord,
    joiner: &PublicKey,
    checkpoint: &SignedCheckpoint,
) -> Result<JoinPackage, CustodyError> {
    // Never release a root the boot record does not commit to.
    record.commitment.verify(root)?;
    let package = JoinPackage::seal(&record.deployment_id, root.expose(), checkpoint, joiner)?;
    tracing::info!(
        deployment = %deployment_hex(&record.deployment_id),
        "cluster join: the root was released to an attested node"
    );
    Ok(package)
}

#[cfg(test)]
mod tests;
