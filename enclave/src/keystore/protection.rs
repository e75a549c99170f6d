//! Key protection locks (`Keyward.LockKeyProtection`) and what protects a
//! key (`Keyward.DescribeKeyProtection`). Once a key is locked, its
//! attestation policy and its policy module can only be made stricter: a
//! policy admitting a subset of the measurements the current one admits
//! ([`check_policy_change`]), a module only replaced by one the current
//! module approves (`keyward:policy.update`,
//! [`super::policy::approve_replacement`]); neither is ever removed. The
//! lock itself is never lifted: the way out is ScheduleKeyDeletion.

use super::keys::{Access, check_state, modify, resolve_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::{AttestationPolicy, KeyRecord};

/// What protects a key: its own attestation policy and the tenant's default
/// (which applies when it has none), its module and the tenant's, the lock.
pub struct Protection {
    pub key_arn: String,
    pub attestation: Option<AttestationPolicy>,
    pub tenant_attestation: Option<AttestationPolicy>,
    pub policy_module: Option<String>,
    pub tenant_policy_module: Option<String>,
    pub locked: bool,
}

impl Protection {
    fn of(ctx: &Ctx<'_>, rec: KeyRecord) -> Protection {
        let (tenant_attestation, tenant_policy_module) = {
            let f = ctx.facts();
            (f.tenant_attestation.clone(), f.tenant_policy.clone())
        };
        Protection {
            key_arn: rec.arn,
            attestation: rec.attestation,
            tenant_attestation,
            policy_module: rec.policy_module,
            tenant_policy_module,
            locked: rec.protection_locked,
        }
    }
}

/// The refusal of a change that would weaken a locked key.
pub fn locked(rec: &KeyRecord, what: &str) -> KmsError {
    KmsError::AccessDenied(format!(
        "The protection of {} is locked (Keyward.LockKeyProtection): {what}. \
         Its attestation policy and policy module can only be made stricter; \
         only ScheduleKeyDeletion ends a locked key.",
        rec.arn
    ))
}

/// Whether `rec`'s attestation policy may become `new`: always when the key
/// is not locked; when it is, only to a policy at least as strict (never
/// removed).
pub fn check_policy_change(rec: &KeyRecord, new: Option<&AttestationPolicy>) -> Result<(), KmsError> {
    if !rec.protection_locked {
        return Ok(());
    }
    match (&rec.attestation, new) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(locked(rec, "its attestation policy cannot be removed")),
        (Some(old), Some(new)) if new.is_at_least_as_strict_as(old) => Ok(()),
        (Some(_), Some(_)) => Err(locked(
            rec,
            "the new attestation policy admits measurements the current one does not",
        )),
    }
}

/// Locks the protection of the key `key_id` (a `KeyId` parameter). A key
/// without its own attestation policy gets the tenant's default, if any,
/// pinned as its own: the lock covers what protected the key when it was
/// locked. Locking a locked key changes nothing.
pub async fn lock(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<Protection, KmsError> {
    let tenant_default = ctx.facts().tenant_attestation.clone();
    let (rec, ()) = modify(ctx, key_id, |rec| {
        check_state(rec, Access::Manage)?;
        if !rec.protection_locked && rec.attestation.is_none() {
            rec.attestation = tenant_default;
        }
        rec.protection_locked = true;
        Ok(())
    })
    .await?;
    tracing::info!(key_id = %rec.key_id, "key protection locked");
    ctx.notes.detail(&audit_detail(&rec));
    Ok(Protection::of(ctx, rec))
}

/// What the audit record of a change to a key's protection says.
pub fn audit_detail(rec: &KeyRecord) -> String {
    let policy = match &rec.attestation {
        None => "none".to_owned(),
        Some(p) if p.allows_any_enclave() => "AllowAnyEnclave (weak: any attested enclave)".to_owned(),
        Some(p) => {
            let pcrs: Vec<String> = p.allowed_pcrs.keys().map(|i| format!("PCR{i}")).collect();
            pcrs.join(",")
        }
    };
    format!(
        "ProtectionLocked={}; AttestationPolicy={policy}; PolicyModule={}",
        rec.protection_locked,
        rec.policy_module.as_deref().unwrap_or("none")
    )
}

/// What protects the key `key_id`.
pub async fn describe(ctx: &Ctx<'_>, key_id: &str) -> Result<Protection, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    Ok(Protection::of(ctx, rec))
}
