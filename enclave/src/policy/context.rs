//! The request context handed to policy modules (ABI v1, `policies/ABI.md`):
//! who asks, for what action, on which key, with which request details, when.

use std::collections::BTreeMap;

use keyward_wire::Operation;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::keys::record::KeyRecord;

/// What the request carries that policies may look at, captured once per
/// request by the dispatcher before the operation runs.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// `kms:<Operation>` (or `keyward:<Operation>` for extensions).
    pub action: String,
    pub encryption_context: BTreeMap<String, String>,
    pub grant_tokens: Vec<String>,
    pub recipient: bool,
    /// Verified attestation claims of the recipient, when there is one.
    pub attestation: Option<Value>,
    /// The tenant's default policy module (SHA-256 hex), if any.
    pub tenant_policy: Option<String>,
}

/// The verified recipient's claims as the policy context shows them
/// (`principal.attestation`).
pub fn attestation_claims(module_id: &str, pcrs: &BTreeMap<u8, Vec<u8>>, timestamp_ms: u64) -> Value {
    let pcrs: serde_json::Map<String, Value> = pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), json!(hex::encode(v))))
        .collect();
    json!({ "module_id": module_id, "pcrs": pcrs, "timestamp": timestamp_ms })
}

/// The ABI v1 context JSON for `key` under a request with `facts`.
///
/// Serialized straight from borrowed data (nothing is cloned or built as a
/// `Value` first): this runs on every operation on a key that has a policy.
/// Strings, maps of strings, numbers and a JSON value always serialize; were
/// that ever to fail, the error is returned (a policy never decides on an
/// empty or partial context).
pub fn build(
    principal: &Principal,
    key: &KeyRecord,
    time_ms: u64,
    facts: &RequestFacts,
) -> Result<Vec<u8>, serde_json::Error> {
    let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
    let mut key_id = uuid::Uuid::encode_buffer();
    let key_id: &str = key.key_id.hyphenated().encode_lower(&mut key_id);
    let document = Document {
        version: 1,
        principal: DocPrincipal {
            tenant: &principal.tenant,
            access_key_id: &principal.access_key_id,
            roles,
            attestation: facts.attestation.as_ref(),
        },
        action: &facts.action,
        resource: DocResource {
            key_id,
            arn: &key.arn,
            key_spec: key.key_spec.as_str(),
            key_usage: key.key_usage.as_str(),
            key_state: key.state.as_str(),
            tags: &key.tags,
        },
        request: DocRequest {
            encryption_context: &facts.encryption_context,
            recipient: facts.recipient,
            grant_tokens: &facts.grant_tokens,
        },
        environment: DocEnvironment { time_ms },
    };
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, &document)?;
    Ok(out)
}

/// The context document (ABI v1, `policies/ABI.md` §3), borrowing its parts.
#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    principal: DocPrincipal<'a>,
    action: &'a str,
    resource: DocResource<'a>,
    request: DocRequest<'a>,
    environment: DocEnvironment,
}

#[derive(Serialize)]
struct DocPrincipal<'a> {
    tenant: &'a str,
    access_key_id: &'a str,
    roles: Vec<&'a str>,
    /// `null` when the request has no verified attestation.
    attestation: Option<&'a Value>,
}

#[derive(Serialize)]
struct DocResource<'a> {
    key_id: &'a str,
    arn: &'a str,
    key_spec: &'a str,
    key_usage: &'a str,
    key_state: &'a str,
    tags: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct DocRequest<'a> {
    encryption_context: &'a BTreeMap<String, String>,
    recipient: bool,
    grant_tokens: &'a [String],
}

#[derive(Serialize)]
struct DocEnvironment {
    time_ms: u64,
}

/// Extracts the facts of a request body for `op`.
pub fn facts_of(op: Operation, body: &Value) -> RequestFacts {
    let action = op.action().to_owned();
    // ReEncrypt's source context is what its decryption is bound to.
    let context = body
        .get("EncryptionContext")
        .or_else(|| body.get("SourceEncryptionContext"));
    let encryption_context = context
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let grant_tokens = body
        .get("GrantTokens")
        .and_then(Value::as_array)
        // Bounded so that the largest valid request still fits the 64 KiB context.
        .map(|a| {
            a.iter()
                .take(10)
                .filter_map(|t| t.as_str().map(|t| t.chars().take(256).collect()))
                .collect()
        })
        .unwrap_or_default();
    RequestFacts {
        action,
        encryption_context,
        grant_tokens,
        recipient: body.get("Recipient").is_some_and(|r| !r.is_null()),
        attestation: None,
        tenant_policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::Role;
    use crate::keys::record::KeyState;

    fn key() -> KeyRecord {
        KeyRecord {
            key_id: uuid::Uuid::parse_str("1234abcd-12ab-34cd-56ef-1234567890ab").expect("uuid"),
            state: KeyState::Disabled,
            tags: [("team".to_owned(), "pay\"ments\n".to_owned())].into_iter().collect(),
            ..crate::keys::record::test_record(
                "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            )
        }
    }

    fn principal() -> Principal {
        Principal {
            tenant: "111122223333".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            roles: vec![Role::KeyAdmin, Role::KeyUser],
        }
    }

    /// The document is exactly ABI v1's §3 (every member, with its type).
    #[test]
    fn the_context_is_the_v1_document() {
        let body = json!({
            "EncryptionContext": { "tenant": "111122223333", "é": "\u{1}" },
            "GrantTokens": ["g1"],
            "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256" },
        });
        let mut facts = facts_of(Operation::Decrypt, &body);
        facts.attestation = Some(attestation_claims(
            "i-0123-enc0123",
            &[(0u8, vec![0xab; 48])].into_iter().collect(),
            1_000,
        ));
        let built = build(&principal(), &key(), 1_704_110_400_000, &facts).expect("serializes");
        let parsed: Value = serde_json::from_slice(&built).expect("JSON");
        assert_eq!(
            parsed,
            json!({
                "version": 1,
                "principal": {
                    "tenant": "111122223333",
                    "access_key_id": "AKIAEXAMPLE",
                    "roles": ["KeyAdmin", "KeyUser"],
                    "attestation": { "module_id": "i-0123-enc0123", "pcrs": { "0": "ab".repeat(48) }, "timestamp": 1000 },
                },
                "action": "kms:Decrypt",
                "resource": {
                    "key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
                    "arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                    "key_spec": "SYMMETRIC_DEFAULT",
                    "key_usage": "ENCRYPT_DECRYPT",
                    "key_state": "Disabled",
                    "tags": { "team": "pay\"ments\n" },
                },
                "request": {
                    "encryption_context": { "tenant": "111122223333", "é": "\u{1}" },
                    "recipient": true,
                    "grant_tokens": ["g1"],
                },
                "environment": { "time_ms": 1_704_110_400_000u64 },
            })
        );
    }

    /// Outside a request (no facts): the same shape, with an empty action.
    #[test]
    fn without_facts_the_action_is_empty() {
        let parsed: Value =
            serde_json::from_slice(&build(&principal(), &key(), 5, &RequestFacts::default()).expect("serializes"))
                .expect("JSON");
        assert_eq!(parsed["action"], "");
        assert_eq!(parsed["principal"]["attestation"], Value::Null);
        assert_eq!(parsed["request"]["encryption_context"], json!({}));
        assert_eq!(parsed["request"]["grant_tokens"], json!([]));
        assert_eq!(parsed["request"]["recipient"], false);
        assert_eq!(parsed["environment"]["time_ms"], 5);
    }
}
