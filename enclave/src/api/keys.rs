//! Keys: CreateKey, DescribeKey, ListKeys, and AWS's `KeyMetadata`. The
//! domain side is [`crate::keystore::keys`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, length, parse, render, required};
use super::tags;
use crate::context::Ctx;
use crate::keys::record::{ExpirationModel, KeyRecord, KeyState, Origin};
use crate::keys::spec::{AWS_KEY_SPECS, KeySpec, KeyUsage};
use crate::keystore::{self, keys::NewKey};

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
    let rec = keystore::keys::create_key(
        ctx,
        NewKey {
            description,
            spec,
            usage,
            origin,
            tags,
            attestation,
        },
    )
    .await?;
    keystore::attestation::note_if_weak(ctx, rec.attestation.as_ref());
    render(&KeyMetadataResponse {
        key_metadata: KeyMetadata::of(&rec),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadataResponse<'a> {
    key_metadata: KeyMetadata<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyRequest {
    key_id: Option<String>,
}

pub async fn describe_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeKeyRequest = parse(body)?;
    let rec = keystore::keys::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    render(&KeyMetadataResponse {
        key_metadata: KeyMetadata::of(&rec),
    })
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
    let start_after = params::marker_from(req.marker.as_deref())?;
    let page = keystore::keys::list_keys(ctx, start_after, limit).await?;
    render(&ListKeysResponse {
        keys: page
            .keys
            .iter()
            .map(|(key_id, arn)| KeyListEntry {
                key_id: key_id.to_string(),
                key_arn: arn,
            })
            .collect(),
        truncated: page.next.is_some(),
        next_marker: page.next.as_deref().map(params::marker_to),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyListEntry<'a> {
    key_id: String,
    key_arn: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysResponse<'a> {
    keys: Vec<KeyListEntry<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

/// AWS's `KeyMetadata` structure.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata<'a> {
    #[serde(rename = "AWSAccountId")]
    aws_account_id: &'a str,
    key_id: String,
    arn: &'a str,
    creation_date: i64,
    enabled: bool,
    description: &'a str,
    key_usage: KeyUsage,
    key_state: KeyState,
    origin: Origin,
    key_manager: &'static str,
    customer_master_key_spec: KeySpec,
    key_spec: KeySpec,
    multi_region: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_agreement_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac_algorithms: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_model: Option<ExpirationModel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_to: Option<i64>,
}

impl<'a> KeyMetadata<'a> {
    pub fn of(rec: &'a KeyRecord) -> Self {
        let usage = rec.key_usage;
        let only = |wanted: KeyUsage, algorithm: &'static str| (usage == wanted).then_some([algorithm]);
        KeyMetadata {
            aws_account_id: &rec.tenant,
            key_id: rec.key_id.to_string(),
            arn: &rec.arn,
            creation_date: rec.creation_date,
            enabled: rec.state == KeyState::Enabled,
            description: &rec.description,
            key_usage: usage,
            key_state: rec.state,
            origin: rec.origin,
            key_manager: "CUSTOMER",
            customer_master_key_spec: rec.key_spec,
            key_spec: rec.key_spec,
            multi_region: false,
            encryption_algorithms: only(KeyUsage::EncryptDecrypt, "SYMMETRIC_DEFAULT"),
            signing_algorithms: only(KeyUsage::SignVerify, "ECDSA_SHA_256"),
            key_agreement_algorithms: only(KeyUsage::KeyAgreement, "ECDH"),
            mac_algorithms: if usage == KeyUsage::GenerateVerifyMac {
                rec.key_spec.mac_algorithm().map(|a| [a])
            } else {
                None
            },
            deletion_date: rec.deletion_date,
            expiration_model: rec.expiration_model,
            valid_to: rec.valid_to,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::record::test_record;

    /// `KeyMetadata` as it was rendered with `json!` before it was typed.
    fn untyped(rec: &KeyRecord) -> Value {
        let mut m = json!({
            "AWSAccountId": rec.tenant,
            "KeyId": rec.key_id.to_string(),
            "Arn": rec.arn,
            "CreationDate": rec.creation_date,
            "Enabled": rec.state == KeyState::Enabled,
            "Description": rec.description,
            "KeyUsage": rec.key_usage.as_str(),
            "KeyState": rec.state.as_str(),
            "Origin": rec.origin.as_str(),
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": rec.key_spec.as_str(),
            "KeySpec": rec.key_spec.as_str(),
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
        if let Some(model) = rec.expiration_model {
            m["ExpirationModel"] = json!(model.as_str());
        }
        if let Some(valid_to) = rec.valid_to {
            m["ValidTo"] = json!(valid_to);
        }
        m
    }

    #[test]
    fn typed_key_metadata_renders_as_before() {
        let cases = [
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt, Origin::AwsKms),
            (KeySpec::SymmetricDefault, KeyUsage::EncryptDecrypt, Origin::External),
            (KeySpec::EccNistP256, KeyUsage::SignVerify, Origin::AwsKms),
            (KeySpec::EccNistP256, KeyUsage::KeyAgreement, Origin::AwsKms),
            (KeySpec::Hmac224, KeyUsage::GenerateVerifyMac, Origin::AwsKms),
            (KeySpec::Hmac512, KeyUsage::GenerateVerifyMac, Origin::AwsKms),
        ];
        for (spec, usage, origin) in cases {
            for state in [
                KeyState::Enabled,
                KeyState::Disabled,
                KeyState::PendingDeletion,
                KeyState::PendingImport,
            ] {
                let mut rec = test_record("arn:aws:kms:us-east-1:111122223333:key/x");
                (rec.key_spec, rec.key_usage, rec.origin, rec.state) = (spec, usage, origin, state);
                rec.description = "d\u{e9}".into();
                rec.creation_date = 1_700_000_000;
                assert_eq!(render(&KeyMetadata::of(&rec)).expect("renders"), untyped(&rec));
                rec.deletion_date = Some(1_700_600_000);
                rec.expiration_model = Some(ExpirationModel::KeyMaterialExpires);
                rec.valid_to = Some(1_700_900_000);
                assert_eq!(render(&KeyMetadata::of(&rec)).expect("renders"), untyped(&rec));
                rec.expiration_model = Some(ExpirationModel::KeyMaterialDoesNotExpire);
                rec.valid_to = None;
                assert_eq!(render(&KeyMetadata::of(&rec)).expect("renders"), untyped(&rec));
            }
        }
    }
}
