//! The stored form of a customer master key (CMK). A record is sealed as a
//! whole by the store layer; inside it, each version's material is wrapped
//! again under the owning tenant's KEK with the key's ARN and version as
//! associated data, so material can't be moved between keys or tenants.

use serde::{Deserialize, Serialize};

use super::aead;
pub use crate::keys::spec::{KeySpec, KeyUsage};
use crate::secret::{Key256, SecretBytes};

/// Store namespace of key records; record key `<tenant>/<key uuid>`.
pub const NAMESPACE: &str = "key";

pub fn record_key(tenant: &str, key_id: &uuid::Uuid) -> String {
    format!("{tenant}/{key_id}")
}

/// AWS KMS key states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
        }
    }
}

/// Where a key's material comes from. Stored (and rendered) as AWS's names;
/// the other AWS origins (`AWS_CLOUDHSM`, `EXTERNAL_KEY_STORE`) are refused
/// at CreateKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Origin {
    /// Keyward generated the material.
    AwsKms,
    /// The customer imports the material (BYOK).
    External,
}

impl Origin {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "AWS_KMS" => Origin::AwsKms,
            "EXTERNAL" => Origin::External,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::AwsKms => "AWS_KMS",
            Origin::External => "EXTERNAL",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether imported material expires. Stored (and rendered) as AWS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ExpirationModel {
    KeyMaterialExpires,
    KeyMaterialDoesNotExpire,
}

impl ExpirationModel {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "KEY_MATERIAL_EXPIRES" => ExpirationModel::KeyMaterialExpires,
            "KEY_MATERIAL_DOES_NOT_EXPIRE" => ExpirationModel::KeyMaterialDoesNotExpire,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExpirationModel::KeyMaterialExpires => "KEY_MATERIAL_EXPIRES",
            ExpirationModel::KeyMaterialDoesNotExpire => "KEY_MATERIAL_DOES_NOT_EXPIRE",
        }
    }
}

impl std::fmt::Display for ExpirationModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a key's material (or another secret of the key, such as a
/// BYOK wrapping key), wrapped under the tenant KEK with AES-256-GCM and
/// associated data naming what it is.
#[derive(Clone, Serialize, Deserialize)]
pub struct WrappedMaterial {
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
}

impl WrappedMaterial {
    /// Wraps `secret` under `kek`, bound to `aad`, with a fresh nonce.
    pub fn seal(kek: &Key256, aad: &[u8], secret: &[u8]) -> Result<Self, MaterialError> {
        let nonce = aead::random_nonce();
        let ciphertext = aead::seal(kek, &nonce, aad, secret).map_err(|_| MaterialError::Seal)?;
        Ok(WrappedMaterial {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Unwraps what [`WrappedMaterial::seal`] wrapped with the same `kek` and `aad`.
    pub fn open(&self, kek: &Key256, aad: &[u8]) -> Result<SecretBytes, MaterialError> {
        aead::open(kek, &self.nonce, aad, &self.ciphertext)
            .map(SecretBytes::new)
            .map_err(|_| MaterialError::Forged)
    }
}

/// One rotation of a key: which version it created, when, and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotationEntry {
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub date: i64,
    pub on_demand: bool,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: uuid::Uuid,
    pub tenant: String,
    pub arn: String,
    pub description: String,
    /// Seconds since the Unix epoch.
    pub creation_date: i64,
    pub state: KeyState,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: Origin,
    /// Version `n` is at index `n - 1`; the last one encrypts.
    pub versions: Vec<WrappedMaterial>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// When a key in PendingDeletion is destroyed (seconds since the epoch).
    #[serde(default)]
    pub deletion_date: Option<i64>,
    /// Automatic rotation period; `None` when automatic rotation is off.
    #[serde(default)]
    pub rotation_period_days: Option<u32>,
    /// When the next automatic rotation is due.
    #[serde(default)]
    pub next_rotation_date: Option<i64>,
    /// Every rotation so far, oldest first.
    #[serde(default)]
    pub rotations: Vec<RotationEntry>,
    /// Release only to attested recipients (`Keyward.UpdateKeyAttestationPolicy`).
    #[serde(default)]
    pub attestation: Option<AttestationPolicy>,
    /// SHA-256 (hex) of the attached policy module, if any.
    #[serde(default)]
    pub policy_module: Option<String>,
    /// Imported material (`Origin: EXTERNAL`): set while material is imported.
    #[serde(default)]
    pub expiration_model: Option<ExpirationModel>,
    /// When imported material expires (seconds since the epoch).
    #[serde(default)]
    pub valid_to: Option<i64>,
    /// Keyed fingerprint of the material first imported into this key (see
    /// `keys::import::fingerprint`): only the same material may come back.
    #[serde(default)]
    pub material_fingerprint: Option<[u8; 32]>,
    /// `Keyward.LockKeyProtection`: the attestation policy and the policy
    /// module can only be made stricter, never removed. Absent (false) in
    /// records of unlocked keys, so their sealed bytes are unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protection_locked: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A key's (or a tenant's default) attestation policy, like AWS's
/// `kms:RecipientAttestation:*` policy conditions. A policy always requires
/// a verified `Recipient` on every operation that releases a key-derived
/// secret, whatever `require_recipient` says (records written before issue
/// 20 may hold `false` with PCRs: they now require a Recipient too).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttestationPolicy {
    /// Always `true` in policies written since issue 20 (kept for the
    /// records' layout).
    pub require_recipient: bool,
    /// PCR index → allowed values (lower-case hex); every listed index must
    /// match. Empty: any verified enclave (`AllowAnyEnclave`, weak; a
    /// pre-issue-20 `RequireRecipient` without PCRs reads as this).
    pub allowed_pcrs: std::collections::BTreeMap<u8, Vec<String>>,
}

impl AttestationPolicy {
    /// A policy that admits any verified enclave of any account (no measurement).
    pub fn allows_any_enclave(&self) -> bool {
        self.allowed_pcrs.is_empty()
    }

    /// Whether every recipient this policy admits is admitted by `old` too:
    /// each of `old`'s PCRs is still checked, against a subset of its values
    /// (more PCRs may be added). Anything is at least as strict as a policy
    /// that admits any enclave.
    pub fn is_at_least_as_strict_as(&self, old: &AttestationPolicy) -> bool {
        if old.allows_any_enclave() {
            return true;
        }
        old.allowed_pcrs.iter().all(|(index, old_values)| {
            self.allowed_pcrs.get(index).is_some_and(|values| {
                !values.is_empty()
                    && values
                        .iter()
                        .all(|v| old_values.iter().any(|o| o.eq_ignore_ascii_case(v)))
            })
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaterialError {
    #[error("key version {0} does not exist")]
    NoSuchVersion(u32),
    #[error("key material failed authentication")]
    Forged,
    /// Wrapping itself failed (never an empty ciphertext).
    #[error("key material could not be wrapped")]
    Seal,
}

impl KeyRecord {
    /// The version new ciphertexts use (versions count from 1).
    pub fn current_version(&self) -> u32 {
        self.versions.len() as u32
    }

    /// Adds a version holding `material`, wrapped under `kek`.
    pub fn push_version(&mut self, kek: &Key256, material: &[u8]) -> Result<(), MaterialError> {
        let version = self.current_version() + 1;
        let aad = material_aad(&self.arn, version);
        self.versions.push(WrappedMaterial::seal(kek, &aad, material)?);
        Ok(())
    }

    /// Unwraps the material of `version`.
    pub fn material(&self, kek: &Key256, version: u32) -> Result<SecretBytes, MaterialError> {
        let index = usize::try_from(version)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .ok_or(MaterialError::NoSuchVersion(version))?;
        let wrapped = self.versions.get(index).ok_or(MaterialError::NoSuchVersion(version))?;
        wrapped.open(kek, &material_aad(&self.arn, version))
    }

    /// Unwraps a symmetric (AES-256) version.
    pub fn symmetric_material(&self, kek: &Key256, version: u32) -> Result<Key256, MaterialError> {
        Key256::from_slice(self.material(kek, version)?.expose()).ok_or(MaterialError::Forged)
    }
}

pub(crate) fn material_aad(arn: &str, version: u32) -> Vec<u8> {
    let mut aad = b"keyward/v1/cmk-material\0".to_vec();
    aad.extend_from_slice(arn.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// An enabled SYMMETRIC_DEFAULT key record without material, for tests.
#[cfg(test)]
pub(crate) fn test_record(arn: &str) -> KeyRecord {
    KeyRecord {
        key_id: uuid::Uuid::new_v4(),
        tenant: "111122223333".into(),
        arn: arn.into(),
        description: String::new(),
        creation_date: 0,
        state: KeyState::Enabled,
        key_spec: KeySpec::SymmetricDefault,
        key_usage: KeyUsage::EncryptDecrypt,
        origin: Origin::AwsKms,
        versions: Vec::new(),
        tags: Default::default(),
        deletion_date: None,
        rotation_period_days: None,
        next_rotation_date: None,
        rotations: Vec::new(),
        attestation: None,
        policy_module: None,
        expiration_model: None,
        valid_to: None,
        material_fingerprint: None,
        protection_locked: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arn: &str) -> KeyRecord {
        test_record(arn)
    }

    #[test]
    fn material_roundtrips_per_version_and_is_bound_to_the_key() {
        let kek = Key256::from_bytes([1; 32]);
        let mut rec = record("arn:a");
        rec.push_version(&kek, &[5; 32]).expect("wraps");
        rec.push_version(&kek, &[6; 32]).expect("wraps");
        assert_eq!(rec.current_version(), 2);
        assert_eq!(
            rec.symmetric_material(&kek, 1).expect("v1"),
            Key256::from_bytes([5; 32])
        );
        assert_eq!(rec.material(&kek, 2).expect("v2").expose(), &[6u8; 32]);
        assert_eq!(rec.material(&kek, 0).err(), Some(MaterialError::NoSuchVersion(0)));
        assert_eq!(rec.material(&kek, 3).err(), Some(MaterialError::NoSuchVersion(3)));
        assert_eq!(
            rec.material(&Key256::from_bytes([2; 32]), 1).err(),
            Some(MaterialError::Forged)
        );
        // Material copied into another key's record does not unwrap there.
        let mut other = record("arn:b");
        other.versions = rec.versions.clone();
        assert_eq!(other.material(&kek, 1).err(), Some(MaterialError::Forged));
    }

    /// `KeyRecord` as it was sealed before its spec, usage, origin and
    /// expiration model were typed: the same fields in the same order.
    #[derive(Serialize, Deserialize)]
    struct StringTypedRecord {
        key_id: uuid::Uuid,
        tenant: String,
        arn: String,
        description: String,
        creation_date: i64,
        state: KeyState,
        key_spec: String,
        key_usage: String,
        origin: String,
        versions: Vec<WrappedMaterial>,
        #[serde(default)]
        tags: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        deletion_date: Option<i64>,
        #[serde(default)]
        rotation_period_days: Option<u32>,
        #[serde(default)]
        next_rotation_date: Option<i64>,
        #[serde(default)]
        rotations: Vec<RotationEntry>,
        #[serde(default)]
        attestation: Option<AttestationPolicy>,
        #[serde(default)]
        policy_module: Option<String>,
        #[serde(default)]
        expiration_model: Option<String>,
        #[serde(default)]
        valid_to: Option<i64>,
        #[serde(default)]
        material_fingerprint: Option<[u8; 32]>,
    }

    #[test]
    fn records_sealed_with_string_fields_decode_and_reencode_byte_identical() {
        let kek = Key256::from_bytes([1; 32]);
        let mut material = record("arn:a");
        material.push_version(&kek, &[5; 32]).expect("wraps");
        let cases = [
            ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AWS_KMS", None),
            (
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "EXTERNAL",
                Some("KEY_MATERIAL_EXPIRES"),
            ),
            (
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "EXTERNAL",
                Some("KEY_MATERIAL_DOES_NOT_EXPIRE"),
            ),
            ("ECC_NIST_P256", "SIGN_VERIFY", "AWS_KMS", None),
            ("ECC_NIST_P256", "KEY_AGREEMENT", "AWS_KMS", None),
            ("HMAC_224", "GENERATE_VERIFY_MAC", "AWS_KMS", None),
            ("HMAC_256", "GENERATE_VERIFY_MAC", "AWS_KMS", None),
            ("HMAC_384", "GENERATE_VERIFY_MAC", "AWS_KMS", None),
            ("HMAC_512", "GENERATE_VERIFY_MAC", "AWS_KMS", None),
        ];
        for (spec, usage, origin, model) in cases {
            let old = StringTypedRecord {
                key_id: uuid::Uuid::from_u128(7),
                tenant: "111122223333".into(),
                arn: "arn:a".into(),
                description: "d".into(),
                creation_date: 1_700_000_000,
                state: KeyState::Enabled,
                key_spec: spec.into(),
                key_usage: usage.into(),
                origin: origin.into(),
                versions: material.versions.clone(),
                tags: [("k".to_owned(), "v".to_owned())].into(),
                deletion_date: Some(1),
                rotation_period_days: Some(90),
                next_rotation_date: Some(2),
                rotations: vec![RotationEntry {
                    version: 1,
                    date: 3,
                    on_demand: true,
                }],
                attestation: Some(AttestationPolicy::default()),
                policy_module: Some("ab".into()),
                expiration_model: model.map(str::to_owned),
                valid_to: Some(4),
                material_fingerprint: Some([9; 32]),
            };
            let sealed = serde_cbor::to_vec(&old).expect("encode old");
            let new: KeyRecord = serde_cbor::from_slice(&sealed).expect("old record decodes");
            assert_eq!(new.key_spec.as_str(), spec);
            assert_eq!(new.key_usage.as_str(), usage);
            assert_eq!(new.origin.as_str(), origin);
            assert_eq!(new.expiration_model.map(ExpirationModel::as_str), model);
            assert!(
                !new.protection_locked,
                "records sealed before the lock flag are unlocked"
            );
            assert_eq!(
                serde_cbor::to_vec(&new).expect("encode new"),
                sealed,
                "{spec}/{usage}/{origin}/{model:?} re-encodes to the same bytes"
            );
            assert_eq!(new.material(&kek, 1).expect("material").expose(), &[5u8; 32]);
        }
        // A name the enums do not know is a decode error, not a default.
        let mut unknown: StringTypedRecord =
            serde_cbor::from_slice(&serde_cbor::to_vec(&record("arn:a")).expect("encode"))
                .expect("new record decodes as old");
        unknown.key_spec = "RSA_2048".into();
        let sealed = serde_cbor::to_vec(&unknown).expect("encode");
        assert!(serde_cbor::from_slice::<KeyRecord>(&sealed).is_err());
    }

    #[test]
    fn the_lock_flag_round_trips_and_is_absent_when_unlocked() {
        let unlocked = record("arn:a");
        let unlocked_bytes = serde_cbor::to_vec(&unlocked).expect("encode");
        // Unlocked records have exactly the layout of records sealed before the flag.
        let as_old: StringTypedRecord = serde_cbor::from_slice(&unlocked_bytes).expect("decodes as old");
        assert_eq!(serde_cbor::to_vec(&as_old).expect("encode old"), unlocked_bytes);
        let locked = KeyRecord {
            protection_locked: true,
            ..record("arn:a")
        };
        let bytes = serde_cbor::to_vec(&locked).expect("encode");
        assert_ne!(bytes.len(), unlocked_bytes.len());
        let back: KeyRecord = serde_cbor::from_slice(&bytes).expect("decode");
        assert!(back.protection_locked);
        assert_eq!(serde_cbor::to_vec(&back).expect("encode"), bytes);
    }

    #[test]
    fn stricter_means_a_subset_of_the_admitted_measurements() {
        let policy = |pcrs: &[(u8, &[&str])]| AttestationPolicy {
            require_recipient: true,
            allowed_pcrs: pcrs
                .iter()
                .map(|(i, v)| (*i, v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        };
        let any = policy(&[]);
        let ab = policy(&[(0, &["aa", "bb"])]);
        let a = policy(&[(0, &["aa"])]);
        let a_and_pcr8 = policy(&[(0, &["aa"]), (8, &["cc"])]);
        let c = policy(&[(0, &["cc"])]);
        let only_pcr8 = policy(&[(8, &["cc"])]);
        assert!(ab.is_at_least_as_strict_as(&any));
        assert!(any.is_at_least_as_strict_as(&any));
        assert!(a.is_at_least_as_strict_as(&ab));
        assert!(ab.is_at_least_as_strict_as(&ab));
        assert!(a_and_pcr8.is_at_least_as_strict_as(&a));
        assert!(!ab.is_at_least_as_strict_as(&a));
        assert!(!c.is_at_least_as_strict_as(&ab));
        assert!(!any.is_at_least_as_strict_as(&a));
        assert!(!only_pcr8.is_at_least_as_strict_as(&a));
        assert!(!a.is_at_least_as_strict_as(&a_and_pcr8));
    }
}
