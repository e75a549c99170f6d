//! What falls due on a key with time, without a request: deletion at the end
//! of its window, automatic rotation, expiry of imported material; and the
//! background sweep that applies it to keys nobody touches. No request
//! context here (the service's sweep calls it), only the store.

use crate::audit::record::{ALLOW, AuditEntry};
use crate::keys::hierarchy::Hierarchy;
use crate::keys::record::{self, KeyRecord, KeyState, MaterialError, RotationEntry};
use crate::seal::SealError;
use crate::secret::Key256;
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

/// `keys::apply_due` without a request, for the background sweep: audit
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
        remove_material(&mut rec);
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
        let name = record::record_key(&rec.tenant, &rec.key_id);
        let Some(tenant) = super::tenants::get(records, &rec.tenant).await? else {
            return Err(StoreError::Seal(SealError::Seal(format!(
                "{name}: its tenant has no record"
            ))));
        };
        let kek = hierarchy.tenant_kek(&rec.tenant, &tenant.generation()?);
        rotate(&kek, &mut rec, now, false).map_err(|e| StoreError::Seal(SealError::Seal(format!("{name}: {e}"))))?;
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

/// Adds a new version of fresh material wrapped under `kek` (the tenant's);
/// old versions stay for decryption. The current version must unwrap under
/// `kek` first: a key of an earlier tenant of the same id (another
/// generation) never gets a version the new tenant could use. A failure
/// leaves the record unchanged.
pub fn rotate(kek: &Key256, rec: &mut KeyRecord, now: i64, on_demand: bool) -> Result<(), MaterialError> {
    if !rec.versions.is_empty() {
        rec.material(kek, rec.current_version())?;
    }
    rec.push_version(kek, rec.key_spec.generate().expose())?;
    rec.rotations.push(RotationEntry {
        version: rec.current_version(),
        date: now,
        on_demand,
    });
    Ok(())
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

/// Drops a key's imported material (deletion or expiry): the key goes to
/// PendingImport (a key pending deletion stays so). The fingerprint stays,
/// so only the same material can be imported again.
pub fn remove_material(rec: &mut KeyRecord) {
    rec.versions.clear();
    rec.valid_to = None;
    rec.expiration_model = None;
    if rec.state != KeyState::PendingDeletion {
        rec.state = KeyState::PendingImport;
    }
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
