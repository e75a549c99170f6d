//! The authenticated index: what makes the host's answers *fresh*, not only
//! authentic (issue 19; the argument is in ARCHITECTURE.md "Freshness").
//!
//! Sealing proves a record was written by this enclave; it does not prove
//! that it is the latest version, nor that a record the host calls absent is
//! absent. The index does. Records are grouped into **scopes**: one global
//! scope (tenants, credentials, the credential listing, TLS, boot pointers,
//! the operator's audit head) and one per tenant (its keys, aliases, policy
//! modules, import parameters, its audit head). Each scope has
//!
//! - a sealed **root** `index/<scope>/root`: its epoch (= its store version,
//!   sealed into the associated data), the SHA-256 of each of [`BUCKETS`]
//!   buckets' sealed bytes, and the entry of the scope's audit chain head;
//! - sealed **buckets** `index/<scope>/b/<xx>`: record identity
//!   (`namespace/key`) → [`Entry`] (store version, SHA-256 of the sealed
//!   bytes) for every record of the scope that exists, the bucket chosen by
//!   the first byte of SHA-256 of the identity.
//!
//! A two-level Merkle tree: a write rewrites its record, its bucket and the
//! root in one atomic compare-and-swap batch (`Records::commit`); a read is
//! checked against its bucket entry (present or absent, version, hash). The
//! enclave keeps every root it verified in memory ([`Index`]) and refuses a
//! served root older than one it knows (rollback), a missing root it knows
//! exists (omission), and a record that disagrees with its entry. Roots
//! written by other nodes are accepted when newer (the host cannot forge
//! one); the enclave re-reads a root it has not confirmed for
//! [`super::cache::REVALIDATE_AFTER`], the cluster bound of the record cache.
//!
//! This module holds the formats, the scope of each record and the
//! in-memory state; the checks that talk to the store are
//! `store/indexed.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Namespace of the index records (never itself indexed).
pub const NAMESPACE: &str = "index";
/// Buckets per scope.
pub const BUCKETS: usize = 256;
/// The global scope (tenant ids are 12 digits, so no tenant is called this).
pub const GLOBAL: &str = "@global";
/// The namespace of tenant records (`keystore::tenants::NAMESPACE`): a
/// tenant's scope exists from the write that creates its record.
pub const TENANT_NAMESPACE: &str = "tenant";
/// The audit chain whose head the global scope covers (`audit::record::OPERATOR_CHAIN`).
const OPERATOR_CHAIN: &str = "operator";

/// What the index holds of one record: its store version and the SHA-256 of
/// its sealed bytes at that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
}

impl Entry {
    pub fn of(version: u64, sealed: &[u8]) -> Entry {
        Entry {
            version,
            hash: sha256(sealed),
        }
    }
}

/// A scope's root, as sealed at `index/<scope>/root`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    pub scope: String,
    /// The root's store version: +1 on every write of the scope.
    pub epoch: u64,
    /// SHA-256 of each bucket's sealed bytes, [`BUCKETS`] × 32 bytes (all
    /// zero for a bucket never written).
    #[serde(with = "serde_bytes")]
    pub digests: Vec<u8>,
    /// The scope's audit chain head record (`audit/<chain>/head`), kept here
    /// rather than in a bucket: it changes on every append.
    pub head: Option<Entry>,
}

impl Root {
    pub fn empty(scope: &str) -> Root {
        Root {
            scope: scope.to_owned(),
            epoch: 0,
            digests: vec![0; BUCKETS * 32],
            head: None,
        }
    }

    pub fn digest(&self, bucket: u8) -> [u8; 32] {
        let start = usize::from(bucket) * 32;
        let mut out = [0; 32];
        if let Some(d) = self.digests.get(start..start + 32) {
            out.copy_from_slice(d);
        }
        out
    }

    pub fn set_digest(&mut self, bucket: u8, digest: [u8; 32]) {
        let start = usize::from(bucket) * 32;
        if let Some(d) = self.digests.get_mut(start..start + 32) {
            d.copy_from_slice(&digest);
        }
    }
}

/// A bucket as sealed at `index/<scope>/b/<xx>`: identity → entry.
pub type BucketEntries = BTreeMap<String, Entry>;

pub fn root_key(scope: &str) -> String {
    format!("{scope}/root")
}

pub fn bucket_key(scope: &str, bucket: u8) -> String {
    format!("{scope}/b/{bucket:02x}")
}

pub fn buckets_prefix(scope: &str) -> String {
    format!("{scope}/b/")
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Where a record sits in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub scope: String,
    /// `namespace/key`.
    pub identity: String,
    /// The scope's audit head (kept in the root), else in [`Place::bucket`].
    pub head: bool,
    pub bucket: u8,
}

/// The scope of a record, `None` for records the index does not cover: the
/// index itself, the unsealed boot record (`boot/custody`, written with the
/// global root at genesis and read before any key exists), and audit records
/// (the hash chain under the indexed head covers them).
pub fn place(namespace: &str, key: &str) -> Option<Place> {
    let (scope, head) = match namespace {
        NAMESPACE => return None,
        "boot" if key == "custody" => return None,
        "audit" => {
            let (chain, rest) = key.split_once('/')?;
            if rest != "head" {
                return None;
            }
            (chain_scope(chain), true)
        }
        "key" | "alias" | "import" | "policy" => (key.split_once('/').map_or(key, |(t, _)| t).to_owned(), false),
        _ => (GLOBAL.to_owned(), false),
    };
    let identity = format!("{namespace}/{key}");
    let bucket = sha256(identity.as_bytes())[0];
    Some(Place {
        scope,
        identity,
        head,
        bucket,
    })
}

/// The scope a listing of `namespace` under `prefix` lies in, when it lies
/// in one (its completeness is then checked); `None` for listings across
/// scopes (the sweep) and of unindexed records.
pub fn listing_scope(namespace: &str, prefix: &str) -> Option<String> {
    match namespace {
        NAMESPACE | "audit" => None,
        "key" | "alias" | "import" | "policy" => prefix.split_once('/').map(|(t, _)| t.to_owned()),
        _ => Some(GLOBAL.to_owned()),
    }
}

fn chain_scope(chain: &str) -> String {
    if chain == OPERATOR_CHAIN {
        GLOBAL.to_owned()
    } else {
        chain.to_owned()
    }
}

/// What kind of freshness violation was detected (the `kind` label of
/// `keyward_freshness_violations_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The host called a record absent (or left it out of a listing) that
    /// the index holds.
    Omission,
    /// The host served an older version than the index holds, or a record
    /// the index says was deleted (or an older index root).
    Rollback,
    /// The host served bytes the index does not hold at that version (a
    /// version never committed, another root at a known epoch).
    Substitution,
}

impl Violation {
    pub fn label(self) -> &'static str {
        match self {
            Violation::Omission => "omission",
            Violation::Rollback => "rollback",
            Violation::Substitution => "substitution",
        }
    }

    fn slot(self) -> usize {
        match self {
            Violation::Omission => 0,
            Violation::Rollback => 1,
            Violation::Substitution => 2,
        }
    }
}

/// A loaded bucket: its store version, the digest of its sealed bytes (the
/// root it was verified against holds it) and its entries.
#[derive(Clone, Default)]
pub struct Bucket {
    pub version: u64,
    pub digest: [u8; 32],
    pub entries: BucketEntries,
}

/// What the enclave knows of one scope.
#[derive(Clone)]
pub struct ScopeState {
    /// Store version of the root (0: the scope has no root yet).
    pub version: u64,
    pub root: Root,
    /// SHA-256 of the root's sealed bytes (two roots at one epoch are a fork).
    pub root_hash: [u8; 32],
    /// When the store last confirmed this root (the request's send time);
    /// `None`: re-read before use.
    pub confirmed: Option<Instant>,
    /// Buckets loaded so far, each valid while its digest is the root's.
    pub buckets: HashMap<u8, Bucket>,
}

impl ScopeState {
    pub fn empty(scope: &str) -> ScopeState {
        ScopeState {
            version: 0,
            root: Root::empty(scope),
            root_hash: [0; 32],
            confirmed: None,
            buckets: HashMap::new(),
        }
    }

    /// The loaded bucket if it is the one the root names.
    pub fn bucket(&self, bucket: u8) -> Option<&Bucket> {
        let digest = self.root.digest(bucket);
        if digest == [0; 32] {
            return None;
        }
        self.buckets.get(&bucket).filter(|b| b.digest == digest)
    }

    /// True when the root names bucket `bucket` empty or it is loaded.
    pub fn has_bucket(&self, bucket: u8) -> bool {
        self.root.digest(bucket) == [0; 32] || self.bucket(bucket).is_some()
    }

    /// The entry of `place`, when its bucket is known (`None` inside: absent).
    pub fn entry(&self, place: &Place) -> Option<Option<Entry>> {
        if place.head {
            return Some(self.root.head);
        }
        if self.root.digest(place.bucket) == [0; 32] {
            return Some(None);
        }
        self.bucket(place.bucket)
            .map(|b| b.entries.get(&place.identity).copied())
    }
}

/// One scope's state and its writer lock (writes of a scope on this node
/// take turns: they all rewrite the root).
#[derive(Default)]
pub struct Slot {
    pub state: Mutex<Option<ScopeState>>,
    pub writer: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    pub fn lock(&self) -> MutexGuard<'_, Option<ScopeState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The roots (and loaded buckets) this enclave has verified, one per scope,
/// and the violations it detected. One per keyring (per root key): every
/// [`super::Records`] of the enclave shares it.
#[derive(Default)]
pub struct Index {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    violations: [AtomicU64; 3],
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn slot(&self, scope: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(scope.to_owned()).or_default())
    }

    /// The enclave's epoch: the global root's, the one it states (custody
    /// records it at unseal, peers compare it; issue 19 item 3). 0 before
    /// the global root was read.
    pub fn epoch(&self) -> u64 {
        self.scope_epoch(GLOBAL)
    }

    /// The epoch of `scope` as last verified (0: never read, or no root).
    pub fn scope_epoch(&self, scope: &str) -> u64 {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(scope)
            .cloned();
        slot.and_then(|s| s.lock().as_ref().map(|st| st.version)).unwrap_or(0)
    }

    /// Every scope's verified epoch and root hash, sorted by scope: what
    /// the enclave can state about the store it has seen.
    pub fn roots(&self) -> Vec<(String, u64, [u8; 32])> {
        let slots: Vec<(String, Arc<Slot>)> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut out: Vec<_> = slots
            .into_iter()
            .filter_map(|(scope, slot)| slot.lock().as_ref().map(|st| (scope, st.version, st.root_hash)))
            .filter(|(_, version, _)| *version > 0)
            .collect();
        out.sort();
        out
    }

    /// Makes every root be re-read before its next use (the host's
    /// `Invalidate All`, or a hint naming a root).
    pub fn expire(&self, scope: Option<&str>) {
        let slots: Vec<Arc<Slot>> = {
            let map = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match scope {
                Some(s) => map.get(s).cloned().into_iter().collect(),
                None => map.values().cloned().collect(),
            }
        };
        for slot in slots {
            if let Some(state) = slot.lock().as_mut() {
                state.confirmed = None;
            }
        }
    }

    /// A hint that the root of `scope` is at `version` (untrusted): makes
    /// it be re-read before its next use if this enclave knows an older one.
    pub fn hint(&self, scope: &str, version: u64) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(scope)
            .cloned();
        if let Some(slot) = slot
            && let Some(state) = slot.lock().as_mut()
            && state.version < version
        {
            state.confirmed = None;
        }
    }

    /// Counts and logs a detected violation; the error to answer with.
    pub fn violation(&self, kind: Violation, record: &str, expected: String, served: String) -> super::StoreError {
        self.violations[kind.slot()].fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            kind = kind.label(),
            record,
            expected = expected.as_str(),
            served = served.as_str(),
            "freshness violation: the host store served state older than, or missing from, the enclave's authenticated index"
        );
        super::StoreError::Freshness {
            kind,
            record: record.to_owned(),
            expected,
            served,
        }
    }

    /// Violations detected so far, by kind.
    pub fn violation_counts(&self) -> keyward_wire::FreshnessViolations {
        let count = |k: Violation| self.violations[k.slot()].load(Ordering::Relaxed);
        keyward_wire::FreshnessViolations {
            omission: count(Violation::Omission),
            rollback: count(Violation::Rollback),
            substitution: count(Violation::Substitution),
        }
    }
}

/// How a served record (version, sealed bytes or absent) compares with its
/// entry.
pub fn matches(entry: Option<Entry>, version: u64, sealed: Option<&[u8]>) -> bool {
    match (entry, sealed) {
        (None, None) => true,
        (Some(e), Some(bytes)) => e.version == version && e.hash == sha256(bytes),
        _ => false,
    }
}

/// The kind of a mismatch found with the root unchanged around the read,
/// and how to describe the two sides.
pub fn classify(entry: Option<Entry>, version: u64, sealed: Option<&[u8]>) -> (Violation, String, String) {
    let describe = |e: Option<Entry>| e.map_or_else(|| "absent".to_owned(), |e| format!("version {}", e.version));
    let served = if sealed.is_some() {
        format!("version {version}")
    } else {
        "absent".to_owned()
    };
    let kind = match (entry, sealed) {
        (Some(_), None) => Violation::Omission,
        (None, Some(_)) => Violation::Rollback,
        (Some(e), Some(_)) if version < e.version => Violation::Rollback,
        _ => Violation::Substitution,
    };
    (kind, describe(entry), served)
}
