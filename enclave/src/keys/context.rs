//! The encryption context: caller-chosen key/value pairs bound to a ciphertext
//! as associated data. Canonical form: pairs sorted by key, each length-prefixed.

use std::collections::BTreeMap;

/// AWS KMS caps an encryption context; we apply the same budget to the sum of
/// key and value bytes.
pub const MAX_CONTEXT_BYTES: usize = 8192;

/// A validated encryption context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    #[error("encryption context exceeds {MAX_CONTEXT_BYTES} bytes")]
    TooLarge,
    #[error("encryption context keys must not be empty")]
    EmptyKey,
}

impl EncryptionContext {
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, ContextError> {
        let size: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CONTEXT_BYTES {
            return Err(ContextError::TooLarge);
        }
        if pairs.keys().any(String::is_empty) {
            return Err(ContextError::EmptyKey);
        }
        Ok(EncryptionContext(pairs))
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Unambiguous, order-independent bytes for the associated data.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).expect("valid")
    }

    #[test]
    fn canonical_form_is_order_independent_and_unambiguous() {
        assert_eq!(
            ctx(&[("a", "1"), ("b", "2")]).canonical(),
            ctx(&[("b", "2"), ("a", "1")]).canonical()
        );
        assert_ne!(ctx(&[("ab", "c")]).canonical(), ctx(&[("a", "bc")]).canonical());
        assert_ne!(ctx(&[]).canonical(), ctx(&[("k", "")]).canonical());
    }

    #[test]
    fn limits() {
        let big = "x".repeat(MAX_CONTEXT_BYTES);
        assert_eq!(
            EncryptionContext::new([("k".to_string(), big)].into_iter().collect()),
            Err(ContextError::TooLarge)
        );
        assert_eq!(
            EncryptionContext::new([(String::new(), "v".to_string())].into_iter().collect()),
            Err(ContextError::EmptyKey)
        );
    }
}
