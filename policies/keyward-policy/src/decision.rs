//! The policy's answer: ABI v1's output document.

use serde::{Deserialize, Serialize};

/// Longest reason kept, in bytes: longer reasons are cut (at a character
/// boundary) so the encoded decision always fits the host's 4 KiB limit.
pub const MAX_REASON_BYTES: usize = 1024;

/// Allow or deny, with a reason for the audit log.
///
/// Encoded as `{"allow": true, "reason": "…"}`. The reason is one line:
/// control characters become spaces, and it is cut to [`MAX_REASON_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    allow: bool,
    reason: String,
}

impl Decision {
    /// Allows the request.
    pub fn allow(reason: impl Into<String>) -> Decision {
        Decision::new(true, reason)
    }

    /// Denies the request.
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision::new(false, reason)
    }

    /// Allows when `allow`, denies otherwise.
    pub fn new(allow: bool, reason: impl Into<String>) -> Decision {
        Decision {
            allow,
            reason: one_line(reason.into()),
        }
    }

    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.allow
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The decision as the module returns it to the host.
    pub fn to_json(&self) -> String {
        // Written by hand (as serde_json would write it), so that modules do
        // not link a JSON serializer.
        let mut out = String::with_capacity(32 + self.reason.len());
        out.push_str(if self.allow {
            r#"{"allow":true,"reason":""#
        } else {
            r#"{"allow":false,"reason":""#
        });
        crate::json::escape_into(&mut out, &self.reason);
        out.push_str(r#""}"#);
        out
    }
}

fn one_line(mut reason: String) -> String {
    if reason.chars().any(char::is_control) {
        reason = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    }
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}
