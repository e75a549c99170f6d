//! The audit record and its hash, exactly as `ARCHITECTURE.md` ("Audit
//! chain") specifies, so an independent verifier can recompute both.
//!
//! A record without any of the attestation and encryption-context fields
//! hashes as before they existed (`keyward/audit/v1`), so older records keep
//! verifying; a record with any of them hashes them too (`keyward/audit/v2`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::context::ContextDigest;

/// One audit record. It holds no key material, plaintext or secret: only
/// identifiers, the operation, the decision, the error text, what was
/// attested, and encryption-context keys (values only as a keyed hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub sequence: u64,
    /// Milliseconds since the epoch (enclave clock).
    pub time: u64,
    pub request_id: String,
    pub chain: String,
    pub access_key_id: String,
    pub role: String,
    pub operation: String,
    pub key_arn: String,
    pub decision: String,
    pub reason: String,
    pub policy_module: String,
    #[serde(default)]
    pub attested: Attested,
    /// The operation's encryption context (ReEncrypt: the destination's).
    #[serde(default)]
    pub context: Option<ContextDigest>,
    /// ReEncrypt's source encryption context.
    #[serde(default)]
    pub source_context: Option<ContextDigest>,
    pub previous_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The verified attestation document of a request's `Recipient`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    /// The document's `module_id`; empty when the request had no verified recipient.
    pub module_id: String,
    /// PCR index → lower-case hex value: PCR0, and every PCR an attestation
    /// policy of a key the request acted on checks.
    pub pcrs: BTreeMap<u8, String>,
}

impl Attested {
    pub fn is_empty(&self) -> bool {
        self.module_id.is_empty() && self.pcrs.is_empty()
    }
}

/// What a request contributes to its record; the chain adds sequence and hashes.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub time: u64,
    pub request_id: String,
    pub chain: String,
    pub access_key_id: String,
    pub role: String,
    pub operation: String,
    pub key_arn: String,
    pub decision: &'static str,
    pub reason: String,
    pub policy_module: String,
    pub attested: Attested,
    pub context: Option<ContextDigest>,
    pub source_context: Option<ContextDigest>,
}

pub const ALLOW: &str = "Allow";
pub const DENY: &str = "Deny";
pub const ERROR: &str = "Error";

/// The chain of requests made as the operator or by unknown access keys.
pub const OPERATOR_CHAIN: &str = "operator";

fn lp(out: &mut Sha256, s: &str) {
    out.update((s.len() as u32).to_be_bytes());
    out.update(s.as_bytes());
}

impl AuditRecord {
    pub fn new(entry: AuditEntry, sequence: u64, previous_hash: [u8; 32]) -> Self {
        let mut record = AuditRecord {
            sequence,
            time: entry.time,
            request_id: entry.request_id,
            chain: entry.chain,
            access_key_id: entry.access_key_id,
            role: entry.role,
            operation: entry.operation,
            key_arn: entry.key_arn,
            decision: entry.decision.to_owned(),
            reason: entry.reason,
            policy_module: entry.policy_module,
            attested: entry.attested,
            context: entry.context,
            source_context: entry.source_context,
            previous_hash,
            hash: [0; 32],
        };
        record.hash = record.compute_hash();
        record
    }

    /// Whether the record carries any field of `keyward/audit/v2`.
    pub fn is_v2(&self) -> bool {
        !self.attested.is_empty() || self.context.is_some() || self.source_context.is_some()
    }

    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(if self.is_v2() {
            &b"keyward/audit/v2\0"[..]
        } else {
            &b"keyward/audit/v1\0"[..]
        });
        h.update(self.sequence.to_be_bytes());
        h.update(self.time.to_be_bytes());
        for field in [
            &self.request_id,
            &self.chain,
            &self.access_key_id,
            &self.role,
            &self.operation,
            &self.key_arn,
            &self.decision,
            &self.reason,
            &self.policy_module,
        ] {
            lp(&mut h, field);
        }
        if self.is_v2() {
            lp(&mut h, &self.attested.module_id);
            h.update((self.attested.pcrs.len() as u32).to_be_bytes());
            for (index, value) in &self.attested.pcrs {
                h.update([*index]);
                lp(&mut h, value);
            }
            for context in [&self.context, &self.source_context] {
                let empty = ContextDigest::default();
                let context = context.as_ref().unwrap_or(&empty);
                h.update((context.keys.len() as u32).to_be_bytes());
                for key in &context.keys {
                    lp(&mut h, key);
                }
                lp(&mut h, &context.hash);
            }
        }
        h.update(self.previous_hash);
        h.finalize().into()
    }
}

/// The bytes the head signature covers.
pub fn head_message(chain: &str, sequence: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"keyward/audit-head/v1\0".to_vec();
    m.extend_from_slice(&(chain.len() as u32).to_be_bytes());
    m.extend_from_slice(chain.as_bytes());
    m.extend_from_slice(&sequence.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_in_the_hash() {
        let base = AuditRecord::new(
            AuditEntry {
                time: 1,
                request_id: "r".into(),
                chain: "c".into(),
                decision: ALLOW,
                ..Default::default()
            },
            1,
            [0; 32],
        );
        let mut edits: Vec<AuditRecord> = Vec::new();
        for i in 0..18 {
            let mut r = base.clone();
            match i {
                0 => r.sequence = 2,
                1 => r.time = 2,
                2 => r.request_id.push('x'),
                3 => r.chain.push('x'),
                4 => r.access_key_id.push('x'),
                5 => r.role.push('x'),
                6 => r.operation.push('x'),
                7 => r.key_arn.push('x'),
                8 => r.decision = DENY.into(),
                9 => r.reason.push('x'),
                10 => r.policy_module.push('x'),
                11 => r.attested.module_id.push('x'),
                12 => {
                    r.attested.pcrs.insert(0, "00".into());
                }
                13 => r.context = Some(ContextDigest::default()),
                14 => {
                    r.context = Some(ContextDigest {
                        keys: vec!["k".into()],
                        hash: String::new(),
                    })
                }
                15 => r.source_context = Some(ContextDigest::default()),
                16 => {
                    r.source_context = Some(ContextDigest {
                        keys: vec![],
                        hash: "ab".into(),
                    })
                }
                _ => r.previous_hash[0] = 1,
            }
            edits.push(r);
        }
        for r in edits {
            assert_ne!(r.compute_hash(), base.hash);
        }
        // Field boundaries are unambiguous.
        let mut a = base.clone();
        a.request_id = "ab".into();
        a.chain = "c".into();
        let mut b = base.clone();
        b.request_id = "a".into();
        b.chain = "bc".into();
        assert_ne!(a.compute_hash(), b.compute_hash());
        // The context and the source context are not interchangeable, nor are PCR indices.
        let digest = ContextDigest {
            keys: vec!["k".into()],
            hash: "ab".into(),
        };
        let mut a = base.clone();
        a.context = Some(digest.clone());
        let mut b = base.clone();
        b.source_context = Some(digest);
        assert_ne!(a.compute_hash(), b.compute_hash());
        let mut a = base.clone();
        a.attested.pcrs.insert(0, "ab".into());
        let mut b = base.clone();
        b.attested.pcrs.insert(1, "ab".into());
        assert_ne!(a.compute_hash(), b.compute_hash());
    }

    /// A record without the v2 fields hashes exactly as in `keyward/audit/v1`
    /// (records written before the fields existed keep verifying); a record
    /// written then decodes with the fields empty.
    #[test]
    fn records_without_the_new_fields_hash_as_v1() {
        let record = AuditRecord::new(
            AuditEntry {
                time: 7,
                request_id: "r".into(),
                chain: "c".into(),
                decision: ALLOW,
                ..Default::default()
            },
            1,
            [0; 32],
        );
        assert!(!record.is_v2());
        let mut v1 = Sha256::new();
        v1.update(b"keyward/audit/v1\0");
        v1.update(1u64.to_be_bytes());
        v1.update(7u64.to_be_bytes());
        for field in ["r", "c", "", "", "", "", "Allow", "", ""] {
            lp(&mut v1, field);
        }
        v1.update([0; 32]);
        assert_eq!(record.hash, <[u8; 32]>::from(v1.finalize()));

        /// The record as stored before the fields existed.
        #[derive(Serialize)]
        struct OldRecord<'a> {
            sequence: u64,
            time: u64,
            request_id: &'a str,
            chain: &'a str,
            access_key_id: &'a str,
            role: &'a str,
            operation: &'a str,
            key_arn: &'a str,
            decision: &'a str,
            reason: &'a str,
            policy_module: &'a str,
            previous_hash: [u8; 32],
            hash: [u8; 32],
        }
        let old = serde_cbor::to_vec(&OldRecord {
            sequence: 1,
            time: 7,
            request_id: "r",
            chain: "c",
            access_key_id: "",
            role: "",
            operation: "",
            key_arn: "",
            decision: "Allow",
            reason: "",
            policy_module: "",
            previous_hash: [0; 32],
            hash: record.hash,
        })
        .expect("cbor");
        let decoded: AuditRecord = serde_cbor::from_slice(&old).expect("an old record decodes");
        assert_eq!(decoded, record);
        assert_eq!(decoded.compute_hash(), decoded.hash);
    }
}
