//! Keys and the symmetric cryptographic operations succeed with correct
//! results, through the official SDK.

use std::collections::HashSet;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyState, KeyUsageType};

use crate::support::{
    ACCOUNT, Context, Service, context, create_key, decrypt, encrypt, expect_error, key_arn, names_key, random_alnum,
    random_bytes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_describe_key() {
    let kw = Service::start().await;
    let client = kw.client();

    let description = format!("integration key {}", random_alnum(12));
    let created = client
        .create_key()
        .description(&description)
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .expect("CreateKey");
    let meta = created.key_metadata().expect("CreateKey returns KeyMetadata");
    let key_id = meta.key_id().to_string();
    uuid::Uuid::parse_str(&key_id).unwrap_or_else(|e| panic!("KeyId {key_id:?} is not a uuid: {e}"));
    let arn = key_arn(&key_id);
    assert_eq!(meta.arn(), Some(arn.as_str()), "CreateKey Arn");
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled), "CreateKey KeyState");
    assert!(meta.enabled(), "CreateKey Enabled");
    assert_eq!(meta.description(), Some(description.as_str()), "CreateKey Description");

    // DescribeKey by uuid and by ARN return the same, complete metadata.
    for id in [key_id.as_str(), arn.as_str()] {
        let described = client.describe_key().key_id(id).send().await.expect("DescribeKey");
        let m = described.key_metadata().expect("DescribeKey returns KeyMetadata");
        assert_eq!(m.key_id(), key_id, "DescribeKey({id}) KeyId");
        assert_eq!(m.arn(), Some(arn.as_str()), "DescribeKey({id}) Arn");
        assert_eq!(m.key_state(), Some(&KeyState::Enabled), "DescribeKey({id}) KeyState");
        assert_eq!(
            m.key_spec(),
            Some(&KeySpec::SymmetricDefault),
            "DescribeKey({id}) KeySpec"
        );
        assert_eq!(
            m.key_usage(),
            Some(&KeyUsageType::EncryptDecrypt),
            "DescribeKey({id}) KeyUsage"
        );
        assert_eq!(
            m.description(),
            Some(description.as_str()),
            "DescribeKey({id}) Description"
        );
        assert!(m.enabled(), "DescribeKey({id}) Enabled");
        if let Some(account) = m.aws_account_id() {
            assert_eq!(account, ACCOUNT, "DescribeKey({id}) AWSAccountId");
        }
    }

    // Defaults: no KeySpec/KeyUsage given means a symmetric encryption key;
    // every key gets its own id.
    let other = client.create_key().send().await.expect("CreateKey with defaults");
    let m = other.key_metadata().expect("KeyMetadata");
    assert_ne!(m.key_id(), key_id, "two CreateKey calls returned the same KeyId");
    assert_eq!(m.key_spec(), Some(&KeySpec::SymmetricDefault), "default KeySpec");
    assert_eq!(m.key_usage(), Some(&KeyUsageType::EncryptDecrypt), "default KeyUsage");
    assert_eq!(m.key_state(), Some(&KeyState::Enabled), "default KeyState");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_decrypt_round_trips() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "round trips").await;
    let arn = key_arn(&key_id);

    let mut ascii = format!("hello keyward {}", random_alnum(8)).into_bytes();
    ascii.truncate(4096);
    for plaintext in [random_bytes(1), random_bytes(64), ascii, random_bytes(4096)] {
        let n = plaintext.len();
        // Encrypt names the key by uuid; the response names it too.
        let out = client
            .encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(plaintext.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Encrypt {n} bytes: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
        assert!(
            names_key(out.key_id(), &key_id),
            "Encrypt KeyId {:?} does not name {key_id}",
            out.key_id()
        );
        let ciphertext = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
        assert!(
            ciphertext.len() > n,
            "ciphertext of {n} bytes is only {} bytes",
            ciphertext.len()
        );
        if n >= 16 {
            assert!(
                !ciphertext.windows(n).any(|w| w == plaintext.as_slice()),
                "ciphertext contains the plaintext ({n} bytes)"
            );
        }

        // Decrypt without KeyId, with the uuid, and with the ARN.
        for key in [None, Some(key_id.as_str()), Some(arn.as_str())] {
            let out = client
                .decrypt()
                .set_key_id(key.map(str::to_string))
                .ciphertext_blob(Blob::new(ciphertext.clone()))
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "Decrypt {n} bytes (KeyId {key:?}): {}",
                        aws_sdk_kms::error::DisplayErrorContext(&e)
                    )
                });
            assert_eq!(
                out.plaintext().map(|b| b.as_ref()),
                Some(plaintext.as_slice()),
                "Decrypt {n} bytes (KeyId {key:?})"
            );
            assert!(
                names_key(out.key_id(), &key_id),
                "Decrypt KeyId {:?} does not name {key_id}",
                out.key_id()
            );
        }
    }

    // Encryption is randomised: the same plaintext twice gives two different
    // ciphertexts that both decrypt.
    let plaintext = random_bytes(32);
    let a = encrypt(&client, &arn, &plaintext, None).await;
    let b = encrypt(&client, &key_id, &plaintext, None).await;
    assert_ne!(a, b, "two encryptions of the same plaintext are identical");
    assert_eq!(decrypt(&client, None, &a, None).await, plaintext);
    assert_eq!(decrypt(&client, None, &b, None).await, plaintext);

    // Ciphertexts of two keys each decrypt to their own plaintext.
    let key2 = create_key(&client, "second").await;
    let p2 = random_bytes(48);
    let c2 = encrypt(&client, &key2, &p2, None).await;
    assert_eq!(decrypt(&client, None, &c2, None).await, p2);
    assert_eq!(decrypt(&client, Some(&key2), &c2, None).await, p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_context_is_bound() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "context").await;

    let tenant = random_alnum(10);
    let ctx = context(&[("tenant", &tenant), ("purpose", "integration-test")]);
    let plaintext = random_bytes(40);
    let ciphertext = encrypt(&client, &key_id, &plaintext, Some(&ctx)).await;

    // The same pairs (built in another order) decrypt, with and without KeyId.
    let same = context(&[("purpose", "integration-test"), ("tenant", &tenant)]);
    assert_eq!(decrypt(&client, None, &ciphertext, Some(&same)).await, plaintext);
    assert_eq!(
        decrypt(&client, Some(&key_id), &ciphertext, Some(&same)).await,
        plaintext
    );

    let wrong_value = context(&[("tenant", &format!("{tenant}x")), ("purpose", "integration-test")]);
    let missing_pair = context(&[("tenant", &tenant)]);
    let extra_pair = context(&[("tenant", &tenant), ("purpose", "integration-test"), ("extra", "1")]);
    let cases: [(&str, Option<&Context>); 4] = [
        ("wrong value", Some(&wrong_value)),
        ("missing pair", Some(&missing_pair)),
        ("extra pair", Some(&extra_pair)),
        ("no context at all", None),
    ];
    for (what, ctx) in cases {
        let result = client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .set_encryption_context(ctx.cloned())
            .send()
            .await;
        expect_error(
            &format!("Decrypt with {what}"),
            result,
            400,
            "InvalidCiphertextException",
        );
    }

    // And a ciphertext made without context doesn't decrypt with one.
    let bare = encrypt(&client, &key_id, &plaintext, None).await;
    let result = client
        .decrypt()
        .ciphertext_blob(Blob::new(bare.clone()))
        .set_encryption_context(Some(ctx.clone()))
        .send()
        .await;
    expect_error(
        "Decrypt context-free ciphertext with a context",
        result,
        400,
        "InvalidCiphertextException",
    );
    assert_eq!(decrypt(&client, None, &bare, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_data_key_variants() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "data keys").await;

    let mut seen = HashSet::new();
    let cases: [(Option<DataKeySpec>, Option<i32>, usize); 5] = [
        (Some(DataKeySpec::Aes128), None, 16),
        (Some(DataKeySpec::Aes256), None, 32),
        (None, Some(1), 1),
        (None, Some(24), 24),
        (None, Some(1024), 1024),
    ];
    for (spec, bytes, expected_len) in cases {
        let what = format!("GenerateDataKey {spec:?} {bytes:?}");
        let out = client
            .generate_data_key()
            .key_id(&key_id)
            .set_key_spec(spec.clone())
            .set_number_of_bytes(bytes)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
        let plaintext = out.plaintext().expect("Plaintext").as_ref().to_vec();
        assert_eq!(plaintext.len(), expected_len, "{what}: plaintext length");
        assert!(names_key(out.key_id(), &key_id), "{what}: KeyId {:?}", out.key_id());
        if expected_len >= 16 {
            assert!(seen.insert(plaintext.clone()), "{what}: repeated a data key");
        }
        let ciphertext = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
        assert_eq!(
            decrypt(&client, None, &ciphertext, None).await,
            plaintext,
            "{what}: decrypt without KeyId"
        );
        assert_eq!(
            decrypt(&client, Some(&key_id), &ciphertext, None).await,
            plaintext,
            "{what}: decrypt with KeyId"
        );
    }

    // GenerateDataKey binds its encryption context too.
    let ctx = context(&[("bucket", &random_alnum(8))]);
    let out = client
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(ctx.clone()))
        .send()
        .await
        .expect("GenerateDataKey with context");
    let plaintext = out.plaintext().expect("Plaintext").as_ref().to_vec();
    let ciphertext = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    assert_eq!(decrypt(&client, None, &ciphertext, Some(&ctx)).await, plaintext);
    let result = client.decrypt().ciphertext_blob(Blob::new(ciphertext)).send().await;
    expect_error(
        "Decrypt data key without its context",
        result,
        400,
        "InvalidCiphertextException",
    );

    // WithoutPlaintext: only a ciphertext, which decrypts to a key of the asked size.
    let cases: [(Option<DataKeySpec>, Option<i32>, usize); 3] = [
        (Some(DataKeySpec::Aes256), None, 32),
        (Some(DataKeySpec::Aes128), None, 16),
        (None, Some(48), 48),
    ];
    for (spec, bytes, expected_len) in cases {
        let what = format!("GenerateDataKeyWithoutPlaintext {spec:?} {bytes:?}");
        let out = client
            .generate_data_key_without_plaintext()
            .key_id(&key_id)
            .set_key_spec(spec.clone())
            .set_number_of_bytes(bytes)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
        assert!(names_key(out.key_id(), &key_id), "{what}: KeyId {:?}", out.key_id());
        let ciphertext = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
        let key = decrypt(&client, None, &ciphertext, None).await;
        assert_eq!(key.len(), expected_len, "{what}: decrypted data key length");
        assert!(seen.insert(key), "{what}: repeated a data key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_random_lengths() {
    let kw = Service::start().await;
    let client = kw.client();
    for n in [1, 16, 32, 1000, 1024] {
        let out = client
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GenerateRandom {n}: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
        let bytes = out.plaintext().expect("Plaintext").as_ref();
        assert_eq!(bytes.len(), n as usize, "GenerateRandom {n}: length");
    }
    let a = client
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .expect("GenerateRandom");
    let b = client
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .expect("GenerateRandom");
    assert_ne!(
        a.plaintext(),
        b.plaintext(),
        "two 32-byte GenerateRandom results are equal"
    );
    assert_ne!(
        a.plaintext().map(|p| p.as_ref().to_vec()),
        Some(vec![0u8; 32]),
        "GenerateRandom returned zeros"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_paginates() {
    let kw = Service::start().await;
    let client = kw.client();

    let mut created = HashSet::new();
    for i in 0..5 {
        created.insert(create_key(&client, &format!("list {i}")).await);
    }

    // Pages of at most 2 cover every key exactly once.
    let mut listed = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(
            pages <= 10,
            "ListKeys did not finish after {pages} pages of 2 for 5 keys"
        );
        let out = client
            .list_keys()
            .limit(2)
            .set_marker(marker.clone())
            .send()
            .await
            .expect("ListKeys");
        assert!(
            out.keys().len() <= 2,
            "page {pages} has {} entries for Limit 2",
            out.keys().len()
        );
        for entry in out.keys() {
            let id = entry.key_id().expect("KeyListEntry KeyId").to_string();
            assert_eq!(
                entry.key_arn(),
                Some(key_arn(&id).as_str()),
                "KeyListEntry KeyArn of {id}"
            );
            listed.push(id);
        }
        if !out.truncated() {
            break;
        }
        assert!(!out.keys().is_empty(), "a truncated page {pages} is empty");
        let next = out
            .next_marker()
            .unwrap_or_else(|| panic!("page {pages} is truncated but has no NextMarker"));
        marker = Some(next.to_string());
    }
    assert!(pages >= 3, "5 keys with Limit 2 came in {pages} pages");
    let unique: HashSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "ListKeys returned a key twice: {listed:?}");
    assert_eq!(unique, created, "ListKeys pages differ from the created keys");

    // Without Limit, one page has them all.
    let out = client.list_keys().send().await.expect("ListKeys without Limit");
    assert!(!out.truncated(), "5 keys truncated at the default limit");
    let all: HashSet<String> = out
        .keys()
        .iter()
        .filter_map(|e| e.key_id().map(str::to_string))
        .collect();
    assert_eq!(all, created);

    // Limit 1000 (the maximum) is valid.
    let out = client
        .list_keys()
        .limit(1000)
        .send()
        .await
        .expect("ListKeys Limit 1000");
    assert_eq!(out.keys().len(), created.len());
}
