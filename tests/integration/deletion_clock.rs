//! Key destruction once the deletion window has passed, with time moved by
//! `keyward dev --mock-clock-offset` across restarts on one data dir; and the
//! offset itself (signatures are checked against the shifted clock).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState, Tag};

use crate::harness::{
    ACCOUNT, DAY, Keyward, Sandbox, assert_near, create_key, decrypt, encrypt, epoch_secs, expect_error, list_all_keys,
    must, random_alnum, random_bytes,
};

const NOT_FOUND: &str = "NotFoundException";

/// Record keys of namespace `key` in the (stopped) service's embedded store.
async fn stored_key_records(sb: &Sandbox) -> Vec<String> {
    let store = keyward_proxy::Store::embedded(&sb.store_dir(), None)
        .unwrap_or_else(|e| panic!("open the store at {}: {e}", sb.store_dir().display()));
    let mut keys = Vec::new();
    loop {
        let op = keyward_wire::StoreOp::List {
            namespace: "key".into(),
            prefix: String::new(),
            start_after: keys.last().cloned(),
            limit: 1024,
        };
        match store.call(op).await {
            keyward_wire::StoreResult::Entries(page) if page.is_empty() => return keys,
            keyward_wire::StoreResult::Entries(page) => keys.extend(page.into_iter().map(|(k, _)| k)),
            other => panic!("list namespace key: {other:?}"),
        }
    }
}

async fn alias_names(client: &aws_sdk_kms::Client) -> Vec<(String, Option<String>)> {
    let out = must("ListAliases", client.list_aliases().limit(100).send().await);
    out.aliases()
        .iter()
        .map(|a| {
            (
                a.alias_name().unwrap_or_default().to_string(),
                a.target_key_id().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_is_destroyed_after_its_window() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let client = kw.client();

    // `doomed` is used again after the window, `unseen` only listed; `control`
    // is never scheduled.
    let doomed = create_key(&client, "doomed").await;
    let unseen = create_key(&client, "unseen").await;
    let control = create_key(&client, "control").await;
    let plaintext = random_bytes(32);
    let doomed_ct = encrypt(&client, &doomed, &plaintext, None).await;
    let control_ct = encrypt(&client, &control, &plaintext, None).await;
    let doomed_alias = format!("alias/doomed-{}", random_alnum(8));
    let unseen_alias = format!("alias/unseen-{}", random_alnum(8));
    let control_alias = format!("alias/control-{}", random_alnum(8));
    for (alias, key) in [
        (&doomed_alias, &doomed),
        (&unseen_alias, &unseen),
        (&control_alias, &control),
    ] {
        must(
            "CreateAlias",
            client.create_alias().alias_name(alias).target_key_id(key).send().await,
        );
    }
    must(
        "TagResource control",
        client
            .tag_resource()
            .key_id(&control)
            .tags(Tag::builder().tag_key("keep").tag_value("yes").build().expect("tag"))
            .send()
            .await,
    );
    for key in [&doomed, &unseen] {
        let out = must(
            "ScheduleKeyDeletion 7 days",
            client
                .schedule_key_deletion()
                .key_id(key)
                .pending_window_in_days(7)
                .send()
                .await,
        );
        assert_eq!(out.key_state(), Some(&KeyState::PendingDeletion));
        assert_near("DeletionDate", out.deletion_date(), epoch_secs(kw.now()) + 7 * DAY, 600);
    }
    kw.stop();
    drop(kw);

    // Both records are in the store before the window passes (so their
    // absence below means something).
    let records = stored_key_records(&sb).await;
    for key in [&doomed, &unseen, &control] {
        let record = format!("{ACCOUNT}/{key}");
        assert!(
            records.contains(&record),
            "record {record} not in ns:key before deletion; records: {records:?}"
        );
    }

    // Eight days later.
    let mut kw = sb.start_with_clock_offset(8 * DAY).await;
    let client = kw.client();
    let r = client
        .decrypt()
        .ciphertext_blob(Blob::new(doomed_ct.clone()))
        .send()
        .await;
    expect_error("Decrypt of a destroyed key's ciphertext", r, 400, NOT_FOUND);
    let r = client
        .decrypt()
        .key_id(&doomed)
        .ciphertext_blob(Blob::new(doomed_ct.clone()))
        .send()
        .await;
    expect_error("Decrypt (KeyId) of a destroyed key's ciphertext", r, 400, NOT_FOUND);
    for id in [doomed.clone(), Keyward::key_arn(&doomed), doomed_alias.clone()] {
        let r = client.describe_key().key_id(&id).send().await;
        expect_error(&format!("DescribeKey {id} of a destroyed key"), r, 400, NOT_FOUND);
    }
    let r = client
        .encrypt()
        .key_id(&doomed)
        .plaintext(Blob::new(plaintext.clone()))
        .send()
        .await;
    expect_error("Encrypt under a destroyed key", r, 400, NOT_FOUND);
    let r = client.cancel_key_deletion().key_id(&doomed).send().await;
    expect_error("CancelKeyDeletion of a destroyed key", r, 400, NOT_FOUND);

    let listed = list_all_keys(&client, 1).await;
    assert_eq!(listed, vec![control.clone()], "ListKeys eight days later");
    let aliases = alias_names(&client).await;
    assert_eq!(
        aliases,
        vec![(control_alias.clone(), Some(control.clone()))],
        "ListAliases eight days later: the destroyed keys' aliases must be gone"
    );

    // The control key is intact, tags and alias included.
    assert_eq!(decrypt(&client, None, &control_ct, None).await, plaintext);
    assert_eq!(
        decrypt(&client, Some(&control_alias), &control_ct, None).await,
        plaintext
    );
    let tags = must(
        "ListResourceTags control",
        client.list_resource_tags().key_id(&control).send().await,
    );
    assert_eq!(tags.tags().len(), 1, "control key's tags: {:?}", tags.tags());
    kw.stop();
    drop(kw);

    let records = stored_key_records(&sb).await;
    let control_record = format!("{ACCOUNT}/{control}");
    assert!(
        records.contains(&control_record),
        "control record {control_record} is missing from ns:key; records: {records:?}"
    );
    let doomed_record = format!("{ACCOUNT}/{doomed}");
    assert!(
        !records.contains(&doomed_record),
        "the destroyed key's sealed record {doomed_record} is still in ns:key"
    );
    let unseen_record = format!("{ACCOUNT}/{unseen}");
    assert!(
        !records.contains(&unseen_record),
        "the destroyed (only listed) key's sealed record {unseen_record} is still in ns:key"
    );

    // Back to the real time: destroyed stays destroyed.
    let kw = sb.start().await;
    let client = kw.client();
    for key in [&doomed, &unseen] {
        let r = client.describe_key().key_id(key).send().await;
        expect_error("DescribeKey after going back in time", r, 400, NOT_FOUND);
    }
    let r = client.decrypt().ciphertext_blob(Blob::new(doomed_ct)).send().await;
    expect_error("Decrypt after going back in time", r, 400, NOT_FOUND);
    assert_eq!(list_all_keys(&client, 100).await, vec![control.clone()]);
    assert_eq!(decrypt(&client, None, &control_ct, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_survives_until_its_window_passes_and_can_be_cancelled() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let client = kw.client();
    let key = create_key(&client, "pending").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&client, &key, &plaintext, None).await;
    let alias = format!("alias/pending-{}", random_alnum(8));
    must(
        "CreateAlias",
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&key)
            .send()
            .await,
    );
    let scheduled = must(
        "ScheduleKeyDeletion 7 days",
        client
            .schedule_key_deletion()
            .key_id(&key)
            .pending_window_in_days(7)
            .send()
            .await,
    );
    let deletion_date = scheduled.deletion_date().cloned().expect("DeletionDate");
    kw.stop();
    drop(kw);

    // Six days later: still pending, same DeletionDate, not usable.
    let mut kw = sb.start_with_clock_offset(6 * DAY).await;
    let client = kw.client();
    let m = must(
        "DescribeKey after 6 days",
        client.describe_key().key_id(&key).send().await,
    )
    .key_metadata()
    .cloned()
    .expect("KeyMetadata");
    assert_eq!(m.key_state(), Some(&KeyState::PendingDeletion), "KeyState after 6 days");
    assert_eq!(m.deletion_date(), Some(&deletion_date), "DeletionDate after 6 days");
    let r = client
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext.clone()))
        .send()
        .await;
    expect_error(
        "Decrypt of a pending key after 6 days",
        r,
        400,
        "KMSInvalidStateException",
    );
    assert_eq!(list_all_keys(&client, 10).await, vec![key.clone()]);

    must(
        "CancelKeyDeletion after 6 days",
        client.cancel_key_deletion().key_id(&key).send().await,
    );
    let m = must("DescribeKey", client.describe_key().key_id(&alias).send().await)
        .key_metadata()
        .cloned()
        .expect("KeyMetadata");
    assert_eq!(m.key_state(), Some(&KeyState::Disabled), "KeyState after cancel");
    assert!(m.deletion_date().is_none(), "DeletionDate after cancel");
    must("EnableKey", client.enable_key().key_id(&key).send().await);
    assert_eq!(decrypt(&client, Some(&alias), &ciphertext, None).await, plaintext);
    kw.stop();
    drop(kw);

    // Thirty days later the cancelled key is still there and usable.
    let kw = sb.start_with_clock_offset(30 * DAY).await;
    let client = kw.client();
    let m = must(
        "DescribeKey after 30 days",
        client.describe_key().key_id(&key).send().await,
    )
    .key_metadata()
    .cloned()
    .expect("KeyMetadata");
    assert_eq!(
        m.key_state(),
        Some(&KeyState::Enabled),
        "a cancelled deletion happened anyway"
    );
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);
    assert_eq!(decrypt(&client, Some(&alias), &ciphertext, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_clock_offset_shifts_the_enclave_clock() {
    let mut sb = Sandbox::new();
    let kw = sb.start_with_clock_offset(-DAY).await;

    // A client signing with the real time is a day off the enclave's clock.
    let r = kw.client_real_time().list_keys().send().await;
    expect_error(
        "real-time signature against an enclave a day behind",
        r,
        400,
        "InvalidSignatureException",
    );

    // Signing with the shifted time works, and the enclave stamps its dates
    // with it.
    let client = kw.client();
    let out = must("CreateKey", client.create_key().send().await);
    let m = out.key_metadata().expect("KeyMetadata");
    assert_near("CreationDate a day ago", m.creation_date(), epoch_secs(kw.now()), 300);
    let out = must(
        "ScheduleKeyDeletion",
        client
            .schedule_key_deletion()
            .key_id(m.key_id())
            .pending_window_in_days(7)
            .send()
            .await,
    );
    assert_near(
        "DeletionDate six days from the real now",
        out.deletion_date(),
        epoch_secs(std::time::SystemTime::now()) + 6 * DAY,
        600,
    );
    // The raw signer uses the shifted time too.
    let resp = kw.signed_call("ListKeys", b"{}").await;
    assert_eq!(
        resp.status,
        200,
        "raw ListKeys: {}",
        String::from_utf8_lossy(&resp.body)
    );
}
