//! The encryption context must name the caller's tenant.
//!
//! For cryptographic operations that take an encryption context (Encrypt,
//! Decrypt, GenerateDataKey*, ReEncrypt), the context must have an entry
//! `tenant` equal to the caller's tenant; the ciphertext is then bound to
//! it, since the context is authenticated data. ReEncrypt is decided once
//! per key: `kms:ReEncryptFrom` with the source context, `kms:ReEncryptTo`
//! with the destination context (hosts before ABI v1 revision 6 sent
//! `kms:ReEncrypt` with the source context for both). Other actions are
//! allowed.

use keyward_policy::{Context, Decision};

/// The actions this policy constrains.
pub const GUARDED: &[&str] = &["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"];

pub fn decide(ctx: &Context) -> Decision {
    let action = &ctx.action;
    if !ctx.action_in(GUARDED) {
        return Decision::allow(format!("{action} is not restricted by context-tenant"));
    }
    let tenant = &ctx.principal.tenant;
    match ctx.request.context_value("tenant") {
        Some(named) if named == tenant => Decision::allow(format!(
            "{action} allowed: encryption context tenant is the caller's ({tenant})"
        )),
        Some(named) => Decision::deny(format!(
            "{action} denied: encryption context tenant {named:?} is not the caller's tenant {tenant:?}"
        )),
        None => Decision::deny(format!(
            "{action} denied: the encryption context must have \"tenant\": {tenant:?}"
        )),
    }
}

keyward_policy::export!(decide);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: &str, tenant_entry: Option<&str>) -> Context {
        let mut ctx = Context::sample();
        ctx.action = action.to_owned();
        if let Some(t) = tenant_entry {
            ctx.request.encryption_context.insert("tenant".to_owned(), t.to_owned());
        }
        ctx.request
            .encryption_context
            .insert("purpose".to_owned(), "backup".to_owned());
        ctx
    }

    #[test]
    fn the_callers_tenant_is_allowed() {
        for action in [
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:GenerateDataKeyPair",
            "kms:ReEncrypt",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ] {
            let decision = decide(&request(action, Some("acme")));
            assert!(decision.is_allowed(), "{action}: {}", decision.reason());
        }
    }

    #[test]
    fn another_tenant_or_none_is_denied() {
        let decision = decide(&request("kms:Decrypt", Some("globex")));
        assert!(!decision.is_allowed());
        assert!(decision.reason().contains("\"globex\""), "{}", decision.reason());
        let decision = decide(&request("kms:GenerateDataKey", None));
        assert!(!decision.is_allowed());
        // Each side of a ReEncrypt, with its own context.
        assert!(!decide(&request("kms:ReEncryptTo", Some("globex"))).is_allowed());
        assert!(!decide(&request("kms:ReEncryptFrom", None)).is_allowed());
        assert!(decision.reason().contains("must have"), "{}", decision.reason());
        assert!(!decide(&request("kms:Encrypt", Some("ACME"))).is_allowed());
    }

    #[test]
    fn other_actions_are_allowed() {
        assert!(decide(&request("kms:Sign", None)).is_allowed());
        assert!(decide(&request("kms:DescribeKey", Some("globex"))).is_allowed());
    }
}
