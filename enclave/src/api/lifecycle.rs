//! The key state machine: EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion, UpdateKeyDescription. The rules are in
//! [`crate::keystore::lifecycle`]; what happens when a date passes in
//! [`crate::keystore::due`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{Empty, length, parse, render, required};
use crate::context::Ctx;
use crate::keys::record::KeyState;
use crate::keystore::lifecycle;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn enable_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    lifecycle::enable(ctx, req.key_id).await?;
    render(&Empty {})
}

pub async fn disable_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    lifecycle::disable(ctx, req.key_id).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleKeyDeletionRequest {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleKeyDeletionResponse {
    key_id: String,
    deletion_date: i64,
    key_state: KeyState,
    pending_window_in_days: i64,
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
    let scheduled = lifecycle::schedule_deletion(ctx, req.key_id, days).await?;
    render(&ScheduleKeyDeletionResponse {
        key_id: scheduled.key_arn,
        deletion_date: scheduled.deletion_date,
        key_state: KeyState::PendingDeletion,
        pending_window_in_days: days,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdResponse {
    key_id: String,
}

pub async fn cancel_key_deletion(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let key_id = lifecycle::cancel_deletion(ctx, req.key_id).await?;
    render(&KeyIdResponse { key_id })
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
    lifecycle::update_description(ctx, req.key_id, description).await?;
    render(&Empty {})
}
