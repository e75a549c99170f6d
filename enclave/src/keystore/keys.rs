//! The caller's keys: creating and listing them, resolving a `KeyId` (id,
//! ARN, alias) to one of them, loading it (applying what is due, then the
//! policy modules), saving it, and AWS's key-state rules.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{aliases, due};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{self, AttestationPolicy, KeyRecord, KeyState, Origin};
use crate::keys::spec::{KeySpec, KeyUsage};

pub fn key_arn(region: &str, tenant: &str, key_id: &Uuid) -> String {
    format!("arn:aws:kms:{region}:{tenant}:key/{key_id}")
}

/// Resolves a `KeyId` parameter (key id, key ARN, alias name or alias ARN) to
/// one of the caller's keys. Anything else, including another tenant's key or
/// alias, is "not found".
pub async fn resolve_key_id(ctx: &Ctx<'_>, key_id: &str) -> Result<Uuid, KmsError> {
    if key_id.is_empty() || key_id.len() > 2048 {
        return Err(KmsError::validation(
            "keyId",
            "Member must have length between 1 and 2048 (inclusive)",
        ));
    }
    let not_found = || KmsError::NotFound(format!("Invalid keyId '{}'", crate::text::printable(key_id)));
    if let Some(rest) = key_id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return Err(not_found());
        };
        if *partition != "aws" || *service != "kms" || *region != ctx.region() || *account != ctx.principal.tenant {
            return Err(not_found());
        }
        if resource.starts_with("alias/") {
            return resolve_alias(ctx, resource).await;
        }
        let id = resource.strip_prefix("key/").ok_or_else(not_found)?;
        return Uuid::try_parse(id).map_err(|_| not_found());
    }
    if key_id.starts_with("alias/") {
        return resolve_alias(ctx, key_id).await;
    }
    Uuid::try_parse(key_id).map_err(|_| not_found())
}

async fn resolve_alias(ctx: &Ctx<'_>, name: &str) -> Result<Uuid, KmsError> {
    aliases::lookup(&ctx.records, &ctx.principal.tenant, name)
        .await?
        .ok_or_else(|| {
            KmsError::NotFound(format!(
                "Alias {} is not found.",
                aliases::alias_arn(ctx.region(), &ctx.principal.tenant, &crate::text::printable(name))
            ))
        })
}

/// Notes, for the audit record, the key a request names, without loading it
/// (no policy runs): a request refused before its key loads (a Recipient
/// whose document fails a check) still names the key. A name that does not
/// resolve is not noted; the operation reports it itself.
pub async fn note_named_key(ctx: &Ctx<'_>, key_id: &str) {
    if let Ok(id) = resolve_key_id(ctx, key_id).await {
        ctx.notes.key(&key_arn(ctx.region(), &ctx.principal.tenant, &id));
    }
}

/// Resolves and loads the caller's key (see [`resolve_key_id`], [`load_key`]).
pub async fn resolve_key(ctx: &Ctx<'_>, key_id: &str) -> Result<KeyRecord, KmsError> {
    let id = resolve_key_id(ctx, key_id).await?;
    load_key(ctx, &id).await
}

/// Loads the caller's key record, first applying what is due: a key past
/// its deletion date is destroyed (and reads as not found), an automatic
/// rotation past its date happens, expired imported material is deleted.
pub async fn load_key(ctx: &Ctx<'_>, key_id: &Uuid) -> Result<KeyRecord, KmsError> {
    load(ctx, key_id, false).await
}

/// [`load_key`] for a caller that already holds the key's write lock
/// (the lock is not reentrant).
pub async fn load_key_locked(ctx: &Ctx<'_>, key_id: &Uuid) -> Result<KeyRecord, KmsError> {
    load(ctx, key_id, true).await
}

/// Makes the generation of the caller's tenant known to `ctx` (read from
/// its sealed record when `api::handle` did not set it), so its keys can be
/// derived; a tenant record without a generation is refused. A missing
/// record leaves it unknown: no key of the tenant is then opened.
pub async fn load_tenant_generation(ctx: &Ctx<'_>) -> Result<(), KmsError> {
    if ctx.tenant_generation().is_none()
        && let Some(tenant) = super::tenants::get(&ctx.records, &ctx.principal.tenant).await?
    {
        ctx.set_tenant_generation(tenant.generation()?);
    }
    Ok(())
}

async fn load(ctx: &Ctx<'_>, key_id: &Uuid, locked: bool) -> Result<KeyRecord, KmsError> {
    load_tenant_generation(ctx).await?;
    let name = record::record_key(&ctx.principal.tenant, key_id);
    let rec = read_key(ctx, &name, key_id).await?;
    let rec = match rec {
        Some(rec) if due::is_due(&rec, ctx.now.unix_timestamp()) => {
            let _guard = if locked {
                None
            } else {
                Some(ctx.enclave.locks.lock(&name).await)
            };
            match read_key(ctx, &name, key_id).await? {
                Some(rec) => apply_due(ctx, rec).await?,
                None => None,
            }
        }
        other => other,
    };
    if let Some(rec) = &rec {
        // Customer policy modules decide after built-in authorization, on every key acted on.
        super::policy::enforce(ctx, rec).await?;
    }
    rec.ok_or_else(|| {
        KmsError::NotFound(format!(
            "Key '{}' does not exist",
            key_arn(ctx.region(), &ctx.principal.tenant, key_id)
        ))
    })
}

async fn read_key(ctx: &Ctx<'_>, name: &str, key_id: &Uuid) -> Result<Option<KeyRecord>, KmsError> {
    let record: Option<KeyRecord> = ctx.records.get(record::NAMESPACE, name).await?;
    match record {
        Some(r) if r.key_id == *key_id && r.tenant == ctx.principal.tenant => {
            ctx.notes.key(&r.arn);
            // The audit records the recipient's PCRs this key's attestation policy checks.
            ctx.notes
                .checked_pcrs(r.attestation.iter().flat_map(|p| p.allowed_pcrs.keys().copied()));
            Ok(Some(r))
        }
        Some(_) => {
            tracing::error!("key record names another key than its identity");
            Err(KmsError::Internal)
        }
        None => Ok(None),
    }
}

/// Persists a key record (the caller holds the key's lock).
pub async fn save_key(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<(), KmsError> {
    ctx.notes.key(&rec.arn);
    ctx.records
        .put(record::NAMESPACE, &record::record_key(&rec.tenant, &rec.key_id), rec)
        .await?;
    Ok(())
}

/// What an operation does to a key, for AWS's key-state rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Cryptographic use (Encrypt, Sign, GenerateMac, GetPublicKey, …).
    Crypto,
    /// A change of metadata or configuration (tags, description, rotation, aliases).
    Manage,
}

/// AWS's key-state table: cryptographic use needs Enabled (Disabled →
/// DisabledException); nothing but reads and CancelKeyDeletion works in
/// PendingDeletion; PendingImport allows management only.
pub fn check_state(key: &KeyRecord, access: Access) -> Result<(), KmsError> {
    match (key.state, access) {
        (KeyState::Enabled, _) => Ok(()),
        (KeyState::Disabled, Access::Crypto) => Err(KmsError::Disabled(format!("{} is disabled.", key.arn))),
        (KeyState::Disabled, Access::Manage) | (KeyState::PendingImport, Access::Manage) => Ok(()),
        (state, _) => Err(KmsError::InvalidState(format!(
            "{} is pending {}.",
            key.arn,
            pending(state)
        ))),
    }
}

fn pending(state: KeyState) -> &'static str {
    match state {
        KeyState::PendingDeletion => "deletion",
        KeyState::PendingImport => "import",
        _ => "a state change",
    }
}

/// A key that can be used cryptographically for `usage`.
pub fn require_usable(key: &KeyRecord, usage: KeyUsage) -> Result<(), KmsError> {
    check_state(key, Access::Crypto)?;
    if key.key_usage != usage {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} key usage is {}, not {usage}.",
            key.arn, key.key_usage
        )));
    }
    Ok(())
}

/// Applies what is due. `None` when the key was destroyed. Events the
/// enclave did on its own (material expiry) get audit records of their own.
pub async fn apply_due(ctx: &Ctx<'_>, rec: KeyRecord) -> Result<Option<KeyRecord>, KmsError> {
    let mut events = Vec::new();
    let rec = due::apply_due_with(
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

/// Loads the caller's key under its write lock, applies `change`, saves it.
pub async fn modify<T>(
    ctx: &Ctx<'_>,
    key_id: Option<String>,
    change: impl FnOnce(&mut KeyRecord) -> Result<T, KmsError>,
) -> Result<(KeyRecord, T), KmsError> {
    with_locked_key(ctx, key_id, async |mut rec| {
        let out = change(&mut rec)?;
        save_key(ctx, &rec).await?;
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
    let id = resolve_key_id(ctx, &key_id.ok_or_else(|| KmsError::missing("keyId"))?).await?;
    let _guard = ctx
        .enclave
        .locks
        .lock(&record::record_key(&ctx.principal.tenant, &id))
        .await;
    let rec = load_key_locked(ctx, &id).await?;
    body(rec).await
}

/// AWS KMS: at most 50 tags per key.
pub const MAX_TAGS: usize = 50;

/// The error for more than [`MAX_TAGS`] tags on a key.
pub fn too_many_tags() -> KmsError {
    KmsError::LimitExceeded(format!("A key can have at most {MAX_TAGS} tags."))
}

/// What CreateKey makes, validated by the caller.
pub struct NewKey {
    pub description: String,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub origin: Origin,
    pub tags: BTreeMap<String, String>,
    pub attestation: Option<AttestationPolicy>,
}

/// CreateKey: a new key of the caller's, with fresh material unless its
/// material is to be imported (`Origin::External`, which starts in
/// PendingImport).
pub async fn create_key(ctx: &Ctx<'_>, new: NewKey) -> Result<KeyRecord, KmsError> {
    if new.tags.len() > MAX_TAGS {
        return Err(too_many_tags());
    }
    load_tenant_generation(ctx).await?;
    let external = new.origin == Origin::External;
    let key_id = Uuid::new_v4();
    let tenant = ctx.principal.tenant.clone();
    let arn = key_arn(ctx.region(), &tenant, &key_id);
    let mut rec = KeyRecord {
        key_id,
        tenant: tenant.clone(),
        arn,
        description: new.description,
        creation_date: ctx.now.unix_timestamp(),
        // BYOK keys have no material until ImportKeyMaterial.
        state: if external {
            KeyState::PendingImport
        } else {
            KeyState::Enabled
        },
        key_spec: new.spec,
        key_usage: new.usage,
        origin: new.origin,
        versions: Vec::new(),
        tags: new.tags,
        deletion_date: None,
        rotation_period_days: None,
        next_rotation_date: None,
        rotations: Vec::new(),
        attestation: new.attestation,
        policy_module: None,
        expiration_model: None,
        valid_to: None,
        material_fingerprint: None,
        protection_locked: false,
    };
    if !external {
        let kek = ctx.tenant_kek(&tenant)?;
        rec.push_version(&kek, new.spec.generate().expose()).map_err(|e| {
            tracing::error!(error = %e, "new key material");
            KmsError::Internal
        })?;
    }
    save_key(ctx, &rec).await?;
    tracing::info!(key_id = %key_id, key_spec = %rec.key_spec, "key created");
    Ok(rec)
}

/// One page of [`list_keys`]: key ids and ARNs.
pub struct KeyPage {
    pub keys: Vec<(Uuid, String)>,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
}

/// ListKeys: up to `limit` of the caller's keys after the position
/// `start_after` (a marker [`list_keys`] returned).
pub async fn list_keys(ctx: &Ctx<'_>, start_after: Option<String>, limit: u32) -> Result<KeyPage, KmsError> {
    let prefix = format!("{}/", ctx.principal.tenant);
    if start_after.as_ref().is_some_and(|m| !m.starts_with(&prefix)) {
        return Err(KmsError::InvalidMarker(
            "The marker is not one ListKeys returned.".into(),
        ));
    }
    let now = ctx.now.unix_timestamp();
    // One extra entry tells whether another page exists. Keys past their
    // deletion date are already gone for the caller (the sweep removes them).
    let mut page: Vec<(String, KeyRecord)> = ctx
        .records
        .list(record::NAMESPACE, &prefix, start_after.as_deref(), limit + 1)
        .await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if truncated {
        page.last().map(|(last, _)| last.clone())
    } else {
        None
    };
    let keys = page
        .into_iter()
        .filter(|(_, rec)| !(rec.state == KeyState::PendingDeletion && rec.deletion_date.is_some_and(|d| d <= now)))
        .map(|(_, rec)| (rec.key_id, rec.arn))
        .collect();
    Ok(KeyPage { keys, next })
}
