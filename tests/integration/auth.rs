//! SigV4 authentication, verified inside the enclave.

use std::time::{Duration, SystemTime};

use aws_sdk_kms::primitives::Blob;

use crate::harness::{Creds, Sandbox, api_headers, create_key, expect_error, random_bytes, sign_headers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_wrong_secret_and_unknown_access_key() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let key_id = create_key(&kw.client(), "auth").await;

    let other = Creds::random();
    assert_ne!(other.secret, kw.creds.secret);
    let wrong_secret = kw.client_with(&kw.creds.access_key_id, &other.secret);
    expect_error(
        "GenerateRandom with the wrong secret",
        wrong_secret.generate_random().number_of_bytes(8).send().await,
        400,
        "InvalidSignatureException",
    );
    expect_error(
        "Encrypt with the wrong secret",
        wrong_secret
            .encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(random_bytes(8)))
            .send()
            .await,
        400,
        "InvalidSignatureException",
    );
    expect_error(
        "ListKeys with the wrong secret",
        wrong_secret.list_keys().send().await,
        400,
        "InvalidSignatureException",
    );

    assert_ne!(other.access_key_id, kw.creds.access_key_id);
    let unknown_key = kw.client_with(&other.access_key_id, &kw.creds.secret);
    expect_error(
        "GenerateRandom with an unknown access key",
        unknown_key.generate_random().number_of_bytes(8).send().await,
        400,
        "UnrecognizedClientException",
    );
    expect_error(
        "DescribeKey with an unknown access key",
        unknown_key.describe_key().key_id(&key_id).send().await,
        400,
        "UnrecognizedClientException",
    );

    // The right credentials still work.
    kw.client()
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DescribeKey with the right credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_signature_errors() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let target = "TrentService.GenerateRandom";
    let body = br#"{"NumberOfBytes":32}"#.to_vec();

    let signed_at = |time: SystemTime, body: &[u8]| {
        let mut headers = api_headers(&kw.addr, target);
        sign_headers(&mut headers, &kw.addr, body, &kw.creds, time);
        headers
    };

    // Controls: signed now, and signed 2 minutes ago (inside the 5-minute window).
    for (what, time) in [
        ("now", SystemTime::now()),
        ("2 minutes ago", SystemTime::now() - Duration::from_secs(120)),
    ] {
        let resp = kw.request("POST", "/", &signed_at(time, &body), &body).await;
        assert_eq!(
            resp.status,
            200,
            "request signed {what}: {}",
            String::from_utf8_lossy(&resp.body)
        );
    }

    // X-Amz-Date more than 5 minutes off, either way (correctly signed for that date).
    for (what, time) in [
        ("10 minutes ago", SystemTime::now() - Duration::from_secs(600)),
        ("10 minutes ahead", SystemTime::now() + Duration::from_secs(600)),
        ("a day ago", SystemTime::now() - Duration::from_secs(86_400)),
    ] {
        let resp = kw.request("POST", "/", &signed_at(time, &body), &body).await;
        resp.assert_error(&format!("X-Amz-Date {what}"), 400, "InvalidSignatureException");
    }

    // Body changed after signing (same length, so only the signature can tell).
    let headers = signed_at(SystemTime::now(), &body);
    let tampered = br#"{"NumberOfBytes":31}"#.to_vec();
    assert_eq!(tampered.len(), body.len());
    let resp = kw.request("POST", "/", &headers, &tampered).await;
    resp.assert_error("body tampered after signing", 400, "InvalidSignatureException");

    // A signed header changed after signing.
    let mut headers = signed_at(SystemTime::now(), &body);
    for (k, v) in headers.iter_mut() {
        if k == "x-amz-target" {
            *v = "TrentService.ListKeys".to_string();
        }
    }
    let resp = kw.request("POST", "/", &headers, &body).await;
    resp.assert_error("X-Amz-Target changed after signing", 400, "InvalidSignatureException");

    // Wrong secret, signed by hand.
    let mut headers = api_headers(&kw.addr, target);
    let wrong = Creds {
        access_key_id: kw.creds.access_key_id.clone(),
        secret: Creds::random().secret,
    };
    sign_headers(&mut headers, &kw.addr, &body, &wrong, SystemTime::now());
    let resp = kw.request("POST", "/", &headers, &body).await;
    resp.assert_error("wrong secret", 400, "InvalidSignatureException");

    // No Authorization header at all: unsigned, and signed with it stripped.
    let headers = api_headers(&kw.addr, target);
    let resp = kw.request("POST", "/", &headers, &body).await;
    resp.assert_error("unsigned request", 400, "UnrecognizedClientException");
    let mut headers = signed_at(SystemTime::now(), &body);
    headers.retain(|(k, _)| k != "authorization");
    let resp = kw.request("POST", "/", &headers, &body).await;
    resp.assert_error(
        "signed request without its Authorization header",
        400,
        "UnrecognizedClientException",
    );
}
