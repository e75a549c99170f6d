//! Alias records: sealed under `alias/<tenant>/<alias name>`; one tenant
//! never sees another's.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::KmsError;
use crate::store::{Records, StoreError};

pub const NAMESPACE: &str = "alias";

#[derive(Serialize, Deserialize)]
pub struct AliasRecord {
    pub alias_name: String,
    pub target_key_id: Uuid,
    pub creation_date: i64,
    pub last_updated_date: i64,
}

pub fn record_key(tenant: &str, alias_name: &str) -> String {
    format!("{tenant}/{alias_name}")
}

pub fn alias_arn(region: &str, tenant: &str, alias_name: &str) -> String {
    format!("arn:aws:kms:{region}:{tenant}:{alias_name}")
}

/// The key an alias of `tenant`'s points to.
pub async fn lookup(records: &Records<'_>, tenant: &str, alias_name: &str) -> Result<Option<Uuid>, KmsError> {
    if alias_name.len() > 256 {
        return Ok(None);
    }
    let rec: Option<AliasRecord> = records.get(NAMESPACE, &record_key(tenant, alias_name)).await?;
    Ok(rec.filter(|r| r.alias_name == alias_name).map(|r| r.target_key_id))
}

/// Deletes every alias of `tenant` that points to `key_id` (the key is being destroyed).
pub async fn delete_all_for(records: &Records<'_>, tenant: &str, key_id: &Uuid) -> Result<(), StoreError> {
    let prefix = format!("{tenant}/");
    let mut after: Option<String> = None;
    loop {
        let page: Vec<(String, AliasRecord)> = records
            .list(NAMESPACE, &prefix, after.as_deref(), crate::store::MAX_LIST)
            .await?;
        let Some((last, _)) = page.last() else { return Ok(()) };
        after = Some(last.clone());
        for (name, alias) in page {
            if alias.target_key_id == *key_id {
                records.delete(NAMESPACE, &name).await?;
            }
        }
    }
}
