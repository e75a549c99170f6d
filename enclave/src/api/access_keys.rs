//! A tenant's access keys (KeyAdmin only, own tenant only):
//! `Keyward.CreateAccessKey`, `ListAccessKeys`, `DeleteAccessKey`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{parse, required};
use crate::auth::credentials::{self, CredentialRecord, INDEX_NAMESPACE, IndexEntry, Role, index_key};
use crate::context::Ctx;

/// Access keys per tenant at most.
pub const MAX_ACCESS_KEYS: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyRequest {
    role: Option<String>,
}

async fn index(ctx: &Ctx<'_>) -> Result<Vec<IndexEntry>, KmsError> {
    let prefix = format!("{}/", ctx.principal.tenant);
    let entries: Vec<(String, IndexEntry)> = ctx
        .records
        .list(INDEX_NAMESPACE, &prefix, None, crate::store::MAX_LIST)
        .await?;
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// A new credential for the caller's tenant; the secret is returned once.
pub async fn create_access_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: CreateAccessKeyRequest = parse(body)?;
    let role_name = required("role", req.role)?;
    let role = Role::parse_tenant_role(&role_name)
        .ok_or_else(|| KmsError::validation("role", "Member must satisfy enum value set: [KeyAdmin, KeyUser]"))?;
    let tenant = ctx.principal.tenant.clone();
    let _guard = ctx.enclave.locks.lock(&format!("{INDEX_NAMESPACE}/{tenant}")).await;
    if index(ctx).await?.len() >= MAX_ACCESS_KEYS {
        return Err(KmsError::LimitExceeded(format!(
            "A tenant can have at most {MAX_ACCESS_KEYS} access keys."
        )));
    }
    let (access_key_id, secret) = credentials::generate_access_key();
    let record = CredentialRecord {
        access_key_id: access_key_id.clone(),
        tenant,
        secret_access_key: secret.as_bytes().to_vec(),
        roles: vec![role],
        created: ctx.now.unix_timestamp(),
    };
    credentials::store_credential(&ctx.records, &record).await?;
    tracing::info!(access_key_id = %access_key_id, role = role.as_str(), "access key created");
    Ok(json!({ "AccessKeyId": access_key_id, "SecretAccessKey": secret.as_str(), "Role": role.as_str() }))
}

pub async fn list_access_keys(ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    let keys: Vec<Value> = index(ctx)
        .await?
        .iter()
        .map(|e| {
            json!({
                "AccessKeyId": e.access_key_id,
                "Roles": e.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "CreationDate": e.created,
            })
        })
        .collect();
    Ok(json!({ "AccessKeys": keys }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAccessKeyRequest {
    access_key_id: Option<String>,
}

pub async fn delete_access_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DeleteAccessKeyRequest = parse(body)?;
    let id = required("accessKeyId", req.access_key_id)?;
    super::params::length("accessKeyId", id.len(), 1, 128)?;
    let tenant = ctx.principal.tenant.clone();
    let _guard = ctx.enclave.locks.lock(&format!("{INDEX_NAMESPACE}/{tenant}")).await;
    if ctx
        .records
        .get::<IndexEntry>(INDEX_NAMESPACE, &index_key(&tenant, &id))
        .await?
        .is_none()
    {
        return Err(KmsError::NotFound(format!(
            "Access key {} does not exist.",
            super::params::printable(&id)
        )));
    }
    credentials::delete_credential(&ctx.records, &tenant, &id).await?;
    ctx.enclave.credentials.evict(&id);
    tracing::info!(access_key_id = %id, "access key deleted");
    Ok(json!({}))
}
