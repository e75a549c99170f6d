//! Policy modules as a tenant manages them: stored (compiled first) under
//! the tenant, attached to a key or as the tenant's default, read back,
//! detached, and tried on a given context without being stored. Enforcement
//! on every request is [`super::policy`].

use std::sync::Arc;

use super::keys::{Access, check_state, modify, resolve_key, save_key, with_locked_key};
use super::policy::{self, compile, engine, module_error, scheduler_error};
use super::{protection, tenants};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::policy::modules::ModuleCache;
use crate::policy::scheduler::COMPILE_FUEL_PER_BYTE;

/// Compiles (on the sandbox scheduler) and stores a module for the caller's
/// tenant; its SHA-256 (hex).
pub async fn store(ctx: &Ctx<'_>, wasm: Vec<u8>) -> Result<String, KmsError> {
    let (compiled, wasm) = compile(ctx, wasm).await.map_err(module_error)?;
    let compiled = compiled.map_err(|e| module_error(e.into()))?;
    let sha = compiled.sha256_hex();
    ctx.enclave
        .policy_modules
        .put(&ctx.records, &ctx.principal.tenant, wasm, compiled)
        .await
        .map_err(module_error)?;
    Ok(sha)
}

/// A key's policy module.
pub struct KeyModule {
    pub key_arn: String,
    pub sha256_hex: String,
}

/// Stores `wasm` and attaches it to the key `key_id` (a `KeyId` parameter).
/// The module is compiled and stored before the key points to it: the
/// switch is one record write. On a locked key, a module replaces another
/// only when the current one approves (`keyward:policy.update`).
pub async fn attach_to_key(ctx: &Ctx<'_>, key_id: Option<String>, wasm: Vec<u8>) -> Result<KeyModule, KmsError> {
    let sha = store(ctx, wasm).await?;
    let rec = with_locked_key(ctx, key_id, async |mut rec| {
        check_state(&rec, Access::Manage)?;
        if rec.protection_locked
            && let Some(current) = rec.policy_module.clone()
            && current != sha
        {
            policy::approve_replacement(ctx, &rec, &current, &sha)
                .await
                .map_err(|e| match e {
                    KmsError::AccessDenied(why) => protection::locked(
                        &rec,
                        &format!("its policy module did not approve the replacement ({why})"),
                    ),
                    other => other,
                })?;
        }
        rec.policy_module = Some(sha.clone());
        save_key(ctx, &rec).await?;
        Ok(rec)
    })
    .await?;
    if rec.protection_locked {
        ctx.notes.detail(&protection::audit_detail(&rec));
    }
    tracing::info!(key_id = %rec.key_id, module = %sha, "policy module attached");
    Ok(KeyModule {
        key_arn: rec.arn,
        sha256_hex: sha,
    })
}

/// The module attached to the key `key_id`, with its bytes.
pub async fn key_module(ctx: &Ctx<'_>, key_id: &str) -> Result<(KeyModule, Vec<u8>), KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    let Some(sha) = rec.policy_module else {
        return Err(KmsError::NotFound(format!("{} has no policy module.", rec.arn)));
    };
    let wasm = ModuleCache::bytes(&ctx.records, &ctx.principal.tenant, &sha)
        .await
        .map_err(module_error)?;
    Ok((
        KeyModule {
            key_arn: rec.arn,
            sha256_hex: sha,
        },
        wasm,
    ))
}

/// Detaches the module of the key `key_id` (a `KeyId` parameter); not found
/// when it has none.
pub async fn detach_from_key(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<(), KmsError> {
    let (rec, existed) = modify(ctx, key_id, |rec| {
        if rec.protection_locked && rec.policy_module.is_some() {
            return Err(protection::locked(rec, "its policy module cannot be removed"));
        }
        Ok(rec.policy_module.take().is_some())
    })
    .await?;
    if !existed {
        return Err(KmsError::NotFound(format!("{} has no policy module.", rec.arn)));
    }
    Ok(())
}

/// Stores `wasm` and makes it the caller's tenant's default module; its SHA-256 (hex).
pub async fn set_tenant_default(ctx: &Ctx<'_>, wasm: Vec<u8>) -> Result<String, KmsError> {
    let sha = store(ctx, wasm).await?;
    tenants::set_policy_module(
        &ctx.records,
        &ctx.enclave.locks,
        &ctx.principal.tenant,
        Some(sha.clone()),
    )
    .await?;
    Ok(sha)
}

/// Removes the caller's tenant's default module; not found when it has none.
pub async fn remove_tenant_default(ctx: &Ctx<'_>) -> Result<(), KmsError> {
    let had = tenants::set_policy_module(&ctx.records, &ctx.enclave.locks, &ctx.principal.tenant, None).await?;
    if !had {
        return Err(KmsError::NotFound("The tenant has no default policy module.".into()));
    }
    Ok(())
}

/// What a module decided on a caller-given context ([`try_module`]).
pub struct TrialDecision {
    pub sha256_hex: String,
    pub allow: bool,
    pub reason: String,
}

/// Compiles `wasm` and evaluates it on `context` (the policy input JSON),
/// both on the sandbox scheduler within the caller's tenant's share; nothing
/// is stored or attached.
pub async fn try_module(ctx: &Ctx<'_>, wasm: Vec<u8>, context: Vec<u8>) -> Result<TrialDecision, KmsError> {
    let engine = Arc::clone(engine(ctx)?);
    let cost = (wasm.len() as u64).saturating_mul(COMPILE_FUEL_PER_BYTE);
    let trial = ctx
        .enclave
        .policy_scheduler
        .run(&ctx.principal.tenant, move || match engine.compile(&wasm) {
            Ok(compiled) => {
                let (decision, fuel) = engine.evaluate_metered(&compiled, &context);
                (Ok((compiled.sha256_hex(), decision)), cost.saturating_add(fuel))
            }
            Err(e) => (Err(e), cost),
        })
        .await
        .map_err(scheduler_error)?;
    let (sha256_hex, decision) = trial.map_err(|e| module_error(e.into()))?;
    Ok(TrialDecision {
        sha256_hex,
        allow: decision.allow,
        reason: decision.reason,
    })
}
