//! `Keyward.LockKeyProtection`: once locked, a key's attestation policy and
//! policy module can only be made stricter, never removed; the way out is
//! ScheduleKeyDeletion.

use aws_sdk_kms::primitives::Blob;
use keyward_test_support::b64;
use serde_json::{Value, json};

use super::rule_policy::{allow_if, deny_if, rule_policy, sha256_hex};
use super::{
    call, create_key_json, document, last_audit, ok, open, other_measurement, pcr0, recipient, refused, sdk_refused,
};
use crate::support::{Service, create_key, encrypt, key_arn, must};

const DENIED: &str = "AccessDeniedException";

async fn update_policy(kw: &Service, key_id: &str, policy: Value) -> keyward_test_support::raw::RawResponse {
    let mut body = policy;
    body["KeyId"] = Value::String(key_id.to_owned());
    call(kw, "Keyward.UpdateKeyAttestationPolicy", body).await
}

async fn put_module(kw: &Service, key_id: &str, module: &[u8]) -> keyward_test_support::raw::RawResponse {
    call(
        kw,
        "Keyward.PutKeyPolicyModule",
        json!({ "KeyId": key_id, "Module": b64(module) }),
    )
    .await
}

/// The hole: policy-module operations are exempt from policies, so an admin
/// could remove a key's module and then weaken its attestation policy. A
/// locked key refuses both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_remove_the_module_and_then_weaken_a_locked_key() {
    let kw = Service::start().await;
    let client = kw.client();
    let key_id = create_key_json(&kw, json!({ "AttestationPolicy": { "ImageSha384": [pcr0()] } })).await;
    let module = rule_policy(
        &[deny_if(
            &["\"action\":\"kms:Decrypt\"", "\"recipient\":false"],
            "Decrypt needs a Recipient",
        )],
        "allowed",
    );
    ok("PutKeyPolicyModule", &put_module(&kw, &key_id, &module).await);
    let locked = ok(
        "LockKeyProtection",
        &call(&kw, "Keyward.LockKeyProtection", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(locked["ProtectionLocked"], true);

    let message = refused(
        "DeleteKeyPolicyModule of a locked key",
        &call(&kw, "Keyward.DeleteKeyPolicyModule", json!({ "KeyId": key_id })).await,
        DENIED,
    );
    assert!(message.contains("locked"), "{message}");
    for (what, weaker) in [
        ("removing the policy", json!({})),
        ("any enclave", json!({ "AllowAnyEnclave": true })),
        (
            "another image too",
            json!({ "ImageSha384": [pcr0(), other_measurement(0x61)] }),
        ),
        (
            "another image instead",
            json!({ "ImageSha384": [other_measurement(0x61)] }),
        ),
    ] {
        let message = refused(what, &update_policy(&kw, &key_id, weaker).await, DENIED);
        assert!(message.contains("locked"), "{what}: {message}");
    }
    let protection = ok(
        "DescribeKeyProtection",
        &call(&kw, "Keyward.DescribeKeyProtection", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(protection["PolicyModuleSha256"], sha256_hex(&module).as_str());
    assert_eq!(protection["AttestationPolicy"]["AllowedPCRs"], json!({ "0": [pcr0()] }));
    assert_eq!(protection["ProtectionLocked"], true);
    let ciphertext = encrypt(&client, &key_id, b"locked", None).await;
    sdk_refused(
        "Decrypt without Recipient",
        client.decrypt().ciphertext_blob(Blob::new(ciphertext)).send().await,
        DENIED,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_lifecycle() {
    let kw = Service::start().await;
    let client = kw.client();
    let spare = other_measurement(0x62);
    ok(
        "UpdateTenantAttestationPolicy",
        &call(
            &kw,
            "Keyward.UpdateTenantAttestationPolicy",
            json!({ "AllowedPCRs": { "0": [pcr0(), spare] } }),
        )
        .await,
    );
    let key_id = create_key(&client, "to be locked").await;
    let arn = key_arn(&key_id);

    // Locking pins the tenant's default as the key's own policy.
    let user = ok(
        "CreateAccessKey KeyUser",
        &call(&kw, "Keyward.CreateAccessKey", json!({ "Role": "KeyUser" })).await,
    );
    let user = keyward_test_support::Creds {
        access_key_id: user["AccessKeyId"].as_str().expect("AccessKeyId").to_owned(),
        secret: user["SecretAccessKey"].as_str().expect("SecretAccessKey").to_owned(),
    };
    let body = json!({ "KeyId": key_id }).to_string();
    refused(
        "LockKeyProtection as KeyUser",
        &kw.signed_call_as(&user, "Keyward.LockKeyProtection", body.as_bytes())
            .await,
        DENIED,
    );
    let locked = ok(
        "LockKeyProtection",
        &call(&kw, "Keyward.LockKeyProtection", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(locked["KeyId"], arn.as_str());
    assert_eq!(locked["ProtectionLocked"], true);
    assert_eq!(locked["EffectiveAttestationPolicy"], "Key");
    assert_eq!(
        locked["AttestationPolicy"]["AllowedPCRs"],
        json!({ "0": [pcr0(), spare] })
    );
    let audited = last_audit(&kw, "Keyward.LockKeyProtection").await;
    assert_eq!(audited["KeyArn"], arn.as_str());
    assert!(
        audited["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("ProtectionLocked=true")),
        "{audited}"
    );
    let described = ok(
        "DescribeKeyProtection as KeyUser",
        &kw.signed_call_as(&user, "Keyward.DescribeKeyProtection", body.as_bytes())
            .await,
    );
    assert_eq!(described["ProtectionLocked"], true);
    // Again: nothing changes.
    ok(
        "LockKeyProtection again",
        &call(&kw, "Keyward.LockKeyProtection", json!({ "KeyId": key_id })).await,
    );
    // The tenant's default no longer matters to this key.
    ok(
        "UpdateTenantAttestationPolicy (none)",
        &call(&kw, "Keyward.UpdateTenantAttestationPolicy", json!({})).await,
    );
    let plaintext = b"released to the image only, forever";
    let ciphertext = encrypt(&client, &key_id, plaintext, None).await;
    sdk_refused(
        "Decrypt without Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        DENIED,
    );

    // Stricter: a subset of the values, one more PCR (PCR8 of the mock image is zero).
    let stricter = json!({ "AllowedPCRs": { "0": [pcr0()], "8": ["00".repeat(48)] } });
    let updated = ok(
        "a stricter policy",
        &update_policy(&kw, &key_id, stricter.clone()).await,
    );
    assert_eq!(updated["AllowedPCRs"], stricter["AllowedPCRs"]);
    let out = must(
        "Decrypt with the image's Recipient",
        client
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
    );
    assert_eq!(
        open("Decrypt", out.ciphertext_for_recipient().map(Blob::as_ref)),
        plaintext
    );
    // Weaker, even back to what it was: refused, and audited as a denial.
    for (what, weaker) in [
        (
            "the policy as it was",
            json!({ "AllowedPCRs": { "0": [pcr0(), other_measurement(0x62)] } }),
        ),
        ("without PCR8", json!({ "AllowedPCRs": { "0": [pcr0()] } })),
        ("no policy", json!({})),
    ] {
        refused(what, &update_policy(&kw, &key_id, weaker).await, DENIED);
    }
    let audited = last_audit(&kw, "Keyward.UpdateKeyAttestationPolicy").await;
    assert_eq!(audited["Decision"], "Deny");
    assert_eq!(audited["KeyArn"], arn.as_str());
    assert!(
        audited["Reason"].as_str().is_some_and(|r| r.contains("locked")),
        "{audited}"
    );

    // Modules: the first one makes the key stricter; a replacement needs
    // the current module's approval (`keyward:policy.update`).
    let approved = rule_policy(
        &[deny_if(
            &["\"action\":\"keyward:policy.update\""],
            "this module approves no replacement",
        )],
        "the approved module allows",
    );
    let unapproved = rule_policy(&[], "the unapproved module allows everything");
    let approved_sha = sha256_hex(&approved);
    let approval = format!("\"new_module_sha256\":\"{approved_sha}\"");
    let current = rule_policy(
        &[
            allow_if(
                &["\"action\":\"keyward:policy.update\"", approval.as_str()],
                "the replacement is approved",
            ),
            deny_if(&["\"action\":\"keyward:policy.update\""], "replacement not approved"),
        ],
        "the current module allows",
    );
    let current_sha = sha256_hex(&current);
    ok("PutKeyPolicyModule (first)", &put_module(&kw, &key_id, &current).await);
    let message = refused(
        "PutKeyPolicyModule not approved",
        &put_module(&kw, &key_id, &unapproved).await,
        DENIED,
    );
    assert!(
        message.contains("did not approve")
            && message.contains(&current_sha)
            && message.contains("replacement not approved"),
        "{message}"
    );
    let audited = last_audit(&kw, "Keyward.PutKeyPolicyModule").await;
    assert_eq!(audited["Decision"], "Deny");
    assert_eq!(audited["PolicyModule"], current_sha.as_str());
    ok(
        "PutKeyPolicyModule approved",
        &put_module(&kw, &key_id, &approved).await,
    );
    let described = ok(
        "DescribeKeyProtection",
        &call(&kw, "Keyward.DescribeKeyProtection", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(described["PolicyModuleSha256"], approved_sha.as_str());
    // The new module approves nothing, not even the module it replaced.
    refused(
        "PutKeyPolicyModule back to the previous module",
        &put_module(&kw, &key_id, &current).await,
        DENIED,
    );
    refused(
        "DeleteKeyPolicyModule",
        &call(&kw, "Keyward.DeleteKeyPolicyModule", json!({ "KeyId": key_id })).await,
        DENIED,
    );

    // The way out: deletion (and a cancelled deletion leaves the lock).
    must(
        "ScheduleKeyDeletion of a locked key",
        client
            .schedule_key_deletion()
            .key_id(&key_id)
            .pending_window_in_days(7)
            .send()
            .await,
    );
    must(
        "CancelKeyDeletion",
        client.cancel_key_deletion().key_id(&key_id).send().await,
    );
    let described = ok(
        "DescribeKeyProtection after the cancelled deletion",
        &call(&kw, "Keyward.DescribeKeyProtection", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(described["ProtectionLocked"], true);
    assert_eq!(described["AttestationPolicy"]["AllowedPCRs"], stricter["AllowedPCRs"]);
}
