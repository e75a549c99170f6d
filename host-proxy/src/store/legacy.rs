//! Refusal of a store written by Keyward's earlier engine, sled, or by the
//! earlier sealed-record format.
//!
//! Keyward is pre-1.0: there is no migration. A data dir whose `store`
//! holds a sled database is refused at start, with a message saying how to
//! start fresh, rather than opened empty beside the old files (which would
//! look like every key had vanished).

use std::path::{Path, PathBuf};

/// The embedded store directory holds a sled database.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dir} holds a store written by an earlier Keyward version (the sled engine), which this \
     version no longer reads: Keyward is pre-1.0 and does not migrate stores. Its keys and \
     records cannot be used by this version. To start fresh, stop Keyward and move the old \
     store aside (`mv {dir} {dir}.sled-old`) or delete it (`rm -r {dir}`), then start again."
)]
pub struct SledStoreError {
    pub dir: PathBuf,
}

/// sled 0.34 writes `conf` and `db` (and `snap.*`, `blobs/`) in its
/// directory; the embedded SQLite store never does.
pub fn refuse_sled(dir: &Path) -> Result<(), SledStoreError> {
    if is_sled(dir) {
        return Err(SledStoreError { dir: dir.to_path_buf() });
    }
    Ok(())
}

/// True when `dir` looks like a sled 0.34 database.
pub fn is_sled(dir: &Path) -> bool {
    let conf = dir.join("conf");
    let db = dir.join("db");
    if !(conf.is_file() && db.is_file()) {
        return false;
    }
    // sled's `conf` is `key: value` lines (`segment_size: …`, `version:
    // 0.34`) and a checksum; its `db` starts with no SQLite header.
    let conf_is_sled = std::fs::read(&conf).is_ok_and(|c| c.starts_with(b"segment_size:"));
    let db_is_sqlite = std::fs::read(&db).is_ok_and(|b| b.starts_with(b"SQLite format 3\0"));
    conf_is_sled && !db_is_sqlite
}

/// The store holds sealed records of the format before store versions were
/// bound into them (the enclave refuses them too; this says so at start).
#[derive(Debug, thiserror::Error)]
#[error(
    "{store} holds records written by an earlier Keyward version (sealed record format 1, before \
     record versions were sealed in), which this version refuses: Keyward is pre-1.0 and does not \
     migrate stores. To start fresh, stop Keyward and move the old store aside (embedded: `mv \
     <data-dir>/store <data-dir>/store.v1-old`) or delete it (PostgreSQL: `DROP TABLE \
     keyward_records`), then start again."
)]
pub struct OldRecordFormatError {
    pub store: String,
}

/// First byte of a sealed record of the earlier format (`enclave/src/seal.rs`).
const OLD_SEAL_FORMAT: u8 = 1;

/// Namespaces that every store with data has records in.
const SAMPLED: &[&str] = &["tenant", "cred", "key"];

/// Looks at the first record of a few namespaces: one of the earlier sealed
/// format refuses the store. (A hint for the operator, on the untrusted
/// side: the enclave refuses such records by itself.)
pub async fn refuse_old_records(backend: &dyn super::Backend, store: &str) -> Result<(), OldRecordFormatError> {
    for namespace in SAMPLED {
        if let Ok((entries, _)) = backend.list((*namespace).into(), String::new(), None, 1).await
            && entries
                .first()
                .is_some_and(|(_, _, value)| value.first() == Some(&OLD_SEAL_FORMAT))
        {
            return Err(OldRecordFormatError { store: store.into() });
        }
    }
    Ok(())
}
