//! Cluster join (issue 18 item 4), in process: node 1 is Ready; node 3, a
//! new enclave on the same store, starts Sealed and asks node 1 for the
//! root with `Keyward.JoinCluster` over HTTPS (node 1's CA pinned, a real
//! client stream into node 1); node 1 verifies node 3's attestation
//! document against its own image's PCRs and seals the root to it. A node
//! whose mock PCR0 differs is refused and stays Sealed.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_enclave::Enclave;
use keyward_enclave::attestation::mock::default_pcrs;
use keyward_enclave::bootstrap::BootError;
use keyward_enclave::clock::SystemClock;
use keyward_enclave::outbound::https::{Endpoint, HttpsClient, pinned_client_config};
use keyward_enclave::outbound::{Connect, ConnectFuture, OutboundError};

use crate::custody_kms::{ToCustody, WorkloadNsm, custody_ca};
use crate::support::Service;

fn node(first: &Service, pcrs: BTreeMap<u8, Vec<u8>>) -> Enclave {
    let config = keyward_test_support::enclave::mock_config(keyward_test_support::enclave::mock_args(), None, None);
    Enclave::new(
        config,
        Box::new(WorkloadNsm {
            pki: Arc::clone(&first.pki),
            pcrs,
        }),
        Arc::new(SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_node_joins_from_a_ready_one_and_another_image_is_refused() {
    let first = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: first.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&first, &connector).await;
    let peer = HttpsClient::new(
        Endpoint::parse("https://localhost:7800").expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        connector,
    );
    let store = Arc::clone(first.store());

    // Another image (PCR0 differs): refused by node 1; still Sealed, with the reason.
    let mut other = default_pcrs();
    other.insert(0, vec![0x5a; 48]);
    let impostor = node(&first, other);
    match impostor.join_through(&*store, &peer).await {
        Err(e) => assert!(e.to_string().contains("PCR0"), "{e}"),
        Ok(()) => panic!("a node of another image joined"),
    }
    assert!(!impostor.is_ready());
    match impostor.keyring(&*store).await {
        Err(BootError::Sealed(message)) => assert!(message.contains("PCR0"), "{message}"),
        Err(other) => panic!("expected Sealed, got {other}"),
        Ok(_) => panic!("the impostor is ready"),
    }

    // Node 3, the same image: sealed, joins, and has node 1's root.
    let third = node(&first, default_pcrs());
    assert!(third.keyring(&*store).await.is_err(), "a new node starts sealed");
    third.join_through(&*store, &peer).await.expect("joins");
    assert!(third.is_ready());
    let theirs = first.enclave().keyring(&*store).await.expect("node 1 is ready");
    let ours = third.keyring(&*store).await.expect("node 3 is ready");
    assert_eq!(
        ours.hierarchy.audit_signing_key().verifying_key(),
        theirs.hierarchy.audit_signing_key().verifying_key(),
        "node 3 has another root"
    );
}

/// A peer the host cannot reach.
struct Unreachable;

impl Connect for Unreachable {
    fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            Err(OutboundError::Refused {
                target: target.to_string(),
                reason: "connection refused".into(),
            })
        })
    }
}

/// The start-up path's round over the `--join-peer`s: a peer that is down
/// is followed by the next; a round in which no peer releases the root
/// leaves the node Sealed with the last failure in its 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_over_the_peers_skips_one_that_is_down() {
    let first = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: first.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&first, &connector).await;
    let tls = pinned_client_config(ca_pem.as_bytes()).expect("pinned roots");
    let down = HttpsClient::new(
        Endpoint::parse("https://127.0.0.1:9").expect("endpoint"),
        Arc::clone(&tls),
        Arc::new(Unreachable),
    );
    let up = HttpsClient::new(
        Endpoint::parse("https://localhost:7800").expect("endpoint"),
        tls,
        connector,
    );
    let store = Arc::clone(first.store());

    let third = node(&first, default_pcrs());
    match third.join_from(&*store, std::slice::from_ref(&down)).await {
        Err(e) => assert!(e.to_string().contains("connection refused"), "{e}"),
        Ok(()) => panic!("joined through an unreachable peer"),
    }
    match third.keyring(&*store).await {
        Err(BootError::Sealed(message)) => {
            assert!(
                message.contains("cluster join") && message.contains("127.0.0.1:9"),
                "{message}"
            )
        }
        Err(other) => panic!("expected Sealed, got {other}"),
        Ok(_) => panic!("ready without a peer"),
    }

    third
        .join_from(&*store, &[down, up])
        .await
        .expect("joins from the second peer");
    assert!(third.is_ready());
    let theirs = first.enclave().keyring(&*store).await.expect("node 1 is ready");
    let ours = third.keyring(&*store).await.expect("node 3 is ready");
    assert_eq!(
        ours.hierarchy.audit_signing_key().verifying_key(),
        theirs.hierarchy.audit_signing_key().verifying_key()
    );
}

/// A node whose store awaits genesis has nothing to join: the round says
/// so (`NotNow`) instead of asking peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_deployment_has_nothing_to_join() {
    let fresh = Service::start_uninitialised().await;
    // Any CA will do: the round stops before connecting (here the sealed
    // node's in-memory one).
    let own = ToCustody {
        enclave: fresh.shared_enclave(),
        targets: Default::default(),
    };
    let ca_pem = custody_ca(&fresh, &own).await;
    let peer = HttpsClient::new(
        Endpoint::parse("https://127.0.0.1:9").expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        Arc::new(Unreachable),
    );
    let store = Arc::clone(fresh.store());
    match fresh.enclave().join_from(&*store, &[peer]).await {
        Err(BootError::NotNow(why)) => assert!(why.contains("not been initialised"), "{why}"),
        other => panic!("expected NotNow, got {:?}", other.err().map(|e| e.to_string())),
    }
    assert!(!fresh.enclave().is_ready());
}

/// A peer whose connection hangs until released.
struct Hanging(Arc<tokio::sync::Notify>);

impl Connect for Hanging {
    fn connect<'a>(&'a self, target: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.0.notified().await;
            Err(OutboundError::Timeout(target.to_string()))
        })
    }
}

/// Custodians unseal a node while its join is in flight (the join does not
/// hold the custody state across its call to the peer), and a node whose
/// join failed is still unsealed by its custodians.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custodians_unseal_a_node_while_it_tries_to_join() {
    let first = Service::start().await;
    let custodian = first.custodian().expect("the genesis custodian");
    let sealed = Arc::new(Service::start_sealed_on(Arc::clone(first.store())).await);
    let store = Arc::clone(first.store());
    let own = ToCustody {
        enclave: sealed.shared_enclave(),
        targets: Default::default(),
    };
    let ca_pem = custody_ca(&sealed, &own).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let peer = HttpsClient::new(
        Endpoint::parse("https://127.0.0.1:9").expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        Arc::new(Hanging(Arc::clone(&release))),
    );
    let joining = {
        let (sealed, store) = (Arc::clone(&sealed), Arc::clone(&store));
        tokio::spawn(async move { sealed.enclave().join_from(&*store, &[peer]).await })
    };
    let unsealed = tokio::time::timeout(std::time::Duration::from_secs(30), sealed.unseal_with(custodian))
        .await
        .expect("the unseal waited for the join's peer");
    assert_eq!(unsealed.status, 200, "{}", String::from_utf8_lossy(&unsealed.body));
    assert!(sealed.enclave().is_ready());
    release.notify_one();
    joining
        .await
        .expect("join task")
        .expect("Ready (by the custodians) ends the join");
}

/// Issue 19 through cluster join: the join package carries the releasing
/// peer's signed checkpoint (its global root's epoch among it), so a joining node that the host
/// serves an older store (an older global root) refuses it and stays
/// sealed, saying so; served the current store it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_refuses_a_store_older_than_its_peer_has_seen() {
    let first = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: first.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&first, &connector).await;
    let peer = HttpsClient::new(
        Endpoint::parse("https://localhost:7800").expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        connector,
    );
    // The global root before a write of the global scope (a new tenant).
    let old_root = first.host().snapshot("index", "@global/root");
    let body = serde_json::json!({ "TenantId": "444455556666" }).to_string();
    let created = first
        .signed_call_as(&first.operator, "Keyward.CreateTenant", body.as_bytes())
        .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let peer_epoch = first.enclave().freshness_epoch();
    assert!(peer_epoch > 1, "the global root moved: {peer_epoch}");

    let host = keyward_test_support::tamper::TamperingStore::new(Arc::clone(first.store()));
    host.serve("index", "@global/root", old_root);
    let third = node(&first, default_pcrs());
    match third.join_through(&*host, &peer).await {
        Err(e) => assert!(e.to_string().contains("older store"), "{e}"),
        Ok(()) => panic!("joined over a rolled-back store"),
    }
    assert!(!third.is_ready());
    match third.keyring(&*host).await {
        Err(BootError::Sealed(message)) => assert!(message.contains("rollback"), "{message}"),
        Err(other) => panic!("expected Sealed, got {other}"),
        Ok(_) => panic!("ready over a rolled-back store"),
    }

    host.honest();
    third
        .join_through(&*host, &peer)
        .await
        .expect("joins the current store");
    assert!(third.freshness_epoch() >= peer_epoch);
}

/// Issue 19 item 3 through cluster join, per scope: the join package
/// carries the releasing peer's signed checkpoint (every tenant scope's
/// epoch), so a joining node served one tenant's index root rolled back
/// alone (the global root intact) refuses the store, stays Sealed naming
/// the tenant scope, and counts the violation; a hidden tenant root
/// likewise (an omission). Served the current store, it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_refuses_a_tenant_scope_rolled_back_alone() {
    use crate::support::{ACCOUNT, create_key, must};
    let first = Service::start().await;
    let connector = Arc::new(ToCustody {
        enclave: first.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&first, &connector).await;
    let peer = HttpsClient::new(
        Endpoint::parse("https://localhost:7800").expect("endpoint"),
        pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
        connector,
    );
    let kms = first.client();
    let key = create_key(&kms, "tenant scope moves alone").await;
    let tenant_root = format!("{ACCOUNT}/root");
    let old_root = first.host().snapshot("index", &tenant_root);
    let global_before = first.host().snapshot("index", "@global/root");
    // A write of the tenant scope only: its root moves, the global one not.
    must("DisableKey", kms.disable_key().key_id(&key).send().await);
    assert!(
        first.host().snapshot("index", "@global/root") == global_before,
        "the global root moved: the test would not isolate a tenant scope"
    );

    let host = keyward_test_support::tamper::TamperingStore::new(Arc::clone(first.store()));
    host.serve("index", &tenant_root, old_root);
    let third = node(&first, default_pcrs());
    let rollbacks = third.status().metrics.freshness_violations.rollback;
    match third.join_through(&*host, &peer).await {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&format!("tenant scope {ACCOUNT} epoch served")), "{text}");
            assert!(!text.contains("global scope"), "{text}");
        }
        Ok(()) => panic!("joined over a tenant scope rolled back alone"),
    }
    assert!(!third.is_ready());
    match third.keyring(&*host).await {
        Err(BootError::Sealed(message)) => assert!(message.contains(&format!("tenant scope {ACCOUNT}")), "{message}"),
        Err(other) => panic!("expected Sealed, got {other}"),
        Ok(_) => panic!("ready over a rolled-back tenant scope"),
    }
    assert_eq!(
        third.status().metrics.freshness_violations.rollback,
        rollbacks + 1,
        "the refused join is counted"
    );

    // The tenant's root hidden: an omission, refused and counted too.
    host.honest();
    host.hide("index", &tenant_root);
    let omissions = third.status().metrics.freshness_violations.omission;
    match third.join_through(&*host, &peer).await {
        Err(e) => assert!(e.to_string().contains(&format!("index/{ACCOUNT}/root")), "{e}"),
        Ok(()) => panic!("joined with a tenant root hidden"),
    }
    assert!(!third.is_ready());
    assert!(third.status().metrics.freshness_violations.omission > omissions);

    host.honest();
    third
        .join_through(&*host, &peer)
        .await
        .expect("joins the current store");
    assert!(third.is_ready());
}

/// The joiner takes, per scope, the highest epoch of every peer that
/// answered, not only the releasing one's: node 2 (joined earlier) is then
/// served a tenant's root rolled back to a state newer than any it read of
/// that scope (it believes it: the limit THREAT-MODEL.md states), while
/// node 1 wrote the newer root. A joiner served the rolled-back store and
/// asking node 2 first, then node 1, refuses it, though node 2 released
/// the root; asking node 2 alone it would not know better.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_takes_the_newest_epoch_among_all_answering_peers() {
    use crate::support::{ACCOUNT, create_key, must};
    use keyward_enclave::attestation::verify::{TrustAnchor, Verifier};
    use keyward_enclave::store::StoreTransport;
    let first = Service::start().await;
    let to_first = Arc::new(ToCustody {
        enclave: first.shared_enclave(),
        targets: Default::default(),
    });
    let ca_pem = custody_ca(&first, &to_first).await;
    let peer_of = |connector: Arc<ToCustody>| {
        HttpsClient::new(
            Endpoint::parse("https://localhost:7800").expect("endpoint"),
            pinned_client_config(ca_pem.as_bytes()).expect("pinned roots"),
            connector,
        )
    };
    let one = peer_of(Arc::clone(&to_first));

    // Node 2: joins from node 1, then serves joiners over its own host.
    let host_two = keyward_test_support::tamper::TamperingStore::new(Arc::clone(first.store()));
    let link_two: Arc<dyn StoreTransport> = host_two.clone();
    let anchor = TrustAnchor::from_der(first.pki.root_der()).expect("anchor");
    let second = Arc::new(node(&first, default_pcrs()).with_verifier(Verifier::new(anchor)));
    second.attach(Arc::downgrade(&link_two));
    second.join_through(&*host_two, &one).await.expect("node 2 joins");
    let to_second = Arc::new(ToCustody {
        enclave: Arc::clone(&second),
        targets: Default::default(),
    });
    // Node 2 serves the deployment's TLS identity once it loaded it.
    drop(to_second.connect("warm-up:0").await);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while second.status().ca_certificate_pem != ca_pem {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 2 never served the deployment's CA"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let two = peer_of(to_second);

    // Node 1 writes the tenant scope twice; node 2 is then served the root
    // of the first write.
    let kms = first.client();
    let key = create_key(&kms, "written by node 1").await;
    let tenant_root = format!("{ACCOUNT}/root");
    let old_root = first.host().snapshot("index", &tenant_root);
    must("DisableKey", kms.disable_key().key_id(&key).send().await);
    host_two.serve("index", &tenant_root, old_root.clone());

    let host = keyward_test_support::tamper::TamperingStore::new(Arc::clone(first.store()));
    host.serve("index", &tenant_root, old_root);
    let third = node(&first, default_pcrs());
    match third.join_from(&*host, &[two, one]).await {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&format!("tenant scope {ACCOUNT} epoch served")), "{text}");
            assert!(text.contains("2 peer(s) answered"), "{text}");
        }
        Ok(()) => panic!("joined below the newest epoch an answering peer reported"),
    }
    assert!(!third.is_ready());
}
