//! Backups: the enclave's signed manifest and the backup file `kmsctl`
//! writes and restores (docs/custody.md, "Backup and restore").
//!
//! A backup is the store's sealed records, exactly as the host already holds
//! them, plus a **manifest signed by the enclave's audit key** — the key the
//! boot record commits to (the root commitment). `Keyward.ExportBackup`
//! answers one page at a time; each page carries a [`PageManifest`] that
//! lists the page's records (identity, version, SHA-256 of the stored
//! bytes), the cursor range it covers, the running count, and the SHA-256
//! of the previous page's manifest. [`verify`] accepts a backup only when
//! every page is signed by the root commitment of the first, the pages chain
//! and cover the key space from the start to the end without a gap, the last
//! page says it is the last, and every record is the one its manifest lists
//! at that place. Anything else is refused naming the first bad record.
//!
//! Nothing here is secret: sealed records open only under the deployment's
//! root, which a backup does not contain.
//!
//! # File format (version 1)
//! The bytes [`FILE_MAGIC`] (`KEYWARD-BACKUP 1\n`), then a sequence of CBOR
//! items, one [`FilePage`] per exported page, in order.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{DEPLOYMENT_ID_LEN, FORMAT_VERSION};

/// The first bytes of a backup file.
pub const FILE_MAGIC: &[u8] = b"KEYWARD-BACKUP 1\n";

/// What the enclave signs: this label, then the manifest's CBOR bytes
/// (ECDSA P-256 with SHA-256, DER signature, as audit heads are signed).
pub const SIGNATURE_LABEL: &[u8] = b"keyward/v1/backup-manifest\0";

/// Length of a backup id (random, chosen at the first page).
pub const BACKUP_ID_LEN: usize = 16;

/// A position in the exported key space: namespace `namespace` (an index
/// into the manifest's `namespaces`), keys strictly after `after`. The end
/// is `namespace == namespaces.len()`, `after == None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub namespace: u32,
    pub after: Option<String>,
}

impl Cursor {
    pub const START: Cursor = Cursor {
        namespace: 0,
        after: None,
    };
}

/// One record as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub namespace: String,
    pub key: String,
    pub version: u64,
    /// SHA-256 of the stored bytes.
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
    /// Sealed under the root (opened by the enclave at export). `false`
    /// only for boot records, which are stored in the clear (the custody
    /// boot record, checked against the root commitment instead).
    pub sealed: bool,
}

/// The signed manifest of one exported page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageManifest {
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub backup_id: [u8; BACKUP_ID_LEN],
    /// 0 for the first page.
    pub page: u32,
    /// SHA-256 of the previous page's manifest bytes (zeros for page 0).
    #[serde(with = "serde_bytes")]
    pub previous: [u8; 32],
    /// When the backup began (enclave clock, seconds since the Unix epoch).
    pub created: i64,
    /// The root commitment: the audit public key (P-256 SPKI DER) that
    /// signs this manifest.
    #[serde(with = "serde_bytes")]
    pub root_commitment: Vec<u8>,
    /// The deployment id of the custody boot record, when the store has one.
    #[serde(with = "serde_bytes")]
    pub deployment_id: Option<Vec<u8>>,
    /// The namespaces a backup covers, in export order.
    pub namespaces: Vec<String>,
    pub from: Cursor,
    pub to: Cursor,
    pub entries: Vec<Entry>,
    /// Records in this page and every page before it.
    pub count: u64,
    /// No page follows.
    pub last: bool,
}

impl PageManifest {
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        serde_cbor::to_vec(self).map_err(|e| BackupError::Malformed(format!("manifest: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<PageManifest, BackupError> {
        let manifest: PageManifest =
            serde_cbor::from_slice(bytes).map_err(|e| BackupError::Malformed(format!("manifest: {e}")))?;
        if manifest.format != FORMAT_VERSION {
            return Err(BackupError::Malformed(format!(
                "manifest format {} (this build reads {FORMAT_VERSION})",
                manifest.format
            )));
        }
        if manifest
            .deployment_id
            .as_ref()
            .is_some_and(|d| d.len() != DEPLOYMENT_ID_LEN)
        {
            return Err(BackupError::Malformed(
                "manifest: deployment id of the wrong length".into(),
            ));
        }
        Ok(manifest)
    }

    /// The end of this manifest's key space.
    pub fn end(&self) -> Cursor {
        Cursor {
            namespace: u32::try_from(self.namespaces.len()).unwrap_or(u32::MAX),
            after: None,
        }
    }
}

/// The message the enclave signs for a manifest.
pub fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_LABEL.len() + manifest.len());
    message.extend_from_slice(SIGNATURE_LABEL);
    message.extend_from_slice(manifest);
    message
}

/// One record as the file carries it: the store's identity, version and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub namespace: String,
    pub key: String,
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl FileRecord {
    fn name(&self) -> String {
        format!("{}/{} (version {})", self.namespace, self.key, self.version)
    }
}

/// One exported page as the file carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePage {
    /// The manifest's CBOR bytes, exactly as signed.
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// DER ECDSA P-256 signature over [`signed_message`]`(manifest)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    pub records: Vec<FileRecord>,
}

/// Encodes one page for the file (append after [`FILE_MAGIC`]).
pub fn encode_page(page: &FilePage) -> Result<Vec<u8>, BackupError> {
    serde_cbor::to_vec(page).map_err(|e| BackupError::Malformed(format!("page: {e}")))
}

/// Reads a backup file's pages (nothing verified yet).
pub fn read_file(bytes: &[u8]) -> Result<Vec<FilePage>, BackupError> {
    let body = bytes
        .strip_prefix(FILE_MAGIC)
        .ok_or_else(|| BackupError::Malformed("not a Keyward backup file (version 1): the header is missing".into()))?;
    let mut pages = Vec::new();
    for (i, page) in serde_cbor::Deserializer::from_slice(body)
        .into_iter::<FilePage>()
        .enumerate()
    {
        pages
            .push(page.map_err(|e| BackupError::Malformed(format!("page {i} does not decode (cut or altered): {e}")))?);
    }
    Ok(pages)
}

/// Why a backup was refused. Every variant names the first bad record
/// where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    #[error("the backup holds no page")]
    Empty,
    #[error("the backup's root commitment is not the expected one: it is another deployment's backup")]
    UnexpectedCommitment,
    #[error("the backup's root commitment is not a P-256 public key")]
    BadCommitment,
    #[error(
        "page {page} (first record {first}) is not signed by the backup's root commitment: altered, or from another deployment's backup"
    )]
    Signature { page: usize, first: String },
    #[error("page {page} (first record {first}) does not continue page {previous}: {reason}")]
    Sequence {
        page: usize,
        previous: usize,
        first: String,
        reason: &'static str,
    },
    #[error("record {record}: {reason}")]
    Record { record: String, reason: String },
    #[error("the backup is truncated after record {after}: {reason}")]
    Truncated { after: String, reason: &'static str },
}

/// A verified backup: what restore loads, in order.
#[derive(Debug)]
pub struct Verified {
    pub root_commitment: Vec<u8>,
    pub deployment_id: Option<Vec<u8>>,
    pub created: i64,
    pub backup_id: [u8; BACKUP_ID_LEN],
    pub records: Vec<FileRecord>,
}

/// Verifies a backup's pages: signatures against the first page's root
/// commitment (which must equal `expected_commitment` when given), the
/// chain and coverage of the pages, the count, and every record against
/// its manifest entry (identity, version, hash, place).
pub fn verify(pages: Vec<FilePage>, expected_commitment: Option<&[u8]>) -> Result<Verified, BackupError> {
    let first = pages.first().ok_or(BackupError::Empty)?;
    let head = PageManifest::decode(&first.manifest)?;
    if expected_commitment.is_some_and(|expected| expected != head.root_commitment.as_slice()) {
        return Err(BackupError::UnexpectedCommitment);
    }
    let key = VerifyingKey::from_public_key_der(&head.root_commitment).map_err(|_| BackupError::BadCommitment)?;

    let mut records = Vec::new();
    let mut previous: Option<(PageManifest, [u8; 32])> = None;
    let mut last_name = "(none: the first page)".to_owned();
    let mut finished = false;
    for (i, page) in pages.into_iter().enumerate() {
        let first_name = page.records.first().map_or_else(|| last_name.clone(), FileRecord::name);
        if finished {
            return Err(BackupError::Record {
                record: first_name,
                reason: "follows the backup's last page (added)".into(),
            });
        }
        let signature_ok = Signature::from_der(&page.signature)
            .is_ok_and(|signature| key.verify(&signed_message(&page.manifest), &signature).is_ok());
        if !signature_ok {
            return Err(BackupError::Signature {
                page: i,
                first: first_name,
            });
        }
        let manifest = PageManifest::decode(&page.manifest)?;
        let digest: [u8; 32] = Sha256::digest(&page.manifest).into();
        let sequence = |reason: &'static str| BackupError::Sequence {
            page: i,
            previous: i.saturating_sub(1),
            first: first_name.clone(),
            reason,
        };
        if manifest.backup_id != head.backup_id
            || manifest.root_commitment != head.root_commitment
            || manifest.deployment_id != head.deployment_id
            || manifest.created != head.created
            || manifest.namespaces != head.namespaces
        {
            return Err(sequence("it belongs to another backup"));
        }
        if usize::try_from(manifest.page).ok() != Some(i) {
            return Err(sequence("pages re-ordered, dropped or repeated"));
        }
        let (expected_from, expected_previous, count_before) = match &previous {
            None => (Cursor::START, [0u8; 32], 0),
            Some((p, d)) => (p.to.clone(), *d, p.count),
        };
        if manifest.previous != expected_previous || manifest.from != expected_from {
            return Err(sequence("pages re-ordered, dropped or from another backup"));
        }
        let expected_count = count_before.checked_add(manifest.entries.len() as u64);
        if expected_count != Some(manifest.count) {
            return Err(sequence("its count does not add up"));
        }
        check_records(&manifest, &page.records, &mut last_name)?;
        if let Some((p, _)) = &previous {
            check_order(p.entries.last(), manifest.entries.first(), &manifest.namespaces)?;
        }
        finished = manifest.last;
        if finished && manifest.to != manifest.end() {
            return Err(sequence("its last page does not reach the end"));
        }
        records.extend(page.records);
        previous = Some((manifest, digest));
    }
    if !finished {
        return Err(BackupError::Truncated {
            after: last_name,
            reason: "its last page is missing",
        });
    }
    Ok(Verified {
        root_commitment: head.root_commitment,
        deployment_id: head.deployment_id,
        created: head.created,
        backup_id: head.backup_id,
        records,
    })
}

/// The page's records must be exactly its manifest's entries, in order.
fn check_records(manifest: &PageManifest, records: &[FileRecord], last_name: &mut String) -> Result<(), BackupError> {
    let bad = |record: String, reason: String| BackupError::Record { record, reason };
    let mut prior: Option<&Entry> = None;
    for (index, entry) in manifest.entries.iter().enumerate() {
        let Some(record) = records.get(index) else {
            return Err(BackupError::Truncated {
                after: last_name.clone(),
                reason: "records its manifest lists are missing",
            });
        };
        if record.namespace != entry.namespace || record.key != entry.key || record.version != entry.version {
            return Err(bad(
                record.name(),
                format!(
                    "is not the record the manifest lists here ({}/{} version {}): re-ordered, replaced, or from another backup",
                    entry.namespace, entry.key, entry.version
                ),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(&record.value).into();
        if digest != entry.sha256 {
            return Err(bad(
                record.name(),
                "its bytes do not match the manifest's SHA-256 (altered, or from another backup)".into(),
            ));
        }
        if !manifest.namespaces.contains(&entry.namespace) || entry.version == 0 {
            return Err(bad(record.name(), "lies outside the backup's namespaces".into()));
        }
        check_order(prior, Some(entry), &manifest.namespaces)?;
        prior = Some(entry);
        *last_name = record.name();
    }
    if let Some(extra) = records.get(manifest.entries.len()) {
        return Err(bad(extra.name(), "is not in the manifest (added)".into()));
    }
    Ok(())
}

/// Entries are listed in strictly increasing (namespace, key) order, so no
/// identity appears twice.
fn check_order(before: Option<&Entry>, after: Option<&Entry>, namespaces: &[String]) -> Result<(), BackupError> {
    let (Some(a), Some(b)) = (before, after) else {
        return Ok(());
    };
    let position = |e: &Entry| namespaces.iter().position(|n| *n == e.namespace);
    let ordered = match (position(a), position(b)) {
        (Some(x), Some(y)) => (x, a.key.as_str()) < (y, b.key.as_str()),
        _ => false,
    };
    if ordered {
        Ok(())
    } else {
        Err(BackupError::Record {
            record: format!("{}/{} (version {})", b.namespace, b.key, b.version),
            reason: "is out of order in the manifest (listed twice)".into(),
        })
    }
}

#[cfg(test)]
mod tests;
