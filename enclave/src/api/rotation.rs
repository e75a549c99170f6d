//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand, ListKeyRotations. Rotation adds a version; every old
//! version stays for decryption; new ciphertexts use the newest.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::lifecycle::{self, SECONDS_PER_DAY, modify};
use super::params::{self, Access, check_state, limit, marker_from, marker_to, parse, required};
use crate::context::Ctx;
use crate::keys::record::{KeyRecord, KeyState, Origin};

/// AWS: at most 10 on-demand rotations per key.
pub const MAX_ON_DEMAND_ROTATIONS: usize = 10;
const DEFAULT_PERIOD_DAYS: i64 = 365;

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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnableKeyRotationRequest {
    key_id: Option<String>,
    rotation_period_in_days: Option<i64>,
}

pub async fn enable_key_rotation(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: EnableKeyRotationRequest = parse(body)?;
    let days = req.rotation_period_in_days.unwrap_or(DEFAULT_PERIOD_DAYS);
    if !(90..=2560).contains(&days) {
        return Err(KmsError::validation(
            "rotationPeriodInDays",
            "Member must have value between 90 and 2560 (inclusive)",
        ));
    }
    let now = ctx.now.unix_timestamp();
    modify(ctx, req.key_id, |rec| {
        check_rotatable(rec)?;
        rec.rotation_period_days = Some(days as u32);
        rec.next_rotation_date = Some(now + days * SECONDS_PER_DAY);
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn disable_key_rotation(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    modify(ctx, req.key_id, |rec| {
        check_rotatable(rec)?;
        rec.rotation_period_days = None;
        rec.next_rotation_date = None;
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

pub async fn get_key_rotation_status(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    if !rec.key_spec.rotatable() || rec.origin != Origin::AwsKms {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} does not support rotation.",
            rec.arn
        )));
    }
    if rec.state == KeyState::PendingDeletion {
        check_state(&rec, Access::Manage)?;
    }
    let mut out = json!({
        "KeyId": rec.arn,
        "KeyRotationEnabled": rec.rotation_period_days.is_some(),
    });
    if let (Some(days), Some(next)) = (rec.rotation_period_days, rec.next_rotation_date) {
        out["RotationPeriodInDays"] = json!(days);
        out["NextRotationDate"] = json!(next);
    }
    Ok(out)
}

pub async fn rotate_key_on_demand(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let now = ctx.now.unix_timestamp();
    let hierarchy = &ctx.keyring.hierarchy;
    let (rec, ()) = modify(ctx, req.key_id, |rec| {
        check_rotatable(rec)?;
        if rec.rotations.iter().filter(|r| r.on_demand).count() >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "{} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations.",
                rec.arn
            )));
        }
        lifecycle::rotate(hierarchy, rec, now, true).map_err(|e| {
            tracing::error!(error = %e, "rotation");
            KmsError::Internal
        })
    })
    .await?;
    tracing::info!(key_id = %rec.key_id, version = rec.current_version(), "on-demand rotation");
    Ok(json!({ "KeyId": rec.arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeyRotationsRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn list_key_rotations(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListKeyRotationsRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)? as usize;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    if !rec.key_spec.rotatable() {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} does not support rotation.",
            rec.arn
        )));
    }
    let start = match marker_from(req.marker.as_deref())? {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|i| *i <= rec.rotations.len())
            .ok_or_else(|| KmsError::InvalidMarker("The marker is not one ListKeyRotations returned.".into()))?,
        None => 0,
    };
    let page: Vec<Value> = rec
        .rotations
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| {
            json!({
                "KeyId": rec.arn,
                "RotationDate": r.date,
                "RotationType": if r.on_demand { "ON_DEMAND" } else { "AUTOMATIC" },
            })
        })
        .collect();
    let end = start + page.len();
    let mut out = json!({ "Rotations": page, "Truncated": end < rec.rotations.len() });
    if end < rec.rotations.len() {
        out["NextMarker"] = json!(marker_to(&end.to_string()));
    }
    Ok(out)
}
