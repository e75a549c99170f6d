//! The enclave's view of the host's record store.
//!
//! The host holds the bytes; the enclave holds the meaning. [`Records`] seals
//! every value before it leaves the enclave and opens (authenticates) every
//! value that comes back, so a record that the host altered, moved or invented
//! is an error, never data. A record the host *drops* reads as absent: the
//! callers that must not accept that (the root key) say so explicitly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use keyward_wire::{StoreOp, StoreResult};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::seal::{SealError, Sealer};

/// Largest page the enclave asks for: above the largest API page (1000)
/// plus the one extra entry that tells whether another page follows.
pub const MAX_LIST: u32 = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the host store is unreachable: {0}")]
    Unavailable(String),
    #[error("the host store failed: {0}")]
    Host(String),
    #[error("the host store answered out of protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("record {0} does not decode")]
    Decode(String),
}

pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<StoreResult, StoreError>> + Send + 'a>>;

/// Something that carries store calls to the host: the connection a request
/// arrived on, or an in-memory map in tests.
pub trait StoreTransport: Send + Sync {
    fn call(&self, op: StoreOp) -> StoreFuture<'_>;
}

/// Sealed, typed records over a transport.
pub struct Records<'a> {
    transport: &'a dyn StoreTransport,
    sealer: &'a Sealer,
}

impl<'a> Records<'a> {
    pub fn new(transport: &'a dyn StoreTransport, sealer: &'a Sealer) -> Self {
        Records { transport, sealer }
    }

    pub async fn get<T: DeserializeOwned>(&self, namespace: &str, key: &str) -> Result<Option<T>, StoreError> {
        let op = StoreOp::Get {
            namespace: namespace.into(),
            key: key.into(),
        };
        match self.transport.call(op).await? {
            StoreResult::Value(None) => Ok(None),
            StoreResult::Value(Some(sealed)) => self.open(namespace, key, &sealed).map(Some),
            StoreResult::Error(e) => Err(StoreError::Host(e)),
            other => Err(StoreError::Protocol(format!("unexpected answer to get: {other:?}"))),
        }
    }

    /// Durable on the host when this returns `Ok`.
    pub async fn put<T: Serialize>(&self, namespace: &str, key: &str, value: &T) -> Result<(), StoreError> {
        let plain = serde_cbor::to_vec(value).map_err(|e| StoreError::Decode(format!("{namespace}/{key}: {e}")))?;
        let sealed = self.sealer.seal(namespace, key, &plain)?;
        let op = StoreOp::Put {
            namespace: namespace.into(),
            key: key.into(),
            value: sealed,
        };
        expect_done(self.transport.call(op).await?)
    }

    /// Seals and writes several records of one namespace atomically; durable
    /// on the host when this returns `Ok`. Values are plaintext CBOR.
    pub async fn put_batch_encoded(&self, namespace: &str, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let entries = entries
            .into_iter()
            .map(|(key, plain)| {
                let sealed = self.sealer.seal(namespace, &key, &plain)?;
                Ok((key, serde_bytes::ByteBuf::from(sealed)))
            })
            .collect::<Result<_, SealError>>()?;
        expect_done(
            self.transport
                .call(StoreOp::PutBatch {
                    namespace: namespace.into(),
                    entries,
                })
                .await?,
        )
    }

    /// Like [`Records::list`], but a record that fails to authenticate or
    /// decode is returned as an error in place instead of failing the page.
    pub async fn list_each<T: DeserializeOwned>(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Result<T, StoreError>)>, StoreError> {
        let limit = limit.min(MAX_LIST);
        let op = StoreOp::List {
            namespace: namespace.into(),
            prefix: prefix.into(),
            start_after: start_after.map(str::to_owned),
            limit,
        };
        let entries = match self.transport.call(op).await? {
            StoreResult::Entries(entries) => entries,
            StoreResult::Error(e) => return Err(StoreError::Host(e)),
            other => return Err(StoreError::Protocol(format!("unexpected answer to list: {other:?}"))),
        };
        check_page(&entries, prefix, start_after, limit)?;
        Ok(entries
            .into_iter()
            .map(|(key, sealed)| {
                let value = self.open(namespace, &key, &sealed);
                (key, value)
            })
            .collect())
    }

    pub async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let op = StoreOp::Delete {
            namespace: namespace.into(),
            key: key.into(),
        };
        expect_done(self.transport.call(op).await?)
    }

    /// Records whose key starts with `prefix`, strictly after `start_after`, in
    /// key order, at most `limit`. Every entry is authenticated, and the page is
    /// checked to be what was asked for.
    pub async fn list<T: DeserializeOwned>(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.list_each(namespace, prefix, start_after, limit)
            .await?
            .into_iter()
            .map(|(key, value)| value.map(|v| (key, v)))
            .collect()
    }

    fn open<T: DeserializeOwned>(&self, namespace: &str, key: &str, sealed: &[u8]) -> Result<T, StoreError> {
        let plain = self.sealer.open(namespace, key, sealed)?;
        serde_cbor::from_slice(&plain).map_err(|e| StoreError::Decode(format!("{namespace}/{key}: {e}")))
    }
}

/// A page must be what was asked for: within the prefix, after the marker,
/// in strictly increasing key order, no longer than the limit.
fn check_page(
    entries: &[(String, serde_bytes::ByteBuf)],
    prefix: &str,
    start_after: Option<&str>,
    limit: u32,
) -> Result<(), StoreError> {
    if entries.len() > limit as usize {
        return Err(StoreError::Protocol("list returned more entries than asked".into()));
    }
    let mut previous: Option<&str> = start_after;
    for (key, _) in entries {
        if !key.starts_with(prefix) || previous.is_some_and(|p| key.as_str() <= p) {
            return Err(StoreError::Protocol(
                "list returned keys out of range or out of order".into(),
            ));
        }
        previous = Some(key);
    }
    Ok(())
}

fn expect_done(result: StoreResult) -> Result<(), StoreError> {
    match result {
        StoreResult::Done => Ok(()),
        StoreResult::Error(e) => Err(StoreError::Host(e)),
        other => Err(StoreError::Protocol(format!("unexpected answer to a write: {other:?}"))),
    }
}

/// An in-memory transport with the host store's semantics, for unit tests and
/// benchmarks of the enclave alone. Not durable; never used by the binaries.
#[derive(Default)]
pub struct MemoryStore {
    map: std::sync::Mutex<std::collections::BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every stored value, for tests that look for secrets at rest.
    pub fn all_values(&self) -> Vec<Vec<u8>> {
        self.lock().values().cloned().collect()
    }

    /// An independent copy of everything stored (the fuzz targets start
    /// every input from the same store).
    pub fn snapshot(&self) -> MemoryStore {
        MemoryStore {
            map: std::sync::Mutex::new(self.lock().clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, String), Vec<u8>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, op: StoreOp) -> StoreResult {
        let mut map = self.lock();
        match op {
            StoreOp::Get { namespace, key } => {
                StoreResult::Value(map.get(&(namespace, key)).cloned().map(serde_bytes::ByteBuf::from))
            }
            StoreOp::Put { namespace, key, value } => {
                map.insert((namespace, key), value);
                StoreResult::Done
            }
            StoreOp::PutBatch { namespace, entries } => {
                for (key, value) in entries {
                    map.insert((namespace.clone(), key), value.into_vec());
                }
                StoreResult::Done
            }
            StoreOp::Delete { namespace, key } => {
                map.remove(&(namespace, key));
                StoreResult::Done
            }
            StoreOp::List {
                namespace,
                prefix,
                start_after,
                limit,
            } => StoreResult::Entries(
                map.iter()
                    .filter(|((ns, k), _)| {
                        *ns == namespace && k.starts_with(&prefix) && start_after.as_ref().is_none_or(|s| k > s)
                    })
                    .take(limit as usize)
                    .map(|((_, k), v)| (k.clone(), serde_bytes::ByteBuf::from(v.clone())))
                    .collect(),
            ),
            _ => StoreResult::Error("unsupported operation".into()),
        }
    }
}

impl StoreTransport for MemoryStore {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        let result = self.apply(op);
        Box::pin(async move { Ok(result) })
    }
}
