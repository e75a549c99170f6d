//! TLS ends inside the enclave; the host forwards opaque bytes (issue 16).
//!
//! * Bad input on the client port: plain HTTP gets a TLS alert or a closed
//!   connection, never a hang; a client that stalls in the handshake or in
//!   a request head is cut off (handshake and header timeouts in the
//!   enclave); garbage on one forwarded stream closes that stream only.
//! * A **recording** host (recorders on the host link and on the client
//!   streams, between the separate proxy and enclave processes) sees no
//!   secret access key, plaintext or data key, and neither do the logs.
//! * A **substituting** host (rewriting bytes of a response) makes the
//!   client fail with a TLS error; it never accepts altered content.
//! * The operator-CA path with a CA made by `openssl`: the enclave's CSR is
//!   signed, the chain imported, new connections are served with it; a
//!   chain for another key is refused.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Keyward, REGION, Sandbox, api_headers, create_key, exchange, must, random_bytes, sign_headers};
use crate::split::{Split, contains, encodings, find_secret};

/// Reads until the peer closes (or fails); panics if it keeps the
/// connection open past `limit`. Returns what was read and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection stayed open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// A signed `TrentService.ListKeys` over `stream`.
async fn list_keys_over<S>(kw: &Keyward, stream: S) -> std::io::Result<crate::harness::RawResponse>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let body = b"{}".to_vec();
    let mut headers = api_headers(&kw.addr, "TrentService.ListKeys");
    sign_headers(&mut headers, &kw.addr, &body, &kw.creds, kw.now());
    exchange(stream, "POST", "/", &headers, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_tls_port_closes_only_that_connection() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let config = keyward_test_support::tls::client_config(&kw.ca_pem);

    // A TLS connection opened before the bad clients, used after them.
    let mut survivor = keyward_test_support::tls::connect(&kw.addr, Arc::clone(&config))
        .await
        .expect("TLS handshake");

    // Plain HTTP: a TLS alert (content type 21) or a close, at once.
    let mut plain = TcpStream::connect(&kw.addr).await.expect("connect");
    plain
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .expect("write");
    let (answer, took) = read_until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "plain HTTP got something other than an alert: {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(!contains(&answer, b"HTTP/1.1"), "plain HTTP was answered in HTTP");
    assert!(took < Duration::from_secs(5));

    // Garbage that is not TLS on another stream: that stream closes.
    let mut garbage = TcpStream::connect(&kw.addr).await.expect("connect");
    garbage.write_all(&random_bytes(4096)).await.ok();
    read_until_closed(&mut garbage, Duration::from_secs(15)).await;

    // Straight to the enclave's client-stream socket (as a hostile host
    // could): a stream without the stream header is closed at once; one
    // that sends nothing is closed by the header timeout.
    let socket = kw.data_dir.join("enclave-tls.sock");
    let mut headless = tokio::net::UnixStream::connect(&socket).await.expect("connect");
    headless
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), headless.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stream without a header was kept open");
    assert!(rest.is_empty(), "a stream without a header was answered");
    let mut silent = tokio::net::UnixStream::connect(&socket).await.expect("connect");
    let read = tokio::time::timeout(Duration::from_secs(25), silent.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent stream was kept open past the header timeout");

    // The connection opened before still serves, and so do new ones.
    // (A request on the survivor: the enclave and the proxy are unaffected.)
    let _ = survivor.flush().await;
    let response = list_keys_over(&kw, survivor)
        .await
        .expect("the other connection still works");
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let fresh = keyward_test_support::tls::connect(&kw.addr, config).await.expect("TLS");
    assert_eq!(list_keys_over(&kw, fresh).await.expect("a new connection").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_handshake_and_header_timeouts() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    // Silent after connecting: the 10 s handshake timeout.
    let silent = async {
        let mut stream = TcpStream::connect(&kw.addr).await.expect("connect");
        let (_, took) = read_until_closed(&mut stream, Duration::from_secs(25)).await;
        assert!(
            took >= Duration::from_secs(5),
            "closed after {took:?}, before the timeout"
        );
    };
    // Half a ClientHello, then nothing: the handshake timeout too.
    let stalled_hello = async {
        let mut stream = TcpStream::connect(&kw.addr).await.expect("connect");
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        read_until_closed(&mut stream, Duration::from_secs(25)).await;
    };
    // A finished handshake, then a request head that never ends (slowloris):
    // the 30 s header timeout.
    let slow_head = async {
        let config = keyward_test_support::tls::client_config(&kw.ca_pem);
        let mut tls = keyward_test_support::tls::connect(&kw.addr, config).await.expect("TLS");
        tls.write_all(b"POST / HTTP/1.1\r\nhost: x\r\n").await.expect("write");
        tls.flush().await.expect("flush");
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(50), tls.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a request head that never ends kept the connection open for 50 s"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(20),
            "cut off early: {:?}",
            started.elapsed()
        );
    };
    tokio::join!(silent, stalled_hello, slow_head);
    // And the service still answers.
    assert_eq!(kw.healthz().await, 200);
}

/// Forwards TCP to `upstream`; once the client has sent a large
/// application-data record (its request), flips one byte in each
/// application-data record coming back (the response).
struct Substituter {
    addr: String,
    flipped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Substituter {
    async fn start(upstream: String) -> Substituter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let flipped = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&flipped);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let flipped = Arc::clone(&shared);
                tokio::spawn(async move {
                    let requested = Arc::new(AtomicBool::new(false));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = relay_records(client_read, server_write, Arc::clone(&requested), None);
                    let down = relay_records(server_read, client_write, requested, Some(flipped));
                    tokio::join!(up, down);
                });
            }
        });
        Substituter { addr, flipped, task }
    }
}

impl Drop for Substituter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays TLS records one by one. Upstream (`flip: None`) notes when a large
/// application-data record went by; downstream flips a byte of every
/// application-data record after that.
async fn relay_records(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    requested: Arc<AtomicBool>,
    flip: Option<Arc<AtomicBool>>,
) {
    loop {
        let mut header = [0u8; 5];
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut payload = vec![0u8; len];
        if from.read_exact(&mut payload).await.is_err() {
            break;
        }
        match &flip {
            None if header[0] == 0x17 && len > 200 => requested.store(true, Ordering::SeqCst),
            Some(flipped) if header[0] == 0x17 && requested.load(Ordering::SeqCst) && len > 16 => {
                payload[len / 2] ^= 0x01;
                flipped.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        if to.write_all(&header).await.is_err() || to.write_all(&payload).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_rewrites_a_response_makes_the_client_fail() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let key_id = create_key(&kw.client(), "substitution").await;
    let substituter = Substituter::start(kw.addr.clone()).await;

    // Raw rustls client: the altered record fails its AEAD tag.
    let config = keyward_test_support::tls::client_config(&kw.ca_pem);
    let stream = keyward_test_support::tls::connect(&substituter.addr, config)
        .await
        .expect("the handshake is untouched");
    match list_keys_over(&kw, stream).await {
        Ok(response) => panic!(
            "the client accepted an altered response: {} {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            "not a TLS error: {e}"
        ),
    }
    assert!(
        substituter.flipped.load(Ordering::SeqCst),
        "the substituter altered nothing"
    );

    // aws-sdk-kms through the same host: an error without any service response.
    let url = format!("https://{}", substituter.addr);
    let client = crate::harness::sdk_client(
        &url,
        &kw.ca_pem,
        &kw.creds.access_key_id,
        &kw.creds.secret,
        Some(crate::harness::REQUEST_TIMEOUT),
    );
    let result = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(random_bytes(32)))
        .send()
        .await;
    match result {
        Ok(out) => panic!("the SDK accepted an altered response: {out:?}"),
        Err(e) => assert!(
            e.raw_response().is_none(),
            "the SDK parsed an altered response: {}",
            aws_sdk_kms::error::DisplayErrorContext(&e)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_host_sees_no_secret() {
    let split = Split::start().await;
    let operator = keyward_sdk::Client::new(
        &split.url,
        REGION,
        &split.operator.access_key_id,
        &split.operator.secret,
    )
    .expect("client")
    .with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(split.ca_pem.clone()))
    .expect("CA");
    let tenant_id: String = (0..12).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
    let tenant = operator.create_tenant(&tenant_id).await.expect("CreateTenant");
    let admin = keyward_sdk::Client::new(
        &split.url,
        REGION,
        &tenant.access_key_id,
        tenant.secret_access_key.expose(),
    )
    .expect("client")
    .with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(split.ca_pem.clone()))
    .expect("CA");
    let user = admin
        .create_access_key(keyward_sdk::Role::KeyUser)
        .await
        .expect("CreateAccessKey");
    let admin_kms = split.client_as(&crate::harness::Creds {
        access_key_id: tenant.access_key_id.clone(),
        secret: tenant.secret_access_key.expose().to_owned(),
    });
    let user_kms = split.client_as(&crate::harness::Creds {
        access_key_id: user.access_key_id.clone(),
        secret: user.secret_access_key.expose().to_owned(),
    });
    let key_id = create_key(&admin_kms, "recorded").await;
    let generated = must(
        "GenerateDataKey",
        user_kms
            .generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .send()
            .await,
    );
    let data_key = generated.plaintext().expect("Plaintext").as_ref().to_vec();
    let blob = generated.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    let plaintext = random_bytes(48);
    let encrypted = must(
        "Encrypt",
        user_kms
            .encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(plaintext.clone()))
            .send()
            .await,
    );
    let decrypted = must(
        "Decrypt",
        user_kms
            .decrypt()
            .ciphertext_blob(encrypted.ciphertext_blob().expect("blob").clone())
            .send()
            .await,
    );
    assert_eq!(decrypted.plaintext().expect("Plaintext").as_ref(), plaintext.as_slice());
    let redecrypted = must(
        "Decrypt",
        user_kms.decrypt().ciphertext_blob(Blob::new(blob)).send().await,
    );
    assert_eq!(
        redecrypted.plaintext().expect("Plaintext").as_ref(),
        data_key.as_slice()
    );

    let recordings = split.recordings();
    // The scan can fail: the key id crosses the host in clear (record names).
    assert!(
        !find_secret(&recordings, key_id.as_bytes()).is_empty(),
        "the recorders saw none of the traffic"
    );
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        (
            "tenant's secret access key",
            tenant.secret_access_key.expose().as_bytes().to_vec(),
        ),
        (
            "KeyUser's secret access key",
            user.secret_access_key.expose().as_bytes().to_vec(),
        ),
        ("data key", data_key),
        ("plaintext", plaintext),
    ];
    for (label, secret) in &secrets {
        let found = find_secret(&recordings, secret);
        assert!(found.is_empty(), "the {label} crossed the host: {found:?}");
        for (process, log) in split.logs() {
            for (encoding, needle) in encodings(secret) {
                assert!(
                    !contains(log.as_bytes(), &needle),
                    "the {label} is in the {process} log ({encoding})"
                );
            }
        }
    }
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_ca_path_with_an_openssl_ca() {
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let operator = keyward_sdk::Client::new(&kw.url, REGION, &kw.operator.access_key_id, &kw.operator.secret)
        .expect("client")
        .with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(kw.ca_pem.clone()))
        .expect("CA");
    // Key operations only for the operator: a tenant may not.
    let tenant = keyward_sdk::Client::new(&kw.url, REGION, &kw.creds.access_key_id, &kw.creds.secret)
        .expect("client")
        .with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(kw.ca_pem.clone()))
        .expect("CA");
    match tenant.get_tls_certificate_request().await {
        Err(e) => assert_eq!(e.error_type(), Some("AccessDeniedException"), "{e}"),
        Ok(_) => panic!("a tenant got the TLS certificate request"),
    }

    let csr = operator.get_tls_certificate_request().await.expect("CSR");
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("enclave.csr"), &csr).expect("write");
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/O=Operator/CN=Operator test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "enclave.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.crt",
            "-days",
            "20",
            "-extfile",
            "leaf.ext",
        ],
    );
    // A certificate for another key, from the same CA.
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "other.crt",
            "-days",
            "20",
            "-extfile",
            "leaf.ext",
        ],
    );
    let read = |name: &str| std::fs::read_to_string(d.join(name)).expect("read");
    let (ca, leaf, other) = (read("ca.crt"), read("leaf.crt"), read("other.crt"));

    // Refused: another key's certificate; a list that is not a chain.
    let refused = |result: Result<(), keyward_sdk::Error>, what: &str, says: &str| match result {
        Err(e) => {
            assert_eq!(e.error_type(), Some("ValidationException"), "{what}: {e}");
            assert!(e.to_string().contains(says), "{what}: {e}");
        }
        Ok(()) => panic!("{what} was accepted"),
    };
    refused(
        operator.import_tls_certificate(&format!("{other}{ca}")).await,
        "a chain for another key",
        "does not match the enclave's key",
    );
    refused(
        operator.import_tls_certificate(&format!("{leaf}{}", kw.ca_pem)).await,
        "a leaf followed by an unrelated CA",
        "not a chain",
    );
    refused(
        operator.import_tls_certificate("not a certificate").await,
        "text",
        "not PEM",
    );
    // The same through kmsctl (HTTPS, the CA bundle from AWS_CA_BUNDLE).
    let kmsctl = |args: &[&str]| {
        Command::new(crate::audit::kmsctl_path())
            .args(args)
            .env("KEYWARD_ENDPOINT", &kw.url)
            .env("AWS_CA_BUNDLE", kw.data_dir.join("tls").join("ca.pem"))
            .env("AWS_ACCESS_KEY_ID", &kw.operator.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &kw.operator.secret)
            .output()
            .expect("run kmsctl")
    };
    let out = kmsctl(&["tls", "csr"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    std::fs::write(d.join("other-chain.pem"), format!("{other}{ca}")).expect("write");
    let out = kmsctl(&["tls", "import", &d.join("other-chain.pem").display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the enclave's key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Still served by the enclave CA.
    let enclave_ca_client = keyward_test_support::tls::client_config(&kw.ca_pem);
    let stream = keyward_test_support::tls::connect(&kw.addr, Arc::clone(&enclave_ca_client))
        .await
        .expect("still the enclave CA");
    assert_eq!(list_keys_over(&kw, stream).await.expect("request").status, 200);

    operator
        .import_tls_certificate(&format!("{leaf}{ca}"))
        .await
        .expect("the operator's chain is accepted");
    // New connections get it at once: a client trusting only the operator's
    // CA connects and is served; one trusting only the enclave CA no longer.
    let operator_ca_client = keyward_test_support::tls::client_config(&ca);
    let stream = keyward_test_support::tls::connect(&kw.addr, operator_ca_client)
        .await
        .expect("served with the operator's chain");
    assert_eq!(list_keys_over(&kw, stream).await.expect("request").status, 200);
    // (A fresh client: one that resumes an earlier session skips the certificate.)
    drop(enclave_ca_client);
    let fresh_enclave_ca_client = keyward_test_support::tls::client_config(&kw.ca_pem);
    assert!(
        keyward_test_support::tls::connect(&kw.addr, fresh_enclave_ca_client)
            .await
            .is_err(),
        "still served with the enclave CA's certificate"
    );
    // The serving key did not change: the attested SPKI hash is the leaf's.
    let leaf_der = rustls_pemfile_der(&leaf);
    let spki = keyward_sdk::tls::spki_sha256(&leaf_der).expect("SPKI");
    let tenant_new_ca = keyward_sdk::Client::new(&kw.url, REGION, &kw.creds.access_key_id, &kw.creds.secret)
        .expect("client")
        .with_tls(
            keyward_sdk::TlsOptions::default()
                .with_ca_bundle(ca.clone())
                .with_pinned_spki(spki),
        )
        .expect("CA");
    let (_, served) = tenant_new_ca
        .get_attestation_document_and_tls_spki(b"operator ca nonce")
        .await
        .expect("attestation over the operator's chain");
    assert_eq!(served, spki);
}

fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

/// Kills the child when dropped (the test may panic).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_caps_concurrent_client_streams() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("enclave.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "enclave",
            "--mode",
            "mock",
            "--exit-on-stdin-close",
            "--max-client-streams",
            "1",
            "--socket",
        ])
        .arg(&link)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the enclave");
    let stderr = child.stderr.take().expect("stderr");
    let mut child = Killed(child);
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + crate::harness::READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.recv()).await {
            Ok(Some(line)) if line.contains("client TLS streams") => break,
            Ok(Some(_)) => {}
            _ => panic!("the enclave did not start listening for client streams"),
        }
    }
    let socket = dir.path().join("enclave-tls.sock");
    // The first stream takes the only place (it waits for its header).
    let _first = tokio::net::UnixStream::connect(&socket).await.expect("connect");
    // A second one while the first is open: closed at once.
    let mut second = tokio::net::UnixStream::connect(&socket).await.expect("connect");
    let mut buf = Vec::new();
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(8), second.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a stream over the cap was kept open");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(child.0.try_wait().expect("wait").is_none(), "the enclave died");
}
