//! Deletion guard: a key can be scheduled for deletion only once it is
//! tagged `allow-deletion` = `true`.
//!
//! Deleting a key destroys every ciphertext under it; the tag makes it a
//! deliberate two-step act (tag, then schedule), each step audited. Other
//! actions are allowed.

use keyward_policy::{Context, Decision};

/// The tag that arms deletion, and its value.
pub const TAG: (&str, &str) = ("allow-deletion", "true");

pub fn decide(ctx: &Context) -> Decision {
    if !ctx.action_is("kms:ScheduleKeyDeletion") {
        return Decision::allow(format!("{} is not restricted by deletion-guard", ctx.action));
    }
    let key = &ctx.resource.key_id;
    let (tag, value) = TAG;
    if ctx.resource.tag(tag) == Some(value) {
        Decision::allow(format!(
            "kms:ScheduleKeyDeletion allowed: key {key} is tagged {tag}={value}"
        ))
    } else {
        Decision::deny(format!(
            "kms:ScheduleKeyDeletion denied: key {key} is not tagged {tag}={value}"
        ))
    }
}

keyward_policy::export!(decide);

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule_deletion(tag: Option<&str>) -> Context {
        let mut ctx = Context::sample();
        ctx.action = "kms:ScheduleKeyDeletion".to_owned();
        ctx.principal.roles = vec!["KeyAdmin".to_owned()];
        if let Some(value) = tag {
            ctx.resource.tags.insert("allow-deletion".to_owned(), value.to_owned());
        }
        ctx
    }

    #[test]
    fn a_tagged_key_may_be_scheduled_for_deletion() {
        let decision = decide(&schedule_deletion(Some("true")));
        assert!(decision.is_allowed(), "{}", decision.reason());
    }

    #[test]
    fn an_untagged_key_may_not() {
        for tag in [None, Some("false"), Some("TRUE"), Some("")] {
            let decision = decide(&schedule_deletion(tag));
            assert!(!decision.is_allowed(), "{tag:?}");
            assert!(
                decision.reason().contains("is not tagged allow-deletion=true"),
                "{}",
                decision.reason()
            );
        }
    }

    #[test]
    fn other_actions_are_allowed() {
        let mut ctx = schedule_deletion(None);
        ctx.action = "kms:DisableKey".to_owned();
        assert!(decide(&ctx).is_allowed());
        assert!(decide(&Context::sample()).is_allowed());
    }
}
