//! Tenant administration (operator only): `Keyward.CreateTenant`,
//! `ListTenants`, `DisableTenant`, `EnableTenant`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{limit, marker_from, marker_to, parse, required};
use crate::auth::credentials::{self, CredentialRecord, Role};
use crate::bootstrap::{TENANT_NAMESPACE, TenantRecord};
use crate::config::valid_tenant_id;
use crate::context::Ctx;

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

/// Creates a tenant and its first KeyAdmin access key; the secret is returned
/// here once and never again.
pub async fn create_tenant(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TenantIdRequest = parse(body)?;
    let id = tenant_id(req.tenant_id)?;
    let _guard = ctx.enclave.locks.lock(&format!("{TENANT_NAMESPACE}/{id}")).await;
    if ctx.records.get::<TenantRecord>(TENANT_NAMESPACE, &id).await?.is_some() {
        return Err(KmsError::AlreadyExists(format!("Tenant {id} already exists.")));
    }
    let now = ctx.now.unix_timestamp();
    let (access_key_id, secret) = credentials::generate_access_key();
    let credential = CredentialRecord {
        access_key_id: access_key_id.clone(),
        tenant: id.clone(),
        secret_access_key: secret.as_bytes().to_vec(),
        roles: vec![Role::KeyAdmin],
        created: now,
    };
    credentials::store_credential(&ctx.records, &credential).await?;
    ctx.records
        .put(
            TENANT_NAMESPACE,
            &id,
            &TenantRecord {
                tenant_id: id.clone(),
                enabled: true,
                created: now,
                policy_module: None,
            },
        )
        .await?;
    tracing::info!(tenant = %id, access_key_id = %access_key_id, "tenant created");
    Ok(json!({ "TenantId": id, "AccessKeyId": access_key_id, "SecretAccessKey": secret.as_str() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTenantsRequest {
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn list_tenants(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListTenantsRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)?;
    let after = marker_from(req.marker.as_deref())?;
    let mut page: Vec<(String, TenantRecord)> = ctx
        .records
        .list(TENANT_NAMESPACE, "", after.as_deref(), limit + 1)
        .await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let tenants: Vec<Value> = page
        .iter()
        .map(|(_, t)| json!({ "TenantId": t.tenant_id, "Enabled": t.enabled, "CreationDate": t.created }))
        .collect();
    let mut out = json!({ "Tenants": tenants, "Truncated": truncated });
    if truncated && let Some((last, _)) = page.last() {
        out["NextMarker"] = json!(marker_to(last));
    }
    Ok(out)
}

pub async fn set_tenant_enabled(ctx: &Ctx<'_>, body: Value, enabled: bool) -> Result<Value, KmsError> {
    let req: TenantIdRequest = parse(body)?;
    let id = tenant_id(req.tenant_id)?;
    let _guard = ctx.enclave.locks.lock(&format!("{TENANT_NAMESPACE}/{id}")).await;
    let Some(mut tenant) = ctx.records.get::<TenantRecord>(TENANT_NAMESPACE, &id).await? else {
        return Err(KmsError::NotFound(format!("Tenant {id} does not exist.")));
    };
    tenant.enabled = enabled;
    ctx.records.put(TENANT_NAMESPACE, &id, &tenant).await?;
    tracing::info!(tenant = %id, enabled, "tenant state changed");
    Ok(json!({}))
}
