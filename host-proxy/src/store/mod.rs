//! The sealed-record store, serving the enclave's store calls. It sees only
//! record identities, versions and sealed bytes; it cannot read, alter or
//! invent a record without the enclave noticing.
//!
//! Two backends behind one [`Backend`] trait:
//! * [`embedded`]: SQLite in WAL mode with `synchronous=FULL` under
//!   `<data-dir>/store`, one writer thread that group-commits the writes of
//!   many requests in one durable (fsync'd) transaction;
//! * [`postgres`]: a PostgreSQL database shared by the nodes of a cluster.
//!
//! [`load`] fills an empty store from a verified backup (`kmsctl restore`).
//!
//! Either way, a write is durable before its reply is sent: the future that
//! [`Store::call`] returns completes only after the backend's commit
//! returned (SQLite: after the WAL's `fdatasync`; PostgreSQL: after its
//! commit, itself durable with the server's default `synchronous_commit`).
//!
//! # Versions
//! Every record identity (namespace, key) has a version: 0 until it is first
//! written, then one more on every write, a deletion included (a deleted
//! record stays as a tombstone: its version without a value). Versions of
//! one identity therefore never repeat, even across a delete and a
//! re-creation, and the writer knows the version its write will get
//! (expected + 1) before it writes: the enclave can bind it into the sealed
//! record (issue 17's enclave phase).
//!
//! # Invalidations
//! [`Store::invalidations`] yields every committed write this node learns
//! of: its own (both backends) and, on PostgreSQL, other nodes' (through
//! `LISTEN keyward_invalidate`). They are hints for the enclave's caches
//! (they travel through the untrusted host), never a proof of freshness.

pub mod embedded;
pub mod legacy;
pub mod load;
pub mod postgres;
mod request;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use keyward_wire::{StoreOp, StoreResult};
use tokio::sync::broadcast;

pub use embedded::Embedded;
pub use load::{LoadError, LoadRecord, load};
pub use postgres::Postgres;

/// Longest namespace or key accepted from the enclave.
pub(crate) const MAX_NAME: usize = 1024;
/// Largest page served.
pub(crate) const MAX_LIST: u32 = 1024;
/// Most writes in one call (a batch): bounds a transaction's size.
pub(crate) const MAX_BATCH: usize = 4096;
/// Invalidations buffered for a slow subscriber before it is told it lagged.
const INVALIDATION_BUFFER: usize = 4096;

/// Where the store lives, as given to `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded engine's directory (`<data-dir>/store` by default).
    Embedded(PathBuf),
    /// A PostgreSQL connection URL (`postgres://USER@HOST:PORT/DB`).
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else is a path.
    pub fn parse(value: &str) -> Self {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            StoreLocation::Postgres(value.to_string())
        } else {
            StoreLocation::Embedded(PathBuf::from(value))
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Embedded(p) => write!(f, "{}", p.display()),
            // A URL may carry a password: print only where it points.
            StoreLocation::Postgres(url) => write!(f, "{}", postgres::redact(url)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreOpenError {
    #[error("cannot open the store at {0}: {1}")]
    Open(String, String),
    #[error(transparent)]
    Sled(#[from] legacy::SledStoreError),
    #[error(transparent)]
    OldRecordFormat(#[from] legacy::OldRecordFormatError),
}

/// A committed write, as a cache invalidation hint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// `namespace/key` now has `version` (a deletion included).
    Record {
        namespace: String,
        key: String,
        version: u64,
    },
    /// Hints may have been missed (the listener reconnected, or the
    /// subscriber lagged): treat every cached record as unverified.
    All,
}

impl Invalidation {
    /// The `NOTIFY` payload form: `<namespace>/<key>/<version>`.
    pub fn payload(namespace: &str, key: &str, version: u64) -> String {
        format!("{namespace}/{key}/{version}")
    }

    /// Parses [`Invalidation::payload`]'s form (namespaces have no `/`;
    /// keys may). `None` for anything else.
    pub fn parse(payload: &str) -> Option<Self> {
        let (namespace, rest) = payload.split_once('/')?;
        let (key, version) = rest.rsplit_once('/')?;
        check_namespace(namespace).ok()?;
        Some(Invalidation::Record {
            namespace: namespace.to_string(),
            key: key.to_string(),
            version: version.parse().ok()?,
        })
    }
}

/// A record as stored: its version and, unless deleted, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

/// One write, as both backends apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub namespace: String,
    pub key: String,
    pub expect: Expect,
    /// `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// What a write requires of the record before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional (the pre-versioning `Put`/`PutBatch`/`Delete`); an
    /// unconditional delete of a record without a value writes nothing.
    Any,
    /// No value (never written, or deleted).
    Absent,
    /// At this version, with a value or not; a delete also needs a value.
    Version(u64),
}

impl Expect {
    /// Whether a record in state `current` satisfies this (for a write that
    /// deletes when `deletes`).
    pub fn holds(self, current: &Stored, deletes: bool) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.value.is_none(),
            Expect::Version(v) => current.version == v && (!deletes || current.value.is_some()),
        }
    }
}

/// Why a group of writes was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// Write `index` found the record in state `current`: nothing written.
    Conflict { index: usize, current: Stored },
    /// The backend failed; nothing of the group is visible. Text for logs.
    Failed(String),
}

/// A page of listed records (`key`, version, value), and whether more follow.
pub type Page = (Vec<(String, u64, Vec<u8>)>, bool);

/// A storage engine. Validated input only (see [`Store::call`]).
pub trait Backend: Send + Sync + 'static {
    /// The record `namespace/key` (version 0 and no value if never written).
    fn get(&self, namespace: String, key: String) -> BoxFuture<'static, Result<Stored, String>>;
    /// Records with a value whose key starts with `prefix`, strictly after
    /// `start_after`, in byte order: at most `limit`, and whether more follow.
    fn list(
        &self,
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Page, String>>;
    /// Applies `writes` atomically and durably (all or none); the new version
    /// of each write in order (unchanged for an unconditional delete of an
    /// absent record). Identities are distinct.
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'static, Result<Vec<u64>, CommitError>>;
    /// Every committed write this node learns of, as a hint.
    fn invalidations(&self) -> broadcast::Receiver<Invalidation>;
}

/// The store the enclave link serves: a backend behind the wire's calls.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens the store at `location`: an embedded store is created if missing
    /// (a sled store from before is refused); PostgreSQL's schema is created
    /// on first start.
    pub async fn open(
        location: &StoreLocation,
        commit_timer: Option<prometheus_client::metrics::histogram::Histogram>,
    ) -> Result<Self, StoreOpenError> {
        match location {
            StoreLocation::Embedded(dir) => Ok(Self::embedded(dir, commit_timer)?),
            StoreLocation::Postgres(url) => Ok(Store {
                backend: Arc::new(Postgres::connect(url, commit_timer).await?),
            }),
        }
    }

    /// Refuses a store that holds records of the earlier sealed-record
    /// format (`legacy.rs`); the proxy checks this at start, after
    /// [`Store::open`].
    pub async fn refuse_old_records(&self, location: &StoreLocation) -> Result<(), StoreOpenError> {
        let name = match location {
            StoreLocation::Embedded(dir) => dir.display().to_string(),
            // Never the URL: it may hold a password.
            StoreLocation::Postgres(_) => "the PostgreSQL store".to_owned(),
        };
        Ok(legacy::refuse_old_records(&*self.backend, &name).await?)
    }

    /// Opens (creating if missing) the embedded store in `dir`.
    pub fn embedded(
        dir: &Path,
        commit_timer: Option<prometheus_client::metrics::histogram::Histogram>,
    ) -> Result<Self, StoreOpenError> {
        Ok(Store {
            backend: Arc::new(Embedded::open(dir, commit_timer)?),
        })
    }

    /// A store over any backend (tests wrap one to tamper with it).
    pub fn from_backend(backend: Arc<dyn Backend>) -> Self {
        Store { backend }
    }

    /// Serves one call. The future of a read on the embedded store is ready
    /// at once (the read is done before it is returned: callers may poll it
    /// inline); a write's completes after the durable commit.
    pub fn call(&self, op: StoreOp) -> BoxFuture<'static, StoreResult> {
        request::serve(Arc::clone(&self.backend), op)
    }

    /// Every committed write this node learns of (its own, and on PostgreSQL
    /// every node's): the hint stream the enclave's cache invalidation will
    /// be fed from. A receiver that falls behind gets `Lagged` from tokio's
    /// broadcast: treat it as [`Invalidation::All`].
    pub fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.backend.invalidations()
    }
}

pub(crate) fn invalidation_channel() -> broadcast::Sender<Invalidation> {
    broadcast::channel(INVALIDATION_BUFFER).0
}

pub(crate) fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.is_empty()
        || namespace.len() > 64
        || !namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("invalid namespace".into());
    }
    Ok(())
}

/// Keys are any UTF-8 up to [`MAX_NAME`] bytes except NUL (which PostgreSQL's
/// `text` cannot hold).
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_NAME {
        Err("record name too long".into())
    } else if key.contains('\0') {
        Err("record name contains NUL".into())
    } else {
        Ok(())
    }
}
