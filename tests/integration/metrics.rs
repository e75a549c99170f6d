//! `GET /metrics` on the proxy's admin listener: Prometheus text whose
//! counters (counted in the enclave, exported aggregated over the link) move
//! with the traffic, with the enclave's own timings, and without any key id,
//! ARN, credential, secret or plaintext in it.

use aws_sdk_kms::primitives::Blob;

use crate::harness::{Sandbox, create_key, must, random_bytes};

async fn scrape(kw: &crate::harness::Keyward) -> String {
    let response = kw.admin_get("/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics");
    String::from_utf8(response.body).expect("metrics are text")
}

/// The value of the sample line starting with `series` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_leak_nothing() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let before = scrape(&kw).await;
    let ok_decrypts = r#"keyward_requests_total{operation="TrentService.Decrypt",outcome="ok"}"#;
    let ok_encrypts = r#"keyward_requests_total{operation="TrentService.Encrypt",outcome="ok"}"#;
    let not_found = r#"keyward_requests_total{operation="TrentService.Encrypt",outcome="NotFoundException"}"#;

    let key_id = create_key(&kms, "metrics").await;
    let plaintext = random_bytes(32);
    let mut blobs = Vec::new();
    for _ in 0..3 {
        let out = must(
            "Encrypt",
            kms.encrypt()
                .key_id(&key_id)
                .plaintext(Blob::new(plaintext.clone()))
                .send()
                .await,
        );
        blobs.push(out.ciphertext_blob().expect("blob").as_ref().to_vec());
    }
    for blob in &blobs {
        must(
            "Decrypt",
            kms.decrypt().ciphertext_blob(Blob::new(blob.clone())).send().await,
        );
    }
    let missing = uuid::Uuid::new_v4().to_string();
    let refused = kms
        .encrypt()
        .key_id(&missing)
        .plaintext(Blob::new(plaintext.clone()))
        .send()
        .await;
    assert!(refused.is_err(), "Encrypt under a key that does not exist");
    // A target nobody serves is counted, under "other", not under its name.
    let unknown = kw.signed_call_target("TrentService.NoSuchOperationXyz", b"{}").await;
    assert_ne!(unknown.status, 200);

    let after = scrape(&kw).await;
    assert_eq!(
        sample(&after, ok_encrypts) - sample(&before, ok_encrypts),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, ok_decrypts) - sample(&before, ok_decrypts),
        3.0,
        "{after}"
    );
    assert_eq!(sample(&after, not_found) - sample(&before, not_found), 1.0, "{after}");
    assert!(
        sample(
            &after,
            r#"keyward_request_duration_seconds_count{operation="TrentService.Decrypt"}"#
        ) >= 3.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"keyward_enclave_duration_seconds_count{operation="TrentService.Decrypt"}"#
        ) >= 3.0,
        "the enclave reports its own time: {after}"
    );
    assert_eq!(sample(&after, "keyward_enclave_link_connections"), 4.0, "{after}");
    assert!(after.contains(r#"operation="other""#), "{after}");
    assert!(
        !after.contains("NoSuchOperationXyz"),
        "a client-chosen target became a label: {after}"
    );

    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    for (what, needle) in [
        ("key id", key_id.clone()),
        ("missing key id", missing.clone()),
        ("tenant", crate::harness::ACCOUNT.to_string()),
        ("access key id", kw.creds.access_key_id.clone()),
        ("secret", kw.creds.secret.clone()),
        ("plaintext", b64(&plaintext)),
        ("plaintext (hex)", hex_lower(&plaintext)),
        ("ciphertext", b64(&blobs[0])),
    ] {
        assert!(!after.contains(&needle), "the {what} is in /metrics:\n{after}");
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
