//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases. The rules
//! are in [`crate::keystore::alias_ops`], storage and resolution in
//! [`crate::keystore::aliases`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, Empty, limit, marker_from, marker_to, parse, render, required};
use crate::context::Ctx;
use crate::keystore::aliases::alias_arn;
use crate::keystore::{alias_ops, keys};

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
    alias_ops::create(ctx, name, &required("targetKeyId", req.target_key_id)?).await?;
    render(&Empty {})
}

pub async fn update_alias(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: AliasRequest = parse(body)?;
    let name = required("aliasName", req.alias_name)?;
    validate_name(&name)?;
    alias_ops::update(ctx, &name, &required("targetKeyId", req.target_key_id)?).await?;
    render(&Empty {})
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
    alias_ops::delete(ctx, &name).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesRequest {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AliasListEntry<'a> {
    alias_name: &'a str,
    alias_arn: String,
    target_key_id: String,
    creation_date: i64,
    last_updated_date: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesResponse<'a> {
    aliases: Vec<AliasListEntry<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

pub async fn list_aliases(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListAliasesRequest = parse(body)?;
    let limit = limit(req.limit, 50, 100)?;
    let only = match req.key_id {
        Some(k) => Some(keys::resolve_key(ctx, &k).await?.key_id),
        None => None,
    };
    let after = marker_from(req.marker.as_deref())?;
    let page = alias_ops::list(ctx, only, after, limit as usize).await?;
    let tenant = &ctx.principal.tenant;
    render(&ListAliasesResponse {
        aliases: page
            .aliases
            .iter()
            .map(|a| AliasListEntry {
                alias_name: &a.alias_name,
                alias_arn: alias_arn(ctx.region(), tenant, &a.alias_name),
                target_key_id: a.target_key_id.to_string(),
                creation_date: a.creation_date,
                last_updated_date: a.last_updated_date,
            })
            .collect(),
        truncated: page.next.is_some(),
        next_marker: page.next.as_deref().map(marker_to),
    })
}
