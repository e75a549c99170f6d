//! What an audit record says about a request's encryption context: its keys
//! in the clear, its values only as a keyed hash. The values are customer
//! data; the hash lets an auditor see that two requests carried the same
//! context (within a tenant) without the chain, or anyone reading it,
//! learning the values.
//!
//! `Hash = HMAC-SHA256(K_tenant, "keyward/audit/encryption-context/v1\0" ‖
//! canonical context)`, the canonical context being the associated-data
//! encoding (`keys::context::EncryptionContext::canonical`: pair count, then
//! each key and value length-prefixed, sorted by key). `K_tenant` is derived
//! from the root key per tenant with its own HKDF label
//! (`keys::hierarchy::Hierarchy::audit_context_key`), so equal contexts of
//! different tenants hash differently and no other key is reused.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::context::EncryptionContext;
use crate::secret::Key256;

const DOMAIN: &[u8] = b"keyward/audit/encryption-context/v1\0";

/// An encryption context as the audit records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextDigest {
    /// The context's keys, sorted.
    pub keys: Vec<String>,
    /// Lower-case hex HMAC-SHA256 of the whole context (see the module documentation).
    pub hash: String,
}

/// The digest of `context` under the tenant's audit-context key `key`.
pub fn digest(key: &Key256, context: &EncryptionContext) -> ContextDigest {
    // HMAC (RFC 2104) is defined for keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose()).expect("HMAC accepts keys of any length");
    mac.update(DOMAIN);
    mac.update(&context.canonical());
    ContextDigest {
        keys: context.pairs().keys().cloned().collect(),
        hash: hex::encode(mac.finalize().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).expect("valid")
    }

    #[test]
    fn keys_in_the_clear_values_only_keyed() {
        let key = Key256::from_bytes([1; 32]);
        let d = digest(&key, &context(&[("b", "secret-value"), ("a", "x")]));
        assert_eq!(d.keys, ["a", "b"]);
        assert_eq!(d.hash.len(), 64);
        assert!(!d.hash.contains(&hex::encode("secret-value")));
        // Stable for equal contexts, different for other values, other keys, another key.
        assert_eq!(d, digest(&key, &context(&[("a", "x"), ("b", "secret-value")])));
        assert_ne!(d.hash, digest(&key, &context(&[("a", "x"), ("b", "other")])).hash);
        assert_ne!(
            d.hash,
            digest(&key, &context(&[("a", "x"), ("c", "secret-value")])).hash
        );
        assert_ne!(
            d.hash,
            digest(
                &Key256::from_bytes([2; 32]),
                &context(&[("a", "x"), ("b", "secret-value")])
            )
            .hash
        );
        // The empty context has a digest too (a context operation without a context).
        let empty = digest(&key, &context(&[]));
        assert!(empty.keys.is_empty() && empty.hash.len() == 64);
    }
}
