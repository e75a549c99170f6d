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

/// Creates a tenant (of a fresh generation, so its keys are its own even if
/// its id was used before) and its first KeyAdmin access key; the secret is
/// returned here once and never again.
pub async fn create_tenant(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TenantIdRequest = parse(body)?;
    let id = tenant_id(req.tenant_id)?;
    let now = ctx.now.unix_timestamp();
    let created = tenants::create(&ctx.records, &ctx.enclave.locks, &*ctx.enclave.nsm, &id, now).await?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::tests::{ctx, enclave};
    use crate::store::MemoryStore;

    /// What clients see: the answers' fields, pages and errors.
    #[tokio::test]
    async fn tenants_are_created_listed_in_pages_and_disabled() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, crate::auth::OPERATOR).await;
        for id in ["111111111111", "222222222222", "333333333333"] {
            let out = create_tenant(&ctx, json!({ "TenantId": id })).await.expect("created");
            let fields: Vec<&String> = out.as_object().expect("object").keys().collect();
            assert_eq!(fields, ["AccessKeyId", "SecretAccessKey", "TenantId"]);
            assert_eq!(out["TenantId"], id);
            assert!(
                out["AccessKeyId"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("AKIA") && k.len() == 20)
            );
            assert_eq!(out["SecretAccessKey"].as_str().map(str::len), Some(40));
        }
        let again = create_tenant(&ctx, json!({ "TenantId": "111111111111" })).await;
        assert_eq!(again.expect_err("exists").aws_type(), "AlreadyExistsException");

        let first = list_tenants(&ctx, json!({ "Limit": 2 })).await.expect("listed");
        assert_eq!(first["Truncated"], true);
        assert_eq!(first["Tenants"].as_array().map(Vec::len), Some(2));
        let created = first["Tenants"][0]["CreationDate"].as_i64().expect("a date");
        assert_eq!(
            first["Tenants"][0],
            json!({ "TenantId": "111111111111", "Enabled": true, "CreationDate": created })
        );
        let marker = first["NextMarker"].as_str().expect("a marker");
        let second = list_tenants(&ctx, json!({ "Limit": 2, "Marker": marker }))
            .await
            .expect("listed");
        assert_eq!(second["Truncated"], false);
        assert!(second.get("NextMarker").is_none());
        assert_eq!(second["Tenants"][0]["TenantId"], "333333333333");

        let out = set_tenant_enabled(&ctx, json!({ "TenantId": "222222222222" }), false).await;
        assert_eq!(out.expect("disabled"), json!({}));
        let all = list_tenants(&ctx, json!({})).await.expect("listed");
        assert_eq!(all["Tenants"][1]["Enabled"], false);
        let missing = set_tenant_enabled(&ctx, json!({ "TenantId": "444444444444" }), true).await;
        assert_eq!(missing.expect_err("missing").aws_type(), "NotFoundException");
        let invalid = set_tenant_enabled(&ctx, json!({ "TenantId": "12" }), true).await;
        assert_eq!(invalid.expect_err("invalid").aws_type(), "ValidationException");
    }
}
