//! `Keyward.GetAuditLog`: the caller's own chain (a tenant's, or the
//! operator's), with the head signed by the enclave's audit key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, limit, marker_from, marker_to, parse, render};
use crate::audit::record::AuditRecord;
use crate::context::Ctx;
use crate::keystore::audit_log::{self, AuditEntry, AuditQuery};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAuditLogRequest {
    /// Seconds since the epoch.
    start_time: Option<f64>,
    end_time: Option<f64>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetAuditLogResponse<'a> {
    records: Vec<RecordOut<'a>>,
    truncated: bool,
    head: HeadOut<'a>,
    /// Base64 SubjectPublicKeyInfo DER.
    audit_public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

/// An audit record as GetAuditLog lists it (hashes in hex), or the sequence
/// number of one that does not authenticate.
#[derive(Serialize)]
#[serde(untagged)]
enum RecordOut<'a> {
    Record(Box<RecordFields<'a>>),
    Corrupt {
        #[serde(rename = "Sequence")]
        sequence: u64,
        #[serde(rename = "Corrupt")]
        corrupt: bool,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RecordFields<'a> {
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
    #[serde(skip_serializing_if = "str::is_empty")]
    recipient_module_id: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    recipient_pcrs: &'a BTreeMap<u8, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_context_keys: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_context_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_encryption_context_keys: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_encryption_context_hash: Option<&'a str>,
    previous_hash: String,
    hash: String,
}

impl<'a> RecordFields<'a> {
    fn of(r: &'a AuditRecord) -> Self {
        RecordFields {
            sequence: r.sequence,
            time: r.time,
            request_id: &r.request_id,
            chain: &r.chain,
            access_key_id: &r.access_key_id,
            role: &r.role,
            operation: &r.operation,
            key_arn: &r.key_arn,
            decision: &r.decision,
            reason: &r.reason,
            policy_module: &r.policy_module,
            recipient_module_id: &r.attested.module_id,
            recipient_pcrs: &r.attested.pcrs,
            encryption_context_keys: r.context.as_ref().map(|c| c.keys.as_slice()),
            encryption_context_hash: r.context.as_ref().map(|c| c.hash.as_str()),
            source_encryption_context_keys: r.source_context.as_ref().map(|c| c.keys.as_slice()),
            source_encryption_context_hash: r.source_context.as_ref().map(|c| c.hash.as_str()),
            previous_hash: hex::encode(r.previous_hash),
            hash: hex::encode(r.hash),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HeadOut<'a> {
    chain: &'a str,
    sequence: u64,
    /// Hex.
    hash: String,
    /// Base64 DER ECDSA P-256 signature.
    signature: String,
}

pub async fn get_audit_log(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetAuditLogRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)?;
    let after = marker_from(req.marker.as_deref())?;
    let query = AuditQuery {
        after: after.as_deref(),
        limit,
        start_ms: req.start_time.map(|s| (s * 1000.0) as u64),
        end_ms: req.end_time.map(|s| (s * 1000.0) as u64),
    };
    let page = audit_log::read(ctx, &query).await?;
    render(&GetAuditLogResponse {
        records: page
            .records
            .iter()
            .map(|entry| match entry {
                AuditEntry::Record(r) => RecordOut::Record(Box::new(RecordFields::of(r))),
                AuditEntry::Corrupt { sequence } => RecordOut::Corrupt {
                    sequence: *sequence,
                    corrupt: true,
                },
            })
            .collect(),
        truncated: page.next.is_some(),
        head: HeadOut {
            chain: &page.chain,
            sequence: page.head.sequence,
            hash: hex::encode(page.head.hash),
            signature: b64(&page.head_signature),
        },
        audit_public_key: b64(&page.audit_public_key),
        next_marker: page.next.as_deref().map(marker_to),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Listed records keep the fields (and hex hashes) the SDK's verifier reads.
    #[test]
    fn records_render_as_the_verifier_reads_them() {
        let record = AuditRecord {
            sequence: 3,
            time: 1_700_000_000_000,
            request_id: "r".into(),
            chain: "111122223333".into(),
            access_key_id: "AKIA".into(),
            role: "KeyUser".into(),
            operation: "TrentService.Decrypt".into(),
            key_arn: "arn".into(),
            decision: "Allow".into(),
            reason: "why".into(),
            policy_module: "ab".into(),
            attested: Default::default(),
            context: None,
            source_context: None,
            previous_hash: [1; 32],
            hash: [2; 32],
        };
        let rendered = serde_json::to_value(RecordOut::Record(Box::new(RecordFields::of(&record)))).expect("renders");
        assert_eq!(
            rendered,
            json!({
                "Sequence": 3,
                "Time": 1_700_000_000_000u64,
                "RequestId": "r",
                "Chain": "111122223333",
                "AccessKeyId": "AKIA",
                "Role": "KeyUser",
                "Operation": "TrentService.Decrypt",
                "KeyArn": "arn",
                "Decision": "Allow",
                "Reason": "why",
                "PolicyModule": "ab",
                "PreviousHash": hex::encode([1u8; 32]),
                "Hash": hex::encode([2u8; 32]),
            })
        );

        // With what was attested and the encryption contexts.
        let mut attested = record.clone();
        attested.attested.module_id = "i-0123-enc0123".into();
        attested.attested.pcrs.insert(0, "aa".into());
        attested.attested.pcrs.insert(8, "bb".into());
        attested.context = Some(crate::audit::record::ContextDigest {
            keys: vec!["k".into()],
            hash: "cc".into(),
        });
        attested.source_context = Some(Default::default());
        let rendered = serde_json::to_value(RecordOut::Record(Box::new(RecordFields::of(&attested)))).expect("renders");
        assert_eq!(rendered["RecipientModuleId"], "i-0123-enc0123");
        assert_eq!(rendered["RecipientPcrs"], json!({"0": "aa", "8": "bb"}));
        assert_eq!(rendered["EncryptionContextKeys"], json!(["k"]));
        assert_eq!(rendered["EncryptionContextHash"], "cc");
        assert_eq!(rendered["SourceEncryptionContextKeys"], json!([]));
        assert_eq!(rendered["SourceEncryptionContextHash"], "");

        let corrupt = RecordOut::Corrupt {
            sequence: 4,
            corrupt: true,
        };
        assert_eq!(
            serde_json::to_value(corrupt).expect("renders"),
            json!({ "Sequence": 4, "Corrupt": true })
        );
    }
}
