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
    if may_have_control(reason.as_bytes()) && reason.chars().any(char::is_control) {
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

/// False only if `bytes` (UTF-8) has no control character (`char::is_control`:
/// U+0000–U+001F, U+007F, U+0080–U+009F). Eight bytes at a time, as
/// `json::plain_run_end`: a byte below 0x20, 0x7F, or 0xC2 (the lead byte of
/// U+0080–U+00BF) answers true, and the caller checks characters exactly.
/// Reasons are built on every decision, and the module pays per instruction.
fn may_have_control(bytes: &[u8]) -> bool {
    use crate::json::{ONES, below};
    let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        if below(v, 0x20) | below(v ^ (ONES * 0x7f), 1) | below(v ^ (ONES * 0xc2), 1) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().copied().any(suspect)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character up to U+0800 (all one- and two-byte UTF-8), at every
    /// offset of a 17-byte reason (so in each lane of a word and in the
    /// tail): the prefilter never misses a control character, and reasons
    /// come out as the character-by-character definition says.
    #[test]
    fn control_characters_become_spaces_wherever_they_are() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            for at in 0..17 {
                let mut reason = "x".repeat(at);
                reason.push(c);
                reason.push_str(&"y".repeat(16 - at));
                let expected: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                if c.is_control() {
                    assert!(may_have_control(reason.as_bytes()), "{c:?} at {at}");
                }
                assert_eq!(Decision::allow(reason.clone()).reason(), expected, "{c:?} at {at}");
            }
        }
    }

    /// Every byte value at every offset of a 17-byte string escapes as
    /// serde_json escapes it (quotes, backslashes, control characters;
    /// `to_json` leaves the rest alone).
    #[test]
    fn escaping_matches_serde_json_in_every_position() {
        for c in (0u32..0x100).filter_map(char::from_u32) {
            for at in 0..17 {
                let mut text = "a".repeat(at);
                text.push(c);
                text.push_str(&"b".repeat(16 - at));
                let mut ours = String::new();
                crate::json::escape_into(&mut ours, &text);
                let theirs = serde_json::to_string(&text).expect("serializes");
                assert_eq!(format!("\"{ours}\""), theirs, "{c:?} at {at}");
            }
        }
    }
}
