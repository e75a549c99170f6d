//! The key hierarchy: one root key, and keys derived from it with HKDF-SHA256
//! (RFC 5869): the record-sealing key, one key-encryption key per tenant, and
//! per-tenant HMAC keys (imported-material fingerprints, audit context digests).
//!
//! Derived keys are computed once and kept in enclave memory; all of them are
//! zeroized on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::Key256;

/// Domain separation for every derivation from the root key.
const HKDF_SALT: &[u8] = b"keyward/v1/hkdf-salt";
const INFO_SEALING: &[u8] = b"keyward/v1/sealing-key";
const INFO_TENANT_KEK: &[u8] = b"keyward/v1/tenant-kek/";
const INFO_AUDIT_SIGNING: &[u8] = b"keyward/v1/audit-signing-key/";
const INFO_MATERIAL_FINGERPRINT: &[u8] = b"keyward/v1/material-fingerprint-key/";
const INFO_AUDIT_CONTEXT: &[u8] = b"keyward/v1/audit-context-key/";

/// The root of the hierarchy. Exists only in enclave memory.
pub struct Hierarchy {
    root: Key256,
    sealing: Arc<Key256>,
    tenant_keks: Mutex<HashMap<String, Arc<Key256>>>,
    audit_signing: p256::ecdsa::SigningKey,
}

impl Hierarchy {
    pub fn new(root: Key256) -> Self {
        let sealing = Arc::new(derive(&root, INFO_SEALING, b""));
        let audit_signing = derive_signing_key(&root);
        Hierarchy {
            root,
            sealing,
            tenant_keks: Mutex::new(HashMap::new()),
            audit_signing,
        }
    }

    /// The key that seals every record the enclave persists through the host.
    pub fn sealing_key(&self) -> Arc<Key256> {
        Arc::clone(&self.sealing)
    }

    /// The key that wraps a tenant's CMK material.
    pub fn tenant_kek(&self, tenant: &str) -> Arc<Key256> {
        let mut keks = self
            .tenant_keks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            keks.entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(derive(&self.root, INFO_TENANT_KEK, tenant.as_bytes()))),
        )
    }

    /// The HMAC key of a tenant's imported-material fingerprints
    /// (`keys::import::fingerprint`); derived on demand, imports are rare.
    pub fn material_fingerprint_key(&self, tenant: &str) -> Key256 {
        derive(&self.root, INFO_MATERIAL_FINGERPRINT, tenant.as_bytes())
    }

    /// The HMAC key of a tenant's encryption-context digests in audit records
    /// (`audit::context::digest`); derived on demand (two HMAC-SHA256 calls).
    pub fn audit_context_key(&self, tenant: &str) -> Key256 {
        derive(&self.root, INFO_AUDIT_CONTEXT, tenant.as_bytes())
    }

    /// The P-256 key that signs audit chain heads (stable across restarts).
    pub fn audit_signing_key(&self) -> &p256::ecdsa::SigningKey {
        &self.audit_signing
    }

    #[cfg(test)]
    pub(crate) fn root_for_tests(&self) -> &Key256 {
        &self.root
    }
}

/// The audit signing public key (P-256 SubjectPublicKeyInfo DER) that
/// `root` derives: the root's public commitment (custody's boot record), the
/// key `Keyward.GetAttestationDocument` attests once the root is in use.
pub fn audit_public_key_der(root: &Key256) -> Option<Vec<u8>> {
    use p256::pkcs8::EncodePublicKey as _;
    derive_signing_key(root)
        .verifying_key()
        .to_public_key_der()
        .ok()
        .map(|der| der.into_vec())
}

/// A P-256 scalar from HKDF output; the rare out-of-range output (< 2^-32)
/// moves to the next counter value.
fn derive_signing_key(root: &Key256) -> p256::ecdsa::SigningKey {
    let mut counter = 0u32;
    loop {
        let candidate = derive(root, INFO_AUDIT_SIGNING, &counter.to_be_bytes());
        if let Ok(key) = p256::ecdsa::SigningKey::from_slice(candidate.expose()) {
            return key;
        }
        counter += 1;
    }
}

fn derive(root: &Key256, info: &[u8], suffix: &[u8]) -> Key256 {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), root.expose());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255*32 output limit, so expand cannot fail.
    let ok = hk.expand_multi_info(&[info, suffix], &mut out).is_ok();
    debug_assert!(ok);
    Key256::from_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let a = Hierarchy::new(Key256::from_bytes([7; 32]));
        let b = Hierarchy::new(Key256::from_bytes([7; 32]));
        assert_eq!(*a.sealing_key(), *b.sealing_key());
        assert_eq!(*a.tenant_kek("111122223333"), *b.tenant_kek("111122223333"));
        assert!(*a.tenant_kek("111122223333") != *a.tenant_kek("444455556666"));
        assert!(*a.tenant_kek("") != *a.sealing_key());
        assert!(*a.sealing_key() != *a.root_for_tests());
        assert!(a.audit_context_key("111122223333") != a.audit_context_key("444455556666"));
        assert!(a.audit_context_key("111122223333") != a.material_fingerprint_key("111122223333"));
        assert!(a.audit_context_key("111122223333") != *a.tenant_kek("111122223333"));
        let other = Hierarchy::new(Key256::from_bytes([8; 32]));
        assert!(*other.sealing_key() != *a.sealing_key());
    }

    #[test]
    fn audit_public_key_der_is_the_hierarchy_audit_key() {
        use p256::pkcs8::EncodePublicKey as _;
        let root = Key256::from_bytes([7; 32]);
        let expected = Hierarchy::new(Key256::from_bytes([7; 32]))
            .audit_signing_key()
            .verifying_key()
            .to_public_key_der()
            .expect("SPKI")
            .into_vec();
        assert_eq!(audit_public_key_der(&root), Some(expected));
        assert_ne!(
            audit_public_key_der(&root),
            audit_public_key_der(&Key256::from_bytes([8; 32]))
        );
    }
}
