//! Each hole of issue 20 closed (every test here failed before): a policy
//! without measurements, PCRs without a Recipient, GenerateMac, the tenant's
//! default attestation policy, ReEncrypt's two contexts, the tenant's
//! default module on operations that load no key.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec, DataKeySpec, KeySpec, KeyUsageType, MacAlgorithmSpec};
use keyward_enclave::attestation::mock::default_pcrs;
use keyward_test_support::{b64, unb64};
use serde_json::json;

use super::rule_policy::{allow_if, deny_if, rule_policy, sha256_hex};
use super::{
    call, create_key_json, document, document_with, last_audit, ok, open, other_measurement, pcr0, recipient,
    recipient_json, refused, sdk_refused,
};
use crate::support::{Service, context, create_key, create_key_of, encrypt, key_arn, must};

const DENIED: &str = "AccessDeniedException";
const INVALID: &str = "ValidationException";

/// `RequireRecipient` without a measurement used to admit any Nitro enclave
/// of any AWS account: now refused, unless the policy says
/// `AllowAnyEnclave: true` (weak: warned in the answer and the audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_measurements_is_refused_unless_it_allows_any_enclave() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "attested").await;

    let message = refused(
        "UpdateKeyAttestationPolicy RequireRecipient without PCRs",
        &call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "RequireRecipient": true }),
        )
        .await,
        INVALID,
    );
    assert!(message.contains("no measurement"), "{message}");
    assert!(message.contains("AllowAnyEnclave"), "{message}");
    refused(
        "CreateKey with RequireRecipient without PCRs",
        &call(
            &kw,
            "CreateKey",
            json!({ "AttestationPolicy": { "RequireRecipient": true } }),
        )
        .await,
        INVALID,
    );
    // Measurements must include the image (PCR0), and only Nitro's PCRs count.
    for (what, body) in [
        (
            "PCR8 without PCR0",
            json!({ "KeyId": key_id, "AllowedPCRs": { "8": [other_measurement(8)] } }),
        ),
        (
            "PCR5",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": [pcr0()], "5": [other_measurement(5)] } }),
        ),
        (
            "a 32-byte value",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": ["00".repeat(32)] } }),
        ),
        (
            "ImageSha384 and PCR0",
            json!({ "KeyId": key_id, "ImageSha384": [pcr0()], "AllowedPCRs": { "0": [pcr0()] } }),
        ),
        (
            "AllowAnyEnclave with PCRs",
            json!({ "KeyId": key_id, "AllowAnyEnclave": true, "AllowedPCRs": { "0": [pcr0()] } }),
        ),
        (
            "RequireRecipient false with PCRs",
            json!({ "KeyId": key_id, "RequireRecipient": false, "AllowedPCRs": { "0": [pcr0()] } }),
        ),
    ] {
        refused(
            what,
            &call(&kw, "Keyward.UpdateKeyAttestationPolicy", body).await,
            INVALID,
        );
    }
    let plaintext = b"still plain: no policy was set";
    let ciphertext = encrypt(&client, &key_id, plaintext, None).await;
    must(
        "Decrypt without a policy",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
    );

    // Saying it explicitly: accepted, with a warning in the answer and the audit.
    let weak = ok(
        "UpdateKeyAttestationPolicy AllowAnyEnclave",
        &call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "AllowAnyEnclave": true }),
        )
        .await,
    );
    assert_eq!(weak["RequireRecipient"], true);
    assert_eq!(weak["AllowAnyEnclave"], true);
    assert_eq!(weak["AllowedPCRs"], json!({}));
    let warning = weak["Warning"].as_str().expect("a Warning");
    assert!(warning.contains("any attested Nitro enclave"), "{warning}");
    let audited = last_audit(&kw, "Keyward.UpdateKeyAttestationPolicy").await;
    assert_eq!(audited["Decision"], "Allow");
    assert!(
        audited["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("AllowAnyEnclave")),
        "{audited}"
    );
    // It still requires a verified Recipient; any enclave's will do.
    sdk_refused(
        "Decrypt without Recipient under AllowAnyEnclave",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        DENIED,
    );
    let mut pcrs = default_pcrs();
    pcrs.insert(0, vec![0x77; 48]);
    let out = must(
        "Decrypt with any enclave's Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .recipient(recipient(&document_with(&kw, &pcrs)))
            .send()
            .await,
    );
    assert_eq!(
        open("Decrypt", out.ciphertext_for_recipient().map(Blob::as_ref)),
        plaintext
    );
    let audited = last_audit(&kw, "TrentService.Decrypt").await;
    assert_eq!(audited["Decision"], "Allow");
    assert!(
        audited["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("AllowAnyEnclave")),
        "a release under AllowAnyEnclave is flagged in the audit: {audited}"
    );
}

/// `AllowedPCRs` alone used to restrict only callers who brought a
/// document: leaving the Recipient out released the plaintext. Now every
/// operation that releases a key-derived secret requires the Recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_pcrs_alone_require_a_recipient_on_every_release() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "image-bound").await;
    let other_key = create_key(&client, "unbound").await;
    let plaintext = b"for the mock image only";
    let ciphertext = encrypt(&client, &key_id, plaintext, None).await;
    let described = ok(
        "UpdateKeyAttestationPolicy AllowedPCRs",
        &call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": [pcr0().to_uppercase()] } }),
        )
        .await,
    );
    assert_eq!(
        described,
        json!({ "KeyId": key_arn(&key_id), "RequireRecipient": true, "AllowedPCRs": { "0": [pcr0()] }, "AllowAnyEnclave": false })
    );

    let message = sdk_refused(
        "Decrypt without Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        DENIED,
    );
    assert!(message.contains("Recipient is required"), "{message}");
    sdk_refused(
        "GenerateDataKey without Recipient",
        client
            .generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
        DENIED,
    );
    sdk_refused(
        "GenerateDataKeyPair without Recipient",
        client
            .generate_data_key_pair()
            .key_id(&key_id)
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .send()
            .await,
        DENIED,
    );
    sdk_refused(
        "ReEncrypt out of the key",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .destination_key_id(&other_key)
            .send()
            .await,
        DENIED,
    );
    // Nothing released: no Recipient needed.
    must(
        "GenerateDataKeyWithoutPlaintext",
        client
            .generate_data_key_without_plaintext()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
    );
    let out = must(
        "Decrypt with the image's Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
    );
    assert!(out.plaintext().is_none());
    assert_eq!(
        open("Decrypt", out.ciphertext_for_recipient().map(Blob::as_ref)),
        plaintext
    );

    // ImageSha384 is AWS's name for PCR0.
    ok(
        "UpdateKeyAttestationPolicy ImageSha384",
        &call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "ImageSha384": [other_measurement(0x42)] }),
        )
        .await,
    );
    let message = sdk_refused(
        "Decrypt with a Recipient of another image",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
        DENIED,
    );
    assert!(message.contains("PCR0"), "{message}");
}

/// GenerateMac used to ignore the key's attestation policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_mac_honours_the_attestation_policy() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key_of(&client, KeySpec::Hmac256, Some(KeyUsageType::GenerateVerifyMac)).await;
    ok(
        "UpdateKeyAttestationPolicy",
        &call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "ImageSha384": [pcr0()] }),
        )
        .await,
    );
    let message = b"a message to authenticate";
    sdk_refused(
        "GenerateMac without Recipient",
        client
            .generate_mac()
            .key_id(&key_id)
            .message(Blob::new(message.as_slice()))
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .send()
            .await,
        DENIED,
    );
    // With the Keyward extension Recipient, the MAC goes to the workload only.
    let out = ok(
        "GenerateMac with Recipient",
        &call(
            &kw,
            "GenerateMac",
            json!({
                "KeyId": key_id,
                "Message": b64(message),
                "MacAlgorithm": "HMAC_SHA_256",
                "Recipient": recipient_json(&document(&kw)),
            }),
        )
        .await,
    );
    assert!(out.get("Mac").is_none(), "{out}");
    let cms = unb64(out["CiphertextForRecipient"].as_str().expect("CiphertextForRecipient"));
    let mac = open("GenerateMac", Some(&cms));
    assert_eq!(mac.len(), 32);
    // It is the key's MAC: VerifyMac (which releases nothing) accepts it.
    must(
        "VerifyMac of the released MAC",
        client
            .verify_mac()
            .key_id(&key_id)
            .message(Blob::new(message.as_slice()))
            .mac(Blob::new(mac))
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .send()
            .await,
    );
}

/// `Keyward.UpdateTenantAttestationPolicy`: the tenant's default governs
/// every key without its own policy, and GenerateRandom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_default_attestation_policy_governs_keys_without_their_own() {
    let kw = Service::start().await;
    let client = kw.client();
    let plain_key = create_key(&client, "no policy of its own").await;
    let own_key = create_key_json(
        &kw,
        json!({ "AttestationPolicy": { "ImageSha384": [other_measurement(0x51)] } }),
    )
    .await;
    let plaintext = b"tenant-wide attested release";
    let under_plain = encrypt(&client, &plain_key, plaintext, None).await;
    let under_own = encrypt(&client, &own_key, plaintext, None).await;

    let set = ok(
        "UpdateTenantAttestationPolicy",
        &call(
            &kw,
            "Keyward.UpdateTenantAttestationPolicy",
            json!({ "AllowedPCRs": { "0": [pcr0()] } }),
        )
        .await,
    );
    assert_eq!(set["RequireRecipient"], true);
    assert_eq!(set["AllowedPCRs"], json!({ "0": [pcr0()] }));

    sdk_refused(
        "Decrypt under a key without its own policy, without Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(under_plain.clone()))
            .send()
            .await,
        DENIED,
    );
    let out = must(
        "Decrypt with the image's Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(under_plain.clone()))
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
    );
    assert_eq!(
        open("Decrypt", out.ciphertext_for_recipient().map(Blob::as_ref)),
        plaintext
    );
    // GenerateRandom releases random bytes under the tenant's default.
    let message = sdk_refused(
        "GenerateRandom without Recipient",
        client.generate_random().number_of_bytes(32).send().await,
        DENIED,
    );
    assert!(message.contains("default attestation policy"), "{message}");
    let random = must(
        "GenerateRandom with Recipient",
        client
            .generate_random()
            .number_of_bytes(32)
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
    );
    assert_eq!(
        open("GenerateRandom", random.ciphertext_for_recipient().map(Blob::as_ref)).len(),
        32
    );
    // A key's own policy wins over the tenant's.
    sdk_refused(
        "Decrypt under a key with its own policy, with the tenant's image",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(under_own))
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
        DENIED,
    );
    let protection = ok(
        "DescribeKeyProtection",
        &call(&kw, "Keyward.DescribeKeyProtection", json!({ "KeyId": plain_key })).await,
    );
    assert_eq!(protection["EffectiveAttestationPolicy"], "Tenant");
    assert_eq!(protection["AttestationPolicy"], serde_json::Value::Null);
    assert_eq!(
        protection["TenantAttestationPolicy"]["AllowedPCRs"],
        json!({ "0": [pcr0()] })
    );

    // Only a KeyAdmin sets it; a policy without measurement is refused here too.
    let user = ok(
        "CreateAccessKey KeyUser",
        &call(&kw, "Keyward.CreateAccessKey", json!({ "Role": "KeyUser" })).await,
    );
    let user = keyward_test_support::Creds {
        access_key_id: user["AccessKeyId"].as_str().expect("AccessKeyId").to_owned(),
        secret: user["SecretAccessKey"].as_str().expect("SecretAccessKey").to_owned(),
    };
    refused(
        "UpdateTenantAttestationPolicy as KeyUser",
        &kw.signed_call_as(&user, "Keyward.UpdateTenantAttestationPolicy", b"{}")
            .await,
        DENIED,
    );
    refused(
        "UpdateTenantAttestationPolicy without measurement",
        &call(
            &kw,
            "Keyward.UpdateTenantAttestationPolicy",
            json!({ "RequireRecipient": true }),
        )
        .await,
        INVALID,
    );
    // Removing it restores plain release.
    let cleared = ok(
        "UpdateTenantAttestationPolicy (none)",
        &call(&kw, "Keyward.UpdateTenantAttestationPolicy", json!({})).await,
    );
    assert_eq!(cleared["RequireRecipient"], false);
    must(
        "Decrypt without Recipient once the default is gone",
        client.decrypt().ciphertext_blob(Blob::new(under_plain)).send().await,
    );
}

/// ReEncrypt used to show the destination key's module the source context
/// under the same action; now the source key is `kms:ReEncryptFrom` with
/// the source context and the destination `kms:ReEncryptTo` with the
/// destination context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encrypt_evaluates_each_key_with_its_own_action_and_context() {
    let kw = Service::start().await;
    let client = kw.client();
    let source = create_key(&client, "source").await;
    let destination = create_key(&client, "destination").await;
    let source_module = rule_policy(
        &[
            allow_if(
                &[
                    "\"action\":\"kms:ReEncryptFrom\"",
                    "\"encryption_context\":{\"stage\":\"source\"}",
                ],
                "the source side, with the source context",
            ),
            deny_if(
                &["\"action\":\"kms:ReEncrypt"],
                "the source key sees the wrong side of ReEncrypt",
            ),
        ],
        "not a ReEncrypt",
    );
    let destination_module = rule_policy(
        &[
            allow_if(
                &[
                    "\"action\":\"kms:ReEncryptTo\"",
                    "\"encryption_context\":{\"stage\":\"destination\"}",
                ],
                "the destination side, with the destination context",
            ),
            deny_if(
                &["\"action\":\"kms:ReEncrypt"],
                "the destination key sees the wrong side of ReEncrypt",
            ),
        ],
        "not a ReEncrypt",
    );
    for (key, module) in [(&source, &source_module), (&destination, &destination_module)] {
        ok(
            "PutKeyPolicyModule",
            &call(
                &kw,
                "Keyward.PutKeyPolicyModule",
                json!({ "KeyId": key, "Module": b64(module) }),
            )
            .await,
        );
    }
    let source_context = context(&[("stage", "source")]);
    let destination_context = context(&[("stage", "destination")]);
    let plaintext = b"moved between keys";
    let ciphertext = encrypt(&client, &source, plaintext, Some(&source_context)).await;
    let moved = must(
        "ReEncrypt with each side's context",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .set_source_encryption_context(Some(source_context.clone()))
            .destination_key_id(&destination)
            .set_destination_encryption_context(Some(destination_context.clone()))
            .send()
            .await,
    );
    let out = must(
        "Decrypt the re-encrypted blob",
        client
            .decrypt()
            .ciphertext_blob(moved.ciphertext_blob().expect("CiphertextBlob").clone())
            .set_encryption_context(Some(destination_context))
            .send()
            .await,
    );
    assert_eq!(out.plaintext().expect("Plaintext").as_ref(), plaintext);
    // The destination's module decides on the destination context: the
    // source context (which it used to see) does not satisfy it.
    let message = sdk_refused(
        "ReEncrypt with the source context for the destination",
        client
            .re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .set_source_encryption_context(Some(source_context.clone()))
            .destination_key_id(&destination)
            .set_destination_encryption_context(Some(source_context))
            .send()
            .await,
        DENIED,
    );
    assert!(
        message.contains(&sha256_hex(&destination_module)) && message.contains("wrong side"),
        "{message}"
    );
}

/// The tenant's default module used to run only on operations that load a
/// key; now it decides on every operation of the tenant, with an empty
/// resource when there is no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_default_module_decides_on_operations_that_load_no_key() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key(&client, "before the module").await;
    let module = rule_policy(
        &[
            deny_if(
                &["\"action\":\"kms:GenerateRandom\""],
                "no random bytes for this tenant",
            ),
            allow_if(
                &[
                    "\"action\":\"kms:ListKeys\"",
                    "\"resource\":{\"key_id\":\"\",\"arn\":\"\",\"key_spec\":\"\"",
                ],
                "ListKeys on no key",
            ),
            deny_if(&["\"action\":\"kms:ListKeys\""], "ListKeys with a resource"),
        ],
        "allowed",
    );
    let sha = sha256_hex(&module);
    ok(
        "PutTenantPolicyModule",
        &call(&kw, "Keyward.PutTenantPolicyModule", json!({ "Module": b64(&module) })).await,
    );
    let message = sdk_refused(
        "GenerateRandom under the tenant's module",
        client.generate_random().number_of_bytes(16).send().await,
        DENIED,
    );
    assert_eq!(
        message,
        format!("Denied by policy module {sha}: no random bytes for this tenant")
    );
    let audited = last_audit(&kw, "TrentService.GenerateRandom").await;
    assert_eq!(audited["Decision"], "Deny");
    assert_eq!(audited["PolicyModule"], sha.as_str());
    // Keyless operations see an empty resource; keyed ones still see the key.
    let listed = must("ListKeys", client.list_keys().send().await);
    assert_eq!(listed.keys().len(), 1);
    assert_eq!(
        last_audit(&kw, "TrentService.ListKeys").await["PolicyModule"],
        sha.as_str()
    );
    must("DescribeKey", client.describe_key().key_id(&key_id).send().await);
    // Policy management stays exempt: the module can be removed.
    ok(
        "DeleteTenantPolicyModule",
        &call(&kw, "Keyward.DeleteTenantPolicyModule", json!({})).await,
    );
    must(
        "GenerateRandom without the module",
        client.generate_random().number_of_bytes(16).send().await,
    );
}
