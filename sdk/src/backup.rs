//! Backups (`kmsctl backup`, operator credentials): the store's sealed
//! records and the enclave's signed manifest, written to one file
//! (docs/custody.md, "Backup and restore"). The formats and the
//! verification restore runs are [`format`] (`keyward_custody::backup`).
//!
//! ```no_run
//! # async fn demo(client: &keyward_sdk::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let mut file = std::fs::File::create("keyward.backup")?;
//! let summary = keyward_sdk::backup::write_backup(client, &mut file).await?;
//! println!("{} records", summary.records);
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::io::Write;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use format::{FILE_MAGIC, FilePage, FileRecord};
pub use keyward_custody::backup as format;

use crate::{Client, Error};

/// Records asked for per `Keyward.ExportBackup` page.
pub const PAGE_LIMIT: u32 = 500;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExportBackupRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    marker: Option<&'a str>,
}

/// One page of `Keyward.ExportBackup`, as the service sent it (base64
/// fields decoded by [`ExportedPage::file_page`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportedPage {
    pub records: Vec<ExportedRecord>,
    /// Base64 CBOR of the page's manifest.
    pub manifest: String,
    /// Base64 DER ECDSA P-256 signature.
    pub signature: String,
    /// Base64 SPKI DER of the audit key (the root commitment).
    pub root_commitment: String,
    #[serde(default)]
    pub truncated: bool,
    pub next_marker: Option<String>,
}

/// One record of an exported page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportedRecord {
    pub namespace: String,
    pub key: String,
    pub version: u64,
    /// Base64 of the stored (sealed) bytes.
    pub value: String,
}

impl ExportedPage {
    /// The page as the backup file carries it.
    pub fn file_page(&self) -> Result<FilePage, Error> {
        let decode = |field: &str, text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Error::Decode {
                    operation: "Keyward.ExportBackup".into(),
                    reason: format!("{field} is not base64: {e}"),
                })
        };
        Ok(FilePage {
            manifest: decode("Manifest", &self.manifest)?,
            signature: decode("Signature", &self.signature)?,
            records: self
                .records
                .iter()
                .map(|r| {
                    Ok(FileRecord {
                        namespace: r.namespace.clone(),
                        key: r.key.clone(),
                        version: r.version,
                        value: decode("Value", &r.value)?,
                    })
                })
                .collect::<Result<_, Error>>()?,
        })
    }
}

impl Client {
    /// `Keyward.ExportBackup`: one page of a backup (operator only). Start
    /// with no marker; pass each page's `next_marker` until `truncated` is false.
    pub async fn export_backup_page(&self, limit: Option<u32>, marker: Option<&str>) -> Result<ExportedPage, Error> {
        self.call("Keyward.ExportBackup", &ExportBackupRequest { limit, marker })
            .await
    }
}

/// What [`write_backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub pages: usize,
    pub records: u64,
    /// The root commitment (audit public key, SPKI DER) the manifest is signed by.
    pub root_commitment: Vec<u8>,
}

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupWriteError {
    #[error(transparent)]
    Service(#[from] Error),
    #[error("writing the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error("the service's backup does not verify: {0}")]
    Invalid(#[from] format::BackupError),
}

/// Exports the whole backup page by page into `out` (the file format of
/// [`format`]), then checks what was received the way restore will.
pub async fn write_backup<W: Write>(client: &Client, out: &mut W) -> Result<BackupSummary, BackupWriteError> {
    out.write_all(FILE_MAGIC)?;
    let mut pages = Vec::new();
    let mut marker: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        let page = client.export_backup_page(Some(PAGE_LIMIT), marker.as_deref()).await?;
        let file_page = page.file_page()?;
        out.write_all(&format::encode_page(&file_page)?)?;
        pages.push(file_page);
        match (page.truncated, page.next_marker) {
            (false, _) => break,
            (true, Some(next)) if seen.insert(next.clone()) => marker = Some(next),
            _ => {
                return Err(Error::Decode {
                    operation: "Keyward.ExportBackup".into(),
                    reason: "Truncated without a new NextMarker".into(),
                }
                .into());
            }
        }
    }
    out.flush()?;
    let count = pages.len();
    let verified = format::verify(pages, None)?;
    Ok(BackupSummary {
        pages: count,
        records: verified.records.len() as u64,
        root_commitment: verified.root_commitment,
    })
}
