//! Key rotation: EnableKeyRotation / DisableKeyRotation /
//! GetKeyRotationStatus, RotateKeyOnDemand and its limit, ListKeyRotations,
//! old ciphertexts after rotations, ReEncrypt, and automatic rotation when it
//! is due (time moved by `--mock-clock-offset`).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType, RotationType, RotationsListEntry};

use crate::support::{
    DAY, Service, all_pages, assert_near, blob_key_version, context, create_key, create_key_of, decrypt, encrypt,
    epoch_secs, expect_error, key_arn, must, names_key, random_bytes,
};

const VALIDATION: &str = "ValidationException";

async fn rotation_status(
    client: &aws_sdk_kms::Client,
    key: &str,
) -> aws_sdk_kms::operation::get_key_rotation_status::GetKeyRotationStatusOutput {
    must(
        &format!("GetKeyRotationStatus {key}"),
        client.get_key_rotation_status().key_id(key).send().await,
    )
}

/// Every rotation of `key`, following NextMarker with pages of `limit`;
/// also returns the number of pages.
async fn all_rotations(
    client: &aws_sdk_kms::Client,
    key: &str,
    limit: Option<i32>,
) -> (Vec<RotationsListEntry>, usize) {
    all_pages(
        "ListKeyRotations",
        limit,
        |marker| {
            client
                .list_key_rotations()
                .key_id(key)
                .set_limit(limit)
                .set_marker(marker)
                .send()
        },
        |r| (r.rotations(), r.truncated(), r.next_marker()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_settings_and_errors() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "rotation settings").await;

    let status = rotation_status(&client, &key).await;
    assert!(!status.key_rotation_enabled(), "a new key has rotation enabled");

    // Default period: 365 days.
    must(
        "EnableKeyRotation (default period)",
        client.enable_key_rotation().key_id(&key).send().await,
    );
    let now = epoch_secs(kw.now());
    let status = rotation_status(&client, &key).await;
    assert!(
        status.key_rotation_enabled(),
        "KeyRotationEnabled after EnableKeyRotation"
    );
    assert!(
        names_key(status.key_id(), &key),
        "GetKeyRotationStatus KeyId {:?}",
        status.key_id()
    );
    assert_eq!(
        status.rotation_period_in_days(),
        Some(365),
        "default RotationPeriodInDays"
    );
    assert_near(
        "NextRotationDate (365 days)",
        status.next_rotation_date(),
        now + 365 * DAY,
        3600,
    );

    for days in [90, 2560] {
        must(
            &format!("EnableKeyRotation {days} days"),
            client
                .enable_key_rotation()
                .key_id(key_arn(&key))
                .rotation_period_in_days(days)
                .send()
                .await,
        );
        let status = rotation_status(&client, &key).await;
        assert!(status.key_rotation_enabled());
        assert_eq!(status.rotation_period_in_days(), Some(days), "RotationPeriodInDays");
        assert_near(
            &format!("NextRotationDate ({days} days)"),
            status.next_rotation_date(),
            now + i64::from(days) * DAY,
            3600,
        );
    }
    for days in [0, 89, 2561] {
        let r = client
            .enable_key_rotation()
            .key_id(&key)
            .rotation_period_in_days(days)
            .send()
            .await;
        expect_error(&format!("EnableKeyRotation {days} days"), r, 400, VALIDATION);
    }
    assert_eq!(
        rotation_status(&client, &key).await.rotation_period_in_days(),
        Some(2560),
        "a rejected EnableKeyRotation changed the period"
    );

    must(
        "DisableKeyRotation",
        client.disable_key_rotation().key_id(&key).send().await,
    );
    assert!(
        !rotation_status(&client, &key).await.key_rotation_enabled(),
        "KeyRotationEnabled after DisableKeyRotation"
    );

    // Disabled keys.
    must("DisableKey", client.disable_key().key_id(&key).send().await);
    expect_error(
        "EnableKeyRotation of a disabled key",
        client.enable_key_rotation().key_id(&key).send().await,
        400,
        "DisabledException",
    );
    expect_error(
        "DisableKeyRotation of a disabled key",
        client.disable_key_rotation().key_id(&key).send().await,
        400,
        "DisabledException",
    );
    expect_error(
        "RotateKeyOnDemand of a disabled key",
        client.rotate_key_on_demand().key_id(&key).send().await,
        400,
        "DisabledException",
    );
    must("EnableKey", client.enable_key().key_id(&key).send().await);

    // Asymmetric and HMAC keys don't rotate.
    let ecc = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    let agree = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;
    let hmac = create_key_of(&client, KeySpec::Hmac256, Some(KeyUsageType::GenerateVerifyMac)).await;
    for k in [&ecc, &agree, &hmac] {
        let unsupported = "UnsupportedOperationException";
        expect_error(
            &format!("EnableKeyRotation {k}"),
            client.enable_key_rotation().key_id(k).send().await,
            400,
            unsupported,
        );
        expect_error(
            &format!("DisableKeyRotation {k}"),
            client.disable_key_rotation().key_id(k).send().await,
            400,
            unsupported,
        );
        expect_error(
            &format!("RotateKeyOnDemand {k}"),
            client.rotate_key_on_demand().key_id(k).send().await,
            400,
            unsupported,
        );
        expect_error(
            &format!("GetKeyRotationStatus {k}"),
            client.get_key_rotation_status().key_id(k).send().await,
            400,
            unsupported,
        );
        expect_error(
            &format!("ListKeyRotations {k}"),
            client.list_key_rotations().key_id(k).send().await,
            400,
            unsupported,
        );
    }

    let unknown = uuid::Uuid::new_v4().to_string();
    expect_error(
        "EnableKeyRotation unknown",
        client.enable_key_rotation().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
    expect_error(
        "RotateKeyOnDemand unknown",
        client.rotate_key_on_demand().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_decrypts_old_ciphertexts_and_re_encrypts() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "rotating").await;
    let other = create_key(&client, "destination").await;
    let key_uuid = uuid::Uuid::parse_str(&key).expect("uuid");
    let ctx_a = context(&[("purpose", "a")]);
    let ctx_b = context(&[("purpose", "b"), ("extra", "1")]);

    let p1 = random_bytes(48);
    let ct1 = encrypt(&client, &key, &p1, None).await;
    let ct1_ctx = encrypt(&client, &key, &p1, Some(&ctx_a)).await;
    let (blob_key, v1) = blob_key_version(&ct1);
    assert_eq!(blob_key, key_uuid, "ciphertext blob names another key");

    let mut versions = vec![v1];
    let mut ciphertexts = vec![(ct1.clone(), p1.clone())];
    for i in 0..2 {
        let out = must(
            "RotateKeyOnDemand",
            client.rotate_key_on_demand().key_id(&key).send().await,
        );
        assert!(
            names_key(out.key_id(), &key),
            "RotateKeyOnDemand KeyId {:?}",
            out.key_id()
        );
        let p = random_bytes(20 + i);
        let ct = encrypt(&client, &key, &p, None).await;
        let (blob_key, v) = blob_key_version(&ct);
        assert_eq!(blob_key, key_uuid);
        assert!(
            v > *versions.last().expect("a version"),
            "after rotation {} the new ciphertext has key version {v}; earlier versions {versions:?}",
            i + 1
        );
        versions.push(v);
        ciphertexts.push((ct, p));
    }
    let newest = *versions.last().expect("a version");

    // Every ciphertext decrypts, with and without KeyId.
    for (i, (ct, p)) in ciphertexts.iter().enumerate() {
        assert_eq!(&decrypt(&client, None, ct, None).await, p, "ciphertext {i}");
        assert_eq!(
            &decrypt(&client, Some(&key), ct, None).await,
            p,
            "ciphertext {i} (KeyId)"
        );
    }
    assert_eq!(decrypt(&client, None, &ct1_ctx, Some(&ctx_a)).await, p1);

    // Data keys use the newest version too.
    let dk = must(
        "GenerateDataKey",
        client
            .generate_data_key()
            .key_id(&key)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
    );
    let dk_blob = dk.ciphertext_blob().expect("CiphertextBlob").as_ref();
    assert_eq!(blob_key_version(dk_blob).1, newest, "GenerateDataKey key version");

    // The two on-demand rotations are listed.
    let now = epoch_secs(kw.now());
    let (rotations, _) = all_rotations(&client, &key, None).await;
    assert_eq!(rotations.len(), 2, "ListKeyRotations: {rotations:?}");
    for r in &rotations {
        assert!(names_key(r.key_id(), &key), "rotation KeyId {:?}", r.key_id());
        assert_eq!(r.rotation_type(), Some(&RotationType::OnDemand), "RotationType");
        assert_near("RotationDate", r.rotation_date(), now, 300);
    }

    // ReEncrypt of the oldest ciphertext under the same key: a different
    // ciphertext, under the newest version, with the same plaintext.
    let out = must(
        "ReEncrypt to the same key",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ct1.clone()))
            .destination_key_id(&key)
            .send()
            .await,
    );
    assert!(
        names_key(out.source_key_id(), &key),
        "ReEncrypt SourceKeyId {:?}",
        out.source_key_id()
    );
    assert!(names_key(out.key_id(), &key), "ReEncrypt KeyId {:?}", out.key_id());
    let re = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    assert_ne!(re, ct1, "ReEncrypt returned the same ciphertext");
    assert_eq!(blob_key_version(&re), (key_uuid, newest), "ReEncrypt key and version");
    assert_eq!(decrypt(&client, None, &re, None).await, p1);

    // With SourceKeyId named, by ARN.
    let out = must(
        "ReEncrypt with SourceKeyId",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ct1.clone()))
            .source_key_id(key_arn(&key))
            .destination_key_id(&key)
            .send()
            .await,
    );
    let re = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    assert_eq!(decrypt(&client, Some(&key), &re, None).await, p1);

    // To another key, changing the context.
    let out = must(
        "ReEncrypt to another key with a new context",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ct1_ctx.clone()))
            .set_source_encryption_context(Some(ctx_a.clone()))
            .destination_key_id(&other)
            .set_destination_encryption_context(Some(ctx_b.clone()))
            .send()
            .await,
    );
    assert!(
        names_key(out.source_key_id(), &key),
        "SourceKeyId {:?}",
        out.source_key_id()
    );
    assert!(names_key(out.key_id(), &other), "KeyId {:?}", out.key_id());
    let moved = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    assert_eq!(
        blob_key_version(&moved).0,
        uuid::Uuid::parse_str(&other).expect("uuid"),
        "ReEncrypt to another key: blob names the wrong key"
    );
    assert_eq!(decrypt(&client, Some(&other), &moved, Some(&ctx_b)).await, p1);
    expect_error(
        "Decrypt re-encrypted ciphertext with the old context",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(moved.clone()))
            .set_encryption_context(Some(ctx_a.clone()))
            .send()
            .await,
        400,
        "InvalidCiphertextException",
    );
    expect_error(
        "Decrypt re-encrypted ciphertext naming the source key",
        client
            .decrypt()
            .key_id(&key)
            .ciphertext_blob(Blob::new(moved))
            .set_encryption_context(Some(ctx_b.clone()))
            .send()
            .await,
        400,
        "IncorrectKeyException",
    );

    // Wrong or missing source context.
    for (what, ctx) in [
        ("wrong source context", Some(ctx_b.clone())),
        ("no source context", None),
    ] {
        let r = client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ct1_ctx.clone()))
            .set_source_encryption_context(ctx)
            .destination_key_id(&other)
            .send()
            .await;
        expect_error(&format!("ReEncrypt with {what}"), r, 400, "InvalidCiphertextException");
    }
    // A SourceKeyId that isn't the ciphertext's key.
    let r = client
        .re_encrypt()
        .ciphertext_blob(Blob::new(ct1.clone()))
        .source_key_id(&other)
        .destination_key_id(&other)
        .send()
        .await;
    expect_error("ReEncrypt with the wrong SourceKeyId", r, 400, "IncorrectKeyException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_rotation_limit_and_listing() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "rotation limit").await;
    let plaintext = random_bytes(16);
    let first = encrypt(&client, &key, &plaintext, None).await;
    let (_, v0) = blob_key_version(&first);

    for i in 1..=10 {
        must(
            &format!("RotateKeyOnDemand #{i}"),
            client.rotate_key_on_demand().key_id(&key).send().await,
        );
    }
    expect_error(
        "RotateKeyOnDemand #11",
        client.rotate_key_on_demand().key_id(&key).send().await,
        400,
        "LimitExceededException",
    );

    let (rotations, pages) = all_rotations(&client, &key, Some(3)).await;
    assert_eq!(rotations.len(), 10, "ListKeyRotations with Limit 3: {rotations:?}");
    assert_eq!(pages, 4, "10 rotations in pages of 3");
    let mut dates = Vec::new();
    for r in &rotations {
        assert!(names_key(r.key_id(), &key), "rotation KeyId {:?}", r.key_id());
        assert_eq!(r.rotation_type(), Some(&RotationType::OnDemand));
        dates.push(r.rotation_date().expect("RotationDate").secs());
    }
    let mut sorted = dates.clone();
    sorted.sort();
    assert_eq!(dates, sorted, "rotations are not listed in date order");
    let (unpaged, pages) = all_rotations(&client, &key, None).await;
    assert_eq!((unpaged.len(), pages), (10, 1), "ListKeyRotations without Limit");

    // The oldest ciphertext still decrypts; new ones use the tenth new version.
    assert_eq!(decrypt(&client, None, &first, None).await, plaintext);
    let latest = encrypt(&client, &key, &plaintext, None).await;
    let (_, v) = blob_key_version(&latest);
    assert!(v > v0, "key version {v} after 10 rotations, {v0} before");
    assert_eq!(decrypt(&client, None, &latest, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rotation_when_due() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "automatic").await;
    let idle = create_key(&client, "rotation not enabled").await;
    let plaintext = random_bytes(32);
    let before = encrypt(&client, &key, &plaintext, None).await;
    let idle_before = encrypt(&client, &idle, &plaintext, None).await;
    must(
        "EnableKeyRotation 90 days",
        client
            .enable_key_rotation()
            .key_id(&key)
            .rotation_period_in_days(90)
            .send()
            .await,
    );
    let enabled_at = epoch_secs(kw.now());
    let status = rotation_status(&client, &key).await;
    assert_near(
        "NextRotationDate",
        status.next_rotation_date(),
        enabled_at + 90 * DAY,
        3600,
    );
    let (rotations, _) = all_rotations(&client, &key, None).await;
    assert!(rotations.is_empty(), "rotations before any was due: {rotations:?}");

    // 91 days later the rotation is due.
    let kw = kw.restart(91 * DAY).await;
    let client = kw.client();
    let after = encrypt(&client, &key, &plaintext, None).await;
    let (rotations, _) = all_rotations(&client, &key, None).await;
    assert_eq!(
        rotations.len(),
        1,
        "rotations 91 days after enabling a 90-day rotation: {rotations:?}"
    );
    let r = &rotations[0];
    assert!(names_key(r.key_id(), &key), "rotation KeyId {:?}", r.key_id());
    assert_eq!(r.rotation_type(), Some(&RotationType::Automatic), "RotationType");
    let date = r.rotation_date().expect("RotationDate").secs();
    assert!(
        date >= enabled_at + 90 * DAY - 3600 && date <= epoch_secs(kw.now()) + 300,
        "RotationDate {} is not between the due date and now",
        aws_sdk_kms::primitives::DateTime::from_secs(date)
    );
    assert!(
        blob_key_version(&after).1 > blob_key_version(&before).1,
        "a ciphertext made after the automatic rotation uses the old key version"
    );
    assert_eq!(decrypt(&client, None, &before, None).await, plaintext);
    assert_eq!(decrypt(&client, None, &after, None).await, plaintext);

    let status = rotation_status(&client, &key).await;
    assert!(status.key_rotation_enabled(), "rotation stays enabled");
    assert_eq!(status.rotation_period_in_days(), Some(90));
    let next = status.next_rotation_date().expect("NextRotationDate").secs();
    assert!(
        next > epoch_secs(kw.now()),
        "NextRotationDate {} is not in the (shifted) future",
        aws_sdk_kms::primitives::DateTime::from_secs(next)
    );

    // A key without rotation enabled did not rotate.
    let (idle_rotations, _) = all_rotations(&client, &idle, None).await;
    assert!(
        idle_rotations.is_empty(),
        "a key without rotation rotated: {idle_rotations:?}"
    );
    let idle_after = encrypt(&client, &idle, &plaintext, None).await;
    assert_eq!(
        blob_key_version(&idle_after).1,
        blob_key_version(&idle_before).1,
        "a key without rotation enabled changed version"
    );
}
