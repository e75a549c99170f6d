//! Key attestation policies (`AttestationPolicy` on CreateKey,
//! `Keyward.UpdateKeyAttestationPolicy`, `Keyward.DescribeKeyAttestationPolicy`)
//! against `keyward dev`: a key with AllowedPCRs releases data only to an
//! attested recipient whose PCRs match (a Recipient is always required); every
//! refusal is AccessDeniedException (unverifiable documents:
//! ValidationException), and every decision is in the audit log. The holes
//! of issue 20, the tenant's default and locking are in-process tests
//! (`tests/inprocess/attested_release`).

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec, DataKeySpec, KeyAgreementAlgorithmSpec};
use keyward_attestation::mock::{MockPki, attest_with};
use keyward_sdk::attestation::{DEFAULT_MODULE_ID, default_pcrs};
use keyward_sdk::recipient::RecipientKey;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};

use crate::harness::{Keyward, Sandbox, create_key, encrypt, must};
use crate::principals::{call_as, create_access_key, ok_json, request_id, sdk};
use crate::split::{b64, now_ms, open, recipient_info, workload_document};

const MINUTE_MS: u64 = 60 * 1000;

/// One request whose audit record is checked at the end.
struct Audited {
    what: String,
    request_id: String,
    operation: &'static str,
    decision: &'static str,
    /// The exact `Reason` ("" when allowed).
    reason: String,
    key_arn: Option<String>,
}

/// Asserts an SDK call failed with `code` (HTTP 400) and notes its audit record.
#[track_caller]
fn refused<T: std::fmt::Debug, E>(
    audited: &mut Vec<Audited>,
    what: &str,
    operation: &'static str,
    key_arn: Option<&str>,
    result: Result<T, SdkError<E>>,
    code: &str,
) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:?}"),
        Err(e) => e,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(
        (status, err.code()),
        (Some(400), Some(code)),
        "{what}: wrong error: {}",
        aws_sdk_kms::error::DisplayErrorContext(&err)
    );
    let message = err.message().unwrap_or_default().to_string();
    audited.push(Audited {
        what: what.to_string(),
        request_id: err.request_id().expect("x-amzn-RequestId").to_string(),
        operation,
        decision: if code == "AccessDeniedException" {
            "Deny"
        } else {
            "Error"
        },
        reason: format!("{code}: {message}"),
        key_arn: key_arn.map(str::to_string),
    });
    message
}

/// Notes the audit record of a successful call.
fn allowed(audited: &mut Vec<Audited>, what: &str, operation: &'static str, key_arn: &str, output: &impl RequestId) {
    audited.push(Audited {
        what: what.to_string(),
        request_id: output.request_id().expect("x-amzn-RequestId").to_string(),
        operation,
        decision: "Allow",
        reason: String::new(),
        key_arn: Some(key_arn.to_string()),
    });
}

async fn keyward_call(kw: &Keyward, op: &str, body: Value) -> crate::harness::RawResponse {
    call_as(kw, &kw.creds, op, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_recipient_releases_only_to_attested_recipients_with_allowed_pcrs() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let mock_dir = kw.data_dir.join("mock-attestation");
    let pcr0 = hex::encode(&default_pcrs()[&0]);
    let workload = RecipientKey::generate();
    let mut audited = Vec::new();

    // CreateKey with the AttestationPolicy extension field (PCR values in
    // any case; the policy states them in lower case).
    let created = ok_json(
        "CreateKey with AttestationPolicy",
        &keyward_call(
            &kw,
            "CreateKey",
            json!({
                "Description": "attested only",
                "AttestationPolicy": { "RequireRecipient": true, "AllowedPCRs": { "0": [pcr0.to_uppercase()] } },
            }),
        )
        .await,
    );
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("KeyId").to_string();
    let arn = Keyward::key_arn(&key_id);
    let described = ok_json(
        "DescribeKeyAttestationPolicy",
        &keyward_call(&kw, "Keyward.DescribeKeyAttestationPolicy", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(
        described,
        json!({ "KeyId": arn, "RequireRecipient": true, "AllowedPCRs": { "0": [pcr0] }, "AllowAnyEnclave": false })
    );

    // Encrypting needs no attestation; the plaintext is the caller's own.
    let plaintext = b"released only to attested recipients";
    let ciphertext = encrypt(&kms, &key_id, plaintext, None).await;
    let other_key = create_key(&kms, "unrestricted").await;

    // Without Recipient: AccessDeniedException for everything that releases data.
    refused(
        &mut audited,
        "Decrypt without Recipient",
        "TrentService.Decrypt",
        Some(&arn),
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        "AccessDeniedException",
    );
    refused(
        &mut audited,
        "GenerateDataKey without Recipient",
        "TrentService.GenerateDataKey",
        Some(&arn),
        kms.generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
        "AccessDeniedException",
    );
    refused(
        &mut audited,
        "GenerateDataKeyPair without Recipient",
        "TrentService.GenerateDataKeyPair",
        Some(&arn),
        kms.generate_data_key_pair()
            .key_id(&key_id)
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .send()
            .await,
        "AccessDeniedException",
    );
    refused(
        &mut audited,
        "ReEncrypt from the key to an unrestricted one",
        "TrentService.ReEncrypt",
        Some(&arn),
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .destination_key_id(&other_key)
            .send()
            .await,
        "AccessDeniedException",
    );
    // No plaintext released, so no attestation needed.
    let without_plaintext = must(
        "GenerateDataKeyWithoutPlaintext",
        kms.generate_data_key_without_plaintext()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
    );

    // An attested recipient with the allowed PCR0: allowed.
    let document = workload_document(&mock_dir, &default_pcrs(), &workload);
    let out = must(
        "Decrypt with an allowed Recipient",
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(out.plaintext().is_none());
    assert_eq!(open("Decrypt", &workload, out.ciphertext_for_recipient()), plaintext);
    allowed(
        &mut audited,
        "Decrypt with an allowed Recipient",
        "TrentService.Decrypt",
        &arn,
        &out,
    );

    let generated = must(
        "GenerateDataKey with an allowed Recipient",
        kms.generate_data_key()
            .key_id(&key_id)
            .number_of_bytes(48)
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(generated.plaintext().is_none());
    assert_eq!(
        open("GenerateDataKey", &workload, generated.ciphertext_for_recipient()).len(),
        48
    );
    allowed(
        &mut audited,
        "GenerateDataKey with an allowed Recipient",
        "TrentService.GenerateDataKey",
        &arn,
        &generated,
    );
    let out = must(
        "Decrypt (Recipient) of GenerateDataKeyWithoutPlaintext's blob",
        kms.decrypt()
            .ciphertext_blob(without_plaintext.ciphertext_blob().expect("CiphertextBlob").clone())
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert_eq!(open("Decrypt", &workload, out.ciphertext_for_recipient()).len(), 32);

    // A genuine document from an enclave with another PCR0: AccessDeniedException.
    let mut other_pcrs = default_pcrs();
    other_pcrs.insert(0, vec![0x42; 48]);
    let other_image = workload_document(&mock_dir, &other_pcrs, &workload);
    let message = refused(
        &mut audited,
        "Decrypt with a Recipient whose PCR0 is not allowed",
        "TrentService.Decrypt",
        Some(&arn),
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .recipient(recipient_info(&other_image))
            .send()
            .await,
        "AccessDeniedException",
    );
    assert!(message.contains("PCR0"), "the denial should name the PCR: {message}");
    refused(
        &mut audited,
        "GenerateDataKey with a Recipient whose PCR0 is not allowed",
        "TrentService.GenerateDataKey",
        Some(&arn),
        kms.generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .recipient(recipient_info(&other_image))
            .send()
            .await,
        "AccessDeniedException",
    );

    // Documents that do not verify: ValidationException.
    let ours = MockPki::from_root_files(&mock_dir).expect("the enclave's mock root");
    let foreign = MockPki::ephemeral().expect("another mock root");
    let spki = Some(workload.public_key_der());
    let pcrs = default_pcrs();
    let issue = |pki: &MockPki, public_key: Option<&[u8]>, timestamp_ms: u64| {
        attest_with(pki, DEFAULT_MODULE_ID, &pcrs, None, None, public_key, timestamp_ms).expect("mock document")
    };
    let mut debug_pcrs = default_pcrs();
    for i in 0..=2 {
        debug_pcrs.insert(i, vec![0; 48]);
    }
    let debug_mode = workload_document(&mock_dir, &debug_pcrs, &workload);
    let mut flipped = document.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01; // inside the ES384 signature
    let unverifiable: Vec<(&str, Vec<u8>)> = vec![
        ("signed under another mock root", issue(&foreign, spki, now_ms())),
        ("10 minutes old", issue(&ours, spki, now_ms() - 10 * MINUTE_MS)),
        ("dated 10 minutes ahead", issue(&ours, spki, now_ms() + 10 * MINUTE_MS)),
        ("without a public key", issue(&ours, None, now_ms())),
        ("of a debug-mode enclave (PCR0-2 zero)", debug_mode),
        ("with a broken signature", flipped),
        ("not a document", b"not an attestation document".to_vec()),
    ];
    for (what, bad) in &unverifiable {
        refused(
            &mut audited,
            &format!("Decrypt with a Recipient document {what}"),
            "TrentService.Decrypt",
            None,
            kms.decrypt()
                .ciphertext_blob(Blob::new(ciphertext.clone()))
                .recipient(recipient_info(bad))
                .send()
                .await,
            "ValidationException",
        );
    }
    refused(
        &mut audited,
        "GenerateRandom with a stale Recipient document",
        "TrentService.GenerateRandom",
        None,
        kms.generate_random()
            .number_of_bytes(32)
            .recipient(recipient_info(&unverifiable[1].1))
            .send()
            .await,
        "ValidationException",
    );
    // An algorithm AWS SDKs cannot even send.
    let resp = keyward_call(
        &kw,
        "Decrypt",
        json!({
            "CiphertextBlob": b64(&ciphertext),
            "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1", "AttestationDocument": b64(&document) },
        }),
    )
    .await;
    resp.assert_error("Recipient with RSAES_OAEP_SHA_1", 400, "ValidationException");

    // DeriveSharedSecret on a KEY_AGREEMENT key with an attestation policy
    // (RequireRecipient alone names no measurement: refused).
    keyward_call(
        &kw,
        "CreateKey",
        json!({
            "KeySpec": "ECC_NIST_P256",
            "KeyUsage": "KEY_AGREEMENT",
            "AttestationPolicy": { "RequireRecipient": true },
        }),
    )
    .await
    .assert_error("CreateKey with RequireRecipient alone", 400, "ValidationException");
    let created = ok_json(
        "CreateKey KEY_AGREEMENT with AttestationPolicy",
        &keyward_call(
            &kw,
            "CreateKey",
            json!({
                "KeySpec": "ECC_NIST_P256",
                "KeyUsage": "KEY_AGREEMENT",
                "AttestationPolicy": { "ImageSha384": [pcr0] },
            }),
        )
        .await,
    );
    let agreement_key = created["KeyMetadata"]["KeyId"].as_str().expect("KeyId").to_string();
    let agreement_arn = Keyward::key_arn(&agreement_key);
    let peer = p256::SecretKey::random(&mut rand::rngs::OsRng)
        .public_key()
        .to_public_key_der()
        .expect("SPKI")
        .into_vec();
    refused(
        &mut audited,
        "DeriveSharedSecret without Recipient",
        "TrentService.DeriveSharedSecret",
        Some(&agreement_arn),
        kms.derive_shared_secret()
            .key_id(&agreement_key)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer.clone()))
            .send()
            .await,
        "AccessDeniedException",
    );
    let derived = must(
        "DeriveSharedSecret with Recipient",
        kms.derive_shared_secret()
            .key_id(&agreement_key)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(derived.shared_secret().is_none());
    assert_eq!(
        open("DeriveSharedSecret", &workload, derived.ciphertext_for_recipient()).len(),
        32
    );
    allowed(
        &mut audited,
        "DeriveSharedSecret with Recipient",
        "TrentService.DeriveSharedSecret",
        &agreement_arn,
        &derived,
    );

    // The audit log has every decision, with the exact reason.
    let records = sdk(&kw, &kw.creds)
        .audit_records(None, None)
        .await
        .expect("Keyward.GetAuditLog");
    for expected in &audited {
        let record = records
            .iter()
            .find(|r| r.request_id == expected.request_id)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no audit record with RequestId {}",
                    expected.what, expected.request_id
                )
            });
        assert_eq!(record.operation, expected.operation, "{}: Operation", expected.what);
        assert_eq!(record.decision, expected.decision, "{}: Decision", expected.what);
        assert_eq!(record.reason, expected.reason, "{}: Reason", expected.what);
        if let Some(key_arn) = &expected.key_arn {
            assert_eq!(&record.key_arn, key_arn, "{}: KeyArn", expected.what);
        }
    }
    let denials = audited.iter().filter(|a| a.decision == "Deny").count();
    assert!(denials >= 6, "expected the policy denials to be audited");
    assert!(
        audited
            .iter()
            .filter(|a| a.decision == "Deny")
            .all(|a| a.reason.starts_with("AccessDeniedException: ")),
        "denials are AccessDeniedException"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_policies_are_managed_by_key_admins() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let mock_dir = kw.data_dir.join("mock-attestation");
    let pcr0 = hex::encode(&default_pcrs()[&0]);
    let workload = RecipientKey::generate();

    let key_id = create_key(&kms, "policy later").await;
    let arn = Keyward::key_arn(&key_id);
    let describe = || keyward_call(&kw, "Keyward.DescribeKeyAttestationPolicy", json!({ "KeyId": key_id }));
    assert_eq!(
        ok_json("DescribeKeyAttestationPolicy (none)", &describe().await),
        json!({ "KeyId": arn, "RequireRecipient": false, "AllowedPCRs": {}, "AllowAnyEnclave": false })
    );
    let plaintext = b"plain until the policy says otherwise";
    let ciphertext = encrypt(&kms, &key_id, plaintext, None).await;

    // AllowedPCRs alone: a Recipient is required, and it must match.
    let updated = ok_json(
        "UpdateKeyAttestationPolicy (AllowedPCRs)",
        &keyward_call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": arn, "AllowedPCRs": { "0": [pcr0, "ab".repeat(48)] } }),
        )
        .await,
    );
    let policy = json!({
        "KeyId": arn, "RequireRecipient": true, "AllowedPCRs": { "0": [pcr0, "ab".repeat(48)] }, "AllowAnyEnclave": false,
    });
    assert_eq!(updated, policy);
    assert_eq!(ok_json("DescribeKeyAttestationPolicy", &describe().await), policy);
    crate::harness::expect_error(
        "Decrypt without Recipient under AllowedPCRs",
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        400,
        "AccessDeniedException",
    );
    for (what, pcr, allowed) in [
        ("the first allowed PCR0", default_pcrs()[&0].clone(), true),
        ("the second allowed PCR0", vec![0xab; 48], true),
        ("another PCR0", vec![0xcd; 48], false),
    ] {
        let mut pcrs = default_pcrs();
        pcrs.insert(0, pcr);
        let document = workload_document(&mock_dir, &pcrs, &workload);
        let result = kms
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await;
        if allowed {
            let out = must(&format!("Decrypt with {what}"), result);
            assert_eq!(open(what, &workload, out.ciphertext_for_recipient()), plaintext);
        } else {
            crate::harness::expect_error(&format!("Decrypt with {what}"), result, 400, "AccessDeniedException");
        }
    }

    // RequireRecipient without a measurement is refused; AllowAnyEnclave
    // says it explicitly (weak, with a warning); clearing the policy
    // restores plain Decrypt.
    keyward_call(
        &kw,
        "Keyward.UpdateKeyAttestationPolicy",
        json!({ "KeyId": key_id, "RequireRecipient": true }),
    )
    .await
    .assert_error(
        "UpdateKeyAttestationPolicy (RequireRecipient alone)",
        400,
        "ValidationException",
    );
    let required = ok_json(
        "UpdateKeyAttestationPolicy (AllowAnyEnclave)",
        &keyward_call(
            &kw,
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "AllowAnyEnclave": true }),
        )
        .await,
    );
    assert_eq!(required["RequireRecipient"], true);
    assert_eq!(required["AllowAnyEnclave"], true);
    assert_eq!(required["AllowedPCRs"], json!({}));
    assert!(required["Warning"].is_string(), "{required}");
    crate::harness::expect_error(
        "Decrypt without Recipient under AllowAnyEnclave",
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
        400,
        "AccessDeniedException",
    );
    let cleared = ok_json(
        "UpdateKeyAttestationPolicy (cleared)",
        &keyward_call(&kw, "Keyward.UpdateKeyAttestationPolicy", json!({ "KeyId": key_id })).await,
    );
    assert_eq!(
        cleared,
        json!({ "KeyId": arn, "RequireRecipient": false, "AllowedPCRs": {}, "AllowAnyEnclave": false })
    );
    must(
        "Decrypt without Recipient after clearing",
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
    );

    // Invalid policies.
    let bad: Vec<(&str, Value)> = vec![
        (
            "PCR index 32",
            json!({ "KeyId": key_id, "AllowedPCRs": { "32": [pcr0] } }),
        ),
        (
            "PCR index not a number",
            json!({ "KeyId": key_id, "AllowedPCRs": { "x": [pcr0] } }),
        ),
        (
            "PCR value not hex",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": ["zz".repeat(48)] } }),
        ),
        (
            "PCR value of 20 bytes",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": ["00".repeat(20)] } }),
        ),
        ("no PCR values", json!({ "KeyId": key_id, "AllowedPCRs": { "0": [] } })),
        (
            "RequireRecipient alone",
            json!({ "KeyId": key_id, "RequireRecipient": true }),
        ),
        (
            "PCR1 without PCR0",
            json!({ "KeyId": key_id, "AllowedPCRs": { "1": [pcr0] } }),
        ),
        (
            "17 PCR values",
            json!({ "KeyId": key_id, "AllowedPCRs": { "0": vec![pcr0.clone(); 17] } }),
        ),
    ];
    for (what, body) in bad {
        keyward_call(&kw, "Keyward.UpdateKeyAttestationPolicy", body)
            .await
            .assert_error(what, 400, "ValidationException");
    }
    let resp = keyward_call(
        &kw,
        "CreateKey",
        json!({ "AttestationPolicy": { "AllowedPCRs": { "99": [pcr0] } } }),
    )
    .await;
    resp.assert_error(
        "CreateKey with an invalid AttestationPolicy",
        400,
        "ValidationException",
    );
    keyward_call(
        &kw,
        "Keyward.UpdateKeyAttestationPolicy",
        json!({ "KeyId": "00000000-0000-4000-8000-000000000000", "ImageSha384": [pcr0] }),
    )
    .await
    .assert_error("UpdateKeyAttestationPolicy of an unknown key", 400, "NotFoundException");

    // Only a KeyAdmin may change a policy; a KeyUser may read it.
    let user = create_access_key(&kw, &kw.creds, keyward_sdk::Role::KeyUser).await;
    let resp = call_as(
        &kw,
        &user,
        "Keyward.UpdateKeyAttestationPolicy",
        &json!({ "KeyId": key_id, "RequireRecipient": false }),
    )
    .await;
    resp.assert_error("UpdateKeyAttestationPolicy as KeyUser", 400, "AccessDeniedException");
    assert!(request_id(&resp).is_some());
    ok_json(
        "DescribeKeyAttestationPolicy as KeyUser",
        &call_as(
            &kw,
            &user,
            "Keyward.DescribeKeyAttestationPolicy",
            &json!({ "KeyId": key_id }),
        )
        .await,
    );
}
