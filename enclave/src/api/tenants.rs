//! Tenant administration (operator only): `Keyward.CreateTenant`,
//! `ListTenants`, `DisableTenant`, `EnableTenant`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{Empty, limit, marker_from, marker_to, parse, render, required};
use crate::config::valid_tenant_id;
use crate::context::Ctx;
use crate::keystore::tenants;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TenantIdRequest {
    tenant_id: Option<String>,
}

fn tenant_id(value: Option<String>) -> Result<String, KmsError> {
    let id = required("tenantId", value)?;
    if !valid_tenant_id(&id) {
        return Err(KmsError::validation("tenantId", "Member must be 12 decimal digits"));
    }
    Ok(id)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateTenantResponse<'a> {
    tenant_id: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
}

/// Creates a tenant and its first KeyAdmin access key; the secret is returned
/// here once and never again.
pub async fn create_tenant(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TenantIdRequest = parse(body)?;
    let id = tenant_id(req.tenant_id)?;
    let created = tenants::create(&ctx.records, &ctx.enclave.locks, &id, ctx.now.unix_timestamp()).await?;
    render(&CreateTenantResponse {
        tenant_id: &created.tenant_id,
        access_key_id: &created.access_key_id,
        secret_access_key: created.secret_access_key.as_str(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTenantsRequest {
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListTenantsResponse<'a> {
    tenants: Vec<TenantEntry<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TenantEntry<'a> {
    tenant_id: &'a str,
    enabled: bool,
    creation_date: i64,
}

pub async fn list_tenants(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListTenantsRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)?;
    let after = marker_from(req.marker.as_deref())?;
    let page = tenants::list(&ctx.records, after.as_deref(), limit).await?;
    render(&ListTenantsResponse {
        tenants: page
            .tenants
            .iter()
            .map(|t| TenantEntry {
                tenant_id: &t.tenant_id,
                enabled: t.enabled,
                creation_date: t.created,
            })
            .collect(),
        truncated: page.next.is_some(),
        next_marker: page.next.as_deref().map(marker_to),
    })
}

/// `DisableTenant` (`enabled` false) and `EnableTenant`.
pub async fn set_tenant_enabled(ctx: &Ctx<'_>, body: Value, enabled: bool) -> Result<Value, KmsError> {
    let req: TenantIdRequest = parse(body)?;
    let id = tenant_id(req.tenant_id)?;
    tenants::set_enabled(&ctx.records, &ctx.enclave.locks, &id, enabled).await?;
    render(&Empty {})
}
