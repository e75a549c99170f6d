//! What callers do with aliases: create, retarget, delete, list. Storage and
//! lookup are in [`super::aliases`].

use uuid::Uuid;

use super::aliases::{AliasRecord, NAMESPACE, alias_arn, record_key};
use super::keys::{load_key, resolve_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{KeyRecord, KeyState};

/// The target of an alias: a key id or key ARN (not another alias), of a key
/// that is not pending deletion.
async fn target(ctx: &Ctx<'_>, target_key_id: &str) -> Result<KeyRecord, KmsError> {
    if target_key_id.starts_with("alias/") || target_key_id.contains(":alias/") {
        return Err(KmsError::Validation(
            "TargetKeyId must be a key ID or key ARN, not an alias.".into(),
        ));
    }
    let rec = resolve_key(ctx, target_key_id).await?;
    if rec.state == KeyState::PendingDeletion {
        return Err(KmsError::InvalidState(format!("{} is pending deletion.", rec.arn)));
    }
    Ok(rec)
}

fn not_found(ctx: &Ctx<'_>, name: &str) -> KmsError {
    KmsError::NotFound(format!(
        "Alias {} is not found.",
        alias_arn(ctx.region(), &ctx.principal.tenant, name)
    ))
}

/// CreateAlias: `name` (already validated) points to the key `target_key_id`.
pub async fn create(ctx: &Ctx<'_>, name: String, target_key_id: &str) -> Result<(), KmsError> {
    let rec = target(ctx, target_key_id).await?;
    let key = record_key(&ctx.principal.tenant, &name);
    let _guard = ctx.enclave.locks.lock(&format!("{NAMESPACE}/{key}")).await;
    if ctx.records.get::<AliasRecord>(NAMESPACE, &key).await?.is_some() {
        return Err(KmsError::AlreadyExists(format!(
            "An alias with the name {} already exists",
            alias_arn(ctx.region(), &ctx.principal.tenant, &name)
        )));
    }
    let now = ctx.now.unix_timestamp();
    let alias = AliasRecord {
        alias_name: name,
        target_key_id: rec.key_id,
        creation_date: now,
        last_updated_date: now,
    };
    ctx.records.put(NAMESPACE, &key, &alias).await?;
    Ok(())
}

/// UpdateAlias: `name` points to another key of the same spec and usage.
pub async fn update(ctx: &Ctx<'_>, name: &str, target_key_id: &str) -> Result<(), KmsError> {
    let new_target = target(ctx, target_key_id).await?;
    let key = record_key(&ctx.principal.tenant, name);
    let _guard = ctx.enclave.locks.lock(&format!("{NAMESPACE}/{key}")).await;
    let Some(mut alias) = ctx.records.get::<AliasRecord>(NAMESPACE, &key).await? else {
        return Err(not_found(ctx, name));
    };
    // AWS: the new target must have the same key spec and usage as the old one.
    if let Ok(old) = load_key(ctx, &alias.target_key_id).await
        && (old.key_spec != new_target.key_spec || old.key_usage != new_target.key_usage)
    {
        return Err(KmsError::Validation(format!(
            "{} has a different key spec or key usage than the alias's current key.",
            new_target.arn
        )));
    }
    alias.target_key_id = new_target.key_id;
    alias.last_updated_date = ctx.now.unix_timestamp();
    ctx.records.put(NAMESPACE, &key, &alias).await?;
    Ok(())
}

/// DeleteAlias.
pub async fn delete(ctx: &Ctx<'_>, name: &str) -> Result<(), KmsError> {
    let key = record_key(&ctx.principal.tenant, name);
    let _guard = ctx.enclave.locks.lock(&format!("{NAMESPACE}/{key}")).await;
    if ctx.records.get::<AliasRecord>(NAMESPACE, &key).await?.is_none() {
        return Err(not_found(ctx, name));
    }
    ctx.records.delete(NAMESPACE, &key).await?;
    Ok(())
}

/// One page of [`list`].
pub struct AliasPage {
    pub aliases: Vec<AliasRecord>,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
}

/// ListAliases: up to `limit` of the caller's aliases after the position
/// `after` (a marker [`list`] returned), only those pointing to the key
/// `only` when given.
pub async fn list(
    ctx: &Ctx<'_>,
    only: Option<Uuid>,
    mut after: Option<String>,
    limit: usize,
) -> Result<AliasPage, KmsError> {
    let prefix = format!("{}/", ctx.principal.tenant);
    if after.as_ref().is_some_and(|a| !a.starts_with(&prefix)) {
        return Err(KmsError::InvalidMarker(
            "The marker is not one ListAliases returned.".into(),
        ));
    }
    // Filtering by key may skip entries: keep reading until the page is full.
    let mut aliases = Vec::new();
    let mut truncated = false;
    loop {
        let page: Vec<(String, AliasRecord)> = ctx
            .records
            .list(NAMESPACE, &prefix, after.as_deref(), crate::store::MAX_LIST)
            .await?;
        let exhausted = page.len() < crate::store::MAX_LIST as usize;
        for (name, alias) in page {
            if aliases.len() == limit {
                truncated = true;
                break;
            }
            after = Some(name);
            if only.is_none_or(|k| k == alias.target_key_id) {
                aliases.push(alias);
            }
        }
        if truncated || exhausted {
            break;
        }
    }
    Ok(AliasPage {
        aliases,
        next: if truncated { after } else { None },
    })
}
