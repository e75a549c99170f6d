//! Policy modules: `Keyward.PutKeyPolicyModule`, `GetKeyPolicyModule`,
//! `DeleteKeyPolicyModule`, `PutTenantPolicyModule`,
//! `DeleteTenantPolicyModule`, `TestPolicy`, and the enforcement that runs on
//! every key a request acts on.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::lifecycle::modify;
use super::params::{self, Access, b64, blob, check_state, parse, required};
use crate::bootstrap::{TENANT_NAMESPACE, TenantRecord};
use crate::context::Ctx;
pub use crate::keystore::policy::{POLICY_MANAGEMENT, enforce, engine, module_error};
use crate::policy::modules::ModuleCache;
use crate::policy::sandbox::MAX_MODULE_BYTES;

fn module_bytes(field: &str, value: Option<String>) -> Result<Vec<u8>, KmsError> {
    let wasm = blob(field, &required(field, value)?)?;
    if wasm.is_empty() || wasm.len() > MAX_MODULE_BYTES {
        return Err(KmsError::MalformedPolicyDocument(format!(
            "A policy module is 1 to {MAX_MODULE_BYTES} bytes of WebAssembly."
        )));
    }
    Ok(wasm)
}

/// Validates, compiles and stores the base64 `Module` parameter; its SHA-256 (hex).
async fn store_module(ctx: &Ctx<'_>, module: Option<String>) -> Result<String, KmsError> {
    let wasm = module_bytes("module", module)?;
    let compiled = ctx
        .enclave
        .policy_modules
        .put(engine(ctx)?, &ctx.records, &ctx.principal.tenant, wasm)
        .await
        .map_err(module_error)?;
    Ok(compiled.sha256_hex())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyModuleRequest {
    key_id: Option<String>,
    module: Option<String>,
}

pub async fn put_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: PutKeyPolicyModuleRequest = parse(body)?;
    // Compiled and stored before the key points to it: the switch is one record write.
    let sha = store_module(ctx, req.module).await?;
    let (rec, ()) = modify(ctx, req.key_id, |rec| {
        check_state(rec, Access::Manage)?;
        rec.policy_module = Some(sha.clone());
        Ok(())
    })
    .await?;
    tracing::info!(key_id = %rec.key_id, module = %sha, "policy module attached");
    Ok(json!({ "KeyId": rec.arn, "ModuleSha256": sha }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: Option<String>,
}

pub async fn get_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    let Some(sha) = &rec.policy_module else {
        return Err(KmsError::NotFound(format!("{} has no policy module.", rec.arn)));
    };
    let wasm = ModuleCache::bytes(&ctx.records, &ctx.principal.tenant, sha)
        .await
        .map_err(module_error)?;
    Ok(json!({ "KeyId": rec.arn, "ModuleSha256": sha, "Module": b64(&wasm) }))
}

pub async fn delete_key_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: KeyIdRequest = parse(body)?;
    let (rec, existed) = modify(ctx, req.key_id, |rec| Ok(rec.policy_module.take().is_some())).await?;
    if !existed {
        return Err(KmsError::NotFound(format!("{} has no policy module.", rec.arn)));
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutTenantPolicyModuleRequest {
    module: Option<String>,
}

async fn set_tenant_policy(ctx: &Ctx<'_>, sha: Option<String>) -> Result<bool, KmsError> {
    let tenant = ctx.principal.tenant.clone();
    let _guard = ctx.enclave.locks.lock(&format!("{TENANT_NAMESPACE}/{tenant}")).await;
    let Some(mut record) = ctx.records.get::<TenantRecord>(TENANT_NAMESPACE, &tenant).await? else {
        return Err(KmsError::Internal);
    };
    let had = record.policy_module.is_some();
    record.policy_module = sha;
    ctx.records.put(TENANT_NAMESPACE, &tenant, &record).await?;
    Ok(had)
}

pub async fn put_tenant_policy_module(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: PutTenantPolicyModuleRequest = parse(body)?;
    let sha = store_module(ctx, req.module).await?;
    set_tenant_policy(ctx, Some(sha.clone())).await?;
    Ok(json!({ "ModuleSha256": sha }))
}

pub async fn delete_tenant_policy_module(ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    if !set_tenant_policy(ctx, None).await? {
        return Err(KmsError::NotFound("The tenant has no default policy module.".into()));
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TestPolicyRequest {
    module: Option<String>,
    context: Option<Value>,
}

/// Evaluates a module on a caller-given context; nothing is stored or attached.
pub async fn test_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: TestPolicyRequest = parse(body)?;
    let wasm = module_bytes("module", req.module)?;
    let input = match required("context", req.context)? {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    params::length("context", input.len(), 1, crate::policy::sandbox::MAX_CONTEXT_BYTES)?;
    let engine = engine(ctx)?;
    let compiled = engine.compile(&wasm).map_err(|e| module_error(e.into()))?;
    let decision = engine.evaluate(&compiled, &input);
    Ok(json!({ "ModuleSha256": compiled.sha256_hex(), "Allow": decision.allow, "Reason": decision.reason }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::policy::reason_text;

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
