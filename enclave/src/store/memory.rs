//! An in-memory transport with the host store's semantics (versions,
//! compare-and-swap, atomic batches), for unit tests, in-process tests and
//! benchmarks of the enclave alone. Not durable; never used by the binaries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keyward_wire::{Expected, StoreOp, StoreResult, StoreWrite, VersionedEntry};
use serde_bytes::ByteBuf;

use super::{StoreFuture, StoreTransport};

/// A record: its version (every write, deletions included, adds one) and
/// its value (none once deleted).
#[derive(Clone, Default)]
struct Slot {
    version: u64,
    value: Option<Vec<u8>>,
}

type Map = BTreeMap<(String, String), Slot>;

/// A record as [`MemoryStore::records`] lists it: (namespace, key), (version, bytes).
pub type StoredRecord = ((String, String), (u64, Option<Vec<u8>>));

#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<Map>,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every stored value, for tests that look for secrets at rest.
    pub fn all_values(&self) -> Vec<Vec<u8>> {
        self.lock().values().filter_map(|s| s.value.clone()).collect()
    }

    /// An independent copy of everything stored (the fuzz targets start
    /// every input from the same store).
    pub fn snapshot(&self) -> MemoryStore {
        MemoryStore {
            map: Mutex::new(self.lock().clone()),
        }
    }

    /// Tampering, for tests: from now on the record's current bytes are
    /// served under the next version, as a host that passes version n's
    /// bytes off as version n+1 would. False if the record has no value.
    pub fn serve_under_next_version(&self, namespace: &str, key: &str) -> bool {
        match self.lock().get_mut(&(namespace.to_owned(), key.to_owned())) {
            Some(slot) if slot.value.is_some() => {
                slot.version += 1;
                true
            }
            _ => false,
        }
    }

    /// Tampering, for tests: replaces a record's bytes, keeping its version.
    pub fn replace_bytes(&self, namespace: &str, key: &str, bytes: Vec<u8>) {
        let mut map = self.lock();
        let slot = map.entry((namespace.to_owned(), key.to_owned())).or_default();
        if slot.version == 0 {
            slot.version = 1;
        }
        slot.value = Some(bytes);
    }

    /// Tampering, for tests: destroys a record outright, version and all,
    /// as a host that deletes it for real would (it reads as never written).
    pub fn destroy(&self, namespace: &str, key: &str) {
        self.lock().remove(&(namespace.to_owned(), key.to_owned()));
    }

    /// Tampering, for tests: puts a record back as it was (`version`, bytes
    /// or none), as a host restoring an older copy of its store would.
    pub fn restore(&self, namespace: &str, key: &str, version: u64, value: Option<Vec<u8>>) {
        let mut map = self.lock();
        let id = (namespace.to_owned(), key.to_owned());
        if version == 0 {
            map.remove(&id);
        } else {
            map.insert(id, Slot { version, value });
        }
    }

    /// Every record identity with its version and bytes, in key order.
    pub fn records(&self) -> Vec<StoredRecord> {
        self.lock()
            .iter()
            .map(|(id, slot)| (id.clone(), (slot.version, slot.value.clone())))
            .collect()
    }

    /// A record's version and bytes as stored (version 0: never written).
    pub fn raw(&self, namespace: &str, key: &str) -> (u64, Option<Vec<u8>>) {
        self.lock()
            .get(&(namespace.to_owned(), key.to_owned()))
            .map_or((0, None), |s| (s.version, s.value.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, op: StoreOp) -> StoreResult {
        let mut map = self.lock();
        match op {
            StoreOp::Get { namespace, key } => StoreResult::Value(
                map.get(&(namespace, key))
                    .and_then(|s| s.value.clone())
                    .map(ByteBuf::from),
            ),
            StoreOp::GetVersioned { namespace, key } => {
                let slot = map.get(&(namespace, key)).cloned().unwrap_or_default();
                StoreResult::Versioned {
                    version: slot.version,
                    value: slot.value.map(ByteBuf::from),
                }
            }
            StoreOp::Put { namespace, key, value } => {
                write(&mut map, namespace, key, Some(value));
                StoreResult::Done
            }
            StoreOp::PutBatch { namespace, entries } => {
                for (key, value) in entries {
                    write(&mut map, namespace.clone(), key, Some(value.into_vec()));
                }
                StoreResult::Done
            }
            StoreOp::Delete { namespace, key } => {
                if map
                    .get(&(namespace.clone(), key.clone()))
                    .is_some_and(|s| s.value.is_some())
                {
                    write(&mut map, namespace, key, None);
                }
                StoreResult::Done
            }
            StoreOp::CasPut {
                namespace,
                key,
                expected,
                value,
            } => batch(
                &mut map,
                vec![StoreWrite::Put {
                    namespace,
                    key,
                    expected,
                    value,
                }],
            ),
            StoreOp::Batch { writes } => batch(&mut map, writes),
            StoreOp::List {
                namespace,
                prefix,
                start_after,
                limit,
            } => StoreResult::Entries(
                listed(&map, &namespace, &prefix, start_after.as_deref(), limit)
                    .map(|(k, _, v)| (k, ByteBuf::from(v)))
                    .collect(),
            ),
            StoreOp::ListVersioned {
                namespace,
                prefix,
                start_after,
                limit,
            } => {
                let entries: Vec<VersionedEntry> = listed(
                    &map,
                    &namespace,
                    &prefix,
                    start_after.as_deref(),
                    limit.saturating_add(1),
                )
                .map(|(key, version, value)| VersionedEntry {
                    key,
                    version,
                    value: ByteBuf::from(value),
                })
                .collect();
                let mut entries = entries;
                let more = entries.len() > limit as usize;
                entries.truncate(limit as usize);
                let next = if more {
                    entries.last().map(|e| e.key.clone())
                } else {
                    None
                };
                StoreResult::Records { entries, next }
            }
            _ => StoreResult::Error("unsupported operation".into()),
        }
    }
}

fn write(map: &mut Map, namespace: String, key: String, value: Option<Vec<u8>>) -> u64 {
    let slot = map.entry((namespace, key)).or_default();
    slot.version += 1;
    slot.value = value;
    slot.version
}

fn listed<'m>(
    map: &'m Map,
    namespace: &'m str,
    prefix: &'m str,
    start_after: Option<&'m str>,
    limit: u32,
) -> impl Iterator<Item = (String, u64, Vec<u8>)> + 'm {
    map.iter()
        .filter(move |((ns, k), s)| {
            ns == namespace && k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a) && s.value.is_some()
        })
        .take(limit as usize)
        .filter_map(|((_, k), s)| s.value.clone().map(|v| (k.clone(), s.version, v)))
}

/// All writes or none; every expectation checked before anything is written.
fn batch(map: &mut Map, writes: Vec<StoreWrite>) -> StoreResult {
    let mut seen = std::collections::HashSet::new();
    for (index, w) in writes.iter().enumerate() {
        let (namespace, key) = match w {
            StoreWrite::Put { namespace, key, .. } | StoreWrite::Delete { namespace, key, .. } => (namespace, key),
            _ => return StoreResult::Error("unsupported batch write".into()),
        };
        if !seen.insert((namespace.to_owned(), key.to_owned())) {
            return StoreResult::Error("a batch names one record twice".into());
        }
        let slot = map
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default();
        let holds = match w {
            StoreWrite::Put {
                expected: Expected::Absent,
                ..
            } => slot.value.is_none(),
            StoreWrite::Put {
                expected: Expected::Version(v),
                ..
            } => slot.version == *v,
            StoreWrite::Delete { expected, .. } => slot.version == *expected && slot.value.is_some(),
            _ => false,
        };
        if !holds {
            return StoreResult::Conflict {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                version: slot.version,
                exists: slot.value.is_some(),
            };
        }
    }
    let versions = writes
        .into_iter()
        .filter_map(|w| match w {
            StoreWrite::Put {
                namespace, key, value, ..
            } => Some(write(map, namespace, key, Some(value))),
            StoreWrite::Delete { namespace, key, .. } => Some(write(map, namespace, key, None)),
            _ => None,
        })
        .collect();
    StoreResult::Committed(versions)
}

impl StoreTransport for MemoryStore {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        let result = self.apply(op);
        Box::pin(async move { Ok(result) })
    }
}
