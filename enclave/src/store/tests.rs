use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::secret::Key256;

fn sealer() -> Sealer {
    Sealer::new(Arc::new(Key256::from_bytes([7; 32])))
}

#[tokio::test]
async fn writes_bind_the_version_and_reads_check_it() {
    let store = MemoryStore::new();
    let sealer = sealer();
    let records = Records::new(&*store, &sealer);
    records.put("key", "t/k", &"v1".to_string()).await.expect("put");
    records.put("key", "t/k", &"v2".to_string()).await.expect("put");
    assert_eq!(store.raw("key", "t/k").0, 2);
    let fresh = Records::new(&*store, &sealer);
    assert_eq!(
        fresh.get_versioned::<String>("key", "t/k").await.expect("get"),
        (2, Some("v2".to_string()))
    );
    // The host serves version 2's bytes as version 3: detected, nothing read.
    assert!(store.serve_under_next_version("key", "t/k"));
    let err = Records::new(&*store, &sealer)
        .get::<String>("key", "t/k")
        .await
        .expect_err("version 2's bytes under version 3");
    assert!(matches!(err, StoreError::Seal(SealError::Forged(_))), "{err}");
    assert!(err.to_string().contains("served as version 3"), "{err}");
}

#[tokio::test]
async fn a_read_modify_write_conflicts_when_another_writer_came_first() {
    let store = MemoryStore::new();
    let sealer = sealer();
    Records::new(&*store, &sealer)
        .put("key", "k", &1u32)
        .await
        .expect("put");
    let a = Records::new(&*store, &sealer);
    let b = Records::new(&*store, &sealer);
    assert_eq!(a.get::<u32>("key", "k").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("key", "k").await.expect("get"), Some(1));
    a.put("key", "k", &2u32).await.expect("first writer wins");
    let err = b.put("key", "k", &3u32).await.expect_err("second writer conflicts");
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(b.conflicted_before_writing());
    assert!(!a.conflicted_before_writing());
    assert_eq!(
        Records::new(&*store, &sealer)
            .get::<u32>("key", "k")
            .await
            .expect("get"),
        Some(2)
    );
    // A read that found nothing makes the write "must not exist".
    let c = Records::new(&*store, &sealer);
    assert_eq!(c.get::<u32>("alias", "x").await.expect("get"), None);
    Records::new(&*store, &sealer)
        .put("alias", "x", &9u32)
        .await
        .expect("put");
    assert!(matches!(
        c.put("alias", "x", &8u32).await,
        Err(StoreError::Conflict {
            expected: 0,
            found: 1,
            ..
        })
    ));
}

#[tokio::test]
async fn a_write_of_an_unread_record_overwrites_and_deletes_keep_versions() {
    let store = MemoryStore::new();
    let sealer = sealer();
    for n in 0..3u32 {
        Records::new(&*store, &sealer)
            .put("tls", "cert", &n)
            .await
            .expect("blind put");
    }
    let records = Records::new(&*store, &sealer);
    records.delete("tls", "cert").await.expect("delete");
    records.delete("tls", "cert").await.expect("deleting nothing is fine");
    assert_eq!(store.raw("tls", "cert"), (4, None));
    // Re-created after the deletion: version 5, never a reused version.
    Records::new(&*store, &sealer)
        .put("tls", "cert", &7u32)
        .await
        .expect("put");
    assert_eq!(
        Records::new(&*store, &sealer)
            .get_versioned::<u32>("tls", "cert")
            .await
            .expect("get"),
        (5, Some(7))
    );
}

#[tokio::test]
async fn batches_are_atomic_and_listed_records_are_versioned() {
    let store = MemoryStore::new();
    let sealer = sealer();
    let plain = |n: u32| serde_cbor::to_vec(&n).expect("cbor");
    Records::new(&*store, &sealer)
        .put_batch_encoded("key", vec![("a".into(), plain(1)), ("b".into(), plain(2))])
        .await
        .expect("batch");
    let reader = Records::new(&*store, &sealer);
    let listed: Vec<(String, u32)> = reader.list("key", "", None, 10).await.expect("list");
    assert_eq!(listed, vec![("a".into(), 1), ("b".into(), 2)]);
    Records::new(&*store, &sealer)
        .put("key", "b", &5u32)
        .await
        .expect("put");
    // "b" changed since the listing: the whole batch is refused.
    let err = reader
        .put_batch_encoded("key", vec![("a".into(), plain(10)), ("b".into(), plain(20))])
        .await
        .expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { .. }));
    assert_eq!(
        Records::new(&*store, &sealer)
            .get::<u32>("key", "a")
            .await
            .expect("get"),
        Some(1)
    );
    // A listed record served under another version does not open.
    assert!(store.serve_under_next_version("key", "a"));
    let page = Records::new(&*store, &sealer)
        .list_each::<u32>("key", "", None, 10)
        .await
        .expect("page");
    assert!(page[0].1.is_err() && page[1].1.is_ok());
}

#[tokio::test]
async fn the_cache_serves_confirmed_entries_and_asks_again_after_the_ttl() {
    let store = MemoryStore::new();
    let sealer = sealer();
    let cache = RecordCache::with_ttl(Duration::from_millis(200));
    Records::cached(&*store, &sealer, &cache)
        .put("key", "k", &1u32)
        .await
        .expect("put");
    // Another node writes: this node's cache still answers the old version...
    Records::new(&*store, &sealer)
        .put("key", "k", &2u32)
        .await
        .expect("put");
    let cached = Records::cached(&*store, &sealer, &cache);
    assert_eq!(cached.get::<u32>("key", "k").await.expect("get"), Some(1));
    // ...and a write based on it conflicts instead of losing the other write.
    assert!(matches!(
        cached.put("key", "k", &3u32).await,
        Err(StoreError::Conflict { .. })
    ));
    // The conflict dropped the entry: the next read is fresh.
    assert_eq!(
        Records::cached(&*store, &sealer, &cache)
            .get::<u32>("key", "k")
            .await
            .expect("get"),
        Some(2)
    );
    // Past the TTL the store is asked again, whatever the cache holds.
    Records::new(&*store, &sealer)
        .put("key", "k", &4u32)
        .await
        .expect("put");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = Records::cached(&*store, &sealer, &cache)
            .get::<u32>("key", "k")
            .await
            .expect("get");
        if seen == Some(4) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cache never revalidated");
        tokio::task::yield_now().await;
    }
    // A hint drops an older entry at once.
    Records::new(&*store, &sealer)
        .put("key", "k", &5u32)
        .await
        .expect("put");
    cache.hint("key", "k", 5);
    assert_eq!(
        Records::cached(&*store, &sealer, &cache)
            .get::<u32>("key", "k")
            .await
            .expect("get"),
        Some(5)
    );
}

#[test]
fn an_entry_counts_as_confirmed_when_it_was_asked_for_not_when_the_answer_came() {
    let cache = RecordCache::with_ttl(Duration::from_millis(500));
    let now = std::time::Instant::now();
    // A read sent 600 ms ago whose answer arrives only now is already stale.
    cache.confirm("key", "k", 3, Some(vec![1]), now - Duration::from_millis(600));
    assert!(cache.fresh("key", "k").is_none());
    cache.confirm("key", "k", 3, Some(vec![1]), now);
    assert_eq!(cache.fresh("key", "k").map(|(v, _)| v), Some(3));
    // An older version arriving late never replaces a newer one.
    cache.confirm("key", "k", 2, None, now);
    assert_eq!(cache.fresh("key", "k").map(|(v, _)| v), Some(3));
    // A hint of a newer version drops it; one of an older version does not.
    cache.hint("key", "k", 3);
    assert!(cache.fresh("key", "k").is_some());
    cache.hint("key", "k", 4);
    assert!(cache.fresh("key", "k").is_none());
    // Namespaces that are not cached never are.
    cache.confirm("audit", "h", 1, Some(vec![1]), now);
    assert!(cache.fresh("audit", "h").is_none());
}

// ------------------------------------------------ the authenticated index

/// Two nodes on one store: one sealer, each its own index (its own memory).
fn nodes() -> (Arc<MemoryStore>, Sealer, Index, Index) {
    (MemoryStore::new(), sealer(), Index::new(), Index::new())
}

#[tokio::test]
async fn an_older_version_or_a_hidden_record_is_a_violation_not_data() {
    let (store, sealer, index, _) = nodes();
    let records = || Records::indexed(&*store, &sealer, &index);
    records().put("key", "t/k", &1u32).await.expect("put");
    let old = store.raw("key", "t/k");
    records().put("key", "t/k", &2u32).await.expect("put");
    // Served back at its own (older) version: authentic, but not current.
    store.restore("key", "t/k", old.0, old.1.clone());
    let err = records().get::<u32>("key", "t/k").await.expect_err("rollback");
    assert!(
        matches!(&err, StoreError::Freshness { kind: index::Violation::Rollback, record, expected, served }
            if record == "key/t/k" && expected == "version 2" && served == "version 1"),
        "{err}"
    );
    // Hidden: an omission, also for a deletion (it must not become a no-op).
    store.destroy("key", "t/k");
    let err = records().get::<u32>("key", "t/k").await.expect_err("omission");
    assert!(
        matches!(
            err,
            StoreError::Freshness {
                kind: index::Violation::Omission,
                ..
            }
        ),
        "{err}"
    );
    let err = records().delete("key", "t/k").await.expect_err("omission");
    assert!(
        matches!(
            err,
            StoreError::Freshness {
                kind: index::Violation::Omission,
                ..
            }
        ),
        "{err}"
    );
    let counts = index.violation_counts();
    assert_eq!((counts.rollback, counts.omission), (1, 2));
}

#[tokio::test]
async fn another_nodes_newer_root_is_accepted_and_an_older_one_refused() {
    let (store, sealer, a, b) = nodes();
    Records::indexed(&*store, &sealer, &a)
        .put("key", "t/k", &1u32)
        .await
        .expect("a writes");
    // b learns the scope, then a writes again: b sees the newer record
    // (its root is re-read when the record disagrees), never the older.
    assert_eq!(
        Records::indexed(&*store, &sealer, &b)
            .get::<u32>("key", "t/k")
            .await
            .expect("b reads"),
        Some(1)
    );
    let root = store.raw("index", "t/root");
    Records::indexed(&*store, &sealer, &a)
        .put("key", "t/k", &2u32)
        .await
        .expect("a writes again");
    assert_eq!(
        Records::indexed(&*store, &sealer, &b)
            .get::<u32>("key", "t/k")
            .await
            .expect("b reads"),
        Some(2)
    );
    assert_eq!(b.scope_epoch("t"), 2);
    // b writes on top of a's root (CAS on the root it verified).
    Records::indexed(&*store, &sealer, &b)
        .put("alias", "t/x", &9u32)
        .await
        .expect("b writes");
    // The host puts the older root back: both nodes refuse it.
    store.restore("index", "t/root", root.0, root.1);
    a.expire(None);
    let err = Records::indexed(&*store, &sealer, &a)
        .get::<u32>("key", "t/k")
        .await
        .expect_err("older root");
    assert!(
        matches!(&err, StoreError::Freshness { kind: index::Violation::Rollback, record, .. } if record == "index/t/root"),
        "{err}"
    );
}

#[tokio::test]
async fn a_listing_must_hold_every_record_the_index_holds() {
    let (store, sealer, index, _) = nodes();
    let records = || Records::indexed(&*store, &sealer, &index);
    for k in ["t/a", "t/b", "t/c"] {
        records().put("alias", k, &1u32).await.expect("put");
    }
    assert_eq!(
        records()
            .list::<u32>("alias", "t/", None, 10)
            .await
            .expect("lists")
            .len(),
        3
    );
    // A full page ends at its last key: what lies beyond is not missing.
    assert_eq!(
        records()
            .list::<u32>("alias", "t/", None, 2)
            .await
            .expect("lists")
            .len(),
        2
    );
    let hidden = store.raw("alias", "t/b");
    store.destroy("alias", "t/b");
    let err = records()
        .list::<u32>("alias", "t/", None, 10)
        .await
        .expect_err("omitted");
    assert!(
        matches!(
            err,
            StoreError::Freshness {
                kind: index::Violation::Omission,
                ..
            }
        ),
        "{err}"
    );
    store.restore("alias", "t/b", hidden.0, hidden.1);
    records().delete("alias", "t/b").await.expect("deleted for real");
    assert_eq!(
        records()
            .list::<u32>("alias", "t/", None, 10)
            .await
            .expect("lists")
            .len(),
        2
    );
}

/// A host store whose scope root moves after every read of it: another
/// node (`writer`) writes into the scope each time, as under a cluster's
/// load. A reader's root sandwich then never closes.
struct MovingRoot<'a> {
    inner: &'a MemoryStore,
    sealer: &'a Sealer,
    writer: &'a Index,
    moves: std::sync::atomic::AtomicU32,
}

impl StoreTransport for MovingRoot<'_> {
    fn call(&self, op: StoreOp) -> StoreFuture<'_> {
        Box::pin(async move {
            let moves =
                matches!(&op, StoreOp::GetVersioned { namespace, key } if namespace == "index" && key == "t/root");
            let answer = self.inner.call(op).await;
            if moves {
                let n = self.moves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Records::indexed(self.inner, self.sealer, self.writer)
                    .put("alias", &format!("t/x{n}"), &n)
                    .await?;
            }
            answer
        })
    }
}

/// Regression (CI, `cluster::a_node_killed_under_load…`): a read whose
/// scope root kept moving answered `Conflict` without marking the request
/// conflicted, so ListKeys under a three-node load failed instead of
/// running again on fresh reads.
#[tokio::test]
async fn a_read_that_never_sees_the_root_still_marks_the_request_conflicted() {
    let (store, sealer, a, b) = nodes();
    Records::indexed(&*store, &sealer, &a)
        .put("key", "t/k", &1u32)
        .await
        .expect("a writes");
    assert_eq!(
        Records::indexed(&*store, &sealer, &b)
            .get::<u32>("key", "t/k")
            .await
            .expect("b reads"),
        Some(1)
    );
    Records::indexed(&*store, &sealer, &a)
        .put("key", "t/k", &2u32)
        .await
        .expect("a writes again");
    let moving = MovingRoot {
        inner: &store,
        sealer: &sealer,
        writer: &a,
        moves: Default::default(),
    };
    let reader = Records::indexed(&moving, &sealer, &b);
    let err = reader
        .get::<u32>("key", "t/k")
        .await
        .expect_err("the root never held still");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        reader.conflicted_before_writing(),
        "a read conflict must let the request run again"
    );
}
