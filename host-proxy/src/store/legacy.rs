//! Refusal of a store written by Keyward's earlier engine, sled.
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
