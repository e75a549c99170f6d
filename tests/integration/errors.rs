//! Every documented error, with its exact `__type` and status.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec};

use crate::harness::{Keyward, Sandbox, create_key, decrypt, encrypt, expect_error, random_bytes};

const VALIDATION: &str = "ValidationException";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let client = kw.client();
    let key_id = create_key(&client, "validation").await;

    for n in [0usize, 4097] {
        let result = client
            .encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(random_bytes(n)))
            .send()
            .await;
        expect_error(&format!("Encrypt of {n} bytes"), result, 400, VALIDATION);
    }
    for n in [0, 1025] {
        let result = client.generate_random().number_of_bytes(n).send().await;
        expect_error(&format!("GenerateRandom {n}"), result, 400, VALIDATION);
        let result = client
            .generate_data_key()
            .key_id(&key_id)
            .number_of_bytes(n)
            .send()
            .await;
        expect_error(&format!("GenerateDataKey NumberOfBytes {n}"), result, 400, VALIDATION);
        let result = client
            .generate_data_key_without_plaintext()
            .key_id(&key_id)
            .number_of_bytes(n)
            .send()
            .await;
        expect_error(
            &format!("GenerateDataKeyWithoutPlaintext NumberOfBytes {n}"),
            result,
            400,
            VALIDATION,
        );
    }

    let result = client
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::from("AES_512"))
        .send()
        .await;
    expect_error("GenerateDataKey KeySpec AES_512", result, 400, VALIDATION);
    let result = client.generate_data_key().key_id(&key_id).send().await;
    expect_error(
        "GenerateDataKey with neither KeySpec nor NumberOfBytes",
        result,
        400,
        VALIDATION,
    );
    let result = client
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes256)
        .number_of_bytes(32)
        .send()
        .await;
    expect_error(
        "GenerateDataKey with both KeySpec and NumberOfBytes",
        result,
        400,
        VALIDATION,
    );
    let result = client
        .generate_data_key_without_plaintext()
        .key_id(&key_id)
        .send()
        .await;
    expect_error(
        "GenerateDataKeyWithoutPlaintext with neither KeySpec nor NumberOfBytes",
        result,
        400,
        VALIDATION,
    );
    let result = client
        .generate_data_key_without_plaintext()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes128)
        .number_of_bytes(16)
        .send()
        .await;
    expect_error("GenerateDataKeyWithoutPlaintext with both", result, 400, VALIDATION);

    let result = client
        .create_key()
        .key_spec(KeySpec::from("NOT_A_KEY_SPEC"))
        .send()
        .await;
    expect_error("CreateKey KeySpec NOT_A_KEY_SPEC", result, 400, VALIDATION);

    for limit in [0, 1001] {
        let result = client.list_keys().limit(limit).send().await;
        expect_error(&format!("ListKeys Limit {limit}"), result, 400, VALIDATION);
    }

    // The rejected CreateKey created nothing; the service still works.
    let keys = client.list_keys().send().await.expect("ListKeys");
    assert_eq!(
        keys.keys().len(),
        1,
        "a rejected CreateKey created a key: {:?}",
        keys.keys()
    );
    let plaintext = random_bytes(4096);
    let ciphertext = encrypt(&client, &key_id, &plaintext, None).await;
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_errors() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let client = kw.client();
    let existing = create_key(&client, "exists").await;

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_ne!(unknown, existing);
    let unknown_arn = Keyward::key_arn(&unknown);
    for id in [unknown.as_str(), unknown_arn.as_str(), "alias/nope"] {
        let result = client.describe_key().key_id(id).send().await;
        expect_error(&format!("DescribeKey {id}"), result, 400, "NotFoundException");
        let result = client
            .encrypt()
            .key_id(id)
            .plaintext(Blob::new(random_bytes(8)))
            .send()
            .await;
        expect_error(&format!("Encrypt under {id}"), result, 400, "NotFoundException");
        let result = client
            .generate_data_key()
            .key_id(id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await;
        expect_error(&format!("GenerateDataKey under {id}"), result, 400, "NotFoundException");
        let result = client
            .generate_data_key_without_plaintext()
            .key_id(id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await;
        expect_error(
            &format!("GenerateDataKeyWithoutPlaintext under {id}"),
            result,
            400,
            "NotFoundException",
        );
    }
    // The existing key is unaffected (the NotFound is about the id, not the service).
    client
        .describe_key()
        .key_id(&existing)
        .send()
        .await
        .expect("DescribeKey existing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertext_errors() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let client = kw.client();
    let key_a = create_key(&client, "a").await;
    let key_b = create_key(&client, "b").await;

    let plaintext = random_bytes(64);
    let ciphertext = encrypt(&client, &key_a, &plaintext, None).await;
    assert!(
        ciphertext.len() >= 64 + 16,
        "ciphertext of 64 bytes is only {} bytes",
        ciphertext.len()
    );

    // Flip a bit in the authentication tag and in the encrypted body.
    for (what, at) in [
        ("last byte", ciphertext.len() - 1),
        ("20th byte from the end", ciphertext.len() - 20),
    ] {
        let mut tampered = ciphertext.clone();
        tampered[at] ^= 0x01;
        let result = client
            .decrypt()
            .ciphertext_blob(Blob::new(tampered.clone()))
            .send()
            .await;
        expect_error(
            &format!("Decrypt with tampered {what}"),
            result,
            400,
            "InvalidCiphertextException",
        );
        let result = client
            .decrypt()
            .key_id(&key_a)
            .ciphertext_blob(Blob::new(tampered))
            .send()
            .await;
        expect_error(
            &format!("Decrypt (KeyId) with tampered {what}"),
            result,
            400,
            "InvalidCiphertextException",
        );
    }
    // Truncated to nothing useful.
    let result = client
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext[..ciphertext.len() - 17].to_vec()))
        .send()
        .await;
    expect_error(
        "Decrypt truncated ciphertext",
        result,
        400,
        "InvalidCiphertextException",
    );

    // The ciphertext is key A's; naming key B (uuid or ARN) is an IncorrectKeyException.
    for id in [key_b.clone(), Keyward::key_arn(&key_b)] {
        let result = client
            .decrypt()
            .key_id(&id)
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await;
        expect_error(
            &format!("Decrypt naming the wrong key {id}"),
            result,
            400,
            "IncorrectKeyException",
        );
    }

    // The untouched ciphertext still decrypts.
    assert_eq!(decrypt(&client, Some(&key_a), &ciphertext, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_errors() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;

    // Control: the raw signer produces requests the service accepts.
    let ok = kw.signed_call("GenerateRandom", br#"{"NumberOfBytes":16}"#).await;
    assert_eq!(
        ok.status,
        200,
        "signed raw GenerateRandom: {}",
        String::from_utf8_lossy(&ok.body)
    );
    let b64 = ok.json()["Plaintext"]
        .as_str()
        .expect("Plaintext is a string")
        .to_string();
    let random = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("Plaintext is base64");
    assert_eq!(random.len(), 16);

    for body in [&b"{not json"[..], b"[1,2", b"{\"NumberOfBytes\":", b"\xff\xfe"] {
        let resp = kw.signed_call("GenerateRandom", body).await;
        resp.assert_error(
            &format!("malformed body {:?}", String::from_utf8_lossy(body)),
            400,
            "SerializationException",
        );
    }

    for target in ["TrentService.FlyToTheMoon", "NotTrentService.Encrypt"] {
        let resp = kw.signed_call_target(target, b"{}").await;
        resp.assert_error(&format!("unknown target {target}"), 400, "UnknownOperationException");
    }
}
