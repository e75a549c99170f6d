//! Reading an audit chain: the caller's own (a tenant's, or the
//! operator's), one page at a time, with the head signed by the enclave's
//! audit key so the page can be checked against it.

use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

use crate::audit::chain::{self, HeadRecord, NAMESPACE};
use crate::audit::record::{AuditRecord, head_message};
use crate::context::Ctx;
use crate::error::KmsError;

/// Which records of a chain to read.
pub struct AuditQuery<'a> {
    /// Start after this record key (a marker's position).
    pub after: Option<&'a str>,
    pub limit: u32,
    /// Only records at or after this time (milliseconds since the epoch).
    pub start_ms: Option<u64>,
    /// Only records at or before this time (milliseconds since the epoch).
    pub end_ms: Option<u64>,
}

/// One entry of a page: a record, or the sequence number of one that does not authenticate.
pub enum AuditEntry {
    Record(Box<AuditRecord>),
    Corrupt { sequence: u64 },
}

/// A page of the caller's chain and its signed head.
pub struct AuditPage {
    pub chain: String,
    pub records: Vec<AuditEntry>,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
    /// The head when the page was read: records after it are left out.
    pub head: HeadRecord,
    /// ECDSA P-256 signature (DER) of [`head_message`] over the head.
    pub head_signature: Vec<u8>,
    /// The audit public key (SubjectPublicKeyInfo DER).
    pub audit_public_key: Vec<u8>,
}

/// A page of the caller's own chain.
pub async fn read(ctx: &Ctx<'_>, query: &AuditQuery<'_>) -> Result<AuditPage, KmsError> {
    let chain_name = ctx.principal.tenant.clone();
    let prefix = chain::records_prefix(&chain_name);
    if query.after.is_some_and(|a| !a.starts_with(&prefix)) {
        return Err(KmsError::InvalidMarker(
            "The marker is not one GetAuditLog returned.".into(),
        ));
    }
    // The head first: records appended after it are not part of this answer.
    let head = ctx
        .records
        .get::<HeadRecord>(NAMESPACE, &chain::head_key(&chain_name))
        .await?
        .unwrap_or(HeadRecord::EMPTY);
    let mut page = ctx
        .records
        .list_each::<AuditRecord>(NAMESPACE, &prefix, query.after, query.limit.saturating_add(1))
        .await?;
    let truncated = page.len() > query.limit as usize;
    page.truncate(query.limit as usize);
    let next = if truncated {
        page.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    let mut records = Vec::with_capacity(page.len());
    for (key, value) in page {
        match value {
            Ok(record) => {
                if record.sequence > head.sequence {
                    continue;
                }
                let in_range =
                    query.start_ms.is_none_or(|s| record.time >= s) && query.end_ms.is_none_or(|e| record.time <= e);
                if in_range {
                    records.push(AuditEntry::Record(Box::new(record)));
                }
            }
            Err(e) => {
                tracing::warn!(record = %key, error = %e, "audit record does not authenticate");
                let sequence = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                records.push(AuditEntry::Corrupt { sequence });
            }
        }
    }
    let signing_key = ctx.keyring.hierarchy.audit_signing_key();
    let signature: p256::ecdsa::Signature = signing_key.sign(&head_message(&chain_name, head.sequence, &head.hash));
    let public_key = signing_key
        .verifying_key()
        .to_public_key_der()
        .map_err(|_| KmsError::Internal)?;
    Ok(AuditPage {
        chain: chain_name,
        records,
        next,
        head,
        head_signature: signature.to_der().as_bytes().to_vec(),
        audit_public_key: public_key.as_bytes().to_vec(),
    })
}
