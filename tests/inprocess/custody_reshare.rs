//! Replacing custodians by re-sharing (`Keyward.ReshareCustody`, operator;
//! docs/custody.md "Replacing a custodian by re-sharing"): a Ready Shamir
//! deployment splits its root anew for a new custodian set; the boot record
//! keeps its deployment id and root commitment and gets new share digests,
//! so after a restart the old shares are refused by digest and the new ones
//! unseal. Only the operator may re-share; bad parameters change nothing.

use base64::Engine as _;
use keyward_custody::share::SharePackage;
use keyward_enclave::store::StoreTransport as _;
use keyward_sdk::custody::CustodyKey;
use keyward_test_support::custody::Custodian;
use keyward_test_support::raw::RawResponse;
use keyward_wire::{StoreOp, StoreResult};
use serde_json::{Value, json};

use crate::support::{Service, create_key, decrypt, encrypt};

fn text(response: &RawResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}

/// A 2-of-3 genesis on a fresh enclave; the custodians, in order.
async fn two_of_three(kw: &Service) -> (keyward_test_support::custody::Genesis, Vec<Custodian>) {
    let keys: Vec<CustodyKey> = (0..3).map(|_| CustodyKey::generate()).collect();
    let public: Vec<_> = keys.iter().map(CustodyKey::public_key).collect();
    let genesis = kw.init_custody(2, &public, None).await;
    let custodians = keys
        .into_iter()
        .zip(genesis.packages.iter().cloned())
        .map(|(key, package)| Custodian { key, package })
        .collect();
    (genesis, custodians)
}

fn reshare_body(threshold: i64, keys: &[&CustodyKey]) -> Value {
    json!({
        "Threshold": threshold,
        "CustodianPublicKeys": keys.iter().map(|k| b64(k.public_key().as_bytes())).collect::<Vec<_>>(),
    })
}

async fn reshare(kw: &Service, creds: &keyward_test_support::Creds, body: &Value) -> RawResponse {
    kw.signed_call_as(creds, "Keyward.ReshareCustody", body.to_string().as_bytes())
        .await
}

/// The stored boot record: its version and bytes.
async fn boot_record(kw: &Service) -> (u64, Vec<u8>) {
    let op = StoreOp::GetVersioned {
        namespace: "boot".into(),
        key: "custody".into(),
    };
    match kw.store().call(op).await {
        Ok(StoreResult::Versioned {
            version,
            value: Some(value),
        }) => (version, value.into_vec()),
        other => panic!("reading the boot record: {other:?}"),
    }
}

/// Alice stays, Bob and Carol leave, Dave joins: 2-of-2. After a restart
/// every old share (Alice's old one included) is refused by digest, and the
/// new shares unseal the same deployment: the old ciphertext decrypts.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_reshare_old_shares_are_refused_and_the_new_ones_unseal_the_same_root() {
    let kw = Service::start_uninitialised().await;
    let (genesis, old) = two_of_three(&kw).await;
    let key = create_key(&kw.client(), "outlives its custodians").await;
    let ciphertext = encrypt(&kw.client(), &key, b"same root after re-sharing", None).await;
    let (version_before, _) = boot_record(&kw).await;

    let dave = CustodyKey::generate();
    let mut body = reshare_body(2, &[&old[0].key, &dave]);
    body["ExpectedRootCommitment"] = b64(&genesis.root_commitment).into();
    let r = reshare(&kw, &kw.operator, &body).await;
    assert_eq!(r.status, 200, "ReshareCustody: {}", text(&r));
    let answer = r.json();
    assert_eq!(answer["DeploymentId"], genesis.deployment_id.as_str());
    assert_eq!(
        unb64(answer["RootCommitment"].as_str().expect("commitment")),
        genesis.root_commitment
    );
    assert_eq!(answer["Threshold"], 2);
    assert_eq!(answer["Custodians"], 2);
    let packages: Vec<SharePackage> = answer["SharePackages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| SharePackage::from_bytes(&unb64(p.as_str().expect("base64"))).expect("a package"))
        .collect();
    assert_eq!(packages.len(), 2);
    assert_eq!(packages[0].custodian_key, old[0].key.public_key());
    assert_eq!(packages[1].custodian_key, dave.public_key());
    assert!(dave.open_share(&packages[1]).is_ok(), "Dave opens his package");
    assert!(old[1].key.open_share(&packages[1]).is_err(), "Bob opens Dave's package");
    let (version_after, _) = boot_record(&kw).await;
    assert_eq!(version_after, version_before + 1, "the boot record is replaced once");
    // Still Ready, and audited in the operator's chain.
    assert!(kw.enclave().is_ready());
    let log = kw
        .signed_call_as(&kw.operator, "Keyward.GetAuditLog", br#"{"Limit": 1000}"#)
        .await;
    assert_eq!(log.status, 200, "{}", text(&log));
    assert!(
        text(&log).contains("Keyward.ReshareCustody"),
        "not audited: {}",
        text(&log)
    );

    let kw = kw.restart_sealed().await;
    // Indexes 1 and 2 exist with new digests; index 3 no longer exists.
    for (who, custodian, error, says) in [
        (
            "Alice's old",
            &old[0],
            "InvalidCiphertextException",
            "does not match the boot record",
        ),
        (
            "Bob's",
            &old[1],
            "InvalidCiphertextException",
            "does not match the boot record",
        ),
        ("Carol's", &old[2], "ValidationException", "custodian 3 does not exist"),
    ] {
        let r = kw.unseal_with(custodian).await;
        r.assert_error(&format!("{who} share after the re-share"), 400, error);
        assert!(text(&r).contains(says), "{who}: {}", text(&r));
    }
    assert!(!kw.enclave().is_ready());
    let alice = Custodian {
        key: old.into_iter().next().expect("alice").key,
        package: packages[0].clone(),
    };
    let dave = Custodian {
        key: dave,
        package: packages[1].clone(),
    };
    assert_eq!(kw.unseal_with(&alice).await.json()["State"], "Sealed");
    let r = kw.unseal_with(&dave).await;
    assert_eq!(r.json()["State"], "Ready", "{}", text(&r));
    assert_eq!(
        decrypt(&kw.client(), None, &ciphertext, None).await,
        b"same root after re-sharing"
    );
}

/// A tenant's credential (even its KeyAdmin) may not re-share; the boot
/// record is untouched and the old shares still unseal.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_may_reshare() {
    let kw = Service::start_uninitialised().await;
    let (_, old) = two_of_three(&kw).await;
    let before = boot_record(&kw).await;
    let r = reshare(&kw, &kw.creds, &reshare_body(1, &[&CustodyKey::generate()])).await;
    r.assert_error("ReshareCustody by a tenant", 400, "AccessDeniedException");
    assert_eq!(
        boot_record(&kw).await,
        before,
        "a refused re-share changed the boot record"
    );
    let kw = kw.restart_sealed().await;
    assert_eq!(kw.unseal_with(&old[0]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&old[2]).await.json()["State"], "Ready");
}

/// Threshold 0, above the custodians, a repeated key, no custodians, too
/// many, another deployment's commitment: `ValidationException`, and
/// nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_threshold_or_custodian_set_is_refused_and_changes_nothing() {
    let kw = Service::start_uninitialised().await;
    let (_, old) = two_of_three(&kw).await;
    let before = boot_record(&kw).await;
    let a = CustodyKey::generate();
    let b = CustodyKey::generate();
    let many: Vec<CustodyKey> = (0..17).map(|_| CustodyKey::generate()).collect();
    let many: Vec<&CustodyKey> = many.iter().collect();
    for (what, body, says) in [
        ("threshold 0", reshare_body(0, &[&a, &b]), "threshold 0 of 2"),
        ("threshold above N", reshare_body(3, &[&a, &b]), "threshold 3 of 2"),
        ("a negative threshold", reshare_body(-1, &[&a]), "threshold"),
        ("a repeated key", reshare_body(1, &[&a, &a]), "same public key"),
        ("no custodians", reshare_body(1, &[]), "custodianPublicKeys"),
        ("17 custodians", reshare_body(2, &many), "custodianPublicKeys"),
        (
            "no threshold",
            json!({ "CustodianPublicKeys": [b64(a.public_key().as_bytes())] }),
            "threshold",
        ),
        (
            "another deployment's root commitment",
            json!({
                "Threshold": 1,
                "CustodianPublicKeys": [b64(a.public_key().as_bytes())],
                "ExpectedRootCommitment": b64(&[4u8; 91]),
            }),
            "ExpectedRootCommitment is not this deployment's",
        ),
        (
            "a key of 31 bytes",
            json!({ "Threshold": 1, "CustodianPublicKeys": [b64(&[7u8; 31])] }),
            "32-byte",
        ),
    ] {
        let r = reshare(&kw, &kw.operator, &body).await;
        r.assert_error(what, 400, "ValidationException");
        assert!(text(&r).contains(says), "{what}: {}", text(&r));
    }
    assert_eq!(
        boot_record(&kw).await,
        before,
        "a refused re-share changed the boot record"
    );
    let kw = kw.restart_sealed().await;
    assert_eq!(kw.unseal_with(&old[1]).await.json()["State"], "Sealed");
    assert_eq!(kw.unseal_with(&old[0]).await.json()["State"], "Ready");
}
