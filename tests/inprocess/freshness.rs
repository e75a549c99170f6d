//! Freshness (issue 19 items 1, 4, 5): a host that omits a record, serves
//! an older sealed version, swaps identities, reorders or trims a listing or
//! hides the audit head is caught by the enclave's authenticated index, and
//! nothing it undid takes effect. Every case goes through the AWS client
//! path (the in-process `aws-sdk-kms` client, or signed `Keyward.*` calls)
//! with the service's host told to lie ([`TamperingStore`]).
//!
//! [`TamperingStore`]: keyward_test_support::tamper::TamperingStore

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{ExpirationModelType, OriginType, WrappingKeySpec};
use keyward_test_support::Creds;
use keyward_test_support::b64;
use keyward_test_support::tamper::Snapshot;
use serde_json::json;

use crate::support::{ACCOUNT, Service, create_key, encrypt, must, random_bytes};

const TENANT: &str = "444455556666";

fn creds_of(answer: &serde_json::Value) -> Creds {
    Creds {
        access_key_id: answer["AccessKeyId"].as_str().expect("AccessKeyId").to_owned(),
        secret: answer["SecretAccessKey"].as_str().expect("SecretAccessKey").to_owned(),
    }
}

fn key_record(key_id: &str) -> String {
    format!("{ACCOUNT}/{key_id}")
}

/// Violations the enclave counted so far, all kinds.
fn violations(service: &Service) -> u64 {
    let v = service.enclave().status().metrics.freshness_violations;
    v.omission + v.rollback + v.substitution
}

/// Asserts that a failed SDK call is the freshness refusal naming `record`.
#[track_caller]
fn assert_refused<
    T: std::fmt::Debug,
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
>(
    what: &str,
    result: Result<T, aws_sdk_kms::error::SdkError<E, R>>,
    record: &str,
) {
    let err = match result {
        Ok(v) => panic!("{what} succeeded on rolled-back state: {v:?}"),
        Err(err) => err,
    };
    let service_err = err.as_service_error().unwrap_or_else(|| panic!("{what}: {err:?}"));
    let message = service_err.message().unwrap_or_default();
    assert_eq!(service_err.code(), Some("KMSInternalException"), "{what}: {message}");
    assert!(
        message.contains(record) && message.contains("authenticated index") && message.contains("Nothing was released"),
        "{what}: {message}"
    );
}

/// Runs `op`, then has the host serve `namespace`/`key` as it was before
/// it (and drop the enclave's cached copy, as a host may make it do).
async fn roll_back_after<F: std::future::Future<Output = ()>>(service: &Service, namespace: &str, key: &str, op: F) {
    let before = service.host().snapshot(namespace, key);
    assert!(before.value.is_some(), "{namespace}/{key} exists before");
    op.await;
    assert_ne!(
        service.host().snapshot(namespace, key),
        before,
        "{namespace}/{key} changed"
    );
    service.host().serve(namespace, key, before);
    service.enclave().invalidate_all();
}

/// Credential records in the store.
async fn credentials(service: &Service) -> usize {
    service.stored_keys("cred").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_tenant_for_an_existing_tenant_hidden_by_the_host_is_refused() {
    let service = Service::start().await;
    let body = json!({ "TenantId": TENANT }).to_string();
    let created = service
        .signed_call_as(&service.operator, "Keyward.CreateTenant", body.as_bytes())
        .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let before = credentials(&service).await;

    // The host hides the tenant record: the operator asks for the id again.
    service.host().hide("tenant", TENANT);
    service.enclave().invalidate_all();
    let counted = violations(&service);
    let again = service
        .signed_call_as(&service.operator, "Keyward.CreateTenant", body.as_bytes())
        .await;
    assert_eq!(again.status, 500, "{}", String::from_utf8_lossy(&again.body));
    assert_eq!(again.error_type().as_deref(), Some("KMSInternalException"));
    let message = again.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(&format!("tenant/{TENANT}")) && message.contains("absent") && message.contains("version 1"),
        "{message}"
    );
    assert!(!String::from_utf8_lossy(&again.body).contains("SecretAccessKey"));
    assert_eq!(credentials(&service).await, before, "no credential was created");
    assert!(violations(&service) > counted, "counted in the metrics");

    // A fresh node (nothing cached, roots read from the store) refuses too.
    let node = service.restart_behind_same_host().await;
    let again = node
        .signed_call_as(&node.operator, "Keyward.CreateTenant", body.as_bytes())
        .await;
    assert_eq!(again.status, 500, "{}", String::from_utf8_lossy(&again.body));
    assert_eq!(credentials(&node).await, before, "no credential was created");

    // Honest again: the tenant exists, as it did.
    node.host().honest();
    let honest = node
        .signed_call_as(&node.operator, "Keyward.CreateTenant", body.as_bytes())
        .await;
    assert_eq!(honest.error_type().as_deref(), Some("AlreadyExistsException"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_access_key_stays_dead_when_the_host_serves_it_again() {
    let service = Service::start().await;
    let created = service
        .signed_call("Keyward.CreateAccessKey", br#"{"Role": "KeyUser"}"#)
        .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let user = creds_of(&created.json());
    let kms = service.client_with(&user.access_key_id, &user.secret);
    let key = create_key(&service.client(), "for the doomed credential").await;
    encrypt(&kms, &key, b"works while it lives", None).await;

    let listing = format!("{ACCOUNT}/{}", user.access_key_id);
    let listed = service.host().snapshot("tenant-cred", &listing);
    roll_back_after(&service, "cred", &user.access_key_id, async {
        let body = json!({ "AccessKeyId": user.access_key_id }).to_string();
        let deleted = service.signed_call("Keyward.DeleteAccessKey", body.as_bytes()).await;
        assert_eq!(deleted.status, 200, "{}", String::from_utf8_lossy(&deleted.body));
    })
    .await;
    service.host().serve("tenant-cred", &listing, listed);

    let counted = violations(&service);
    let used = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"after deletion".to_vec()))
        .send()
        .await;
    let err = used.expect_err("a deleted access key is refused");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("KMSInternalException"),
        "{err:?}"
    );
    assert!(violations(&service) > counted, "counted in the metrics");
    // The tenant's listing of its access keys is refused too, not revived.
    let listed = service.signed_call("Keyward.ListAccessKeys", b"{}").await;
    assert_eq!(listed.status, 500, "{}", String::from_utf8_lossy(&listed.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_state_changes_are_not_undone_by_a_rollback() {
    let service = Service::start().await;
    let kms = service.client();

    // DisableKey.
    let key = create_key(&kms, "disabled").await;
    roll_back_after(&service, "key", &key_record(&key), async {
        must("DisableKey", kms.disable_key().key_id(&key).send().await);
    })
    .await;
    assert_refused(
        "Encrypt under a disabled key served enabled",
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
        &format!("key/{}", key_record(&key)),
    );
    service.host().honest();

    // ScheduleKeyDeletion.
    let key = create_key(&kms, "scheduled").await;
    roll_back_after(&service, "key", &key_record(&key), async {
        must(
            "ScheduleKeyDeletion",
            kms.schedule_key_deletion()
                .key_id(&key)
                .pending_window_in_days(7)
                .send()
                .await,
        );
    })
    .await;
    assert_refused(
        "Encrypt under a key pending deletion served enabled",
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
        &format!("key/{}", key_record(&key)),
    );
    service.host().honest();

    // UpdateKeyAttestationPolicy: the policy the key had before (none) comes back.
    let key = create_key(&kms, "attested").await;
    roll_back_after(&service, "key", &key_record(&key), async {
        let body = json!({
            "KeyId": key,
            "RequireRecipient": true,
            "AllowedPCRs": { "0": [random_bytes(48).iter().map(|b| format!("{b:02x}")).collect::<String>()] },
        });
        let updated = service
            .signed_call("Keyward.UpdateKeyAttestationPolicy", body.to_string().as_bytes())
            .await;
        assert_eq!(updated.status, 200, "{}", String::from_utf8_lossy(&updated.body));
    })
    .await;
    assert_refused(
        "GenerateDataKey without a recipient under a key whose policy was rolled back",
        kms.generate_data_key()
            .key_id(&key)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .send()
            .await,
        &format!("key/{}", key_record(&key)),
    );
    service.host().honest();

    // DeleteKeyPolicyModule: the module removed comes back.
    let key = create_key(&kms, "with a module").await;
    let wasm =
        wat::parse_file(keyward_test_support::policies::workspace_root().join("tests/data/policy_allow_all.wat"))
            .expect("the allow-all module parses");
    let put = service
        .signed_call(
            "Keyward.PutKeyPolicyModule",
            json!({ "KeyId": key, "Module": b64(&wasm) }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    roll_back_after(&service, "key", &key_record(&key), async {
        let deleted = service
            .signed_call(
                "Keyward.DeleteKeyPolicyModule",
                json!({ "KeyId": key }).to_string().as_bytes(),
            )
            .await;
        assert_eq!(deleted.status, 200, "{}", String::from_utf8_lossy(&deleted.body));
    })
    .await;
    assert_refused(
        "DescribeKey of a key whose module removal was rolled back",
        kms.describe_key().key_id(&key).send().await,
        &format!("key/{}", key_record(&key)),
    );
    service.host().honest();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_imported_key_material_stays_deleted_under_a_rollback() {
    let service = Service::start().await;
    let kms = service.client();
    let created = must(
        "CreateKey EXTERNAL",
        kms.create_key().origin(OriginType::External).send().await,
    );
    let key = created.key_metadata().expect("metadata").key_id().to_owned();
    let params = must(
        "GetParametersForImport",
        kms.get_parameters_for_import()
            .key_id(&key)
            .wrapping_algorithm(aws_sdk_kms::types::AlgorithmSpec::RsaesOaepSha256)
            .wrapping_key_spec(WrappingKeySpec::Rsa2048)
            .send()
            .await,
    );
    let wrapped =
        keyward_sdk::import::wrap_key_material(params.public_key().expect("public key").as_ref(), &random_bytes(32))
            .expect("wraps");
    must(
        "ImportKeyMaterial",
        kms.import_key_material()
            .key_id(&key)
            .import_token(params.import_token().expect("token").clone())
            .encrypted_key_material(Blob::new(wrapped))
            .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
            .send()
            .await,
    );
    encrypt(&kms, &key, b"with imported material", None).await;
    roll_back_after(&service, "key", &key_record(&key), async {
        must(
            "DeleteImportedKeyMaterial",
            kms.delete_imported_key_material().key_id(&key).send().await,
        );
    })
    .await;
    assert_refused(
        "Encrypt with revoked material served back",
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
        &format!("key/{}", key_record(&key)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_tenant_stays_disabled_under_a_rollback() {
    let service = Service::start().await;
    let kms = service.client();
    let key = create_key(&kms, "of a tenant about to be disabled").await;
    roll_back_after(&service, "tenant", ACCOUNT, async {
        let body = json!({ "TenantId": ACCOUNT }).to_string();
        let disabled = service
            .signed_call_as(&service.operator, "Keyward.DisableTenant", body.as_bytes())
            .await;
        assert_eq!(disabled.status, 200, "{}", String::from_utf8_lossy(&disabled.body));
    })
    .await;
    assert_refused(
        "Encrypt by a disabled tenant served enabled",
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
        &format!("tenant/{ACCOUNT}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_the_index_with_the_record_is_a_rollback_too() {
    let service = Service::start().await;
    let kms = service.client();
    let key = create_key(&kms, "whole scope rolled back").await;
    let host = service.host();
    let root = host.snapshot("index", &format!("{ACCOUNT}/root"));
    let buckets: Vec<(String, Snapshot)> = service
        .stored_keys("index")
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{ACCOUNT}/b/")))
        .map(|k| {
            let s = host.snapshot("index", &k);
            (k, s)
        })
        .collect();
    roll_back_after(&service, "key", &key_record(&key), async {
        must("DisableKey", kms.disable_key().key_id(&key).send().await);
    })
    .await;
    host.serve("index", &format!("{ACCOUNT}/root"), root);
    for (k, s) in buckets {
        host.serve("index", &k, s);
    }
    let counted = service.enclave().status().metrics.freshness_violations.rollback;
    assert_refused(
        "Encrypt with the key and its index rolled back",
        kms.encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
        &format!("index/{ACCOUNT}/root"),
    );
    assert!(service.enclave().status().metrics.freshness_violations.rollback > counted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_audit_head_stops_appends_instead_of_starting_a_new_chain() {
    let service = Service::start().await;
    let kms = service.client();
    let key = create_key(&kms, "audited").await;
    encrypt(&kms, &key, b"audited", None).await;
    let chain = service.audit_chain_len(ACCOUNT).await;
    assert!(chain >= 2);
    let first = service.host().snapshot("audit", &format!("{ACCOUNT}/r/{:020}", 1));

    // The host hides the head; the enclave restarts (its appender reads the
    // head again) behind the same host.
    service.host().hide_audit_head(ACCOUNT);
    let service = service.restart_behind_same_host().await;
    let kms = service.client();
    let counted = violations(&service);
    let refused = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect_err("an append without its head is refused");
    let service_err = refused.as_service_error().expect("a service error");
    assert_eq!(service_err.meta().code(), Some("KMSInternalException"), "{refused:?}");
    let message = service_err.meta().message().unwrap_or_default();
    assert!(
        message.contains("audit log refused") && message.contains(&format!("audit/{ACCOUNT}/head")),
        "{message}"
    );
    assert!(violations(&service) > counted, "counted in the metrics");
    assert_eq!(service.audit_chain_len(ACCOUNT).await, chain, "nothing appended");
    assert_eq!(
        service.host().snapshot("audit", &format!("{ACCOUNT}/r/{:020}", 1)),
        first,
        "no new chain at sequence 1"
    );

    // Honest again: the chain continues where it was.
    service.host().honest();
    encrypt(&kms, &key, b"audited again", None).await;
    assert_eq!(service.audit_chain_len(ACCOUNT).await, chain + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_the_host_trims_or_reorders_are_refused() {
    let service = Service::start().await;
    let kms = service.client();
    let mut keys = Vec::new();
    for n in 0..3 {
        keys.push(create_key(&kms, &format!("listed {n}")).await);
    }
    must("ListKeys", kms.list_keys().send().await);

    service.host().reverse_listings("key");
    let reordered = kms.list_keys().send().await;
    let err = reordered.expect_err("a reordered listing is refused");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("KMSInternalException")
    );
    service.host().honest();

    service.host().hide("key", &key_record(&keys[1]));
    let counted = service.enclave().status().metrics.freshness_violations.omission;
    assert_refused(
        "ListKeys with a key left out",
        kms.list_keys().send().await,
        &format!("key/{}", key_record(&keys[1])),
    );
    assert!(service.enclave().status().metrics.freshness_violations.omission > counted);
    service.host().honest();

    // A record served under another identity does not authenticate (the
    // seal binds the identity; the index is checked after).
    service
        .host()
        .serve_as("key", &key_record(&keys[0]), "key", &key_record(&keys[2]));
    service.enclave().invalidate_all();
    let swapped = kms.describe_key().key_id(&keys[0]).send().await;
    let err = swapped.expect_err("a swapped record is refused");
    let message = err
        .as_service_error()
        .and_then(|e| e.meta().message())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(&format!("key/{}", key_record(&keys[0]))) && message.contains("does not authenticate"),
        "{message}"
    );
    service.host().honest();
    must("ListKeys when honest", kms.list_keys().send().await);
}

/// Genesis writes the global index root with the boot record; a store with
/// the boot record and without that root (hidden by the host) is refused at
/// unseal: the enclave stays sealed, names the missing root, and unseals once
/// the root is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseal_over_a_store_without_its_global_index_root_is_refused() {
    let service = Service::start().await;
    let kms = service.client();
    let key = create_key(&kms, "made before the unseal").await;
    let root = service.host().snapshot("index", "@global/root");
    assert!(root.value.is_some(), "genesis wrote the global index root");
    assert!(
        service.host().snapshot("boot", "custody").value.is_some(),
        "genesis wrote the boot record"
    );
    let service = service.restart_sealed_behind_same_host().await;
    let custodian = service.custodian().expect("a 1-of-1 genesis");
    service.host().hide("index", "@global/root");
    let r = service.unseal_with(custodian).await;
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("index/@global/root"), "{body}");
    assert!(!service.enclave().is_ready());

    service.host().honest();
    let r = service.unseal_with(custodian).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(service.enclave().is_ready());
    must(
        "Encrypt after the unseal",
        service
            .client()
            .encrypt()
            .key_id(&key)
            .plaintext(Blob::new(b"x".to_vec()))
            .send()
            .await,
    );
}
