//! Key management: CreateKey, DescribeKey, ListKeys.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use super::error::KmsError;
use super::params::{self, key_arn, length, parse, required, resolve_key_id};
use crate::keys::record::{self, KeyRecord, KeyState};
use crate::secret::Key256;

/// Key specs AWS KMS knows; only the supported ones can be created.
const KNOWN_KEY_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
];
const KNOWN_KEY_USAGES: &[&str] = &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"];
const KNOWN_ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyRequest {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    origin: Option<String>,
    multi_region: Option<bool>,
    tags: Option<Vec<Tag>>,
    policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    tag_key: Option<String>,
    tag_value: Option<String>,
}

pub async fn create_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: CreateKeyRequest = parse(body)?;
    let description = req.description.unwrap_or_default();
    length("description", description.chars().count(), 0, 8192)?;
    if let Some(policy) = &req.policy {
        length("policy", policy.len(), 1, 32768)?;
    }
    let spec = match (req.key_spec, req.customer_master_key_spec) {
        (Some(a), Some(b)) if a != b => {
            return Err(KmsError::Validation(
                "KeySpec and CustomerMasterKeySpec must not both be set".into(),
            ));
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => "SYMMETRIC_DEFAULT".to_owned(),
    };
    if !KNOWN_KEY_SPECS.contains(&spec.as_str()) {
        return Err(KmsError::validation("keySpec", "Member must satisfy enum value set"));
    }
    let usage = req.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".to_owned());
    if !KNOWN_KEY_USAGES.contains(&usage.as_str()) {
        return Err(KmsError::validation("keyUsage", "Member must satisfy enum value set"));
    }
    let origin = req.origin.unwrap_or_else(|| "AWS_KMS".to_owned());
    if !KNOWN_ORIGINS.contains(&origin.as_str()) {
        return Err(KmsError::validation("origin", "Member must satisfy enum value set"));
    }
    if spec != "SYMMETRIC_DEFAULT" {
        return Err(KmsError::UnsupportedOperation(format!(
            "KeySpec {spec} is not supported yet."
        )));
    }
    if usage != "ENCRYPT_DECRYPT" {
        return Err(KmsError::Validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec SYMMETRIC_DEFAULT"
        )));
    }
    if origin != "AWS_KMS" {
        return Err(KmsError::UnsupportedOperation(format!(
            "Origin {origin} is not supported yet."
        )));
    }
    if req.multi_region == Some(true) {
        return Err(KmsError::UnsupportedOperation(
            "Multi-Region keys are not supported.".into(),
        ));
    }
    let mut tags = BTreeMap::new();
    for tag in req.tags.unwrap_or_default() {
        let key = required("tags.member.tagKey", tag.tag_key)?;
        let value = required("tags.member.tagValue", tag.tag_value)?;
        length("tagKey", key.chars().count(), 1, 128)?;
        length("tagValue", value.chars().count(), 0, 256)?;
        tags.insert(key, value);
    }

    let key_id = Uuid::new_v4();
    let tenant = ctx.principal.tenant.clone();
    let arn = key_arn(ctx.region(), &tenant, &key_id);
    let mut rec = KeyRecord {
        key_id,
        tenant: tenant.clone(),
        arn,
        description,
        creation_date: ctx.now.unix_timestamp(),
        state: KeyState::Enabled,
        key_spec: spec,
        key_usage: usage,
        origin,
        versions: Vec::new(),
        tags,
    };
    let kek = ctx.keyring.hierarchy.tenant_kek(&tenant);
    rec.push_version(&kek, &Key256::generate());
    ctx.records
        .put(record::NAMESPACE, &record::record_key(&tenant, &key_id), &rec)
        .await?;
    tracing::info!(key_id = %key_id, "key created");
    Ok(json!({ "KeyMetadata": metadata(&rec) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyRequest {
    key_id: Option<String>,
}

pub async fn describe_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeKeyRequest = parse(body)?;
    let key_id = resolve_key_id(ctx, &required("keyId", req.key_id)?)?;
    let rec = params::load_key(ctx, &key_id).await?;
    Ok(json!({ "KeyMetadata": metadata(&rec) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysRequest {
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn list_keys(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ListKeysRequest = parse(body)?;
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(KmsError::validation(
            "limit",
            "Member must have value between 1 and 1000 (inclusive)",
        ));
    }
    let tenant = &ctx.principal.tenant;
    let prefix = format!("{tenant}/");
    let start_after = match &req.marker {
        Some(marker) => {
            length("marker", marker.len(), 1, 1024)?;
            let id = Uuid::try_parse(marker)
                .map_err(|_| KmsError::InvalidMarker("The marker is not one that ListKeys returned.".into()))?;
            Some(record::record_key(tenant, &id))
        }
        None => None,
    };
    // One extra entry tells whether another page exists.
    let mut page: Vec<(String, KeyRecord)> = ctx
        .records
        .list(record::NAMESPACE, &prefix, start_after.as_deref(), limit as u32 + 1)
        .await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let keys: Vec<Value> = page
        .iter()
        .map(|(_, rec)| json!({ "KeyId": rec.key_id.to_string(), "KeyArn": rec.arn }))
        .collect();
    let mut out = json!({ "Keys": keys, "Truncated": truncated });
    if truncated && let Some((_, last)) = page.last() {
        out["NextMarker"] = Value::String(last.key_id.to_string());
    }
    Ok(out)
}

/// AWS's `KeyMetadata` structure.
pub fn metadata(rec: &KeyRecord) -> Value {
    json!({
        "AWSAccountId": rec.tenant,
        "KeyId": rec.key_id.to_string(),
        "Arn": rec.arn,
        "CreationDate": rec.creation_date,
        "Enabled": rec.state == KeyState::Enabled,
        "Description": rec.description,
        "KeyUsage": rec.key_usage,
        "KeyState": rec.state.as_str(),
        "Origin": rec.origin,
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": rec.key_spec,
        "KeySpec": rec.key_spec,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    })
}
