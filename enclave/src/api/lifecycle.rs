//! The key state machine: EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion, UpdateKeyDescription, and what happens when a date
//! passes — destruction at the end of the deletion window, automatic
//! rotation, expiry of imported key material.

use serde::Deserialize;
use serde_json::{Value, json};

use super::Ctx;
use super::error::KmsError;
use super::params::{self, Access, check_state, length, parse, required};
use crate::audit::record::{ALLOW, AuditEntry};
use crate::keys::hierarchy::Hierarchy;
use crate::keys::record::{self, KeyRecord, KeyState, RotationEntry};
use crate::keys::spec::KeySpec;
use crate::store::{Records, StoreError};

pub const SECONDS_PER_DAY: i64 = 86_400;

/// Whether something is due on `rec` at `now` (seconds since the epoch).
pub fn is_due(rec: &KeyRecord, now: i64) -> bool {
    deletion_due(rec, now) || rotation_due(rec, now) || expiry_due(rec, now)
}

/// Imported material whose `ValidTo` has passed.
fn expiry_due(rec: &KeyRecord, now: i64) -> bool {
    !rec.versions.is_empty() && rec.valid_to.is_some_and(|v| v <= now)
}

fn deletion_due(rec: &KeyRecord, now: i64) -> bool {
    rec.state == KeyState::PendingDeletion && rec.deletion_date.is_some_and(|d| d <= now)
}

fn rotation_due(rec: &KeyRecord, now: i64) -> bool {
    rec.state == KeyState::Enabled && rec.next_rotation_date.is_some_and(|d| d <= now)
}

/// Applies what is due. `None` when the key was destroyed. Events the
/// enclave did on its own (material expiry) get audit records of their own.
pub async fn apply_due(ctx: &Ctx<'_>, rec: KeyRecord) -> Result<Option<KeyRecord>, KmsError> {
    let mut events = Vec::new();
    let rec = apply_due_with(
        &ctx.records,
        &ctx.keyring.hierarchy,
        rec,
        ctx.now.unix_timestamp(),
        &mut events,
    )
    .await?;
    for event in events {
        if let Err(e) = ctx.enclave.audit(event).await {
            tracing::error!(error = %e, "audit of an enclave event failed");
            return Err(KmsError::Internal);
        }
    }
    Ok(rec)
}

/// [`apply_due`] without a request, for the background sweep: audit
/// records of what happened are pushed onto `events`.
pub async fn apply_due_with(
    records: &Records<'_>,
    hierarchy: &Hierarchy,
    mut rec: KeyRecord,
    now: i64,
    events: &mut Vec<AuditEntry>,
) -> Result<Option<KeyRecord>, StoreError> {
    if expiry_due(&rec, now) {
        let fingerprint = rec.material_fingerprint.map(hex::encode).unwrap_or_default();
        super::import::remove_material(&mut rec);
        records
            .put(record::NAMESPACE, &record::record_key(&rec.tenant, &rec.key_id), &rec)
            .await?;
        tracing::info!(key_id = %rec.key_id, "imported key material expired and was deleted");
        events.push(enclave_event(
            &rec,
            now,
            "DeleteExpiredKeyMaterial",
            format!("key material expired; fingerprint {fingerprint}"),
        ));
    }
    if deletion_due(&rec, now) {
        destroy(records, &rec).await?;
        return Ok(None);
    }
    if rotation_due(&rec, now) {
        let period = i64::from(rec.rotation_period_days.unwrap_or(365)) * SECONDS_PER_DAY;
        rotate(hierarchy, &mut rec, now, false);
        rec.next_rotation_date = Some(now + period);
        records
            .put(record::NAMESPACE, &record::record_key(&rec.tenant, &rec.key_id), &rec)
            .await?;
        tracing::info!(key_id = %rec.key_id, version = rec.current_version(), "automatic rotation");
    }
    Ok(Some(rec))
}

/// An audit record of something the enclave did by itself to `rec` at `now`.
fn enclave_event(rec: &KeyRecord, now: i64, operation: &str, reason: String) -> AuditEntry {
    AuditEntry {
        time: u64::try_from(now.saturating_mul(1000)).unwrap_or(0),
        request_id: format!("enclave-{}", uuid::Uuid::new_v4()),
        chain: rec.tenant.clone(),
        role: "Enclave".into(),
        operation: format!("Keyward.{operation}"),
        key_arn: rec.arn.clone(),
        decision: ALLOW,
        reason,
        ..Default::default()
    }
}

/// Adds a new version of fresh material; old versions stay for decryption.
pub fn rotate(hierarchy: &Hierarchy, rec: &mut KeyRecord, now: i64, on_demand: bool) {
    let spec = KeySpec::parse(&rec.key_spec).unwrap_or(KeySpec::SymmetricDefault);
    let kek = hierarchy.tenant_kek(&rec.tenant);
    rec.push_version(&kek, spec.generate().expose());
    rec.rotations.push(RotationEntry {
        version: rec.current_version(),
        date: now,
        on_demand,
    });
}

/// Destroys a key: its aliases and its sealed record are deleted. The
/// material existed in enclave memory only while a request used it, in
/// zeroize-on-drop buffers; without the record no ciphertext under it can be
/// decrypted again.
pub async fn destroy(records: &Records<'_>, rec: &KeyRecord) -> Result<(), StoreError> {
    super::aliases::delete_all_for(records, &rec.tenant, &rec.key_id).await?;
    records
        .delete(record::NAMESPACE, &record::record_key(&rec.tenant, &rec.key_id))
        .await?;
    tracing::info!(key_id = %rec.key_id, "key destroyed at the end of its deletion window");
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

/// Loads the caller's key under its write lock, applies `change`, saves it.
pub async fn modify<T>(
    ctx: &Ctx<'_>,
    key_id: Option<String>,
    change: impl FnOnce(&mut KeyRecord) -> Result<T, KmsError>,
) -> Result<(KeyRecord, T), KmsError> {
    with_locked_key(ctx, key_id, async |mut rec| {
        let out = change(&mut rec)?;
        params::save_key(ctx, &rec).await?;
        Ok((rec, out))
    })
    .await
}

/// Loads the caller's key under its write lock and runs `body` with it
/// (which saves what it changes).
pub async fn with_locked_key<T>(
    ctx: &Ctx<'_>,
    key_id: Option<String>,
    body: impl AsyncFnOnce(KeyRecord) -> Result<T, KmsError>,
) -> Result<T, KmsError> {
    let id = params::resolve_key_id(ctx, &required("keyId", key_id)?).await?;
    let _guard = ctx
        .enclave
        .locks
        .lock(&record::record_key(&ctx.principal.tenant, &id))
        .await;
    let rec = params::load_key_locked(ctx, &id).await?;
    body(rec).await
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
        rec.state = if rec.origin == "EXTERNAL" && rec.versions.is_empty() {
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

/// Applies what is due on every key of every tenant: run once a connection
/// is up and then periodically, so keys nobody touches are still destroyed,
/// rotated and their imported material expired on time; and deletes expired
/// BYOK import parameters (their wrapping private keys). Audit records of
/// what happened are pushed onto `events`.
pub async fn sweep(
    records: &Records<'_>,
    hierarchy: &Hierarchy,
    locks: &crate::locks::RecordLocks,
    now: i64,
    events: &mut Vec<AuditEntry>,
) -> Result<(), StoreError> {
    sweep_import_parameters(records, locks, now).await?;
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, KeyRecord)> = records
            .list(record::NAMESPACE, "", after.as_deref(), crate::store::MAX_LIST)
            .await?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        after = Some(last.clone());
        for (name, rec) in page {
            if is_due(&rec, now) {
                let _guard = locks.lock(&name).await;
                if let Some(current) = records.get::<KeyRecord>(record::NAMESPACE, &name).await?
                    && current.key_id == rec.key_id
                {
                    apply_due_with(records, hierarchy, current, now, events).await?;
                }
            }
        }
    }
}

async fn sweep_import_parameters(
    records: &Records<'_>,
    locks: &crate::locks::RecordLocks,
    now: i64,
) -> Result<(), StoreError> {
    use crate::keys::import::{ImportParameters, NAMESPACE, PARAMETERS_LIFETIME_SECONDS};
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, ImportParameters)> = records
            .list(NAMESPACE, "", after.as_deref(), crate::store::MAX_LIST)
            .await?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        after = Some(last.clone());
        for (name, parameters) in page {
            let expired = |p: &ImportParameters| p.valid_to <= now && p.private_key.is_some();
            let stale = |p: &ImportParameters| p.valid_to + PARAMETERS_LIFETIME_SECONDS <= now;
            if !(expired(&parameters) || stale(&parameters)) {
                continue;
            }
            let _guard = locks.lock(&name).await;
            match records.get::<ImportParameters>(NAMESPACE, &name).await? {
                Some(current) if stale(&current) => records.delete(NAMESPACE, &name).await?,
                Some(mut current) if expired(&current) => {
                    // The wrapping private key goes now; the token's record
                    // stays a while to answer ExpiredImportTokenException.
                    current.private_key = None;
                    records.put(NAMESPACE, &name, &current).await?;
                }
                _ => {}
            }
        }
    }
}
