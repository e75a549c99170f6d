//! Aliases: CreateAlias / UpdateAlias / DeleteAlias / ListAliases, their
//! errors, pagination, and alias names and ARNs as KeyId.

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{AliasListEntry, DataKeySpec, KeySpec, KeyUsageType};

use crate::support::{
    ACCOUNT, REGION, Service, all_pages, assert_near, create_key, create_key_of, decrypt, encrypt, epoch_secs,
    expect_error, key_arn, must, names_key, random_alnum, random_bytes,
};

const VALIDATION: &str = "ValidationException";
const NOT_FOUND: &str = "NotFoundException";

fn alias_arn(name: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:{name}")
}

/// Every alias (optionally of one key), following NextMarker with pages of
/// `limit`; also returns the number of pages.
async fn all_aliases(
    client: &aws_sdk_kms::Client,
    key: Option<&str>,
    limit: Option<i32>,
) -> (Vec<AliasListEntry>, usize) {
    all_pages(
        "ListAliases",
        limit,
        |marker| {
            client
                .list_aliases()
                .set_key_id(key.map(str::to_string))
                .set_limit(limit)
                .set_marker(marker)
                .send()
        },
        |r| (r.aliases(), r.truncated(), r.next_marker()),
    )
    .await
}

/// Alias name → target KeyId.
fn targets(entries: &[AliasListEntry]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|a| {
            (
                a.alias_name().expect("AliasName").to_string(),
                a.target_key_id().expect("TargetKeyId").to_string(),
            )
        })
        .collect()
}

async fn described_key(client: &aws_sdk_kms::Client, id: &str) -> String {
    must(
        &format!("DescribeKey {id}"),
        client.describe_key().key_id(id).send().await,
    )
    .key_metadata()
    .expect("KeyMetadata")
    .key_id()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_lifecycle_and_use_as_key_id() {
    let kw = Service::start().await;
    let client = kw.client();
    let key1 = create_key(&client, "one").await;
    let key2 = create_key(&client, "two").await;
    let name = format!("alias/app/{}-key_1", random_alnum(8));
    let by_arn = format!("alias/by-arn-{}", random_alnum(8));

    let created_at = epoch_secs(kw.now());
    must(
        "CreateAlias (key id)",
        client
            .create_alias()
            .alias_name(&name)
            .target_key_id(&key1)
            .send()
            .await,
    );
    must(
        "CreateAlias (key ARN)",
        client
            .create_alias()
            .alias_name(&by_arn)
            .target_key_id(key_arn(&key1))
            .send()
            .await,
    );

    // ListAliases entries are complete.
    let (entries, _) = all_aliases(&client, None, None).await;
    assert_eq!(
        targets(&entries),
        BTreeMap::from([(name.clone(), key1.clone()), (by_arn.clone(), key1.clone())]),
        "ListAliases"
    );
    for a in &entries {
        let n = a.alias_name().expect("AliasName");
        assert_eq!(a.alias_arn(), Some(alias_arn(n).as_str()), "AliasArn of {n}");
        assert_near(&format!("{n} CreationDate"), a.creation_date(), created_at, 300);
        assert_near(&format!("{n} LastUpdatedDate"), a.last_updated_date(), created_at, 300);
    }

    // Name and ARN as KeyId.
    let plaintext = random_bytes(32);
    for id in [name.clone(), alias_arn(&name), by_arn.clone()] {
        assert_eq!(described_key(&client, &id).await, key1, "DescribeKey {id}");
        let out = must(
            &format!("Encrypt under {id}"),
            client
                .encrypt()
                .key_id(&id)
                .plaintext(Blob::new(plaintext.clone()))
                .send()
                .await,
        );
        assert!(
            names_key(out.key_id(), &key1),
            "Encrypt under {id}: KeyId {:?}",
            out.key_id()
        );
        let ct = out.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
        assert_eq!(
            decrypt(&client, Some(&id), &ct, None).await,
            plaintext,
            "Decrypt naming {id}"
        );
        assert_eq!(decrypt(&client, Some(&key1), &ct, None).await, plaintext);
        let dk = must(
            &format!("GenerateDataKey under {id}"),
            client
                .generate_data_key()
                .key_id(&id)
                .key_spec(DataKeySpec::Aes256)
                .send()
                .await,
        );
        assert!(
            names_key(dk.key_id(), &key1),
            "GenerateDataKey under {id}: KeyId {:?}",
            dk.key_id()
        );
        let dk_ct = must(
            &format!("GenerateDataKeyWithoutPlaintext under {id}"),
            client
                .generate_data_key_without_plaintext()
                .key_id(&id)
                .key_spec(DataKeySpec::Aes128)
                .send()
                .await,
        );
        let blob = dk_ct.ciphertext_blob().expect("CiphertextBlob").as_ref();
        assert_eq!(decrypt(&client, None, blob, None).await.len(), 16);
        let re = must(
            &format!("ReEncrypt to {id}"),
            client
                .re_encrypt()
                .ciphertext_blob(Blob::new(ct))
                .destination_key_id(&id)
                .send()
                .await,
        );
        assert!(
            names_key(re.key_id(), &key1),
            "ReEncrypt to {id}: KeyId {:?}",
            re.key_id()
        );
    }
    let ct1 = encrypt(&client, &name, &plaintext, None).await;

    // Errors of CreateAlias.
    expect_error(
        "CreateAlias duplicate",
        client
            .create_alias()
            .alias_name(&name)
            .target_key_id(&key2)
            .send()
            .await,
        400,
        "AlreadyExistsException",
    );
    for bad in [
        "no-prefix".to_string(),
        "alias/".to_string(),
        "alias/has space".to_string(),
        "alias/star*".to_string(),
        "alias/dot.dot".to_string(),
        "Alias/upper-prefix".to_string(),
    ] {
        expect_error(
            &format!("CreateAlias {bad:?}"),
            client.create_alias().alias_name(&bad).target_key_id(&key1).send().await,
            400,
            VALIDATION,
        );
    }
    expect_error(
        "CreateAlias alias/aws/...",
        client
            .create_alias()
            .alias_name("alias/aws/mine")
            .target_key_id(&key1)
            .send()
            .await,
        400,
        "InvalidAliasNameException",
    );
    expect_error(
        "CreateAlias to an unknown key",
        client
            .create_alias()
            .alias_name(format!("alias/orphan-{}", random_alnum(6)))
            .target_key_id(uuid::Uuid::new_v4().to_string())
            .send()
            .await,
        400,
        NOT_FOUND,
    );
    let (entries, _) = all_aliases(&client, None, None).await;
    assert_eq!(
        entries.len(),
        2,
        "rejected CreateAlias calls created aliases: {entries:?}"
    );

    // UpdateAlias moves the alias to key2.
    must(
        "UpdateAlias",
        client
            .update_alias()
            .alias_name(&name)
            .target_key_id(&key2)
            .send()
            .await,
    );
    assert_eq!(
        described_key(&client, &name).await,
        key2,
        "DescribeKey after UpdateAlias"
    );
    let ct2 = encrypt(&client, &name, &plaintext, None).await;
    assert_eq!(decrypt(&client, Some(&key2), &ct2, None).await, plaintext);
    expect_error(
        "Decrypt key1's ciphertext naming the moved alias",
        client
            .decrypt()
            .key_id(&name)
            .ciphertext_blob(Blob::new(ct1.clone()))
            .send()
            .await,
        400,
        "IncorrectKeyException",
    );
    let (entries, _) = all_aliases(&client, None, None).await;
    let entry = entries
        .iter()
        .find(|a| a.alias_name() == Some(name.as_str()))
        .expect("moved alias listed");
    assert_eq!(entry.target_key_id(), Some(key2.as_str()));
    let (created, updated) = (
        entry.creation_date().expect("CreationDate").secs(),
        entry.last_updated_date().expect("LastUpdatedDate").secs(),
    );
    assert!(
        updated >= created,
        "LastUpdatedDate {updated} before CreationDate {created}"
    );

    // UpdateAlias errors.
    let hmac = create_key_of(&client, KeySpec::Hmac256, Some(KeyUsageType::GenerateVerifyMac)).await;
    let ecc = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    for (what, target) in [("an HMAC key", &hmac), ("an ECC key", &ecc)] {
        expect_error(
            &format!("UpdateAlias of a symmetric key's alias to {what}"),
            client
                .update_alias()
                .alias_name(&name)
                .target_key_id(target)
                .send()
                .await,
            400,
            VALIDATION,
        );
    }
    assert_eq!(
        described_key(&client, &name).await,
        key2,
        "a rejected UpdateAlias moved the alias"
    );
    // Same spec, other usage; same usage, other spec.
    let agree = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;
    let hmac384 = create_key_of(&client, KeySpec::Hmac384, Some(KeyUsageType::GenerateVerifyMac)).await;
    for (from, to, what) in [
        (&ecc, &agree, "ECC SIGN_VERIFY to ECC KEY_AGREEMENT"),
        (&hmac, &hmac384, "HMAC_256 to HMAC_384"),
    ] {
        let alias = format!("alias/typed-{}", random_alnum(8));
        must(
            "CreateAlias",
            client
                .create_alias()
                .alias_name(&alias)
                .target_key_id(from)
                .send()
                .await,
        );
        expect_error(
            &format!("UpdateAlias {what}"),
            client.update_alias().alias_name(&alias).target_key_id(to).send().await,
            400,
            VALIDATION,
        );
        assert_eq!(
            &described_key(&client, &alias).await,
            from,
            "a rejected UpdateAlias ({what}) moved the alias"
        );
        must("DeleteAlias", client.delete_alias().alias_name(&alias).send().await);
    }
    expect_error(
        "UpdateAlias unknown alias",
        client
            .update_alias()
            .alias_name(format!("alias/absent-{}", random_alnum(6)))
            .target_key_id(&key1)
            .send()
            .await,
        400,
        NOT_FOUND,
    );

    // DeleteAlias.
    must("DeleteAlias", client.delete_alias().alias_name(&name).send().await);
    expect_error(
        "DescribeKey of a deleted alias",
        client.describe_key().key_id(&name).send().await,
        400,
        NOT_FOUND,
    );
    expect_error(
        "Encrypt under a deleted alias",
        client
            .encrypt()
            .key_id(&name)
            .plaintext(Blob::new(plaintext.clone()))
            .send()
            .await,
        400,
        NOT_FOUND,
    );
    expect_error(
        "DeleteAlias again",
        client.delete_alias().alias_name(&name).send().await,
        400,
        NOT_FOUND,
    );
    // The keys themselves are untouched; the other alias remains.
    assert_eq!(decrypt(&client, None, &ct2, None).await, plaintext);
    let (entries, _) = all_aliases(&client, None, None).await;
    assert_eq!(targets(&entries), BTreeMap::from([(by_arn.clone(), key1.clone())]));
    // A deleted name can be created again.
    must(
        "CreateAlias reusing a deleted name",
        client
            .create_alias()
            .alias_name(&name)
            .target_key_id(&key1)
            .send()
            .await,
    );
    assert_eq!(described_key(&client, &name).await, key1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_aliases_paginates_and_filters() {
    let kw = Service::start().await;
    let client = kw.client();
    let keys = [
        create_key(&client, "a").await,
        create_key(&client, "b").await,
        create_key(&client, "c").await,
    ];
    let mut expected = BTreeMap::new();
    for i in 0..60 {
        let name = format!("alias/page-{i:02}-{}", random_alnum(4));
        let key = &keys[i % 3];
        must(
            "CreateAlias",
            client.create_alias().alias_name(&name).target_key_id(key).send().await,
        );
        expected.insert(name, key.clone());
    }

    // Default limit is 50: two pages.
    let first = must("ListAliases (default Limit)", client.list_aliases().send().await);
    assert_eq!(first.aliases().len(), 50, "default ListAliases page size");
    assert!(first.truncated(), "60 aliases fit in one default page");
    let (all, pages) = all_aliases(&client, None, None).await;
    assert_eq!(pages, 2, "60 aliases with the default Limit");
    assert_eq!(targets(&all), expected);
    assert_eq!(all.len(), 60, "ListAliases repeated an alias");

    for limit in [1, 7, 100] {
        let (all, pages) = all_aliases(&client, None, Some(limit)).await;
        assert_eq!(
            all.len(),
            60,
            "Limit {limit}: ListAliases returned {} aliases",
            all.len()
        );
        assert_eq!(targets(&all), expected, "Limit {limit}");
        assert_eq!(pages, 60usize.div_ceil(limit as usize), "Limit {limit}: pages");
    }

    // KeyId filter, by id and by ARN.
    for key in &keys {
        let want: BTreeMap<String, String> = expected
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        let (got, _) = all_aliases(&client, Some(key), Some(6)).await;
        assert_eq!(targets(&got), want, "ListAliases KeyId {key}");
        let (got, _) = all_aliases(&client, Some(&key_arn(key)), None).await;
        assert_eq!(targets(&got), want, "ListAliases KeyId ARN of {key}");
    }
    let lonely = create_key(&client, "no aliases").await;
    let (got, _) = all_aliases(&client, Some(&lonely), None).await;
    assert!(got.is_empty(), "aliases of a key without any: {got:?}");

    for limit in [0, 101] {
        expect_error(
            &format!("ListAliases Limit {limit}"),
            client.list_aliases().limit(limit).send().await,
            400,
            VALIDATION,
        );
    }
}
