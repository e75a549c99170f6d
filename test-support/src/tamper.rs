//! A hostile host store: the real (in-memory) store behind a wrapper that,
//! when told to, lies about it the ways a host can — it omits a record,
//! serves an older sealed version, serves one record's bytes under another
//! identity, reorders a listing, hides the audit head. It cannot seal:
//! everything it serves is bytes the enclave once wrote. Writes go through
//! to the real store unchanged.
//!
//! [`crate::inprocess::Service`] always runs its enclave over one (honest
//! until told otherwise), so tests of freshness go through the AWS client
//! path like every other in-process test.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keyward_enclave::store::{MemoryStore, StoreFuture, StoreTransport};
use keyward_wire::{StoreOp, StoreResult, VersionedEntry};
use serde_bytes::ByteBuf;

type Id = (String, String);

/// A record as the store held it at some moment: its version and sealed
/// bytes (none: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

#[derive(Default)]
struct Lies {
    /// Records served as absent (never written) and left out of listings.
    hidden: HashSet<Id>,
    /// Records served as they were at a snapshot.
    pinned: HashMap<Id, Snapshot>,
    /// Records served with another record's current version and bytes.
    swapped: HashMap<Id, Id>,
    /// Namespaces whose listings come back in reverse order.
    reversed: HashSet<String>,
}

/// The store of an in-process service, as a host that lies on request.
pub struct TamperingStore {
    inner: Arc<MemoryStore>,
    lies: Mutex<Lies>,
}

fn id(namespace: &str, key: &str) -> Id {
    (namespace.to_owned(), key.to_owned())
}

impl TamperingStore {
    /// An honest wrapper around `inner`.
    pub fn new(inner: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new(TamperingStore {
            inner,
            lies: Mutex::new(Lies::default()),
        })
    }

    /// The real store underneath.
    pub fn inner(&self) -> &Arc<MemoryStore> {
        &self.inner
    }

    fn lies(&self) -> MutexGuard<'_, Lies> {
        self.lies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the real store holds for a record now (to serve it back later).
    pub fn snapshot(&self, namespace: &str, key: &str) -> Snapshot {
        let (version, value) = self.inner.raw(namespace, key);
        Snapshot { version, value }
    }

    /// Serves the record as absent (never written), in reads and listings.
    pub fn hide(&self, namespace: &str, key: &str) {
        self.lies().hidden.insert(id(namespace, key));
    }

    /// Serves the record as it was at `snapshot` (a rollback).
    pub fn serve(&self, namespace: &str, key: &str, snapshot: Snapshot) {
        self.lies().pinned.insert(id(namespace, key), snapshot);
    }

    /// Serves `from`'s current version and bytes as the record `namespace`/`key`.
    pub fn serve_as(&self, namespace: &str, key: &str, from_namespace: &str, from_key: &str) {
        self.lies()
            .swapped
            .insert(id(namespace, key), id(from_namespace, from_key));
    }

    /// Serves listings of `namespace` in reverse key order.
    pub fn reverse_listings(&self, namespace: &str) {
        self.lies().reversed.insert(namespace.to_owned());
    }

    /// Hides the head of audit chain `chain` (a tenant id or `operator`).
    pub fn hide_audit_head(&self, chain: &str) {
        self.hide("audit", &format!("{chain}/head"));
    }

    /// Stops lying.
    pub fn honest(&self) {
        *self.lies() = Lies::default();
    }

    /// What a read of `namespace`/`key` is answered with: `None` to ask the
    /// real store.
    fn lie_about(&self, namespace: &str, key: &str) -> Option<Snapshot> {
        let lies = self.lies();
        let who = id(namespace, key);
        if lies.hidden.contains(&who) {
            return Some(Snapshot {
                version: 0,
                value: None,
            });
        }
        if let Some(snapshot) = lies.pinned.get(&who) {
            return Some(snapshot.clone());
        }
        let (from_ns, from_key) = lies.swapped.get(&who)?.clone();
        drop(lies);
        Some(self.snapshot(&from_ns, &from_key))
    }

    async fn answer(&self, op: StoreOp) -> Result<StoreResult, keyward_enclave::store::StoreError> {
        match op {
            StoreOp::GetVersioned { namespace, key } => match self.lie_about(&namespace, &key) {
                Some(s) => Ok(StoreResult::Versioned {
                    version: s.version,
                    value: s.value.map(ByteBuf::from),
                }),
                None => self.inner.call(StoreOp::GetVersioned { namespace, key }).await,
            },
            StoreOp::Get { namespace, key } => match self.lie_about(&namespace, &key) {
                Some(s) => Ok(StoreResult::Value(s.value.map(ByteBuf::from))),
                None => self.inner.call(StoreOp::Get { namespace, key }).await,
            },
            StoreOp::ListVersioned {
                namespace,
                prefix,
                start_after,
                limit,
            } => {
                let answer = self
                    .inner
                    .call(StoreOp::ListVersioned {
                        namespace: namespace.clone(),
                        prefix: prefix.clone(),
                        start_after: start_after.clone(),
                        limit,
                    })
                    .await?;
                let StoreResult::Records { entries, next } = answer else {
                    return Ok(answer);
                };
                // Records served as of a snapshot are listed as then, even
                // when the real store has deleted them since.
                let revived: Vec<VersionedEntry> = {
                    let lies = self.lies();
                    lies.pinned
                        .iter()
                        .filter(|((ns, key), _)| {
                            ns == &namespace
                                && key.starts_with(&prefix)
                                && start_after.as_deref().is_none_or(|a| key.as_str() > a)
                                && !entries.iter().any(|e| &e.key == key)
                        })
                        .filter_map(|((_, key), s)| {
                            s.value.as_ref().map(|v| VersionedEntry {
                                key: key.clone(),
                                version: s.version,
                                value: ByteBuf::from(v.clone()),
                            })
                        })
                        .collect()
                };
                let mut entries = entries;
                entries.extend(revived);
                entries.sort_by(|a, b| a.key.cmp(&b.key));
                let mut served: Vec<VersionedEntry> = entries
                    .into_iter()
                    .filter_map(|e| match self.lie_about(&namespace, &e.key) {
                        None => Some(e),
                        Some(Snapshot { value: None, .. }) => None,
                        Some(Snapshot {
                            version,
                            value: Some(value),
                        }) => Some(VersionedEntry {
                            key: e.key,
                            version,
                            value: ByteBuf::from(value),
                        }),
                    })
                    .collect();
                if self.lies().reversed.contains(&namespace) {
                    served.reverse();
                }
                Ok(StoreResult::Records { entries: served, next })
            }
            other => self.inner.call(other).await,
        }
    }
}

impl StoreTransport for TamperingStore {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        Box::pin(self.answer(op))
    }
}
