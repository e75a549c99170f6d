//! Cluster join, both sides, with mock NSMs under one mock root.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::attestation::mock::{MockPki, attest_with, default_pcrs};
use crate::attestation::verify::TrustAnchor;
use crate::custody::genesis::{GenesisOutcome, ShamirGenesis, genesis};
use crate::custody::record::RootCommitment;
use crate::nsm::{MockNsm, NsmError};

/// A node's NSM: documents under `pki` with these PCRs.
struct Node {
    pki: Arc<MockPki>,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl Nsm for Node {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        MockNsm.fill_random(out)
    }

    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0) * 1000;
        Ok(attest_with(
            &self.pki, "i-node", &self.pcrs, user_data, nonce, public_key, now,
        )?)
    }
}

struct Cluster {
    pki: Arc<MockPki>,
    verifier: Verifier,
    outcome: GenesisOutcome,
}

impl Cluster {
    fn new() -> Cluster {
        let pki = Arc::new(MockPki::ephemeral().expect("pki"));
        let verifier = Verifier::new(TrustAnchor::from_der(pki.root_der()).expect("anchor"));
        let request = ShamirGenesis {
            threshold: 1,
            custodians: vec![PrivateKey::generate().public_key()],
            operator_key: None,
        };
        let outcome = genesis(&request, &MockNsm, 0).expect("genesis");
        Cluster { pki, verifier, outcome }
    }

    fn node(&self, pcr0: Option<Vec<u8>>) -> Node {
        let mut pcrs = default_pcrs();
        if let Some(pcr0) = pcr0 {
            pcrs.insert(0, pcr0);
        }
        Node {
            pki: Arc::clone(&self.pki),
            pcrs,
        }
    }

    fn record(&self) -> &BootRecord {
        &self.outcome.record
    }

    /// The Ready node `peer` answers `document`, allowing its own image,
    /// with its checkpoint (global epoch 5, one tenant at 3) signed by the
    /// deployment's audit key.
    fn release_by(&self, peer: &Node, document: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let audit =
            crate::keys::hierarchy::Hierarchy::new(Key256::from_slice(self.outcome.root.expose()).expect("32 bytes"))
                .audit_signing_key()
                .clone();
        self.release_signed(peer, document, &audit, &self.checkpoint())
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(
            self.record().deployment_id,
            5,
            [("111122223333".to_owned(), 3)].into_iter().collect(),
        )
    }

    fn release_signed(
        &self,
        peer: &Node,
        document: &[u8],
        signer: &p256::ecdsa::SigningKey,
        checkpoint: &Checkpoint,
    ) -> Result<Vec<u8>, CustodyError> {
        use p256::ecdsa::signature::Signer as _;
        let bytes = checkpoint.to_bytes()?;
        let signature: p256::ecdsa::Signature = signer.sign(&keyward_custody::checkpoint::signed_message(&bytes));
        let signed = SignedCheckpoint::new(bytes, signature.to_der().as_bytes().to_vec());
        let allowed = own_measurements(peer)?;
        let package = release(
            &self.outcome.root,
            self.record(),
            &self.verifier,
            document,
            &allowed,
            false,
            time::OffsetDateTime::now_utc(),
            &signed,
        )?;
        Ok(package.to_bytes()?)
    }
}

#[test]
fn a_node_of_the_same_image_joins_and_gets_the_committed_root() {
    let cluster = Cluster::new();
    let (peer, joiner) = (cluster.node(None), cluster.node(None));
    let session = JoinSession::start(cluster.record());
    let document = session.document(&joiner).expect("document");
    let package = cluster.release_by(&peer, &document).expect("released");
    let (root, checkpoint) = session.open(&package, cluster.record()).expect("joined");
    assert!(root == cluster.outcome.root);
    assert_eq!(
        checkpoint,
        cluster.checkpoint(),
        "the peer's checkpoint travels with the root"
    );
}

#[test]
fn a_peer_checkpoint_not_signed_by_the_deployment_or_of_another_is_refused() {
    let cluster = Cluster::new();
    let (peer, joiner) = (cluster.node(None), cluster.node(None));
    let session = JoinSession::start(cluster.record());
    let document = session.document(&joiner).expect("document");
    // Signed by another key than the boot record's commitment.
    let stranger = p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("a key");
    let package = cluster
        .release_signed(&peer, &document, &stranger, &cluster.checkpoint())
        .expect("released");
    match session.open(&package, cluster.record()) {
        Err(CustodyError::Join(reason)) => assert!(reason.contains("not signed"), "{reason}"),
        other => panic!("a badly signed checkpoint was taken: {:?}", other.map(|(_, c)| c)),
    }
    // Signed by the deployment's key, but naming another deployment.
    let audit =
        crate::keys::hierarchy::Hierarchy::new(Key256::from_slice(cluster.outcome.root.expose()).expect("32 bytes"))
            .audit_signing_key()
            .clone();
    let foreign = Checkpoint::new([0xee; 16], 5, BTreeMap::new());
    let package = cluster
        .release_signed(&peer, &document, &audit, &foreign)
        .expect("released");
    assert!(matches!(
        session.open(&package, cluster.record()),
        Err(CustodyError::Join(reason)) if reason.contains("deployment")
    ));
}

#[test]
fn a_node_whose_pcr0_differs_is_refused() {
    let cluster = Cluster::new();
    let peer = cluster.node(None);
    let impostor = cluster.node(Some(vec![0x5a; 48]));
    let session = JoinSession::start(cluster.record());
    let document = session.document(&impostor).expect("document");
    match cluster.release_by(&peer, &document) {
        Err(CustodyError::Join(reason)) => assert!(reason.contains("PCR0"), "{reason}"),
        other => panic!("an impostor image was answered: {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_document_of_another_anchor_deployment_or_purpose_is_refused() {
    let cluster = Cluster::new();
    let peer = cluster.node(None);
    // Another mock root (another host's fake NSM).
    let elsewhere = Cluster::new().node(None);
    let session = JoinSession::start(cluster.record());
    let document = session.document(&elsewhere).expect("document");
    assert!(matches!(
        cluster.release_by(&peer, &document),
        Err(CustodyError::Join(_))
    ));
    // Another deployment's join key.
    let other = Cluster::new();
    let foreign = JoinSession::start(other.record());
    let document = foreign.document(&cluster.node(None)).expect("document");
    assert!(matches!(
        cluster.release_by(&peer, &document),
        Err(CustodyError::WrongDeployment { .. })
    ));
    // A document that binds no join key (an unseal session's, say).
    let key = PrivateKey::generate().public_key();
    let unseal = keyward_custody::unseal::session_binding(&cluster.record().deployment_id, &key);
    let document = cluster
        .node(None)
        .attest(Some(&unseal), None, Some(key.as_bytes()))
        .expect("document");
    assert!(matches!(cluster.release_by(&peer, &document), Err(CustodyError::Join(r)) if r.contains("join key")));
}

#[test]
fn the_joiner_refuses_a_root_its_boot_record_does_not_commit_to() {
    let cluster = Cluster::new();
    let (peer, joiner) = (cluster.node(None), cluster.node(None));
    let session = JoinSession::start(cluster.record());
    let document = session.document(&joiner).expect("document");
    let package = cluster.release_by(&peer, &document).expect("released");
    let mut forged = cluster.record().clone();
    forged.commitment = RootCommitment::of(&Key256::generate()).expect("commitment");
    assert!(matches!(
        session.open(&package, &forged),
        Err(CustodyError::CommitmentMismatch)
    ));
    // A package sealed to another join key does not open.
    let other = JoinSession::start(cluster.record());
    let package = cluster
        .release_by(&peer, &other.document(&joiner).expect("document"))
        .expect("released");
    let session = JoinSession::start(cluster.record());
    assert!(session.open(&package, cluster.record()).is_err());
}
