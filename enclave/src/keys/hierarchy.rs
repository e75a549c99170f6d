//! The key hierarchy: one root key, and keys derived from it with HKDF-SHA256
//! (RFC 5869): the record-sealing key, one key-encryption key per tenant, and
//! per-tenant HMAC keys (imported-material fingerprints, audit context digests).
//!
//! Every per-tenant key is derived from the tenant id **and the tenant's
//! generation** ([`TenantGeneration`]): 32 random bytes drawn when the tenant
//! is created and kept in its sealed record, so a tenant id created again
//! (after the host destroyed or hid the first record) derives other keys and
//! can never open the keys of the earlier tenant of that id.
//!
//! Derived keys are computed once and kept in enclave memory; all of them are
//! zeroized on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::Key256;

/// Length of a tenant generation, in bytes.
pub const GENERATION_LEN: usize = 32;

/// A tenant's generation: random bytes drawn (from the NSM in nitro mode)
/// when the tenant is created, sealed in its record, part of every
/// derivation of the tenant's keys. Not secret on its own (the root is), but
/// it only ever travels sealed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantGeneration([u8; GENERATION_LEN]);

impl TenantGeneration {
    pub fn from_bytes(bytes: [u8; GENERATION_LEN]) -> Self {
        TenantGeneration(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; GENERATION_LEN] {
        &self.0
    }
}

impl serde::Serialize for TenantGeneration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for TenantGeneration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        let bytes: [u8; GENERATION_LEN] = bytes
            .into_vec()
            .try_into()
            .map_err(|_| serde::de::Error::custom("a tenant generation is 32 bytes"))?;
        Ok(TenantGeneration(bytes))
    }
}

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
    tenant_keks: Mutex<HashMap<(String, TenantGeneration), Arc<Key256>>>,
    audit_signing: p256::ecdsa::SigningKey,
}

impl Hierarchy {
    /// The root itself: only for releasing it to an attested node of the
    /// same deployment (`custody::join`).
    pub(crate) fn root(&self) -> &Key256 {
        &self.root
    }

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

    /// The key that wraps the CMK material of `tenant` of `generation`.
    pub fn tenant_kek(&self, tenant: &str, generation: &TenantGeneration) -> Arc<Key256> {
        let mut keks = self
            .tenant_keks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            keks.entry((tenant.to_owned(), *generation))
                .or_insert_with(|| Arc::new(derive_tenant(&self.root, INFO_TENANT_KEK, tenant, generation))),
        )
    }

    /// The HMAC key of a tenant's imported-material fingerprints
    /// (`keys::import::fingerprint`); derived on demand, imports are rare.
    pub fn material_fingerprint_key(&self, tenant: &str, generation: &TenantGeneration) -> Key256 {
        derive_tenant(&self.root, INFO_MATERIAL_FINGERPRINT, tenant, generation)
    }

    /// The HMAC key of a tenant's encryption-context digests in audit records
    /// (`audit::context::digest`); derived on demand (two HMAC-SHA256 calls).
    pub fn audit_context_key(&self, tenant: &str, generation: &TenantGeneration) -> Key256 {
        derive_tenant(&self.root, INFO_AUDIT_CONTEXT, tenant, generation)
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
    derive_parts(root, &[info, suffix])
}

/// A per-tenant key: info ‖ tenant id ‖ generation. The generation has a
/// fixed length and comes last, so distinct (id, generation) pairs never
/// give the same input.
fn derive_tenant(root: &Key256, info: &[u8], tenant: &str, generation: &TenantGeneration) -> Key256 {
    derive_parts(root, &[info, tenant.as_bytes(), generation.as_bytes()])
}

fn derive_parts(root: &Key256, info: &[&[u8]]) -> Key256 {
    let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), root.expose());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255*32 output limit, so expand cannot fail.
    let ok = hk.expand_multi_info(info, &mut out).is_ok();
    debug_assert!(ok);
    Key256::from_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: TenantGeneration = TenantGeneration([1; GENERATION_LEN]);
    const G2: TenantGeneration = TenantGeneration([2; GENERATION_LEN]);

    #[test]
    fn derived_keys_are_distinct_and_stable() {
        let a = Hierarchy::new(Key256::from_bytes([7; 32]));
        let b = Hierarchy::new(Key256::from_bytes([7; 32]));
        assert_eq!(*a.sealing_key(), *b.sealing_key());
        assert_eq!(*a.tenant_kek("111122223333", &G1), *b.tenant_kek("111122223333", &G1));
        assert!(*a.tenant_kek("111122223333", &G1) != *a.tenant_kek("444455556666", &G1));
        assert!(*a.tenant_kek("", &G1) != *a.sealing_key());
        assert!(*a.sealing_key() != *a.root_for_tests());
        assert!(a.audit_context_key("111122223333", &G1) != a.audit_context_key("444455556666", &G1));
        assert!(a.audit_context_key("111122223333", &G1) != a.material_fingerprint_key("111122223333", &G1));
        assert!(a.audit_context_key("111122223333", &G1) != *a.tenant_kek("111122223333", &G1));
        let other = Hierarchy::new(Key256::from_bytes([8; 32]));
        assert!(*other.sealing_key() != *a.sealing_key());
    }

    /// A tenant id created again gets another generation, hence other keys:
    /// every per-tenant key depends on the generation; the same generation
    /// gives the same keys (across hierarchies of the same root too).
    #[test]
    fn tenant_keys_depend_on_the_generation() {
        let a = Hierarchy::new(Key256::from_bytes([7; 32]));
        let b = Hierarchy::new(Key256::from_bytes([7; 32]));
        let t = "111122223333";
        assert!(*a.tenant_kek(t, &G1) != *a.tenant_kek(t, &G2));
        assert!(a.material_fingerprint_key(t, &G1) != a.material_fingerprint_key(t, &G2));
        assert!(a.audit_context_key(t, &G1) != a.audit_context_key(t, &G2));
        assert_eq!(*a.tenant_kek(t, &G2), *b.tenant_kek(t, &G2));
        assert!(a.material_fingerprint_key(t, &G2) == b.material_fingerprint_key(t, &G2));
        assert!(a.audit_context_key(t, &G1) == b.audit_context_key(t, &G1));
        // The cache is keyed by both: asking for G1 after G2 is still G1's key.
        assert_eq!(*a.tenant_kek(t, &G1), *b.tenant_kek(t, &G1));
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
