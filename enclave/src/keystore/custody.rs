//! Re-sharing the custody of a Ready Shamir deployment
//! (`Keyward.ReshareCustody`, operator; docs/custody.md "Replacing a
//! custodian by re-sharing"): the root this enclave holds is split anew for
//! the new custodians ([`crate::custody::reshare`]) and the boot record is
//! replaced by compare-and-swap on the version read, so of two concurrent
//! re-shares one wins and the other changes nothing.

use crate::context::Ctx;
use crate::custody::record::{BootRecord, NAMESPACE, RECORD_KEY};
use crate::custody::reshare::{Reshare, ReshareOutcome, reshare};
use crate::custody::{CustodyError, deployment_hex};
use crate::error::KmsError;

/// Re-shares the root among `request`'s custodians; answers the new boot
/// record and one share package per custodian. The old shares no longer
/// match the boot record's digests once this returns. With
/// `expected_commitment` (the caller's pinned audit key), the deployment
/// must commit to it, or nothing changes.
pub async fn reshare_custody(
    ctx: &Ctx<'_>,
    request: &Reshare,
    expected_commitment: Option<&[u8]>,
) -> Result<ReshareOutcome, KmsError> {
    let (version, stored) = ctx.records.get_stored(NAMESPACE, RECORD_KEY).await?;
    let Some(bytes) = stored else {
        return Err(KmsError::InvalidState(
            "this deployment has no boot record to re-share; nothing was changed".into(),
        ));
    };
    let current = BootRecord::decode(&bytes)
        .map_err(|e| KmsError::InternalDetail(format!("the boot record does not decode ({e}); nothing was changed")))?;
    if expected_commitment.is_some_and(|expected| expected != current.commitment.as_bytes()) {
        return Err(KmsError::Validation(
            "ExpectedRootCommitment is not this deployment's root commitment (another deployment?); nothing was \
             changed"
                .into(),
        ));
    }
    let outcome = reshare(ctx.keyring.hierarchy.root(), &current, request).map_err(|e| match e {
        CustodyError::Threshold { .. } | CustodyError::DuplicateCustodian { .. } => KmsError::Validation(e.to_string()),
        CustodyError::CustodyMethod { .. } => KmsError::UnsupportedOperation(format!(
            "{e}: this deployment's root is not kept by custodians; nothing was changed"
        )),
        CustodyError::CommitmentMismatch => KmsError::InternalDetail(format!(
            "the stored boot record commits to another root than the one this enclave runs with ({e}); \
             nothing was changed"
        )),
        other => KmsError::InternalDetail(format!("re-sharing failed: {other}")),
    })?;
    let encoded = outcome
        .record
        .encode()
        .map_err(|e| KmsError::InternalDetail(format!("the new boot record does not encode: {e}")))?;
    if !ctx
        .records
        .replace_stored(NAMESPACE, RECORD_KEY, version, encoded)
        .await?
    {
        return Err(KmsError::Conflict(
            "the boot record changed while re-sharing (another re-share at the same time?); nothing was changed: \
             run it again"
                .into(),
        ));
    }
    ctx.notes.detail(&format!(
        "custody of deployment {} re-shared: {}-of-{} custodians",
        deployment_hex(&current.deployment_id),
        request.threshold,
        request.custodians.len()
    ));
    Ok(outcome)
}
