//! Policy modules: `Keyward.PutKeyPolicyModule`, `GetKeyPolicyModule`,
//! `DeleteKeyPolicyModule`, `PutTenantPolicyModule`,
//! `DeleteTenantPolicyModule`, `TestPolicy`. Enforcement on every key a
//! request acts on is `keystore::policy`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, Empty, b64, blob, parse, render, required};
use crate::context::Ctx;
use crate::keystore::policy_modules;
use crate::policy::sandbox::{MAX_CONTEXT_BYTES, MAX_MODULE_BYTES};

fn module_bytes(field: &str, value: Option<String>) -> Result<Vec<u8>, KmsError> {
    let wasm = blob(field, &required(field, value)?)?;
    if wasm.is_empty() || wasm.len() > MAX_MODULE_BYTES {
        return Err(KmsError::MalformedPolicyDocument(format!(
            "A policy module is 1 to {MAX_MODULE_BYTES} bytes of WebAssembly."
        )));
    }
    Ok(wasm)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyModuleRequest {
    key_id: Option<String>,
    module: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyModuleResponse<'a> {
    key_id: &'a str,
    module_sha256: &'a str,
}

pub async fn put_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: PutKeyPolicyModuleRequest = parse(body)?;
    let wasm = module_bytes("module", req.module)?;
    let attached = policy_modules::attach_to_key(ctx, req.key_id, wasm).await?;
    render(&PutKeyPolicyModuleResponse {
        key_id: &attached.key_arn,
        module_sha256: &attached.sha256_hex,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyPolicyModuleResponse<'a> {
    key_id: &'a str,
    module_sha256: &'a str,
    /// Base64.
    module: String,
}

pub async fn get_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let (module, wasm) = policy_modules::key_module(ctx, &required("keyId", req.key_id)?).await?;
    render(&GetKeyPolicyModuleResponse {
        key_id: &module.key_arn,
        module_sha256: &module.sha256_hex,
        module: b64(&wasm),
    })
}

pub async fn delete_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    policy_modules::detach_from_key(ctx, req.key_id).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutTenantPolicyModuleRequest {
    module: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutTenantPolicyModuleResponse {
    module_sha256: String,
}

pub async fn put_tenant_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: PutTenantPolicyModuleRequest = parse(body)?;
    let wasm = module_bytes("module", req.module)?;
    let module_sha256 = policy_modules::set_tenant_default(ctx, wasm).await?;
    render(&PutTenantPolicyModuleResponse { module_sha256 })
}

pub async fn delete_tenant_policy_module(ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    policy_modules::remove_tenant_default(ctx).await?;
    render(&Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TestPolicyRequest {
    module: Option<String>,
    /// The policy input: a JSON string is taken as is, any other JSON value
    /// as its serialization.
    context: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TestPolicyResponse {
    module_sha256: String,
    allow: bool,
    reason: String,
}

/// Evaluates a module on a caller-given context; nothing is stored or attached.
pub async fn test_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TestPolicyRequest = parse(body)?;
    let wasm = module_bytes("module", req.module)?;
    let input = match required("context", req.context)? {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    params::length("context", input.len(), 1, MAX_CONTEXT_BYTES)?;
    let decision = policy_modules::try_module(ctx, wasm, input).await?;
    render(&TestPolicyResponse {
        module_sha256: decision.sha256_hex,
        allow: decision.allow,
        reason: decision.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::policy::{POLICY_MANAGEMENT, reason_text};

    /// Regression: the exemption matched any action containing "Policy", so
    /// attestation-policy operations escaped policy modules too.
    #[test]
    fn only_policy_module_management_is_exempt() {
        assert!(POLICY_MANAGEMENT.contains(&"keyward:DeleteKeyPolicyModule"));
        assert!(!POLICY_MANAGEMENT.contains(&"keyward:UpdateKeyAttestationPolicy"));
        assert!(!POLICY_MANAGEMENT.contains(&"keyward:DescribeKeyAttestationPolicy"));
    }

    /// Regression: reasons were cut at 128 characters and lost their control characters.
    #[test]
    fn reasons_keep_up_to_1024_characters_and_escape_controls() {
        let long = "r".repeat(300);
        assert_eq!(reason_text(&long).len(), 300);
        assert_eq!(reason_text("tenant \"a\""), "tenant \"a\"");
        assert_eq!(reason_text("a\nb"), "a\\nb");
        assert_eq!(reason_text(&"x".repeat(5000)).len(), 1024);
    }

    /// Regression: outside a dispatched request (no request facts) enforcement
    /// allowed everything; the key's own module must still decide.
    #[tokio::test]
    async fn a_key_module_decides_even_without_request_facts() {
        use super::super::tests::{TENANT, create, ctx, enclave};
        let enclave = enclave();
        let store = crate::store::MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
        let wat = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/fail_policy_unreachable.wat"
        ));
        let wasm = wat::parse_str(wat).expect("wat");
        put_key_policy_module(&ctx, serde_json::json!({ "KeyId": key_id, "Module": b64(&wasm) }))
            .await
            .expect("attached");
        let err = super::super::keys::describe_key(&ctx, serde_json::json!({ "KeyId": key_id }))
            .await
            .expect_err("the trapping module denies");
        assert_eq!(err.aws_type(), "AccessDeniedException");
    }

    /// A module that needs more than the inline budget still decides (run
    /// again off the async workers with the full budget), on the
    /// multi-threaded runtime the enclave uses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_beyond_the_inline_budget_still_decides() {
        use super::super::tests::{TENANT, create, ctx, enclave};
        let enclave = enclave();
        let store = crate::store::MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
        for (fixture, allowed) in [
            ("policy_allow_after_long_loop", true),
            ("fail_policy_infinite_loop", false),
        ] {
            let path = format!("{}/../tests/data/{fixture}.wat", env!("CARGO_MANIFEST_DIR"));
            let wasm = wat::parse_file(&path).expect("wat");
            put_key_policy_module(&ctx, serde_json::json!({ "KeyId": key_id, "Module": b64(&wasm) }))
                .await
                .expect("attached");
            let described = super::super::keys::describe_key(&ctx, serde_json::json!({ "KeyId": key_id })).await;
            match described {
                Ok(_) => assert!(allowed, "{fixture} allowed"),
                Err(e) => {
                    assert!(!allowed, "{fixture}: {e:?}");
                    assert_eq!(e.aws_type(), "AccessDeniedException");
                }
            }
        }
    }

    /// Regression: an empty or oversized module was a ValidationException.
    #[test]
    fn module_size_errors_are_malformed_policy_documents() {
        let empty = module_bytes("module", Some(String::new())).expect_err("empty");
        assert_eq!(empty.aws_type(), "MalformedPolicyDocumentException");
        let big = b64(&vec![0u8; MAX_MODULE_BYTES + 1]);
        let err = module_bytes("module", Some(big)).expect_err("too big");
        assert_eq!(err.aws_type(), "MalformedPolicyDocumentException");
    }
}
