//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand, ListKeyRotations. The rules are in
//! [`crate::keystore::rotation`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{Empty, limit, marker_from, marker_to, parse, render, required};
use crate::context::Ctx;
use crate::keystore::rotation;

const DEFAULT_PERIOD_DAYS: i64 = 365;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnableKeyRotationRequest {
    key_id: Option<String>,
    rotation_period_in_days: Option<i64>,
}

pub async fn enable_key_rotation(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: EnableKeyRotationRequest = parse(body)?;
    let days = req.rotation_period_in_days.unwrap_or(DEFAULT_PERIOD_DAYS);
    let Some(days) = u32::try_from(days).ok().filter(|d| (90..=2560).contains(d)) else {
        return Err(KmsError::validation(
            "rotationPeriodInDays",
            "Member must have value between 90 and 2560 (inclusive)",
        ));
    };
    rotation::enable(ctx, req.key_id, days).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn disable_key_rotation(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    rotation::disable(ctx, req.key_id).await?;
    render(&Empty {})
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyRotationStatusResponse {
    key_id: String,
    key_rotation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_rotation_date: Option<i64>,
}

pub async fn get_key_rotation_status(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let status = rotation::status(ctx, &required("keyId", req.key_id)?).await?;
    render(&GetKeyRotationStatusResponse {
        key_id: status.key_arn,
        key_rotation_enabled: status.enabled,
        rotation_period_in_days: status.schedule.map(|(days, _)| days),
        next_rotation_date: status.schedule.map(|(_, next)| next),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdResponse {
    key_id: String,
}

pub async fn rotate_key_on_demand(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let key_id = rotation::rotate_on_demand(ctx, req.key_id).await?;
    render(&KeyIdResponse { key_id })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeyRotationsRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RotationListEntry<'a> {
    key_id: &'a str,
    rotation_date: i64,
    rotation_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeyRotationsResponse<'a> {
    rotations: Vec<RotationListEntry<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

pub async fn list_key_rotations(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListKeyRotationsRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)? as usize;
    let history = rotation::history(ctx, &required("keyId", req.key_id)?).await?;
    let all = &history.rotations;
    let start = match marker_from(req.marker.as_deref())? {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|i| *i <= all.len())
            .ok_or_else(|| KmsError::InvalidMarker("The marker is not one ListKeyRotations returned.".into()))?,
        None => 0,
    };
    let rotations: Vec<RotationListEntry<'_>> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| RotationListEntry {
            key_id: &history.key_arn,
            rotation_date: r.date,
            rotation_type: if r.on_demand { "ON_DEMAND" } else { "AUTOMATIC" },
        })
        .collect();
    let end = start + rotations.len();
    let truncated = end < all.len();
    render(&ListKeyRotationsResponse {
        rotations,
        truncated,
        next_marker: truncated.then(|| marker_to(&end.to_string())),
    })
}
