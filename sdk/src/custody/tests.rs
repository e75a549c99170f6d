//! The custody ceremony in process: the enclave's genesis and unseal session
//! (keyward-enclave, mock NSM and mock attestation PKI) against this
//! module's custodian side, and each refusal at this level.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use keyward_attestation::mock::{MockAttester, MockPki, default_pcrs};
use keyward_enclave::custody::CustodyError as EnclaveError;
use keyward_enclave::custody::genesis::{GenesisOutcome, ShamirGenesis, genesis};
use keyward_enclave::custody::session::{UnsealProgress, UnsealSession};
use keyward_enclave::nsm::{MockAttestingNsm, MockNsm};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A sealed mock enclave: an attesting mock NSM (its own mock root) and
/// the trust anchor a custodian pins for it.
struct MockEnclave {
    nsm: MockAttestingNsm,
}

impl MockEnclave {
    fn new() -> MockEnclave {
        MockEnclave::with_attester(MockAttester::new(MockPki::ephemeral().expect("mock PKI")))
    }

    fn with_attester(attester: MockAttester) -> MockEnclave {
        MockEnclave {
            nsm: MockAttestingNsm::new(attester),
        }
    }

    fn anchor(&self) -> TrustAnchor {
        TrustAnchor::from_der(self.nsm.attester().pki().root_der()).expect("anchor")
    }

    /// The document of `session` for the custodian's `nonce`, as
    /// `kmsctl unseal` would fetch it.
    fn document(&self, session: &UnsealSession, nonce: &[u8]) -> Vec<u8> {
        session.attestation_document(&self.nsm, nonce).expect("document")
    }
}

fn expected_pcrs() -> BTreeMap<u8, Vec<u8>> {
    BTreeMap::from([(0, default_pcrs()[&0].clone())])
}

/// Genesis of an M-of-N custody with freshly generated custodian and
/// operator keys, the packages passed through their PEM files.
struct Ceremony {
    custodians: Vec<CustodyKey>,
    operator: CustodyKey,
    outcome: GenesisOutcome,
    packages: Vec<SharePackage>,
}

impl Ceremony {
    fn genesis(threshold: usize, n: usize) -> Ceremony {
        let custodians: Vec<CustodyKey> = (0..n).map(|_| CustodyKey::generate()).collect();
        let operator = CustodyKey::generate();
        let request = ShamirGenesis {
            threshold,
            custodians: custodians.iter().map(CustodyKey::public_key).collect(),
            operator_key: Some(operator.public_key()),
        };
        let outcome = genesis(&request, &MockNsm, 0).expect("genesis");
        let packages = outcome
            .packages
            .iter()
            .map(|p| share_package_from_pem(&share_package_pem(p).expect("PEM")).expect("reads"))
            .collect();
        Ceremony {
            custodians,
            operator,
            outcome,
            packages,
        }
    }

    /// Custodian `index` (1-based) opens its package.
    fn share(&self, index: usize) -> ShareSecret {
        self.custodians[index - 1]
            .open_share(&self.packages[index - 1])
            .expect("opens")
    }

    /// Custodian `index` verifies the session's document and seals its share.
    fn seal(&self, index: usize, enclave: &MockEnclave, session: &UnsealSession) -> Result<Vec<u8>, CustodyError> {
        let nonce = rand::random::<[u8; 32]>();
        let document = enclave.document(session, &nonce);
        let message = seal_share_for(
            &document,
            enclave.anchor(),
            &nonce,
            &expected_pcrs(),
            &self.share(index),
        )?;
        Ok(message.to_bytes()?)
    }
}

#[test]
fn two_of_three_ceremony_unseals_with_shares_one_and_three() -> TestResult {
    let ceremony = Ceremony::genesis(2, 3);
    let enclave = MockEnclave::new();
    let mut session = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;

    let progress = session.accept(&ceremony.seal(1, &enclave, &session)?)?;
    assert!(matches!(
        progress,
        UnsealProgress::NeedMore {
            received: 1,
            threshold: 2
        }
    ));
    let UnsealProgress::Unsealed(root) = session.accept(&ceremony.seal(3, &enclave, &session)?)? else {
        panic!("two shares of a 2-of-3 custody did not unseal");
    };
    // The rebuilt root is the genesis root: it makes the boot record's
    // commitment, which every package carried to its custodian.
    ceremony.outcome.record.commitment.verify(&root)?;
    assert!(root == ceremony.outcome.root);
    for package in &ceremony.packages {
        assert_eq!(package.root_commitment, ceremony.outcome.record.commitment.as_bytes());
        assert_eq!(package.deployment_id, ceremony.outcome.record.deployment_id);
    }

    // The operator opens the first credential with its own key.
    let grant = ceremony.outcome.operator.as_ref().expect("operator grant");
    let pem = operator_credential_pem(&grant.package)?;
    let package = operator_credential_from_pem(&pem)?;
    let (access_key_id, secret) = ceremony.operator.open_operator_credential(&package)?;
    assert_eq!(access_key_id, grant.access_key_id);
    assert_eq!(secret.expose(), grant.secret_access_key.as_str());
    assert!(!pem.contains(grant.secret_access_key.as_str()));
    assert!(ceremony.custodians[0].open_operator_credential(&package).is_err());
    Ok(())
}

#[test]
fn m_minus_one_shares_leave_it_sealed() -> TestResult {
    let ceremony = Ceremony::genesis(3, 4);
    let enclave = MockEnclave::new();
    let mut session = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;
    for index in [4, 2] {
        assert!(matches!(
            session.accept(&ceremony.seal(index, &enclave, &session)?)?,
            UnsealProgress::NeedMore { threshold: 3, .. }
        ));
    }
    assert_eq!(session.progress(), (2, 3));
    Ok(())
}

#[test]
fn a_wrong_share_is_refused() -> TestResult {
    let ceremony = Ceremony::genesis(2, 3);
    let enclave = MockEnclave::new();
    // A custodian cannot open another custodian's package.
    assert!(matches!(
        ceremony.custodians[0].open_share(&ceremony.packages[1]),
        Err(CustodyError::Format(FormatError::Undecryptable(_)))
    ));
    // A share that is not the one genesis made for custodian 2 (corrupt,
    // or a custodian's mistake) is refused by the enclave, by index.
    let mut session = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;
    let share = ceremony.share(2);
    let mut value = share.value().to_vec();
    value[7] ^= 0x40;
    let wrong = ShareSecret::new(*share.deployment_id(), 2, value)?;
    let nonce = [9u8; 16];
    let message = seal_share_for(
        &enclave.document(&session, &nonce),
        enclave.anchor(),
        &nonce,
        &expected_pcrs(),
        &wrong,
    )?;
    let err = session.accept(&message.to_bytes()?).expect_err("refused");
    assert!(matches!(err, EnclaveError::WrongShare { index: 2 }), "{err}");
    assert!(err.to_string().contains("custodian 2's share does not match"), "{err}");
    assert_eq!(session.progress(), (0, 2));
    Ok(())
}

#[test]
fn a_share_for_another_deployment_is_refused_before_sending() -> TestResult {
    let ours = Ceremony::genesis(2, 3);
    let theirs = Ceremony::genesis(2, 3);
    let enclave = MockEnclave::new();
    let session = UnsealSession::start(&ours.outcome.record, &enclave.nsm)?;
    let nonce = [1u8; 32];
    let err = seal_share_for(
        &enclave.document(&session, &nonce),
        enclave.anchor(),
        &nonce,
        &expected_pcrs(),
        &theirs.share(1),
    )
    .expect_err("refused");
    assert!(matches!(err, CustodyError::WrongDeployment { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&deployment_hex(&theirs.outcome.record.deployment_id)),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_replayed_unseal_message_is_refused() -> TestResult {
    let ceremony = Ceremony::genesis(2, 3);
    let enclave = MockEnclave::new();
    let mut first = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;
    let message = ceremony.seal(1, &enclave, &first)?;
    first.accept(&message)?;
    // The enclave restarts (a new session): the recorded message is refused.
    let mut second = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;
    let err = second.accept(&message).expect_err("refused");
    assert!(matches!(err, EnclaveError::WrongSession), "{err}");
    assert_eq!(second.progress(), (0, 2));
    // A recorded document does not pass for a fresh one either: it echoes
    // another nonce, and ages out after five minutes.
    let old_nonce = [2u8; 32];
    let old_document = enclave.document(&first, &old_nonce);
    let share = ceremony.share(2);
    let replayed = seal_share_for(&old_document, enclave.anchor(), &[3u8; 32], &expected_pcrs(), &share);
    assert!(matches!(replayed, Err(CustodyError::Attestation(_))), "{replayed:?}");
    let stale = seal_share_for_at(
        &old_document,
        enclave.anchor(),
        &old_nonce,
        &expected_pcrs(),
        &share,
        SystemTime::now() + Duration::from_secs(6 * 60),
    );
    assert!(matches!(stale, Err(CustodyError::Attestation(_))), "{stale:?}");
    Ok(())
}

#[test]
fn a_document_with_the_wrong_pcrs_is_refused() -> TestResult {
    let ceremony = Ceremony::genesis(1, 1);
    let attester = MockAttester::new(MockPki::ephemeral()?).with_pcr(0, vec![0x11; 48])?;
    let impostor = MockEnclave::with_attester(attester);
    let session = UnsealSession::start(&ceremony.outcome.record, &impostor.nsm)?;
    let err = ceremony.seal(1, &impostor, &session).expect_err("refused");
    assert!(matches!(err, CustodyError::Attestation(_)), "{err}");
    // Nor does a document under another anchor pass.
    let enclave = MockEnclave::new();
    let session = UnsealSession::start(&ceremony.outcome.record, &enclave.nsm)?;
    let nonce = [4u8; 32];
    let foreign = seal_share_for(
        &enclave.document(&session, &nonce),
        MockEnclave::new().anchor(),
        &nonce,
        &expected_pcrs(),
        &ceremony.share(1),
    );
    assert!(matches!(foreign, Err(CustodyError::Attestation(_))), "{foreign:?}");
    Ok(())
}

#[test]
fn a_document_that_binds_no_unseal_session_is_refused() -> TestResult {
    let ceremony = Ceremony::genesis(1, 1);
    let enclave = MockEnclave::new();
    let nonce = [5u8; 32];
    let share = ceremony.share(1);
    let attest = |user_data: &[u8], public_key: &[u8]| {
        keyward_enclave::nsm::Nsm::attest(&enclave.nsm, Some(user_data), Some(&nonce), Some(public_key))
            .expect("document")
    };
    let session_key = CustodyKey::generate().public_key();
    // The audit-key binding, not an unseal binding.
    let audit = attest(b"keyward/v1/audit-key-sha256:0123", session_key.as_bytes());
    let other_key = CustodyKey::generate().public_key();
    // An unseal binding of another key than the document's.
    let mismatched = attest(
        &keyward_custody::unseal::session_binding(share.deployment_id(), &other_key),
        session_key.as_bytes(),
    );
    for document in [audit, mismatched] {
        let err = seal_share_for(&document, enclave.anchor(), &nonce, &expected_pcrs(), &share).expect_err("refused");
        assert!(matches!(err, CustodyError::Unbound(_)), "{err}");
    }
    Ok(())
}

#[test]
fn key_files_round_trip_with_private_keys_0600_and_never_overwritten() -> TestResult {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let key = CustodyKey::generate();
    let private = dir.path().join("alice.key");
    let public = dir.path().join("alice.pub");
    key.write_private_pem(&private)?;
    write_public_pem(&key.public_key(), &public)?;
    assert_eq!(std::fs::metadata(&private)?.permissions().mode() & 0o777, 0o600);
    assert!(matches!(
        CustodyKey::generate().write_private_pem(&private),
        Err(CustodyError::Exists(_))
    ));
    let read = CustodyKey::read_private_pem(&private)?;
    assert_eq!(read.public_key(), key.public_key());
    assert_eq!(read_public_pem(&public)?, key.public_key());
    // RFC 8410 shapes: what openssl writes for X25519.
    let text = std::fs::read_to_string(&public)?;
    assert!(
        text.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VuAyEA"),
        "{text}"
    );
    assert!(
        key.private_pem()?
            .starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEI")
    );
    // The private key never shows in Debug.
    let pem = key.private_pem()?;
    let body: String = pem.lines().nth(1).unwrap_or_default().chars().skip(24).collect();
    assert!(!format!("{key:?}").contains(&body));
    // Wrong kinds of file are refused with the path.
    assert!(matches!(
        CustodyKey::read_private_pem(&public),
        Err(CustodyError::File { .. })
    ));
    assert!(matches!(read_public_pem(&private), Err(CustodyError::File { .. })));
    let missing = CustodyKey::read_private_pem(&dir.path().join("missing.key")).expect_err("missing");
    assert!(missing.to_string().contains("missing.key"), "{missing}");
    let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
    assert!(public_key_from_pem(p256).is_err());
    Ok(())
}

#[test]
fn share_package_files_refuse_other_kinds() {
    let public = public_key_pem(&CustodyKey::generate().public_key()).expect("PEM");
    assert!(share_package_from_pem(&public).is_err());
    assert!(share_package_from_pem("not PEM").is_err());
    assert!(
        operator_credential_from_pem(
            "-----BEGIN KEYWARD SHARE PACKAGE-----\noA==\n-----END KEYWARD SHARE PACKAGE-----\n"
        )
        .is_err()
    );
}

#[test]
fn openssl_x25519_key_files_are_read() -> TestResult {
    // Made with `openssl genpkey -algorithm X25519` and `openssl pkey
    // -pubout` (a test key, public in the repository).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/custody");
    let key = CustodyKey::read_private_pem(&dir.join("openssl-x25519.key"))?;
    let public = read_public_pem(&dir.join("openssl-x25519.pub"))?;
    assert_eq!(key.public_key(), public);
    assert_eq!(
        hex::encode(&public.as_bytes()[..4]),
        "1a7d5367",
        "openssl's public key for this private key"
    );
    Ok(())
}
