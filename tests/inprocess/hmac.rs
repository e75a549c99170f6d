//! HMAC keys (HMAC_224/256/384/512): GenerateMac / VerifyMac and their
//! errors.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec};

use crate::support::{
    Service, create_key, create_key_of, expect_error, key_arn, must, names_key, random_alnum, random_bytes,
};

const INVALID_MAC: &str = "KMSInvalidMacException";
const INVALID_USAGE: &str = "InvalidKeyUsageException";

/// GenerateMac under `id` (a key id, ARN or alias) of the key `key`.
async fn generate_mac_via(
    client: &aws_sdk_kms::Client,
    id: &str,
    key: &str,
    message: &[u8],
    alg: &MacAlgorithmSpec,
) -> Vec<u8> {
    let out = must(
        &format!("GenerateMac {alg:?}"),
        client
            .generate_mac()
            .key_id(id)
            .message(Blob::new(message))
            .mac_algorithm(alg.clone())
            .send()
            .await,
    );
    assert!(names_key(out.key_id(), key), "GenerateMac KeyId {:?}", out.key_id());
    assert_eq!(out.mac_algorithm(), Some(alg), "GenerateMac MacAlgorithm");
    out.mac().expect("Mac").as_ref().to_vec()
}

async fn generate_mac(client: &aws_sdk_kms::Client, key: &str, message: &[u8], alg: &MacAlgorithmSpec) -> Vec<u8> {
    generate_mac_via(client, key, key, message, alg).await
}

async fn verify_mac(
    client: &aws_sdk_kms::Client,
    key: &str,
    message: &[u8],
    mac: &[u8],
    alg: &MacAlgorithmSpec,
) -> Result<
    aws_sdk_kms::operation::verify_mac::VerifyMacOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::verify_mac::VerifyMacError>,
> {
    client
        .verify_mac()
        .key_id(key)
        .message(Blob::new(message))
        .mac(Blob::new(mac))
        .mac_algorithm(alg.clone())
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_and_verify_mac() {
    let kw = Service::start().await;
    let client = kw.client();

    let specs = [
        (KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224, 28),
        (KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256, 32),
        (KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384, 48),
        (KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512, 64),
    ];
    let message = random_bytes(200);
    let mut macs = Vec::new();
    for (spec, alg, len) in &specs {
        let what = format!("{spec:?}");
        let key = create_key_of(&client, spec.clone(), Some(KeyUsageType::GenerateVerifyMac)).await;
        let mac = generate_mac(&client, &key, &message, alg).await;
        assert_eq!(mac.len(), *len, "{what}: MAC length");
        // Deterministic per key and message; another message differs.
        assert_eq!(
            generate_mac(&client, &key, &message, alg).await,
            mac,
            "{what}: the same message gave two MACs"
        );
        let other_message = random_bytes(200);
        let other_mac = generate_mac(&client, &key, &other_message, alg).await;
        assert_ne!(other_mac, mac, "{what}: two messages gave the same MAC");

        let out = must(
            &format!("{what}: VerifyMac"),
            verify_mac(&client, &key, &message, &mac, alg).await,
        );
        assert!(out.mac_valid(), "{what}: MacValid");
        assert!(
            names_key(out.key_id(), &key),
            "{what}: VerifyMac KeyId {:?}",
            out.key_id()
        );
        let out = must(
            &format!("{what}: VerifyMac other"),
            verify_mac(&client, &key, &other_message, &other_mac, alg).await,
        );
        assert!(out.mac_valid(), "{what}: MacValid (other message)");

        let mut tampered = mac.clone();
        tampered[*len - 1] ^= 0x01;
        expect_error(
            &format!("{what}: VerifyMac tampered MAC"),
            verify_mac(&client, &key, &message, &tampered, alg).await,
            400,
            INVALID_MAC,
        );
        expect_error(
            &format!("{what}: VerifyMac MAC of another message"),
            verify_mac(&client, &key, &message, &other_mac, alg).await,
            400,
            INVALID_MAC,
        );
        expect_error(
            &format!("{what}: VerifyMac truncated MAC"),
            verify_mac(&client, &key, &message, &mac[..len - 1], alg).await,
            400,
            INVALID_MAC,
        );

        // Any other algorithm is the wrong one for this key.
        for (_, wrong, _) in specs.iter().filter(|(_, a, _)| a != alg) {
            let r = client
                .generate_mac()
                .key_id(&key)
                .message(Blob::new(message.clone()))
                .mac_algorithm(wrong.clone())
                .send()
                .await;
            expect_error(&format!("{what}: GenerateMac {wrong:?}"), r, 400, INVALID_USAGE);
            expect_error(
                &format!("{what}: VerifyMac {wrong:?}"),
                verify_mac(&client, &key, &message, &mac, wrong).await,
                400,
                INVALID_USAGE,
            );
        }
        // HMAC keys don't encrypt.
        let r = client
            .encrypt()
            .key_id(&key)
            .plaintext(Blob::new(message.clone()))
            .send()
            .await;
        expect_error(&format!("{what}: Encrypt"), r, 400, INVALID_USAGE);
        macs.push((key, mac));
    }

    // Two HMAC_256 keys give different MACs; one key's MAC fails on the other.
    let (key256, mac256) = &macs[1];
    let second = create_key_of(&client, KeySpec::Hmac256, Some(KeyUsageType::GenerateVerifyMac)).await;
    let mac2 = generate_mac(&client, &second, &message, &MacAlgorithmSpec::HmacSha256).await;
    assert_ne!(&mac2, mac256, "two HMAC_256 keys gave the same MAC");
    expect_error(
        "VerifyMac with another key's MAC",
        verify_mac(&client, &second, &message, mac256, &MacAlgorithmSpec::HmacSha256).await,
        400,
        INVALID_MAC,
    );
    // And the first still verifies its own (by ARN).
    let out = must(
        "VerifyMac by ARN",
        verify_mac(
            &client,
            &key_arn(key256),
            &message,
            mac256,
            &MacAlgorithmSpec::HmacSha256,
        )
        .await,
    );
    assert!(out.mac_valid());
    // And through an alias.
    let alias = format!("alias/mac-{}", random_alnum(8));
    must(
        "CreateAlias",
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(key256)
            .send()
            .await,
    );
    assert_eq!(
        &generate_mac_via(&client, &alias, key256, &message, &MacAlgorithmSpec::HmacSha256).await,
        mac256,
        "GenerateMac via alias"
    );
    let out = must(
        "VerifyMac via alias",
        verify_mac(&client, &alias, &message, mac256, &MacAlgorithmSpec::HmacSha256).await,
    );
    assert!(out.mac_valid(), "VerifyMac via alias");

    // Non-HMAC keys don't MAC.
    let symmetric = create_key(&client, "symmetric").await;
    let ecc = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    for key in [&symmetric, &ecc] {
        let r = client
            .generate_mac()
            .key_id(key)
            .message(Blob::new(message.clone()))
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .send()
            .await;
        expect_error(&format!("GenerateMac with {key}"), r, 400, INVALID_USAGE);
    }
}
