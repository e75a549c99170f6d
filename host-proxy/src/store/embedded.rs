//! The embedded store: one SQLite database, `<dir>/keyward.sqlite3`, in WAL
//! mode with `synchronous=FULL` (every commit `fdatasync`s the WAL before it
//! returns). Why SQLite and not redb or sled: ARCHITECTURE.md, "Storage".
//!
//! Writes go to one writer thread, which group-commits: it takes every write
//! call queued while the previous commit was on the disk and applies them in
//! one transaction (each call in its own savepoint, so a conflicting call
//! leaves the others alone), then commits once and only then answers each
//! call. Under load, many requests' writes share one `fdatasync`.
//!
//! Reads use a few read-only connections of their own: WAL readers see the
//! last commit and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_client::metrics::histogram::Histogram;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::{Backend, CommitError, Invalidation, Page, StoreOpenError, Stored, Write, legacy};

/// The database file inside the store directory.
pub const FILE: &str = "keyward.sqlite3";
/// Schema version, in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;
/// Read connections (the link has 4 connections by default).
const READERS: usize = 4;
/// Most write calls in one group commit.
const MAX_GROUP: usize = 512;
/// SQLite's page cache per connection, in KiB (negative `cache_size`).
const CACHE_KIB: i64 = 16 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    ns      TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    value   BLOB,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
";

type Outcome = Result<Vec<u64>, CommitError>;

struct Job {
    writes: Vec<Write>,
    done: oneshot::Sender<Outcome>,
}

/// The embedded SQLite store.
pub struct Embedded {
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: mpsc::Sender<Job>,
    invalidations: broadcast::Sender<Invalidation>,
}

impl Embedded {
    /// Opens the store in `dir`, creating it if missing. A sled store from
    /// an earlier version is refused.
    pub fn open(dir: &Path, commit_timer: Option<Histogram>) -> Result<Self, StoreOpenError> {
        legacy::refuse_sled(dir)?;
        let failed = |e: String| StoreOpenError::Open(dir.display().to_string(), e);
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let file = dir.join(FILE);
        let writer = open_writer(&file).map_err(failed)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&file).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let invalidations = super::invalidation_channel();
        let (tx, rx) = mpsc::channel();
        let hints = invalidations.clone();
        std::thread::Builder::new()
            .name("keyward-store-writer".into())
            .spawn(move || group_commit(writer, rx, commit_timer, hints))
            .map_err(|e| failed(e.to_string()))?;
        Ok(Embedded {
            readers,
            next_reader: AtomicUsize::new(0),
            writer: tx,
            invalidations,
        })
    }

    /// The database file of the store in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// A read connection: the first free one, else wait for one in turn.
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Backend for Embedded {
    fn get(&self, namespace: String, key: String) -> BoxFuture<'static, Result<Stored, String>> {
        let result = read(&self.reader(), &namespace, &key).map_err(|e| e.to_string());
        futures::future::ready(result).boxed()
    }

    fn list(
        &self,
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Page, String>> {
        let result =
            list(&self.reader(), &namespace, &prefix, start_after.as_deref(), limit).map_err(|e| e.to_string());
        futures::future::ready(result).boxed()
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'static, Outcome> {
        let (done, wait) = oneshot::channel();
        if self.writer.send(Job { writes, done }).is_err() {
            return futures::future::ready(Err(CommitError::Failed("the store writer stopped".into()))).boxed();
        }
        async move {
            wait.await
                .unwrap_or_else(|_| Err(CommitError::Failed("the store writer stopped".into())))
        }
        .boxed()
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

pub(crate) fn open_writer(file: &Path) -> Result<Connection, String> {
    let conn = Connection::open(file).map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite refused WAL mode (journal_mode={mode})"));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA cache_size=-{CACHE_KIB};"
    ))
    .map_err(|e| e.to_string())?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the store's schema version is {version}, newer than this Keyward's {SCHEMA_VERSION}"
        ));
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn open_reader(file: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| e.to_string())?;
    conn.execute_batch(&format!("PRAGMA busy_timeout=10000; PRAGMA cache_size=-{CACHE_KIB};"))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn read(conn: &Connection, namespace: &str, key: &str) -> rusqlite::Result<Stored> {
    let row = conn
        .prepare_cached("SELECT version, value FROM records WHERE ns = ?1 AND key = ?2")?
        .query_row(params![namespace, key], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((version, value)) => Stored {
            version: u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, version))?,
            value,
        },
        None => Stored {
            version: 0,
            value: None,
        },
    })
}

fn list(conn: &Connection, namespace: &str, prefix: &str, after: Option<&str>, limit: usize) -> rusqlite::Result<Page> {
    let mut statement = conn.prepare_cached(
        "SELECT key, version, value FROM records
         WHERE ns = ?1 AND key >= ?2 AND (?3 IS NULL OR key > ?3) AND value IS NOT NULL
         ORDER BY key",
    )?;
    let mut rows = statement.query(params![namespace, prefix, after])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if !key.starts_with(prefix) {
            break;
        }
        if entries.len() == limit {
            return Ok((entries, true));
        }
        let version: i64 = row.get(1)?;
        let version = u64::try_from(version).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, version))?;
        entries.push((key, version, row.get(2)?));
    }
    Ok((entries, false))
}

/// The writer thread: runs until every [`Embedded`] handle is dropped.
fn group_commit(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    timer: Option<Histogram>,
    hints: broadcast::Sender<Invalidation>,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let (outcomes, written) = match commit_group(&mut conn, &group) {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let outcomes = group.iter().map(|_| Err(CommitError::Failed(e.to_string()))).collect();
                (outcomes, Vec::new())
            }
        };
        if let Some(timer) = &timer {
            timer.observe(started.elapsed().as_secs_f64());
        }
        // Only now, after the commit's fdatasync, is any call answered.
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.done.send(outcome);
        }
        for hint in written {
            let _ = hints.send(hint);
        }
    }
}

/// One transaction for the whole group; each job in its own savepoint.
fn commit_group(conn: &mut Connection, group: &[Job]) -> rusqlite::Result<(Vec<Outcome>, Vec<Invalidation>)> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut written = Vec::new();
    for job in group {
        let mut savepoint = tx.savepoint()?;
        match apply(&savepoint, &job.writes, &mut written)? {
            Ok(versions) => {
                savepoint.commit()?;
                outcomes.push(Ok(versions));
            }
            Err(conflict) => {
                savepoint.rollback()?;
                outcomes.push(Err(conflict));
            }
        }
    }
    tx.commit()?;
    Ok((outcomes, written))
}

/// Applies one call's writes; a conflict is an `Ok(Err(..))` (the caller
/// rolls the savepoint back), a database failure an `Err`.
fn apply(conn: &Connection, writes: &[Write], written: &mut Vec<Invalidation>) -> rusqlite::Result<Outcome> {
    let mut versions = Vec::with_capacity(writes.len());
    let mark = written.len();
    for (index, w) in writes.iter().enumerate() {
        let current = read(conn, &w.namespace, &w.key)?;
        if !w.expect.holds(&current, w.value.is_none()) {
            written.truncate(mark);
            return Ok(Err(CommitError::Conflict { index, current }));
        }
        if w.value.is_none() && current.value.is_none() {
            // An unconditional delete of nothing: nothing to write.
            versions.push(current.version);
            continue;
        }
        let Some(version) = current.version.checked_add(1).and_then(|v| i64::try_from(v).ok()) else {
            written.truncate(mark);
            return Ok(Err(CommitError::Failed("record version overflow".into())));
        };
        conn.prepare_cached(
            "INSERT INTO records (ns, key, version, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (ns, key) DO UPDATE SET version = excluded.version, value = excluded.value",
        )?
        .execute(params![w.namespace, w.key, version, w.value])?;
        versions.push(version as u64);
        written.push(Invalidation::Record {
            namespace: w.namespace.clone(),
            key: w.key.clone(),
            version: version as u64,
        });
    }
    Ok(Ok(versions))
}
