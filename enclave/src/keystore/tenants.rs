//! Tenants: sealed records under `tenant/<tenant id>`, created by the
//! operator (or at boot for the dev tenant), enabled or disabled, each with
//! an optional default policy module.
//!
//! These functions take the store and the record locks rather than the
//! request context: boot creates the dev tenant before any request exists,
//! and the request context ([`crate::context`]) is built from what boot
//! returns, so this module must not depend on it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::credentials::{self, CredentialRecord, Role};
use crate::error::KmsError;
use crate::keys::hierarchy::{GENERATION_LEN, TenantGeneration};
use crate::keys::record::AttestationPolicy;
use crate::locks::RecordLocks;
use crate::nsm::{Nsm, NsmError};
use crate::store::{Records, StoreError};

/// Namespace of tenant records; record key = tenant id.
pub const NAMESPACE: &str = "tenant";

/// A tenant as sealed in the store.
#[derive(Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant_id: String,
    pub enabled: bool,
    pub created: i64,
    /// SHA-256 (hex) of the tenant's default policy module, if any.
    #[serde(default)]
    pub policy_module: Option<String>,
    /// The tenant's default attestation policy
    /// (`Keyward.UpdateTenantAttestationPolicy`): it applies to every key of
    /// the tenant without its own, and to GenerateRandom. Absent when none,
    /// so records without one keep their sealed bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationPolicy>,
    /// The tenant's generation (`keys::hierarchy::TenantGeneration`), drawn
    /// when it was created: part of every derivation of its keys. Always
    /// written; a record without one predates tenant generations and is
    /// refused ([`TenantRecord::generation`]), never derived from without it.
    #[serde(default)]
    generation: Option<TenantGeneration>,
}

impl TenantRecord {
    /// A new, enabled tenant of `generation` without a policy module.
    pub fn new(tenant_id: &str, created: i64, generation: TenantGeneration) -> Self {
        TenantRecord {
            tenant_id: tenant_id.to_owned(),
            enabled: true,
            created,
            policy_module: None,
            attestation: None,
            generation: Some(generation),
        }
    }

    /// The tenant's generation; a record written before tenant generations
    /// existed is refused, with how to start fresh.
    pub fn generation(&self) -> Result<TenantGeneration, StoreError> {
        self.generation
            .ok_or_else(|| StoreError::NoGeneration(format!("{NAMESPACE}/{}", self.tenant_id)))
    }
}

/// A fresh tenant generation from the enclave's random source (the NSM in
/// nitro mode).
pub fn new_generation(nsm: &dyn Nsm) -> Result<TenantGeneration, NsmError> {
    let mut bytes = [0u8; GENERATION_LEN];
    nsm.fill_random(&mut bytes)?;
    Ok(TenantGeneration::from_bytes(bytes))
}

/// The generation of tenant `tenant_id`, which must exist.
pub async fn generation(records: &Records<'_>, tenant_id: &str) -> Result<TenantGeneration, KmsError> {
    match get(records, tenant_id).await? {
        Some(tenant) => Ok(tenant.generation()?),
        None => Err(KmsError::InternalDetail(format!(
            "Tenant {tenant_id} has no record; none of its keys is opened."
        ))),
    }
}

fn lock_name(tenant_id: &str) -> String {
    format!("{NAMESPACE}/{tenant_id}")
}

/// The tenant record of `tenant_id`, if any; one without a generation
/// (an older data dir) is refused.
pub async fn get(records: &Records<'_>, tenant_id: &str) -> Result<Option<TenantRecord>, StoreError> {
    let tenant: Option<TenantRecord> = records.get(NAMESPACE, tenant_id).await?;
    if let Some(tenant) = &tenant {
        tenant.generation()?;
    }
    Ok(tenant)
}

/// Creates the record of `tenant_id` of `generation` (drawn with
/// [`new_generation`]) when it is missing (boot, for the dev tenant).
pub async fn ensure(
    records: &Records<'_>,
    tenant_id: &str,
    now: i64,
    generation: TenantGeneration,
) -> Result<(), StoreError> {
    if get(records, tenant_id).await?.is_none() {
        records
            .put(NAMESPACE, tenant_id, &TenantRecord::new(tenant_id, now, generation))
            .await?;
    }
    Ok(())
}

/// A new tenant's first access key; the secret exists only in this answer.
pub struct NewTenant {
    pub tenant_id: String,
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
}

/// Creates tenant `tenant_id` (a valid id) of a fresh generation drawn from
/// `nsm`, and its first KeyAdmin access key.
pub async fn create(
    records: &Records<'_>,
    locks: &RecordLocks,
    nsm: &dyn Nsm,
    tenant_id: &str,
    now: i64,
) -> Result<NewTenant, KmsError> {
    let _guard = locks.lock(&lock_name(tenant_id)).await;
    if get(records, tenant_id).await?.is_some() {
        return Err(KmsError::AlreadyExists(format!("Tenant {tenant_id} already exists.")));
    }
    let generation = new_generation(nsm).map_err(|e| {
        tracing::error!(error = %e, "tenant generation");
        KmsError::Internal
    })?;
    let (access_key_id, secret) = credentials::generate_access_key();
    let credential = CredentialRecord {
        access_key_id: access_key_id.clone(),
        tenant: tenant_id.to_owned(),
        secret_access_key: secret.as_bytes().to_vec(),
        roles: vec![Role::KeyAdmin],
        created: now,
    };
    credentials::store_credential(records, &credential).await?;
    records
        .put(NAMESPACE, tenant_id, &TenantRecord::new(tenant_id, now, generation))
        .await?;
    tracing::info!(tenant = %tenant_id, access_key_id = %access_key_id, "tenant created");
    Ok(NewTenant {
        tenant_id: tenant_id.to_owned(),
        access_key_id,
        secret_access_key: secret,
    })
}

/// One page of tenants in id order, after `after`.
pub struct TenantPage {
    pub tenants: Vec<TenantRecord>,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
}

/// At most `limit` tenants after the record key `after`.
pub async fn list(records: &Records<'_>, after: Option<&str>, limit: u32) -> Result<TenantPage, KmsError> {
    let mut page: Vec<(String, TenantRecord)> = records.list(NAMESPACE, "", after, limit.saturating_add(1)).await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next = if truncated {
        page.last().map(|(name, _)| name.clone())
    } else {
        None
    };
    Ok(TenantPage {
        tenants: page.into_iter().map(|(_, t)| t).collect(),
        next,
    })
}

/// Enables or disables tenant `tenant_id`.
pub async fn set_enabled(
    records: &Records<'_>,
    locks: &RecordLocks,
    tenant_id: &str,
    enabled: bool,
) -> Result<(), KmsError> {
    let _guard = locks.lock(&lock_name(tenant_id)).await;
    let Some(mut tenant) = get(records, tenant_id).await? else {
        return Err(KmsError::NotFound(format!("Tenant {tenant_id} does not exist.")));
    };
    tenant.enabled = enabled;
    records.put(NAMESPACE, tenant_id, &tenant).await?;
    tracing::info!(tenant = %tenant_id, enabled, "tenant state changed");
    Ok(())
}

/// Sets (or with `None` removes) the default policy module of tenant
/// `tenant_id`, which must exist; whether it had one before.
pub async fn set_policy_module(
    records: &Records<'_>,
    locks: &RecordLocks,
    tenant_id: &str,
    sha256_hex: Option<String>,
) -> Result<bool, KmsError> {
    let _guard = locks.lock(&lock_name(tenant_id)).await;
    let Some(mut record) = get(records, tenant_id).await? else {
        return Err(KmsError::Internal);
    };
    let had = record.policy_module.is_some();
    record.policy_module = sha256_hex;
    records.put(NAMESPACE, tenant_id, &record).await?;
    Ok(had)
}

/// Sets (or with `None` removes) the default attestation policy of tenant
/// `tenant_id`, which must exist.
pub async fn set_attestation(
    records: &Records<'_>,
    locks: &RecordLocks,
    tenant_id: &str,
    policy: Option<AttestationPolicy>,
) -> Result<(), KmsError> {
    let _guard = locks.lock(&lock_name(tenant_id)).await;
    let Some(mut record) = get(records, tenant_id).await? else {
        return Err(KmsError::Internal);
    };
    record.attestation = policy;
    records.put(NAMESPACE, tenant_id, &record).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The sealed form is a CBOR map of exactly these fields (the generation
    /// a CBOR byte string); records written before tenant policy modules
    /// existed still read, but one without a generation is refused.
    #[test]
    fn the_sealed_encoding_is_unchanged() {
        let record = TenantRecord {
            tenant_id: "111122223333".into(),
            enabled: false,
            created: 7,
            policy_module: Some("ab".into()),
            attestation: None,
            generation: Some(TenantGeneration::from_bytes([9; GENERATION_LEN])),
        };
        let bytes = serde_cbor::to_vec(&record).expect("encodes");
        let map: BTreeMap<String, serde_cbor::Value> = serde_cbor::from_slice(&bytes).expect("a map");
        let fields: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["created", "enabled", "generation", "policy_module", "tenant_id"]
        );
        assert_eq!(map["generation"], serde_cbor::Value::Bytes(vec![9; GENERATION_LEN]));

        let mut old = BTreeMap::new();
        old.insert("tenant_id", serde_cbor::Value::Text("111122223333".into()));
        old.insert("enabled", serde_cbor::Value::Bool(true));
        old.insert("created", serde_cbor::Value::Integer(5));
        let old: TenantRecord = serde_cbor::from_slice(&serde_cbor::to_vec(&old).expect("encodes")).expect("reads");
        assert!(old.enabled && old.created == 5 && old.policy_module.is_none());
        assert_eq!(old.tenant_id, "111122223333");
        assert!(old.attestation.is_none());
        // A record from before tenant generations is refused, never derived
        // from without one.
        let err = old.generation().err().expect("refused");
        assert!(matches!(err, StoreError::NoGeneration(_)));
        let message = err.to_string();
        assert!(message.contains("predates tenant generations"), "{message}");
        assert!(message.contains("to start fresh"), "{message}");
        // A record read back without a default attestation policy re-encodes
        // to the same bytes.
        let again: TenantRecord = serde_cbor::from_slice(&bytes).expect("reads");
        assert_eq!(serde_cbor::to_vec(&again).expect("encodes"), bytes);

        // With one, the policy is one more field.
        let with_policy = TenantRecord {
            attestation: Some(AttestationPolicy {
                require_recipient: true,
                allowed_pcrs: [(0, vec!["ab".repeat(48)])].into_iter().collect(),
            }),
            ..record
        };
        let bytes = serde_cbor::to_vec(&with_policy).expect("encodes");
        let map: BTreeMap<String, serde_cbor::Value> = serde_cbor::from_slice(&bytes).expect("a map");
        let fields: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "attestation",
                "created",
                "enabled",
                "generation",
                "policy_module",
                "tenant_id"
            ]
        );
        let back: TenantRecord = serde_cbor::from_slice(&bytes).expect("reads");
        assert_eq!(back.attestation, with_policy.attestation);
    }
}
