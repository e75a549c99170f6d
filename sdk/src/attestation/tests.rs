//! Mock documents and enclave verification against ephemeral mock PKIs, and
//! the typed call against a loopback server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_attestation::mock::{MockPki, attest_with};
use p256::pkcs8::EncodePublicKey as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// A mock root on disk (as the enclave creates it), its directory and anchor.
fn root_on_disk() -> (tempfile::TempDir, std::path::PathBuf, TrustAnchor) {
    let data = tempfile::tempdir().expect("temp dir");
    let pki = MockPki::load_or_create(data.path()).expect("mock root");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("anchor");
    let dir = mock_dir(data.path());
    (data, dir, anchor)
}

fn audit_key_spki() -> Vec<u8> {
    p256::SecretKey::random(&mut rand::rngs::OsRng)
        .public_key()
        .to_public_key_der()
        .expect("SPKI")
        .into_vec()
}

/// The TLS key hash the test documents bind.
const TLS_SPKI: [u8; 32] = [0x5a; 32];

fn binding(public_key: &[u8]) -> Vec<u8> {
    let mut user_data = AUDIT_KEY_BINDING_PREFIX.to_vec();
    user_data.extend_from_slice(&Sha256::digest(public_key));
    user_data.extend_from_slice(TLS_SPKI_BINDING_LABEL);
    user_data.extend_from_slice(&TLS_SPKI);
    assert_eq!(user_data.len(), ENCLAVE_USER_DATA_LEN);
    user_data
}

/// An enclave-style self-attestation under `pki`.
struct EnclaveDoc<'a> {
    pcrs: BTreeMap<u8, Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<&'a [u8]>,
    public_key: Option<Vec<u8>>,
    timestamp_ms: u64,
}

impl<'a> EnclaveDoc<'a> {
    fn new(public_key: &[u8], nonce: &'a [u8]) -> Self {
        EnclaveDoc {
            pcrs: default_pcrs(),
            user_data: Some(binding(public_key)),
            nonce: Some(nonce),
            public_key: Some(public_key.to_vec()),
            timestamp_ms: now_ms(),
        }
    }

    fn issue(&self, pki: &MockPki) -> Vec<u8> {
        attest_with(
            pki,
            DEFAULT_MODULE_ID,
            &self.pcrs,
            self.user_data.as_deref(),
            self.nonce,
            self.public_key.as_deref(),
            self.timestamp_ms,
        )
        .expect("mock document")
    }
}

fn pcr0() -> BTreeMap<u8, Vec<u8>> {
    BTreeMap::from([(0, default_pcrs()[&0].clone())])
}

#[test]
fn mock_documents_verify_under_the_root_on_disk() -> TestResult {
    let (_data, dir, anchor) = root_on_disk();
    let anchor_from_file = TrustAnchor::from_pem(&std::fs::read_to_string(dir.join("root.crt.pem"))?)?;
    assert_eq!(anchor_from_file.fingerprint(), anchor.fingerprint());

    let mut pcrs = default_pcrs();
    pcrs.insert(0, vec![0xab; 48]);
    pcrs.insert(20, vec![0xcd; 48]);
    let document = mock_document(&dir, "i-workload-enc1", &pcrs, b"spki of the workload", Some(b"n-1"))?;

    let expect = Expectations {
        nonce: Some(b"n-1".to_vec()),
        ..Expectations::default()
    };
    let verified = Verifier::new(anchor).verify(&document, OffsetDateTime::now_utc(), &expect)?;
    assert_eq!(verified.module_id(), "i-workload-enc1");
    assert_eq!(verified.public_key(), Some(&b"spki of the workload"[..]));
    assert_eq!(verified.user_data(), None);
    assert_eq!(verified.pcr(0), Some(&[0xab; 48][..]));
    assert_eq!(verified.pcr(1), Some(default_pcrs()[&1].as_slice()));
    assert_eq!(verified.pcr(20), Some(&[0xcd; 48][..]));
    assert!(verified.timestamp_ms().abs_diff(now_ms()) < 60_000);

    // Without a nonce, and an identical root loaded twice gives documents
    // under the same anchor.
    let again = mock_document(&dir, DEFAULT_MODULE_ID, &default_pcrs(), b"k", None)?;
    let verified =
        Verifier::new(anchor_from_file).verify(&again, OffsetDateTime::now_utc(), &Expectations::default())?;
    assert_eq!(verified.nonce(), None);
    Ok(())
}

#[test]
fn mock_documents_need_the_root_files_and_valid_inputs() {
    let empty = tempfile::tempdir().expect("temp dir");
    let err = mock_document(empty.path(), DEFAULT_MODULE_ID, &default_pcrs(), b"k", None).expect_err("no root");
    assert!(matches!(err, AttestationError::Mock(MockError::Io { .. })), "{err:?}");
    assert!(
        std::fs::read_dir(empty.path()).expect("readable").next().is_none(),
        "mock_document must not create a root"
    );

    let (_data, dir, _anchor) = root_on_disk();
    let short_pcr = BTreeMap::from([(0, vec![1u8; 32])]);
    let err = mock_document(&dir, DEFAULT_MODULE_ID, &short_pcr, b"k", None).expect_err("32-byte PCR");
    assert!(
        matches!(err, AttestationError::Mock(MockError::BadPcrLength { .. })),
        "{err:?}"
    );
    let err = mock_document(&dir, DEFAULT_MODULE_ID, &default_pcrs(), &[0u8; 1025], None).expect_err("big key");
    assert!(
        matches!(err, AttestationError::Mock(MockError::InputTooLarge { .. })),
        "{err:?}"
    );
}

#[test]
fn nitro_documents_need_the_nsm() {
    if Path::new("/dev/nsm").exists() {
        return; // inside a Nitro Enclave: nothing to assert here
    }
    let err = nitro_document(b"k", Some(b"n")).expect_err("no NSM here");
    assert!(matches!(err, AttestationError::NsmUnavailable), "{err:?}");
}

#[test]
fn verify_enclave_returns_the_bound_audit_key() -> TestResult {
    let pki = MockPki::ephemeral()?;
    let anchor = TrustAnchor::from_der(pki.root_der())?;
    let key = audit_key_spki();
    let document = EnclaveDoc::new(&key, b"fresh nonce").issue(&pki);

    let mut expected = pcr0();
    expected.insert(2, default_pcrs()[&2].clone());
    let identity = verify_enclave(&document, anchor, b"fresh nonce", &expected)?;
    assert_eq!(identity.audit_public_key, key);
    assert_eq!(identity.tls_spki_sha256, TLS_SPKI);
    assert_eq!(identity.module_id, DEFAULT_MODULE_ID);
    assert_eq!(identity.pcrs, default_pcrs());
    assert!(identity.timestamp_ms.abs_diff(now_ms()) < 60_000);
    Ok(())
}

#[test]
fn verify_enclave_refuses_what_does_not_identify_the_enclave() -> TestResult {
    let pki = MockPki::ephemeral()?;
    let anchor = TrustAnchor::from_der(pki.root_der())?;
    let key = audit_key_spki();
    let nonce: &[u8] = b"fresh nonce";
    let check = |document: &[u8], nonce: &[u8], expected: &BTreeMap<u8, Vec<u8>>| {
        verify_enclave(document, anchor.clone(), nonce, expected).expect_err("must be refused")
    };
    let good = EnclaveDoc::new(&key, nonce).issue(&pki);

    // The caller's own inputs.
    assert!(matches!(check(&good, b"", &pcr0()), AttestationError::BadNonce(0)));
    assert!(matches!(
        check(&good, &[7; 513], &pcr0()),
        AttestationError::BadNonce(513)
    ));
    assert!(matches!(
        check(&good, nonce, &BTreeMap::new()),
        AttestationError::NoExpectedPcrs
    ));

    // Nonce and PCRs.
    let err = check(&good, b"another nonce", &pcr0());
    assert!(
        matches!(err, AttestationError::Document(DocumentError::NonceMismatch)),
        "{err:?}"
    );
    let no_nonce = EnclaveDoc {
        nonce: None,
        ..EnclaveDoc::new(&key, nonce)
    }
    .issue(&pki);
    let err = check(&no_nonce, nonce, &pcr0());
    assert!(
        matches!(err, AttestationError::Document(DocumentError::NonceMismatch)),
        "{err:?}"
    );
    let err = check(&good, nonce, &BTreeMap::from([(0, vec![0x11; 48])]));
    assert!(
        matches!(err, AttestationError::Document(DocumentError::PcrMismatch { index: 0 })),
        "{err:?}"
    );
    let err = check(
        &good,
        nonce,
        &BTreeMap::from([(0, default_pcrs()[&0].clone()), (24, vec![0; 48])]),
    );
    assert!(
        matches!(
            err,
            AttestationError::Document(DocumentError::PcrMismatch { index: 24 })
        ),
        "{err:?}"
    );
    let mut debug_pcrs = default_pcrs();
    for i in 0..=2 {
        debug_pcrs.insert(i, vec![0; 48]);
    }
    let debug = EnclaveDoc {
        pcrs: debug_pcrs,
        ..EnclaveDoc::new(&key, nonce)
    }
    .issue(&pki);
    let err = check(&debug, nonce, &BTreeMap::from([(0, vec![0; 48])]));
    assert!(
        matches!(err, AttestationError::Document(DocumentError::DebugModePcrs)),
        "{err:?}"
    );

    // Trust: another root, and the AWS root.
    let other = MockPki::ephemeral()?;
    let foreign = EnclaveDoc::new(&key, nonce).issue(&other);
    let err = check(&foreign, nonce, &pcr0());
    assert!(
        matches!(err, AttestationError::Document(DocumentError::UntrustedRoot)),
        "{err:?}"
    );
    let err = verify_enclave(&good, TrustAnchor::aws_nitro_root()?, nonce, &pcr0()).expect_err("AWS root");
    assert!(
        matches!(err, AttestationError::Document(DocumentError::UntrustedRoot)),
        "{err:?}"
    );

    // Freshness.
    let stale = EnclaveDoc {
        timestamp_ms: now_ms() - 10 * 60 * 1000,
        ..EnclaveDoc::new(&key, nonce)
    }
    .issue(&pki);
    let err = check(&stale, nonce, &pcr0());
    assert!(
        matches!(err, AttestationError::Document(DocumentError::Stale { .. })),
        "{err:?}"
    );
    let later = SystemTime::now() + Duration::from_secs(6 * 60);
    let err = verify_enclave_at(&good, anchor.clone(), nonce, &pcr0(), later).expect_err("old by then");
    assert!(
        matches!(err, AttestationError::Document(DocumentError::Stale { .. })),
        "{err:?}"
    );
    verify_enclave_at(
        &good,
        anchor.clone(),
        nonce,
        &pcr0(),
        SystemTime::now() + Duration::from_secs(60),
    )?;

    // Corruption: any flipped byte of the signed document.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    assert!(matches!(check(&flipped, nonce, &pcr0()), AttestationError::Document(_)));
    assert!(matches!(
        check(b"not a document", nonce, &pcr0()),
        AttestationError::Document(_)
    ));

    // The binding of the audit key.
    let other_key = audit_key_spki();
    let cases: Vec<(&str, EnclaveDoc<'_>)> = vec![
        (
            "no public key",
            EnclaveDoc {
                public_key: None,
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "no user data",
            EnclaveDoc {
                user_data: None,
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "user data binds another key",
            EnclaveDoc {
                user_data: Some(binding(&other_key)),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "user data without the prefix",
            EnclaveDoc {
                user_data: Some(Sha256::digest(&key).to_vec()),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "the v1 binding (audit key only, no TLS key)",
            EnclaveDoc {
                user_data: Some({
                    let mut v1 = b"keyward/v1/audit-key-sha256:".to_vec();
                    v1.extend_from_slice(&Sha256::digest(&key));
                    v1
                }),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "the TLS key hash cut short",
            EnclaveDoc {
                user_data: Some(binding(&key)[..ENCLAVE_USER_DATA_LEN - 1].to_vec()),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "a wrong label before the TLS key hash",
            EnclaveDoc {
                user_data: Some({
                    let mut wrong = binding(&key);
                    wrong[60] ^= 1;
                    wrong
                }),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
        (
            "public key is not P-256",
            EnclaveDoc {
                public_key: Some(b"an RSA key, say".to_vec()),
                user_data: Some(binding(b"an RSA key, say")),
                ..EnclaveDoc::new(&key, nonce)
            },
        ),
    ];
    for (what, doc) in cases {
        let err = check(&doc.issue(&pki), nonce, &pcr0());
        assert!(matches!(err, AttestationError::Unbound(_)), "{what}: {err:?}");
    }
    Ok(())
}

/// Answers one request with `(status, body)`; yields the request's
/// `x-amz-target` and JSON body.
async fn serve_once(
    status: u16,
    body: String,
) -> std::io::Result<(String, tokio::task::JoinHandle<(String, serde_json::Value)>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", listener.local_addr()?);
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut stream = crate::tls::test_identity::loopback()
            .acceptor
            .accept(stream)
            .await
            .expect("TLS handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (header_end, length) = loop {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("content-length");
                break (i + 4, length);
            }
        };
        while buf.len() < header_end + length {
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let target = head
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-target:"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        let json = serde_json::from_slice(&buf[header_end..header_end + length]).expect("JSON body");
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        (target, json)
    });
    Ok((endpoint, handle))
}

#[tokio::test]
async fn get_attestation_document_sends_the_nonce_and_decodes_the_document() -> TestResult {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (endpoint, server) = serve_once(200, format!(r#"{{"AttestationDocument":"{}"}}"#, b64(b"\x84doc"))).await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDEXAMPLE", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let document = client.get_attestation_document(b"nonce \x00\xff").await?;
    assert_eq!(document, b"\x84doc");
    let (target, body) = server.await?;
    // Lower-cased by the loopback server.
    assert_eq!(target, "keyward.getattestationdocument");
    assert_eq!(body, serde_json::json!({ "Nonce": b64(b"nonce \x00\xff") }));

    let (endpoint, _server) = serve_once(200, r#"{"AttestationDocument":"***"}"#.to_owned()).await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDEXAMPLE", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let err = client.get_attestation_document(b"n").await.expect_err("not base64");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    let (endpoint, _server) = serve_once(
        400,
        r#"{"__type":"ValidationException","message":"nonce too long"}"#.to_owned(),
    )
    .await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDEXAMPLE", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let err = client
        .attest_enclave(TrustAnchor::aws_nitro_root()?, &pcr0())
        .await
        .expect_err("refused");
    match err {
        AttestationError::Client(e) => assert_eq!(e.error_type(), Some("ValidationException")),
        other => panic!("{other:?}"),
    }

    // A document that does not verify is refused by attest_enclave.
    let pki = MockPki::ephemeral()?;
    let key = audit_key_spki();
    let document = EnclaveDoc::new(&key, b"not the client's nonce").issue(&pki);
    let (endpoint, _server) = serve_once(200, format!(r#"{{"AttestationDocument":"{}"}}"#, b64(&document))).await?;
    let client =
        Client::new(&endpoint, "us-east-1", "AKIDEXAMPLE", "secret")?.with_tls(crate::tls::test_identity::options())?;
    let anchor = TrustAnchor::from_der(pki.root_der())?;
    let err = client.attest_enclave(anchor, &pcr0()).await.expect_err("nonce");
    assert!(
        matches!(err, AttestationError::Document(DocumentError::NonceMismatch)),
        "{err:?}"
    );
    Ok(())
}
