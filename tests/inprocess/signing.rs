//! The in-process service authenticates as the real one does: the SDK's
//! SigV4 signatures and raw signed calls are verified by the enclave, so a
//! test here cannot pass on a request the deployed service would refuse.

use keyward_test_support::Creds;

use crate::support::{Service, expect_error, must};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_verified_by_the_enclave() {
    let kw = Service::start().await;
    let other = Creds::random();

    let wrong_secret = kw.client_with(&kw.creds.access_key_id, &other.secret);
    expect_error(
        "ListKeys with the wrong secret",
        wrong_secret.list_keys().send().await,
        400,
        "InvalidSignatureException",
    );
    let unknown_key = kw.client_with(&other.access_key_id, &kw.creds.secret);
    expect_error(
        "ListKeys with an unknown access key",
        unknown_key.list_keys().send().await,
        400,
        "UnrecognizedClientException",
    );
    let resp = kw.signed_call_as(&other, "ListKeys", b"{}").await;
    resp.assert_error(
        "raw ListKeys as an unknown access key",
        400,
        "UnrecognizedClientException",
    );

    // The dev credentials work, through the SDK and raw; the operator's is
    // provisioned too.
    must("ListKeys", kw.client().list_keys().send().await);
    let resp = kw.signed_call("ListKeys", b"{}").await;
    assert_eq!(
        resp.status,
        200,
        "raw ListKeys: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let resp = kw.signed_call_as(&kw.operator, "Keyward.ListTenants", b"{}").await;
    assert_eq!(
        resp.status,
        200,
        "raw Keyward.ListTenants as the operator: {}",
        String::from_utf8_lossy(&resp.body)
    );
}
