//! Keys: CreateKey, DescribeKey, ListKeys, and AWS's `KeyMetadata`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::KmsError;
use super::params::{self, key_arn, length, parse, required};
use super::tags;
use crate::context::Ctx;
use crate::keys::record::{self, KeyRecord, KeyState, Origin};
use crate::keys::spec::{AWS_KEY_SPECS, KeySpec, KeyUsage};

/// The answer to CreateKey with a `Policy` (issue 15).
pub const POLICY_UNSUPPORTED: &str = "Key policy documents are not supported yet; create the key without a Policy \
     (Keyward authorizes by role, and policy modules decide per key: Keyward.PutKeyPolicyModule).";

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
    tags: Option<Vec<tags::Tag>>,
    policy: Option<String>,
    /// Keyward extension: release only to attested recipients.
    attestation_policy: Option<super::attestation_ops::PolicyParam>,
}

pub async fn create_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: CreateKeyRequest = parse(body)?;
    let description = req.description.unwrap_or_default();
    length("description", description.chars().count(), 0, 8192)?;
    if let Some(policy) = &req.policy {
        length("policy", policy.len(), 1, 32768)?;
        // Never silently dropped: until key policies exist, a key is not
        // created under a policy the caller believes it has.
        return Err(KmsError::UnsupportedOperation(POLICY_UNSUPPORTED.into()));
    }
    let spec_name = match (req.key_spec, req.customer_master_key_spec) {
        (Some(a), Some(b)) if a != b => {
            return Err(KmsError::Validation(
                "KeySpec and CustomerMasterKeySpec must not both be set".into(),
            ));
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => "SYMMETRIC_DEFAULT".to_owned(),
    };
    if !AWS_KEY_SPECS.contains(&spec_name.as_str()) {
        return Err(KmsError::validation("keySpec", "Member must satisfy enum value set"));
    }
    let usage = match req.key_usage.as_deref() {
        None => None,
        Some(name) => Some(
            KeyUsage::parse(name)
                .ok_or_else(|| KmsError::validation("keyUsage", "Member must satisfy enum value set"))?,
        ),
    };
    let origin_name = req.origin.unwrap_or_else(|| "AWS_KMS".to_owned());
    if !KNOWN_ORIGINS.contains(&origin_name.as_str()) {
        return Err(KmsError::validation("origin", "Member must satisfy enum value set"));
    }
    let Some(spec) = KeySpec::parse(&spec_name) else {
        return Err(KmsError::UnsupportedOperation(format!(
            "KeySpec {spec_name} is not supported."
        )));
    };
    let usage = usage.unwrap_or(spec.usages()[0]);
    if !spec.usages().contains(&usage) {
        return Err(KmsError::Validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec {spec_name}"
        )));
    }
    let Some(origin) = Origin::parse(&origin_name) else {
        return Err(KmsError::UnsupportedOperation(format!(
            "Origin {origin_name} is not supported."
        )));
    };
    let external = origin == Origin::External;
    if external && spec != KeySpec::SymmetricDefault {
        return Err(KmsError::UnsupportedOperation(format!(
            "Keyward imports SYMMETRIC_DEFAULT key material only, not {spec_name}."
        )));
    }
    if req.multi_region == Some(true) {
        return Err(KmsError::UnsupportedOperation(
            "Multi-Region keys are not supported.".into(),
        ));
    }
    let attestation = match req.attestation_policy {
        Some(p) => super::attestation_ops::policy(p)?,
        None => None,
    };
    let tags: BTreeMap<String, String> = tags::validate(req.tags.unwrap_or_default())?.into_iter().collect();
    if tags.len() > tags::MAX_TAGS {
        return Err(KmsError::LimitExceeded(format!(
            "A key can have at most {} tags.",
            tags::MAX_TAGS
        )));
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
        // BYOK keys have no material until ImportKeyMaterial.
        state: if external {
            KeyState::PendingImport
        } else {
            KeyState::Enabled
        },
        key_spec: spec,
        key_usage: usage,
        origin,
        versions: Vec::new(),
        tags,
        deletion_date: None,
        rotation_period_days: None,
        next_rotation_date: None,
        rotations: Vec::new(),
        attestation,
        policy_module: None,
        expiration_model: None,
        valid_to: None,
        material_fingerprint: None,
    };
    if !external {
        let kek = ctx.keyring.hierarchy.tenant_kek(&tenant);
        rec.push_version(&kek, spec.generate().expose()).map_err(|e| {
            tracing::error!(error = %e, "new key material");
            KmsError::Internal
        })?;
    }
    params::save_key(ctx, &rec).await?;
    tracing::info!(key_id = %key_id, key_spec = %rec.key_spec, "key created");
    Ok(json!({ "KeyMetadata": metadata(&rec) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyRequest {
    key_id: Option<String>,
}

pub async fn describe_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeKeyRequest = parse(body)?;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
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
    let limit = params::limit(req.limit, 100, 1000)?;
    let tenant = &ctx.principal.tenant;
    let prefix = format!("{tenant}/");
    let start_after = params::marker_from(req.marker.as_deref())?;
    if start_after.as_ref().is_some_and(|m| !m.starts_with(&prefix)) {
        return Err(KmsError::InvalidMarker(
            "The marker is not one ListKeys returned.".into(),
        ));
    }
    let now = ctx.now.unix_timestamp();
    // One extra entry tells whether another page exists. Keys past their
    // deletion date are already gone for the caller (the sweep removes them).
    let mut page: Vec<(String, KeyRecord)> = ctx
        .records
        .list(record::NAMESPACE, &prefix, start_after.as_deref(), limit + 1)
        .await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let keys: Vec<Value> = page
        .iter()
        .filter(|(_, rec)| !(rec.state == KeyState::PendingDeletion && rec.deletion_date.is_some_and(|d| d <= now)))
        .map(|(_, rec)| json!({ "KeyId": rec.key_id.to_string(), "KeyArn": rec.arn }))
        .collect();
    let mut out = json!({ "Keys": keys, "Truncated": truncated });
    if truncated && let Some((last, _)) = page.last() {
        out["NextMarker"] = Value::String(params::marker_to(last));
    }
    Ok(out)
}

/// AWS's `KeyMetadata` structure.
pub fn metadata(rec: &KeyRecord) -> Value {
    let mut m = json!({
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
        "MultiRegion": false,
    });
    match rec.key_usage {
        KeyUsage::EncryptDecrypt => m["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]),
        KeyUsage::SignVerify => m["SigningAlgorithms"] = json!(["ECDSA_SHA_256"]),
        KeyUsage::KeyAgreement => m["KeyAgreementAlgorithms"] = json!(["ECDH"]),
        KeyUsage::GenerateVerifyMac => {
            if let Some(alg) = rec.key_spec.mac_algorithm() {
                m["MacAlgorithms"] = json!([alg]);
            }
        }
    }
    if let Some(date) = rec.deletion_date {
        m["DeletionDate"] = json!(date);
    }
    if let Some(model) = &rec.expiration_model {
        m["ExpirationModel"] = json!(model);
    }
    if let Some(valid_to) = rec.valid_to {
        m["ValidTo"] = json!(valid_to);
    }
    m
}
