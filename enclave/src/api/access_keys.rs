//! A tenant's access keys (KeyAdmin only, own tenant only):
//! `Keyward.CreateAccessKey`, `ListAccessKeys`, `DeleteAccessKey`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{Empty, length, parse, render, required};
use crate::auth::credentials::Role;
use crate::context::Ctx;
use crate::keystore::credentials;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyRequest {
    role: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAccessKeyResponse<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    role: &'static str,
}

/// A new credential for the caller's tenant; the secret is returned once.
pub async fn create_access_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: CreateAccessKeyRequest = parse(body)?;
    let role_name = required("role", req.role)?;
    let role = Role::parse_tenant_role(&role_name)
        .ok_or_else(|| KmsError::validation("role", "Member must satisfy enum value set: [KeyAdmin, KeyUser]"))?;
    let created = credentials::create(ctx, role).await?;
    render(&CreateAccessKeyResponse {
        access_key_id: &created.access_key_id,
        secret_access_key: created.secret_access_key.as_str(),
        role: created.role.as_str(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccessKeysResponse<'a> {
    access_keys: Vec<AccessKeyEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AccessKeyEntry<'a> {
    access_key_id: &'a str,
    roles: Vec<&'static str>,
    creation_date: i64,
}

pub async fn list_access_keys(ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    let entries = credentials::list(ctx).await?;
    render(&ListAccessKeysResponse {
        access_keys: entries
            .iter()
            .map(|e| AccessKeyEntry {
                access_key_id: &e.access_key_id,
                roles: e.roles.iter().map(|r| r.as_str()).collect(),
                creation_date: e.created,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAccessKeyRequest {
    access_key_id: Option<String>,
}

pub async fn delete_access_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DeleteAccessKeyRequest = parse(body)?;
    let id = required("accessKeyId", req.access_key_id)?;
    length("accessKeyId", id.len(), 1, 128)?;
    credentials::delete(ctx, &id).await?;
    render(&Empty {})
}
