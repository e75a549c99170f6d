//! A tenant's access keys, managed by its KeyAdmins: create, list, delete.
//! The records and the cache are `auth::credentials`; this is what a request
//! may do to them, always within the caller's own tenant.

use zeroize::Zeroizing;

use crate::auth::credentials::{self, CredentialRecord, INDEX_NAMESPACE, IndexEntry, Role, index_key};
use crate::context::Ctx;
use crate::error::KmsError;

/// Access keys per tenant at most.
pub const MAX_ACCESS_KEYS: usize = 100;

/// A new access key; the secret exists only in this answer.
pub struct NewAccessKey {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub role: Role,
}

/// The caller's tenant's access keys (no secrets).
pub async fn list(ctx: &Ctx<'_>) -> Result<Vec<IndexEntry>, KmsError> {
    let prefix = format!("{}/", ctx.principal.tenant);
    let entries: Vec<(String, IndexEntry)> = ctx
        .records
        .list(INDEX_NAMESPACE, &prefix, None, crate::store::MAX_LIST)
        .await?;
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

fn lock_name(tenant: &str) -> String {
    format!("{INDEX_NAMESPACE}/{tenant}")
}

/// A new credential with `role` for the caller's tenant.
pub async fn create(ctx: &Ctx<'_>, role: Role) -> Result<NewAccessKey, KmsError> {
    let tenant = ctx.principal.tenant.clone();
    let _guard = ctx.enclave.locks.lock(&lock_name(&tenant)).await;
    if list(ctx).await?.len() >= MAX_ACCESS_KEYS {
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
    Ok(NewAccessKey {
        access_key_id,
        secret_access_key: secret,
        role,
    })
}

/// Deletes one of the caller's tenant's access keys; it stops
/// authenticating at once (the cache forgets it).
pub async fn delete(ctx: &Ctx<'_>, access_key_id: &str) -> Result<(), KmsError> {
    let tenant = ctx.principal.tenant.clone();
    let _guard = ctx.enclave.locks.lock(&lock_name(&tenant)).await;
    if ctx
        .records
        .get::<IndexEntry>(INDEX_NAMESPACE, &index_key(&tenant, access_key_id))
        .await?
        .is_none()
    {
        return Err(KmsError::NotFound(format!(
            "Access key {} does not exist.",
            crate::text::printable(access_key_id)
        )));
    }
    credentials::delete_credential(&ctx.records, &tenant, access_key_id).await?;
    ctx.enclave.credentials.evict(access_key_id);
    tracing::info!(access_key_id = %access_key_id, "access key deleted");
    Ok(())
}
