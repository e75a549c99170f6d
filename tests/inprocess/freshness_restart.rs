//! Freshness across restarts (issue 19 item 3), in process: a custodian's
//! signed checkpoint (`Keyward.GetCheckpoint`) travels in its format-2
//! unseal message, and an enclave restarted on a store older than it — in
//! the global scope, in one tenant's scope, or with a tenant's index root
//! hidden — stays sealed (503, `/healthz` sealed, counted) instead of
//! serving the old state; only an explicit, audited override brings it up.

use std::sync::Arc;

use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};
use keyward_custody::unseal::{Freshness, UnsealMessage};
use keyward_test_support::b64::unb64;
use keyward_test_support::raw::RawResponse;
use serde_json::json;

use crate::support::{ACCOUNT, Service, create_key, must};

const SEALED: &str = "ServiceUnavailableException";
const STALE: &str = "the store is older than its custodian last saw";

fn message(response: &RawResponse) -> String {
    response.json()["message"].as_str().unwrap_or_default().to_owned()
}

/// The service's checkpoint now, verified as a custodian verifies it.
async fn checkpoint(kw: &Service) -> Checkpoint {
    let r = kw.custody_call("GetCheckpoint", &json!({})).await;
    assert_eq!(r.status, 200, "GetCheckpoint: {}", String::from_utf8_lossy(&r.body));
    let signed = SignedCheckpoint::from_bytes(&unb64(r.json()["Checkpoint"].as_str().expect("Checkpoint")))
        .expect("a signed checkpoint");
    let package = &kw.custodian().expect("a custodian").package;
    signed
        .verify(&package.root_commitment, &package.deployment_id)
        .expect("signed by the root commitment")
}

/// The custodian's unseal with `seen` (and the override when `accept`).
async fn unseal_stating(kw: &Service, seen: &Checkpoint, accept: bool) -> RawResponse {
    let freshness = Freshness {
        checkpoint: Some(seen.clone()),
        accept_store_rollback: accept,
    };
    let message = kw
        .unseal_message_fresh(kw.custodian().expect("a custodian"), &freshness)
        .await
        .expect("the custodian accepts the document");
    kw.send_unseal(&message).await
}

fn violations(kw: &Service) -> (u64, u64) {
    let v = kw.enclave().status().metrics.freshness_violations;
    (v.rollback, v.omission)
}

#[track_caller]
fn assert_stale(what: &str, response: &RawResponse, says: &str) {
    response.assert_error(what, 503, SEALED);
    let text = message(response);
    assert!(text.contains(STALE), "{what}: {text}");
    assert!(text.contains(says), "{what}: the message should say {says:?}: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_older_in_the_global_scope_stays_sealed_and_the_override_is_audited() {
    let kw = Service::start().await;
    let before = checkpoint(&kw).await;
    let copy = Arc::new(kw.store().snapshot());
    // A global-scope write: a new credential of the dev tenant.
    let created = kw
        .signed_call("Keyward.CreateAccessKey", br#"{"Role": "KeyUser"}"#)
        .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let seen = checkpoint(&kw).await;
    assert!(seen.global > before.global, "{seen:?} after {before:?}");
    assert!(seen.covers(&before));

    // The host puts the old copy back while the enclave is down.
    let kw = kw.restart_sealed_on(copy).await;
    let (rollbacks, _) = violations(&kw);
    let r = unseal_stating(&kw, &seen, false).await;
    let lag = format!(
        "global scope epoch served {}, custodian saw {}",
        before.global, seen.global
    );
    assert_stale("unseal over an older store", &r, &lag);
    assert!(!kw.enclave().is_ready());
    assert_eq!(kw.enclave().status().health, "sealed");
    let listed = kw.signed_call("ListKeys", b"{}").await;
    assert_stale("ListKeys after the refused unseal", &listed, &lag);
    assert!(violations(&kw).0 > rollbacks, "the refusal is counted");

    // The explicit override: Ready, and the operator's chain says so.
    let r = unseal_stating(&kw, &seen, true).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["State"], "Ready");
    assert!(kw.enclave().is_ready());
    let log = kw
        .signed_call_as(&kw.operator, "Keyward.GetAuditLog", br#"{"Limit": 1000}"#)
        .await;
    assert_eq!(log.status, 200, "{}", String::from_utf8_lossy(&log.body));
    let records = log.json()["Records"].as_array().cloned().unwrap_or_default();
    let audited = records.iter().any(|r| {
        let reason = r["Reason"].as_str().unwrap_or_default();
        r["Operation"] == "Keyward.Unseal"
            && reason.contains("accepted a store older than its checkpoint")
            && reason.contains(&lag)
    });
    assert!(audited, "no audit record of the accepted rollback: {records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_older_in_one_tenant_scope_only_stays_sealed() {
    let kw = Service::start().await;
    let key = create_key(&kw.client(), "disabled later").await;
    let before = checkpoint(&kw).await;
    let copy = Arc::new(kw.store().snapshot());
    must("DisableKey", kw.client().disable_key().key_id(&key).send().await);
    let seen = checkpoint(&kw).await;
    assert!(
        seen.epoch(ACCOUNT) > before.epoch(ACCOUNT),
        "DisableKey moves the tenant's root: {seen:?} after {before:?}"
    );

    let kw = kw.restart_sealed_on(copy).await;
    let r = unseal_stating(&kw, &seen, false).await;
    assert_stale(
        "unseal over a store older in the tenant's scope",
        &r,
        &format!(
            "tenant scope {ACCOUNT} epoch served {}, custodian saw {}",
            before.epoch(ACCOUNT),
            seen.epoch(ACCOUNT)
        ),
    );
    assert!(!kw.enclave().is_ready());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_tenant_root_is_an_omission_even_without_a_checkpoint() {
    let kw = Service::start().await;
    create_key(&kw.client(), "its tenant has a root").await;
    kw.host().hide("index", &format!("{ACCOUNT}/root"));
    let kw = kw.restart_sealed_behind_same_host().await;
    let (_, omissions) = violations(&kw);
    let r = kw.unseal_with(kw.custodian().expect("a custodian")).await;
    assert_stale(
        "unseal with a tenant's index root hidden",
        &r,
        &format!("index/{ACCOUNT}/root"),
    );
    assert!(!kw.enclave().is_ready());
    assert!(violations(&kw).1 > omissions, "the omission is counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_current_store_unseals_with_the_checkpoint_which_only_a_ready_enclave_states() {
    let kw = Service::start().await;
    create_key(&kw.client(), "before the restart").await;
    let seen = checkpoint(&kw).await;
    let kw = kw.restart_sealed().await;
    let r = kw.custody_call("GetCheckpoint", &json!({})).await;
    r.assert_error("GetCheckpoint while sealed", 400, "ValidationException");
    assert!(message(&r).contains("sealed"), "{}", message(&r));
    let r = unseal_stating(&kw, &seen, false).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(kw.enclave().is_ready());
    assert!(checkpoint(&kw).await.covers(&seen));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_format_1_unseal_message_still_unseals() {
    let kw = Service::start().await;
    let kw = kw.restart_sealed().await;
    let custodian = kw.custodian().expect("a custodian");
    let share = custodian.key.open_share(&custodian.package).expect("opens");
    let session = kw.unseal_session_key().await;
    let message = UnsealMessage::seal_format1(&share, &session).expect("seals");
    assert_eq!(message.format, 1);
    let r = kw.send_unseal(&message.to_bytes().expect("encodes")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(kw.enclave().is_ready());
}
