//! Untrusted text in messages and logs.

/// Echo untrusted text in messages only in a bounded, printable form.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
