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
