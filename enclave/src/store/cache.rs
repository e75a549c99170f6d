//! The enclave's cache of sealed records, shared by every request.
//!
//! What it holds is what the store last confirmed: a record's version and
//! sealed bytes (opened again on every use, so a cached entry is
//! authenticated exactly like one fresh from the host). An entry is served
//! only while its last confirmation (the moment the read or write that
//! brought it was sent) is younger than [`REVALIDATE_AFTER`];
//! after that the next read asks the store again (`GetVersioned`, one round
//! trip). That is the bound on staleness, and it does not depend on the host:
//! a write committed by any node at time *t* is seen by every node's requests
//! that start after *t* + [`REVALIDATE_AFTER`]. Invalidation hints from the
//! host (PostgreSQL `NOTIFY`, relayed untrusted) only drop entries earlier.
//!
//! Only the namespaces read on every request are cached (credentials,
//! tenants, keys, aliases, policy modules); audit chains, import parameters
//! and boot records always go to the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a confirmation of a cached entry by the store is trusted: the
/// bound (with the request's own latency) on how late a write made on
/// another node is seen here. ARCHITECTURE.md "Cluster caching" states it.
pub const REVALIDATE_AFTER: Duration = Duration::from_millis(500);

/// Entries kept at most; beyond it the cache starts over (a miss costs one
/// round trip, never a wrong answer).
const MAX_ENTRIES: usize = 16_384;

/// Namespaces whose records are cached.
const CACHED: &[&str] = &["cred", "tenant", "key", "alias", "policy"];

struct Entry {
    version: u64,
    sealed: Option<Arc<Vec<u8>>>,
    confirmed: Instant,
}

/// Sealed records as last confirmed by the store.
pub struct RecordCache {
    map: Mutex<HashMap<(String, String), Entry>>,
    ttl: Duration,
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache::with_ttl(REVALIDATE_AFTER)
    }
}

/// A cached record: its version and sealed bytes (none: confirmed absent).
pub type Cached = (u64, Option<Arc<Vec<u8>>>);

impl RecordCache {
    /// A cache whose entries are trusted for `ttl` after each confirmation.
    pub fn with_ttl(ttl: Duration) -> Self {
        RecordCache {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The entry of `namespace`/`key`, if confirmed within the TTL.
    pub fn fresh(&self, namespace: &str, key: &str) -> Option<Cached> {
        if !CACHED.contains(&namespace) {
            return None;
        }
        let map = self.lock();
        let entry = map.get(&(namespace.to_owned(), key.to_owned()))?;
        (entry.confirmed.elapsed() < self.ttl).then(|| (entry.version, entry.sealed.clone()))
    }

    /// Records that the store had `namespace`/`key` at `version` when asked
    /// at `asked` (a read or a write sent then). The entry counts as
    /// confirmed at `asked`, not when the answer came: a read that was on its
    /// way while another node wrote cannot extend the bound. An older version
    /// than the one cached is ignored: replies may arrive out of order.
    pub fn confirm(&self, namespace: &str, key: &str, version: u64, sealed: Option<Vec<u8>>, asked: Instant) {
        if !CACHED.contains(&namespace) {
            return;
        }
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        let id = (namespace.to_owned(), key.to_owned());
        if map.get(&id).is_some_and(|e| e.version > version) {
            return;
        }
        map.insert(
            id,
            Entry {
                version,
                sealed: sealed.map(Arc::new),
                confirmed: asked,
            },
        );
    }

    /// Drops the entry of `namespace`/`key`.
    pub fn forget(&self, namespace: &str, key: &str) {
        self.lock().remove(&(namespace.to_owned(), key.to_owned()));
    }

    /// A hint that `namespace`/`key` is now at `version`: drops an older
    /// entry. Untrusted: a false hint costs one round trip.
    pub fn hint(&self, namespace: &str, key: &str, version: u64) {
        let mut map = self.lock();
        let id = (namespace.to_owned(), key.to_owned());
        if map.get(&id).is_some_and(|e| e.version < version) {
            map.remove(&id);
        }
    }

    /// Drops everything (the hint stream lost notifications).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
