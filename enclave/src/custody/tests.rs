//! Unseal sessions and the state machine, through their public interfaces.

use keyward_custody::share::{SharePackage, ShareSecret};
use keyward_custody::suite::PrivateKey;
use keyward_custody::unseal::{UnsealMessage, parse_session_binding};

use super::genesis::{GenesisOutcome, ShamirGenesis, genesis};
use super::record::BootRecord;
use super::session::{UnsealProgress, UnsealSession};
use super::state::{CustodyState, HEALTH_READY, HEALTH_SEALED, SEALED_ERROR_TYPE, SEALED_STATUS, SealedReason};
use super::*;
use crate::attestation::mock::{MockAttester, MockPki};
use crate::nsm::{MockAttestingNsm, MockNsm};

struct Deployment {
    custodians: Vec<PrivateKey>,
    outcome: GenesisOutcome,
}

impl Deployment {
    fn new(threshold: usize, n: usize) -> Deployment {
        let custodians: Vec<PrivateKey> = (0..n).map(|_| PrivateKey::generate()).collect();
        let request = ShamirGenesis {
            threshold,
            custodians: custodians.iter().map(PrivateKey::public_key).collect(),
            operator_key: None,
        };
        let outcome = genesis(&request, &MockNsm, 0).expect("genesis");
        Deployment { custodians, outcome }
    }

    fn record(&self) -> &BootRecord {
        &self.outcome.record
    }

    /// Custodian `index` (1-based) opens its package.
    fn share(&self, index: usize) -> ShareSecret {
        self.outcome.packages[index - 1]
            .open(&self.custodians[index - 1])
            .expect("opens")
    }

    fn message(&self, index: usize, session: &UnsealSession) -> Vec<u8> {
        UnsealMessage::seal(&self.share(index), &session.public_key())
            .expect("seals")
            .to_bytes()
            .expect("encodes")
    }
}

fn unsealed(progress: UnsealProgress) -> crate::secret::Key256 {
    match progress {
        UnsealProgress::Unsealed(root) => root,
        other => panic!("still sealed: {other:?}"),
    }
}

#[test]
fn two_of_three_unseal_with_shares_one_and_three() {
    let d = Deployment::new(2, 3);
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    assert!(matches!(
        session.accept(&d.message(1, &session)).expect("share 1"),
        UnsealProgress::NeedMore {
            received: 1,
            threshold: 2
        }
    ));
    let root = unsealed(session.accept(&d.message(3, &session)).expect("share 3"));
    assert!(root == d.outcome.root);
    d.record().commitment.verify(&root).expect("commitment");
    // Finished: nothing more is taken.
    assert!(matches!(
        session.accept(&d.message(2, &session)),
        Err(CustodyError::SessionFinished)
    ));
}

#[test]
fn the_claim_merges_the_highest_epochs_of_the_custodians_that_unsealed() {
    use keyward_custody::checkpoint::Checkpoint;
    use keyward_custody::unseal::Freshness;
    let d = Deployment::new(2, 3);
    let deployment = d.record().deployment_id;
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let stating = |index: usize, session: &UnsealSession, checkpoint: Checkpoint, accept: bool| {
        let freshness = Freshness {
            checkpoint: Some(checkpoint),
            accept_store_rollback: accept,
        };
        UnsealMessage::seal_with(&d.share(index), &session.public_key(), &freshness)
            .expect("seals")
            .to_bytes()
            .expect("encodes")
    };
    let a = Checkpoint::new(deployment, 9, [("111122223333".to_owned(), 2)].into());
    let b = Checkpoint::new(
        deployment,
        4,
        [("111122223333".to_owned(), 5), ("444455556666".to_owned(), 1)].into(),
    );
    assert_eq!(session.claim(), session::Claim::default(), "nothing before the root");
    session.accept(&stating(1, &session, a, false)).expect("share 1");
    unsealed(session.accept(&stating(3, &session, b, false)).expect("share 3"));
    let claim = session.claim();
    let seen = claim.seen.expect("a merged checkpoint");
    assert_eq!(
        (seen.global, seen.epoch("111122223333"), seen.epoch("444455556666")),
        (9, 5, 1)
    );
    assert_eq!(claim.custodians, vec![1, 3]);
    assert!(!claim.accept_store_rollback);

    // One custodian's override is enough; format-1 messages state nothing.
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let v1 = UnsealMessage::seal_format1(&d.share(2), &session.public_key())
        .expect("seals")
        .to_bytes()
        .expect("encodes");
    session.accept(&v1).expect("share 2");
    let c = Checkpoint::new(deployment, 1, Default::default());
    unsealed(session.accept(&stating(1, &session, c, true)).expect("share 1"));
    let claim = session.claim();
    assert!(claim.accept_store_rollback);
    assert_eq!(claim.custodians, vec![1]);
}

#[test]
fn one_of_one_unseals_with_its_share() {
    let d = Deployment::new(1, 1);
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let root = unsealed(session.accept(&d.message(1, &session)).expect("share"));
    assert!(root == d.outcome.root);
}

#[test]
fn m_minus_one_shares_stay_sealed() {
    let d = Deployment::new(3, 5);
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    for index in [2, 5] {
        assert!(matches!(
            session.accept(&d.message(index, &session)).expect("share"),
            UnsealProgress::NeedMore { .. }
        ));
    }
    assert_eq!(session.progress(), (2, 3));
    assert_eq!(session.received().collect::<Vec<_>>(), vec![2, 5]);
}

#[test]
fn a_wrong_share_is_refused_by_index_and_not_counted() {
    let d = Deployment::new(2, 3);
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    // Custodian 2's index with a share value that is not theirs.
    let mut value = d.share(2).value().to_vec();
    value[5] ^= 1;
    let forged = ShareSecret::new(d.record().deployment_id, 2, value).expect("share");
    let message = UnsealMessage::seal(&forged, &session.public_key()).expect("seals");
    let err = session
        .accept(&message.to_bytes().expect("encodes"))
        .expect_err("refused");
    assert!(matches!(err, CustodyError::WrongShare { index: 2 }), "{err}");
    assert_eq!(session.progress(), (0, 2));
    // The right shares still unseal afterwards.
    session.accept(&d.message(2, &session)).expect("share 2");
    let root = unsealed(session.accept(&d.message(1, &session)).expect("share 1"));
    assert!(root == d.outcome.root);
}

#[test]
fn a_share_of_another_deployment_is_refused() {
    let ours = Deployment::new(2, 3);
    let theirs = Deployment::new(2, 3);
    let mut session = UnsealSession::start(ours.record(), &MockNsm).expect("session");
    // Sealed honestly to our session: the header names their deployment.
    let message = theirs.message(1, &session);
    let err = session.accept(&message).expect_err("refused");
    assert!(
        matches!(
            err,
            CustodyError::WrongDeployment {
                what: "unseal message",
                ..
            }
        ),
        "{err}"
    );
    // A header rewritten to ours no longer decrypts (the header is the AAD)…
    let mut relabelled = UnsealMessage::from_bytes(&message).expect("decodes");
    relabelled.deployment_id = ours.record().deployment_id;
    assert!(matches!(
        session.accept(&relabelled.to_bytes().expect("encodes")),
        Err(CustodyError::Undecryptable)
    ));
    // …and their share in a message made for our deployment is named as such.
    let share = theirs.share(1);
    let value = share.value().to_vec();
    let disguised = ShareSecret::new(*share.deployment_id(), 1, value).expect("share");
    let mut message = UnsealMessage::seal_format1(&disguised, &session.public_key()).expect("seals");
    message.deployment_id = ours.record().deployment_id;
    // Re-seal with our deployment in the header but their share inside.
    let inner = keyward_custody::suite::seal(
        &session.public_key(),
        &info(&message),
        &aad(&message),
        &encode_share(&disguised),
        "test",
    )
    .expect("seals");
    message.enc = inner.enc;
    message.ciphertext = inner.ciphertext;
    let err = session
        .accept(&message.to_bytes().expect("encodes"))
        .expect_err("refused");
    assert!(
        matches!(err, CustodyError::WrongDeployment { what: "share", .. }),
        "{err}"
    );
    assert_eq!(session.progress(), (0, 2));
}

// The format's own binding, rebuilt here to forge a message whose header
// and share disagree (what a buggy or hostile client could send).
fn info(message: &UnsealMessage) -> Vec<u8> {
    bind(
        keyward_custody::unseal::UNSEAL_MESSAGE_INFO,
        &[&message.deployment_id, &message.session_id],
    )
}

fn aad(message: &UnsealMessage) -> Vec<u8> {
    bind(
        keyward_custody::unseal::UNSEAL_MESSAGE_AAD,
        &[&message.deployment_id, &message.session_id, &[message.custodian_index]],
    )
}

fn bind(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = label.to_vec();
    for part in parts {
        out.extend_from_slice(&u32::try_from(part.len()).expect("small").to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn encode_share(share: &ShareSecret) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        format: u8,
        #[serde(with = "serde_bytes")]
        deployment_id: &'a [u8],
        index: u8,
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    }
    serde_cbor::to_vec(&Wire {
        format: 1,
        deployment_id: share.deployment_id(),
        index: share.index(),
        value: share.value(),
    })
    .expect("encodes")
}

#[test]
fn a_replayed_message_is_refused() {
    let d = Deployment::new(2, 3);
    let mut first = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let message = d.message(1, &first);
    first.accept(&message).expect("share 1");
    // Again in the same session.
    assert!(matches!(
        first.accept(&message),
        Err(CustodyError::DuplicateShare { index: 1 })
    ));
    // Into a later session (e.g. after a restart): refused as a replay.
    let mut second = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let err = second.accept(&message).expect_err("refused");
    assert!(matches!(err, CustodyError::WrongSession), "{err}");
    // With the header rewritten to the new session it does not decrypt.
    let mut redirected = UnsealMessage::from_bytes(&message).expect("decodes");
    redirected.session_id = *second.id();
    assert!(matches!(
        second.accept(&redirected.to_bytes().expect("encodes")),
        Err(CustodyError::Undecryptable)
    ));
    assert_eq!(second.progress(), (0, 2));
}

#[test]
fn corrupt_unknown_and_malformed_messages_are_refused() {
    let d = Deployment::new(2, 3);
    let mut session = UnsealSession::start(d.record(), &MockNsm).expect("session");
    let mut message = UnsealMessage::from_bytes(&d.message(1, &session)).expect("decodes");
    let last = message.ciphertext.len() - 1;
    message.ciphertext[last] ^= 1;
    assert!(matches!(
        session.accept(&message.to_bytes().expect("encodes")),
        Err(CustodyError::Undecryptable)
    ));
    let mut unknown = UnsealMessage::from_bytes(&d.message(1, &session)).expect("decodes");
    unknown.custodian_index = 4;
    assert!(matches!(
        session.accept(&unknown.to_bytes().expect("encodes")),
        Err(CustodyError::UnknownCustodian {
            index: 4,
            custodians: 3
        })
    ));
    unknown.custodian_index = 0;
    assert!(matches!(
        session.accept(&unknown.to_bytes().expect("encodes")),
        Err(CustodyError::UnknownCustodian { index: 0, .. })
    ));
    assert!(matches!(session.accept(b"not cbor"), Err(CustodyError::Format(_))));
    assert_eq!(session.progress(), (0, 2));
}

#[test]
fn a_forged_boot_record_never_yields_a_root() {
    // A host that keeps the real deployment id and commitment but names its
    // own custodians, with digests of its own shares: they pass the
    // digests, and the root they rebuild is refused by the commitment.
    let real = Deployment::new(2, 3);
    let host = Deployment::new(2, 3);
    let deployment_id = real.record().deployment_id;
    let relabel = |index: usize| {
        let share = host.share(index);
        ShareSecret::new(deployment_id, share.index(), share.value().to_vec()).expect("share")
    };
    let mut forged = host.record().clone();
    forged.deployment_id = deployment_id;
    forged.commitment = real.record().commitment.clone();
    if let record::CustodyMethod::Shamir { custodians, .. } = &mut forged.custody {
        for (i, custodian) in custodians.iter_mut().enumerate() {
            custodian.share_digest = relabel(i + 1).digest();
        }
    }
    let mut session = UnsealSession::start(&forged, &MockNsm).expect("session");
    let mut seal = |index: usize| {
        let message = UnsealMessage::seal(&relabel(index), &session.public_key()).expect("seals");
        session.accept(&message.to_bytes().expect("encodes"))
    };
    assert!(matches!(seal(1), Ok(UnsealProgress::NeedMore { .. })));
    assert!(matches!(seal(2), Err(CustodyError::CommitmentMismatch)));
    // The spent shares are gone: the session is back at 0 of 2.
    assert_eq!(session.progress(), (0, 2));
}

#[test]
fn the_session_document_binds_the_session_key() {
    let d = Deployment::new(1, 1);
    let nsm = MockAttestingNsm::new(MockAttester::new(MockPki::ephemeral().expect("pki")));
    let session = UnsealSession::start(d.record(), &nsm).expect("session");
    let document = session.attestation_document(&nsm, b"fresh nonce").expect("document");
    let cose = crate::attestation::document::parse_cose(&document).expect("COSE");
    let parsed = crate::attestation::document::parse_payload(&cose.payload).expect("payload");
    let user_data = parsed.user_data.as_deref().expect("user_data");
    let (deployment, session_id) = parse_session_binding(user_data).expect("binding");
    assert_eq!(deployment, d.record().deployment_id);
    assert_eq!(&session_id, session.id());
    assert_eq!(
        parsed.public_key.as_deref(),
        Some(session.public_key().as_bytes().as_slice())
    );
    // Without an attesting NSM there is no document, and no panic.
    assert!(matches!(
        session.attestation_document(&MockNsm, b"n"),
        Err(CustodyError::Nsm(_))
    ));
}

#[test]
fn sessions_refuse_kms_custody_records() {
    let mut record = Deployment::new(1, 1).record().clone();
    record.custody = record::CustodyMethod::Kms {
        key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        endpoint: "https://kms.example".into(),
        ciphertext_blob: vec![1],
    };
    assert!(matches!(
        UnsealSession::start(&record, &MockNsm),
        Err(CustodyError::CustodyMethod { found: "kms", .. })
    ));
}

#[test]
fn state_machine_genesis_unseal_and_refusals() {
    // No record: sealed, awaiting genesis, 503 with how to init.
    let mut state = CustodyState::at_start(Ok(None));
    assert_eq!(state.health(), HEALTH_SEALED);
    let response = state.sealed_response().expect("sealed");
    assert_eq!(
        (response.status, response.error_type),
        (SEALED_STATUS, SEALED_ERROR_TYPE)
    );
    assert!(response.message.contains("kmsctl init"), "{}", response.message);
    let d = Deployment::new(2, 3);
    assert!(state.unsealed(d.record()).is_err());
    state.genesis_complete(d.record()).expect("genesis");
    assert!(state.is_ready());
    assert_eq!(state.health(), HEALTH_READY);
    assert!(state.sealed_response().is_none());
    assert!(state.genesis_complete(d.record()).is_err());

    // A restart: sealed, awaiting shares; a refusal shows; shares count.
    let mut state = CustodyState::at_start(Ok(Some(d.record())));
    let message = state.sealed_response().expect("sealed").message;
    assert!(
        message.contains("0 of 2") && message.contains("kmsctl unseal"),
        "{message}"
    );
    assert!(state.genesis_complete(d.record()).is_err(), "never re-created");
    state.refused(&CustodyError::WrongShare { index: 2 }, 0);
    let message = state.sealed_response().expect("sealed").message;
    assert!(message.contains("custodian 2's share does not match"), "{message}");
    state.share_accepted(1, 2).expect("share");
    let message = state.sealed_response().expect("sealed").message;
    assert!(
        message.contains("1 of 2") && !message.contains("Last refusal"),
        "{message}"
    );
    // Another deployment's unseal does not make this one Ready.
    let other = Deployment::new(1, 1);
    assert!(state.unsealed(other.record()).is_err());
    assert!(!state.is_ready());
    state.unsealed(d.record()).expect("unsealed");
    assert!(state.is_ready());
    assert!(state.share_accepted(2, 2).is_err());

    // An unreadable record: sealed, saying so.
    let broken = CustodyState::at_start(Err(&CustodyError::Record("format version 9".into())));
    assert!(matches!(
        &broken,
        CustodyState::Sealed {
            reason: SealedReason::InvalidBootRecord(_),
            ..
        }
    ));
    assert!(
        broken
            .sealed_response()
            .expect("sealed")
            .message
            .contains("format version 9")
    );

    // KMS custody: a failing custody service is reported.
    let mut kms_record = d.record().clone();
    kms_record.custody = record::CustodyMethod::Kms {
        key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        endpoint: "https://kms.example".into(),
        ciphertext_blob: vec![1],
    };
    let mut kms = CustodyState::at_start(Ok(Some(&kms_record)));
    kms.custody_service_failed("AccessDeniedException: PCR0 does not match the key policy".into())
        .expect("recorded");
    assert!(kms.sealed_response().expect("sealed").message.contains("PCR0"));
    kms.unsealed(&kms_record).expect("unsealed");
    assert!(kms.is_ready());
}

#[test]
fn share_packages_round_trip_through_bytes() {
    let d = Deployment::new(2, 2);
    let bytes = d.outcome.packages[0].to_bytes().expect("encodes");
    let package = SharePackage::from_bytes(&bytes).expect("decodes");
    assert_eq!(
        package.open(&d.custodians[0]).expect("opens").digest(),
        d.share(1).digest()
    );
}
