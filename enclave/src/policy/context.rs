//! The request context handed to policy modules (ABI v1, `policies/ABI.md`):
//! who asks, for what action, on which key, with which request details, when.

use std::cell::RefCell;
use std::collections::BTreeMap;

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

tokio::task_local! {
    /// The current request's facts (set by the dispatcher).
    pub static FACTS: RefCell<RequestFacts>;
}

/// Records the verified recipient's claims for the policy context.
pub fn note_attestation(module_id: &str, pcrs: &BTreeMap<u8, Vec<u8>>, timestamp_ms: u64) {
    let pcrs: serde_json::Map<String, Value> = pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), json!(hex::encode(v))))
        .collect();
    let claims = json!({ "module_id": module_id, "pcrs": pcrs, "timestamp": timestamp_ms });
    let _ = FACTS.try_with(|f| f.borrow_mut().attestation = Some(claims));
}

/// The ABI v1 context JSON for `key` under the current request.
pub fn build(principal: &Principal, key: &KeyRecord, time_ms: u64) -> Vec<u8> {
    let facts = FACTS.try_with(|f| f.borrow().clone()).unwrap_or_default();
    let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
    let context = json!({
        "version": 1,
        "principal": {
            "tenant": principal.tenant,
            "access_key_id": principal.access_key_id,
            "roles": roles,
            "attestation": facts.attestation,
        },
        "action": facts.action,
        "resource": {
            "key_id": key.key_id.to_string(),
            "arn": key.arn,
            "key_spec": key.key_spec,
            "key_usage": key.key_usage,
            "key_state": key.state.as_str(),
            "tags": key.tags,
        },
        "request": {
            "encryption_context": facts.encryption_context,
            "recipient": facts.recipient,
            "grant_tokens": facts.grant_tokens,
        },
        "environment": { "time_ms": time_ms },
    });
    context.to_string().into_bytes()
}

/// Extracts the facts of a request body for `target`.
pub fn facts_of(target: &str, body: &Value) -> RequestFacts {
    let action = match target.split_once('.') {
        Some(("TrentService", op)) => format!("kms:{op}"),
        Some((_, op)) => format!("keyward:{op}"),
        None => String::new(),
    };
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
