//! The sealed-record store: sled on the host's disk, serving the enclave's
//! store calls. It sees only record identities and sealed bytes; it cannot
//! read, alter or invent a record without the enclave noticing.
//!
//! Writes are flushed to disk before they are acknowledged, so a write the
//! enclave reported to a client survives a crash of either process.

use std::path::Path;

use keyward_wire::{StoreOp, StoreResult};

/// Longest namespace or key accepted from the enclave.
const MAX_NAME: usize = 1024;
/// Largest page served.
const MAX_LIST: u32 = 1024;
/// sled's page cache (its default is 1 GiB): the working set of a large key
/// set stays in memory while the proxy's resident size stays bounded.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreOpenError {
    #[error("cannot open the store at {0}: {1}")]
    Open(String, sled::Error),
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Seconds each flush took (exported by `/metrics` when set).
    flush_timer: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreOpenError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| StoreOpenError::Open(path.display().to_string(), e))?;
        Ok(Store { db, flush_timer: None })
    }

    /// Applies one call. Writes block until flushed to disk: run those off
    /// the async workers. A `Get` is a lookup in sled's cache (or a read of
    /// one page), cheap enough to run inline.
    pub fn apply(&self, op: StoreOp) -> StoreResult {
        match self.try_apply(op) {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "store operation failed");
                StoreResult::Error(e)
            }
        }
    }

    /// Records the duration of every flush in `histogram`.
    pub fn with_flush_timer(mut self, histogram: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.flush_timer = Some(histogram);
        self
    }

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        self.db.flush().map_err(|e| e.to_string())?;
        if let Some(timer) = &self.flush_timer {
            timer.observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn tree(&self, namespace: &str) -> Result<sled::Tree, String> {
        if namespace.is_empty()
            || namespace.len() > 64
            || !namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("invalid namespace".into());
        }
        self.db.open_tree(format!("ns:{namespace}")).map_err(|e| e.to_string())
    }

    fn try_apply(&self, op: StoreOp) -> Result<StoreResult, String> {
        match op {
            StoreOp::Get { namespace, key } => {
                check_name(&key)?;
                let value = self.tree(&namespace)?.get(key.as_bytes()).map_err(|e| e.to_string())?;
                Ok(StoreResult::Value(
                    value.map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
                ))
            }
            StoreOp::Put { namespace, key, value } => {
                check_name(&key)?;
                self.tree(&namespace)?
                    .insert(key.as_bytes(), value)
                    .map_err(|e| e.to_string())?;
                self.flush()?;
                Ok(StoreResult::Done)
            }
            StoreOp::PutBatch { namespace, entries } => {
                let mut batch = sled::Batch::default();
                for (key, value) in entries {
                    check_name(&key)?;
                    batch.insert(key.as_bytes(), value.into_vec());
                }
                self.tree(&namespace)?.apply_batch(batch).map_err(|e| e.to_string())?;
                self.flush()?;
                Ok(StoreResult::Done)
            }
            StoreOp::Delete { namespace, key } => {
                check_name(&key)?;
                self.tree(&namespace)?
                    .remove(key.as_bytes())
                    .map_err(|e| e.to_string())?;
                self.flush()?;
                Ok(StoreResult::Done)
            }
            StoreOp::List {
                namespace,
                prefix,
                start_after,
                limit,
            } => {
                check_name(&prefix)?;
                let tree = self.tree(&namespace)?;
                let limit = limit.min(MAX_LIST) as usize;
                let mut entries = Vec::new();
                for item in tree.scan_prefix(prefix.as_bytes()) {
                    let (k, v) = item.map_err(|e| e.to_string())?;
                    let key = String::from_utf8(k.to_vec()).map_err(|_| "non-UTF-8 key in store".to_string())?;
                    if start_after.as_ref().is_some_and(|s| key.as_str() <= s.as_str()) {
                        continue;
                    }
                    entries.push((key, serde_bytes::ByteBuf::from(v.to_vec())));
                    if entries.len() >= limit {
                        break;
                    }
                }
                Ok(StoreResult::Entries(entries))
            }
            _ => Err("unsupported store operation".into()),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        Err("record name too long".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("opens");
            for k in ["t/a", "t/b", "t/c", "u/a"] {
                let op = StoreOp::Put {
                    namespace: "key".into(),
                    key: k.into(),
                    value: k.as_bytes().to_vec(),
                };
                assert_eq!(store.apply(op), StoreResult::Done);
            }
            let list = store.apply(StoreOp::List {
                namespace: "key".into(),
                prefix: "t/".into(),
                start_after: Some("t/a".into()),
                limit: 1,
            });
            let StoreResult::Entries(entries) = list else {
                panic!("entries expected")
            };
            assert_eq!(entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["t/b"]);
            assert_eq!(
                store.apply(StoreOp::Delete {
                    namespace: "key".into(),
                    key: "t/b".into()
                }),
                StoreResult::Done
            );
        }
        // Durable across a reopen.
        let store = Store::open(dir.path()).expect("reopens");
        let get = |k: &str| {
            store.apply(StoreOp::Get {
                namespace: "key".into(),
                key: k.into(),
            })
        };
        assert_eq!(
            get("t/a"),
            StoreResult::Value(Some(serde_bytes::ByteBuf::from(b"t/a".to_vec())))
        );
        assert_eq!(get("t/b"), StoreResult::Value(None));
        assert!(matches!(
            store.apply(StoreOp::Get {
                namespace: "../x".into(),
                key: "k".into()
            }),
            StoreResult::Error(_)
        ));
    }
}
