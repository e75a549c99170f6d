//! The attested channel (issue 16, item 4): a client that verifies the
//! enclave's attestation document also checks that the certificate of the
//! very connection that carried it has the TLS key the document binds, and
//! from then on talks over connections pinned to that key.
//!
//! The positive path runs against the real service (`keyward dev --mock-pcr
//! 0=…`), first with the enclave CA, then with an operator CA (made with
//! `openssl` here) whose chain for the enclave's key was imported: the
//! attested key stays the same when the certificate changes.
//!
//! The negative path is a host that holds a valid certificate from the same
//! operator CA for a key of its own: it terminates the client's TLS and
//! relays the plaintext to the real enclave over a TLS session of its own,
//! so every document it hands over is the enclave's, genuine and fresh, and
//! verifies. Only the connection check catches it: `verify_enclave_channel`
//! fails, a pinned client cannot even finish a handshake with it, and
//! `kmsctl --attest-pcr0` refuses to send anything but the document request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use keyward_sdk::TlsOptions;
use keyward_sdk::attestation::{AttestationError, TrustAnchor, verify_enclave};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use sha2::{Digest, Sha384};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::audit::kmsctl_path;
use crate::harness::{Creds, Keyward, REGION, Sandbox, random_bytes};
use crate::principals::{call_as, ok_json};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An operator CA made with `openssl` (P-256), issuing serving certificates
/// for `localhost` and `127.0.0.1`.
struct OperatorCa {
    dir: tempfile::TempDir,
}

const LEAF_EXTENSIONS: &str = "basicConstraints=critical,CA:FALSE\n\
                               keyUsage=critical,digitalSignature\n\
                               extendedKeyUsage=serverAuth\n\
                               subjectAltName=DNS:localhost,IP:127.0.0.1\n";

impl OperatorCa {
    fn new() -> OperatorCa {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("leaf.ext"), LEAF_EXTENSIONS).expect("extensions file");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/O=Operator/CN=attested channel test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        OperatorCa { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.path("ca.pem")).expect("ca.pem")
    }

    /// Signs the request in `csr` (a file in the CA's directory) into `out`.
    fn sign(&self, csr: &str, out: &str) {
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{}", hex::encode(random_bytes(8))),
                "-days",
                "7",
                "-extfile",
                "leaf.ext",
                "-out",
                out,
            ],
        );
    }

    /// A certificate for the enclave's key, from its PKCS#10 request.
    fn issue_for_request(&self, csr_pem: &str) -> String {
        std::fs::write(self.path("enclave.csr"), csr_pem).expect("write the request");
        self.sign("enclave.csr", "enclave.pem");
        std::fs::read_to_string(self.path("enclave.pem")).expect("enclave.pem")
    }

    /// A certificate for a fresh key of the host's: (chain, key).
    fn issue_for_host(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "host.key",
                "-out",
                "host.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        self.sign("host.csr", "host.pem");
        let chain = CertificateDer::pem_file_iter(self.path("host.pem"))
            .expect("host.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_file(self.path("host.key")).expect("host.key");
        (chain, key)
    }
}

/// A hostile host in front of the real service: it terminates the client's
/// TLS with its own key (certificate from the CA the client trusts), opens a
/// TLS session of its own to the service and copies the plaintext both
/// ways. It records every byte the client sent.
struct Relay {
    addr: SocketAddr,
    from_client: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    async fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        upstream: String,
        upstream_ca_pem: String,
    ) -> Relay {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the host's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let from_client = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&from_client);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, upstream, ca, recorded) = (
                    acceptor.clone(),
                    upstream.clone(),
                    upstream_ca_pem.clone(),
                    Arc::clone(&recorded),
                );
                tokio::spawn(async move {
                    let Ok(client) = acceptor.accept(stream).await else {
                        return;
                    };
                    let config = keyward_test_support::tls::client_config(&ca);
                    let Ok(service) = keyward_test_support::tls::connect(&upstream, config).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = tokio::io::split(client);
                    let (mut service_read, mut service_write) = tokio::io::split(service);
                    let to_service = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    recorded.lock().expect("lock").extend_from_slice(&buf[..n]);
                                    if service_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = service_write.shutdown().await;
                    };
                    let to_client = async {
                        let _ = tokio::io::copy(&mut service_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(to_service, to_client);
                });
            }
        });
        Relay { addr, from_client }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn recorded(&self) -> String {
        String::from_utf8_lossy(&self.from_client.lock().expect("lock")).into_owned()
    }

    /// The `x-amz-target` values of the requests the client sent through it.
    fn targets(&self) -> Vec<String> {
        self.recorded()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("x-amz-target")
                    .then(|| value.trim().to_owned())
            })
            .collect()
    }
}

fn client_trusting(url: &str, creds: &Creds, ca_pem: &str) -> keyward_sdk::Client {
    keyward_sdk::Client::new(url, REGION, &creds.access_key_id, &creds.secret)
        .and_then(|c| c.with_tls(TlsOptions::default().with_ca_bundle(ca_pem.as_bytes().to_vec())))
        .expect("keyward-sdk client")
        .with_timeout(crate::harness::REQUEST_TIMEOUT)
}

fn kmsctl(url: &str, creds: &Creds, ca_bundle: &Path, args: &[&str]) -> std::process::Output {
    Command::new(kmsctl_path())
        .arg("--endpoint")
        .arg(url)
        .arg("--ca-bundle")
        .arg(ca_bundle)
        .args(args)
        .env_remove("KEYWARD_ENDPOINT")
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .output()
        .expect("run kmsctl")
}

/// The tenants the operator sees, over a client trusting `ca_pem`.
async fn tenant_ids(kw: &Keyward, ca_pem: &str) -> Vec<String> {
    client_trusting(&kw.url, &kw.operator, ca_pem)
        .list_tenants()
        .await
        .expect("ListTenants")
        .into_iter()
        .map(|t| t.tenant_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_attested_enclaves_own_tls_key_passes_and_kmsctl_refuses_a_relaying_host() {
    let kmsctl_bin = kmsctl_path();
    assert!(kmsctl_bin.is_file());
    let pcr0 = Sha384::digest(b"keyward attested channel test image").to_vec();
    let pcr0_hex = hex::encode(&pcr0);
    let mut sandbox = Sandbox::new();
    sandbox.extra_args.push("--mock-pcr".into());
    sandbox.extra_args.push(format!("0={pcr0_hex}"));
    let kw = sandbox.start().await;
    let root_path = kw.data_dir.join("mock-attestation").join("root.crt.pem");
    let anchor = TrustAnchor::from_pem(&std::fs::read_to_string(&root_path).expect("mock root")).expect("anchor");
    let expected = BTreeMap::from([(0u8, pcr0.clone())]);
    let dev_ca_path = kw.data_dir.join("tls").join("ca.pem");

    // 1. The real service, enclave CA: the channel verifies and the client is pinned.
    let direct = client_trusting(&kw.url, &kw.operator, &kw.ca_pem);
    let channel = direct
        .verify_enclave_channel(anchor.clone(), &random_bytes(32), &expected)
        .await
        .expect("the enclave's own connection passes");
    let attested = channel.identity.tls_spki_sha256;
    assert_eq!(channel.client.tls_options().pin_spki_sha256, Some(attested));
    channel.client.list_tenants().await.expect("the pinned client works");
    // kmsctl, the same check first.
    let out = kmsctl(
        &kw.url,
        &kw.operator,
        &dev_ca_path,
        &[
            "--attest-pcr0",
            &pcr0_hex,
            "--attest-root",
            root_path.to_str().expect("path"),
            "tenant",
            "create",
            "314159265358",
        ],
    );
    assert!(
        out.status.success(),
        "kmsctl against the enclave: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tenant_ids(&kw, &kw.ca_pem).await.contains(&"314159265358".to_owned()));
    // A wrong PCR0 is refused with nothing sent but the document request.
    let out = kmsctl(
        &kw.url,
        &kw.operator,
        &dev_ca_path,
        &[
            "--attest-pcr0",
            &"00".repeat(48),
            "--attest-root",
            root_path.to_str().expect("path"),
            "tenant",
            "create",
            "271828182845",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!tenant_ids(&kw, &kw.ca_pem).await.contains(&"271828182845".to_owned()));

    // 2. An operator CA: the enclave's key gets a certificate from it.
    let ca = OperatorCa::new();
    let csr = ok_json(
        "GetTlsCertificateRequest",
        &call_as(&kw, &kw.operator, "Keyward.GetTlsCertificateRequest", &json!({})).await,
    )["CertificateSigningRequest"]
        .as_str()
        .expect("CertificateSigningRequest")
        .to_owned();
    let chain = format!("{}{}", ca.issue_for_request(&csr), ca.ca_pem());
    ok_json(
        "ImportTlsCertificate",
        &call_as(
            &kw,
            &kw.operator,
            "Keyward.ImportTlsCertificate",
            &json!({ "CertificateChain": chain }),
        )
        .await,
    );
    // Same key, new certificate: the channel and the old pin still hold.
    let via_operator_ca = client_trusting(&kw.url, &kw.operator, &ca.ca_pem());
    let again = via_operator_ca
        .verify_enclave_channel(anchor.clone(), &random_bytes(32), &expected)
        .await
        .expect("the enclave under the operator CA passes");
    assert_eq!(again.identity.tls_spki_sha256, attested);

    // 3. The host with another key of the same CA, relaying to the enclave.
    let (host_chain, host_key) = ca.issue_for_host();
    let relay = Relay::start(host_chain, host_key, kw.addr.clone(), ca.ca_pem()).await;
    let through_relay = client_trusting(&relay.url(), &kw.operator, &ca.ca_pem());
    // Its documents are the enclave's and verify...
    let nonce = random_bytes(32);
    let (document, relay_spki) = through_relay
        .get_attestation_document_and_tls_spki(&nonce)
        .await
        .expect("the relay relays");
    let identity = verify_enclave(&document, anchor.clone(), &nonce, &expected).expect("a genuine document");
    assert_eq!(identity.tls_spki_sha256, attested);
    assert_ne!(relay_spki, attested, "the relay serves its own key");
    // ...but the connection that carried them does not end in the enclave.
    match through_relay
        .verify_enclave_channel(anchor.clone(), &random_bytes(32), &expected)
        .await
    {
        Err(AttestationError::ChannelMismatch {
            attested: a,
            connection,
        }) => {
            assert_eq!(a, attested);
            assert_eq!(connection, relay_spki);
        }
        other => panic!("expected ChannelMismatch through the relay, got {other:?}"),
    }
    // A pinned client cannot finish a handshake with the host.
    let seen_before = relay.recorded().len();
    let pinned_to_relay =
        keyward_sdk::Client::new(&relay.url(), REGION, &kw.operator.access_key_id, &kw.operator.secret)
            .and_then(|c| c.with_tls(again.client.tls_options().clone()))
            .expect("client");
    assert!(pinned_to_relay.list_tenants().await.is_err());
    assert_eq!(relay.recorded().len(), seen_before, "nothing reached the host");

    // kmsctl refuses it: exit 1, and the host saw only the document request.
    let ca_path = ca.path("ca.pem");
    let before = relay.targets().len();
    let out = kmsctl(
        &relay.url(),
        &kw.operator,
        &ca_path,
        &[
            "--attest-pcr0",
            &pcr0_hex,
            "--attest-root",
            root_path.to_str().expect("path"),
            "tenant",
            "create",
            "161803398874",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "kmsctl through the relay: {stderr}");
    assert!(stderr.contains("refusing to send anything"), "{stderr}");
    assert_eq!(
        relay.targets()[before..],
        ["Keyward.GetAttestationDocument"],
        "kmsctl sent more than the document request through the host"
    );
    assert!(!relay.recorded().contains("161803398874"));
    assert!(!tenant_ids(&kw, &ca.ca_pem()).await.contains(&"161803398874".to_owned()));
    // Without --attest-pcr0 the same CA bundle trusts the host (the check is
    // what protects): the command goes through it.
    let out = kmsctl(&relay.url(), &kw.operator, &ca_path, &["tenant", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(relay.targets().last().map(String::as_str), Some("Keyward.ListTenants"));
}
