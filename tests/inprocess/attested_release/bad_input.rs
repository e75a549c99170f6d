//! Recipients that fail a check: each refused with the AWS error type AWS
//! uses (a document that does not verify: `ValidationException`; one that
//! verifies but is not allowed: `AccessDeniedException`), the message
//! naming the failed check, the audit record naming the key.

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use keyward_enclave::attestation::mock::{MockPki, attest_with, default_pcrs};
use keyward_test_support::{b64, now_ms};
use p256::pkcs8::EncodePublicKey as _;
use serde_json::json;

use super::{
    MODULE_ID, audit_records, call, create_key_json, document, ok, open, other_measurement, pcr0, recipient,
    recipient_json, refused, sdk_refused, workload,
};
use crate::support::{Service, encrypt, key_arn, must};

const MINUTE_MS: u64 = 60_000;

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        len @ 0..=127 => out.push(len as u8),
        len @ 128..=255 => out.extend([0x81, len as u8]),
        len => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// An RSA SubjectPublicKeyInfo with a `bits`-bit modulus (not a real key:
/// its size is what is checked first).
fn rsa_spki(bits: usize) -> Vec<u8> {
    let mut modulus = vec![0u8];
    modulus.extend(vec![0xff; bits / 8]);
    let rsa_key = der(0x30, &[der(0x02, &modulus), der(0x02, &[1, 0, 1])].concat());
    let rsa_encryption = der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]);
    let algorithm = der(0x30, &[rsa_encryption, vec![0x05, 0x00]].concat());
    let bit_string = der(0x03, &[&[0u8][..], &rsa_key].concat());
    der(0x30, &[algorithm, bit_string].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_failing_a_check_are_refused_naming_the_check_and_the_key() {
    let kw = Service::start().await;
    let client = kw.client();
    let zero = "00".repeat(48);
    let key_id = create_key_json(
        &kw,
        json!({ "AttestationPolicy": { "AllowedPCRs": { "0": [pcr0()], "8": [zero] } } }),
    )
    .await;
    let arn = key_arn(&key_id);
    let plaintext = b"only for a document that passes every check";
    let ciphertext = encrypt(&client, &key_id, plaintext, None).await;
    let spki = workload().public_key_der().to_vec();
    let issue = |pki: &MockPki, pcrs: &BTreeMap<u8, Vec<u8>>, nonce: Option<&[u8]>, key: &[u8], at: u64| {
        attest_with(pki, MODULE_ID, pcrs, None, nonce, Some(key), at).expect("mock document")
    };
    let pcrs = default_pcrs();
    let mut debug_pcrs = default_pcrs();
    for i in 0..=2 {
        debug_pcrs.insert(i, vec![0; 48]);
    }
    let mut other_image = default_pcrs();
    other_image.insert(0, hex::decode(other_measurement(0x71)).expect("hex"));
    let mut other_signer = default_pcrs();
    other_signer.insert(8, vec![0x72; 48]);
    let foreign = MockPki::ephemeral().expect("another mock root");
    let p256_spki = p256::SecretKey::random(&mut rand::rngs::OsRng)
        .public_key()
        .to_public_key_der()
        .expect("SPKI")
        .into_vec();

    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "expired (10 minutes old)",
            issue(&kw.pki, &pcrs, None, &spki, now_ms() - 10 * MINUTE_MS),
            "ValidationException",
            "stale",
        ),
        (
            "from a debug-mode enclave",
            issue(&kw.pki, &debug_pcrs, None, &spki, now_ms()),
            "ValidationException",
            "debug-mode",
        ),
        (
            "under another root",
            issue(&foreign, &pcrs, None, &spki, now_ms()),
            "ValidationException",
            "trusted root",
        ),
        (
            "of another image (PCR0)",
            issue(&kw.pki, &other_image, None, &spki, now_ms()),
            "AccessDeniedException",
            "PCR0",
        ),
        (
            "signed by another certificate (PCR8)",
            issue(&kw.pki, &other_signer, None, &spki, now_ms()),
            "AccessDeniedException",
            "PCR8",
        ),
        (
            "with an RSA-1024 key",
            issue(&kw.pki, &pcrs, None, &rsa_spki(1024), now_ms()),
            "ValidationException",
            "1024 bits",
        ),
        (
            "with an RSA-5120 key",
            issue(&kw.pki, &pcrs, None, &rsa_spki(5120), now_ms()),
            "ValidationException",
            "5120 bits",
        ),
        (
            "with a P-256 key",
            issue(&kw.pki, &pcrs, None, &p256_spki, now_ms()),
            "ValidationException",
            "not an RSA key",
        ),
    ];
    let mut refusals = 0;
    for (what, bad, code, check) in &cases {
        let message = sdk_refused(
            &format!("Decrypt with a document {what}"),
            client
                .decrypt()
                .ciphertext_blob(Blob::new(ciphertext.clone()))
                .recipient(recipient(bad))
                .send()
                .await,
            code,
        );
        assert!(
            message.contains(check),
            "{what}: the message should name {check:?}: {message}"
        );
        refusals += 1;
    }

    // The Keyward extension Recipient.Nonce: the document must carry it.
    let with_nonce = issue(&kw.pki, &pcrs, Some(b"nonce of this request"), &spki, now_ms());
    for (what, document, nonce) in [
        ("a wrong nonce", &with_nonce, b"another nonce".as_slice()),
        ("no nonce", &document(&kw), b"nonce of this request".as_slice()),
    ] {
        let mut param = recipient_json(document);
        param["Nonce"] = json!(b64(nonce));
        let message = refused(
            &format!("Decrypt with a document with {what}"),
            &call(
                &kw,
                "Decrypt",
                json!({ "CiphertextBlob": b64(&ciphertext), "Recipient": param }),
            )
            .await,
            "ValidationException",
        );
        assert!(message.contains("nonce"), "{what}: {message}");
        refusals += 1;
    }
    let mut param = recipient_json(&with_nonce);
    param["Nonce"] = json!(b64(b"nonce of this request"));
    let out = ok(
        "Decrypt with the right nonce",
        &call(
            &kw,
            "Decrypt",
            json!({ "CiphertextBlob": b64(&ciphertext), "KeyId": key_id, "Recipient": param }),
        )
        .await,
    );
    let cms = keyward_test_support::unb64(out["CiphertextForRecipient"].as_str().expect("CiphertextForRecipient"));
    assert_eq!(open("Decrypt", Some(&cms)), plaintext);
    let generated = must(
        "GenerateDataKey with a valid document",
        client
            .generate_data_key()
            .key_id(&key_id)
            .number_of_bytes(32)
            .recipient(recipient(&document(&kw)))
            .send()
            .await,
    );
    assert_eq!(
        open(
            "GenerateDataKey",
            generated.ciphertext_for_recipient().map(Blob::as_ref)
        )
        .len(),
        32
    );
    // A key named by alias: the refusal still names the key.
    ok(
        "CreateAlias",
        &call(
            &kw,
            "CreateAlias",
            json!({ "AliasName": "alias/attested", "TargetKeyId": key_id }),
        )
        .await,
    );
    sdk_refused(
        "GenerateDataKey (alias) with an expired document",
        client
            .generate_data_key()
            .key_id("alias/attested")
            .number_of_bytes(32)
            .recipient(recipient(&cases[0].1))
            .send()
            .await,
        "ValidationException",
    );

    // Every refusal is audited with the key, denials as Deny.
    let records = audit_records(&kw).await;
    let decrypts: Vec<_> = records
        .iter()
        .filter(|r| r["Operation"] == "TrentService.Decrypt" && r["Decision"] != "Allow")
        .collect();
    assert_eq!(decrypts.len(), refusals);
    for record in &decrypts {
        assert_eq!(record["KeyArn"], arn.as_str(), "{record}");
        let reason = record["Reason"].as_str().unwrap_or_default();
        let expected = if reason.starts_with("AccessDeniedException") {
            "Deny"
        } else {
            "Error"
        };
        assert_eq!(record["Decision"], expected, "{record}");
    }
    let generate = records
        .iter()
        .rev()
        .find(|r| r["Operation"] == "TrentService.GenerateDataKey")
        .expect("GenerateDataKey audited");
    assert_eq!(generate["Decision"], "Error");
    assert_eq!(generate["KeyArn"], arn.as_str());
}

/// A policy update with a member the operation does not know (here the
/// policy wrapped in an object, as CreateKey takes it) used to read as "no
/// policy" and silently removed the key's protection; it is refused and the
/// policy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_update_with_an_unknown_member_is_refused_and_removes_nothing() {
    let kw = Service::start().await;
    let created = ok(
        "CreateKey with a policy",
        &call(
            &kw,
            "CreateKey",
            json!({ "AttestationPolicy": { "AllowedPCRs": { "0": [pcr0()] } } }),
        )
        .await,
    );
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("KeyId").to_owned();
    let wrapped = json!({ "KeyId": key_id, "AttestationPolicy": { "AllowedPCRs": { "0": [pcr0()] } } });
    let message = refused(
        "UpdateKeyAttestationPolicy with the policy wrapped",
        &call(&kw, "Keyward.UpdateKeyAttestationPolicy", wrapped).await,
        "ValidationException",
    );
    assert!(message.contains("Unknown member AttestationPolicy"), "{message}");
    let misspelt = json!({ "AllowedPcrs": { "0": [pcr0()] } });
    refused(
        "UpdateTenantAttestationPolicy with a misspelt member",
        &call(&kw, "Keyward.UpdateTenantAttestationPolicy", misspelt).await,
        "ValidationException",
    );
    let described = ok(
        "DescribeKeyAttestationPolicy",
        &call(&kw, "Keyward.DescribeKeyAttestationPolicy", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(described["RequireRecipient"], json!(true), "{described}");
    assert_eq!(described["AllowedPCRs"]["0"], json!([pcr0()]), "{described}");
}
