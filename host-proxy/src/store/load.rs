//! Loading a verified backup into an **empty** store (`kmsctl restore`,
//! docs/custody.md): every record at the version it had, in one
//! transaction, so the enclave opens each under the version sealed into it.
//! A store that holds anything (a record, or a deleted record's version) is
//! refused and left as it was; so is a load that fails half-way (nothing of
//! it is committed).

use std::path::Path;

use rusqlite::{TransactionBehavior, params};
use tokio_postgres::NoTls;

use super::{StoreLocation, StoreOpenError, check_key, check_namespace, embedded, legacy, postgres};

/// One record to load: identity, version (at least 1) and stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRecord {
    pub namespace: String,
    pub key: String,
    pub version: u64,
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error(transparent)]
    Open(#[from] StoreOpenError),
    #[error("the store at {0} is not empty: a backup is restored only into an empty store (nothing was written)")]
    NotEmpty(String),
    #[error("record {0} cannot be stored: {1}")]
    Invalid(String, String),
    #[error("loading into {0} failed (nothing was written): {1}")]
    Failed(String, String),
}

/// Loads `records` into the empty store at `location` (an embedded store's
/// directory is created if missing).
pub async fn load(location: &StoreLocation, records: Vec<LoadRecord>) -> Result<usize, LoadError> {
    for r in &records {
        let name = || format!("{}/{}", r.namespace, r.key);
        check_namespace(&r.namespace).map_err(|e| LoadError::Invalid(name(), e))?;
        check_key(&r.key).map_err(|e| LoadError::Invalid(name(), e))?;
        if r.version == 0 || i64::try_from(r.version).is_err() {
            return Err(LoadError::Invalid(name(), format!("version {} out of range", r.version)));
        }
    }
    match location {
        StoreLocation::Embedded(dir) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || load_embedded(&dir, &records))
                .await
                .map_err(|e| LoadError::Failed(location.to_string(), e.to_string()))?
        }
        StoreLocation::Postgres(url) => load_postgres(url, &records).await,
    }
}

fn load_embedded(dir: &Path, records: &[LoadRecord]) -> Result<usize, LoadError> {
    let shown = dir.display().to_string();
    let failed = |e: String| LoadError::Failed(shown.clone(), e);
    legacy::refuse_sled(dir).map_err(StoreOpenError::from)?;
    std::fs::create_dir_all(dir).map_err(|e| StoreOpenError::Open(shown.clone(), e.to_string()))?;
    let mut conn = embedded::open_writer(&embedded::Embedded::file(dir)).map_err(|e| StoreOpenError::Open(shown.clone(), e))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| failed(e.to_string()))?;
    let occupied: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM records)", [], |r| r.get(0))
        .map_err(|e| failed(e.to_string()))?;
    if occupied {
        return Err(LoadError::NotEmpty(shown));
    }
    {
        let mut insert = tx
            .prepare("INSERT INTO records (ns, key, version, value) VALUES (?1, ?2, ?3, ?4)")
            .map_err(|e| failed(e.to_string()))?;
        for r in records {
            let version = i64::try_from(r.version).map_err(|e| failed(e.to_string()))?;
            insert
                .execute(params![r.namespace, r.key, version, r.value])
                .map_err(|e| failed(format!("{}/{}: {e}", r.namespace, r.key)))?;
        }
    }
    tx.commit().map_err(|e| failed(e.to_string()))?;
    Ok(records.len())
}

async fn load_postgres(url: &str, records: &[LoadRecord]) -> Result<usize, LoadError> {
    let shown = postgres::redact(url);
    let failed = |e: String| LoadError::Failed(shown.clone(), e);
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreOpenError::Open(shown.clone(), e.to_string()))?;
    let (mut client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| StoreOpenError::Open(shown.clone(), e.to_string()))?;
    let driver = tokio::spawn(connection);
    let outcome = async {
        postgres::create_schema(&mut client)
            .await
            .map_err(|e| StoreOpenError::Open(shown.clone(), e.to_string()))?;
        let tx = client.transaction().await.map_err(|e| failed(e.to_string()))?;
        // No node writes while the table is checked and filled.
        tx.batch_execute("LOCK TABLE keyward_records IN EXCLUSIVE MODE")
            .await
            .map_err(|e| failed(e.to_string()))?;
        let occupied: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM keyward_records)", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| failed(e.to_string()))?;
        if occupied {
            return Err(LoadError::NotEmpty(shown.clone()));
        }
        let insert = tx
            .prepare("INSERT INTO keyward_records (ns, key, version, value) VALUES ($1, $2, $3, $4)")
            .await
            .map_err(|e| failed(e.to_string()))?;
        for r in records {
            let version = i64::try_from(r.version).map_err(|e| failed(e.to_string()))?;
            tx.execute(&insert, &[&r.namespace, &r.key, &version, &r.value])
                .await
                .map_err(|e| failed(format!("{}/{}: {e}", r.namespace, r.key)))?;
        }
        tx.commit().await.map_err(|e| failed(e.to_string()))?;
        Ok(records.len())
    }
    .await;
    drop(client);
    driver.abort();
    outcome
}
