//! The checks of the authenticated index (`index.rs`) against the store:
//! reading and verifying roots and buckets, checking a served record or a
//! listing against them, and planning the index half of a write batch.
//!
//! # Reads
//! A record served by the host (or from the record cache) is compared with
//! its entry in the scope's root as last verified (re-read when older than
//! `REVALIDATE_AFTER`). If they differ, either another write happened
//! meanwhile or the host is lying; the enclave then *sandwiches* a fresh
//! read of the record between two fresh reads of the root: when the root did
//! not move, the record must be exactly what its entry says (present at that
//! version with those bytes, or absent), else it is a violation; when the
//! root moved, it tries again (bounded; then a conflict, which re-runs the
//! request).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use keyward_wire::{Expected, StoreOp, StoreResult, StoreWrite, VersionedEntry};

use super::cache::REVALIDATE_AFTER;
use super::index::{
    self, BUCKETS, Bucket, BucketEntries, Entry, GLOBAL, Index, NAMESPACE, Place, Root, ScopeState, Violation,
    bucket_key, buckets_prefix, classify, matches, place, root_key, sha256,
};
use super::{MAX_LIST, PlannedWrite, Records, StoreError};

/// Sandwiched reads of one record before giving up with a conflict.
const SANDWICH_TRIES: usize = 4;

/// The index half of a write batch, and what to remember once it committed.
pub(super) struct IndexPlan {
    pub ops: Vec<StoreWrite>,
    installs: Vec<Install>,
}

struct Install {
    scope: String,
    version: u64,
    root: Root,
    root_hash: [u8; 32],
    buckets: Vec<(u8, Bucket)>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, plain: &[u8]) -> Result<T, StoreError> {
    serde_cbor::from_slice(plain).map_err(|e| StoreError::Decode(format!("{NAMESPACE}/{what}: {e}")))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_cbor::to_vec(value).map_err(|e| StoreError::Decode(format!("{NAMESPACE}/{what}: {e}")))
}

/// The first root of `scope`, sealed as version `version` (genesis of a
/// store, or a new tenant's scope).
pub fn genesis(sealer: &crate::seal::Sealer, scope: &str, version: u64) -> Result<(String, Vec<u8>), StoreError> {
    let key = root_key(scope);
    let mut root = Root::empty(scope);
    root.epoch = version;
    let bytes = sealer.seal(NAMESPACE, &key, version, &encode(&key, &root)?)?;
    Ok((key, bytes))
}

impl Records<'_> {
    /// Reads the root of `scope` from the store, verifies it against what
    /// this enclave knows and installs it if newer. Returns the root as
    /// served (version 0: none).
    pub(super) async fn read_root(&self, index: &Index, scope: &str) -> Result<(u64, Root), StoreError> {
        let slot = index.slot(scope);
        let known = slot.lock().as_ref().map(|s| (s.version, s.root_hash));
        let asked = Instant::now();
        let key = root_key(scope);
        let record = format!("{NAMESPACE}/{key}");
        let (version, sealed) = self.fetch(NAMESPACE, &key).await?;
        let Some(bytes) = sealed else {
            if let Some((known, _)) = known
                && known > 0
            {
                return Err(index.violation(
                    Violation::Omission,
                    &record,
                    format!("version {known}"),
                    "absent".into(),
                ));
            }
            if scope != GLOBAL && Box::pin(self.tenant_exists(index, scope)).await? {
                return Err(index.violation(
                    Violation::Omission,
                    &record,
                    "present (its tenant exists)".into(),
                    "absent".into(),
                ));
            }
            let mut state = slot.lock();
            match state.as_mut() {
                Some(s) if s.version == 0 => s.confirmed = Some(asked),
                Some(_) => {}
                None => {
                    let mut fresh = ScopeState::empty(scope);
                    fresh.confirmed = Some(asked);
                    *state = Some(fresh);
                }
            }
            return Ok((0, Root::empty(scope)));
        };
        let root: Root = decode(&key, &self.sealer.open(NAMESPACE, &key, version, &bytes)?)?;
        if root.scope != scope || root.epoch != version || root.digests.len() != BUCKETS * 32 {
            return Err(StoreError::Decode(format!("{record}: not the root of scope {scope}")));
        }
        let hash = sha256(&bytes);
        if let Some((known, known_hash)) = known {
            if version < known {
                return Err(index.violation(
                    Violation::Rollback,
                    &record,
                    format!("epoch {known} or later"),
                    format!("epoch {version}"),
                ));
            }
            if version == known && hash != known_hash {
                return Err(index.violation(
                    Violation::Substitution,
                    &record,
                    format!("the root this enclave verified at epoch {known}"),
                    format!("another root at epoch {version}"),
                ));
            }
        }
        let mut state = slot.lock();
        match state.as_mut() {
            Some(s) if s.version == version => s.confirmed = Some(asked),
            Some(s) if s.version > version => {}
            Some(s) => {
                s.version = version;
                s.root = root.clone();
                s.root_hash = hash;
                s.confirmed = Some(asked);
            }
            None => {
                *state = Some(ScopeState {
                    version,
                    root: root.clone(),
                    root_hash: hash,
                    confirmed: Some(asked),
                    buckets: Default::default(),
                });
            }
        }
        Ok((version, root))
    }

    /// Reads the root of `scope` unless one was confirmed within `REVALIDATE_AFTER`.
    pub(super) async fn ensure_root(&self, index: &Index, scope: &str) -> Result<(), StoreError> {
        let fresh = index
            .slot(scope)
            .lock()
            .as_ref()
            .is_some_and(|s| s.confirmed.is_some_and(|t| t.elapsed() < REVALIDATE_AFTER));
        if !fresh {
            self.read_root(index, scope).await?;
        }
        Ok(())
    }

    /// Reads the root of `scope` unless this enclave holds one (stale or not).
    async fn known_root(&self, index: &Index, scope: &str) -> Result<(), StoreError> {
        let known = index.slot(scope).lock().as_ref().is_some_and(|s| s.confirmed.is_some());
        if !known {
            self.read_root(index, scope).await?;
        }
        Ok(())
    }

    /// Whether the global index holds `tenant/<tenant>`.
    async fn tenant_exists(&self, index: &Index, tenant: &str) -> Result<bool, StoreError> {
        let Some(place) = place(index::TENANT_NAMESPACE, tenant) else {
            return Ok(false);
        };
        self.ensure_root(index, GLOBAL).await?;
        Ok(self.entry(index, &place).await?.is_some())
    }

    /// Loads bucket `bucket` of `scope`, which must hash to `digest`.
    /// `None`: the store has another bucket because the root moved on
    /// (another node wrote); the caller looks again.
    async fn load_bucket(
        &self,
        index: &Index,
        scope: &str,
        bucket: u8,
        digest: [u8; 32],
    ) -> Result<Option<Bucket>, StoreError> {
        let key = bucket_key(scope, bucket);
        let (version, sealed) = self.fetch(NAMESPACE, &key).await?;
        if let Some(bytes) = sealed.as_deref().filter(|b| sha256(b) == digest) {
            return self.install_bucket(index, scope, bucket, version, bytes).map(Some);
        }
        // Read after the bucket: a root naming another bucket explains it.
        let (_, root) = self.read_root(index, scope).await?;
        if root.digest(bucket) != digest {
            return Ok(None);
        }
        Err(index.violation(
            Violation::Omission,
            &format!("{NAMESPACE}/{key}"),
            "the bucket its root names".into(),
            match sealed {
                Some(_) => format!("version {version} with other contents"),
                None => "absent".into(),
            },
        ))
    }

    fn install_bucket(
        &self,
        index: &Index,
        scope: &str,
        bucket: u8,
        version: u64,
        bytes: &[u8],
    ) -> Result<Bucket, StoreError> {
        let key = bucket_key(scope, bucket);
        let entries: BucketEntries = decode(&key, &self.sealer.open(NAMESPACE, &key, version, bytes)?)?;
        let loaded = Bucket {
            version,
            digest: sha256(bytes),
            entries,
        };
        if let Some(state) = index.slot(scope).lock().as_mut() {
            state.buckets.insert(bucket, loaded.clone());
        }
        Ok(loaded)
    }

    /// The entry of `place` in the scope's root as this enclave knows it
    /// (`None`: absent), loading its bucket when needed.
    pub(super) async fn entry(&self, index: &Index, place: &Place) -> Result<Option<Entry>, StoreError> {
        self.known_root(index, &place.scope).await?;
        let slot = index.slot(&place.scope);
        for _ in 0..SANDWICH_TRIES {
            let digest = {
                let state = slot.lock();
                let Some(state) = state.as_ref() else { break };
                if let Some(entry) = state.entry(place) {
                    return Ok(entry);
                }
                state.root.digest(place.bucket)
            };
            self.load_bucket(index, &place.scope, place.bucket, digest).await?;
        }
        self.note_conflict();
        Err(StoreError::Conflict {
            record: place.identity.clone(),
            expected: 0,
            found: 0,
        })
    }

    /// The entry of `place` under `root` (a root as served; `None`: the
    /// root moved on meanwhile, look again).
    async fn entry_in(&self, index: &Index, place: &Place, root: &Root) -> Result<Option<Option<Entry>>, StoreError> {
        if place.head {
            return Ok(Some(root.head));
        }
        let digest = root.digest(place.bucket);
        if digest == [0; 32] {
            return Ok(Some(None));
        }
        // The entry is copied out of a loaded bucket, not the bucket.
        let loaded = index.slot(&place.scope).lock().as_ref().and_then(|s| {
            s.buckets
                .get(&place.bucket)
                .filter(|b| b.digest == digest)
                .map(|b| b.entries.get(&place.identity).copied())
        });
        if let Some(entry) = loaded {
            return Ok(Some(entry));
        }
        let bucket = match self.load_bucket(index, &place.scope, place.bucket, digest).await? {
            Some(b) => b,
            None => return Ok(None),
        };
        Ok(Some(bucket.entries.get(&place.identity).copied()))
    }

    /// Checks a served record (`version`, sealed bytes or absent) against
    /// the index. `None`: it is current; `Some`: the record as it is now
    /// (a write happened meanwhile). A violation is an error.
    pub(super) async fn verify_read(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
        sealed: Option<&[u8]>,
    ) -> Result<Option<(u64, Option<Vec<u8>>)>, StoreError> {
        let (Some(index), Some(place)) = (self.index, place(namespace, key)) else {
            return Ok(None);
        };
        self.ensure_root(index, &place.scope).await?;
        if matches(self.entry(index, &place).await?, version, sealed) {
            return Ok(None);
        }
        for _ in 0..SANDWICH_TRIES {
            let (before, _) = self.read_root(index, &place.scope).await?;
            let (version, sealed) = self.fetch(namespace, key).await?;
            let (after, root) = self.read_root(index, &place.scope).await?;
            if before != after {
                continue;
            }
            let Some(entry) = self.entry_in(index, &place, &root).await? else {
                continue;
            };
            if matches(entry, version, sealed.as_deref()) {
                return Ok(Some((version, sealed)));
            }
            let (kind, expected, served) = classify(entry, version, sealed.as_deref());
            return Err(index.violation(kind, &place.identity, expected, served));
        }
        self.note_conflict();
        Err(StoreError::Conflict {
            record: place.identity,
            expected: version,
            found: version,
        })
    }

    /// A record as the store has it now, checked against the index.
    pub(super) async fn fetch_verified(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let (version, sealed) = self.fetch(namespace, key).await?;
        Ok(self
            .verify_read(namespace, key, version, sealed.as_deref())
            .await?
            .unwrap_or((version, sealed)))
    }

    /// Checks a listing page against the index: every entry current (a
    /// newer one replaces it, one deleted meanwhile is dropped), and, for a
    /// listing within one scope, no record the index holds in the range
    /// left out. `before`: the version of the scope's root read just before
    /// the page was fetched, if it was. `None` back: list again, after a
    /// read of the root ([`Records::listing_scope_root`]).
    pub(super) async fn verify_page(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
        entries: Vec<VersionedEntry>,
        before: Option<u64>,
    ) -> Result<Option<Vec<VersionedEntry>>, StoreError> {
        let Some(index) = self.index else {
            return Ok(Some(entries));
        };
        let full = entries.len() >= limit as usize;
        let upper = if full {
            entries.last().map(|e| e.key.clone())
        } else {
            None
        };
        let listed: HashSet<String> = entries.iter().map(|e| e.key.clone()).collect();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            // One that does not authenticate is reported in place by the caller.
            if self
                .sealer
                .open(namespace, &entry.key, entry.version, &entry.value)
                .is_err()
            {
                out.push(entry);
                continue;
            }
            match self
                .verify_read(namespace, &entry.key, entry.version, Some(&entry.value))
                .await?
            {
                None => out.push(entry),
                Some((version, Some(value))) => out.push(VersionedEntry {
                    key: entry.key,
                    version,
                    value: serde_bytes::ByteBuf::from(value),
                }),
                Some((_, None)) => {}
            }
        }
        let Some(scope) = index::listing_scope(namespace, prefix) else {
            return Ok(Some(out));
        };
        // With `before`, the page was fetched after a read of the root at
        // `before`; read it again: unchanged, the page must be complete.
        let after = match before {
            Some(_) => Some(self.read_root(index, &scope).await?.0),
            None => {
                self.ensure_root(index, &scope).await?;
                None
            }
        };
        if !self.load_all_buckets(index, &scope).await? {
            return Ok(None);
        }
        let wanted = format!("{namespace}/{prefix}");
        let (missing, at) = {
            let slot = index.slot(&scope);
            let state = slot.lock();
            let Some(state) = state.as_ref() else {
                return Ok(Some(out));
            };
            let missing: BTreeMap<String, u64> = (0..=u8::MAX)
                .filter_map(|b| state.bucket(b))
                .flat_map(|b| b.entries.iter())
                .filter(|(id, _)| id.starts_with(&wanted))
                .map(|(id, e)| (id[namespace.len() + 1..].to_owned(), e.version))
                .filter(|(k, _)| start_after.is_none_or(|a| k.as_str() > a))
                .filter(|(k, _)| upper.as_deref().is_none_or(|u| k.as_str() <= u))
                .filter(|(k, _)| !listed.contains(k))
                .collect();
            (missing, state.version)
        };
        let Some((key, version)) = missing.into_iter().next() else {
            return Ok(Some(out));
        };
        match (before, after) {
            // The root did not move around the page: the host left it out.
            (Some(b), Some(a)) if a == b && at == a => Err(index.violation(
                Violation::Omission,
                &format!("{namespace}/{key}"),
                format!("version {version} in the listing of {namespace}/{prefix}"),
                "left out of the listing".into(),
            )),
            // Perhaps written after the page was read: list again between
            // two reads of the root.
            _ => Ok(None),
        }
    }

    /// Reads the root of the scope a listing lies in (before fetching its
    /// page again); `None` when it lies in none or there is no index.
    pub(super) async fn listing_scope_root(&self, namespace: &str, prefix: &str) -> Result<Option<u64>, StoreError> {
        match (self.index, index::listing_scope(namespace, prefix)) {
            (Some(index), Some(scope)) => Ok(Some(self.read_root(index, &scope).await?.0)),
            _ => Ok(None),
        }
    }

    /// Loads every bucket of `scope` its root names that is not loaded;
    /// false if the root moved on meanwhile.
    pub(super) async fn load_all_buckets(&self, index: &Index, scope: &str) -> Result<bool, StoreError> {
        let missing: Vec<(u8, [u8; 32])> = {
            let slot = index.slot(scope);
            let state = slot.lock();
            let Some(state) = state.as_ref() else { return Ok(true) };
            (0..=u8::MAX)
                .filter(|b| !state.has_bucket(*b))
                .map(|b| (b, state.root.digest(b)))
                .collect()
        };
        if missing.len() > 8 {
            let op = StoreOp::ListVersioned {
                namespace: NAMESPACE.into(),
                prefix: buckets_prefix(scope),
                start_after: None,
                limit: MAX_LIST,
            };
            if let StoreResult::Records { entries, .. } = self.transport.call(op).await? {
                let wanted: BTreeMap<String, (u8, [u8; 32])> =
                    missing.iter().map(|&(b, d)| (bucket_key(scope, b), (b, d))).collect();
                for e in entries {
                    if let Some(&(b, digest)) = wanted.get(&e.key)
                        && sha256(&e.value) == digest
                    {
                        self.install_bucket(index, scope, b, e.version, &e.value)?;
                    }
                }
            }
        }
        for (bucket, digest) in missing {
            let loaded = index
                .slot(scope)
                .lock()
                .as_ref()
                .is_some_and(|s| s.buckets.get(&bucket).is_some_and(|b| b.digest == digest));
            if !loaded && self.load_bucket(index, scope, bucket, digest).await?.is_none() {
                // The root moved on: look again under the new one.
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The scopes a batch of `writes` touches: each indexed record's, and a
    /// tenant's own scope when its tenant record is written (its root is
    /// created with the tenant).
    pub(super) fn scopes_of(writes: &[PlannedWrite]) -> BTreeSet<String> {
        let mut scopes = BTreeSet::new();
        for w in writes {
            if let Some(p) = place(&w.namespace, &w.key) {
                scopes.insert(p.scope);
            }
            if w.namespace == index::TENANT_NAMESPACE && w.plain.is_some() {
                scopes.insert(w.key.clone());
            }
        }
        scopes
    }

    /// The index writes for a batch: for each scope touched, its changed
    /// buckets and its root, as compare-and-swap writes on the versions
    /// this enclave verified. `sealed[i]` is write i's sealed bytes (none:
    /// a deletion), committed at `expected[i] + 1`.
    pub(super) async fn plan_index(
        &self,
        index: &Index,
        scopes: &BTreeSet<String>,
        writes: &[PlannedWrite],
        sealed: &[Option<Vec<u8>>],
        expected: &[u64],
    ) -> Result<IndexPlan, StoreError> {
        let mut changes: BTreeMap<&str, Vec<(Place, Option<Entry>)>> =
            scopes.iter().map(|s| (s.as_str(), Vec::new())).collect();
        for ((w, bytes), exp) in writes.iter().zip(sealed).zip(expected) {
            if let Some(p) = place(&w.namespace, &w.key) {
                let entry = bytes.as_deref().map(|b| Entry::of(exp + 1, b));
                if let Some(list) = changes.get_mut(p.scope.as_str()) {
                    list.push((p, entry));
                }
            }
        }
        let mut plan = IndexPlan {
            ops: Vec::new(),
            installs: Vec::new(),
        };
        for (scope, list) in changes {
            self.known_root(index, scope).await?;
            for (p, _) in &list {
                self.entry(index, p).await?;
            }
            // Only the root and the buckets this batch changes are copied
            // out of the scope's state (not every loaded bucket: a write
            // copied all 256 of them, ~18x a plain write; BENCHMARKS.md).
            let (version, mut root, mut buckets) = {
                let slot = index.slot(scope);
                let guard = slot.lock();
                let Some(state) = guard.as_ref() else {
                    self.note_conflict();
                    return Err(StoreError::Conflict {
                        record: format!("{NAMESPACE}/{}", root_key(scope)),
                        expected: 0,
                        found: 0,
                    });
                };
                if list.is_empty() && state.version > 0 {
                    continue;
                }
                let buckets: BTreeMap<u8, Bucket> = list
                    .iter()
                    .filter(|(p, _)| !p.head)
                    .map(|(p, _)| (p.bucket, state.bucket(p.bucket).cloned().unwrap_or_default()))
                    .collect();
                (state.version, state.root.clone(), buckets)
            };
            for (p, entry) in list {
                if p.head {
                    root.head = entry;
                    continue;
                }
                let Some(bucket) = buckets.get_mut(&p.bucket) else {
                    continue;
                };
                match entry {
                    Some(e) => bucket.entries.insert(p.identity, e),
                    None => bucket.entries.remove(&p.identity),
                };
            }
            let mut installs = Vec::with_capacity(buckets.len());
            for (b, mut bucket) in buckets {
                let key = bucket_key(scope, b);
                let next = bucket.version + 1;
                let bytes = self
                    .sealer
                    .seal(NAMESPACE, &key, next, &encode(&key, &bucket.entries)?)?;
                plan.ops.push(StoreWrite::Put {
                    namespace: NAMESPACE.into(),
                    key,
                    expected: Expected::Version(bucket.version),
                    value: bytes.clone(),
                });
                bucket.version = next;
                bucket.digest = sha256(&bytes);
                root.set_digest(b, bucket.digest);
                installs.push((b, bucket));
            }
            let key = root_key(scope);
            let next = version + 1;
            root.epoch = next;
            let bytes = self.sealer.seal(NAMESPACE, &key, next, &encode(&key, &root)?)?;
            plan.installs.push(Install {
                scope: scope.to_owned(),
                version: next,
                root,
                root_hash: sha256(&bytes),
                buckets: installs,
            });
            plan.ops.push(StoreWrite::Put {
                namespace: NAMESPACE.into(),
                key,
                expected: Expected::Version(version),
                value: bytes,
            });
        }
        Ok(plan)
    }

    /// The versions the index writes of `plan` commit at, in order.
    pub(super) fn plan_versions(plan: &IndexPlan) -> Vec<u64> {
        plan.ops
            .iter()
            .map(|op| match op {
                StoreWrite::Put {
                    expected: Expected::Version(v),
                    ..
                } => v + 1,
                _ => 1,
            })
            .collect()
    }

    /// Remembers the roots and buckets of a committed plan (confirmed at `asked`).
    pub(super) fn install_plan(index: &Index, plan: IndexPlan, asked: Instant) {
        for install in plan.installs {
            let slot = index.slot(&install.scope);
            let mut state = slot.lock();
            let state = state.get_or_insert_with(|| ScopeState::empty(&install.scope));
            if state.version >= install.version {
                continue;
            }
            state.version = install.version;
            state.root = install.root;
            state.root_hash = install.root_hash;
            state.confirmed = Some(asked);
            state.buckets.extend(install.buckets);
        }
    }

    /// Checks that the global root exists (a store with a boot record and
    /// without it was either emptied of it by the host or is from before the
    /// index): at genesis and at every unseal.
    pub async fn check_genesis(&self) -> Result<(), StoreError> {
        let Some(index) = self.index else { return Ok(()) };
        let (version, _) = self.read_root(index, GLOBAL).await?;
        if version == 0 {
            return Err(index.violation(
                Violation::Omission,
                &format!("{NAMESPACE}/{}", root_key(GLOBAL)),
                "the store's index root (the store has a boot record)".into(),
                "absent (hidden by the host, or a data dir from before the authenticated index)".into(),
            ));
        }
        Ok(())
    }
}
