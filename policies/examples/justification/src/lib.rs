//! Access justification: every Decrypt must say why.
//!
//! `kms:Decrypt` requires a non-empty `justification` entry in the
//! encryption context, which the audit log records with the decision.
//! Other actions are allowed.
//!
//! Caveat: the encryption context is authenticated data, so Decrypt must
//! present the context the data was encrypted with. A justification carried
//! this way is therefore fixed when the data is encrypted (for example a
//! ticket or case id per object), not chosen per access.

use keyward_policy::{Context, Decision};

/// The encryption context key that carries the justification.
pub const KEY: &str = "justification";

pub fn decide(ctx: &Context) -> Decision {
    if !ctx.action_is("kms:Decrypt") {
        return Decision::allow(format!("{} is not restricted by justification", ctx.action));
    }
    match ctx.request.context_value(KEY).map(str::trim) {
        Some(why) if !why.is_empty() => Decision::allow(format!("kms:Decrypt allowed: justification {why:?}")),
        _ => Decision::deny(format!(
            "kms:Decrypt denied: the encryption context needs a non-empty {KEY:?} entry"
        )),
    }
}

keyward_policy::export!(decide);

#[cfg(test)]
mod tests {
    use super::*;

    fn decrypt(justification: Option<&str>) -> Context {
        let mut ctx = Context::sample();
        if let Some(why) = justification {
            ctx.request.encryption_context.insert(KEY.to_owned(), why.to_owned());
        }
        ctx
    }

    #[test]
    fn a_justified_decrypt_is_allowed() {
        let decision = decide(&decrypt(Some("INC-4711 customer support")));
        assert!(decision.is_allowed(), "{}", decision.reason());
        assert_eq!(
            decision.reason(),
            "kms:Decrypt allowed: justification \"INC-4711 customer support\""
        );
    }

    #[test]
    fn an_unjustified_decrypt_is_denied() {
        for ctx in [decrypt(None), decrypt(Some("")), decrypt(Some(" \t "))] {
            let decision = decide(&ctx);
            assert!(!decision.is_allowed());
            assert!(decision.reason().contains("non-empty"), "{}", decision.reason());
        }
        // Another key does not count.
        let mut ctx = decrypt(None);
        ctx.request
            .encryption_context
            .insert("Justification".to_owned(), "x".to_owned());
        assert!(!decide(&ctx).is_allowed());
    }

    #[test]
    fn other_actions_are_allowed() {
        let mut ctx = decrypt(None);
        ctx.action = "kms:Encrypt".to_owned();
        assert!(decide(&ctx).is_allowed());
    }
}
