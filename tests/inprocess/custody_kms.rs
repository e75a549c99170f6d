//! Custody by an AWS-KMS-compatible key service, with a second Keyward as
//! that service (issue 18 item 3): the enclave's own custody code
//! (`keyward_enclave::custody::kms`) calls it through
//! `keyward_enclave::outbound` — HTTPS with the custody instance's CA
//! pinned, SigV4 with a credential of the custody instance, `Recipient`
//! with a mock attestation document — and opens `CiphertextForRecipient`
//! itself. The custody instance serves the calls on a real client stream
//! (`server::serve_client_stream`: TLS ending in it, then `api::handle`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyward_enclave::Enclave;
use keyward_enclave::attestation::mock::MockPki;
use keyward_enclave::clock::SystemClock;
use keyward_enclave::config::CustodyCredential;
use keyward_enclave::custody::CustodyError;
use keyward_enclave::custody::kms::{self, KeyService, KmsGenesis};
use keyward_enclave::custody::record::{CustodyMethod, RootCommitment};
use keyward_enclave::custody::state::CustodyState;
use keyward_enclave::nsm::{Nsm, NsmError};
use keyward_enclave::outbound::https::{Endpoint, HttpsClient, pinned_client_config};
use keyward_enclave::outbound::kms::KmsClient;
use keyward_enclave::outbound::{BoxedStream, Connect, ConnectFuture};
use keyward_enclave::secret::Key256;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::support::{Service, create_key, random_bytes};

const MODULE_ID: &str = "i-0a1b2c3d4e5f60718-enc0a1b2c3d4e5f6071";
const ENDPOINT: &str = "https://localhost:7800";

/// Client streams to the custody instance: a duplex pipe whose far end the
/// custody enclave serves as the host would hand it a client connection.
pub(crate) struct ToCustody {
    pub(crate) enclave: Arc<Enclave>,
    pub(crate) targets: std::sync::Mutex<Vec<String>>,
}

impl Connect for ToCustody {
    fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.targets.lock().expect("lock").push(target.to_string());
            let (mut near, far) = tokio::io::duplex(64 * 1024);
            let permit = Arc::new(tokio::sync::Semaphore::new(1))
                .acquire_owned()
                .await
                .expect("permit");
            tokio::spawn(keyward_enclave::server::serve_client_stream(
                far,
                Arc::clone(&self.enclave),
                permit,
            ));
            near.write_all(&keyward_wire::encode_stream_header(None))
                .await
                .expect("stream header");
            Ok(Box::new(near) as BoxedStream)
        })
    }
}

/// The NSM of the enclave whose root is in custody: documents under the
/// custody instance's trusted mock root, with these PCRs.
pub(crate) struct WorkloadNsm {
    pub(crate) pki: Arc<MockPki>,
    pub(crate) pcrs: BTreeMap<u8, Vec<u8>>,
}

impl Nsm for WorkloadNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        out.copy_from_slice(&random_bytes(out.len()));
        Ok(())
    }

    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        Ok(keyward_enclave::attestation::mock::attest_with(
            &self.pki,
            MODULE_ID,
            &self.pcrs,
            user_data,
            nonce,
            public_key,
            u64::try_from(now).expect("milliseconds fit"),
        )?)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The custody instance's CA certificate (PEM), once its TLS identity is
/// loaded (a first client stream loads it).
pub(crate) async fn custody_ca(custody: &Service, connector: &ToCustody) -> String {
    drop(connector.connect("warm-up:0").await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pem = custody.enclave().status().ca_certificate_pem;
        if !pem.is_empty() {
            return pem;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the custody instance never loaded its TLS identity"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn set_policy(custody: &Service, key_id: &str, pcr0: &[u8]) {
    let update = custody
        .signed_call(
            "Keyward.UpdateKeyAttestationPolicy",
            json!({ "KeyId": key_id, "RequireRecipient": true, "AllowedPCRs": { "0": [hex(pcr0)] } })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(update.status, 200, "{}", String::from_utf8_lossy(&update.body));
}

fn client(custody: &Service, connector: Arc<ToCustody>, ca_pem: &str) -> KmsClient {
    let https = HttpsClient::new(
        Endpoint::parse(ENDPOINT).expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        connector,
    );
    KmsClient::new(
        https,
        keyward_test_support::REGION.to_string(),
        Arc::new(CustodyCredential {
            access_key_id: custody.creds.access_key_id.clone(),
            secret_access_key: Zeroizing::new(custody.creds.secret.clone()),
            session_token: None,
        }),
        Arc::new(SystemClock),
    )
}

/// Genesis and unseal through a second Keyward whose custody key releases
/// only to PCR0 = ours; then the custody key's policy names another PCR0,
/// and unseal is refused with the service's reason, which the Sealed state
/// shows. An enclave with another PCR0 is refused too, and a boot record
/// whose commitment the released root does not match is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_and_unseal_through_a_second_keyward_and_a_changed_policy_refuses() {
    let custody = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: custody.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&custody, &connector).await;
    let service = client(&custody, Arc::clone(&connector), &ca_pem);
    let key_id = create_key(&custody.client(), "root custody").await;
    let key_arn = keyward_test_support::key_arn(&key_id);
    let pcr0 = random_bytes(48);
    set_policy(&custody, &key_id, &pcr0).await;
    let ours = WorkloadNsm {
        pki: Arc::clone(&custody.pki),
        pcrs: BTreeMap::from([(0, pcr0.clone())]),
    };

    // Genesis: the boot record keeps the blob, the endpoint and the key.
    let request = KmsGenesis {
        key_arn: key_arn.clone(),
        endpoint: ENDPOINT.to_string(),
        operator_key: None,
    };
    let outcome = kms::genesis(&request, &service, &ours, 1_700_000_000)
        .await
        .expect("genesis through the custody instance");
    let record = outcome.record.clone();
    match &record.custody {
        CustodyMethod::Kms {
            key_arn: recorded,
            endpoint,
            ciphertext_blob,
        } => {
            assert_eq!(recorded, &key_arn);
            assert_eq!(endpoint, ENDPOINT);
            assert!(!ciphertext_blob.is_empty());
            // The blob is not the root (it is the custody key's ciphertext).
            assert!(!ciphertext_blob.windows(32).any(|w| w == outcome.root.expose()));
        }
        other => panic!("expected KMS custody, got {other:?}"),
    }
    record
        .commitment
        .verify(&outcome.root)
        .expect("the commitment is the root's");
    assert!(
        connector
            .targets
            .lock()
            .expect("lock")
            .contains(&"localhost:7800".to_string())
    );

    // Unseal: the same root, checked against the commitment.
    let root = kms::unseal(&record, &service, &ours).await.expect("unseal");
    assert!(root == outcome.root, "unseal released another root");

    // Another image (PCR0) is refused by the custody key's policy.
    let impostor = WorkloadNsm {
        pki: Arc::clone(&custody.pki),
        pcrs: BTreeMap::from([(0, random_bytes(48))]),
    };
    match kms::unseal(&record, &service, &impostor).await {
        Err(CustodyError::CustodyService(reason)) => {
            assert!(reason.contains("AccessDeniedException"), "{reason}");
        }
        other => panic!("an enclave with another PCR0 got {:?}", other.map(|_| ())),
    }

    // A boot record whose commitment is another root's: the released root is refused.
    let mut forged = record.clone();
    forged.commitment = RootCommitment::of(&Key256::generate()).expect("commitment");
    assert!(matches!(
        kms::unseal(&forged, &service, &ours).await,
        Err(CustodyError::CommitmentMismatch)
    ));

    // The custody instance's policy now names another PCR0: unseal fails,
    // and the enclave stays Sealed with the service's reason.
    set_policy(&custody, &key_id, &random_bytes(48)).await;
    let refusal = match kms::unseal(&record, &service, &ours).await {
        Err(e @ CustodyError::CustodyService(_)) => e.to_string(),
        other => panic!("unseal after the policy change: {:?}", other.map(|_| ())),
    };
    assert!(refusal.contains("AccessDeniedException"), "{refusal}");
    assert!(refusal.contains("PCR0"), "{refusal}");
    let mut state = CustodyState::at_start(Ok(Some(&record)));
    state
        .custody_service_failed(refusal.clone())
        .expect("sealed, awaiting the custody service");
    let sealed = state.sealed_response().expect("still sealed");
    assert_eq!(sealed.status, 503);
    assert!(sealed.message.contains(&refusal), "{}", sealed.message);
    assert!(!state.is_ready());
}

/// A pinned CA that is not the custody instance's: the TLS handshake fails
/// and nothing is sent (genesis reports the TLS failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custody_endpoint_under_another_ca_is_refused() {
    let custody = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: custody.shared_enclave(),
        targets: Default::default(),
    });
    let _ = custody_ca(&custody, &connector).await;
    let other = Service::start().await;
    let other_connector = ToCustody {
        enclave: other.shared_enclave(),
        targets: Default::default(),
    };
    let other_ca = custody_ca(&other, &other_connector).await;
    let service = client(&custody, connector, &other_ca);
    let nsm = WorkloadNsm {
        pki: Arc::clone(&custody.pki),
        pcrs: BTreeMap::from([(0, random_bytes(48))]),
    };
    let request = KmsGenesis {
        key_arn: keyward_test_support::key_arn(&uuid::Uuid::new_v4().to_string()),
        endpoint: ENDPOINT.to_string(),
        operator_key: None,
    };
    match kms::genesis(&request, &service as &dyn KeyService, &nsm, 0).await {
        Err(CustodyError::CustodyService(reason)) => assert!(reason.contains("TLS"), "{reason}"),
        other => panic!("expected a TLS refusal, got {:?}", other.map(|_| ())),
    }
}

/// An enclave of ours (mock mode, our PCR0) over `store`, attesting under
/// the custody instance's trusted mock root.
fn enclave_of_ours(custody: &Service, pcr0: &[u8]) -> Enclave {
    let config = keyward_test_support::enclave::mock_config(keyward_test_support::enclave::mock_args(), None, None);
    Enclave::new(
        config,
        Box::new(WorkloadNsm {
            pki: Arc::clone(&custody.pki),
            pcrs: BTreeMap::from([(0, pcr0.to_vec())]),
        }),
        Arc::new(SystemClock),
    )
}

/// The same through the enclave's start-up path: genesis makes it Ready
/// and writes the boot record; a restarted enclave over the same store
/// starts Sealed and becomes Ready by the custody key service alone; after
/// the custody key's policy changed, a restarted enclave stays Sealed and
/// its 503 message gives the service's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_is_sealed_until_the_custody_service_releases_its_root() {
    let custody = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: custody.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&custody, &connector).await;
    let service = client(&custody, Arc::clone(&connector), &ca_pem);
    let key_id = create_key(&custody.client(), "root custody").await;
    let pcr0 = random_bytes(48);
    set_policy(&custody, &key_id, &pcr0).await;
    let store = keyward_enclave::store::MemoryStore::new();

    let first = enclave_of_ours(&custody, &pcr0);
    assert!(first.keyring(&*store).await.is_err(), "a new enclave starts sealed");
    let request = KmsGenesis {
        key_arn: keyward_test_support::key_arn(&key_id),
        endpoint: ENDPOINT.to_string(),
        operator_key: None,
    };
    let answer = first
        .init_custody_kms_with(&*store, &request, &service)
        .await
        .expect("genesis");
    assert!(first.is_ready());
    assert!(answer.packages.is_empty());
    let committed = audit_key(&first, &store).await;
    drop(first);

    // Restart: Sealed until the custody key service releases the same root.
    let second = enclave_of_ours(&custody, &pcr0);
    assert!(
        second.keyring(&*store).await.is_err(),
        "a restarted enclave starts sealed"
    );
    assert!(second.unseal_by_key_service(&*store, &service).await.expect("unseal"));
    assert!(second.is_ready());
    assert_eq!(
        audit_key(&second, &store).await,
        committed,
        "another root after the restart"
    );
    drop(second);

    // The custody key now releases to another image only: Sealed, with the reason.
    set_policy(&custody, &key_id, &random_bytes(48)).await;
    let third = enclave_of_ours(&custody, &pcr0);
    assert!(second_attempt_fails(&third, &store, &service).await);
    match third.keyring(&*store).await {
        Err(keyward_enclave::bootstrap::BootError::Sealed(message)) => {
            assert!(message.contains("AccessDeniedException"), "{message}");
            assert!(message.contains("PCR0"), "{message}");
        }
        Err(other) => panic!("expected Sealed, got {other}"),
        Ok(_) => panic!("the enclave became ready after the custody key's policy changed"),
    }
    assert!(!third.is_ready());
}

/// The audit signing key a Ready enclave's root derives.
async fn audit_key(enclave: &Enclave, store: &Arc<keyward_enclave::store::MemoryStore>) -> Vec<u8> {
    let keyring = enclave.keyring(&**store).await.expect("ready");
    keyring
        .hierarchy
        .audit_signing_key()
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

async fn second_attempt_fails(
    enclave: &Enclave,
    store: &Arc<keyward_enclave::store::MemoryStore>,
    service: &KmsClient,
) -> bool {
    matches!(
        enclave.unseal_by_key_service(&**store, service).await,
        Err(keyward_enclave::bootstrap::BootError::Custody(
            CustodyError::CustodyService(_)
        ))
    )
}

/// The enclave's side of an outbound stream: the host asked over the link
/// (`OutboundOpen`) hands a stream with the outbound header to the
/// enclave's client-stream entry point, which gives it to the waiting
/// request instead of serving TLS on it; bytes then pass both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_stream_handed_over_by_the_host_reaches_the_request_that_asked() {
    use tokio::io::AsyncReadExt;

    let node = Service::start().await;
    let enclave = node.shared_enclave();
    let (tx, mut host) = tokio::sync::mpsc::channel(4);
    enclave.outbound.attach(tx);
    let opening = {
        let enclave = Arc::clone(&enclave);
        tokio::spawn(async move { enclave.outbound.open("peer.example:7800").await })
    };
    let frame = tokio::time::timeout(Duration::from_secs(10), host.recv())
        .await
        .expect("asked in time")
        .expect("a frame");
    let id = match keyward_wire::decode(&frame[4..]) {
        Ok(keyward_wire::Frame::OutboundOpen { id, target }) => {
            assert_eq!(target, "peer.example:7800");
            id
        }
        other => panic!("expected OutboundOpen, got {other:?}"),
    };
    let (mut near, far) = tokio::io::duplex(1024);
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .expect("permit");
    tokio::spawn(keyward_enclave::server::serve_client_stream(
        far,
        Arc::clone(&enclave),
        permit,
    ));
    near.write_all(&keyward_wire::encode_outbound_header(id))
        .await
        .expect("header");
    near.write_all(b"server hello").await.expect("write");
    let mut stream = tokio::time::timeout(Duration::from_secs(10), opening)
        .await
        .expect("handed over in time")
        .expect("joins")
        .expect("a stream");
    let mut got = [0u8; 12];
    stream.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"server hello");
    stream.write_all(b"client hello").await.expect("write");
    near.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"client hello");
}
