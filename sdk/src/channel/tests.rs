//! The attested channel against loopback HTTPS servers playing the enclave:
//! a CA, leaves of it for different keys, and a server that answers
//! `Keyward.GetAttestationDocument` with a mock document binding whichever
//! TLS key the test says (its own: the enclave; another one: a host relaying
//! the real enclave's document over its own TLS session).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use keyward_attestation::mock::{MockPki, attest_with};
use p256::pkcs8::EncodePublicKey as _;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::attestation::{
    AUDIT_KEY_BINDING_PREFIX, DEFAULT_MODULE_ID, DocumentError, TLS_SPKI_BINDING_LABEL, default_pcrs,
};
use crate::{Error, TlsOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A CA (rcgen, P-256) that issues leaves for `127.0.0.1`, each for a fresh key.
struct TestCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pem: String,
}

/// One leaf: what a server needs to serve it, and its key's SPKI hash.
struct Leaf {
    acceptor: tokio_rustls::TlsAcceptor,
    spki_sha256: [u8; 32],
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keyward-sdk channel test CA");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        TestCa { key, params, pem }
    }

    fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("names");
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let certificate = params.signed_by(&key, &issuer).expect("leaf certificate");
        let spki_sha256 = crate::tls::spki_sha256(certificate.der()).expect("SPKI");
        assert_eq!(
            spki_sha256,
            <[u8; 32]>::from(Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)))
        );
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![certificate.der().clone()], private)
                .expect("server config");
        Leaf {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            spki_sha256,
        }
    }

    fn options(&self) -> TlsOptions {
        TlsOptions::default().with_ca_bundle(self.pem.clone())
    }
}

/// What the fake enclave attests: its mock NSM, audit key, PCRs and the TLS
/// key hash it binds.
struct FakeEnclave {
    pki: MockPki,
    audit_key: Vec<u8>,
    pcrs: BTreeMap<u8, Vec<u8>>,
    bound_tls_spki_sha256: [u8; 32],
}

impl FakeEnclave {
    fn new(bound_tls_spki_sha256: [u8; 32]) -> FakeEnclave {
        FakeEnclave {
            pki: MockPki::ephemeral().expect("mock PKI"),
            audit_key: p256::SecretKey::random(&mut rand::rngs::OsRng)
                .public_key()
                .to_public_key_der()
                .expect("SPKI")
                .into_vec(),
            pcrs: default_pcrs(),
            bound_tls_spki_sha256,
        }
    }

    fn anchor(&self) -> TrustAnchor {
        TrustAnchor::from_der(self.pki.root_der()).expect("anchor")
    }

    fn document(&self, nonce: &[u8]) -> Vec<u8> {
        let mut user_data = AUDIT_KEY_BINDING_PREFIX.to_vec();
        user_data.extend_from_slice(&Sha256::digest(&self.audit_key));
        user_data.extend_from_slice(TLS_SPKI_BINDING_LABEL);
        user_data.extend_from_slice(&self.bound_tls_spki_sha256);
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("fits");
        attest_with(
            &self.pki,
            DEFAULT_MODULE_ID,
            &self.pcrs,
            Some(&user_data),
            Some(nonce),
            Some(&self.audit_key),
            now_ms,
        )
        .expect("mock document")
    }
}

/// The `X-Amz-Target`s a server received, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A loopback HTTPS server with `leaf` answering as `enclave`: a document for
/// GetAttestationDocument, `{}` for anything else. Returns its endpoint.
async fn serve(leaf: Leaf, enclave: Arc<FakeEnclave>) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("https://{}", listener.local_addr().expect("address"));
    let seen = Seen::default();
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, enclave, seen) = (leaf.acceptor.clone(), Arc::clone(&enclave), Arc::clone(&recorded));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let (enclave, seen) = (Arc::clone(&enclave), Arc::clone(&seen));
                    async move { answer(request, &enclave, &seen).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, seen)
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    enclave: &FakeEnclave,
    seen: &Seen,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    seen.lock().expect("lock").push(target.clone());
    let reply = if target == "Keyward.GetAttestationDocument" {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(request["Nonce"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let document = base64::engine::general_purpose::STANDARD.encode(enclave.document(&nonce));
        serde_json::json!({ "AttestationDocument": document }).to_string()
    } else {
        "{}".to_owned()
    };
    Ok(http::Response::new(Full::new(Bytes::from(reply))))
}

fn seen(seen: &Seen) -> Vec<String> {
    seen.lock().expect("lock").clone()
}

fn pcr0() -> BTreeMap<u8, Vec<u8>> {
    BTreeMap::from([(0, default_pcrs()[&0].clone())])
}

fn client(endpoint: &str, options: TlsOptions) -> Client {
    Client::new(endpoint, "us-east-1", "AKIDCHANNEL", "channel-secret")
        .and_then(|c| c.with_tls(options))
        .expect("client")
}

#[tokio::test]
async fn the_enclaves_own_connection_passes_and_the_client_is_pinned_to_its_key() -> TestResult {
    let ca = TestCa::new();
    let (enclave_leaf, other_leaf) = (ca.leaf(), ca.leaf());
    let attested = enclave_leaf.spki_sha256;
    let enclave = Arc::new(FakeEnclave::new(attested));
    let (endpoint, enclave_seen) = serve(enclave_leaf, Arc::clone(&enclave)).await;

    let channel = client(&endpoint, ca.options())
        .verify_enclave_channel(enclave.anchor(), b"fresh nonce", &pcr0())
        .await?;
    assert_eq!(channel.identity.tls_spki_sha256, attested);
    assert_eq!(channel.identity.audit_public_key, enclave.audit_key);
    assert_eq!(channel.client.tls_options().pin_spki_sha256, Some(attested));
    assert_eq!(channel.client.tls_options().ca_bundle_pem, ca.options().ca_bundle_pem);
    assert_eq!(channel.client.endpoint(), client(&endpoint, ca.options()).endpoint());
    channel.client.list_access_keys().await?;
    assert_eq!(
        seen(&enclave_seen),
        ["Keyward.GetAttestationDocument", "Keyward.ListAccessKeys"]
    );

    // The pin holds on every connection: a server with another key of the
    // same CA gets no request from the pinned client (the handshake fails).
    let (other, other_seen) = serve(other_leaf, Arc::clone(&enclave)).await;
    let pinned_elsewhere = client(&other, channel.client.tls_options().clone());
    match pinned_elsewhere.list_access_keys().await {
        Err(Error::Transport(reason)) => assert!(reason.contains("pinned"), "{reason}"),
        other => panic!("expected a pin failure, got {other:?}"),
    }
    assert!(seen(&other_seen).is_empty());
    // Unpinned, the same CA is trusted there: the pin made the difference.
    client(&other, ca.options()).list_access_keys().await?;
    Ok(())
}

#[tokio::test]
async fn a_host_with_another_key_of_the_same_ca_relaying_the_document_fails() -> TestResult {
    let ca = TestCa::new();
    let (enclave_leaf, host_leaf) = (ca.leaf(), ca.leaf());
    // The document is the enclave's (it binds the enclave's key); the TLS
    // session ends at the host's key.
    let enclave = Arc::new(FakeEnclave::new(enclave_leaf.spki_sha256));
    let host_key = host_leaf.spki_sha256;
    let (endpoint, host_seen) = serve(host_leaf, Arc::clone(&enclave)).await;

    let result = client(&endpoint, ca.options())
        .verify_enclave_channel(enclave.anchor(), b"fresh nonce", &pcr0())
        .await;
    match result {
        Err(AttestationError::ChannelMismatch { attested, connection }) => {
            assert_eq!(attested, enclave_leaf.spki_sha256);
            assert_eq!(connection, host_key);
        }
        other => panic!("expected ChannelMismatch, got {other:?}"),
    }
    // The document itself verifies: only the connection check catches the host.
    let document = enclave.document(b"fresh nonce");
    assert!(verify_enclave(&document, enclave.anchor(), b"fresh nonce", &pcr0()).is_ok());
    // Nothing but the document request reached it.
    assert_eq!(seen(&host_seen), ["Keyward.GetAttestationDocument"]);
    Ok(())
}

#[tokio::test]
async fn a_document_that_does_not_verify_fails_before_the_key_is_looked_at() -> TestResult {
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let enclave = Arc::new(FakeEnclave::new(leaf.spki_sha256));
    let (endpoint, seen_by_server) = serve(leaf, Arc::clone(&enclave)).await;
    let client = client(&endpoint, ca.options());

    let other_pcr0 = BTreeMap::from([(0, vec![0x42; 48])]);
    match client
        .verify_enclave_channel(enclave.anchor(), b"fresh nonce", &other_pcr0)
        .await
    {
        Err(AttestationError::Document(DocumentError::PcrMismatch { index: 0 })) => {}
        other => panic!("expected a PCR mismatch, got {other:?}"),
    }
    let other_root = TrustAnchor::from_der(MockPki::ephemeral()?.root_der())?;
    match client.verify_enclave_channel(other_root, b"fresh nonce", &pcr0()).await {
        Err(AttestationError::Document(DocumentError::UntrustedRoot)) => {}
        other => panic!("expected an untrusted root, got {other:?}"),
    }
    assert_eq!(seen(&seen_by_server).len(), 2);
    Ok(())
}

#[tokio::test]
async fn unusable_inputs_send_nothing() -> TestResult {
    let ca = TestCa::new();
    let leaf = ca.leaf();
    let enclave = Arc::new(FakeEnclave::new(leaf.spki_sha256));
    let (endpoint, seen_by_server) = serve(leaf, Arc::clone(&enclave)).await;
    let client = client(&endpoint, ca.options());
    assert!(matches!(
        client.verify_enclave_channel(enclave.anchor(), b"", &pcr0()).await,
        Err(AttestationError::BadNonce(0))
    ));
    assert!(matches!(
        client
            .verify_enclave_channel(enclave.anchor(), &[1; 513], &pcr0())
            .await,
        Err(AttestationError::BadNonce(513))
    ));
    assert!(matches!(
        client
            .verify_enclave_channel(enclave.anchor(), b"n", &BTreeMap::new())
            .await,
        Err(AttestationError::NoExpectedPcrs)
    ));
    assert!(seen(&seen_by_server).is_empty());
    Ok(())
}
