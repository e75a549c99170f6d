//! `Keyward.GetAuditLog`: the caller's own chain (a tenant's, or the
//! operator's), with the head signed by the enclave's audit key.

use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{b64, limit, marker_from, marker_to, parse};
use crate::audit::chain::{self, HeadRecord, NAMESPACE};
use crate::audit::record::{AuditRecord, head_message};
use crate::context::Ctx;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAuditLogRequest {
    start_time: Option<f64>,
    end_time: Option<f64>,
    limit: Option<i64>,
    marker: Option<String>,
}

pub async fn get_audit_log(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetAuditLogRequest = parse(body)?;
    let limit = limit(req.limit, 100, 1000)?;
    let chain_name = ctx.principal.tenant.clone();
    let prefix = chain::records_prefix(&chain_name);
    let after = marker_from(req.marker.as_deref())?;
    if after.as_ref().is_some_and(|a| !a.starts_with(&prefix)) {
        return Err(KmsError::InvalidMarker(
            "The marker is not one GetAuditLog returned.".into(),
        ));
    }
    let start_ms = req.start_time.map(|s| (s * 1000.0) as u64);
    let end_ms = req.end_time.map(|s| (s * 1000.0) as u64);

    // The head first: records appended after it are not part of this answer.
    let head = ctx
        .records
        .get::<HeadRecord>(NAMESPACE, &chain::head_key(&chain_name))
        .await?
        .unwrap_or(HeadRecord::EMPTY);
    let mut page = ctx
        .records
        .list_each::<AuditRecord>(NAMESPACE, &prefix, after.as_deref(), limit + 1)
        .await?;
    let truncated = page.len() > limit as usize;
    page.truncate(limit as usize);
    let mut records = Vec::with_capacity(page.len());
    for (key, value) in &page {
        match value {
            Ok(record) => {
                if record.sequence > head.sequence {
                    continue;
                }
                let in_range = start_ms.is_none_or(|s| record.time >= s) && end_ms.is_none_or(|e| record.time <= e);
                if in_range {
                    records.push(record.to_json());
                }
            }
            Err(e) => {
                tracing::warn!(record = %key, error = %e, "audit record does not authenticate");
                let sequence = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                records.push(json!({ "Sequence": sequence, "Corrupt": true }));
            }
        }
    }
    let signing_key = ctx.keyring.hierarchy.audit_signing_key();
    let signature: p256::ecdsa::Signature = signing_key.sign(&head_message(&chain_name, head.sequence, &head.hash));
    let public_key = signing_key
        .verifying_key()
        .to_public_key_der()
        .map_err(|_| KmsError::Internal)?;
    let mut out = json!({
        "Records": records,
        "Truncated": truncated,
        "Head": {
            "Chain": chain_name,
            "Sequence": head.sequence,
            "Hash": hex::encode(head.hash),
            "Signature": b64(signature.to_der().as_bytes()),
        },
        "AuditPublicKey": b64(public_key.as_bytes()),
    });
    if truncated && let Some((last, _)) = page.last() {
        out["NextMarker"] = json!(marker_to(last));
    }
    Ok(out)
}
