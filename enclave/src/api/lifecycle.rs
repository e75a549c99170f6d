//! The key state machine: EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion, UpdateKeyDescription, and what happens when a date
//! passes — destruction at the end of the deletion window, automatic
//! rotation, expiry of imported key material.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{Access, check_state, length, parse, required};
use crate::context::Ctx;
use crate::keys::record::{KeyState, Origin};
pub use crate::keystore::due::{SECONDS_PER_DAY, apply_due_with, destroy, is_due, rotate, sweep};
pub use crate::keystore::keys::{apply_due, modify, with_locked_key};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn enable_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    modify(ctx, req.key_id, |rec| match rec.state {
        KeyState::Enabled | KeyState::Disabled => {
            rec.state = KeyState::Enabled;
            Ok(())
        }
        _ => check_state(rec, Access::Crypto),
    })
    .await?;
    Ok(json!({}))
}

pub async fn disable_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    modify(ctx, req.key_id, |rec| match rec.state {
        KeyState::Enabled | KeyState::Disabled => {
            rec.state = KeyState::Disabled;
            Ok(())
        }
        _ => check_state(rec, Access::Crypto),
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleKeyDeletionRequest {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

pub async fn schedule_key_deletion(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ScheduleKeyDeletionRequest = parse(body)?;
    let days = req.pending_window_in_days.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(KmsError::validation(
            "pendingWindowInDays",
            "Member must have value between 7 and 30 (inclusive)",
        ));
    }
    let deletion_date = ctx.now.unix_timestamp() + days * SECONDS_PER_DAY;
    let (rec, ()) = modify(ctx, req.key_id, |rec| {
        if rec.state == KeyState::PendingDeletion {
            return Err(KmsError::InvalidState(format!("{} is pending deletion.", rec.arn)));
        }
        rec.state = KeyState::PendingDeletion;
        rec.deletion_date = Some(deletion_date);
        Ok(())
    })
    .await?;
    Ok(json!({
        "KeyId": rec.arn,
        "DeletionDate": deletion_date,
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    }))
}

pub async fn cancel_key_deletion(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let (rec, ()) = modify(ctx, req.key_id, |rec| {
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
    Ok(json!({ "KeyId": rec.arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateKeyDescriptionRequest {
    key_id: Option<String>,
    description: Option<String>,
}

pub async fn update_key_description(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: UpdateKeyDescriptionRequest = parse(body)?;
    let description = required("description", req.description)?;
    length("description", description.chars().count(), 0, 8192)?;
    modify(ctx, req.key_id, |rec| {
        check_state(rec, Access::Manage)?;
        rec.description = description;
        Ok(())
    })
    .await?;
    Ok(json!({}))
}
