//! Enclave-level tests of the operations against an in-memory host store:
//! what reaches the host, and what the enclave does when the host lies.

use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::error::KmsError;
use super::{Ctx, crypto, keys};
use crate::auth::Principal;
use crate::auth::credentials::Role;
use crate::clock::SystemClock;
use crate::config::{Args, Mode};
use crate::keys::record::{self, KeyRecord};
use crate::nsm::MockNsm;
use crate::service::Enclave;
use crate::store::{MemoryStore, Records, StoreTransport};

pub(super) const TENANT: &str = "111122223333";

pub(super) fn enclave() -> Enclave {
    let args = Args {
        mode: Mode::Mock,
        socket: Some("/unused".into()),
        vsock_port: 5000,
        tls_socket: None,
        tls_vsock_port: 5001,
        tls_names: Vec::new(),
        max_client_streams: 4096,
        memory_budget: None,
        region: "us-east-1".into(),
        dev_tenant: TENANT.into(),
        mock_clock_offset: 0,
        tenant_rate_limit: 10_000,
        data_dir: None,
        mock_pcrs: Vec::new(),
        allow_debug_attestation: false,
        exit_on_stdin_close: false,
        custody: Default::default(),
        join: Default::default(),
    };
    let config = args.validate(|_| None).expect("valid config");
    Enclave::new(config, Box::new(MockNsm), Arc::new(SystemClock))
}

pub(super) fn principal(tenant: &str) -> Principal {
    Principal {
        tenant: tenant.into(),
        access_key_id: "AKIATESTTESTTEST0000".into(),
        roles: vec![Role::KeyAdmin, Role::KeyUser],
    }
}

pub(super) async fn ctx<'a>(enclave: &'a Enclave, store: &'a MemoryStore, tenant: &str) -> Ctx<'a> {
    let keyring = enclave.ready_for_tests(store).await.expect("boots");
    if tenant != crate::auth::OPERATOR {
        // The tenant, as the operator would have created it (of a fresh generation).
        let generation = crate::keystore::tenants::new_generation(&crate::nsm::MockNsm).expect("random");
        let records = Records::new(store, &keyring.sealer);
        crate::keystore::tenants::ensure(&records, tenant, 0, generation)
            .await
            .expect("tenant");
    }
    let ctx = Ctx::new(
        enclave,
        keyring,
        Records::new(store, &keyring.sealer),
        principal(tenant),
        OffsetDateTime::now_utc(),
    );
    crate::keystore::keys::load_tenant_generation(&ctx)
        .await
        .expect("tenant");
    ctx
}

pub(super) fn b64(bytes: &[u8]) -> String {
    super::params::b64(bytes)
}

pub(super) fn unb64(v: &Value, name: &str) -> Vec<u8> {
    super::params::blob(name, v[name].as_str().expect("string field")).expect("base64")
}

/// Creates a key; returns (key id, ARN).
pub(super) async fn create(ctx: &Ctx<'_>, spec: &str, usage: &str) -> (String, String) {
    let created = keys::create_key(ctx, json!({ "KeySpec": spec, "KeyUsage": usage }))
        .await
        .expect("created");
    let meta = &created["KeyMetadata"];
    (
        meta["KeyId"].as_str().expect("key id").to_owned(),
        meta["Arn"].as_str().expect("arn").to_owned(),
    )
}

pub(super) fn aws_type(result: Result<Value, KmsError>) -> &'static str {
    result.expect_err("must fail").aws_type()
}

fn field(v: &Value, name: &str) -> String {
    v[name].as_str().expect("string field").to_owned()
}

#[tokio::test]
async fn master_key_material_and_derived_keys_never_reach_the_host() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let mut key_ids = Vec::new();
    for _ in 0..4 {
        let created = keys::create_key(&ctx, json!({ "Description": "at rest" }))
            .await
            .expect("created");
        let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
        let encrypted = crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"plaintext at rest") }))
            .await
            .expect("enc");
        assert!(!field(&encrypted, "CiphertextBlob").is_empty());
        key_ids.push(key_id);
    }
    // Everything secret the enclave holds for these keys.
    let mut secrets: Vec<Vec<u8>> = vec![
        ctx.keyring.hierarchy.root_for_tests().expose().to_vec(),
        ctx.keyring.hierarchy.sealing_key().expose().to_vec(),
        ctx.tenant_kek(TENANT).expect("kek").expose().to_vec(),
    ];
    let kek = ctx.tenant_kek(TENANT).expect("kek");
    for key_id in &key_ids {
        let name = format!("{TENANT}/{key_id}");
        let rec: KeyRecord = ctx
            .records
            .get(record::NAMESPACE, &name)
            .await
            .expect("read")
            .expect("exists");
        for version in 1..=rec.current_version() {
            secrets.push(rec.material(&kek, version).expect("unwraps").expose().to_vec());
        }
    }
    assert_eq!(secrets.len(), 3 + key_ids.len());
    let stored = store.all_values();
    assert!(!stored.is_empty());
    for secret in &secrets {
        for value in &stored {
            assert!(
                !value.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a secret reached the host store"
            );
        }
    }
    // And the plaintext given to Encrypt is not stored anywhere either.
    assert!(stored.iter().all(|v| !v.windows(17).any(|w| w == b"plaintext at rest")));
}

#[tokio::test]
async fn an_altered_or_moved_key_record_is_an_error_never_data() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let created = keys::create_key(&ctx, json!({})).await.expect("created");
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    let name = format!("{TENANT}/{key_id}");
    let get = keyward_wire::StoreOp::Get {
        namespace: record::NAMESPACE.into(),
        key: name.clone(),
    };
    let Ok(keyward_wire::StoreResult::Value(Some(sealed))) = store.call(get).await else {
        panic!("record stored")
    };

    // Moved: the host copies tenant A's record under tenant B's name.
    let other = "444455556666";
    let moved = format!("{other}/{key_id}");
    let put = keyward_wire::StoreOp::Put {
        namespace: record::NAMESPACE.into(),
        key: moved,
        value: sealed.to_vec(),
    };
    store.call(put).await.expect("put");
    let ctx_b = ctx_for(&ctx, &store, principal(other));
    let err = keys::describe_key(&ctx_b, json!({ "KeyId": key_id }))
        .await
        .expect_err("must not open");
    assert_eq!(err.aws_type(), "KMSInternalException");
    assert!(err.message().contains("does not authenticate"), "{err:?}");

    // Altered in place.
    let mut altered = sealed.to_vec();
    let mid = altered.len() / 2;
    altered[mid] ^= 0x40;
    let put = keyward_wire::StoreOp::Put {
        namespace: record::NAMESPACE.into(),
        key: name,
        value: altered,
    };
    store.call(put).await.expect("put");
    let err = keys::describe_key(&ctx, json!({ "KeyId": key_id }))
        .await
        .expect_err("must not open");
    assert_eq!(err.aws_type(), "KMSInternalException");
    assert!(err.message().contains("does not authenticate"), "{err:?}");
}

/// A context like `ctx` for `principal` (its tenant's generation is read
/// when one of its keys is loaded).
fn ctx_for<'a>(ctx: &Ctx<'a>, store: &'a MemoryStore, principal: crate::auth::Principal) -> Ctx<'a> {
    Ctx::new(
        ctx.enclave,
        ctx.keyring,
        Records::new(store, &ctx.keyring.sealer),
        principal,
        ctx.now,
    )
}

#[tokio::test]
async fn another_tenants_key_is_not_found_by_id_arn_or_ciphertext() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let owner = ctx(&enclave, &store, TENANT).await;
    let created = keys::create_key(&owner, json!({})).await.expect("created");
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    let arn = created["KeyMetadata"]["Arn"].as_str().expect("arn").to_owned();
    let ct = crypto::encrypt(&owner, json!({ "KeyId": key_id, "Plaintext": b64(b"x") }))
        .await
        .expect("enc");

    let stranger = ctx_for(&owner, &store, principal("444455556666"));
    for id in [&key_id, &arn] {
        let err = keys::describe_key(&stranger, json!({ "KeyId": id }))
            .await
            .expect_err("hidden");
        assert!(matches!(err, KmsError::NotFound(_)), "{err:?}");
    }
    let err = crypto::decrypt(&stranger, json!({ "CiphertextBlob": ct["CiphertextBlob"] }))
        .await
        .expect_err("hidden");
    assert!(matches!(err, KmsError::NotFound(_)), "{err:?}");
    let listed = keys::list_keys(&stranger, json!({})).await.expect("lists");
    assert_eq!(listed["Keys"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn deletion_window_end_destroys_the_record_and_its_aliases() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let mut ctx = ctx(&enclave, &store, TENANT).await;
    let created = keys::create_key(&ctx, json!({})).await.expect("created");
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    let ct = crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"doomed") }))
        .await
        .expect("enc");
    super::aliases::create_alias(&ctx, json!({ "AliasName": "alias/doomed", "TargetKeyId": key_id }))
        .await
        .expect("alias");
    let scheduled = super::lifecycle::schedule_key_deletion(&ctx, json!({ "KeyId": key_id, "PendingWindowInDays": 7 }))
        .await
        .expect("scheduled");
    let deletion = scheduled["DeletionDate"].as_i64().expect("date");
    let records_before = store.all_values().len();

    // One second before the end of the window nothing happens.
    let sweep = |now: i64| {
        let records = Records::new(&*store, &ctx.keyring.sealer);
        let (hierarchy, locks) = (&ctx.keyring.hierarchy, &enclave.locks);
        async move { crate::keystore::due::sweep(&records, hierarchy, locks, now, &mut Vec::new()).await }
    };
    sweep(deletion - 1).await.expect("sweep");
    assert_eq!(store.all_values().len(), records_before);

    sweep(deletion).await.expect("sweep");
    assert_eq!(
        store.all_values().len(),
        records_before - 2,
        "key record and alias record deleted"
    );
    ctx.now = OffsetDateTime::from_unix_timestamp(deletion).expect("time");
    let err = crypto::decrypt(&ctx, json!({ "CiphertextBlob": ct["CiphertextBlob"] }))
        .await
        .expect_err("gone");
    assert!(matches!(err, KmsError::NotFound(_)), "{err:?}");
    let err = keys::describe_key(&ctx, json!({ "KeyId": "alias/doomed" }))
        .await
        .expect_err("alias gone");
    assert!(matches!(err, KmsError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_due_rotation_happens_on_use_and_old_ciphertexts_still_decrypt() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let mut ctx = ctx(&enclave, &store, TENANT).await;
    let created = keys::create_key(&ctx, json!({})).await.expect("created");
    let key_id = created["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    let old = crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"v1") }))
        .await
        .expect("enc");
    super::rotation::enable_key_rotation(&ctx, json!({ "KeyId": key_id, "RotationPeriodInDays": 90 }))
        .await
        .expect("enabled");
    ctx.now += time::Duration::days(91);
    let new = crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"v2") }))
        .await
        .expect("enc");
    let version = |ct: &Value| {
        let blob = super::params::blob("b", ct["CiphertextBlob"].as_str().expect("blob")).expect("b64");
        crate::keys::blob::parse_header(&blob).expect("header").key_version
    };
    assert_eq!((version(&old), version(&new)), (1, 2));
    let rotations = super::rotation::list_key_rotations(&ctx, json!({ "KeyId": key_id }))
        .await
        .expect("list");
    assert_eq!(rotations["Rotations"][0]["RotationType"], "AUTOMATIC");
    let plain = crypto::decrypt(&ctx, json!({ "CiphertextBlob": old["CiphertextBlob"] }))
        .await
        .expect("dec");
    assert_eq!(field(&plain, "Plaintext"), b64(b"v1"));
}

/// Regression: a full page of the API's largest size (1000) must still say
/// that more follow (the store page was capped at exactly 1000, so the extra
/// "is there more" entry never came back).
#[tokio::test]
async fn a_full_page_of_1000_still_reports_truncation() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    for _ in 0..1001 {
        keys::create_key(&ctx, json!({})).await.expect("created");
    }
    let page = keys::list_keys(&ctx, json!({ "Limit": 1000 })).await.expect("lists");
    assert_eq!(page["Keys"].as_array().map(Vec::len), Some(1000));
    assert_eq!(page["Truncated"], true);
    let marker = page["NextMarker"].as_str().expect("marker").to_owned();
    let rest = keys::list_keys(&ctx, json!({ "Limit": 1000, "Marker": marker }))
        .await
        .expect("lists");
    assert_eq!(rest["Keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["Truncated"], false);
}

/// CreateKey's `Policy` is refused, never silently dropped, and no key is created.
#[tokio::test]
async fn create_key_with_a_key_policy_is_unsupported() {
    let enclave = enclave();
    let store = MemoryStore::default();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let body = json!({ "Policy": policy, "Description": "with a policy" });
    let err = super::dispatch(&ctx, keyward_wire::Operation::CreateKey, body)
        .await
        .expect_err("refused");
    assert_eq!(err.aws_type(), "UnsupportedOperationException");
    assert_eq!(err.message(), keys::POLICY_UNSUPPORTED);
    assert!(err.message().starts_with("Key policy documents are not supported yet"));
    let listed = keys::list_keys(&ctx, json!({})).await.expect("lists");
    assert_eq!(listed["Keys"], json!([]), "no key was created");
    // An over-long policy is still the AWS validation error.
    let long = json!({ "Policy": "x".repeat(32769) });
    let err = keys::create_key(&ctx, long).await.expect_err("refused");
    assert_eq!(err.aws_type(), "ValidationException");
}

/// Key records written before issue 20 keep reading, under the new rule:
/// `AllowedPCRs` without `RequireRecipient` now requires a Recipient too,
/// and `RequireRecipient` without PCRs reads as `AllowAnyEnclave`.
#[tokio::test]
async fn attestation_policies_sealed_before_issue_20_require_a_recipient() {
    use crate::keys::record::AttestationPolicy;
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let legacy = [
        AttestationPolicy {
            require_recipient: false,
            allowed_pcrs: [(0, vec!["ab".repeat(48)])].into_iter().collect(),
        },
        AttestationPolicy {
            require_recipient: true,
            allowed_pcrs: Default::default(),
        },
    ];
    for policy in legacy {
        let (key_id, arn) = create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
        let encrypted = crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"legacy") }))
            .await
            .expect("encrypts");
        let id = uuid::Uuid::parse_str(&key_id).expect("uuid");
        let mut rec = crate::keystore::keys::load_key(&ctx, &id).await.expect("loads");
        rec.attestation = Some(policy.clone());
        crate::keystore::keys::save_key(&ctx, &rec).await.expect("saved");
        let described = super::attestation_ops::describe_key_attestation_policy(&ctx, json!({ "KeyId": arn }))
            .await
            .expect("described");
        assert_eq!(described["RequireRecipient"], true, "{policy:?}");
        assert_eq!(
            described["AllowAnyEnclave"],
            policy.allowed_pcrs.is_empty(),
            "{policy:?}"
        );
        let decrypted = crypto::decrypt(&ctx, json!({ "CiphertextBlob": encrypted["CiphertextBlob"] })).await;
        assert_eq!(aws_type(decrypted), "AccessDeniedException", "{policy:?}");
    }
}
