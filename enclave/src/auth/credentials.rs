//! Access keys: sealed records in the host store, cached in enclave memory
//! together with their SigV4 signing keys (one derivation per key and day).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::sigv4::SigningKey;
use crate::secret::SecretBytes;
use crate::store::{Records, StoreError};

/// Store namespace of credential records; record key = access key id.
pub const NAMESPACE: &str = "cred";

/// What a credential may do inside its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
#[non_exhaustive]
pub enum Role {
    KeyAdmin,
    KeyUser,
    /// The SaaS operator: tenant administration only, never key use.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::KeyAdmin => "KeyAdmin",
            Role::KeyUser => "KeyUser",
            Role::Operator => "Operator",
        }
    }

    /// A tenant role named in a request (`Operator` is never granted by request).
    pub fn parse_tenant_role(name: &str) -> Option<Role> {
        match name {
            "KeyAdmin" => Some(Role::KeyAdmin),
            "KeyUser" => Some(Role::KeyUser),
            _ => None,
        }
    }
}

/// The sealed form of an access key. Holds the secret: no `Debug`, no `Clone`,
/// zeroized on drop; it exists only to be sealed and opened.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CredentialRecord {
    pub access_key_id: String,
    pub tenant: String,
    #[serde(with = "serde_bytes")]
    pub secret_access_key: Vec<u8>,
    pub roles: Vec<Role>,
    pub created: i64,
}

/// A credential as the enclave uses it.
pub struct Credential {
    pub tenant: String,
    pub roles: Vec<Role>,
    secret: SecretBytes,
    signing_key: Mutex<Option<(String, Arc<SigningKey>)>>,
}

impl Credential {
    fn from_record(record: &CredentialRecord) -> Self {
        Credential {
            tenant: record.tenant.clone(),
            roles: record.roles.clone(),
            secret: SecretBytes::new(record.secret_access_key.clone()),
            signing_key: Mutex::new(None),
        }
    }

    /// The SigV4 signing key for this scope, derived once per scope.
    pub fn signing_key(&self, date: &str, region: &str, service: &str) -> Arc<SigningKey> {
        let scope = format!("{date}/{region}/{service}");
        let mut cached = self
            .signing_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, key)) = cached.as_ref()
            && *s == scope
        {
            return Arc::clone(key);
        }
        let key = Arc::new(SigningKey::derive(self.secret.expose(), date, region, service));
        *cached = Some((scope, Arc::clone(&key)));
        key
    }
}

/// Access key id → credential (with the store version of its record),
/// filled from sealed records on first use. Every lookup reads the record
/// through the request's [`Records`] (served from the enclave's record cache
/// while the store confirmed it recently, see `store/cache.rs`), so a
/// credential deleted or replaced on another node stops working here within
/// that bound; what this map saves is the derivation, not the check.
#[derive(Default)]
pub struct CredentialCache {
    map: Mutex<HashMap<String, (u64, Arc<Credential>)>>,
}

/// Longest access key id accepted (AWS: 16–128 characters).
const MAX_ACCESS_KEY_ID: usize = 128;

impl CredentialCache {
    pub async fn lookup(
        &self,
        access_key_id: &str,
        records: &Records<'_>,
    ) -> Result<Option<Arc<Credential>>, StoreError> {
        if access_key_id.is_empty()
            || access_key_id.len() > MAX_ACCESS_KEY_ID
            || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(None);
        }
        let (version, record) = records
            .get_versioned::<CredentialRecord>(NAMESPACE, access_key_id)
            .await?;
        let Some(record) = record else {
            self.evict(access_key_id);
            return Ok(None);
        };
        if let Some((cached, found)) = self.lock().get(access_key_id)
            && *cached == version
        {
            return Ok(Some(Arc::clone(found)));
        }
        if record.access_key_id != access_key_id {
            return Err(StoreError::Decode(format!(
                "credential record {access_key_id} names another key"
            )));
        }
        let credential = Arc::new(Credential::from_record(&record));
        let mut map = self.lock();
        if map.len() > 16_384 {
            map.clear();
        }
        map.insert(access_key_id.to_owned(), (version, Arc::clone(&credential)));
        Ok(Some(credential))
    }

    /// Forgets a credential (after it is deleted or replaced).
    pub fn evict(&self, access_key_id: &str) {
        self.lock().remove(access_key_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Credential>)>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Store namespace of the per-tenant index of access keys; record key
/// `<tenant>/<access key id>`.
pub const INDEX_NAMESPACE: &str = "tenant-cred";

/// One entry of a tenant's access-key index (no secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    pub access_key_id: String,
    pub roles: Vec<Role>,
    pub created: i64,
}

pub fn index_key(tenant: &str, access_key_id: &str) -> String {
    format!("{tenant}/{access_key_id}")
}

/// A fresh access key pair: `AKIA` + 16 base-32 characters, and a 40
/// character secret, both from the OS CSPRNG.
pub fn generate_access_key() -> (String, zeroize::Zeroizing<String>) {
    use rand::Rng;
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rngs::OsRng;
    let id: String = (0..16).map(|_| char::from(ID[rng.gen_range(0..ID.len())])).collect();
    let secret: String = (0..40)
        .map(|_| char::from(SECRET[rng.gen_range(0..SECRET.len())]))
        .collect();
    (format!("AKIA{id}"), zeroize::Zeroizing::new(secret))
}

/// Stores a credential and its index entry (durable when `Ok`).
pub async fn store_credential(records: &Records<'_>, record: &CredentialRecord) -> Result<(), StoreError> {
    records.put(NAMESPACE, &record.access_key_id, record).await?;
    let entry = IndexEntry {
        access_key_id: record.access_key_id.clone(),
        roles: record.roles.clone(),
        created: record.created,
    };
    records
        .put(
            INDEX_NAMESPACE,
            &index_key(&record.tenant, &record.access_key_id),
            &entry,
        )
        .await
}

/// Deletes a credential and its index entry.
pub async fn delete_credential(records: &Records<'_>, tenant: &str, access_key_id: &str) -> Result<(), StoreError> {
    records.delete(NAMESPACE, access_key_id).await?;
    records.delete(INDEX_NAMESPACE, &index_key(tenant, access_key_id)).await
}
