//! Durable commit latency of the candidate embedded engines, on this machine's
//! disk: sled 0.34 (the store before issue 17), SQLite (WAL,
//! `synchronous=FULL`) and redb (its default, durable commit).
//!
//! Two shapes: a single put committed on its own, and a group commit of
//! [`GROUP`] puts in one durable commit (what the proxy's group committer
//! does under load). Besides criterion's mean, the bench prints p50/p99 of
//! each shape, measured on its own sample of [`SAMPLES`] commits.
//!
//! Run: `cargo bench -p keyward-proxy --bench store_commit`. The databases
//! live under `target/` (the real disk), not in a tmpfs.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// Puts per group commit.
const GROUP: usize = 32;
/// Commits timed for the percentiles.
const SAMPLES: usize = 400;
/// A sealed record's typical size (a key record).
const VALUE: usize = 300;

trait Engine {
    fn name(&self) -> &'static str;
    /// Writes `n` records in one durable commit.
    fn commit(&mut self, first: u64, n: usize);
}

struct Sled(sled::Tree, sled::Db);
impl Engine for Sled {
    fn name(&self) -> &'static str {
        "sled"
    }
    fn commit(&mut self, first: u64, n: usize) {
        let mut batch = sled::Batch::default();
        for i in 0..n as u64 {
            batch.insert(key(first + i).as_bytes(), vec![7u8; VALUE]);
        }
        self.0.apply_batch(batch).unwrap();
        // What the old store called "durable": sync_file_range, no fsync.
        self.1.flush().unwrap();
    }
}

struct Sqlite(rusqlite::Connection);
impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn commit(&mut self, first: u64, n: usize) {
        let tx = self.0.transaction().unwrap();
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO records (ns, key, version, value) VALUES ('key', ?1, 1, ?2)")
                .unwrap();
            for i in 0..n as u64 {
                put.execute(rusqlite::params![key(first + i), vec![7u8; VALUE]])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("records");
struct Redb(redb::Database);
impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn commit(&mut self, first: u64, n: usize) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for i in 0..n as u64 {
                table.insert(key(first + i).as_str(), [7u8; VALUE].as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

fn key(i: u64) -> String {
    format!("t/123456789012/{i:016x}")
}

fn dir(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/store-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    base
}

fn engines() -> Vec<Box<dyn Engine>> {
    let sled_dir = dir("sled");
    let db = sled::Config::new().path(&sled_dir).open().unwrap();
    let tree = db.open_tree("ns:key").unwrap();

    let sqlite = rusqlite::Connection::open(dir("sqlite").join("store.sqlite3")).unwrap();
    sqlite
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE records (ns TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
                                   value BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;",
        )
        .unwrap();

    let redb = redb::Database::create(dir("redb").join("store.redb")).unwrap();
    vec![Box::new(Sled(tree, db)), Box::new(Sqlite(sqlite)), Box::new(Redb(redb))]
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let mut engines = engines();
    let mut next = 0u64;
    let mut report = Vec::new();
    for shape in [1usize, GROUP] {
        // Percentiles first, interleaving the engines commit by commit so
        // that a burst of load from elsewhere hits all of them alike.
        let mut samples: Vec<Vec<Duration>> = engines.iter().map(|_| Vec::with_capacity(SAMPLES)).collect();
        for _ in 0..SAMPLES {
            for (engine, sample) in engines.iter_mut().zip(samples.iter_mut()) {
                let started = Instant::now();
                engine.commit(next, shape);
                sample.push(started.elapsed());
                next += shape as u64;
            }
        }
        for (engine, sample) in engines.iter().zip(samples) {
            let (p50, p99) = percentiles(sample);
            report.push(format!(
                "{:<7} {:>3} put(s)/commit: p50 {:>9.3} ms  p99 {:>9.3} ms",
                engine.name(),
                shape,
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ));
        }
        let mut group = c.benchmark_group(format!("durable_commit_{shape}"));
        group.sample_size(20).measurement_time(Duration::from_secs(4));
        for engine in engines.iter_mut() {
            group.bench_function(engine.name(), |b| {
                b.iter(|| {
                    engine.commit(next, shape);
                    next += shape as u64;
                })
            });
        }
        group.finish();
    }
    println!("\n== durable commit latency ({SAMPLES} commits each, interleaved) ==");
    for line in report {
        println!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
