//! The enclave's view of the host's record store.
//!
//! The host holds the bytes; the enclave holds the meaning. [`Records`] seals
//! every value before it leaves the enclave and opens (authenticates) every
//! value that comes back, so a record that the host altered, moved or invented
//! is an error, never data. A record the host *drops* reads as absent: the
//! callers that must not accept that (the root key) say so explicitly.
//!
//! # Versions
//! Every record identity has a store version (see `keyward_wire::StoreOp::
//! GetVersioned`), and the version is sealed into the record's associated
//! data: bytes served under another version than the one they were sealed
//! for do not open. [`Records`] reads with `GetVersioned`/`ListVersioned` and
//! remembers the version of every record it read (its *read set*); a later
//! write of that record is a compare-and-swap against that version, so a
//! read-modify-write never overwrites a change it did not see (another
//! request on this node, or another node on a shared store). A write of a
//! record that was not read first overwrites whatever is there (the old
//! unconditional `Put`), still as a CAS on the version the store reports.
//! A failed expectation is [`StoreError::Conflict`]; `api::serve` re-runs a
//! request that conflicted before it wrote anything.
//!
//! # Cache
//! With a [`RecordCache`] ([`Records::cached`]), reads of credentials,
//! tenants, keys, aliases and policy modules are served from the enclave's
//! memory while the store confirmed the entry less than
//! [`cache::REVALIDATE_AFTER`] ago; see `cache.rs` for the bound.

pub mod cache;
mod checkpoint;
pub mod index;
mod indexed;
mod memory;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use keyward_wire::{Expected, StoreOp, StoreResult, StoreWrite};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use cache::RecordCache;
pub use index::Index;
pub use indexed::genesis;
pub use memory::{MemoryStore, StoredRecord};

use crate::seal::{SealError, Sealer};

/// Largest page the enclave asks for: above the largest API page (1000)
/// plus the one extra entry that tells whether another page follows.
pub const MAX_LIST: u32 = 1024;

/// How many times a write of a record that was not read first follows the
/// version the store reports before giving up (each try is one round trip).
const BLIND_WRITE_TRIES: usize = 8;

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
    /// A tenant record without a tenant generation: the data dir predates
    /// tenant generations (the tenant's keys cannot be derived without one).
    #[error(
        "record {0} was written by an earlier Keyward (a tenant record without a tenant generation: the data dir predates tenant generations); {start_fresh}",
        start_fresh = crate::seal::START_FRESH
    )]
    NoGeneration(String),
    /// A compare-and-swap write found the record changed since it was read:
    /// nothing was written.
    #[error("record {record} was changed concurrently (read at version {expected}, the store has {found})")]
    Conflict { record: String, expected: u64, found: u64 },
    /// The host served state the authenticated index contradicts (a
    /// rollback, an omission, a substituted version): nothing is released.
    #[error(
        "the host store served {record} as {served}, but the enclave's authenticated index holds {expected} ({kind})",
        kind = kind.label()
    )]
    Freshness {
        kind: index::Violation,
        record: String,
        expected: String,
        served: String,
    },
}

pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<StoreResult, StoreError>> + Send + 'a>>;

/// Something that carries store calls to the host: the connection a request
/// arrived on, or an in-memory map in tests.
pub trait StoreTransport: Send + Sync {
    fn call(&self, op: StoreOp) -> StoreFuture<'_>;
}

/// What the read set knows of a record: its version when read, and whether
/// it had a value.
#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    exists: bool,
}

type Identity = (String, String);

/// Sealed, typed, versioned records over a transport, for one request (or
/// one piece of background work): the read set lives as long as this value.
pub struct Records<'a> {
    transport: &'a dyn StoreTransport,
    sealer: &'a Sealer,
    cache: Option<&'a RecordCache>,
    /// The authenticated index every read is checked against and every
    /// write updates; `None` only in tests of the store layer itself.
    index: Option<&'a Index>,
    read_set: Mutex<HashMap<Identity, Seen>>,
    /// Writes committed through this value.
    writes: AtomicU32,
    /// A write through this value failed its expectation.
    conflicted: AtomicBool,
}

impl<'a> Records<'a> {
    /// Records without a cache: every read goes to the host.
    pub fn new(transport: &'a dyn StoreTransport, sealer: &'a Sealer) -> Self {
        Records {
            transport,
            sealer,
            cache: None,
            index: None,
            read_set: Mutex::new(HashMap::new()),
            writes: AtomicU32::new(0),
            conflicted: AtomicBool::new(false),
        }
    }

    /// Records whose reads may be served from `cache` (and whose writes and
    /// reads keep it current).
    pub fn cached(transport: &'a dyn StoreTransport, sealer: &'a Sealer, cache: &'a RecordCache) -> Self {
        Records {
            cache: Some(cache),
            ..Records::new(transport, sealer)
        }
    }

    /// Records checked against and kept in `index` (every `Records` of a
    /// running enclave: its keyring's index).
    pub fn indexed(transport: &'a dyn StoreTransport, sealer: &'a Sealer, index: &'a Index) -> Self {
        Records {
            index: Some(index),
            ..Records::new(transport, sealer)
        }
    }

    /// These records, checked against and kept in `index`.
    pub fn with_index(self, index: &'a Index) -> Self {
        Records {
            index: Some(index),
            ..self
        }
    }

    /// Marks a conflict met before anything was written: the root of a
    /// scope kept moving under a read (other writers, other nodes), so the
    /// request may run again on fresh reads (`conflicted_before_writing`).
    pub(super) fn note_conflict(&self) {
        self.conflicted.store(true, Ordering::Release);
    }

    /// True when a write (or a read, `note_conflict`) through this value
    /// conflicted and no write committed:
    /// the work done so far left the store as it was, so it can be re-run.
    pub fn conflicted_before_writing(&self) -> bool {
        self.conflicted.load(Ordering::Acquire) && self.writes.load(Ordering::Acquire) == 0
    }

    pub async fn get<T: DeserializeOwned>(&self, namespace: &str, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.get_versioned(namespace, key).await?.1)
    }

    /// The record and the version it was read at (0 if never written).
    pub async fn get_versioned<T: DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<(u64, Option<T>), StoreError> {
        if let Some(cache) = self.cache
            && let Some((version, sealed)) = cache.fresh(namespace, key)
        {
            let opened = sealed
                .as_deref()
                .map(|bytes| self.open(namespace, key, version, bytes))
                .transpose();
            match opened {
                Ok(value) => {
                    let current = self
                        .verify_read(namespace, key, version, sealed.as_deref().map(Vec::as_slice))
                        .await?
                        .is_none();
                    if current {
                        self.note(namespace, key, version, value.is_some());
                        return Ok((version, value));
                    }
                    // Not current (written since): ask the host.
                    cache.forget(namespace, key);
                }
                // Never serve a cached entry that does not open; ask the host.
                Err(_) => cache.forget(namespace, key),
            }
        }
        let asked = std::time::Instant::now();
        let (version, sealed) = self.fetch(namespace, key).await?;
        // Authentic first (a record altered, moved or served under another
        // version says so), then current.
        let mut value = sealed
            .as_deref()
            .map(|bytes| self.open(namespace, key, version, bytes))
            .transpose()?;
        let (version, sealed) = match self.verify_read(namespace, key, version, sealed.as_deref()).await? {
            None => (version, sealed),
            Some((newer, sealed)) => {
                value = sealed
                    .as_deref()
                    .map(|bytes| self.open(namespace, key, newer, bytes))
                    .transpose()?;
                (newer, sealed)
            }
        };
        if let Some(cache) = self.cache {
            cache.confirm(namespace, key, version, sealed, asked);
        }
        self.note(namespace, key, version, value.is_some());
        Ok((version, value))
    }

    /// The record's version and sealed bytes, from the host.
    async fn fetch(&self, namespace: &str, key: &str) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let op = StoreOp::GetVersioned {
            namespace: namespace.into(),
            key: key.into(),
        };
        match self.transport.call(op).await? {
            StoreResult::Versioned { version, value } => {
                if value.is_some() && version == 0 {
                    return Err(StoreError::Protocol(format!(
                        "{namespace}/{key} has a value at version 0"
                    )));
                }
                Ok((version, value.map(serde_bytes::ByteBuf::into_vec)))
            }
            StoreResult::Error(e) => Err(StoreError::Host(e)),
            other => Err(StoreError::Protocol(format!("unexpected answer to get: {other:?}"))),
        }
    }

    /// Makes the next write of `namespace`/`key` through this value expect
    /// `version` (0: never written), as if it had been read at it.
    pub fn expect_version(&self, namespace: &str, key: &str, version: u64, exists: bool) {
        self.note(namespace, key, version, exists);
    }

    fn note(&self, namespace: &str, key: &str, version: u64, exists: bool) {
        self.read_set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((namespace.to_owned(), key.to_owned()), Seen { version, exists });
    }

    fn seen(&self, namespace: &str, key: &str) -> Option<Seen> {
        self.read_set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(namespace.to_owned(), key.to_owned()))
            .copied()
    }

    /// Durable on the host when this returns `Ok`: a compare-and-swap on the
    /// version this value read the record at, or, for a record it did not
    /// read, on whatever version the store has.
    pub async fn put<T: Serialize>(&self, namespace: &str, key: &str, value: &T) -> Result<(), StoreError> {
        let plain = serde_cbor::to_vec(value).map_err(|e| StoreError::Decode(format!("{namespace}/{key}: {e}")))?;
        self.put_batch_encoded(namespace, vec![(key.to_owned(), plain)]).await
    }

    /// Seals and writes several records of one namespace atomically (each a
    /// compare-and-swap as in [`Records::put`]); durable on the host when
    /// this returns `Ok`. Values are plaintext CBOR.
    pub async fn put_batch_encoded(&self, namespace: &str, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let writes = entries
            .into_iter()
            .map(|(key, plain)| PlannedWrite {
                namespace: namespace.to_owned(),
                key,
                plain: Some(plain),
            })
            .collect();
        self.commit(writes).await
    }

    /// Deletes a record (a compare-and-swap as in [`Records::put`]); a record
    /// that is already absent is left alone.
    pub async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let seen = match self.seen(namespace, key) {
            Some(seen) => seen,
            None => {
                let (version, value) = self.fetch_verified(namespace, key).await?;
                Seen {
                    version,
                    exists: value.is_some(),
                }
            }
        };
        if !seen.exists {
            return Ok(());
        }
        self.note(namespace, key, seen.version, true);
        self.commit(vec![PlannedWrite {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            plain: None,
        }])
        .await
    }

    /// Commits `writes` in one atomic batch, each against its read-set
    /// version; writes of records not in the read set follow the store's
    /// version on a conflict.
    async fn commit(&self, writes: Vec<PlannedWrite>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let read: Vec<Option<Seen>> = writes.iter().map(|w| self.seen(&w.namespace, &w.key)).collect();
        let mut expected: Vec<u64> = read.iter().map(|s| s.map_or(0, |s| s.version)).collect();
        // The index scopes the batch touches, each held for this node's
        // writes until the batch is answered (they all rewrite its root).
        let scopes = match self.index {
            Some(_) => Records::scopes_of(&writes),
            None => Default::default(),
        };
        let mut held = Vec::with_capacity(scopes.len());
        if let Some(index) = self.index {
            for scope in &scopes {
                held.push(Arc::clone(&index.slot(scope).writer).lock_owned().await);
            }
            // A record written without being read first is expected at the
            // version the index holds.
            for (i, w) in writes.iter().enumerate() {
                if read[i].is_none()
                    && let Some(place) = index::place(&w.namespace, &w.key)
                    && let Some(entry) = self.entry(index, &place).await?
                {
                    expected[i] = entry.version;
                }
            }
        }
        for _ in 0..BLIND_WRITE_TRIES {
            let mut sealed = Vec::with_capacity(writes.len());
            let mut ops = Vec::with_capacity(writes.len());
            for (w, &exp) in writes.iter().zip(&expected) {
                let next = exp
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Protocol("version overflow".into()))?;
                match &w.plain {
                    Some(plain) => {
                        let bytes = self.sealer.seal(&w.namespace, &w.key, next, plain)?;
                        sealed.push(Some(bytes.clone()));
                        ops.push(StoreWrite::Put {
                            namespace: w.namespace.clone(),
                            key: w.key.clone(),
                            expected: Expected::Version(exp),
                            value: bytes,
                        });
                    }
                    None => {
                        sealed.push(None);
                        ops.push(StoreWrite::Delete {
                            namespace: w.namespace.clone(),
                            key: w.key.clone(),
                            expected: exp,
                        });
                    }
                }
            }
            let plan = match self.index {
                Some(index) => Some(self.plan_index(index, &scopes, &writes, &sealed, &expected).await?),
                None => None,
            };
            let records_written = ops.len();
            if let Some(plan) = &plan {
                ops.extend(plan.ops.iter().cloned());
            }
            let op = match (ops.len(), ops.pop()) {
                (
                    1,
                    Some(StoreWrite::Put {
                        namespace,
                        key,
                        expected,
                        value,
                    }),
                ) => StoreOp::CasPut {
                    namespace,
                    key,
                    expected,
                    value,
                },
                (_, Some(last)) => {
                    ops.push(last);
                    StoreOp::Batch { writes: ops }
                }
                (_, None) => return Ok(()),
            };
            let asked = std::time::Instant::now();
            match self.transport.call(op).await? {
                StoreResult::Committed(versions) => {
                    let mut wanted: Vec<u64> = expected.iter().map(|v| v + 1).collect();
                    if let Some(plan) = &plan {
                        wanted.extend(Records::plan_versions(plan));
                    }
                    if versions != wanted {
                        return Err(StoreError::Protocol(format!(
                            "the store committed versions {versions:?}, not {wanted:?}"
                        )));
                    }
                    self.writes.fetch_add(1, Ordering::AcqRel);
                    if let (Some(index), Some(plan)) = (self.index, plan) {
                        Records::install_plan(index, plan, asked);
                    }
                    for ((w, version), bytes) in writes.iter().zip(wanted).zip(sealed) {
                        self.note(&w.namespace, &w.key, version, bytes.is_some());
                        if let Some(cache) = self.cache {
                            cache.confirm(&w.namespace, &w.key, version, bytes, asked);
                        }
                    }
                    return Ok(());
                }
                StoreResult::Conflict { index, version, .. } => {
                    let i = index as usize;
                    if i >= records_written && i < records_written + plan.as_ref().map_or(0, |p| p.ops.len()) {
                        // Another node moved an index record of a scope:
                        // read its root again and plan the batch anew.
                        if let Some(index) = self.index {
                            for scope in &scopes {
                                index.expire(Some(scope));
                            }
                        }
                        continue;
                    }
                    let Some(w) = writes.get(i) else {
                        return Err(StoreError::Protocol("conflict on a write not in the batch".into()));
                    };
                    if let Some(cache) = self.cache {
                        cache.forget(&w.namespace, &w.key);
                    }
                    // A record read first must still be as read; one not
                    // read is overwritten at whatever version it has.
                    if read[i].is_some() || w.plain.is_none() || version == expected[i] {
                        self.conflicted.store(true, Ordering::Release);
                        return Err(StoreError::Conflict {
                            record: format!("{}/{}", w.namespace, w.key),
                            expected: expected[i],
                            found: version,
                        });
                    }
                    expected[i] = version;
                }
                StoreResult::Error(e) => return Err(StoreError::Host(e)),
                other => {
                    return Err(StoreError::Protocol(format!("unexpected answer to a write: {other:?}")));
                }
            }
        }
        self.conflicted.store(true, Ordering::Release);
        Err(StoreError::Conflict {
            record: writes
                .first()
                .map(|w| format!("{}/{}", w.namespace, w.key))
                .unwrap_or_default(),
            expected: expected.first().copied().unwrap_or_default(),
            found: expected.first().copied().unwrap_or_default(),
        })
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
        let mut before = None;
        let mut tries = 0;
        let entries = loop {
            let op = StoreOp::ListVersioned {
                namespace: namespace.into(),
                prefix: prefix.into(),
                start_after: start_after.map(str::to_owned),
                limit,
            };
            let entries = match self.transport.call(op).await? {
                StoreResult::Records { entries, .. } => entries,
                StoreResult::Error(e) => return Err(StoreError::Host(e)),
                other => return Err(StoreError::Protocol(format!("unexpected answer to list: {other:?}"))),
            };
            check_page(
                entries.iter().map(|e| e.key.as_str()),
                entries.len(),
                prefix,
                start_after,
                limit,
            )?;
            if let Some(entries) = self
                .verify_page(namespace, prefix, start_after, limit, entries, before)
                .await?
            {
                break entries;
            }
            // The index holds a record the page does not: list again between
            // two reads of the scope's root (bounded; then a conflict).
            tries += 1;
            if tries > 4 {
                return Err(StoreError::Conflict {
                    record: format!("{namespace}/{prefix}"),
                    expected: 0,
                    found: 0,
                });
            }
            before = self.listing_scope_root(namespace, prefix).await?;
        };
        Ok(entries
            .into_iter()
            .map(|entry| {
                let value = self.open(namespace, &entry.key, entry.version, &entry.value);
                if value.is_ok() {
                    self.note(namespace, &entry.key, entry.version, true);
                }
                (entry.key, value)
            })
            .collect())
    }

    /// The stored bytes of the records of `namespace` strictly after
    /// `start_after`, in key order, at most `limit`, **unopened** (for a
    /// backup, which hands the host's own bytes back to it): key, version,
    /// bytes. The page is checked to be what was asked for; the bytes are
    /// the caller's to authenticate.
    pub async fn list_stored(
        &self,
        namespace: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        let limit = limit.min(MAX_LIST);
        let op = StoreOp::ListVersioned {
            namespace: namespace.into(),
            prefix: String::new(),
            start_after: start_after.map(str::to_owned),
            limit,
        };
        let entries = match self.transport.call(op).await? {
            StoreResult::Records { entries, .. } => entries,
            StoreResult::Error(e) => return Err(StoreError::Host(e)),
            other => return Err(StoreError::Protocol(format!("unexpected answer to list: {other:?}"))),
        };
        check_page(
            entries.iter().map(|e| e.key.as_str()),
            entries.len(),
            "",
            start_after,
            limit,
        )?;
        entries
            .into_iter()
            .map(|e| {
                if e.version == 0 {
                    return Err(StoreError::Protocol(format!(
                        "{namespace}/{} has a value at version 0",
                        e.key
                    )));
                }
                Ok((e.key, e.version, e.value.into_vec()))
            })
            .collect()
    }

    /// The stored bytes of one record, unopened (boot records, which are
    /// stored in the clear), with its version.
    pub async fn get_stored(&self, namespace: &str, key: &str) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        self.fetch(namespace, key).await
    }

    /// Replaces a record stored in the clear that the index does not cover
    /// (the boot record), by compare-and-swap: written only if it is still
    /// at `version` (as [`Records::get_stored`] read it). `Ok(false)`: it
    /// was not, and nothing was written.
    pub async fn replace_stored(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        if index::place(namespace, key).is_some() {
            return Err(StoreError::Protocol(format!(
                "{namespace}/{key} is covered by the index: it is written sealed, not replaced in the clear"
            )));
        }
        let op = StoreOp::CasPut {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            expected: Expected::Version(version),
            value,
        };
        match self.transport.call(op).await? {
            StoreResult::Committed(_) => Ok(true),
            StoreResult::Conflict { .. } => Ok(false),
            StoreResult::Error(e) => Err(StoreError::Host(e)),
            other => Err(StoreError::Protocol(format!(
                "{namespace}/{key} compare-and-swap answered {other:?}"
            ))),
        }
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

    fn open<T: DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
        sealed: &[u8],
    ) -> Result<T, StoreError> {
        let plain = self.sealer.open(namespace, key, version, sealed)?;
        serde_cbor::from_slice(&plain).map_err(|e| StoreError::Decode(format!("{namespace}/{key}: {e}")))
    }
}

/// One write of a [`Records::commit`]: a value to seal, or a deletion.
struct PlannedWrite {
    namespace: String,
    key: String,
    plain: Option<Vec<u8>>,
}

/// A page must be what was asked for: within the prefix, after the marker,
/// in strictly increasing key order, no longer than the limit.
fn check_page<'k>(
    keys: impl Iterator<Item = &'k str>,
    count: usize,
    prefix: &str,
    start_after: Option<&str>,
    limit: u32,
) -> Result<(), StoreError> {
    if count > limit as usize {
        return Err(StoreError::Protocol("list returned more entries than asked".into()));
    }
    let mut previous: Option<&str> = start_after;
    for key in keys {
        if !key.starts_with(prefix) || previous.is_some_and(|p| key <= p) {
            return Err(StoreError::Protocol(
                "list returned keys out of range or out of order".into(),
            ));
        }
        previous = Some(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
