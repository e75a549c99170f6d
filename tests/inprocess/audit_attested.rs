//! What the audit chain says about attestation and encryption contexts,
//! through aws-sdk-kms: a request with a verified `Recipient` records the
//! document's module id, its PCR0 and the PCRs the key's attestation policy
//! checks; every operation that takes an encryption context records its
//! keys and a keyed hash (never the values) — equal for equal contexts of a
//! tenant, different across tenants — and the chain still verifies with
//! keyward-sdk's verifier.

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyEncryptionMechanism, RecipientInfo};
use keyward_sdk::audit::{AuditRecord, Head, verify_chain};
use keyward_sdk::recipient::RecipientKey;
use keyward_test_support::Creds;
use serde_json::{Value, json};

use crate::support::{Service, context, create_key, must, random_bytes};

const MODULE_ID: &str = "i-0a1b2c3d4e5f60718-enc0a1b2c3d4e5f6071";
/// A customer value that must never appear in the audit chain.
const SECRET_VALUE: &str = "alice-secret-context-value-7f3e";

fn recipient(document: &[u8]) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

/// The caller's whole audit chain, verified with keyward-sdk's verifier.
async fn verified_chain(service: &Service, creds: &Creds) -> Vec<AuditRecord> {
    let response = service
        .signed_call_as(creds, "Keyward.GetAuditLog", br#"{"Limit": 1000}"#)
        .await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let page = response.json();
    assert_eq!(page["Truncated"], false);
    let records: Vec<AuditRecord> = serde_json::from_value(page["Records"].clone()).expect("records");
    let head: Head = serde_json::from_value(page["Head"].clone()).expect("head");
    let key = base64_decode(page["AuditPublicKey"].as_str().expect("AuditPublicKey"));
    verify_chain(&records, &head, &key).unwrap_or_else(|e| panic!("the chain does not verify: {e}"));
    // The raw JSON never carries a context value.
    assert!(
        !String::from_utf8_lossy(&response.body).contains(SECRET_VALUE),
        "a context value is in the audit log"
    );
    records
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// The last record of `operation` (`TrentService.<Op>`).
#[track_caller]
fn last<'a>(records: &'a [AuditRecord], operation: &str) -> &'a AuditRecord {
    records
        .iter()
        .rev()
        .find(|r| r.operation == format!("TrentService.{operation}"))
        .unwrap_or_else(|| panic!("no {operation} record"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_what_was_attested_and_the_context_keys() {
    let service = Service::start().await;
    let kms = service.client();
    let key_id = create_key(&kms, "attested audit").await;
    let pcr0 = random_bytes(48);
    let pcr8 = random_bytes(48);
    let pcr1 = random_bytes(48);
    let pcrs: BTreeMap<u8, Vec<u8>> = [(0, pcr0.clone()), (1, pcr1.clone()), (8, pcr8.clone())].into();

    // The key releases only to a recipient with these PCR0 and PCR8.
    let update = service
        .signed_call(
            "Keyward.UpdateKeyAttestationPolicy",
            json!({
                "KeyId": key_id,
                "RequireRecipient": true,
                "AllowedPCRs": { "0": [hex(&pcr0)], "8": [hex(&pcr8)] },
            })
            .to_string()
            .as_bytes(),
        )
        .await;
    assert_eq!(update.status, 200, "{}", String::from_utf8_lossy(&update.body));
    assert_eq!(
        update.json()["AllowedPCRs"],
        json!({ "0": [hex(&pcr0)], "8": [hex(&pcr8)] })
    );

    let ctx = context(&[("purpose", "audit-test"), ("customer", SECRET_VALUE)]);
    let encrypt = |plaintext: &'static [u8], ctx: BTreeMap<String, String>| {
        let kms = kms.clone();
        let key_id = key_id.clone();
        async move {
            must(
                "Encrypt",
                kms.encrypt()
                    .key_id(key_id)
                    .plaintext(Blob::new(plaintext))
                    .set_encryption_context(Some(ctx.into_iter().collect()))
                    .send()
                    .await,
            )
            .ciphertext_blob()
            .expect("CiphertextBlob")
            .as_ref()
            .to_vec()
        }
    };
    let blob = encrypt(b"attested data", ctx.clone().into_iter().collect()).await;
    let again = encrypt(b"other data, same context", ctx.clone().into_iter().collect()).await;

    let workload = RecipientKey::generate();
    let document = service.workload_document(MODULE_ID, &pcrs, workload.public_key_der());
    let decrypted = must(
        "Decrypt with Recipient",
        kms.decrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_encryption_context(Some(ctx.clone()))
            .recipient(recipient(&document))
            .send()
            .await,
    );
    let opened = workload
        .open(
            decrypted
                .ciphertext_for_recipient()
                .expect("CiphertextForRecipient")
                .as_ref(),
        )
        .expect("opens");
    assert_eq!(opened.as_slice(), b"attested data");

    // A recipient whose PCR8 is not the policy's is refused; its record names what it presented.
    let wrong_pcr8 = random_bytes(48);
    let impostor_pcrs: BTreeMap<u8, Vec<u8>> = [(0, pcr0.clone()), (8, wrong_pcr8.clone())].into();
    let impostor = service.workload_document("i-impostor-enc99", &impostor_pcrs, workload.public_key_der());
    let refused = kms
        .decrypt()
        .ciphertext_blob(Blob::new(again))
        .set_encryption_context(Some(ctx.clone()))
        .recipient(recipient(&impostor))
        .send()
        .await;
    assert!(refused.is_err(), "a recipient with another PCR8 got the plaintext");

    // GenerateRandom for the same recipient: no key, so PCR0 only; no context.
    must(
        "GenerateRandom with Recipient",
        kms.generate_random()
            .number_of_bytes(32)
            .recipient(recipient(&document))
            .send()
            .await,
    );
    // Another value for the same key: another hash.
    let other = context(&[("purpose", "audit-test"), ("customer", "bob")]);
    encrypt(b"bob's data", other.into_iter().collect()).await;

    let records = verified_chain(&service, &service.creds).await;
    let encrypts: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.operation == "TrentService.Encrypt")
        .collect();
    assert_eq!(encrypts.len(), 3);

    // Decrypt: module id, PCR0 and PCR8 (the policy's), not PCR1; the context keys and its hash.
    let decrypt = records
        .iter()
        .find(|r| r.operation == "TrentService.Decrypt" && r.decision == "Allow")
        .expect("the allowed Decrypt");
    assert_eq!(decrypt.decision, "Allow");
    assert_eq!(decrypt.recipient_module_id, MODULE_ID);
    let expected_pcrs: BTreeMap<u8, String> = [(0, hex(&pcr0)), (8, hex(&pcr8))].into();
    assert_eq!(decrypt.recipient_pcrs, expected_pcrs);
    assert_eq!(decrypt.encryption_context_keys, ["customer", "purpose"]);
    assert_eq!(decrypt.encryption_context_hash.len(), 64);
    assert!(decrypt.source_encryption_context_keys.is_empty());

    // The hash is not the value (in any spelling), equal for equal contexts, different for others.
    let hash = &decrypt.encryption_context_hash;
    assert!(!hash.contains(&hex(SECRET_VALUE.as_bytes())) && hash != SECRET_VALUE);
    assert_eq!(&encrypts[0].encryption_context_hash, hash);
    assert_eq!(&encrypts[1].encryption_context_hash, hash);
    assert_ne!(&encrypts[2].encryption_context_hash, hash);
    assert_eq!(encrypts[2].encryption_context_keys, ["customer", "purpose"]);
    // Encrypt had no recipient.
    assert!(encrypts[0].recipient_module_id.is_empty() && encrypts[0].recipient_pcrs.is_empty());

    let denied = records
        .iter()
        .find(|r| r.operation == "TrentService.Decrypt" && r.decision == "Deny")
        .expect("the refused Decrypt is audited");
    assert_eq!(denied.recipient_module_id, "i-impostor-enc99");
    assert_eq!(
        denied.recipient_pcrs,
        BTreeMap::from([(0, hex(&pcr0)), (8, hex(&wrong_pcr8))])
    );
    assert_eq!(&denied.encryption_context_hash, hash);

    let random = last(&records, "GenerateRandom");
    assert_eq!(random.recipient_module_id, MODULE_ID);
    assert_eq!(random.recipient_pcrs, BTreeMap::from([(0, hex(&pcr0))]));
    assert!(random.encryption_context_keys.is_empty() && random.encryption_context_hash.is_empty());

    // Records without any of the fields are still hashed as before (v1) and verified above.
    assert!(records.iter().any(|r| r.operation == "TrentService.CreateKey"
        && r.recipient_module_id.is_empty()
        && r.encryption_context_hash.is_empty()));

    // Another tenant, the same context: another hash.
    let tenant = "210987654321";
    let created = service
        .signed_call_as(
            &service.operator,
            "Keyward.CreateTenant",
            json!({ "TenantId": tenant }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let created = created.json();
    let admin = creds_of(&created);
    let user = service
        .signed_call_as(&admin, "Keyward.CreateAccessKey", br#"{"Role": "KeyUser"}"#)
        .await;
    assert_eq!(user.status, 200, "{}", String::from_utf8_lossy(&user.body));
    let user = creds_of(&user.json());
    let admin_kms = service.client_with(&admin.access_key_id, &admin.secret);
    let other_key = create_key(&admin_kms, "other tenant").await;
    let user_kms = service.client_with(&user.access_key_id, &user.secret);
    must(
        "Encrypt (other tenant)",
        user_kms
            .encrypt()
            .key_id(&other_key)
            .plaintext(Blob::new(&b"x"[..]))
            .set_encryption_context(Some(ctx.clone()))
            .send()
            .await,
    );
    let theirs = verified_chain(&service, &admin).await;
    let their_encrypt = last(&theirs, "Encrypt");
    assert_eq!(their_encrypt.encryption_context_keys, ["customer", "purpose"]);
    assert_eq!(their_encrypt.encryption_context_hash.len(), 64);
    assert_ne!(
        &their_encrypt.encryption_context_hash, hash,
        "the same context hashes differently in another tenant"
    );
}

/// ReEncrypt records both contexts, each under its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encrypt_records_source_and_destination_contexts() {
    let service = Service::start().await;
    let kms = service.client();
    let source = create_key(&kms, "source").await;
    let destination = create_key(&kms, "destination").await;
    let source_ctx = context(&[("stage", "source"), ("customer", SECRET_VALUE)]);
    let destination_ctx = context(&[("stage", "destination")]);
    let blob = must(
        "Encrypt",
        kms.encrypt()
            .key_id(&source)
            .plaintext(Blob::new(&b"moving"[..]))
            .set_encryption_context(Some(source_ctx.clone()))
            .send()
            .await,
    )
    .ciphertext_blob()
    .expect("blob")
    .as_ref()
    .to_vec();
    must(
        "ReEncrypt",
        kms.re_encrypt()
            .ciphertext_blob(Blob::new(blob))
            .set_source_encryption_context(Some(source_ctx))
            .destination_key_id(&destination)
            .set_destination_encryption_context(Some(destination_ctx))
            .send()
            .await,
    );
    let records = verified_chain(&service, &service.creds).await;
    let encrypt = last(&records, "Encrypt");
    let re = last(&records, "ReEncrypt");
    assert_eq!(re.decision, "Allow");
    assert_eq!(re.source_encryption_context_keys, ["customer", "stage"]);
    assert_eq!(re.source_encryption_context_hash, encrypt.encryption_context_hash);
    assert_eq!(re.encryption_context_keys, ["stage"]);
    assert_ne!(re.encryption_context_hash, re.source_encryption_context_hash);
}

fn creds_of(created: &Value) -> Creds {
    Creds {
        access_key_id: created["AccessKeyId"].as_str().expect("AccessKeyId").to_owned(),
        secret: created["SecretAccessKey"].as_str().expect("SecretAccessKey").to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
