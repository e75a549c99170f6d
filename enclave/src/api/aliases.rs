//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases, and alias
//! resolution wherever a KeyId is accepted. Stored sealed under
//! `alias/<tenant>/<alias name>`; one tenant never sees another's.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{self, limit, marker_from, marker_to, parse, required};
use crate::context::Ctx;
use crate::keys::record::KeyState;
pub use crate::keystore::aliases::{AliasRecord, NAMESPACE, alias_arn, delete_all_for, record_key};

/// AWS's alias name rules.
fn validate_name(name: &str) -> Result<(), KmsError> {
    params::length("aliasName", name.len(), 1, 256)?;
    let valid = name.strip_prefix("alias/").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    });
    if !valid {
        return Err(KmsError::validation(
            "aliasName",
            "Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$",
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(KmsError::InvalidAliasName(
            "Alias names beginning with alias/aws/ are reserved for AWS managed keys.".into(),
        ));
    }
    Ok(())
}

/// The target of an alias: a key id or key ARN (not another alias), of a key
/// that is not pending deletion.
async fn target(ctx: &Ctx<'_>, target_key_id: &str) -> Result<crate::keys::record::KeyRecord, KmsError> {
    if target_key_id.starts_with("alias/") || target_key_id.contains(":alias/") {
        return Err(KmsError::Validation(
            "TargetKeyId must be a key ID or key ARN, not an alias.".into(),
        ));
    }
    let rec = params::resolve_key(ctx, target_key_id).await?;
    if rec.state == KeyState::PendingDeletion {
        return Err(KmsError::InvalidState(format!("{} is pending deletion.", rec.arn)));
    }
    Ok(rec)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

pub async fn create_alias(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: AliasRequest = parse(body)?;
    let name = required("aliasName", req.alias_name)?;
    validate_name(&name)?;
    let rec = target(ctx, &required("targetKeyId", req.target_key_id)?).await?;
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
    Ok(json!({}))
}

pub async fn update_alias(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: AliasRequest = parse(body)?;
    let name = required("aliasName", req.alias_name)?;
    validate_name(&name)?;
    let new_target = target(ctx, &required("targetKeyId", req.target_key_id)?).await?;
    let key = record_key(&ctx.principal.tenant, &name);
    let _guard = ctx.enclave.locks.lock(&format!("{NAMESPACE}/{key}")).await;
    let Some(mut alias) = ctx.records.get::<AliasRecord>(NAMESPACE, &key).await? else {
        return Err(KmsError::NotFound(format!(
            "Alias {} is not found.",
            alias_arn(ctx.region(), &ctx.principal.tenant, &name)
        )));
    };
    // AWS: the new target must have the same key spec and usage as the old one.
    if let Ok(old) = params::load_key(ctx, &alias.target_key_id).await
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
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAliasRequest {
    alias_name: Option<String>,
}

pub async fn delete_alias(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DeleteAliasRequest = parse(body)?;
    let name = required("aliasName", req.alias_name)?;
    validate_name(&name)?;
    let key = record_key(&ctx.principal.tenant, &name);
    let _guard = ctx.enclave.locks.lock(&format!("{NAMESPACE}/{key}")).await;
    if ctx.records.get::<AliasRecord>(NAMESPACE, &key).await?.is_none() {
        return Err(KmsError::NotFound(format!(
            "Alias {} is not found.",
            alias_arn(ctx.region(), &ctx.principal.tenant, &name)
        )));
    }
    ctx.records.delete(NAMESPACE, &key).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn list_aliases(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListAliasesRequest = parse(body)?;
    let limit = limit(req.limit, 50, 100)?;
    let only = match req.key_id {
        Some(k) => Some(params::resolve_key(ctx, &k).await?.key_id),
        None => None,
    };
    let prefix = format!("{}/", ctx.principal.tenant);
    let mut after = marker_from(req.marker.as_deref())?;
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
            if aliases.len() == limit as usize {
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
    let tenant = &ctx.principal.tenant;
    let entries: Vec<Value> = aliases
        .iter()
        .map(|a| {
            json!({
                "AliasName": a.alias_name,
                "AliasArn": alias_arn(ctx.region(), tenant, &a.alias_name),
                "TargetKeyId": a.target_key_id.to_string(),
                "CreationDate": a.creation_date,
                "LastUpdatedDate": a.last_updated_date,
            })
        })
        .collect();
    let mut out = json!({ "Aliases": entries, "Truncated": truncated });
    if truncated && let Some(position) = after {
        out["NextMarker"] = json!(marker_to(&position));
    }
    Ok(out)
}
