//! Key rotation: automatic rotation on and off, its status, rotation on
//! demand, and the rotation history. Rotation adds a version; every old
//! version stays for decryption; new ciphertexts use the newest.

use super::due::{self, SECONDS_PER_DAY};
use super::keys::{Access, check_state, modify, resolve_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{KeyRecord, KeyState, Origin, RotationEntry};

/// AWS: at most 10 on-demand rotations per key.
pub const MAX_ON_DEMAND_ROTATIONS: usize = 10;

/// Rotation needs a rotatable key (symmetric, AWS_KMS origin) that is not
/// disabled or pending anything.
fn check_rotatable(rec: &KeyRecord) -> Result<(), KmsError> {
    if !rec.key_spec.rotatable() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} cannot be rotated: only symmetric encryption keys rotate.",
            rec.arn
        )));
    }
    if rec.origin != Origin::AwsKms {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} has imported key material.",
            rec.arn
        )));
    }
    check_state(rec, Access::Crypto)
}

/// EnableKeyRotation: the key rotates every `period_days` days from now.
pub async fn enable(ctx: &Ctx<'_>, key_id: Option<String>, period_days: u32) -> Result<(), KmsError> {
    let next = ctx.now.unix_timestamp() + i64::from(period_days) * SECONDS_PER_DAY;
    modify(ctx, key_id, |rec| {
        check_rotatable(rec)?;
        rec.rotation_period_days = Some(period_days);
        rec.next_rotation_date = Some(next);
        Ok(())
    })
    .await?;
    Ok(())
}

/// DisableKeyRotation.
pub async fn disable(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<(), KmsError> {
    modify(ctx, key_id, |rec| {
        check_rotatable(rec)?;
        rec.rotation_period_days = None;
        rec.next_rotation_date = None;
        Ok(())
    })
    .await?;
    Ok(())
}

/// A key's automatic rotation, as [`status`] reports it.
pub struct RotationStatus {
    pub key_arn: String,
    /// Days and next date, when automatic rotation is on.
    pub schedule: Option<(u32, i64)>,
    pub enabled: bool,
}

/// GetKeyRotationStatus.
pub async fn status(ctx: &Ctx<'_>, key_id: &str) -> Result<RotationStatus, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    if !rec.key_spec.rotatable() || rec.origin != Origin::AwsKms {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} does not support rotation.",
            rec.arn
        )));
    }
    if rec.state == KeyState::PendingDeletion {
        check_state(&rec, Access::Manage)?;
    }
    Ok(RotationStatus {
        enabled: rec.rotation_period_days.is_some(),
        schedule: rec.rotation_period_days.zip(rec.next_rotation_date),
        key_arn: rec.arn,
    })
}

/// RotateKeyOnDemand: a new version now; returns the key's ARN.
pub async fn rotate_on_demand(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<String, KmsError> {
    let now = ctx.now.unix_timestamp();
    let (rec, ()) = modify(ctx, key_id, |rec| {
        let kek = ctx.tenant_kek(&rec.tenant)?;
        check_rotatable(rec)?;
        if rec.rotations.iter().filter(|r| r.on_demand).count() >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "{} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations.",
                rec.arn
            )));
        }
        due::rotate(&kek, rec, now, true).map_err(|e| {
            tracing::error!(error = %e, "on-demand rotation");
            super::crypto::material_error(rec, &e)
        })?;
        Ok(())
    })
    .await?;
    tracing::info!(key_id = %rec.key_id, version = rec.current_version(), "on-demand rotation");
    Ok(rec.arn)
}

/// A key's rotations, oldest first, as [`history`] returns them.
pub struct Rotations {
    pub key_arn: String,
    pub rotations: Vec<RotationEntry>,
}

/// ListKeyRotations (the whole history; the caller pages it).
pub async fn history(ctx: &Ctx<'_>, key_id: &str) -> Result<Rotations, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    if !rec.key_spec.rotatable() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} does not support rotation.",
            rec.arn
        )));
    }
    Ok(Rotations {
        key_arn: rec.arn,
        rotations: rec.rotations,
    })
}
