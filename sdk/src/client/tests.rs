//! Request framing and signing (checked against an independent SigV4
//! computation), endpoint handling, error decoding, and the typed calls
//! against a scripted loopback HTTP server.

use std::time::{Duration, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4 (AWS4-HMAC-SHA256) written out from the specification, for the
/// exact request the client builds.
fn expected_authorization(akid: &str, secret: &str, region: &str, host: &str, target: &str, body: &[u8]) -> String {
    let amz_date = "20240102T030405Z";
    let date = "20240102";
    let signed_headers = "content-type;host;x-amz-date;x-amz-target";
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{region}/kms/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"kms");
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    format!("AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed_headers}, Signature={signature}")
}

#[test]
fn signs_like_the_sigv4_specification() -> TestResult {
    let client = Client::new(
        "https://127.0.0.1:7800",
        "eu-west-1",
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    )?;
    let body = br#"{"TenantId":"111122223333"}"#.to_vec();
    // 2024-01-02T03:04:05Z
    let time = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
    let request = client.signed_request("Keyward.CreateTenant", body.clone(), time)?;

    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri().to_string(), "https://127.0.0.1:7800/");
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(header("host"), "127.0.0.1:7800");
    assert_eq!(header("content-type"), "application/x-amz-json-1.1");
    assert_eq!(header("x-amz-target"), "Keyward.CreateTenant");
    assert_eq!(header("x-amz-date"), "20240102T030405Z");
    assert_eq!(
        header("authorization"),
        expected_authorization(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "eu-west-1",
            "127.0.0.1:7800",
            "Keyward.CreateTenant",
            &body
        )
    );
    assert!(request.headers().get("x-amz-security-token").is_none());
    Ok(())
}

#[test]
fn endpoints() -> TestResult {
    assert_eq!(
        Client::new("https://localhost:7800", "us-east-1", "a", "s")?.endpoint(),
        "https://localhost:7800/"
    );
    assert_eq!(
        Client::new("https://kms.internal/kms", "us-east-1", "a", "s")?.endpoint(),
        "https://kms.internal/kms"
    );
    // Plain HTTP is refused: TLS ends in the enclave, nothing goes in clear.
    for bad in [
        "http://kms.example.com",
        "127.0.0.1:7800",
        "ftp://x",
        "https://u:p@host/",
        "https://h/?q=1",
        "not a url",
    ] {
        match Client::new(bad, "us-east-1", "a", "s") {
            Err(Error::InvalidEndpoint { .. }) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        Client::new("https://h", "us east", "a", "s"),
        Err(Error::Request(_))
    ));
    Ok(())
}

#[test]
fn client_debug_hides_the_secret() -> TestResult {
    let client = Client::new("https://h:1", "us-east-1", "AKID", "very-secret-key")?;
    let shown = format!("{client:?}");
    assert!(shown.contains("AKID") && !shown.contains("very-secret"), "{shown}");
    Ok(())
}

#[test]
fn error_types_lose_their_namespace() {
    assert_eq!(
        clean_error_type("com.amazonaws.kms#NotFoundException"),
        "NotFoundException"
    );
    assert_eq!(
        clean_error_type("AccessDeniedException:http://internal.amazon.com/"),
        "AccessDeniedException"
    );
    assert_eq!(clean_error_type("ThrottlingException"), "ThrottlingException");
}

// --- a scripted loopback server ---

/// One request as the server saw it.
#[derive(Debug)]
struct Seen {
    target: String,
    authorization: String,
    content_type: String,
    body: serde_json::Value,
}

/// Serves one canned `(status, body)` per connection, in order, then stops;
/// returns the endpoint and a handle yielding the requests seen.
async fn serve(responses: Vec<(u16, &'static str)>) -> std::io::Result<(String, tokio::task::JoinHandle<Vec<Seen>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", listener.local_addr()?);
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in responses {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = crate::tls::test_identity::loopback()
                .acceptor
                .accept(stream)
                .await
                .expect("TLS handshake");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let header_end = loop {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().expect("content-length");
            while buf.len() < header_end + length {
                let n = stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
            seen.push(Seen {
                target: header("x-amz-target"),
                authorization: header("authorization"),
                content_type: header("content-type"),
                body: serde_json::from_slice(&buf[header_end..header_end + length]).expect("JSON body"),
            });
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-RequestId: req-{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                seen.len(),
                body.len()
            );
            stream.write_all(response.as_bytes()).await.expect("write");
            stream.shutdown().await.expect("shutdown");
        }
        seen
    });
    Ok((endpoint, handle))
}

#[tokio::test]
async fn list_tenants_follows_markers() -> TestResult {
    let (endpoint, server) = serve(vec![
        (
            200,
            r#"{"Tenants":[{"TenantId":"a","Enabled":true,"CreationDate":1700000000}],"Truncated":true,"NextMarker":"m1"}"#,
        ),
        (
            200,
            r#"{"Tenants":[{"TenantId":"b","Enabled":false,"CreationDate":1700000001.5}],"Truncated":false}"#,
        ),
    ])
    .await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDOP", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let tenants = client.list_tenants().await?;
    assert_eq!(
        tenants
            .iter()
            .map(|t| (t.tenant_id.as_str(), t.enabled))
            .collect::<Vec<_>>(),
        [("a", true), ("b", false)]
    );
    let seen = server.await?;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.target == "Keyward.ListTenants"));
    assert!(seen.iter().all(|s| s.content_type == "application/x-amz-json-1.1"));
    assert!(seen[0].authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDOP/"));
    assert!(seen[0].authorization.contains("/us-east-1/kms/aws4_request"));
    assert_eq!(seen[0].body, serde_json::json!({}));
    assert_eq!(seen[1].body, serde_json::json!({"Marker": "m1"}));
    Ok(())
}

#[tokio::test]
async fn a_marker_loop_is_refused() -> TestResult {
    let page = r#"{"Tenants":[],"Truncated":true,"NextMarker":"same"}"#;
    let (endpoint, _server) = serve(vec![(200, page), (200, page)]).await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDOP", "secret")?.with_tls(crate::tls::test_identity::options())?;
    match client.list_tenants().await {
        Err(Error::Decode { reason, .. }) => assert!(reason.contains("repeats"), "{reason}"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn service_errors_are_typed() -> TestResult {
    let (endpoint, _server) = serve(vec![
        (
            400,
            r#"{"__type":"AccessDeniedException","message":"the operator cannot use keys"}"#,
        ),
        (502, "Bad Gateway"),
    ])
    .await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDOP", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let err = client
        .create_access_key(Role::KeyUser)
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(err.error_type(), Some("AccessDeniedException"));
    assert_eq!(err.status(), Some(400));
    match &err {
        Error::Service {
            message, request_id, ..
        } => {
            assert_eq!(message, "the operator cannot use keys");
            assert_eq!(request_id.as_deref(), Some("req-1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "AccessDeniedException: the operator cannot use keys (HTTP 400)"
    );
    match client.delete_access_key("AKIAX").await {
        Err(Error::Http { status: 502, body }) => assert_eq!(body, "Bad Gateway"),
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn typed_calls_send_and_decode() -> TestResult {
    let (endpoint, server) = serve(vec![
        (200, r#"{"TenantId":"t1","AccessKeyId":"AKIA1","SecretAccessKey":"sek-1"}"#),
        (200, r#"{"AccessKeyId":"AKIA2","SecretAccessKey":"sek-2","Role":"KeyUser"}"#),
        (
            200,
            r#"{"AccessKeys":[{"AccessKeyId":"AKIA1","Roles":["KeyAdmin"],"CreationDate":1.0},{"AccessKeyId":"AKIA2","Roles":["KeyUser"],"CreationDate":2}]}"#,
        ),
        (200, "{}"),
        (200, ""),
        (200, "{}"),
    ])
    .await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDOP", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let tenant = client.create_tenant("t1").await?;
    assert_eq!(
        (tenant.tenant_id.as_str(), tenant.access_key_id.as_str()),
        ("t1", "AKIA1")
    );
    assert_eq!(tenant.secret_access_key.expose(), "sek-1");
    let key = client.create_access_key(Role::KeyUser).await?;
    assert_eq!((key.access_key_id.as_str(), key.role.as_str()), ("AKIA2", "KeyUser"));
    assert_eq!(key.secret_access_key.expose(), "sek-2");
    let keys = client.list_access_keys().await?;
    assert!(keys[0].has_role(Role::KeyAdmin) && keys[1].has_role(Role::KeyUser) && !keys[1].has_role(Role::KeyAdmin));
    client.delete_access_key("AKIA2").await?;
    client.disable_tenant("t1").await?;
    client.enable_tenant("t1").await?;

    let seen = server.await?;
    let calls: Vec<(&str, &serde_json::Value)> = seen.iter().map(|s| (s.target.as_str(), &s.body)).collect();
    assert_eq!(
        calls,
        [
            ("Keyward.CreateTenant", &serde_json::json!({"TenantId": "t1"})),
            ("Keyward.CreateAccessKey", &serde_json::json!({"Role": "KeyUser"})),
            ("Keyward.ListAccessKeys", &serde_json::json!({})),
            ("Keyward.DeleteAccessKey", &serde_json::json!({"AccessKeyId": "AKIA2"})),
            ("Keyward.DisableTenant", &serde_json::json!({"TenantId": "t1"})),
            ("Keyward.EnableTenant", &serde_json::json!({"TenantId": "t1"})),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn fetch_audit_chain_follows_markers_and_keeps_the_last_head() -> TestResult {
    let (endpoint, server) = serve(vec![
        (
            200,
            r#"{"Records":[{"Sequence":1,"Chain":"t","Hash":"aa"}],"Truncated":true,"NextMarker":"2",
                "Head":{"Chain":"t","Sequence":1,"Hash":"aa","Signature":"c2ln"},"AuditPublicKey":"AQID"}"#,
        ),
        (
            200,
            r#"{"Records":[{"Sequence":2,"Corrupt":true}],"Truncated":false,
                "Head":{"Chain":"t","Sequence":2,"Hash":"bb","Signature":"c2ln"},"AuditPublicKey":"AQID"}"#,
        ),
    ])
    .await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKID", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let chain = client.fetch_audit_chain().await?;
    assert_eq!(chain.records.len(), 2);
    assert!(chain.records[1].corrupt);
    assert_eq!((chain.head.sequence, chain.head.hash.as_str()), (2, "bb"));
    assert_eq!(chain.audit_public_key, [1, 2, 3]);
    let seen = server.await?;
    assert_eq!(seen[0].body, serde_json::json!({"Limit": 1000}));
    assert_eq!(seen[1].body, serde_json::json!({"Limit": 1000, "Marker": "2"}));
    Ok(())
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_errors() -> TestResult {
    // A listener that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", listener.local_addr()?);
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let client = Client::new(&endpoint, "us-east-1", "AKID", "secret")?
        .with_tls(crate::tls::test_identity::options())?
        .with_timeout(Duration::from_millis(200));
    assert!(matches!(client.list_access_keys().await, Err(Error::Timeout(_))));

    let closed = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", closed.local_addr()?);
    drop(closed);
    let client =
        Client::new(&endpoint, "us-east-1", "AKID", "secret")?.with_tls(crate::tls::test_identity::options())?;
    assert!(matches!(client.list_access_keys().await, Err(Error::Transport(_))));
    Ok(())
}

#[tokio::test]
async fn a_pinned_key_is_required_and_the_connection_reports_its_key() -> TestResult {
    let identity = crate::tls::test_identity::loopback();
    // The right pin: accepted, and the response names the connection's key.
    let (endpoint, _server) = serve(vec![(200, r#"{"AccessKeys":[]}"#)]).await?;
    let client = Client::new(&endpoint, "us-east-1", "AKID", "secret")?
        .with_tls(crate::tls::test_identity::options().with_pinned_spki(identity.leaf_spki_sha256))?;
    let (_, spki): (serde_json::Value, [u8; 32]) =
        client.call_with_tls_spki("Keyward.ListAccessKeys", &Empty {}).await?;
    assert_eq!(spki, identity.leaf_spki_sha256);
    // Another key, though from the same CA and valid for the name: refused
    // before any request is sent.
    let (endpoint, _server) = serve(vec![(200, r#"{"AccessKeys":[]}"#)]).await?;
    let client = Client::new(&endpoint, "us-east-1", "AKID", "secret")?
        .with_tls(crate::tls::test_identity::options().with_pinned_spki([7u8; 32]))?;
    match client.list_access_keys().await {
        Err(Error::Transport(reason)) => assert!(reason.contains("pinned"), "{reason}"),
        other => panic!("a pin mismatch must fail the connection: {other:?}"),
    }
    // An untrusted CA fails as well, pin or not.
    let (endpoint, _server) = serve(vec![(200, r#"{"AccessKeys":[]}"#)]).await?;
    let stranger = crate::tls::test_identity::make(&["127.0.0.1"]);
    let client = Client::new(&endpoint, "us-east-1", "AKID", "secret")?
        .with_tls(TlsOptions::default().with_ca_bundle(stranger.ca_pem.clone()))?;
    assert!(matches!(client.list_access_keys().await, Err(Error::Transport(_))));
    Ok(())
}

// --- custody calls ---

/// A genesis answer (`Keyward.InitCustody` JSON) for `packages`, as the
/// enclave would give it.
fn init_custody_answer(
    deployment: &str,
    packages: &[crate::custody::SharePackage],
    operator: Option<&crate::custody::OperatorCredentialPackage>,
) -> &'static str {
    use base64::Engine as _;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut answer = serde_json::json!({
        "DeploymentId": deployment,
        "SharePackages": packages.iter().map(|p| b64(p.to_bytes().expect("CBOR"))).collect::<Vec<_>>(),
        "RootCommitment": b64(packages[0].root_commitment.clone()),
        "State": "Ready",
    });
    if let Some(operator) = operator {
        answer["OperatorCredential"] = b64(operator.to_bytes().expect("CBOR")).into();
    }
    Box::leak(answer.to_string().into_boxed_str())
}

/// `init_custody` sends unsigned, and accepts an answer only if every
/// package is the one asked for: swapped packages, a missing operator
/// credential or one sealed to another key are refused.
#[tokio::test]
async fn init_custody_is_unsigned_and_checks_every_package() -> TestResult {
    use crate::custody::{CustodyKey, InitCustodyRequest, deployment_hex};
    use keyward_enclave::custody::genesis::{ShamirGenesis, genesis};
    let custodians: Vec<CustodyKey> = (0..2).map(|_| CustodyKey::generate()).collect();
    let operator = CustodyKey::generate();
    let request = InitCustodyRequest {
        threshold: 2,
        custodians: custodians.iter().map(CustodyKey::public_key).collect(),
        operator_key: Some(operator.public_key()),
    };
    let outcome = genesis(
        &ShamirGenesis {
            threshold: 2,
            custodians: request.custodians.clone(),
            operator_key: request.operator_key,
        },
        &keyward_enclave::nsm::MockNsm,
        0,
    )?;
    let deployment = deployment_hex(&outcome.record.deployment_id);
    let grant = outcome.operator.as_ref().map(|g| &g.package);
    let swapped = [outcome.packages[1].clone(), outcome.packages[0].clone()];
    let other_operator = genesis(
        &ShamirGenesis {
            threshold: 1,
            custodians: vec![CustodyKey::generate().public_key()],
            operator_key: Some(CustodyKey::generate().public_key()),
        },
        &keyward_enclave::nsm::MockNsm,
        0,
    )?;
    let (endpoint, server) = serve(vec![
        (200, init_custody_answer(&deployment, &outcome.packages, grant)),
        (200, init_custody_answer(&deployment, &swapped, grant)),
        (200, init_custody_answer(&deployment, &outcome.packages, None)),
        (
            200,
            init_custody_answer(
                &deployment,
                &outcome.packages,
                other_operator.operator.as_ref().map(|g| &g.package),
            ),
        ),
    ])
    .await?;
    let client = Client::unauthenticated(&endpoint)?.with_tls(crate::tls::test_identity::options())?;
    let output = client.init_custody(&request).await?;
    assert_eq!(deployment_hex(&output.deployment_id), deployment);
    assert_eq!(output.share_packages, outcome.packages);
    let (access_key_id, _) =
        operator.open_operator_credential(output.operator_credential.as_ref().expect("credential"))?;
    assert_eq!(Some(access_key_id.as_str()), grant.map(|g| g.access_key_id.as_str()));

    let refused = client.init_custody(&request).await.expect_err("swapped packages");
    assert!(refused.to_string().contains("swapped or altered"), "{refused}");
    let refused = client.init_custody(&request).await.expect_err("no operator credential");
    assert!(refused.to_string().contains("no OperatorCredential"), "{refused}");
    let refused = client.init_custody(&request).await.expect_err("another operator key");
    assert!(
        refused.to_string().contains("not sealed to the operator key"),
        "{refused}"
    );

    let seen = server.await?;
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter()
            .all(|s| s.target == "Keyward.InitCustody" && s.authorization.is_empty())
    );
    assert_eq!(seen[0].body["Threshold"], 2);
    assert_eq!(seen[0].body["CustodianPublicKeys"].as_array().map(Vec::len), Some(2));
    Ok(())
}
