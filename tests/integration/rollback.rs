//! Freshness across restarts with real processes (issue 19 item 3): a
//! whole-store rollback of a `keyward dev` data dir while it is stopped
//! leaves the service Sealed — `/healthz` says so, the AWS client gets 503
//! saying the store is older than its custodian last saw — instead of
//! reviving a deleted credential and a disabled key; only
//! `keyward dev --accept-store-rollback` (audited) brings it up.

use std::path::Path;

use aws_sdk_kms::error::ProvideErrorMetadata as _;
use aws_sdk_kms::primitives::Blob;
use serde_json::json;

use crate::harness::{
    Creds, Keyward, RawResponse, Sandbox, api_headers, create_key, error_parts, must, sdk_client, sign_headers,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
        let dest = to.join(entry.file_name());
        if meta.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if meta.is_file() {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

/// A `Keyward.*` call signed by `creds`.
async fn keyward_call(kw: &Keyward, creds: &Creds, op: &str, body: &serde_json::Value) -> RawResponse {
    let body = body.to_string();
    let mut headers = api_headers(&kw.addr, &format!("Keyward.{op}"));
    sign_headers(&mut headers, &kw.addr, body.as_bytes(), creds, kw.now());
    kw.request("POST", "/", &headers, body.as_bytes()).await
}

const STALE: &str = "older than its custodian last saw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_dev_data_dir_stays_sealed_until_an_audited_override() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    // A second credential of the dev tenant, and a key.
    let created = keyward_call(&kw, &kw.creds, "CreateAccessKey", &json!({ "Role": "KeyUser" })).await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let user = Creds {
        access_key_id: created.json()["AccessKeyId"].as_str().expect("AccessKeyId").to_owned(),
        secret: created.json()["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey")
            .to_owned(),
    };
    let key = create_key(&kw.client(), "disabled, then rolled back").await;
    drop(kw);

    // The copy the host keeps.
    let copy = sb.data_dir().with_file_name("store-copy");
    copy_dir(&sb.store_dir(), &copy);

    let kw = sb.start().await;
    let deleted = keyward_call(
        &kw,
        &kw.creds,
        "DeleteAccessKey",
        &json!({ "AccessKeyId": user.access_key_id }),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", String::from_utf8_lossy(&deleted.body));
    must("DisableKey", kw.client().disable_key().key_id(&key).send().await);
    drop(kw);

    // The host puts the old store back.
    std::fs::remove_dir_all(sb.store_dir()).expect("remove the store");
    copy_dir(&copy, &sb.store_dir());

    let kw = sb.start_maybe_sealed().await;
    assert!(kw.sealed, "keyward dev came up on a rolled-back store");
    let health = kw.admin_get("/healthz").await;
    assert_eq!(health.status, 503);
    assert!(
        String::from_utf8_lossy(&health.body).contains("sealed"),
        "{}",
        String::from_utf8_lossy(&health.body)
    );
    // Through the AWS client: the deleted credential and the disabled key
    // are not revived; the service is unavailable and says why.
    let revived = sdk_client(&kw.url, &kw.ca_pem, &user.access_key_id, &user.secret, None);
    let err = revived
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"revived?".to_vec()))
        .send()
        .await
        .expect_err("the rolled-back store serves nothing");
    assert_eq!(
        error_parts(&err),
        (Some(503), Some("ServiceUnavailableException".into())),
        "{err:?}"
    );
    let text = err.message().unwrap_or_default().to_owned();
    assert!(text.contains(STALE), "{text}");
    assert!(text.contains("custodian saw"), "{text}");
    let metrics = String::from_utf8_lossy(&kw.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keyward_freshness_violations_total{kind=\"rollback\"}") && !l.ends_with(" 0")),
        "the refusal is not counted: {metrics}"
    );
    drop(kw);

    // The explicit override: Ready on the old state, and audited.
    sb.extra_args.push("--accept-store-rollback".into());
    let kw = sb.start().await;
    let log = keyward_call(&kw, &kw.operator, "GetAuditLog", &json!({ "Limit": 1000 })).await;
    assert_eq!(log.status, 200, "{}", String::from_utf8_lossy(&log.body));
    let records = log.json()["Records"].as_array().cloned().unwrap_or_default();
    assert!(
        records.iter().any(|r| {
            let reason = r["Reason"].as_str().unwrap_or_default();
            r["Operation"] == "Keyward.Unseal"
                && reason.contains("accept-store-rollback")
                && reason.contains("custodian saw")
        }),
        "no audit record of the accepted rollback: {records:?}"
    );
    drop(kw);

    // The dev custodian now remembers the accepted state: a plain restart
    // comes up.
    sb.extra_args.clear();
    let kw = sb.start().await;
    assert_eq!(kw.healthz().await, 200);
}
