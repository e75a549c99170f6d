//! ECC_NIST_P256 keys (Sign / Verify / GetPublicKey / DeriveSharedSecret),
//! checked independently with the `p256` crate; key-usage errors; CreateKey
//! spec validation; and GenerateDataKeyPair(WithoutPlaintext).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{
    DataKeyPairSpec, DataKeySpec, KeyAgreementAlgorithmSpec, KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec,
};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use sha2::Digest;

use crate::support::{
    ACCOUNT, REGION, Service, context, create_key, create_key_of, decrypt, encrypt, expect_error, key_arn, must,
    names_key, random_alnum, random_bytes,
};

const INVALID_USAGE: &str = "InvalidKeyUsageException";
const INVALID_SIGNATURE: &str = "KMSInvalidSignatureException";

fn parse_spki(what: &str, der: &[u8]) -> p256::PublicKey {
    p256::PublicKey::from_public_key_der(der)
        .unwrap_or_else(|e| panic!("{what}: not a P-256 SubjectPublicKeyInfo DER ({e}): {}", hex(der)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn public_key(client: &aws_sdk_kms::Client, key: &str) -> p256::PublicKey {
    let out = must(
        &format!("GetPublicKey {key}"),
        client.get_public_key().key_id(key).send().await,
    );
    parse_spki("GetPublicKey", out.public_key().expect("PublicKey").as_ref())
}

async fn sign(client: &aws_sdk_kms::Client, key: &str, message: &[u8], kind: MessageType) -> Vec<u8> {
    let out = must(
        &format!("Sign {kind:?}"),
        client
            .sign()
            .key_id(key)
            .message(Blob::new(message))
            .message_type(kind.clone())
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await,
    );
    assert!(names_key(out.key_id(), key), "Sign KeyId {:?}", out.key_id());
    assert_eq!(
        out.signing_algorithm(),
        Some(&SigningAlgorithmSpec::EcdsaSha256),
        "Sign SigningAlgorithm"
    );
    out.signature().expect("Signature").as_ref().to_vec()
}

async fn verify(
    client: &aws_sdk_kms::Client,
    key: &str,
    message: &[u8],
    kind: MessageType,
    signature: &[u8],
) -> Result<
    aws_sdk_kms::operation::verify::VerifyOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::verify::VerifyError>,
> {
    client
        .verify()
        .key_id(key)
        .message(Blob::new(message))
        .message_type(kind)
        .signature(Blob::new(signature))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecc_sign_and_verify() {
    let kw = Service::start().await;
    let client = kw.client();
    // No KeyUsage: SIGN_VERIFY is the default for ECC_NIST_P256.
    let key = create_key_of(&client, KeySpec::EccNistP256, None).await;

    let out = must("GetPublicKey", client.get_public_key().key_id(&key).send().await);
    assert!(names_key(out.key_id(), &key), "GetPublicKey KeyId {:?}", out.key_id());
    assert_eq!(out.key_spec(), Some(&KeySpec::EccNistP256), "GetPublicKey KeySpec");
    assert_eq!(
        out.key_usage(),
        Some(&KeyUsageType::SignVerify),
        "GetPublicKey KeyUsage"
    );
    assert_eq!(
        out.signing_algorithms(),
        [SigningAlgorithmSpec::EcdsaSha256],
        "GetPublicKey SigningAlgorithms"
    );
    let der = out.public_key().expect("PublicKey").as_ref().to_vec();
    let public = parse_spki("GetPublicKey", &der);
    assert_eq!(
        public.to_public_key_der().expect("re-encode").as_bytes(),
        der.as_slice(),
        "GetPublicKey is not canonical SPKI DER"
    );
    let verifier = VerifyingKey::from(&public);
    // By ARN, alias name and alias ARN: the same public key; signatures by
    // alias verify.
    assert_eq!(public_key(&client, &key_arn(&key)).await, public);
    let alias = format!("alias/signer-{}", random_alnum(8));
    must(
        "CreateAlias",
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&key)
            .send()
            .await,
    );
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:{alias}");
    for id in [&alias, &alias_arn] {
        assert_eq!(public_key(&client, id).await, public, "GetPublicKey {id}");
        let out = must(
            &format!("Sign via {id}"),
            client
                .sign()
                .key_id(id)
                .message(Blob::new(b"by alias".to_vec()))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await,
        );
        assert!(names_key(out.key_id(), &key), "Sign via {id}: KeyId {:?}", out.key_id());
        let signature = out.signature().expect("Signature").as_ref().to_vec();
        verifier
            .verify(b"by alias", &Signature::from_der(&signature).expect("DER signature"))
            .expect("p256 verifies a signature made via an alias");
        let out = must(
            &format!("Verify via {id}"),
            verify(&client, id, b"by alias", MessageType::Raw, &signature).await,
        );
        assert!(out.signature_valid(), "Verify via {id}");
    }

    for message in [random_bytes(1), random_bytes(100), random_bytes(4096)] {
        let n = message.len();
        let signature = sign(&client, &key, &message, MessageType::Raw).await;
        let parsed = Signature::from_der(&signature).unwrap_or_else(|e| {
            panic!(
                "Sign RAW {n} bytes: not a DER ECDSA signature ({e}): {}",
                hex(&signature)
            )
        });
        verifier
            .verify(&message, &parsed)
            .unwrap_or_else(|e| panic!("Sign RAW {n} bytes: p256 rejects the signature: {e}"));
        let out = must(
            "Verify RAW",
            verify(&client, &key, &message, MessageType::Raw, &signature).await,
        );
        assert!(out.signature_valid(), "Verify RAW {n} bytes: SignatureValid");
        assert!(names_key(out.key_id(), &key), "Verify KeyId {:?}", out.key_id());

        // Tampered message, tampered signature.
        let mut other = message.clone();
        other[0] ^= 0x80;
        expect_error(
            &format!("Verify RAW {n} bytes, tampered message"),
            verify(&client, &key, &other, MessageType::Raw, &signature).await,
            400,
            INVALID_SIGNATURE,
        );
        let mut bad = signature.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        expect_error(
            &format!("Verify RAW {n} bytes, tampered signature"),
            verify(&client, &key, &message, MessageType::Raw, &bad).await,
            400,
            INVALID_SIGNATURE,
        );
    }

    // DIGEST: the caller hashes; the signature is over the same SHA-256.
    let message = random_bytes(300);
    let digest = sha2::Sha256::digest(&message).to_vec();
    let signature = sign(&client, &key, &digest, MessageType::Digest).await;
    let parsed = Signature::from_der(&signature).expect("DER signature of a digest");
    verifier
        .verify_prehash(&digest, &parsed)
        .expect("p256 verifies the DIGEST signature");
    verifier
        .verify(&message, &parsed)
        .expect("p256 verifies the DIGEST signature over the message");
    let out = must(
        "Verify DIGEST",
        verify(&client, &key, &digest, MessageType::Digest, &signature).await,
    );
    assert!(out.signature_valid(), "Verify DIGEST");
    let out = must(
        "Verify RAW of a DIGEST signature",
        verify(&client, &key, &message, MessageType::Raw, &signature).await,
    );
    assert!(out.signature_valid(), "Verify RAW message of a DIGEST signature");

    // A signature by another key (a second KMS key) is not valid for this one.
    let key2 = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    assert_ne!(public_key(&client, &key2).await, public, "two keys share a public key");
    let foreign = sign(&client, &key2, &message, MessageType::Raw).await;
    expect_error(
        "Verify of another key's signature",
        verify(&client, &key, &message, MessageType::Raw, &foreign).await,
        400,
        INVALID_SIGNATURE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecc_key_agreement() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;

    let out = must("GetPublicKey", client.get_public_key().key_id(&key).send().await);
    assert_eq!(
        out.key_usage(),
        Some(&KeyUsageType::KeyAgreement),
        "GetPublicKey KeyUsage"
    );
    assert_eq!(
        out.key_agreement_algorithms(),
        [KeyAgreementAlgorithmSpec::Ecdh],
        "GetPublicKey KeyAgreementAlgorithms"
    );
    let kms_public = parse_spki("GetPublicKey", out.public_key().expect("PublicKey").as_ref());

    let mut secrets = Vec::new();
    for _ in 0..2 {
        let peer = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let peer_spki = peer.public_key().to_public_key_der().expect("SPKI DER");
        let out = must(
            "DeriveSharedSecret",
            client
                .derive_shared_secret()
                .key_id(&key)
                .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
                .public_key(Blob::new(peer_spki.as_bytes()))
                .send()
                .await,
        );
        assert!(
            names_key(out.key_id(), &key),
            "DeriveSharedSecret KeyId {:?}",
            out.key_id()
        );
        let shared = out.shared_secret().expect("SharedSecret").as_ref().to_vec();
        let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), kms_public.as_affine());
        assert_eq!(
            hex(&shared),
            hex(expected.raw_secret_bytes().as_slice()),
            "SharedSecret differs from the peer's ECDH result"
        );
        secrets.push(shared);
    }
    assert_ne!(secrets[0], secrets[1], "two peers got the same shared secret");

    // Through an alias, for a third peer.
    let alias = format!("alias/agree-{}", random_alnum(8));
    must(
        "CreateAlias",
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(&key)
            .send()
            .await,
    );
    let peer = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let out = must(
        "DeriveSharedSecret via alias",
        client
            .derive_shared_secret()
            .key_id(&alias)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(
                peer.public_key().to_public_key_der().expect("SPKI").as_bytes(),
            ))
            .send()
            .await,
    );
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), kms_public.as_affine());
    assert_eq!(
        out.shared_secret().map(|s| hex(s.as_ref())),
        Some(hex(expected.raw_secret_bytes().as_slice())),
        "SharedSecret via alias"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_usage_is_rejected() {
    let kw = Service::start().await;
    let client = kw.client();
    let signing = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::SignVerify)).await;
    let agreement = create_key_of(&client, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;
    let symmetric = create_key(&client, "symmetric").await;
    let message = random_bytes(32);
    let peer = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
        .public_key()
        .to_public_key_der()
        .expect("SPKI DER");

    for key in [&agreement, &symmetric] {
        let r = client
            .sign()
            .key_id(key)
            .message(Blob::new(message.clone()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await;
        expect_error(&format!("Sign with {key}"), r, 400, INVALID_USAGE);
    }
    for key in [&signing, &symmetric] {
        let r = client
            .derive_shared_secret()
            .key_id(key)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer.as_bytes()))
            .send()
            .await;
        expect_error(&format!("DeriveSharedSecret with {key}"), r, 400, INVALID_USAGE);
    }
    for key in [&signing, &agreement] {
        let r = client
            .encrypt()
            .key_id(key)
            .plaintext(Blob::new(message.clone()))
            .send()
            .await;
        expect_error(&format!("Encrypt with ECC key {key}"), r, 400, INVALID_USAGE);
        let r = client
            .generate_data_key()
            .key_id(key)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await;
        expect_error(&format!("GenerateDataKey with ECC key {key}"), r, 400, INVALID_USAGE);
    }
    // The keys still work for what they are for.
    let ct = encrypt(&client, &symmetric, &message, None).await;
    assert_eq!(decrypt(&client, None, &ct, None).await, message);
    must(
        "Sign with the signing key",
        client
            .sign()
            .key_id(&signing)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_key_spec_validation() {
    let kw = Service::start().await;
    let client = kw.client();

    for usage in [None, Some(KeyUsageType::SignVerify), Some(KeyUsageType::EncryptDecrypt)] {
        let r = client
            .create_key()
            .key_spec(KeySpec::Rsa2048)
            .set_key_usage(usage.clone())
            .send()
            .await;
        expect_error(
            &format!("CreateKey RSA_2048 {usage:?}"),
            r,
            400,
            "UnsupportedOperationException",
        );
    }
    for spec in ["ECC_NIST_P257", "rsa_2048", ""] {
        let r = client.create_key().key_spec(KeySpec::from(spec)).send().await;
        expect_error(&format!("CreateKey KeySpec {spec:?}"), r, 400, "ValidationException");
    }
    let r = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await;
    expect_error("CreateKey ECC_NIST_P256 ENCRYPT_DECRYPT", r, 400, "ValidationException");
    let listed = must("ListKeys", client.list_keys().send().await);
    assert!(
        listed.keys().is_empty(),
        "rejected CreateKey calls created keys: {:?}",
        listed.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_data_key_pair() {
    let kw = Service::start().await;
    let client = kw.client();
    let key = create_key(&client, "wrapping key").await;
    let ctx = context(&[("pair", "test")]);

    let out = must(
        "GenerateDataKeyPair",
        client
            .generate_data_key_pair()
            .key_id(&key)
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await,
    );
    assert!(
        names_key(out.key_id(), &key),
        "GenerateDataKeyPair KeyId {:?}",
        out.key_id()
    );
    assert_eq!(out.key_pair_spec(), Some(&DataKeyPairSpec::EccNistP256), "KeyPairSpec");
    let private_der = out
        .private_key_plaintext()
        .expect("PrivateKeyPlaintext")
        .as_ref()
        .to_vec();
    let private_blob = out
        .private_key_ciphertext_blob()
        .expect("PrivateKeyCiphertextBlob")
        .as_ref()
        .to_vec();
    let public = parse_spki(
        "GenerateDataKeyPair PublicKey",
        out.public_key().expect("PublicKey").as_ref(),
    );
    let secret = p256::SecretKey::from_pkcs8_der(&private_der)
        .unwrap_or_else(|e| panic!("PrivateKeyPlaintext is not P-256 PKCS#8 DER: {e}"));
    assert_eq!(
        secret.public_key(),
        public,
        "PublicKey does not match PrivateKeyPlaintext"
    );
    assert_eq!(
        decrypt(&client, None, &private_blob, Some(&ctx)).await,
        private_der,
        "Decrypt(PrivateKeyCiphertextBlob)"
    );
    assert_eq!(
        decrypt(&client, Some(&key), &private_blob, Some(&ctx)).await,
        private_der
    );
    expect_error(
        "Decrypt of the private key blob without its context",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(private_blob.clone()))
            .send()
            .await,
        400,
        "InvalidCiphertextException",
    );
    // The pair is usable: sign with the private key, verify with the public one.
    let signer = p256::ecdsa::SigningKey::from(&secret);
    let signature: Signature = p256::ecdsa::signature::Signer::sign(&signer, b"pair");
    VerifyingKey::from(&public)
        .verify(b"pair", &signature)
        .expect("data key pair signs and verifies");

    // WithoutPlaintext: the blob decrypts to a PKCS#8 key matching PublicKey.
    let out = must(
        "GenerateDataKeyPairWithoutPlaintext",
        client
            .generate_data_key_pair_without_plaintext()
            .key_id(key_arn(&key))
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .send()
            .await,
    );
    assert!(names_key(out.key_id(), &key), "KeyId {:?}", out.key_id());
    assert_eq!(out.key_pair_spec(), Some(&DataKeyPairSpec::EccNistP256), "KeyPairSpec");
    let public2 = parse_spki(
        "WithoutPlaintext PublicKey",
        out.public_key().expect("PublicKey").as_ref(),
    );
    let blob = out
        .private_key_ciphertext_blob()
        .expect("PrivateKeyCiphertextBlob")
        .as_ref()
        .to_vec();
    let private2 = decrypt(&client, None, &blob, None).await;
    let secret2 = p256::SecretKey::from_pkcs8_der(&private2).expect("decrypted blob is P-256 PKCS#8 DER");
    assert_eq!(
        secret2.public_key(),
        public2,
        "PublicKey does not match the decrypted private key"
    );
    assert_ne!(public2, public, "two data key pairs are the same");
    // On the wire: no PrivateKeyPlaintext at all.
    let body = serde_json::json!({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"}).to_string();
    let resp = kw
        .signed_call("GenerateDataKeyPairWithoutPlaintext", body.as_bytes())
        .await;
    assert_eq!(
        resp.status,
        200,
        "raw GenerateDataKeyPairWithoutPlaintext: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let json = resp.json();
    assert!(
        json.get("PrivateKeyPlaintext").is_none(),
        "GenerateDataKeyPairWithoutPlaintext returned a PrivateKeyPlaintext"
    );
    for field in ["PrivateKeyCiphertextBlob", "PublicKey", "KeyId", "KeyPairSpec"] {
        assert!(
            json.get(field).is_some(),
            "GenerateDataKeyPairWithoutPlaintext has no {field}: {json}"
        );
    }

    for spec in [DataKeyPairSpec::Rsa2048] {
        expect_error(
            &format!("GenerateDataKeyPair {spec:?}"),
            client
                .generate_data_key_pair()
                .key_id(&key)
                .key_pair_spec(spec.clone())
                .send()
                .await,
            400,
            "UnsupportedOperationException",
        );
        expect_error(
            &format!("GenerateDataKeyPairWithoutPlaintext {spec:?}"),
            client
                .generate_data_key_pair_without_plaintext()
                .key_id(&key)
                .key_pair_spec(spec.clone())
                .send()
                .await,
            400,
            "UnsupportedOperationException",
        );
    }
}
