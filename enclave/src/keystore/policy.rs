//! Policy enforcement: the tenant's and the key's policy modules decide on
//! every key a request acts on, after built-in authorization.

use keyward_wire::{Operation, actions};

use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::KeyRecord;
use crate::policy::context::{self, PolicyUpdate};
use crate::policy::modules::ModuleError;
use crate::policy::sandbox::{PolicyEngine, PolicyError};

pub fn engine<'a>(ctx: &'a Ctx<'_>) -> Result<&'a PolicyEngine, KmsError> {
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
    }
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
    for sha in modules {
        let compiled = ctx
            .enclave
            .policy_modules
            .get(engine, &ctx.records, &ctx.principal.tenant, sha)
            .await
            .map_err(module_error)?;
        let started = std::time::Instant::now();
        let decision = engine
            .evaluate_inline(&compiled, input)
            .unwrap_or_else(|| evaluate_off_the_reactor(engine, &compiled, input));
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

/// A decision that did not fit the inline budget can take up to the
/// sandbox's wall-clock deadline (a hostile module burning its fuel): on the
/// multi-threaded runtime it runs with `block_in_place`, so the worker's
/// other requests move to another thread instead of waiting behind it. Not
/// the first choice: handing the worker's core to another thread costs more
/// than a typical decision.
fn evaluate_off_the_reactor(
    engine: &PolicyEngine,
    compiled: &crate::policy::sandbox::CompiledPolicy,
    input: &[u8],
) -> crate::policy::sandbox::Decision {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| engine.evaluate(compiled, input))
        }
        _ => engine.evaluate(compiled, input),
    }
}
