//! `Keyward.ExportBackup` (operator): one page of a backup — the store's
//! sealed records and the page's manifest signed by the audit key
//! (docs/custody.md, "Backup and restore").
//!
//! Request: `Limit` (1–1000 records, default 500), `Marker` (from the
//! previous page). Response: `Records` (`Namespace`, `Key`, `Version`,
//! `Value` base64), `Manifest` (base64 CBOR), `Signature` (base64 DER),
//! `RootCommitment` (base64 SPKI DER), `Truncated`, `NextMarker`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, length, limit, parse, render};
use crate::context::Ctx;
use crate::keystore::backup::{self, BackupMarker};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExportBackupRequest {
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExportBackupResponse {
    records: Vec<RecordOut>,
    manifest: String,
    signature: String,
    root_commitment: String,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RecordOut {
    namespace: &'static str,
    key: String,
    version: u64,
    value: String,
}

const BAD_MARKER: &str = "The marker is not one ExportBackup returned.";

pub async fn export_backup(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ExportBackupRequest = parse(body)?;
    let limit = limit(req.limit, 500, 1000)?;
    let marker = req.marker.as_deref().map(decode_marker).transpose()?;
    let page = backup::export(ctx, marker, limit).await?;
    let next_marker = page.next.as_ref().map(encode_marker).transpose()?;
    render(&ExportBackupResponse {
        records: page
            .records
            .into_iter()
            .map(|r| RecordOut {
                namespace: r.namespace,
                key: r.key,
                version: r.version,
                value: b64(&r.value),
            })
            .collect(),
        manifest: b64(&page.manifest),
        signature: b64(&page.signature),
        root_commitment: b64(&page.root_commitment),
        truncated: next_marker.is_some(),
        next_marker,
    })
}

fn decode_marker(marker: &str) -> Result<BackupMarker, KmsError> {
    length("marker", marker.len(), 1, 4096)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .map_err(|_| KmsError::InvalidMarker(BAD_MARKER.into()))?;
    let marker: BackupMarker =
        serde_cbor::from_slice(&bytes).map_err(|_| KmsError::InvalidMarker(BAD_MARKER.into()))?;
    if marker.cursor.namespace as usize >= backup::NAMESPACES.len() {
        return Err(KmsError::InvalidMarker(BAD_MARKER.into()));
    }
    Ok(marker)
}

fn encode_marker(marker: &BackupMarker) -> Result<String, KmsError> {
    let bytes = serde_cbor::to_vec(marker).map_err(|_| KmsError::Internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_junk_is_refused() {
        let marker = BackupMarker {
            backup_id: [3; 16],
            page: 2,
            previous: [4; 32],
            created: 1_700_000_000,
            count: 7,
            cursor: keyward_custody::backup::Cursor {
                namespace: 4,
                after: Some("t/k".into()),
            },
            audit_cut: Some(("operator".into(), 9)),
            audit_heads: vec![("@global".into(), 12, [5; 32])],
        };
        let text = encode_marker(&marker).expect("encodes");
        assert_eq!(decode_marker(&text).expect("decodes"), marker);
        for junk in ["", "!!", "AAAA"] {
            assert!(decode_marker(junk).is_err(), "{junk:?}");
        }
        let mut beyond = marker;
        beyond.cursor = keyward_custody::backup::Cursor {
            namespace: backup::NAMESPACES.len() as u32,
            after: None,
        };
        assert!(decode_marker(&encode_marker(&beyond).expect("encodes")).is_err());
    }
}
