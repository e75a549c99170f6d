//! The audit chain verifier.
//!
//! Every request to Keyward appends one [`AuditRecord`] inside the enclave.
//! Records form one hash chain per tenant (`Chain` = tenant id) plus the
//! `operator` chain; the enclave signs each chain's [`Head`] with its P-256
//! audit key. [`verify_chain`] checks a chain as
//! [`crate::Client::fetch_audit_chain`] returns it, from the record format in
//! `ARCHITECTURE.md` ("Audit chain"):
//!
//! ```text
//! Hash = SHA-256( "keyward/audit/v1\0"
//!                 ‖ u64be(Sequence) ‖ u64be(Time)
//!                 ‖ lp(RequestId) ‖ lp(Chain) ‖ lp(AccessKeyId) ‖ lp(Role) ‖ lp(Operation)
//!                 ‖ lp(KeyArn) ‖ lp(Decision) ‖ lp(Reason) ‖ lp(PolicyModule)
//!                 ‖ PreviousHash (32 raw bytes) )
//!   for a record without any of the fields below (every record before they existed);
//!   with any of RecipientModuleId, RecipientPcrs, (Source)EncryptionContextKeys/Hash:
//! Hash = SHA-256( "keyward/audit/v2\0" ‖ … as v1 up to lp(PolicyModule)
//!                 ‖ lp(RecipientModuleId) ‖ u32be(#RecipientPcrs)
//!                 ‖ for each PCR by ascending index: u8(index) ‖ lp(hex value)
//!                 ‖ u32be(#EncryptionContextKeys) ‖ lp(key)… ‖ lp(EncryptionContextHash)
//!                 ‖ u32be(#SourceEncryptionContextKeys) ‖ lp(key)… ‖ lp(SourceEncryptionContextHash)
//!                 ‖ PreviousHash (32 raw bytes) )
//! lp(s) = u32be(len(utf8(s))) ‖ utf8(s)
//! Head signature = ECDSA P-256/SHA-256 (DER, base64) over
//!     "keyward/audit-head/v1\0" ‖ lp(Chain) ‖ u64be(Sequence) ‖ Hash (32 raw bytes)
//! ```
//!
//! The verifier trusts only the public key it is given. Hashes are compared
//! as the canonical lowercase hex strings the enclave writes, so any change
//! to a record's text, including a hash's spelling, is reported.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation prefix of a record hash.
const RECORD_DOMAIN: &[u8] = b"keyward/audit/v1\0";
/// … of a record with what was attested or encryption-context fields.
const RECORD_DOMAIN_V2: &[u8] = b"keyward/audit/v2\0";
/// Domain separation prefix of the signed head message.
const HEAD_DOMAIN: &[u8] = b"keyward/audit-head/v1\0";
/// `PreviousHash` of record 1 (and the hash of an empty chain's head).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record as `Keyward.GetAuditLog` returns it.
///
/// A record whose sealed bytes did not authenticate in the enclave arrives
/// as `{"Sequence": n, "Corrupt": true}`: `corrupt` set, every other field
/// empty. Missing string fields (or `null`) read as empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AuditRecord {
    /// 1, 2, 3 … within the chain.
    pub sequence: u64,
    /// Enclave time, milliseconds since the epoch.
    pub time: u64,
    /// The request's id.
    #[serde(deserialize_with = "null_as_empty")]
    pub request_id: String,
    /// The chain: the tenant id, or `operator`.
    #[serde(deserialize_with = "null_as_empty")]
    pub chain: String,
    /// The caller's access key id.
    #[serde(deserialize_with = "null_as_empty")]
    pub access_key_id: String,
    /// The caller's roles joined by `,`.
    #[serde(deserialize_with = "null_as_empty")]
    pub role: String,
    /// The `X-Amz-Target` of the request.
    #[serde(deserialize_with = "null_as_empty")]
    pub operation: String,
    /// The key the request concerned.
    #[serde(deserialize_with = "null_as_empty")]
    pub key_arn: String,
    /// `Allow`, `Deny` or `Error`.
    #[serde(deserialize_with = "null_as_empty")]
    pub decision: String,
    /// AWS error type and message; empty when allowed.
    #[serde(deserialize_with = "null_as_empty")]
    pub reason: String,
    /// SHA-256 hex of the policy module that decided; empty when none did.
    #[serde(deserialize_with = "null_as_empty")]
    pub policy_module: String,
    /// The `module_id` of the verified attestation document of the
    /// request's `Recipient`; empty without one.
    #[serde(deserialize_with = "null_as_empty", skip_serializing_if = "String::is_empty")]
    pub recipient_module_id: String,
    /// That document's PCR0 and every PCR the attestation policy of a key the
    /// request acted on checks: index → lower-case hex.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub recipient_pcrs: BTreeMap<u8, String>,
    /// The keys of the operation's encryption context (ReEncrypt: the
    /// destination's), for operations that take one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_context_keys: Vec<String>,
    /// Hex HMAC-SHA256 of that context (keys and values) under a per-tenant
    /// key only the enclave holds: equal contexts of a tenant hash equally;
    /// the values are not recorded.
    #[serde(deserialize_with = "null_as_empty", skip_serializing_if = "String::is_empty")]
    pub encryption_context_hash: String,
    /// ReEncrypt's source encryption context keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_encryption_context_keys: Vec<String>,
    /// ReEncrypt's source encryption context hash.
    #[serde(deserialize_with = "null_as_empty", skip_serializing_if = "String::is_empty")]
    pub source_encryption_context_hash: String,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for record 1).
    #[serde(deserialize_with = "null_as_empty")]
    pub previous_hash: String,
    /// Hex SHA-256 of this record.
    #[serde(deserialize_with = "null_as_empty")]
    pub hash: String,
    /// The enclave could not authenticate this record's sealed bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
}

/// The signed head of a chain: its last record's sequence and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Head {
    /// The chain: the tenant id, or `operator`.
    pub chain: String,
    /// Sequence of the last record (0 for an empty chain).
    pub sequence: u64,
    /// Hex SHA-256 of the last record ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
    /// Base64 DER ECDSA P-256/SHA-256 signature by the enclave's audit key.
    pub signature: String,
}

/// What [`verify_chain`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The chain's name (tenant id, or `operator`). Check it is the one you expect.
    pub chain: String,
    /// How many records (1 to `records`) were verified; the head's sequence.
    pub records: u64,
    /// The signed head hash (hex).
    pub head_hash: String,
}

/// The first thing wrong with a chain, naming the record's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    /// The public key is not a P-256 SubjectPublicKeyInfo.
    InvalidPublicKey(String),
    /// Record `sequence` is missing: the records skip from `sequence - 1` to a later one.
    Missing { sequence: u64 },
    /// Records `sequence..=head` are missing: the records end before the signed head.
    MissingBeforeHead { sequence: u64, head: u64 },
    /// Record `found` stands where record `sequence` belongs (reordered or duplicated).
    OutOfOrder { sequence: u64, found: u64 },
    /// Record `sequence` is corrupt: its sealed bytes did not authenticate in the enclave.
    Corrupt { sequence: u64 },
    /// Record `sequence` belongs to another chain.
    WrongChain {
        sequence: u64,
        chain: String,
        expected: String,
    },
    /// Record `sequence`'s `PreviousHash` is not the previous record's `Hash`.
    BrokenLink { sequence: u64 },
    /// Record `sequence`'s content does not hash to its `Hash`: it was altered.
    Altered { sequence: u64 },
    /// Record `sequence` lies past the signed head, so nothing vouches for it.
    BeyondHead { sequence: u64, head: u64 },
    /// The head's hash is not the `Hash` of record `sequence`.
    HeadMismatch { sequence: u64 },
    /// The head (at `sequence`) is of another chain than the records.
    HeadChainMismatch {
        sequence: u64,
        head_chain: String,
        records_chain: String,
    },
    /// The head (at `sequence`) is not signed by the given key: forged, or another key.
    BadSignature { sequence: u64 },
}

impl AuditError {
    /// The sequence number of the first bad record (the head's sequence for
    /// a bad head); `None` for an unusable public key.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            AuditError::InvalidPublicKey(_) => None,
            AuditError::Missing { sequence }
            | AuditError::MissingBeforeHead { sequence, .. }
            | AuditError::OutOfOrder { sequence, .. }
            | AuditError::Corrupt { sequence }
            | AuditError::WrongChain { sequence, .. }
            | AuditError::BrokenLink { sequence }
            | AuditError::Altered { sequence }
            | AuditError::BeyondHead { sequence, .. }
            | AuditError::HeadMismatch { sequence }
            | AuditError::HeadChainMismatch { sequence, .. }
            | AuditError::BadSignature { sequence } => Some(*sequence),
        }
    }

    /// What is wrong, without the sequence number.
    pub fn what(&self) -> String {
        match self {
            AuditError::InvalidPublicKey(why) => format!("invalid audit public key: {why}"),
            AuditError::Missing { .. } => "missing record (gap in the sequence)".to_owned(),
            AuditError::MissingBeforeHead { sequence, head } if sequence == head => {
                "missing record: the records end before the signed head".to_owned()
            }
            AuditError::MissingBeforeHead { head, .. } => {
                format!("missing records: the records end before the signed head at {head}")
            }
            AuditError::OutOfOrder { sequence, found } => {
                format!("out of order: record {found} stands where record {sequence} belongs")
            }
            AuditError::Corrupt { .. } => "corrupt record (its sealed bytes did not authenticate)".to_owned(),
            AuditError::WrongChain { chain, expected, .. } => {
                format!("record of another chain ({chain:?}, expected {expected:?})")
            }
            AuditError::BrokenLink { .. } => "broken link: PreviousHash is not the previous record's Hash".to_owned(),
            AuditError::Altered { .. } => "hash mismatch: the record was altered".to_owned(),
            AuditError::BeyondHead { head, .. } => {
                format!("record past the signed head (at {head}): nothing vouches for it")
            }
            AuditError::HeadMismatch { .. } => "head hash does not match the record's Hash".to_owned(),
            AuditError::HeadChainMismatch {
                head_chain,
                records_chain,
                ..
            } => format!("head of another chain ({head_chain:?}; the records are of {records_chain:?})"),
            AuditError::BadSignature { .. } => "bad head signature (forged head, or not this audit key)".to_owned(),
        }
    }
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sequence() {
            Some(sequence) => write!(f, "record {sequence}: {}", self.what()),
            None => f.write_str(&self.what()),
        }
    }
}

impl std::error::Error for AuditError {}

/// Verifies a whole chain: `records` must be exactly records `1..=head.sequence`
/// of `head.chain`, in order, none corrupt, every `PreviousHash` the previous
/// record's `Hash`, every `Hash` the SHA-256 of its record, the head's hash
/// the last record's, and the head signed by `public_key_spki_der` (a P-256
/// SubjectPublicKeyInfo, DER).
///
/// Returns the first problem, naming the record's sequence number.
pub fn verify_chain(records: &[AuditRecord], head: &Head, public_key_spki_der: &[u8]) -> Result<Verified, AuditError> {
    let key = VerifyingKey::from_public_key_der(public_key_spki_der)
        .map_err(|e| AuditError::InvalidPublicKey(e.to_string()))?;

    // A head swapped in from another chain: every record agrees on a chain
    // other than the head's. (A single stray record is reported below.)
    let mut chains = records.iter().filter(|r| !r.corrupt).map(|r| r.chain.as_str());
    if let Some(first) = chains.next()
        && first != head.chain
        && chains.all(|c| c == first)
    {
        return Err(AuditError::HeadChainMismatch {
            sequence: head.sequence,
            head_chain: head.chain.clone(),
            records_chain: first.to_owned(),
        });
    }

    let mut previous_hash: &str = GENESIS_HASH;
    let mut previous_raw = [0u8; 32];
    let mut count: u64 = 0;
    for (index, record) in records.iter().enumerate() {
        let expected = count + 1;
        if record.sequence != expected {
            let absent = !records[index..].iter().any(|r| r.sequence == expected);
            return Err(if record.sequence > expected && absent {
                AuditError::Missing { sequence: expected }
            } else {
                AuditError::OutOfOrder {
                    sequence: expected,
                    found: record.sequence,
                }
            });
        }
        if expected > head.sequence {
            return Err(AuditError::BeyondHead {
                sequence: expected,
                head: head.sequence,
            });
        }
        if record.corrupt {
            return Err(AuditError::Corrupt { sequence: expected });
        }
        if record.chain != head.chain {
            return Err(AuditError::WrongChain {
                sequence: expected,
                chain: record.chain.clone(),
                expected: head.chain.clone(),
            });
        }
        if record.previous_hash != previous_hash {
            return Err(AuditError::BrokenLink { sequence: expected });
        }
        let computed = record_hash(record, &previous_raw).ok_or(AuditError::Altered { sequence: expected })?;
        if hex::encode(computed) != record.hash {
            return Err(AuditError::Altered { sequence: expected });
        }
        previous_hash = &record.hash;
        previous_raw = computed;
        count = expected;
    }

    if count < head.sequence {
        return Err(AuditError::MissingBeforeHead {
            sequence: count + 1,
            head: head.sequence,
        });
    }
    if head.hash != previous_hash {
        return Err(AuditError::HeadMismatch {
            sequence: head.sequence,
        });
    }
    verify_signature(head, &previous_raw, &key)?;

    Ok(Verified {
        chain: head.chain.clone(),
        records: count,
        head_hash: head.hash.clone(),
    })
}

/// Verifies only the signature of `head` (chain, sequence and hash, signed
/// by `public_key_spki_der`), without the records: what a verifier can check
/// of a head it received alone, e.g. with a [`crate::AuditLogPage`]
/// (the hash must be the canonical lowercase hex the enclave writes).
pub fn verify_head(head: &Head, public_key_spki_der: &[u8]) -> Result<(), AuditError> {
    let key = VerifyingKey::from_public_key_der(public_key_spki_der)
        .map_err(|e| AuditError::InvalidPublicKey(e.to_string()))?;
    let bad_signature = AuditError::BadSignature {
        sequence: head.sequence,
    };
    let raw: [u8; 32] = hex::decode(&head.hash)
        .ok()
        .filter(|raw| hex::encode(raw) == head.hash)
        .and_then(|raw| raw.try_into().ok())
        .ok_or(bad_signature)?;
    verify_signature(head, &raw, &key)
}

/// The head's signature over its chain, sequence and `hash_raw`.
fn verify_signature(head: &Head, hash_raw: &[u8; 32], key: &VerifyingKey) -> Result<(), AuditError> {
    let bad_signature = AuditError::BadSignature {
        sequence: head.sequence,
    };
    let message = head_message(&head.chain, head.sequence, hash_raw).ok_or(bad_signature.clone())?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(head.signature.trim())
        .ok()
        .and_then(|der| Signature::from_der(&der).ok())
        .ok_or(bad_signature.clone())?;
    key.verify(&message, &signature).map_err(|_| bad_signature)
}

/// The SubjectPublicKeyInfo DER of a P-256 public key given as DER or as
/// PEM (`-----BEGIN PUBLIC KEY-----`), e.g. the content of a key file.
pub fn public_key_spki_der(der_or_pem: &[u8]) -> Result<Vec<u8>, AuditError> {
    let invalid = |e: &dyn fmt::Display| AuditError::InvalidPublicKey(e.to_string());
    let text = std::str::from_utf8(der_or_pem).ok().map(str::trim);
    match text {
        Some(pem) if pem.starts_with("-----BEGIN") => {
            let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| invalid(&e))?;
            let der = key.to_public_key_der().map_err(|e| invalid(&e))?;
            Ok(der.as_bytes().to_vec())
        }
        _ => {
            VerifyingKey::from_public_key_der(der_or_pem).map_err(|e| invalid(&e))?;
            Ok(der_or_pem.to_vec())
        }
    }
}

/// `Hash` of `record` given the raw bytes of its `PreviousHash`; `None` for a
/// field too long to length-prefix (no genuine record has one).
fn record_hash(record: &AuditRecord, previous: &[u8; 32]) -> Option<[u8; 32]> {
    let v2 = !record.recipient_module_id.is_empty()
        || !record.recipient_pcrs.is_empty()
        || !record.encryption_context_keys.is_empty()
        || !record.encryption_context_hash.is_empty()
        || !record.source_encryption_context_keys.is_empty()
        || !record.source_encryption_context_hash.is_empty();
    let mut hasher = Sha256::new();
    hasher.update(if v2 { RECORD_DOMAIN_V2 } else { RECORD_DOMAIN });
    hasher.update(record.sequence.to_be_bytes());
    hasher.update(record.time.to_be_bytes());
    for field in [
        &record.request_id,
        &record.chain,
        &record.access_key_id,
        &record.role,
        &record.operation,
        &record.key_arn,
        &record.decision,
        &record.reason,
        &record.policy_module,
    ] {
        length_prefixed(&mut hasher, field)?;
    }
    if v2 {
        length_prefixed(&mut hasher, &record.recipient_module_id)?;
        count(&mut hasher, record.recipient_pcrs.len())?;
        for (index, value) in &record.recipient_pcrs {
            hasher.update([*index]);
            length_prefixed(&mut hasher, value)?;
        }
        for (keys, hash) in [
            (&record.encryption_context_keys, &record.encryption_context_hash),
            (
                &record.source_encryption_context_keys,
                &record.source_encryption_context_hash,
            ),
        ] {
            count(&mut hasher, keys.len())?;
            for key in keys {
                length_prefixed(&mut hasher, key)?;
            }
            length_prefixed(&mut hasher, hash)?;
        }
    }
    hasher.update(previous);
    Some(hasher.finalize().into())
}

fn count(hasher: &mut Sha256, n: usize) -> Option<()> {
    hasher.update(u32::try_from(n).ok()?.to_be_bytes());
    Some(())
}

/// The message the head signature covers.
fn head_message(chain: &str, sequence: u64, hash: &[u8; 32]) -> Option<Vec<u8>> {
    let len = u32::try_from(chain.len()).ok()?;
    let mut message = Vec::with_capacity(HEAD_DOMAIN.len() + 4 + chain.len() + 8 + 32);
    message.extend_from_slice(HEAD_DOMAIN);
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(chain.as_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(hash);
    Some(message)
}

fn length_prefixed(hasher: &mut Sha256, s: &str) -> Option<()> {
    let len = u32::try_from(s.len()).ok()?;
    hasher.update(len.to_be_bytes());
    hasher.update(s.as_bytes());
    Some(())
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

mod memory;

pub use memory::{FreshnessError, HeadMemory, Observation, RememberedHead, STATE_FORMAT, StateError};

#[cfg(test)]
mod tests;
