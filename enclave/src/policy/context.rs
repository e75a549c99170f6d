//! The request context handed to policy modules (ABI v1, `policies/ABI.md`):
//! who asks, for what action, on which key, with which request details, when.

use std::collections::BTreeMap;

use keyward_wire::{Operation, actions};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::keys::record::{AttestationPolicy, KeyRecord};

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
    /// The tenant's default attestation policy, if any (not shown to modules).
    pub tenant_attestation: Option<AttestationPolicy>,
    /// ReEncrypt's two contexts; [`RequestFacts::re_encrypt_side`] picks one.
    pub re_encrypt: Option<ReEncryptContexts>,
    /// Set only while a locked key's module decides on its replacement
    /// (`keyward:policy.update`).
    pub policy_update: Option<PolicyUpdate>,
}

/// The source and destination encryption contexts of a ReEncrypt request.
#[derive(Debug, Clone, Default)]
pub struct ReEncryptContexts {
    pub source: BTreeMap<String, String>,
    pub destination: BTreeMap<String, String>,
}

/// Which key of a ReEncrypt is being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReEncryptSide {
    /// The source key: `kms:ReEncryptFrom`, the source context.
    From,
    /// The destination key: `kms:ReEncryptTo`, the destination context.
    To,
}

/// `request.policy_update` of a `keyward:policy.update` decision: the module
/// deciding (the key's current one) and the module that would replace it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub current_module_sha256: String,
    pub new_module_sha256: String,
}

impl RequestFacts {
    /// Makes the facts those of one key of a ReEncrypt: the action
    /// (`kms:ReEncryptFrom` / `kms:ReEncryptTo`) and that side's context.
    /// No effect outside a ReEncrypt.
    pub fn re_encrypt_side(&mut self, side: ReEncryptSide) {
        let Some(contexts) = &self.re_encrypt else { return };
        let (action, context) = match side {
            ReEncryptSide::From => (actions::RE_ENCRYPT_FROM, &contexts.source),
            ReEncryptSide::To => (actions::RE_ENCRYPT_TO, &contexts.destination),
        };
        self.action = action.to_owned();
        self.encryption_context = context.clone();
    }
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
    let mut key_id = uuid::Uuid::encode_buffer();
    let key_id: &str = key.key_id.hyphenated().encode_lower(&mut key_id);
    let resource = DocResource {
        key_id,
        arn: &key.arn,
        key_spec: key.key_spec.as_str(),
        key_usage: key.key_usage.as_str(),
        key_state: key.state.as_str(),
        tags: &key.tags,
    };
    build_with(principal, resource, time_ms, facts)
}

/// The context of an operation that acts on no key (the tenant's default
/// module decides on it once): `resource` has every member, empty.
pub fn build_keyless(principal: &Principal, time_ms: u64, facts: &RequestFacts) -> Result<Vec<u8>, serde_json::Error> {
    static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();
    let resource = DocResource {
        key_id: "",
        arn: "",
        key_spec: "",
        key_usage: "",
        key_state: "",
        tags: &NO_TAGS,
    };
    build_with(principal, resource, time_ms, facts)
}

fn build_with(
    principal: &Principal,
    resource: DocResource<'_>,
    time_ms: u64,
    facts: &RequestFacts,
) -> Result<Vec<u8>, serde_json::Error> {
    let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
    let document = Document {
        version: 1,
        principal: DocPrincipal {
            tenant: &principal.tenant,
            access_key_id: &principal.access_key_id,
            roles,
            attestation: facts.attestation.as_ref(),
        },
        action: &facts.action,
        resource,
        request: DocRequest {
            encryption_context: &facts.encryption_context,
            recipient: facts.recipient,
            grant_tokens: &facts.grant_tokens,
            policy_update: facts.policy_update.as_ref(),
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
    /// Only in `keyward:policy.update` decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_update: Option<&'a PolicyUpdate>,
}

#[derive(Serialize)]
struct DocEnvironment {
    time_ms: u64,
}

/// Extracts the facts of a request body for `op`.
pub fn facts_of(op: Operation, body: &Value) -> RequestFacts {
    let mut action = op.action().to_owned();
    let string_map = |name: &str| -> BTreeMap<String, String> {
        body.get(name)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut encryption_context = string_map("EncryptionContext");
    let mut re_encrypt = None;
    if op == Operation::ReEncrypt {
        // Each key is evaluated with its own side (`re_encrypt_side`); until
        // then the facts are the source's, which the decryption is bound to.
        let contexts = ReEncryptContexts {
            source: string_map("SourceEncryptionContext"),
            destination: string_map("DestinationEncryptionContext"),
        };
        actions::RE_ENCRYPT_FROM.clone_into(&mut action);
        encryption_context = contexts.source.clone();
        re_encrypt = Some(contexts);
    }
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
        tenant_attestation: None,
        re_encrypt,
        policy_update: None,
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

    /// ReEncrypt: each key sees its own action and its own context.
    #[test]
    fn re_encrypt_sides_have_their_own_action_and_context() {
        let body = json!({
            "SourceEncryptionContext": { "side": "source" },
            "DestinationEncryptionContext": { "side": "destination" },
        });
        let mut facts = facts_of(Operation::ReEncrypt, &body);
        let seen = |facts: &RequestFacts| -> Value {
            serde_json::from_slice(&build(&principal(), &key(), 1, facts).expect("serializes")).expect("JSON")
        };
        facts.re_encrypt_side(ReEncryptSide::To);
        let to = seen(&facts);
        assert_eq!(to["action"], "kms:ReEncryptTo");
        assert_eq!(to["request"]["encryption_context"], json!({ "side": "destination" }));
        facts.re_encrypt_side(ReEncryptSide::From);
        let from = seen(&facts);
        assert_eq!(from["action"], "kms:ReEncryptFrom");
        assert_eq!(from["request"]["encryption_context"], json!({ "side": "source" }));
        // Other operations ignore the sides.
        let mut decrypt = facts_of(Operation::Decrypt, &json!({ "EncryptionContext": { "a": "b" } }));
        decrypt.re_encrypt_side(ReEncryptSide::To);
        assert_eq!(decrypt.action, "kms:Decrypt");
        assert_eq!(decrypt.encryption_context.get("a").map(String::as_str), Some("b"));
    }

    /// An operation on no key: every resource member present, empty; a
    /// replacement decision names both modules.
    #[test]
    fn keyless_contexts_have_an_empty_resource() {
        let mut facts = facts_of(Operation::GenerateRandom, &json!({}));
        let parsed: Value =
            serde_json::from_slice(&build_keyless(&principal(), 3, &facts).expect("serializes")).expect("JSON");
        assert_eq!(parsed["action"], "kms:GenerateRandom");
        assert_eq!(
            parsed["resource"],
            json!({ "key_id": "", "arn": "", "key_spec": "", "key_usage": "", "key_state": "", "tags": {} })
        );
        assert!(parsed["request"].get("policy_update").is_none());
        facts.policy_update = Some(PolicyUpdate {
            current_module_sha256: "aa".into(),
            new_module_sha256: "bb".into(),
        });
        let parsed: Value =
            serde_json::from_slice(&build(&principal(), &key(), 3, &facts).expect("serializes")).expect("JSON");
        assert_eq!(
            parsed["request"]["policy_update"],
            json!({ "current_module_sha256": "aa", "new_module_sha256": "bb" })
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
