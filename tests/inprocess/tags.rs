//! Tags: TagResource / UntagResource / ListResourceTags, CreateKey with
//! Tags, the reserved `aws:` prefix and the 50-tag limit.

use std::collections::BTreeMap;

use aws_sdk_kms::types::Tag;

use crate::support::{Service, all_pages, create_key, expect_error, key_arn, must, random_alnum};

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().tag_key(key).tag_value(value).build().expect("tag")
}

/// Every tag of `key`, following NextMarker with pages of `limit`; also
/// returns the number of pages.
async fn all_tags(client: &aws_sdk_kms::Client, key: &str, limit: Option<i32>) -> (BTreeMap<String, String>, usize) {
    let (tags, pages) = all_pages(
        "ListResourceTags",
        limit,
        |marker| {
            client
                .list_resource_tags()
                .key_id(key)
                .set_limit(limit)
                .set_marker(marker)
                .send()
        },
        |r| (r.tags(), r.truncated(), r.next_marker()),
    )
    .await;
    let out: BTreeMap<String, String> = tags
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect();
    assert_eq!(tags.len(), out.len(), "ListResourceTags repeated a tag");
    (out, pages)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_untag_and_list() {
    let kw = Service::start().await;
    let client = kw.client();

    let team = random_alnum(8);
    let created = must(
        "CreateKey with Tags",
        client
            .create_key()
            .tags(tag("env", "dev"))
            .tags(tag("team", &team))
            .send()
            .await,
    );
    let key = created.key_metadata().expect("KeyMetadata").key_id().to_string();
    assert_eq!(
        all_tags(&client, &key, None).await.0,
        map(&[("env", "dev"), ("team", &team)]),
        "tags given to CreateKey"
    );
    let untagged = create_key(&client, "no tags").await;
    assert!(
        all_tags(&client, &untagged, None).await.0.is_empty(),
        "a new key has tags"
    );

    // Add one, overwrite one (by ARN).
    must(
        "TagResource",
        client
            .tag_resource()
            .key_id(key_arn(&key))
            .tags(tag("env", "prod"))
            .tags(tag("cost-center", ""))
            .send()
            .await,
    );
    assert_eq!(
        all_tags(&client, &key, None).await.0,
        map(&[("env", "prod"), ("team", &team), ("cost-center", "")]),
        "after TagResource"
    );

    // Untag one present and one absent key.
    must(
        "UntagResource",
        client
            .untag_resource()
            .key_id(&key)
            .tag_keys("team")
            .tag_keys("never-set")
            .send()
            .await,
    );
    assert_eq!(
        all_tags(&client, &key, None).await.0,
        map(&[("env", "prod"), ("cost-center", "")]),
        "after UntagResource"
    );
    // The other key is unaffected.
    assert!(all_tags(&client, &untagged, None).await.0.is_empty());

    // The reserved prefix.
    for reserved in ["aws:owner", "aws:"] {
        expect_error(
            &format!("TagResource {reserved}"),
            client.tag_resource().key_id(&key).tags(tag(reserved, "x")).send().await,
            400,
            "TagException",
        );
        expect_error(
            &format!("CreateKey with tag {reserved}"),
            client.create_key().tags(tag(reserved, "x")).send().await,
            400,
            "TagException",
        );
    }
    // A batch with one reserved key changes nothing.
    expect_error(
        "TagResource with one reserved key among others",
        client
            .tag_resource()
            .key_id(&key)
            .tags(tag("fine", "1"))
            .tags(tag("aws:bad", "2"))
            .send()
            .await,
        400,
        "TagException",
    );
    assert_eq!(
        all_tags(&client, &key, None).await.0,
        map(&[("env", "prod"), ("cost-center", "")]),
        "a rejected TagResource changed the tags"
    );
    let keys = must("ListKeys", client.list_keys().send().await);
    assert_eq!(keys.keys().len(), 2, "a rejected CreateKey created a key");

    let unknown = uuid::Uuid::new_v4().to_string();
    expect_error(
        "TagResource unknown key",
        client.tag_resource().key_id(&unknown).tags(tag("a", "b")).send().await,
        400,
        "NotFoundException",
    );
    expect_error(
        "UntagResource unknown key",
        client.untag_resource().key_id(&unknown).tag_keys("a").send().await,
        400,
        "NotFoundException",
    );
    expect_error(
        "ListResourceTags unknown key",
        client.list_resource_tags().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_limit_and_pagination() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "many tags").await;

    // 50 tags in one call is the limit, and fine.
    let mut expected = BTreeMap::new();
    let mut request = client.tag_resource().key_id(&key);
    for i in 0..50 {
        let (k, v) = (format!("k{i:02}"), random_alnum(6));
        request = request.tags(tag(&k, &v));
        expected.insert(k, v);
    }
    must("TagResource with 50 tags", request.send().await);

    for limit in [1, 7, 50] {
        let (tags, pages) = all_tags(&client, &key, Some(limit)).await;
        assert_eq!(tags, expected, "ListResourceTags Limit {limit}");
        assert_eq!(pages, 50usize.div_ceil(limit as usize), "Limit {limit}: pages");
    }
    let (tags, _) = all_tags(&client, &key, None).await;
    assert_eq!(tags, expected, "ListResourceTags without Limit");
    for limit in [0, 51] {
        expect_error(
            &format!("ListResourceTags Limit {limit}"),
            client.list_resource_tags().key_id(&key).limit(limit).send().await,
            400,
            "ValidationException",
        );
    }

    // A 51st tag is over the limit; overwriting an existing one is not.
    expect_error(
        "TagResource: a 51st tag",
        client.tag_resource().key_id(&key).tags(tag("k50", "x")).send().await,
        400,
        "LimitExceededException",
    );
    must(
        "TagResource overwriting at the limit",
        client.tag_resource().key_id(&key).tags(tag("k00", "new")).send().await,
    );
    expected.insert("k00".into(), "new".into());
    assert_eq!(all_tags(&client, &key, None).await.0, expected);
    // After removing one there is room again.
    must(
        "UntagResource",
        client.untag_resource().key_id(&key).tag_keys("k49").send().await,
    );
    must(
        "TagResource after untagging",
        client.tag_resource().key_id(&key).tags(tag("k50", "x")).send().await,
    );

    // 51 at once, on a fresh key and through CreateKey.
    let fresh = create_key(&client, "fresh").await;
    let mut request = client.tag_resource().key_id(&fresh);
    let mut create = client.create_key();
    for i in 0..51 {
        request = request.tags(tag(&format!("t{i}"), "v"));
        create = create.tags(tag(&format!("t{i}"), "v"));
    }
    expect_error(
        "TagResource with 51 tags",
        request.send().await,
        400,
        "LimitExceededException",
    );
    assert!(
        all_tags(&client, &fresh, None).await.0.is_empty(),
        "a rejected TagResource added tags"
    );
    expect_error(
        "CreateKey with 51 tags",
        create.send().await,
        400,
        "LimitExceededException",
    );
}
