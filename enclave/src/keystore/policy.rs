//! Policy enforcement: the tenant's and the key's policy modules decide on
//! every key a request acts on, after built-in authorization.

use keyward_wire::{Operation, actions};

use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::KeyRecord;
use crate::policy::context::{self, PolicyUpdate};
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
/// everything can still be replaced or removed by a KeyAdmin (a locked key's
/// module decides on its own replacement: [`approve_replacement`]).
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
    let input = context::build(&ctx.principal, key, time_ms(ctx), &ctx.facts()).map_err(unserializable)?;
    run(ctx, &modules, &input).await
}

/// Whether `op` may act on a key (then the modules run each time it loads
/// one, in [`enforce`]); the others act on no key, and the tenant's default
/// module decides on them once, before they run ([`enforce_keyless`]).
/// Exhaustive: a new operation does not compile until it is placed here.
pub fn acts_on_key(op: Operation) -> bool {
    use Operation as O;
    match op {
        O::CreateKey
        | O::ListKeys
        | O::ListAliases
        | O::GenerateRandom
        | O::CreateTenant
        | O::ListTenants
        | O::DisableTenant
        | O::EnableTenant
        | O::CreateAccessKey
        | O::ListAccessKeys
        | O::DeleteAccessKey
        | O::GetAuditLog
        | O::GetTlsCertificateRequest
        | O::ImportTlsCertificate
        | O::InitCustody
        | O::JoinCluster
        | O::GetCheckpoint
        | O::GetUnsealDocument
        | O::Unseal
        | O::ExportBackup
        | O::ReshareCustody
        | O::UpdateTenantAttestationPolicy
        | O::PutTenantPolicyModule
        | O::DeleteTenantPolicyModule
        | O::TestPolicy => false,
        // With a KeyId it loads that key; without, it acts on none.
        O::GetAttestationDocument => false,
        O::DescribeKey
        | O::Encrypt
        | O::Decrypt
        | O::ReEncrypt
        | O::GenerateDataKey
        | O::GenerateDataKeyWithoutPlaintext
        | O::GenerateDataKeyPair
        | O::GenerateDataKeyPairWithoutPlaintext
        | O::EnableKey
        | O::DisableKey
        | O::ScheduleKeyDeletion
        | O::CancelKeyDeletion
        | O::UpdateKeyDescription
        | O::EnableKeyRotation
        | O::DisableKeyRotation
        | O::GetKeyRotationStatus
        | O::RotateKeyOnDemand
        | O::ListKeyRotations
        | O::CreateAlias
        | O::UpdateAlias
        | O::DeleteAlias
        | O::TagResource
        | O::UntagResource
        | O::ListResourceTags
        | O::Sign
        | O::Verify
        | O::GetPublicKey
        | O::DeriveSharedSecret
        | O::GenerateMac
        | O::VerifyMac
        | O::GetParametersForImport
        | O::ImportKeyMaterial
        | O::DeleteImportedKeyMaterial
        | O::UpdateKeyAttestationPolicy
        | O::DescribeKeyAttestationPolicy
        | O::LockKeyProtection
        | O::DescribeKeyProtection
        | O::PutKeyPolicyModule
        | O::GetKeyPolicyModule
        | O::DeleteKeyPolicyModule => true,
    }
}

/// The tenant's default module on an operation that acts on no key
/// ([`acts_on_key`]), with an empty `resource`, before the operation runs.
/// Policy management is exempt, as in [`enforce`].
pub async fn enforce_keyless(ctx: &Ctx<'_>, op: Operation) -> Result<(), KmsError> {
    if acts_on_key(op) {
        return Ok(());
    }
    let (action, tenant_module) = {
        let f = ctx.facts();
        (f.action.clone(), f.tenant_policy.clone())
    };
    let Some(module) = tenant_module else { return Ok(()) };
    if POLICY_MANAGEMENT.contains(&action.as_str()) {
        return Ok(());
    }
    let input = context::build_keyless(&ctx.principal, time_ms(ctx), &ctx.facts()).map_err(unserializable)?;
    run(ctx, &[&module], &input).await
}

/// A locked key's module `current` decides whether module `new` may replace
/// it: it runs on the action `keyward:policy.update` with
/// `request.policy_update` naming both (`policies/ABI.md` §3). A deny is
/// `AccessDeniedException`.
pub async fn approve_replacement(ctx: &Ctx<'_>, key: &KeyRecord, current: &str, new: &str) -> Result<(), KmsError> {
    let mut facts = ctx.facts().clone();
    actions::POLICY_UPDATE.clone_into(&mut facts.action);
    facts.policy_update = Some(PolicyUpdate {
        current_module_sha256: current.to_owned(),
        new_module_sha256: new.to_owned(),
    });
    let input = context::build(&ctx.principal, key, time_ms(ctx), &facts).map_err(unserializable)?;
    let current = current.to_owned();
    run(ctx, &[&current], &input).await
}

fn time_ms(ctx: &Ctx<'_>) -> u64 {
    (ctx.now.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

fn unserializable(e: serde_json::Error) -> KmsError {
    tracing::error!(error = %e, "the policy context does not serialize");
    KmsError::Internal
}

/// Runs `modules` in order on `input`; the first deny is `AccessDeniedException`.
async fn run(ctx: &Ctx<'_>, modules: &[&String], input: &[u8]) -> Result<(), KmsError> {
    let engine = engine(ctx)?;
    let scheduler = &ctx.enclave.policy_scheduler;
    let tenant = ctx.principal.tenant.as_str();
    for sha in modules {
        let compiled = cached_module(ctx, sha).await.map_err(module_error)?;
        let started = std::time::Instant::now();
        // Inline (on this async thread, within `INLINE_FUEL`) only while the
        // tenant is within its fuel budget; otherwise, and when that was not
        // enough, on the scheduler within the tenant's share.
        let inline = if scheduler.within_budget(tenant) {
            let (decision, fuel) = engine.evaluate_inline_metered(&compiled, input);
            scheduler.charge(tenant, fuel);
            decision
        } else {
            None
        };
        let decision = match inline {
            Some(decision) => decision,
            None => {
                let (engine, compiled, input) = (Arc::clone(engine), compiled.clone(), input.to_vec());
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
