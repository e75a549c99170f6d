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
            return Err(LoadError::Invalid(
                name(),
                format!("version {} out of range", r.version),
            ));
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
    let mut conn =
        embedded::open_writer(&embedded::Embedded::file(dir)).map_err(|e| StoreOpenError::Open(shown.clone(), e))?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use keyward_wire::{StoreOp, StoreResult};

    use super::super::Store;
    use super::*;

    fn record(namespace: &str, key: &str, version: u64, value: &[u8]) -> LoadRecord {
        LoadRecord {
            namespace: namespace.into(),
            key: key.into(),
            version,
            value: value.to_vec(),
        }
    }

    /// A database of its own on the test server (load needs an empty table).
    async fn fresh_postgres() -> Option<String> {
        let url = super::super::tests::postgres_url()?;
        let config: tokio_postgres::Config = url.parse().expect("a URL");
        let (client, connection) = config.connect(NoTls).await.expect("connects");
        tokio::spawn(connection);
        let name = format!("keyward_load_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creates a database");
        let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _) = base.rsplit_once('/').expect("a database in the URL");
        Some(match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        })
    }

    async fn locations() -> Vec<(StoreLocation, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut out = vec![(StoreLocation::Embedded(dir.path().join("store")), Some(dir))];
        if let Some(url) = fresh_postgres().await {
            out.push((StoreLocation::Postgres(url), None));
        }
        out
    }

    #[tokio::test]
    async fn a_backup_loads_at_its_versions_into_an_empty_store_only() {
        for (location, _dir) in locations().await {
            let records = vec![
                record("key", "t/k1", 7, b"sealed one"),
                record("alias", "t/a", 2, b"two"),
            ];
            assert_eq!(load(&location, records.clone()).await.expect("loads"), 2, "{location}");

            let store = Store::open(&location, None).await.expect("opens");
            for r in &records {
                let op = StoreOp::GetVersioned {
                    namespace: r.namespace.clone(),
                    key: r.key.clone(),
                };
                match store.call(op).await {
                    StoreResult::Versioned { version, value } => {
                        assert_eq!(version, r.version, "{location}");
                        assert_eq!(value.map(|v| v.into_vec()), Some(r.value.clone()), "{location}");
                    }
                    other => panic!("{location}: {other:?}"),
                }
            }
            drop(store);

            // Not empty any more: refused, and nothing of it written.
            let again = load(&location, vec![record("key", "t/k9", 1, b"x")]).await;
            assert!(matches!(again, Err(LoadError::NotEmpty(_))), "{location}: {again:?}");
            let store = Store::open(&location, None).await.expect("opens");
            let op = StoreOp::GetVersioned {
                namespace: "key".into(),
                key: "t/k9".into(),
            };
            assert!(
                matches!(
                    store.call(op).await,
                    StoreResult::Versioned {
                        version: 0,
                        value: None
                    }
                ),
                "{location}"
            );
        }
    }

    #[tokio::test]
    async fn a_store_with_only_a_deleted_record_is_not_empty_and_bad_records_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = StoreLocation::Embedded(dir.path().join("store"));
        {
            let store = Store::open(&location, None).await.expect("opens");
            let put = StoreOp::Put {
                namespace: "key".into(),
                key: "gone".into(),
                value: b"v".to_vec(),
            };
            store.call(put).await;
            let delete = StoreOp::Delete {
                namespace: "key".into(),
                key: "gone".into(),
            };
            store.call(delete).await;
        }
        let refused = load(&location, vec![record("key", "t/k", 1, b"x")]).await;
        assert!(matches!(refused, Err(LoadError::NotEmpty(_))), "{refused:?}");

        let other = tempfile::tempdir().expect("tempdir");
        let location = StoreLocation::Embedded(other.path().join("store"));
        for bad in [record("key", "t/k", 0, b"x"), record("no/slash", "k", 1, b"x")] {
            let refused = load(&location, vec![bad.clone()]).await;
            assert!(matches!(refused, Err(LoadError::Invalid(..))), "{bad:?}: {refused:?}");
        }
    }
}
