//! Keys and ciphertexts survive a clean restart on the same data dir.

use std::collections::{HashMap, HashSet};

use aws_sdk_kms::types::{DataKeySpec, KeyState};

use crate::harness::{
    Keyward, Sandbox, context, create_key, decrypt, encrypt, process_gone, random_alnum, random_bytes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_ciphertexts_survive_restart() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let client = kw.client();

    // Three keys, each with a ciphertext; one with an encryption context; and
    // a data key.
    let mut descriptions = HashMap::new();
    let mut ciphertexts = Vec::new();
    let ctx = context(&[("app", &random_alnum(6))]);
    for i in 0..3 {
        let description = format!("persisted {i} {}", random_alnum(8));
        let key_id = create_key(&client, &description).await;
        let plaintext = random_bytes(32 + i);
        let use_ctx = (i == 1).then_some(&ctx);
        let ciphertext = encrypt(&client, &key_id, &plaintext, use_ctx).await;
        ciphertexts.push((key_id.clone(), plaintext, ciphertext, use_ctx.cloned()));
        descriptions.insert(key_id, description);
    }
    let first_key = ciphertexts[0].0.clone();
    let data_key = client
        .generate_data_key()
        .key_id(&first_key)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .expect("GenerateDataKey");
    let data_key_plain = data_key.plaintext().expect("Plaintext").as_ref().to_vec();
    let data_key_blob = data_key.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();

    let first_enclave = kw.enclave_pid;
    let status = kw.stop();
    assert_eq!(status.code(), Some(0), "keyward must exit 0 on SIGTERM, got {status}");
    assert!(
        process_gone(first_enclave),
        "enclave {first_enclave} outlived the launcher"
    );
    drop(kw);

    // Same data dir, same credentials.
    let kw = sb.start().await;
    let client = kw.client();

    for (key_id, plaintext, ciphertext, ctx) in &ciphertexts {
        assert_eq!(
            &decrypt(&client, None, ciphertext, ctx.as_ref()).await,
            plaintext,
            "old ciphertext under {key_id}"
        );
        assert_eq!(
            &decrypt(&client, Some(key_id), ciphertext, ctx.as_ref()).await,
            plaintext,
            "old ciphertext under {key_id} (with KeyId)"
        );
    }
    assert_eq!(
        decrypt(&client, None, &data_key_blob, None).await,
        data_key_plain,
        "old data key"
    );

    let listed = client.list_keys().send().await.expect("ListKeys after restart");
    let listed: HashSet<String> = listed
        .keys()
        .iter()
        .filter_map(|e| e.key_id().map(str::to_string))
        .collect();
    let expected: HashSet<String> = descriptions.keys().cloned().collect();
    assert_eq!(listed, expected, "ListKeys after restart");

    for (key_id, description) in &descriptions {
        let out = client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .expect("DescribeKey after restart");
        let m = out.key_metadata().expect("KeyMetadata");
        assert_eq!(m.key_id(), key_id);
        assert_eq!(m.arn(), Some(Keyward::key_arn(key_id).as_str()));
        assert_eq!(
            m.description(),
            Some(description.as_str()),
            "Description of {key_id} after restart"
        );
        assert_eq!(m.key_state(), Some(&KeyState::Enabled));
    }

    // Old keys still encrypt, and new keys can be made alongside them.
    let plaintext = random_bytes(20);
    let ciphertext = encrypt(&client, &first_key, &plaintext, None).await;
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);
    let new_key = create_key(&client, "after restart").await;
    assert!(!descriptions.contains_key(&new_key), "a new key reused an old KeyId");
    let listed = client.list_keys().send().await.expect("ListKeys");
    assert_eq!(listed.keys().len(), 4);
}
