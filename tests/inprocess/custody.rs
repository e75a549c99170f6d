//! Custody of the root key, in process (issue 18, docs/custody.md): the
//! enclave starts sealed and answers 503 until genesis or an unseal; a
//! restart over the same store is sealed again and M of N custodians'
//! shares bring every key back; each refusal leaves it sealed and says why.

use keyward_custody::share::ShareSecret;
use keyward_custody::unseal::UnsealMessage;
use keyward_sdk::custody::CustodyKey;
use keyward_test_support::Creds;
use keyward_test_support::custody::{Custodian, Genesis};
use keyward_test_support::raw::RawResponse;
use keyward_wire::StoreOp;
use serde_json::json;

use crate::support::{Service, create_key, decrypt, encrypt, random_bytes};

const SEALED: &str = "ServiceUnavailableException";

fn text(response: &RawResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// The message of an AWS JSON error answer.
fn message(response: &RawResponse) -> String {
    response.json()["message"].as_str().unwrap_or_default().to_owned()
}

/// A normal operation, signed by the dev tenant.
async fn list_keys(kw: &Service) -> RawResponse {
    kw.signed_call("ListKeys", b"{}").await
}

#[track_caller]
fn assert_sealed(what: &str, response: &RawResponse, says: &str) {
    response.assert_error(what, 503, SEALED);
    let message = message(response);
    assert!(message.contains("Keyward is sealed"), "{what}: {message}");
    assert!(
        message.contains(says),
        "{what}: the message should say {says:?}: {message}"
    );
}

/// A 2-of-3 genesis on a fresh enclave; the custodians, in order.
async fn two_of_three(kw: &Service) -> (Genesis, Vec<Custodian>) {
    let keys: Vec<CustodyKey> = (0..3).map(|_| CustodyKey::generate()).collect();
    let public: Vec<_> = keys.iter().map(CustodyKey::public_key).collect();
    let genesis = kw.init_custody(2, &public, None).await;
    assert_eq!(genesis.packages.len(), 3);
    let custodians = keys
        .into_iter()
        .zip(genesis.packages.iter().cloned())
        .map(|(key, package)| Custodian { key, package })
        .collect();
    (genesis, custodians)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_enclave_answers_503_saying_how_to_initialise_it() {
    let kw = Service::start_uninitialised().await;
    assert!(!kw.enclave().is_ready());
    assert_eq!(kw.enclave().status().health, "sealed");
    assert_sealed("ListKeys before genesis", &list_keys(&kw).await, "kmsctl init");
    let r = kw.signed_call_as(&kw.operator, "Keyward.ListTenants", b"{}").await;
    assert_sealed("the operator's ListTenants before genesis", &r, "kmsctl init");
    // Nothing to unseal yet.
    let r = kw.custody_call("GetUnsealDocument", &json!({ "Nonce": "AAAA" })).await;
    r.assert_error("GetUnsealDocument before genesis", 400, "ValidationException");
    assert!(message(&r).contains("not been initialised"), "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn genesis_makes_the_enclave_ready_and_seals_the_operator_credential_to_the_operator() {
    let kw = Service::start_uninitialised().await;
    let operator_key = CustodyKey::generate();
    let custodian = CustodyKey::generate();
    let genesis = kw
        .init_custody(1, &[custodian.public_key()], Some(&operator_key.public_key()))
        .await;
    assert_eq!(genesis.deployment_id.len(), 32);
    assert!(kw.enclave().is_ready());
    assert_eq!(kw.enclave().status().health, "ok");
    // The custodian opens its package: the share of this deployment.
    let share = custodian.open_share(&genesis.packages[0]).expect("the package opens");
    assert_eq!(share.index(), 1);
    // The commitment is the audit key the enclave attests.
    assert!(!genesis.root_commitment.is_empty());

    // The dev credentials of mock mode work, and so does the operator's
    // first credential, which only the operator's key opens.
    let key = create_key(&kw.client(), "after genesis").await;
    let ciphertext = encrypt(&kw.client(), &key, b"hello", None).await;
    assert_eq!(decrypt(&kw.client(), None, &ciphertext, None).await, b"hello");
    let package = keyward_custody::operator::OperatorCredentialPackage::from_bytes(
        genesis.operator_credential.as_deref().expect("an operator credential"),
    )
    .expect("a package");
    assert!(CustodyKey::generate().open_operator_credential(&package).is_err());
    let (access_key_id, secret) = operator_key
        .open_operator_credential(&package)
        .expect("the operator opens it");
    let operator = Creds {
        access_key_id,
        secret: secret.expose().to_owned(),
    };
    let r = kw.signed_call_as(&operator, "Keyward.ListTenants", b"{}").await;
    assert_eq!(
        r.status,
        200,
        "ListTenants with the operator's first credential: {}",
        text(&r)
    );
    // The secret is nowhere in the store.
    let stored = kw.store().all_values();
    assert!(
        !stored.iter().any(|v| v
            .windows(operator.secret.len())
            .any(|w| w == operator.secret.as_bytes())),
        "the operator's secret is stored in the clear"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_is_sealed_until_two_of_three_custodians_unseal_and_old_ciphertexts_decrypt() {
    let kw = Service::start_uninitialised().await;
    let (genesis, custodians) = two_of_three(&kw).await;
    let key = create_key(&kw.client(), "survives restarts").await;
    let ciphertext = encrypt(&kw.client(), &key, b"kept across restarts", None).await;

    let kw = kw.restart_sealed().await;
    assert!(!kw.enclave().is_ready());
    assert_eq!(kw.enclave().status().health, "sealed");
    assert_sealed("ListKeys after a restart", &list_keys(&kw).await, "0 of 2 shares");
    assert!(message(&list_keys(&kw).await).contains(&genesis.deployment_id));

    // Custodian 3, then custodian 1.
    let r = kw.unseal_with(&custodians[2]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({ "Received": 1, "Threshold": 2, "State": "Sealed" }));
    assert_sealed("ListKeys with 1 of 2 shares", &list_keys(&kw).await, "1 of 2 shares");
    let r = kw.unseal_with(&custodians[0]).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({ "Received": 2, "Threshold": 2, "State": "Ready" }));
    assert!(kw.enclave().is_ready());
    assert_eq!(kw.enclave().status().health, "ok");
    assert_eq!(
        decrypt(&kw.client(), None, &ciphertext, None).await,
        b"kept across restarts"
    );

    // Ready: nothing more to unseal.
    let r = kw.custody_call("GetUnsealDocument", &json!({ "Nonce": "AAAA" })).await;
    r.assert_error("GetUnsealDocument while ready", 400, "ValidationException");
    assert!(message(&r).contains("not sealed"), "{}", text(&r));
    let r = kw.custody_call("Unseal", &json!({ "Message": "AAAA" })).await;
    r.assert_error("Unseal while ready", 400, "ValidationException");
    assert!(message(&r).contains("not sealed"), "{}", text(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_share_short_of_the_threshold_stays_sealed_and_a_later_restart_needs_them_all_again() {
    let kw = Service::start_uninitialised().await;
    let (_, custodians) = two_of_three(&kw).await;
    let kw = kw.restart_sealed().await;
    let r = kw.unseal_with(&custodians[1]).await;
    assert_eq!(r.json()["State"], "Sealed", "{}", text(&r));
    assert!(!kw.enclave().is_ready());
    assert_sealed("ListKeys with M-1 shares", &list_keys(&kw).await, "1 of 2 shares");
    // The same custodian again does not count twice.
    let r = kw.unseal_with(&custodians[1]).await;
    r.assert_error("the same share twice", 400, "ValidationException");
    assert!(message(&r).contains("already accepted"), "{}", text(&r));
    assert!(!kw.enclave().is_ready());
    // A restart forgets the accepted share (the session was in memory).
    let kw = kw.restart_sealed().await;
    assert_sealed("after a restart", &list_keys(&kw).await, "0 of 2 shares");
    assert_eq!(kw.unseal_with(&custodians[0]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&custodians[1]).await.json()["State"], "Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_share_is_refused_by_index_and_not_counted() {
    let kw = Service::start_uninitialised().await;
    let (_, custodians) = two_of_three(&kw).await;
    let kw = kw.restart_sealed().await;
    let real = custodians[1].key.open_share(&custodians[1].package).expect("opens");
    let mut value = real.value().to_vec();
    value[5] ^= 0x40;
    let forged = ShareSecret::new(*real.deployment_id(), real.index(), value).expect("a share");
    let message_bytes = kw
        .unseal_message_of(&forged)
        .await
        .expect("the custodian's side seals it");
    let r = kw.send_unseal(&message_bytes).await;
    r.assert_error("a wrong share", 400, "InvalidCiphertextException");
    assert!(
        message(&r).contains("custodian 2's share does not match the boot record"),
        "{}",
        text(&r)
    );
    assert!(!kw.enclave().is_ready());
    // Said in the 503 too, and nothing was counted.
    assert_sealed("after a wrong share", &list_keys(&kw).await, "0 of 2 shares");
    assert!(message(&list_keys(&kw).await).contains("Last refusal"));
    // The right shares still unseal (the session was not spoilt).
    assert_eq!(kw.unseal_with(&custodians[1]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&custodians[2]).await.json()["State"], "Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_of_another_deployment_is_refused() {
    let kw = Service::start_uninitialised().await;
    let (_, custodians) = two_of_three(&kw).await;
    let other = Service::start_uninitialised().await;
    let (other_genesis, other_custodians) = two_of_three(&other).await;
    let kw = kw.restart_sealed().await;

    // The custodian's library refuses before sending anything.
    let refused = kw
        .unseal_message(&other_custodians[0].package, &other_custodians[0].key)
        .await
        .expect_err("refused by the custodian's side");
    assert!(refused.contains("nothing was sent"), "{refused}");

    // Sent anyway (sealed to this session by hand): the enclave refuses it.
    let foreign = other_custodians[0]
        .key
        .open_share(&other_custodians[0].package)
        .expect("opens");
    let message_bytes = UnsealMessage::seal(&foreign, &kw.unseal_session_key().await)
        .and_then(|m| m.to_bytes())
        .expect("sealed");
    let r = kw.send_unseal(&message_bytes).await;
    r.assert_error("a share of another deployment", 400, "InvalidCiphertextException");
    assert!(
        message(&r).contains(&format!("is for deployment {}", other_genesis.deployment_id)),
        "{}",
        text(&r)
    );
    assert_sealed("after a foreign share", &list_keys(&kw).await, "0 of 2 shares");
    assert_eq!(kw.unseal_with(&custodians[0]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&custodians[1]).await.json()["State"], "Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unseal_message_of_a_previous_session_is_refused_as_a_replay() {
    let kw = Service::start_uninitialised().await;
    let (_, custodians) = two_of_three(&kw).await;
    let kw = kw.restart_sealed().await;
    let recorded = kw
        .unseal_message(&custodians[0].package, &custodians[0].key)
        .await
        .expect("sealed");
    assert_eq!(kw.send_unseal(&recorded).await.json()["State"], "Sealed");
    // The host restarts the enclave and replays what it recorded.
    let kw = kw.restart_sealed().await;
    let r = kw.send_unseal(&recorded).await;
    r.assert_error("a replayed unseal message", 400, "InvalidCiphertextException");
    assert!(message(&r).contains("another unseal session"), "{}", text(&r));
    assert_sealed("after a replay", &list_keys(&kw).await, "0 of 2 shares");
    assert_eq!(kw.unseal_with(&custodians[0]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&custodians[2]).await.json()["State"], "Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_genesis_is_refused_whether_ready_or_sealed() {
    let kw = Service::start().await;
    let body = keyward_test_support::custody::init_custody_body(1, &[CustodyKey::generate().public_key()], None);
    let r = kw.custody_call("InitCustody", &body).await;
    r.assert_error("genesis of a ready deployment", 400, "ValidationException");
    assert!(message(&r).contains("already initialised"), "{}", text(&r));
    let kw = kw.restart_sealed().await;
    let r = kw.custody_call("InitCustody", &body).await;
    r.assert_error("genesis of a sealed deployment", 400, "ValidationException");
    assert!(message(&r).contains("already initialised"), "{}", text(&r));
    assert!(!kw.enclave().is_ready());
    // Its own custodian still unseals it.
    let custodian = kw.custodian().expect("the genesis custodian");
    assert_eq!(kw.unseal_with(custodian).await.json()["State"], "Ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn genesis_over_a_store_with_sealed_records_but_no_boot_record_is_refused() {
    let kw = Service::start().await;
    create_key(&kw.client(), "orphaned if genesis ran again").await;
    let store = std::sync::Arc::clone(kw.store());
    drop(kw);
    store.destroy("boot", "custody");
    let kw = Service::start_sealed_on(store).await;
    assert_sealed(
        "ListKeys without a boot record",
        &list_keys(&kw).await,
        "boot record is missing",
    );
    let body = keyward_test_support::custody::init_custody_body(1, &[CustodyKey::generate().public_key()], None);
    let r = kw.custody_call("InitCustody", &body).await;
    r.assert_error("genesis over sealed records", 400, "ValidationException");
    assert!(message(&r).contains("boot record is missing"), "{}", text(&r));
    assert!(!kw.enclave().is_ready());
    assert_eq!(kw.store().raw("boot", "custody").1, None, "no boot record was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_the_old_mock_root_key_format_is_refused_with_a_start_fresh_message() {
    let store = keyward_enclave::store::MemoryStore::new();
    // The older mock format: a root key wrapped by the public dev-only key.
    let put = StoreOp::Put {
        namespace: "boot".into(),
        key: "root-key".into(),
        value: random_bytes(61),
    };
    keyward_enclave::store::StoreTransport::call(&*store, put)
        .await
        .expect("put");
    let kw = Service::start_sealed_on(store).await;
    let r = list_keys(&kw).await;
    assert_sealed("ListKeys over an old data dir", &r, "boot/root-key");
    assert!(message(&r).contains("Start afresh"), "{}", text(&r));
    let body = keyward_test_support::custody::init_custody_body(1, &[CustodyKey::generate().public_key()], None);
    let r = kw.custody_call("InitCustody", &body).await;
    r.assert_error("genesis over an old data dir", 400, "ValidationException");
    assert!(message(&r).contains("Start afresh"), "{}", text(&r));
    assert!(!kw.enclave().is_ready());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_genesis_parameters_are_refused_and_leave_it_awaiting_genesis() {
    let kw = Service::start_uninitialised().await;
    let key = CustodyKey::generate().public_key();
    let body = keyward_test_support::custody::init_custody_body(2, &[key], None);
    let r = kw.custody_call("InitCustody", &body).await;
    r.assert_error("threshold above the custodians", 400, "ValidationException");
    assert!(message(&r).contains("threshold"), "{}", text(&r));
    let r = kw
        .custody_call(
            "InitCustody",
            &json!({ "Threshold": 1, "CustodianPublicKeys": ["AAAA"] }),
        )
        .await;
    r.assert_error("a key that is not 32 bytes", 400, "ValidationException");
    assert!(!kw.enclave().is_ready());
    kw.init_custody(1, &[key], None).await;
    assert!(kw.enclave().is_ready());
}

/// A key-service genesis (`kmsctl init --key-service`: no Threshold, no
/// CustodianPublicKeys) sent to a Shamir enclave is refused with what to
/// do instead, never a genesis without custodians; it still awaits genesis.
#[tokio::test(flavor = "multi_thread")]
async fn a_genesis_without_custodians_is_refused_by_a_shamir_enclave() {
    let kw = Service::start_uninitialised().await;
    let operator = CustodyKey::generate().public_key();
    let operator = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, operator.as_bytes());
    let body = json!({ "OperatorPublicKey": operator });
    for body in [body, json!({})] {
        let r = kw.custody_call("InitCustody", &body).await;
        r.assert_error("a key-service genesis of a Shamir enclave", 400, "ValidationException");
        let said = message(&r);
        assert!(said.contains("--custody shamir"), "{}", text(&r));
        assert!(said.contains("kmsctl init --custodian"), "{}", text(&r));
        assert!(
            said.contains("only for an enclave started with --custody kms"),
            "{}",
            text(&r)
        );
        assert!(!kw.enclave().is_ready());
    }
    assert_eq!(kw.store().raw("boot", "custody").1, None, "no boot record was written");
    let key = CustodyKey::generate().public_key();
    kw.init_custody(1, &[key], None).await;
    assert!(kw.enclave().is_ready());
}

#[tokio::test(flavor = "multi_thread")]
async fn while_sealed_an_in_memory_tls_identity_is_served_and_the_persistent_one_returns_once_ready() {
    let refuse = keyward_enclave::api::error::refusal;
    let kw = Service::start_uninitialised().await;
    assert!(kw.enclave().status().ca_certificate_pem.is_empty());
    kw.enclave().sealed_tls(refuse).await.expect("an in-memory identity");
    let sealed_ca = kw.enclave().status().ca_certificate_pem;
    assert!(sealed_ca.contains("BEGIN CERTIFICATE"), "{sealed_ca}");
    assert!(
        kw.enclave().tls_loaded().is_none(),
        "no persistent identity while sealed"
    );

    let (_, custodians) = two_of_three(&kw).await;
    let persistent_ca = kw.enclave().status().ca_certificate_pem;
    assert!(
        kw.enclave().tls_loaded().is_some(),
        "genesis loads the persistent identity"
    );
    assert_ne!(persistent_ca, sealed_ca);

    let kw = kw.restart_sealed().await;
    kw.enclave().sealed_tls(refuse).await.expect("an in-memory identity");
    let sealed_again = kw.enclave().status().ca_certificate_pem;
    assert_ne!(
        sealed_again, persistent_ca,
        "the persistent key is not readable while sealed"
    );
    assert_ne!(sealed_again, sealed_ca, "made afresh at every start");
    assert_eq!(kw.unseal_with(&custodians[0]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&custodians[1]).await.json()["State"], "Ready");
    assert_eq!(
        kw.enclave().status().ca_certificate_pem,
        persistent_ca,
        "the same persistent identity after the unseal"
    );
}
