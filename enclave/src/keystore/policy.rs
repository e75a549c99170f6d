//! Policy enforcement: the tenant's and the key's policy modules decide on
//! every key a request acts on, after built-in authorization.

use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::KeyRecord;
use crate::policy::context;
use crate::policy::modules::ModuleError;
use std::sync::Arc;

use crate::policy::sandbox::{CompiledPolicy, PolicyEngine, PolicyError};
use crate::policy::scheduler::{COMPILE_FUEL_PER_BYTE, SchedulerError};

pub fn engine<'a>(ctx: &'a Ctx<'_>) -> Result<&'a Arc<PolicyEngine>, KmsError> {
    ctx.enclave.policy_engine().ok_or_else(|| {
        tracing::error!("the policy engine is unavailable");
        KmsError::Internal
    })
}

pub fn module_error(e: ModuleError) -> KmsError {
    match e {
        ModuleError::Policy(PolicyError::Engine(m)) => {
            tracing::error!(error = %m, "policy engine failure");
            KmsError::Internal
        }
        ModuleError::Policy(p) => KmsError::MalformedPolicyDocument(format!("The policy module is not valid: {p}")),
        ModuleError::Store(s) => s.into(),
        ModuleError::Missing(sha) => {
            tracing::error!(module = %sha, "an attached policy module is missing from the store");
            KmsError::Internal
        }
        ModuleError::Scheduler(e) => scheduler_error(e),
    }
}

pub fn scheduler_error(e: SchedulerError) -> KmsError {
    match e {
        SchedulerError::Throttled => {
            KmsError::Throttling("Rate exceeded: the tenant's share of the policy sandbox is in use.".into())
        }
        SchedulerError::Failed(m) => {
            tracing::error!(error = %m, "policy sandbox job failed");
            KmsError::Internal
        }
    }
}

/// Compiles `wasm` on the sandbox scheduler, within the caller's tenant's
/// share (charged by module size); the bytes come back with the result.
pub async fn compile(
    ctx: &Ctx<'_>,
    wasm: Vec<u8>,
) -> Result<(Result<CompiledPolicy, PolicyError>, Vec<u8>), ModuleError> {
    let engine = Arc::clone(engine(ctx).map_err(|_| ModuleError::Policy(PolicyError::Engine("unavailable".into())))?);
    let cost = (wasm.len() as u64).saturating_mul(COMPILE_FUEL_PER_BYTE);
    Ok(ctx
        .enclave
        .policy_scheduler
        .run(&ctx.principal.tenant, move || ((engine.compile(&wasm), wasm), cost))
        .await?)
}

/// A module of the caller's tenant, compiled (on the scheduler) on a cache miss.
async fn cached_module(ctx: &Ctx<'_>, sha: &str) -> Result<CompiledPolicy, ModuleError> {
    ctx.enclave
        .policy_modules
        .get(&ctx.records, &ctx.principal.tenant, sha, async |wasm| {
            compile(ctx, wasm).await?.0.map_err(ModuleError::Policy)
        })
        .await
}

/// Operations that manage policy modules: exempt from policy evaluation, so a
/// KeyAdmin can always replace or remove a module that denies everything.
pub const POLICY_MANAGEMENT: &[&str] = &[
    "keyward:PutKeyPolicyModule",
    "keyward:GetKeyPolicyModule",
    "keyward:DeleteKeyPolicyModule",
    "keyward:PutTenantPolicyModule",
    "keyward:DeleteTenantPolicyModule",
    "keyward:TestPolicy",
];

/// A policy's reason as callers and the audit log see it: control characters
/// escaped, at most 1,024 characters.
pub(crate) fn reason_text(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.chars().take(1024).collect()
}

/// Runs the tenant's default module, then the key's, for a request acting on
/// `key`. Policy management itself is exempt, so a module that denies
/// everything can still be replaced or removed by a KeyAdmin.
pub async fn enforce(ctx: &Ctx<'_>, key: &KeyRecord) -> Result<(), KmsError> {
    // Outside a dispatched request (no facts) the key's own module still
    // runs, on an empty action: a path that forgets the facts fails closed.
    let (action, tenant_module) = {
        let f = ctx.facts();
        (f.action.clone(), f.tenant_policy.clone())
    };
    if POLICY_MANAGEMENT.contains(&action.as_str()) {
        return Ok(());
    }
    let modules: Vec<&String> = tenant_module.iter().chain(key.policy_module.iter()).collect();
    if modules.is_empty() {
        return Ok(());
    }
    let engine = engine(ctx)?;
    let time_ms = (ctx.now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let input = context::build(&ctx.principal, key, time_ms, &ctx.facts()).map_err(|e| {
        tracing::error!(error = %e, "the policy context does not serialize");
        KmsError::Internal
    })?;
    let scheduler = &ctx.enclave.policy_scheduler;
    let tenant = ctx.principal.tenant.as_str();
    for sha in modules {
        let compiled = cached_module(ctx, sha).await.map_err(module_error)?;
        let started = std::time::Instant::now();
        // Inline (on this async thread, within `INLINE_FUEL`) only while the
        // tenant is within its fuel budget; otherwise, and when that was not
        // enough, on the scheduler within the tenant's share.
        let inline = if scheduler.within_budget(tenant) {
            let (decision, fuel) = engine.evaluate_inline_metered(&compiled, &input);
            scheduler.charge(tenant, fuel);
            decision
        } else {
            None
        };
        let decision = match inline {
            Some(decision) => decision,
            None => {
                let (engine, compiled, input) = (Arc::clone(engine), compiled.clone(), input.clone());
                scheduler
                    .run(tenant, move || engine.evaluate_metered(&compiled, &input))
                    .await
                    .map_err(scheduler_error)?
            }
        };
        tracing::debug!(module = %sha, allow = decision.allow, micros = started.elapsed().as_micros() as u64, "policy decision");
        ctx.notes.policy(sha);
        ctx.notes.policy_time(started.elapsed());
        if !decision.allow {
            return Err(KmsError::AccessDenied(format!(
                "Denied by policy module {sha}: {}",
                reason_text(&decision.reason)
            )));
        }
    }
    Ok(())
}
