//! The audit record and its hash, exactly as `ARCHITECTURE.md` ("Audit
//! chain") specifies, so an independent verifier can recompute both.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One audit record. It holds no key material, plaintext or secret: only
/// identifiers, the operation, the decision and the error text.
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
    pub previous_hash: [u8; 32],
    pub hash: [u8; 32],
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
            previous_hash,
            hash: [0; 32],
        };
        record.hash = record.compute_hash();
        record
    }

    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"keyward/audit/v1\0");
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
        for i in 0..12 {
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
    }
}
