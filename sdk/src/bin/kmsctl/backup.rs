//! `kmsctl backup --out FILE` (operator, against a Ready service) and
//! `kmsctl restore FILE --data-dir DIR | --store URL` (no service): see
//! docs/custody.md, "Backup and restore". Restore verifies the whole file
//! (manifest signatures against its root commitment, every record's
//! identity, version and hash, the page chain and count) before it writes
//! anything, then loads the records at their versions into an empty store.

use std::io::Write as _;
use std::path::Path;

use keyward_proxy::store::{LoadRecord, StoreLocation, load};
use keyward_sdk::Client;
use keyward_sdk::backup::{BackupWriteError, format, write_backup};

use crate::Failure;
use crate::args::RestoreArgs;

pub(crate) async fn backup(client: &Client, out: &Path) -> Result<(), Failure> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| Failure::Usage(format!("--out {}: {e}", out.display())))?;
    let mut writer = std::io::BufWriter::new(file);
    let written = write_backup(client, &mut writer).await;
    let summary = match written.and_then(|s| {
        let file = writer.into_inner().map_err(|e| BackupWriteError::Io(e.into_error()))?;
        file.sync_all()?;
        Ok(s)
    }) {
        Ok(summary) => summary,
        Err(e) => {
            // Never leave a partial file that looks like a backup.
            let _ = std::fs::remove_file(out);
            return Err(match e {
                BackupWriteError::Service(e) => Failure::Service(e),
                other => Failure::Mismatch(other.to_string()),
            });
        }
    };
    println!(
        "backup written to {}: {} records in {} pages, signed by root commitment (audit key) sha256:{}",
        out.display(),
        summary.records,
        summary.pages,
        sha256_hex(&summary.root_commitment)
    );
    Ok(())
}

pub(crate) fn restore(args: &RestoreArgs) -> Result<(), Failure> {
    let location = match (&args.data_dir, &args.store) {
        (Some(dir), None) => StoreLocation::Embedded(dir.join("store")),
        (None, Some(store)) => StoreLocation::parse(store),
        _ => return Err(Failure::Usage("give exactly one of --data-dir and --store".into())),
    };
    let expected = args
        .expect_commitment
        .as_deref()
        .map(crate::audit::read_pinned_key)
        .transpose()?;
    let bytes = std::fs::read(&args.file).map_err(|e| Failure::Usage(format!("{}: {e}", args.file.display())))?;
    let refused = |e: format::BackupError| Failure::Mismatch(format!("backup {} refused: {e}", args.file.display()));
    let pages = format::read_file(&bytes).map_err(refused)?;
    drop(bytes);
    let verified = format::verify(pages, expected.as_deref()).map_err(refused)?;
    let deployment = verified
        .deployment_id
        .as_deref()
        .map_or_else(|| "none (no custody boot record)".to_owned(), hex::encode);
    let records: Vec<LoadRecord> = verified
        .records
        .into_iter()
        .map(|r| LoadRecord {
            namespace: r.namespace,
            key: r.key,
            version: r.version,
            value: r.value,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Mismatch(format!("starting the runtime: {e}")))?;
    let loaded = runtime
        .block_on(load(&location, records))
        .map_err(|e| Failure::Mismatch(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "restored {loaded} records into {location} (deployment {deployment}, root commitment sha256:{}, backup made at {})",
        sha256_hex(&verified.root_commitment),
        verified.created
    );
    let _ = writeln!(
        out,
        "start Keyward on it and unseal it with the deployment's custody (the same custodians' shares; for \
         `keyward dev`, the source data dir's dev-custodian/ directory)"
    );
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
