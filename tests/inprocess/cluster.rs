//! Two enclaves on one store (two nodes of a cluster, in process): racing
//! writers never lose each other's updates (compare-and-swap on record
//! versions, conflicts re-run inside the enclave), and a record the store
//! serves under another version than the one it was sealed for is refused.

use aws_sdk_kms::types::Tag;

use crate::support::{Service, create_key, decrypt, encrypt, must};

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().tag_key(key).tag_value(value).build().expect("tag")
}

async fn tags_of(client: &aws_sdk_kms::Client, key: &str) -> Vec<(String, String)> {
    let out = must("ListResourceTags", client.list_resource_tags().key_id(key).send().await);
    out.tags()
        .iter()
        .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
        .collect()
}

async fn alias_target(client: &aws_sdk_kms::Client, alias: &str) -> String {
    let out = must("DescribeKey", client.describe_key().key_id(alias).send().await);
    out.key_metadata().expect("metadata").key_id().to_owned()
}

async fn rotations(client: &aws_sdk_kms::Client, key: &str) -> usize {
    let out = must("ListKeyRotations", client.list_key_rotations().key_id(key).send().await);
    out.rotations().len()
}

/// For many interleavings (one per seed): node 1 and node 2 tag the same key
/// with different tags, rotate it, and point the same alias at different
/// keys, all at once. Every call succeeds (conflicts are re-run inside the
/// enclave), and the record ends with both tags, both rotations, and the
/// alias on one of the two targets: no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_two_nodes_lose_no_update() {
    let one = Service::start().await;
    let c1 = one.client();
    for seed in 1..=24u64 {
        let two = one.peer(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).await;
        let c2 = two.client();
        let key = create_key(&c1, "raced").await;
        let (a, b) = (create_key(&c1, "a").await, create_key(&c2, "b").await);
        let alias = format!("alias/race-{seed}");
        must(
            "CreateAlias",
            c1.create_alias().alias_name(&alias).target_key_id(&key).send().await,
        );
        let before = encrypt(&c2, &key, b"before the race", None).await;
        let (t1, t2, r1, r2, u1, u2) = tokio::join!(
            c1.tag_resource().key_id(&key).tags(tag("one", "1")).send(),
            c2.tag_resource().key_id(&key).tags(tag("two", "2")).send(),
            c1.rotate_key_on_demand().key_id(&key).send(),
            c2.rotate_key_on_demand().key_id(&key).send(),
            c1.update_alias().alias_name(&alias).target_key_id(&a).send(),
            c2.update_alias().alias_name(&alias).target_key_id(&b).send(),
        );
        must("TagResource on node 1", t1);
        must("TagResource on node 2", t2);
        must("RotateKeyOnDemand on node 1", r1);
        must("RotateKeyOnDemand on node 2", r2);
        must("UpdateAlias on node 1", u1);
        must("UpdateAlias on node 2", u2);
        // The store holds one complete record: a third node, whose cache is
        // empty, reads it.
        let three = one.peer(seed).await.client();
        let tags = tags_of(&three, &key).await;
        let both = vec![("one".to_owned(), "1".to_owned()), ("two".to_owned(), "2".to_owned())];
        assert_eq!(tags, both, "seed {seed}: a tag update was lost");
        assert_eq!(rotations(&three, &key).await, 2, "seed {seed}: a rotation was lost");
        let target = alias_target(&three, &alias).await;
        assert!(target == a || target == b, "seed {seed}: alias on {target}");
        assert_eq!(decrypt(&three, None, &before, None).await, b"before the race");
        // The racing nodes converge on it within their cache bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for client in [&c1, &c2] {
            while tags_of(client, &key).await != both || alias_target(client, &alias).await != target {
                assert!(
                    std::time::Instant::now() < deadline,
                    "seed {seed}: a node never saw the final record"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The store serves a key record's bytes under the next version (as a host
/// replaying version n as n+1 would): the enclave refuses it with a clear
/// KMSInternalException and releases nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_served_under_another_version_is_refused() {
    let service = Service::start().await;
    let client = service.client();
    let key = create_key(&client, "bound").await;
    let ciphertext = encrypt(&client, &key, b"secret", None).await;
    let record = format!("{}/{key}", crate::support::ACCOUNT);
    assert!(service.store().serve_under_next_version("key", &record));
    // A node whose cache has not seen the record (caches are re-validated
    // within a second; a fresh node asks the store at once).
    let fresh = service.peer(7).await.client();
    let err = fresh
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext))
        .send()
        .await
        .expect_err("version-shifted record refused");
    let service_err = err.as_service_error().expect("a service error");
    assert_eq!(service_err.meta().code(), Some("KMSInternalException"));
    let message = service_err.meta().message().unwrap_or_default();
    assert!(
        message.contains("does not authenticate") && message.contains("served as version"),
        "{message}"
    );
    assert!(message.contains("Nothing was released"), "{message}");
}

/// A record of the previous format (before versions were sealed in) is
/// refused with how to start fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_previous_format_is_refused_with_how_to_start_fresh() {
    let service = Service::start().await;
    let client = service.client();
    let key = create_key(&client, "old").await;
    let record = format!("{}/{key}", crate::support::ACCOUNT);
    let (_, bytes) = service.store().raw("key", &record);
    let mut bytes = bytes.expect("stored");
    bytes[0] = 1;
    service.store().replace_bytes("key", &record, bytes);
    let fresh = service.peer(3).await.client();
    let err = fresh.describe_key().key_id(&key).send().await.expect_err("refused");
    let service_err = err.as_service_error().expect("a service error");
    assert_eq!(service_err.meta().code(), Some("KMSInternalException"));
    let message = service_err.meta().message().unwrap_or_default();
    assert!(
        message.contains("does not migrate") && message.contains("to start fresh"),
        "{message}"
    );
}
