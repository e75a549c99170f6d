//! The key state machine as the caller drives it: enable, disable, schedule
//! and cancel deletion, and the description. What happens when a date passes
//! is in [`super::due`].

use super::due::SECONDS_PER_DAY;
use super::keys::{Access, check_state, modify};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{KeyState, Origin};

/// EnableKey: a disabled key is enabled again; other states refuse.
pub async fn enable(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<(), KmsError> {
    set_enabled(ctx, key_id, KeyState::Enabled).await
}

/// DisableKey: an enabled key stops working cryptographically.
pub async fn disable(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<(), KmsError> {
    set_enabled(ctx, key_id, KeyState::Disabled).await
}

async fn set_enabled(ctx: &Ctx<'_>, key_id: Option<String>, state: KeyState) -> Result<(), KmsError> {
    modify(ctx, key_id, |rec| match rec.state {
        KeyState::Enabled | KeyState::Disabled => {
            rec.state = state;
            Ok(())
        }
        _ => check_state(rec, Access::Crypto),
    })
    .await?;
    Ok(())
}

/// A deletion [`schedule_deletion`] scheduled.
pub struct ScheduledDeletion {
    pub key_arn: String,
    /// Seconds since the epoch.
    pub deletion_date: i64,
}

/// ScheduleKeyDeletion: the key is destroyed `days` days from now.
pub async fn schedule_deletion(
    ctx: &Ctx<'_>,
    key_id: Option<String>,
    days: i64,
) -> Result<ScheduledDeletion, KmsError> {
    let deletion_date = ctx.now.unix_timestamp() + days * SECONDS_PER_DAY;
    let (rec, ()) = modify(ctx, key_id, |rec| {
        if rec.state == KeyState::PendingDeletion {
            return Err(KmsError::InvalidState(format!("{} is pending deletion.", rec.arn)));
        }
        rec.state = KeyState::PendingDeletion;
        rec.deletion_date = Some(deletion_date);
        Ok(())
    })
    .await?;
    Ok(ScheduledDeletion {
        key_arn: rec.arn,
        deletion_date,
    })
}

/// CancelKeyDeletion: the key comes back disabled (or waiting for imported
/// material again); returns its ARN.
pub async fn cancel_deletion(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<String, KmsError> {
    let (rec, ()) = modify(ctx, key_id, |rec| {
        if rec.state != KeyState::PendingDeletion {
            return Err(KmsError::InvalidState(format!("{} is not pending deletion.", rec.arn)));
        }
        // A BYOK key whose material was deleted or expired meanwhile waits for it again.
        rec.state = if rec.origin == Origin::External && rec.versions.is_empty() {
            KeyState::PendingImport
        } else {
            KeyState::Disabled
        };
        rec.deletion_date = None;
        Ok(())
    })
    .await?;
    Ok(rec.arn)
}

/// UpdateKeyDescription.
pub async fn update_description(ctx: &Ctx<'_>, key_id: Option<String>, description: String) -> Result<(), KmsError> {
    modify(ctx, key_id, |rec| {
        check_state(rec, Access::Manage)?;
        rec.description = description;
        Ok(())
    })
    .await?;
    Ok(())
}
