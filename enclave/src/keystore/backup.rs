//! Exporting a backup (`Keyward.ExportBackup`, operator only): the store's
//! records, one page at a time, exactly as the host holds them, each checked
//! to open (authentic) under this root, with a manifest signed by the audit
//! key — the key the boot record commits to (docs/custody.md, "Backup and
//! restore"; the formats are `keyward_custody::backup`).
//!
//! Nothing secret leaves: the records are the sealed bytes the host already
//! stores, and the plaintext of each record opened for the check is wiped at
//! once. The export is stateless: where the next page starts, and the
//! running manifest chain, travel in the marker (SigV4-signed by the
//! operator with every request; and the manifests' cursor ranges make a
//! backup built from forged markers fail `verify` anyway).
//!
//! Records written while a backup runs may or may not be in it (pages are
//! read at different times); each audit chain is cut at the head the backup
//! read, so a restored chain never holds records beyond its head.

use keyward_custody::backup::{BACKUP_ID_LEN, Cursor, Entry, PageManifest, signed_message};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::audit::chain::HeadRecord;
use crate::context::Ctx;
use crate::custody::record::{BootRecord, RECORD_KEY};
use crate::error::KmsError;
use crate::store::StoreError;

/// The namespaces a backup covers, in export order: every namespace the
/// enclave writes (a test checks the list against the modules' constants).
pub const NAMESPACES: &[&str] = &[
    crate::bootstrap::BOOT_NAMESPACE,
    crate::keystore::tenants::NAMESPACE,
    crate::auth::credentials::NAMESPACE,
    crate::auth::credentials::INDEX_NAMESPACE,
    crate::keys::record::NAMESPACE,
    crate::keystore::aliases::NAMESPACE,
    crate::policy::modules::NAMESPACE,
    crate::keys::import::NAMESPACE,
    crate::tls::NAMESPACE,
    crate::audit::chain::NAMESPACE,
    crate::store::index::NAMESPACE,
];

/// Most sealed bytes in one page (a page always holds at least one record).
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Records asked of the host per store call: the reply is one wire frame
/// (at most `keyward_wire::MAX_FRAME_LEN`, 4 MiB), and a policy module may
/// be 1 MiB, other records tens of KiB at most.
fn store_batch(namespace: &str) -> u32 {
    if namespace == crate::policy::modules::NAMESPACE {
        2
    } else {
        64
    }
}

/// Where the next page starts and what it chains to; opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMarker {
    #[serde(with = "serde_bytes")]
    pub backup_id: [u8; BACKUP_ID_LEN],
    pub page: u32,
    #[serde(with = "serde_bytes")]
    pub previous: [u8; 32],
    pub created: i64,
    pub count: u64,
    pub cursor: Cursor,
    /// The head sequence of the audit chain being exported: records past
    /// it are left out.
    pub audit_cut: Option<(String, u64)>,
    /// The audit heads exported so far: (index scope, store version,
    /// SHA-256 of the stored bytes). Each scope's index root is exported
    /// with its head entry set to these, so a restored store's index
    /// matches the chains as cut.
    #[serde(default)]
    pub audit_heads: Vec<(String, u64, [u8; 32])>,
}

/// One record of a page: its identity, version and stored bytes.
pub struct StoredRecord {
    pub namespace: &'static str,
    pub key: String,
    pub version: u64,
    pub value: Vec<u8>,
}

/// One exported page.
pub struct BackupPage {
    pub records: Vec<StoredRecord>,
    /// The manifest's CBOR bytes.
    pub manifest: Vec<u8>,
    /// DER ECDSA P-256 signature by the audit key over
    /// `keyward_custody::backup::signed_message(manifest)`.
    pub signature: Vec<u8>,
    /// The audit public key (SPKI DER): the root commitment.
    pub root_commitment: Vec<u8>,
    /// Where the next page starts, unless this is the last.
    pub next: Option<BackupMarker>,
}

/// One page of the backup, from `marker` (the first page when `None`), at
/// most `limit` records.
pub async fn export(ctx: &Ctx<'_>, marker: Option<BackupMarker>, limit: u32) -> Result<BackupPage, KmsError> {
    let signing_key = ctx.keyring.hierarchy.audit_signing_key();
    let commitment = signing_key
        .verifying_key()
        .to_public_key_der()
        .map_err(|_| KmsError::Internal)?
        .as_bytes()
        .to_vec();
    let deployment_id = deployment_id(ctx, &commitment).await?;
    let mut state = match marker {
        Some(marker) => marker,
        None => BackupMarker {
            backup_id: random_id()?,
            page: 0,
            previous: [0; 32],
            created: ctx.now.unix_timestamp(),
            count: 0,
            cursor: Cursor::START,
            audit_cut: None,
            audit_heads: Vec::new(),
        },
    };
    let from = state.cursor.clone();
    let mut records = Vec::new();
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let end = NAMESPACES.len();
    while (state.cursor.namespace as usize) < end && records.len() < limit as usize && bytes < MAX_PAGE_BYTES {
        let namespace = NAMESPACES[state.cursor.namespace as usize];
        let want = (limit - records.len() as u32).min(store_batch(namespace));
        let page = ctx
            .records
            .list_stored(namespace, state.cursor.after.as_deref(), want)
            .await?;
        let exhausted = page.len() < want as usize;
        let mut stopped = false;
        for (key, version, value) in page {
            state.cursor.after = Some(key.clone());
            let sealed = check(ctx, namespace, &key, version, &value, &commitment, &mut state.audit_cut)?;
            let Some(sealed) = sealed else { continue };
            if namespace == crate::audit::chain::NAMESPACE
                && let Some(place) = crate::store::index::place(namespace, &key)
                && place.head
            {
                state
                    .audit_heads
                    .push((place.scope, version, Sha256::digest(&value).into()));
            }
            let value = if namespace == crate::store::index::NAMESPACE && key.ends_with("/root") {
                with_exported_head(ctx, &key, version, &value, &state.audit_heads)?
            } else {
                value
            };
            bytes += value.len();
            entries.push(Entry {
                namespace: namespace.to_owned(),
                key: key.clone(),
                version,
                sha256: Sha256::digest(&value).into(),
                sealed,
            });
            records.push(StoredRecord {
                namespace,
                key,
                version,
                value,
            });
            if bytes >= MAX_PAGE_BYTES {
                stopped = true;
                break;
            }
        }
        if exhausted && !stopped {
            state.cursor = Cursor {
                namespace: state.cursor.namespace + 1,
                after: None,
            };
        }
    }
    let last = state.cursor.namespace as usize >= end;
    state.count += entries.len() as u64;
    let manifest = PageManifest {
        format: keyward_custody::FORMAT_VERSION,
        backup_id: state.backup_id,
        page: state.page,
        previous: state.previous,
        created: state.created,
        root_commitment: commitment.clone(),
        deployment_id: deployment_id.map(|d| d.to_vec()),
        namespaces: NAMESPACES.iter().map(|n| (*n).to_owned()).collect(),
        from,
        to: state.cursor.clone(),
        entries,
        count: state.count,
        last,
    }
    .encode()
    .map_err(|_| KmsError::Internal)?;
    let signature: p256::ecdsa::Signature = signing_key.sign(&signed_message(&manifest));
    let next = if last {
        None
    } else {
        state.page += 1;
        state.previous = Sha256::digest(&manifest).into();
        Some(state)
    };
    Ok(BackupPage {
        records,
        manifest,
        signature: signature.to_der().as_bytes().to_vec(),
        root_commitment: commitment,
        next,
    })
}

/// Checks one stored record: `Some(true)` sealed and authentic,
/// `Some(false)` a boot record stored in the clear, `None` an audit record
/// past the chain's head as read (left out). A record that does not open is
/// refused, naming it.
fn check(
    ctx: &Ctx<'_>,
    namespace: &str,
    key: &str,
    version: u64,
    value: &[u8],
    commitment: &[u8],
    audit_cut: &mut Option<(String, u64)>,
) -> Result<Option<bool>, KmsError> {
    let is_audit = namespace == crate::audit::chain::NAMESPACE;
    if is_audit
        && let Some((chain, sequence)) = key.rsplit_once("/r/")
        && let Some((cut_chain, head)) = audit_cut.as_ref()
        && chain == cut_chain
        && sequence.parse::<u64>().is_ok_and(|s| s > *head)
    {
        return Ok(None);
    }
    match ctx.keyring.sealer.open(namespace, key, version, value) {
        Ok(plain) => {
            let plain = Zeroizing::new(plain);
            if is_audit && let Some(chain) = key.strip_suffix("/head") {
                let head: HeadRecord = serde_cbor::from_slice(&plain)
                    .map_err(|e| KmsError::from(StoreError::Decode(format!("{namespace}/{key}: {e}"))))?;
                *audit_cut = Some((chain.to_owned(), head.sequence));
            }
            Ok(Some(true))
        }
        Err(_) if namespace == crate::bootstrap::BOOT_NAMESPACE => {
            if key == RECORD_KEY {
                boot_record(value, commitment)?;
            }
            // Other boot records in the clear (the mock root-key record of
            // the dev-only wrapping) are carried as they are.
            Ok(Some(false))
        }
        Err(e) => Err(KmsError::from(StoreError::Seal(e))),
    }
}

/// An index root as exported: the stored root with its audit head entry
/// set to the head this backup exported for the scope (none: none), sealed
/// again at the same version. The chains are cut at the heads the backup
/// read, while the root read later already holds newer heads (every page is
/// audited); a restored store must hold a root that matches its chains.
fn with_exported_head(
    ctx: &Ctx<'_>,
    key: &str,
    version: u64,
    value: &[u8],
    heads: &[(String, u64, [u8; 32])],
) -> Result<Vec<u8>, KmsError> {
    let namespace = crate::store::index::NAMESPACE;
    let plain = Zeroizing::new(
        ctx.keyring
            .sealer
            .open(namespace, key, version, value)
            .map_err(|e| KmsError::from(StoreError::Seal(e)))?,
    );
    let mut root: crate::store::index::Root = serde_cbor::from_slice(&plain)
        .map_err(|e| KmsError::from(StoreError::Decode(format!("{namespace}/{key}: {e}"))))?;
    let head = heads
        .iter()
        .find(|(scope, _, _)| *scope == root.scope)
        .map(|(_, version, hash)| crate::store::index::Entry {
            version: *version,
            hash: *hash,
        });
    if head == root.head {
        return Ok(value.to_vec());
    }
    root.head = head;
    let plain = serde_cbor::to_vec(&root).map_err(|_| KmsError::Internal)?;
    ctx.keyring
        .sealer
        .seal(namespace, key, version, &plain)
        .map_err(|e| KmsError::from(StoreError::Seal(e)))
}

/// The custody boot record, which must commit to this root.
fn boot_record(bytes: &[u8], commitment: &[u8]) -> Result<BootRecord, KmsError> {
    let record = BootRecord::decode(bytes)
        .map_err(|e| KmsError::InternalDetail(format!("The boot record does not decode ({e}); no backup was made.")))?;
    if record.commitment.as_bytes() != commitment {
        return Err(KmsError::InternalDetail(
            "The boot record commits to another root than the one this enclave runs with; no backup was made.".into(),
        ));
    }
    Ok(record)
}

/// The deployment id of the custody boot record, when the store has one.
async fn deployment_id(ctx: &Ctx<'_>, commitment: &[u8]) -> Result<Option<[u8; 16]>, KmsError> {
    let (_, stored) = ctx
        .records
        .get_stored(crate::custody::record::NAMESPACE, RECORD_KEY)
        .await?;
    stored
        .map(|bytes| boot_record(&bytes, commitment).map(|r| r.deployment_id))
        .transpose()
}

fn random_id() -> Result<[u8; BACKUP_ID_LEN], KmsError> {
    let mut id = [0u8; BACKUP_ID_LEN];
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut id).map_err(|_| KmsError::Internal)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every namespace the enclave writes is backed up, once.
    #[test]
    fn every_namespace_is_covered_once() {
        let written = [
            "boot",
            "tenant",
            "cred",
            "tenant-cred",
            "key",
            "alias",
            "policy",
            "import",
            "tls",
            "audit",
            "index",
            crate::custody::record::NAMESPACE,
        ];
        for namespace in written {
            assert!(NAMESPACES.contains(&namespace), "{namespace} is not backed up");
        }
        let mut sorted = NAMESPACES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), NAMESPACES.len(), "a namespace is listed twice");
    }

    /// A store call's reply fits one wire frame even when every record it
    /// lists is as large as records of that namespace get (policy modules:
    /// 1 MiB of module plus its sealed record's envelope).
    #[test]
    fn a_store_page_of_the_largest_records_fits_a_frame() {
        let frame = keyward_wire::MAX_FRAME_LEN as usize;
        let module = crate::policy::sandbox::MAX_MODULE_BYTES + 64 * 1024;
        assert!(store_batch(crate::policy::modules::NAMESPACE) as usize * module < frame);
        for namespace in NAMESPACES {
            assert!(store_batch(namespace) as usize * 60 * 1024 < frame, "{namespace}");
        }
    }
}
