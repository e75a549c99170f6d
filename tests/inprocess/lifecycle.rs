//! Key states: EnableKey / DisableKey, ScheduleKeyDeletion /
//! CancelKeyDeletion, UpdateKeyDescription, the errors of every
//! cryptographic operation on a Disabled or PendingDeletion key, and the
//! complete DescribeKey metadata of every key type.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, DataKeySpec, EncryptionAlgorithmSpec, KeyAgreementAlgorithmSpec, KeyManagerType, KeySpec,
    KeyState, KeyUsageType, MacAlgorithmSpec, MessageType, OriginType, SigningAlgorithmSpec,
};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

use crate::support::{
    DAY, Service, assert_near, create_key, create_key_of, decrypt, encrypt, epoch_secs, expect_error, key_arn, must,
    names_key, random_alnum, random_bytes,
};

pub const DISABLED: &str = "DisabledException";
pub const INVALID_STATE: &str = "KMSInvalidStateException";
const VALIDATION: &str = "ValidationException";

/// Every cryptographic use of the symmetric key `key` fails with `code`:
/// Encrypt, Decrypt of `ciphertext` (one of `key`'s, with and without
/// KeyId), GenerateDataKey*, GenerateDataKeyPair*, and ReEncrypt with `key`
/// as source and as destination (`other` is an Enabled symmetric key, and
/// `other_ciphertext` one of its ciphertexts).
pub async fn expect_symmetric_uses_fail(
    client: &aws_sdk_kms::Client,
    key: &str,
    ciphertext: &[u8],
    other: &str,
    other_ciphertext: &[u8],
    code: &str,
) {
    let r = client
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(random_bytes(8)))
        .send()
        .await;
    expect_error("Encrypt", r, 400, code);
    for key_id in [None, Some(key.to_string())] {
        let r = client
            .decrypt()
            .set_key_id(key_id.clone())
            .ciphertext_blob(Blob::new(ciphertext))
            .send()
            .await;
        expect_error(&format!("Decrypt (KeyId {key_id:?})"), r, 400, code);
    }
    let r = client
        .generate_data_key()
        .key_id(key)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error("GenerateDataKey", r, 400, code);
    let r = client
        .generate_data_key_without_plaintext()
        .key_id(key)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    expect_error("GenerateDataKeyWithoutPlaintext", r, 400, code);
    let r = client
        .generate_data_key_pair()
        .key_id(key)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await;
    expect_error("GenerateDataKeyPair", r, 400, code);
    let r = client
        .generate_data_key_pair_without_plaintext()
        .key_id(key)
        .key_pair_spec(DataKeyPairSpec::EccNistP256)
        .send()
        .await;
    expect_error("GenerateDataKeyPairWithoutPlaintext", r, 400, code);
    let r = client
        .re_encrypt()
        .ciphertext_blob(Blob::new(ciphertext))
        .destination_key_id(other)
        .send()
        .await;
    expect_error("ReEncrypt from the key", r, 400, code);
    let r = client
        .re_encrypt()
        .ciphertext_blob(Blob::new(other_ciphertext))
        .destination_key_id(key)
        .send()
        .await;
    expect_error("ReEncrypt to the key", r, 400, code);
}

async fn describe(client: &aws_sdk_kms::Client, key: &str) -> aws_sdk_kms::types::KeyMetadata {
    must(
        &format!("DescribeKey {key}"),
        client.describe_key().key_id(key).send().await,
    )
    .key_metadata()
    .cloned()
    .expect("DescribeKey returns KeyMetadata")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_disable_key() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "enable/disable").await;
    let other = create_key(&client, "other").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&client, &key, &plaintext, None).await;
    let other_ciphertext = encrypt(&client, &other, &plaintext, None).await;

    // EnableKey of an Enabled key is a no-op.
    must(
        "EnableKey (already enabled)",
        client.enable_key().key_id(&key).send().await,
    );
    let m = describe(&client, &key).await;
    assert_eq!(m.key_state(), Some(&KeyState::Enabled));

    must("DisableKey", client.disable_key().key_id(&key).send().await);
    let m = describe(&client, &key).await;
    assert_eq!(m.key_state(), Some(&KeyState::Disabled), "KeyState after DisableKey");
    assert!(!m.enabled(), "Enabled after DisableKey");
    assert!(m.deletion_date().is_none(), "a Disabled key has a DeletionDate");
    // By ARN, and a second time: a no-op.
    must(
        "DisableKey (already disabled, by ARN)",
        client.disable_key().key_id(key_arn(&key)).send().await,
    );
    assert_eq!(describe(&client, &key).await.key_state(), Some(&KeyState::Disabled));

    expect_symmetric_uses_fail(&client, &key, &ciphertext, &other, &other_ciphertext, DISABLED).await;
    // The wire format of the error: status, __type and a message.
    let body = serde_json::json!({"KeyId": key, "Plaintext": "aGVsbG8="}).to_string();
    kw.signed_call("Encrypt", body.as_bytes())
        .await
        .assert_error("raw Encrypt under a disabled key", 400, DISABLED);

    // The other key is unaffected; the disabled key still lists.
    assert_eq!(decrypt(&client, None, &other_ciphertext, None).await, plaintext);
    let listed = must("ListKeys", client.list_keys().send().await);
    assert_eq!(listed.keys().len(), 2, "ListKeys with a disabled key");

    must("EnableKey", client.enable_key().key_id(&key).send().await);
    let m = describe(&client, &key).await;
    assert_eq!(m.key_state(), Some(&KeyState::Enabled), "KeyState after EnableKey");
    assert!(m.enabled(), "Enabled after EnableKey");
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);
    let fresh = encrypt(&client, &key, &plaintext, None).await;
    assert_eq!(decrypt(&client, Some(&key), &fresh, None).await, plaintext);

    // Unknown keys.
    let unknown = uuid::Uuid::new_v4().to_string();
    expect_error(
        "EnableKey unknown",
        client.enable_key().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
    expect_error(
        "DisableKey unknown",
        client.disable_key().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_and_cancel_key_deletion() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "to delete").await;
    let other = create_key(&client, "other").await;
    let plaintext = random_bytes(24);
    let ciphertext = encrypt(&client, &key, &plaintext, None).await;
    let other_ciphertext = encrypt(&client, &other, &plaintext, None).await;

    for days in [0, 6, 31, 365] {
        let r = client
            .schedule_key_deletion()
            .key_id(&key)
            .pending_window_in_days(days)
            .send()
            .await;
        expect_error(&format!("ScheduleKeyDeletion {days} days"), r, 400, VALIDATION);
    }
    assert_eq!(
        describe(&client, &key).await.key_state(),
        Some(&KeyState::Enabled),
        "a rejected ScheduleKeyDeletion changed the key"
    );

    // Default window: 30 days.
    let out = must(
        "ScheduleKeyDeletion (default window)",
        client.schedule_key_deletion().key_id(&key).send().await,
    );
    let arn = key_arn(&key);
    assert_eq!(out.key_id(), Some(arn.as_str()), "ScheduleKeyDeletion KeyId is the ARN");
    assert_eq!(out.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(out.pending_window_in_days(), Some(30), "default PendingWindowInDays");
    let now = epoch_secs(kw.now());
    assert_near("DeletionDate (30 days)", out.deletion_date(), now + 30 * DAY, 600);
    let deletion_date = out.deletion_date().cloned();

    let m = describe(&client, &key).await;
    assert_eq!(m.key_state(), Some(&KeyState::PendingDeletion), "DescribeKey KeyState");
    assert!(!m.enabled(), "a PendingDeletion key is Enabled");
    assert_eq!(m.deletion_date(), deletion_date.as_ref(), "DescribeKey DeletionDate");

    // Illegal transitions of a pending key.
    expect_error(
        "ScheduleKeyDeletion of a pending key",
        client.schedule_key_deletion().key_id(&key).send().await,
        400,
        INVALID_STATE,
    );
    expect_error(
        "EnableKey of a pending key",
        client.enable_key().key_id(&key).send().await,
        400,
        INVALID_STATE,
    );
    expect_error(
        "DisableKey of a pending key",
        client.disable_key().key_id(&key).send().await,
        400,
        INVALID_STATE,
    );
    expect_symmetric_uses_fail(&client, &key, &ciphertext, &other, &other_ciphertext, INVALID_STATE).await;
    let body = serde_json::json!({"KeyId": key, "Plaintext": "aGVsbG8="}).to_string();
    kw.signed_call("Encrypt", body.as_bytes()).await.assert_error(
        "raw Encrypt under a pending key",
        400,
        INVALID_STATE,
    );
    // Still listed while pending.
    let listed = must("ListKeys", client.list_keys().send().await);
    assert!(
        listed.keys().iter().any(|k| k.key_id() == Some(key.as_str())),
        "a PendingDeletion key is missing from ListKeys"
    );

    // Cancel: the key comes back Disabled, without a DeletionDate.
    let out = must(
        "CancelKeyDeletion",
        client.cancel_key_deletion().key_id(&key).send().await,
    );
    assert!(
        names_key(out.key_id(), &key),
        "CancelKeyDeletion KeyId {:?}",
        out.key_id()
    );
    let m = describe(&client, &key).await;
    assert_eq!(
        m.key_state(),
        Some(&KeyState::Disabled),
        "KeyState after CancelKeyDeletion"
    );
    assert!(m.deletion_date().is_none(), "DeletionDate after CancelKeyDeletion");
    expect_error(
        "CancelKeyDeletion of a key not pending",
        client.cancel_key_deletion().key_id(&key).send().await,
        400,
        INVALID_STATE,
    );
    expect_error(
        "Decrypt after cancel (Disabled)",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        400,
        DISABLED,
    );
    must("EnableKey after cancel", client.enable_key().key_id(&key).send().await);
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);

    // A Disabled key can be scheduled; an explicit 7-day window; by ARN.
    must("DisableKey", client.disable_key().key_id(&key).send().await);
    let out = must(
        "ScheduleKeyDeletion 7 days of a Disabled key",
        client
            .schedule_key_deletion()
            .key_id(&arn)
            .pending_window_in_days(7)
            .send()
            .await,
    );
    assert_eq!(out.pending_window_in_days(), Some(7));
    assert_eq!(out.key_state(), Some(&KeyState::PendingDeletion));
    assert_near(
        "DeletionDate (7 days)",
        out.deletion_date(),
        epoch_secs(kw.now()) + 7 * DAY,
        600,
    );
    must(
        "CancelKeyDeletion by ARN",
        client.cancel_key_deletion().key_id(&arn).send().await,
    );
    assert_eq!(describe(&client, &key).await.key_state(), Some(&KeyState::Disabled));
    // The maximum window is valid too.
    let out = must(
        "ScheduleKeyDeletion 30 days",
        client
            .schedule_key_deletion()
            .key_id(&other)
            .pending_window_in_days(30)
            .send()
            .await,
    );
    assert_eq!(out.pending_window_in_days(), Some(30));

    // Cancelling / scheduling unknown keys.
    let unknown = uuid::Uuid::new_v4().to_string();
    expect_error(
        "ScheduleKeyDeletion unknown",
        client.schedule_key_deletion().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
    expect_error(
        "CancelKeyDeletion unknown",
        client.cancel_key_deletion().key_id(&unknown).send().await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_key_description() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "before").await;

    let description = format!("after {}", random_alnum(10));
    must(
        "UpdateKeyDescription",
        client
            .update_key_description()
            .key_id(&key)
            .description(&description)
            .send()
            .await,
    );
    assert_eq!(describe(&client, &key).await.description(), Some(description.as_str()));

    let longest = "d".repeat(8192);
    must(
        "UpdateKeyDescription of 8192 characters (by ARN)",
        client
            .update_key_description()
            .key_id(key_arn(&key))
            .description(&longest)
            .send()
            .await,
    );
    assert_eq!(describe(&client, &key).await.description(), Some(longest.as_str()));

    let r = client
        .update_key_description()
        .key_id(&key)
        .description("d".repeat(8193))
        .send()
        .await;
    expect_error("UpdateKeyDescription of 8193 characters", r, 400, VALIDATION);
    assert_eq!(
        describe(&client, &key).await.description(),
        Some(longest.as_str()),
        "a rejected UpdateKeyDescription changed the description"
    );

    must(
        "UpdateKeyDescription to empty",
        client
            .update_key_description()
            .key_id(&key)
            .description("")
            .send()
            .await,
    );
    assert_eq!(describe(&client, &key).await.description().unwrap_or(""), "");

    let r = client
        .update_key_description()
        .key_id(uuid::Uuid::new_v4().to_string())
        .description("x")
        .send()
        .await;
    expect_error("UpdateKeyDescription unknown key", r, 400, "NotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_key_metadata_is_complete() {
    let kw = Service::start().await;
    let client = kw.client();

    struct Expected {
        spec: KeySpec,
        usage: Option<KeyUsageType>,
        want_usage: KeyUsageType,
        encryption: Vec<EncryptionAlgorithmSpec>,
        signing: Vec<SigningAlgorithmSpec>,
        agreement: Vec<KeyAgreementAlgorithmSpec>,
        mac: Vec<MacAlgorithmSpec>,
    }
    let none = || Expected {
        spec: KeySpec::SymmetricDefault,
        usage: None,
        want_usage: KeyUsageType::EncryptDecrypt,
        encryption: vec![],
        signing: vec![],
        agreement: vec![],
        mac: vec![],
    };
    let hmac = |spec: KeySpec, alg: MacAlgorithmSpec| Expected {
        spec,
        usage: Some(KeyUsageType::GenerateVerifyMac),
        want_usage: KeyUsageType::GenerateVerifyMac,
        mac: vec![alg],
        ..none()
    };
    let cases = [
        Expected {
            encryption: vec![EncryptionAlgorithmSpec::SymmetricDefault],
            ..none()
        },
        Expected {
            spec: KeySpec::EccNistP256,
            want_usage: KeyUsageType::SignVerify,
            signing: vec![SigningAlgorithmSpec::EcdsaSha256],
            ..none()
        },
        Expected {
            spec: KeySpec::EccNistP256,
            usage: Some(KeyUsageType::KeyAgreement),
            want_usage: KeyUsageType::KeyAgreement,
            agreement: vec![KeyAgreementAlgorithmSpec::Ecdh],
            ..none()
        },
        hmac(KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224),
        hmac(KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256),
        hmac(KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384),
        hmac(KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512),
    ];
    for case in cases {
        let what = format!("{:?} {:?}", case.spec, case.want_usage);
        let key = create_key_of(&client, case.spec.clone(), case.usage.clone()).await;
        let now = epoch_secs(kw.now());
        let m = describe(&client, &key).await;
        assert_eq!(m.key_id(), key, "{what}: KeyId");
        assert_eq!(m.arn(), Some(key_arn(&key).as_str()), "{what}: Arn");
        assert_near(&format!("{what}: CreationDate"), m.creation_date(), now, 300);
        assert_eq!(m.key_state(), Some(&KeyState::Enabled), "{what}: KeyState");
        assert!(m.enabled(), "{what}: Enabled");
        assert_eq!(m.key_spec(), Some(&case.spec), "{what}: KeySpec");
        assert_eq!(m.key_usage(), Some(&case.want_usage), "{what}: KeyUsage");
        assert_eq!(
            m.encryption_algorithms(),
            case.encryption,
            "{what}: EncryptionAlgorithms"
        );
        assert_eq!(m.signing_algorithms(), case.signing, "{what}: SigningAlgorithms");
        assert_eq!(
            m.key_agreement_algorithms(),
            case.agreement,
            "{what}: KeyAgreementAlgorithms"
        );
        assert_eq!(m.mac_algorithms(), case.mac, "{what}: MacAlgorithms");
        assert!(m.deletion_date().is_none(), "{what}: DeletionDate of an Enabled key");
        assert_eq!(m.origin(), Some(&OriginType::AwsKms), "{what}: Origin");
        assert_eq!(m.multi_region(), Some(false), "{what}: MultiRegion");
        assert_eq!(m.key_manager(), Some(&KeyManagerType::Customer), "{what}: KeyManager");

        // Pending deletion: DeletionDate is shown.
        let out = must(
            &format!("{what}: ScheduleKeyDeletion"),
            client
                .schedule_key_deletion()
                .key_id(&key)
                .pending_window_in_days(10)
                .send()
                .await,
        );
        let m = describe(&client, &key).await;
        assert_eq!(m.key_state(), Some(&KeyState::PendingDeletion), "{what}: KeyState");
        assert_eq!(m.deletion_date(), out.deletion_date(), "{what}: DeletionDate");
        assert_near(&format!("{what}: DeletionDate"), m.deletion_date(), now + 10 * DAY, 600);
    }
}

/// A syntactically valid DER ECDSA P-256 signature of `message` by a random
/// local key, and a random peer public key (SPKI DER).
fn local_signature_and_peer(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let signer = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let signature: p256::ecdsa::Signature = signer.sign(message);
    let peer = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = peer.public_key().to_public_key_der().expect("SPKI DER");
    (signature.to_der().as_bytes().to_vec(), spki.as_bytes().to_vec())
}

/// Sign, Verify, GetPublicKey (signing key), DeriveSharedSecret (agreement
/// key), GenerateMac and VerifyMac (HMAC key) all fail with `code`.
async fn expect_other_uses_fail(client: &aws_sdk_kms::Client, sign: &str, agree: &str, hmac: &str, code: &str) {
    let message = random_bytes(40);
    let (signature, peer) = local_signature_and_peer(&message);
    let r = client
        .sign()
        .key_id(sign)
        .message(Blob::new(message.clone()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await;
    expect_error("Sign", r, 400, code);
    let r = client
        .verify()
        .key_id(sign)
        .message(Blob::new(message.clone()))
        .message_type(MessageType::Raw)
        .signature(Blob::new(signature))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await;
    expect_error("Verify", r, 400, code);
    for key in [sign, agree] {
        let r = client.get_public_key().key_id(key).send().await;
        expect_error(&format!("GetPublicKey {key}"), r, 400, code);
    }
    let r = client
        .derive_shared_secret()
        .key_id(agree)
        .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
        .public_key(Blob::new(peer))
        .send()
        .await;
    expect_error("DeriveSharedSecret", r, 400, code);
    let r = client
        .generate_mac()
        .key_id(hmac)
        .message(Blob::new(message.clone()))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await;
    expect_error("GenerateMac", r, 400, code);
    let r = client
        .verify_mac()
        .key_id(hmac)
        .message(Blob::new(message))
        .mac(Blob::new(random_bytes(32)))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await;
    expect_error("VerifyMac", r, 400, code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_and_hmac_keys_disabled_and_pending() {
    let kw = Service::start().await;
    let client = kw.client();
    let sign = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    let agree = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;
    let hmac = create_key_of(&client, KeySpec::Hmac256, Some(KeyUsageType::GenerateVerifyMac)).await;

    for key in [&sign, &agree, &hmac] {
        must("DisableKey", client.disable_key().key_id(key).send().await);
    }
    expect_other_uses_fail(&client, &sign, &agree, &hmac, DISABLED).await;

    for key in [&sign, &agree, &hmac] {
        must(
            "ScheduleKeyDeletion",
            client
                .schedule_key_deletion()
                .key_id(key)
                .pending_window_in_days(7)
                .send()
                .await,
        );
    }
    expect_other_uses_fail(&client, &sign, &agree, &hmac, INVALID_STATE).await;

    // Cancelled and re-enabled, they work again.
    for key in [&sign, &agree, &hmac] {
        must(
            "CancelKeyDeletion",
            client.cancel_key_deletion().key_id(key).send().await,
        );
        must("EnableKey", client.enable_key().key_id(key).send().await);
    }
    for key in [&sign, &agree] {
        must(
            "GetPublicKey after re-enabling",
            client.get_public_key().key_id(key).send().await,
        );
    }
    must(
        "GenerateMac after re-enabling",
        client
            .generate_mac()
            .key_id(&hmac)
            .message(Blob::new(b"m".to_vec()))
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .send()
            .await,
    );
}
