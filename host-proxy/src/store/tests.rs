//! The store's behaviour, the same on both backends: every test runs on the
//! embedded store and, when `KEYWARD_TEST_POSTGRES_URL` names a server
//! (`.ci/postgres.sh` starts one; `.ci/run` always does), on PostgreSQL.
//! Each test uses namespaces of its own, so tests share one database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keyward_wire::{Expected, StoreOp, StoreResult, StoreWrite, VersionedEntry};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

use super::*;

/// The PostgreSQL server of the tests, if any. Under CI a missing server is
/// a failure, never a silent skip.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("KEYWARD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but KEYWARD_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL \
                 (.ci/postgres.sh) before the tests"
            );
            eprintln!(
                "!!!!!! SKIPPING the PostgreSQL half of this test: KEYWARD_TEST_POSTGRES_URL is not set \
                 (run `eval \"$(bash .ci/postgres.sh start)\"` first) !!!!!!"
            );
            None
        }
    }
}

/// A namespace no other test (or earlier run on the same server) uses.
fn fresh_namespace(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// The stores to run a test on: embedded (with its directory kept alive),
/// then PostgreSQL if configured.
async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Store::embedded(&dir.path().join("store"), None).expect("opens");
    let mut out = vec![("embedded", embedded, Some(dir))];
    if let Some(url) = postgres_url() {
        let pg = Store::open(&StoreLocation::Postgres(url), None)
            .await
            .expect("connects to PostgreSQL");
        out.push(("postgres", pg, None));
    }
    out
}

fn put(namespace: &str, key: &str, value: &[u8]) -> StoreOp {
    StoreOp::Put {
        namespace: namespace.into(),
        key: key.into(),
        value: value.to_vec(),
    }
}

fn cas(namespace: &str, key: &str, expected: Expected, value: &[u8]) -> StoreOp {
    StoreOp::CasPut {
        namespace: namespace.into(),
        key: key.into(),
        expected,
        value: value.to_vec(),
    }
}

fn get_versioned(namespace: &str, key: &str) -> StoreOp {
    StoreOp::GetVersioned {
        namespace: namespace.into(),
        key: key.into(),
    }
}

fn versioned(version: u64, value: Option<&[u8]>) -> StoreResult {
    StoreResult::Versioned {
        version,
        value: value.map(|v| ByteBuf::from(v.to_vec())),
    }
}

#[tokio::test]
async fn unversioned_calls_work_as_before() {
    for (name, store, _dir) in stores().await {
        let ns = fresh_namespace("key");
        for k in ["t/a", "t/b", "t/c", "u/a"] {
            assert_eq!(store.call(put(&ns, k, k.as_bytes())).await, StoreResult::Done, "{name}");
        }
        let list = store
            .call(StoreOp::List {
                namespace: ns.clone(),
                prefix: "t/".into(),
                start_after: Some("t/a".into()),
                limit: 1,
            })
            .await;
        let StoreResult::Entries(entries) = list else {
            panic!("{name}: entries expected, got {list:?}")
        };
        assert_eq!(
            entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["t/b"],
            "{name}"
        );
        let delete = |k: &str| StoreOp::Delete {
            namespace: ns.clone(),
            key: k.into(),
        };
        assert_eq!(store.call(delete("t/b")).await, StoreResult::Done, "{name}");
        // Deleting what is not there is not an error (as with sled).
        assert_eq!(store.call(delete("never")).await, StoreResult::Done, "{name}");
        let batch = StoreOp::PutBatch {
            namespace: ns.clone(),
            entries: vec![
                ("b/1".into(), ByteBuf::from(b"one".to_vec())),
                ("b/2".into(), ByteBuf::from(b"two".to_vec())),
                ("b/1".into(), ByteBuf::from(b"uno".to_vec())),
            ],
        };
        assert_eq!(store.call(batch).await, StoreResult::Done, "{name}");
        let get = |k: &str| StoreOp::Get {
            namespace: ns.clone(),
            key: k.into(),
        };
        assert_eq!(
            store.call(get("t/a")).await,
            StoreResult::Value(Some(ByteBuf::from(b"t/a".to_vec()))),
            "{name}"
        );
        assert_eq!(store.call(get("t/b")).await, StoreResult::Value(None), "{name}");
        assert_eq!(
            store.call(get("b/1")).await,
            StoreResult::Value(Some(ByteBuf::from(b"uno".to_vec()))),
            "{name}: a batch's last value for a key wins"
        );
        assert!(
            matches!(
                store
                    .call(StoreOp::Get {
                        namespace: "../x".into(),
                        key: "k".into()
                    })
                    .await,
                StoreResult::Error(_)
            ),
            "{name}"
        );
        assert!(
            matches!(store.call(get("nul\0")).await, StoreResult::Error(_)),
            "{name}"
        );
    }
}

#[tokio::test]
async fn embedded_store_is_durable_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::embedded(dir.path(), None).expect("opens");
        assert_eq!(store.call(put("key", "a", b"v1")).await, StoreResult::Done);
        assert_eq!(
            store.call(cas("key", "a", Expected::Version(1), b"v2")).await,
            StoreResult::Committed(vec![2])
        );
    }
    let store = Store::embedded(dir.path(), None).expect("reopens");
    assert_eq!(store.call(get_versioned("key", "a")).await, versioned(2, Some(b"v2")));
}

#[tokio::test]
async fn versions_count_every_write_and_survive_deletion() {
    for (name, store, _dir) in stores().await {
        let ns = fresh_namespace("v");
        assert_eq!(store.call(get_versioned(&ns, "r")).await, versioned(0, None), "{name}");
        assert_eq!(
            store.call(cas(&ns, "r", Expected::Absent, b"a")).await,
            StoreResult::Committed(vec![1]),
            "{name}"
        );
        assert_eq!(
            store.call(cas(&ns, "r", Expected::Absent, b"b")).await,
            StoreResult::Conflict {
                index: 0,
                version: 1,
                exists: true
            },
            "{name}: must-not-exist on an existing record"
        );
        assert_eq!(
            store.call(cas(&ns, "r", Expected::Version(0), b"b")).await,
            StoreResult::Conflict {
                index: 0,
                version: 1,
                exists: true
            },
            "{name}: a stale version"
        );
        assert_eq!(
            store.call(cas(&ns, "r", Expected::Version(1), b"b")).await,
            StoreResult::Committed(vec![2]),
            "{name}"
        );
        // An unversioned put also counts.
        assert_eq!(store.call(put(&ns, "r", b"c")).await, StoreResult::Done, "{name}");
        assert_eq!(
            store.call(get_versioned(&ns, "r")).await,
            versioned(3, Some(b"c")),
            "{name}"
        );
        let delete = |expected| StoreOp::Batch {
            writes: vec![StoreWrite::Delete {
                namespace: ns.clone(),
                key: "r".into(),
                expected,
            }],
        };
        assert!(
            matches!(store.call(delete(2)).await, StoreResult::Conflict { .. }),
            "{name}"
        );
        assert_eq!(store.call(delete(3)).await, StoreResult::Committed(vec![4]), "{name}");
        assert!(
            matches!(store.call(delete(4)).await, StoreResult::Conflict { exists: false, .. }),
            "{name}: deleting a deleted record"
        );
        // The deleted record keeps its version: a re-creation continues it.
        assert_eq!(store.call(get_versioned(&ns, "r")).await, versioned(4, None), "{name}");
        assert_eq!(
            store
                .call(StoreOp::Get {
                    namespace: ns.clone(),
                    key: "r".into()
                })
                .await,
            StoreResult::Value(None),
            "{name}"
        );
        assert_eq!(
            store.call(cas(&ns, "r", Expected::Absent, b"d")).await,
            StoreResult::Committed(vec![5]),
            "{name}"
        );
        assert_eq!(
            store.call(get_versioned(&ns, "r")).await,
            versioned(5, Some(b"d")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_across_namespaces() {
    for (name, store, _dir) in stores().await {
        let (a, b) = (fresh_namespace("a"), fresh_namespace("b"));
        assert_eq!(store.call(put(&b, "y", b"old")).await, StoreResult::Done, "{name}");
        let batch = |expected_y| StoreOp::Batch {
            writes: vec![
                StoreWrite::Put {
                    namespace: a.clone(),
                    key: "x".into(),
                    expected: Expected::Absent,
                    value: b"new-x".to_vec(),
                },
                StoreWrite::Put {
                    namespace: b.clone(),
                    key: "y".into(),
                    expected: Expected::Version(expected_y),
                    value: b"new-y".to_vec(),
                },
            ],
        };
        assert_eq!(
            store.call(batch(7)).await,
            StoreResult::Conflict {
                index: 1,
                version: 1,
                exists: true
            },
            "{name}"
        );
        assert_eq!(
            store.call(get_versioned(&a, "x")).await,
            versioned(0, None),
            "{name}: nothing written"
        );
        assert_eq!(
            store.call(get_versioned(&b, "y")).await,
            versioned(1, Some(b"old")),
            "{name}"
        );
        assert_eq!(store.call(batch(1)).await, StoreResult::Committed(vec![1, 2]), "{name}");
        assert_eq!(
            store.call(get_versioned(&a, "x")).await,
            versioned(1, Some(b"new-x")),
            "{name}"
        );
        assert_eq!(
            store.call(get_versioned(&b, "y")).await,
            versioned(2, Some(b"new-y")),
            "{name}"
        );
        // One identity twice in a batch is refused.
        let twice = StoreOp::Batch {
            writes: vec![
                StoreWrite::Delete {
                    namespace: a.clone(),
                    key: "x".into(),
                    expected: 1,
                },
                StoreWrite::Put {
                    namespace: a.clone(),
                    key: "x".into(),
                    expected: Expected::Version(1),
                    value: vec![],
                },
            ],
        };
        assert!(matches!(store.call(twice).await, StoreResult::Error(_)), "{name}");
        assert_eq!(
            store.call(get_versioned(&a, "x")).await,
            versioned(1, Some(b"new-x")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn versioned_listing_pages_in_key_order_without_deleted_records() {
    for (name, store, _dir) in stores().await {
        let ns = fresh_namespace("l");
        for k in ["p/e", "p/a", "p/c", "p/b", "p/d", "q/a", "p"] {
            assert_eq!(store.call(put(&ns, k, k.as_bytes())).await, StoreResult::Done, "{name}");
        }
        assert_eq!(store.call(put(&ns, "p/c", b"again")).await, StoreResult::Done, "{name}");
        let deleted = StoreOp::Delete {
            namespace: ns.clone(),
            key: "p/d".into(),
        };
        assert_eq!(store.call(deleted).await, StoreResult::Done, "{name}");
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .call(StoreOp::ListVersioned {
                    namespace: ns.clone(),
                    prefix: "p/".into(),
                    start_after: after.clone(),
                    limit: 2,
                })
                .await;
            let StoreResult::Records { entries, next } = page else {
                panic!("{name}: records expected, got {page:?}")
            };
            pages.push(entries);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
            assert!(pages.len() < 10, "{name}: pagination does not end");
        }
        let entry = |key: &str, version, value: &[u8]| VersionedEntry {
            key: key.into(),
            version,
            value: ByteBuf::from(value.to_vec()),
        };
        assert_eq!(
            pages,
            vec![
                vec![entry("p/a", 1, b"p/a"), entry("p/b", 1, b"p/b")],
                vec![entry("p/c", 2, b"again"), entry("p/e", 1, b"p/e")],
            ],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_sled_store_is_refused_with_a_way_to_start_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    {
        let db = sled::open(&store_dir).expect("sled opens");
        db.insert(b"k", b"v".to_vec()).expect("insert");
        db.flush().expect("flush");
    }
    let error = match Store::embedded(&store_dir, None) {
        Ok(_) => panic!("a sled store was opened"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("sled"), "{error}");
    assert!(error.contains("pre-1.0"), "{error}");
    assert!(error.contains(&format!("mv {}", store_dir.display())), "{error}");
    assert!(
        !Embedded::file(&store_dir).exists(),
        "no SQLite database is created beside the sled files"
    );
    // An embedded store of ours is not mistaken for sled.
    let ours = dir.path().join("ours");
    drop(Store::embedded(&ours, None).expect("opens"));
    assert!(!legacy::is_sled(&ours));
    drop(Store::embedded(&ours, None).expect("reopens"));
}

#[tokio::test]
async fn a_store_of_the_earlier_record_format_is_refused_with_a_way_to_start_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Embedded(dir.path().to_path_buf());
    {
        let store = Store::open(&location, None).await.expect("an empty store opens");
        store
            .refuse_old_records(&location)
            .await
            .expect("an empty store is fine");
        // Format 2 (versions sealed in) is fine.
        assert_eq!(store.call(put("tenant", "t", &[2, 9, 9])).await, StoreResult::Done);
    }
    let store = Store::open(&location, None).await.expect("reopens");
    store.refuse_old_records(&location).await.expect("format 2 is fine");
    drop(store);
    {
        let store = Store::embedded(dir.path(), None).expect("opens");
        assert_eq!(store.call(put("cred", "AKIA", &[1, 9, 9])).await, StoreResult::Done);
    }
    let store = Store::open(&location, None).await.expect("reopens");
    let error = match store.refuse_old_records(&location).await {
        Ok(()) => panic!("a store of the earlier record format was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("record format 1") && error.contains("pre-1.0"),
        "{error}"
    );
    assert!(
        error.contains("store.v1-old") && error.contains("DROP TABLE"),
        "{error}"
    );
}

#[tokio::test]
async fn every_committed_write_is_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::embedded(dir.path(), None).expect("opens");
    let mut hints = store.invalidations();
    assert_eq!(store.call(put("key", "k/1", b"v")).await, StoreResult::Done);
    assert_eq!(
        hints.recv().await.expect("a hint"),
        Invalidation::Record {
            namespace: "key".into(),
            key: "k/1".into(),
            version: 1
        }
    );
    assert_eq!(Invalidation::parse(&Invalidation::payload("key", "a/b/c", 9)), {
        Some(Invalidation::Record {
            namespace: "key".into(),
            key: "a/b/c".into(),
            version: 9,
        })
    });
    assert_eq!(Invalidation::parse("../x/1"), None);
}

/// Two nodes on one PostgreSQL: a write on one is announced to the other
/// (through `LISTEN keyward_invalidate`), and a plain `LISTEN` session sees
/// the `NOTIFY` payload `<namespace>/<key>/<version>`.
#[tokio::test]
async fn postgres_writes_notify_every_listener() {
    let Some(url) = postgres_url() else { return };
    let location = StoreLocation::Postgres(url.clone());
    let node_a = Store::open(&location, None).await.expect("node A connects");
    let node_b = Store::open(&location, None).await.expect("node B connects");
    let mut hints = node_b.invalidations();
    // The listener announces `All` once it is listening: from then on no hint is missed.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), hints.recv())
        .await
        .expect("node B's listener starts")
        .expect("hint");
    assert_eq!(first, Invalidation::All);

    let (client, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    let (tx, mut raw) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    client.batch_execute("LISTEN keyward_invalidate").await.expect("LISTEN");

    let ns = fresh_namespace("n");
    assert_eq!(
        node_a.call(cas(&ns, "k/1", Expected::Absent, b"v")).await,
        StoreResult::Committed(vec![1])
    );
    let expected = Invalidation::Record {
        namespace: ns.clone(),
        key: "k/1".into(),
        version: 1,
    };
    let wait = std::time::Duration::from_secs(10);
    loop {
        let hint = tokio::time::timeout(wait, hints.recv())
            .await
            .expect("node B hears")
            .expect("hint");
        if hint == expected {
            break;
        }
    }
    loop {
        let (channel, payload) = tokio::time::timeout(wait, raw.recv())
            .await
            .expect("LISTEN hears")
            .expect("note");
        assert_eq!(channel, "keyward_invalidate");
        if payload == format!("{ns}/k/1/1") {
            break;
        }
    }
    driver.abort();
}

/// Many tasks increment one counter by read-then-CAS, retrying on conflict,
/// all at once: no increment is lost, and each success got its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_loses_no_update() {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    for (name, store, _dir) in stores().await {
        let ns = Arc::new(fresh_namespace("c"));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (store, ns) = (store.clone(), Arc::clone(&ns));
            tasks.push(tokio::spawn(async move {
                let mut versions = Vec::new();
                for _ in 0..EACH {
                    loop {
                        let (version, count) = read_counter(&store, &ns).await;
                        let next = (count + 1).to_be_bytes();
                        match store.call(cas(&ns, "counter", Expected::Version(version), &next)).await {
                            StoreResult::Committed(v) => {
                                versions.extend(v);
                                break;
                            }
                            StoreResult::Conflict { .. } => continue,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                versions
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=TASKS * EACH).collect::<Vec<_>>(),
            "{name}: one version per success"
        );
        assert_eq!(read_counter(&store, &ns).await, (TASKS * EACH, TASKS * EACH), "{name}");
    }
}

async fn read_counter(store: &Store, ns: &str) -> (u64, u64) {
    match store.call(get_versioned(ns, "counter")).await {
        StoreResult::Versioned { version, value: None } => (version, 0),
        StoreResult::Versioned {
            version,
            value: Some(v),
        } => (version, u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes"))),
        other => panic!("unexpected {other:?}"),
    }
}

/// One step of an actor in [`cas_interleavings_lose_no_update`].
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Read the counter (version and value).
    Read(usize),
    /// Write back what it read plus one, expecting the version it read.
    Cas(usize),
    /// Delete it, expecting the version it read.
    Delete(usize),
}

fn steps(actors: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (0..actors).prop_map(Step::Read),
            4 => (0..actors).prop_map(Step::Cas),
            1 => (0..actors).prop_map(Step::Delete),
        ],
        1..60,
    )
}

/// Runs `schedule` on `store` and checks it against a model: a CAS succeeds
/// exactly when nobody wrote since the actor's read; every success advances
/// the version by one; the final value is the model's (no lost update).
async fn run_schedule(store: &Store, schedule: &[Step]) -> Result<(), TestCaseError> {
    let ns = fresh_namespace("p");
    let mut seen: Vec<Option<(u64, Option<u64>)>> = vec![None; 4];
    let (mut version, mut value): (u64, Option<u64>) = (0, None);
    for step in schedule {
        match *step {
            Step::Read(a) => {
                let got = match store.call(get_versioned(&ns, "counter")).await {
                    StoreResult::Versioned { version, value } => (
                        version,
                        value.map(|v| u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes"))),
                    ),
                    other => return Err(TestCaseError::fail(format!("read: {other:?}"))),
                };
                prop_assert_eq!(got, (version, value));
                seen[a] = Some(got);
            }
            Step::Cas(a) => {
                let Some((v, n)) = seen[a] else { continue };
                let next = n.unwrap_or(0) + 1;
                let result = store
                    .call(cas(&ns, "counter", Expected::Version(v), &next.to_be_bytes()))
                    .await;
                if v == version {
                    prop_assert_eq!(result, StoreResult::Committed(vec![version + 1]));
                    version += 1;
                    value = Some(next);
                } else {
                    prop_assert_eq!(
                        result,
                        StoreResult::Conflict {
                            index: 0,
                            version,
                            exists: value.is_some()
                        }
                    );
                }
            }
            Step::Delete(a) => {
                let Some((v, _)) = seen[a] else { continue };
                let result = store
                    .call(StoreOp::Batch {
                        writes: vec![StoreWrite::Delete {
                            namespace: ns.clone(),
                            key: "counter".into(),
                            expected: v,
                        }],
                    })
                    .await;
                if v == version && value.is_some() {
                    prop_assert_eq!(result, StoreResult::Committed(vec![version + 1]));
                    version += 1;
                    value = None;
                } else {
                    let conflict = matches!(result, StoreResult::Conflict { .. });
                    prop_assert!(conflict, "delete: {:?}", result);
                }
            }
        }
    }
    let (v, n) = match store.call(get_versioned(&ns, "counter")).await {
        StoreResult::Versioned { version, value } => (
            version,
            value.map(|v| u64::from_be_bytes(v.as_slice().try_into().expect("8 bytes"))),
        ),
        other => return Err(TestCaseError::fail(format!("read: {other:?}"))),
    };
    prop_assert_eq!((v, n), (version, value));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Interleavings of four actors' read-modify-CAS (and delete) steps on
    /// one record, against a model of the record.
    #[test]
    fn cas_interleavings_lose_no_update(schedule in steps(4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            for (_, store, _dir) in stores().await {
                run_schedule(&store, &schedule).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
