//! Three `keyward dev` nodes on one PostgreSQL database (same `--store`,
//! own `--listen` and `--data-dir`): what one node does, the others see and
//! enforce within the cache bound (ARCHITECTURE.md "Cluster caching": 1 s),
//! a node killed under load leaves the others answering and loses nothing
//! acknowledged, and a PostgreSQL restart under load fails requests cleanly
//! and loses nothing acknowledged.
//!
//! Nodes 2 and 3 get the root by cluster join: no dev custodian of their
//! own, a Ready peer found through the store releases it to their attested
//! enclave; a node of another image is refused and stays sealed.
//!
//! Needs `KEYWARD_TEST_POSTGRES_URL` (see `storage.rs`); the restart test
//! starts a PostgreSQL server of its own (`.ci/postgres.sh`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::task::JoinSet;

use crate::harness::{Keyward, REQUEST_TIMEOUT, Sandbox, create_key, decrypt, encrypt, list_all_keys, random_bytes};
use crate::principals::{create_tenant, operator, sdk};
use crate::storage::fresh_database;

/// The bound the issue sets for a change on one node to be enforced on another.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// `n` sandboxes sharing the dev credentials and `--store url`.
fn cluster_sandboxes(url: &str, n: usize) -> Vec<Sandbox> {
    let first = Sandbox::new();
    let mut all = vec![first];
    for _ in 1..n {
        let mut sb = Sandbox::new();
        sb.creds = all[0].creds.clone();
        sb.operator = all[0].operator.clone();
        all.push(sb);
    }
    // Nothing else: node 1 creates the deployment (its dev custodian), the
    // others join it from a Ready peer (issue 17's contract).
    for sb in &mut all {
        sb.extra_args = vec!["--store".into(), url.to_owned()];
    }
    all
}

async fn start_all(sandboxes: &mut [Sandbox]) -> Vec<Keyward> {
    let mut nodes = Vec::new();
    for sb in sandboxes.iter_mut() {
        nodes.push(sb.start().await);
    }
    nodes
}

/// Polls `check` (one request per call, no sleeps) until it says the change
/// arrived; returns how long that took, failing past `limit` (measured from
/// `since`).
async fn time_until<F, Fut>(since: Instant, limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{what}: not enforced on another node within {limit:?}"
        );
    }
}

fn code_of<E: ProvideErrorMetadata>(result: &Result<impl std::fmt::Debug, SdkError<E>>) -> Option<String> {
    match result {
        Err(SdkError::ServiceError(se)) => se.err().code().map(str::to_owned),
        _ => None,
    }
}

/// Issue 18 item 4 with real processes: nodes 2 and 3, started with only
/// `--store`, `--listen` and `--data-dir`, start sealed (no dev custodian
/// share, a store with a deployment) and become Ready by cluster join — a
/// Ready peer found through the store releases the root to their attested
/// enclave, under the cluster's one mock attestation root — and serve what
/// node 1 created. A fourth node whose mock PCR0 differs is refused by its
/// peers and stays sealed (`/healthz` sealed, the API's 503 naming why).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_without_a_custodian_join_from_a_ready_peer_and_another_image_is_refused() {
    let Some(url) = fresh_database().await else { return };
    let mut sandboxes = cluster_sandboxes(&url, 3);
    let n1 = sandboxes[0].start().await;
    let key = create_key(&n1.client(), "created before the join").await;
    let plaintext = random_bytes(32);
    let before = encrypt(&n1.client(), &key, &plaintext, None).await;
    let mut n2 = sandboxes[1].start().await;
    let mut n3 = sandboxes[2].start().await;
    let printed = [n2.stdout_lines(), n3.stdout_lines()];

    let root_of = |sb: &Sandbox| {
        std::fs::read(sb.data_dir().join("mock-attestation").join("root.crt.pem")).expect("the mock root")
    };
    for ((sb, node), lines) in [(&sandboxes[1], &n2), (&sandboxes[2], &n3)].into_iter().zip(&printed) {
        let said = |text: &str| lines.iter().any(|l| l.contains(text));
        assert!(said("Keyward is sealed at "), "{lines:?}");
        assert!(said("joined the cluster from a Ready peer"), "{lines:?}");
        let log = std::fs::read_to_string(sb.log_files().last().expect("a log")).expect("the log");
        assert!(log.contains("joined the cluster: ready"), "not Ready by join:\n{log}");
        // Ready by join, not by a custodian share: it has none.
        assert!(!sb.dev_custodian_dir().exists(), "{} has a dev custodian", node.url);
        assert_eq!(
            root_of(sb),
            root_of(&sandboxes[0]),
            "the cluster's mock root was not adopted"
        );
        // The cluster shares one TLS identity: node 1's CA.
        assert_eq!(node.ca_pem, n1.ca_pem);
    }
    // A key created on node 1 decrypts on node 3, before and after the join.
    assert_eq!(decrypt(&n3.client(), Some(&key), &before, None).await, plaintext);
    let later = create_key(&n1.client(), "created after the join").await;
    let after = encrypt(&n1.client(), &later, &plaintext, None).await;
    assert_eq!(decrypt(&n3.client(), None, &after, None).await, plaintext);
    assert_eq!(decrypt(&n2.client(), None, &after, None).await, plaintext);

    // Node 3's enclave dies: the launcher restarts it, sealed, and it joins
    // again by itself.
    let old = n3.enclave_pid;
    let kill = std::process::Command::new("kill")
        .args(["-9", &old.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -9 {old} failed");
    assert_ne!(n3.wait_for_enclave_restart(Duration::from_secs(60)).await, old);
    n3.wait_healthy(Duration::from_secs(60)).await;
    assert_eq!(decrypt(&n3.client(), None, &after, None).await, plaintext);
    let log = std::fs::read_to_string(sandboxes[2].log_files().last().expect("a log")).expect("the log");
    assert_eq!(log.matches("joined the cluster: ready").count(), 2, "{log}");
    assert!(!sandboxes[2].dev_custodian_dir().exists());

    // Another image: refused by its peers, sealed with the reason.
    let mut fourth = Sandbox::new();
    fourth.creds = sandboxes[0].creds.clone();
    fourth.operator = sandboxes[0].operator.clone();
    fourth.extra_args = vec![
        "--store".into(),
        url.clone(),
        "--mock-pcr".into(),
        format!("0={}", "5a".repeat(48)),
    ];
    let n4 = fourth.start_sealed().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let refusal = loop {
        tick.tick().await;
        let answer = n4.signed_call("ListKeys", b"{}").await;
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        assert_eq!(answer.status, 503, "{body}");
        assert!(body.contains("ServiceUnavailableException"), "{body}");
        if body.contains("cluster join refused") {
            break body;
        }
        assert!(Instant::now() < deadline, "no join refusal in the 503: {body}");
    };
    assert!(refusal.contains("PCR0"), "{refusal}");
    let health = n4.admin_get("/healthz").await;
    assert_eq!(health.status, 503);
    assert!(String::from_utf8_lossy(&health.body).contains("sealed"));
    assert!(!fourth.dev_custodian_dir().exists());
    let log = std::fs::read_to_string(fourth.log_files().last().expect("a log")).expect("the log");
    assert!(log.contains("cluster join failed; still sealed"), "{log}");
    assert!(!log.contains("joined the cluster: ready"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_keys_and_enforce_each_others_changes_within_a_second() {
    let Some(url) = fresh_database().await else { return };
    let mut sandboxes = cluster_sandboxes(&url, 3);
    let nodes = start_all(&mut sandboxes).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // Keys created on node 1 are listed and usable on nodes 2 and 3.
    let mut created = BTreeSet::new();
    for i in 0..5 {
        created.insert(create_key(&n1.client(), &format!("cluster {i}")).await);
    }
    for node in [n2, n3] {
        let listed: BTreeSet<String> = list_all_keys(&node.client(), 1000).await.into_iter().collect();
        assert!(created.is_subset(&listed), "node {} lists {listed:?}", node.url);
    }
    let key = created.iter().next().expect("a key").clone();
    let plaintext = random_bytes(32);
    // Ciphertext from node 2 decrypts on node 3 (and node 1).
    let from_2 = encrypt(&n2.client(), &key, &plaintext, None).await;
    assert_eq!(decrypt(&n3.client(), None, &from_2, None).await, plaintext);
    assert_eq!(decrypt(&n1.client(), Some(&key), &from_2, None).await, plaintext);

    // DisableKey on node 1: Decrypt on node 3 (whose cache holds the key)
    // fails within the bound.
    let c3 = n3.client();
    assert_eq!(decrypt(&c3, None, &from_2, None).await, plaintext);
    n1.client().disable_key().key_id(&key).send().await.expect("DisableKey");
    let since = Instant::now();
    let took = time_until(since, PROPAGATION_BOUND, "DisableKey", || async {
        let r = c3
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(from_2.clone()))
            .send()
            .await;
        match code_of(&r) {
            Some(code) if code == "DisabledException" => true,
            Some(code) => panic!("Decrypt on node 3 failed with {code}"),
            None => {
                assert!(r.is_ok(), "Decrypt on node 3: {r:?}");
                false
            }
        }
    })
    .await;
    eprintln!("DisableKey on node 1 enforced on node 3 after {took:?}");

    // A policy module that denies everything, attached on node 1, is
    // enforced on node 3.
    let guarded = created.iter().nth(1).expect("a second key").clone();
    let c3 = n3.client();
    c3.describe_key()
        .key_id(&guarded)
        .send()
        .await
        .expect("DescribeKey before the policy");
    crate::policies::attach(n1, &guarded, &crate::harness::wat_module("fail_policy_unreachable")).await;
    let since = Instant::now();
    let took = time_until(since, PROPAGATION_BOUND, "a policy module", || async {
        match code_of(&c3.describe_key().key_id(&guarded).send().await) {
            Some(code) => {
                assert_eq!(code, "AccessDeniedException");
                true
            }
            None => false,
        }
    })
    .await;
    eprintln!("PutKeyPolicyModule on node 1 enforced on node 3 after {took:?}");

    // DeleteAccessKey on node 1: the access key stops working on node 3.
    let tenant = create_tenant(n1).await;
    let user = tenant.user.clone();
    let user_on_3 = n3.client_with(&user.access_key_id, &user.secret);
    user_on_3
        .list_keys()
        .send()
        .await
        .expect("the new access key works on node 3");
    sdk(n1, &tenant.admin)
        .delete_access_key(&user.access_key_id)
        .await
        .expect("DeleteAccessKey");
    let since = Instant::now();
    let took = time_until(since, PROPAGATION_BOUND, "DeleteAccessKey", || async {
        code_of(&user_on_3.list_keys().send().await).is_some()
    })
    .await;
    eprintln!("DeleteAccessKey on node 1 enforced on node 3 after {took:?}");

    // DisableTenant on node 1: the tenant's admin is refused on node 2.
    let admin_on_2 = n2.client_with(&tenant.admin.access_key_id, &tenant.admin.secret);
    admin_on_2.list_keys().send().await.expect("the tenant works on node 2");
    operator(n1).disable_tenant(&tenant.id).await.expect("DisableTenant");
    let since = Instant::now();
    let took = time_until(since, PROPAGATION_BOUND, "DisableTenant", || async {
        match code_of(&admin_on_2.list_keys().send().await) {
            Some(code) => {
                assert_eq!(code, "AccessDeniedException");
                true
            }
            None => false,
        }
    })
    .await;
    eprintln!("DisableTenant on node 1 enforced on node 2 after {took:?}");
}

/// What one load loop saw.
#[derive(Default)]
struct Seen {
    /// Keys whose CreateKey was acknowledged.
    created: Vec<String>,
    /// Requests to the surviving nodes that failed (must stay empty).
    failures: Vec<String>,
    /// Acknowledged requests to the surviving nodes after the kill.
    after_kill: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_leaves_the_others_answering_and_loses_nothing() {
    let Some(url) = fresh_database().await else { return };
    let mut sandboxes = cluster_sandboxes(&url, 3);
    let mut nodes = start_all(&mut sandboxes).await;
    const VICTIM: usize = 1;
    let clients: Vec<aws_sdk_kms::Client> = nodes.iter().map(Keyward::client).collect();
    let key = create_key(&clients[0], "load").await;
    let killed = Arc::new(AtomicBool::new(false));
    let mut loops = JoinSet::new();
    for l in 0..12usize {
        let (clients, killed, key) = (clients.clone(), Arc::clone(&killed), key.clone());
        loops.spawn(async move {
            let mut seen = Seen::default();
            let mut n = l;
            // Until 20 acknowledged requests to the survivors after the kill.
            while seen.after_kill < 20 {
                n += 1;
                let node = n % 3;
                let was_killed = killed.load(Ordering::SeqCst);
                if node == VICTIM && was_killed {
                    continue;
                }
                let client = &clients[node];
                let op = async {
                    if n % 2 == 0 {
                        client
                            .create_key()
                            .description(format!("loop {l} op {n}"))
                            .send()
                            .await
                            .map(|o| o.key_metadata().map(|m| m.key_id().to_owned()))
                            .map_err(|e| DisplayErrorContext(e).to_string())
                    } else {
                        client
                            .generate_data_key()
                            .key_id(&key)
                            .number_of_bytes(32)
                            .send()
                            .await
                            .map(|_| None)
                            .map_err(|e| DisplayErrorContext(e).to_string())
                    }
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, op).await {
                    Ok(Ok(created)) => {
                        seen.created.extend(created);
                        if was_killed {
                            seen.after_kill += 1;
                        }
                    }
                    // The victim's requests around the kill may fail.
                    Ok(Err(_)) | Err(_) if node == VICTIM => {}
                    Ok(Err(e)) => seen.failures.push(format!("node {node}: {e}")),
                    Err(_) => seen.failures.push(format!("node {node}: hung for {REQUEST_TIMEOUT:?}")),
                }
                if seen.failures.len() > 5 {
                    break;
                }
            }
            seen
        });
    }
    // Kill once load is under way: the first acknowledged keys exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    while list_all_keys(&clients[0], 1000).await.len() < 30 {
        assert!(Instant::now() < deadline, "the load never got going");
    }
    killed.store(true, Ordering::SeqCst);
    nodes[VICTIM].kill9();
    eprintln!(
        "killed node {VICTIM} (launcher {}, enclave {})",
        nodes[VICTIM].pid, nodes[VICTIM].enclave_pid
    );

    let mut created = Vec::new();
    let mut failures = Vec::new();
    while let Some(seen) = loops.join_next().await {
        let seen = seen.expect("load loop");
        created.extend(seen.created);
        failures.extend(seen.failures);
    }
    assert!(
        failures.is_empty(),
        "the surviving nodes failed requests: {failures:#?}"
    );
    // Every acknowledged CreateKey exists, on both survivors.
    for survivor in [0, 2] {
        let listed: BTreeSet<String> = list_all_keys(&clients[survivor], 1000).await.into_iter().collect();
        let missing: Vec<&String> = created.iter().filter(|k| !listed.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "node {survivor} lost acknowledged keys: {missing:?}"
        );
    }
    eprintln!("{} keys acknowledged, all present", created.len());
}

/// Starts a PostgreSQL server of this test's own (`.ci/postgres.sh start`):
/// its URL and directory.
fn own_postgres() -> Option<(String, String)> {
    std::env::var("KEYWARD_TEST_POSTGRES_URL").ok()?;
    let out = std::process::Command::new("bash")
        .args([".ci/postgres.sh", "start"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs .ci/postgres.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_owned)
    };
    Some((value("KEYWARD_TEST_POSTGRES_URL")?, value("KEYWARD_TEST_POSTGRES_DIR")?))
}

fn postgres(command: &str, dir: &str) {
    let out = std::process::Command::new("bash")
        .args([".ci/postgres.sh", command, dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs .ci/postgres.sh");
    assert!(
        out.status.success(),
        "postgres.sh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops its PostgreSQL server when dropped.
struct OwnPostgres(String);

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        postgres("stop", &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_restart_under_load_fails_requests_cleanly_and_loses_nothing() {
    if fresh_database().await.is_none() {
        return;
    }
    let (url, dir) = own_postgres().expect("a PostgreSQL server of its own");
    let _server = OwnPostgres(dir.clone());
    let mut sandboxes = cluster_sandboxes(&url, 2);
    let nodes = start_all(&mut sandboxes).await;
    let clients: Vec<aws_sdk_kms::Client> = nodes.iter().map(Keyward::client).collect();
    let down = Arc::new(AtomicBool::new(false));
    let back = Arc::new(AtomicBool::new(false));
    let mut loops = JoinSet::new();
    for l in 0..8usize {
        let (clients, down, back) = (clients.clone(), Arc::clone(&down), Arc::clone(&back));
        loops.spawn(async move {
            let mut created = Vec::new();
            let mut failed_while_down = 0usize;
            let mut ok_after = 0usize;
            let mut violations = Vec::new();
            let mut n = l;
            while ok_after < 5 && violations.is_empty() {
                n += 1;
                let client = &clients[n % 2];
                let started = Instant::now();
                let result = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    client.create_key().description(format!("pg loop {l} op {n}")).send(),
                )
                .await;
                let came_back = back.load(Ordering::SeqCst);
                match result {
                    Ok(Ok(out)) => {
                        created.extend(out.key_metadata().map(|m| m.key_id().to_owned()));
                        if came_back {
                            ok_after += 1;
                        }
                    }
                    Ok(Err(SdkError::ServiceError(se)))
                        if down.load(Ordering::SeqCst)
                            && matches!(
                                se.err().code(),
                                Some("DependencyTimeoutException" | "KMSInternalException")
                            ) =>
                    {
                        failed_while_down += 1;
                    }
                    Ok(Err(e)) if down.load(Ordering::SeqCst) && !came_back => {
                        violations.push(format!("not an AWS-shaped failure: {}", DisplayErrorContext(e)));
                    }
                    Ok(Err(e)) => violations.push(format!(
                        "failed outside the outage (back: {came_back}): {}",
                        DisplayErrorContext(e)
                    )),
                    Err(_) => violations.push(format!("hung for {:?}", started.elapsed())),
                }
            }
            (created, failed_while_down, violations)
        });
    }
    // Under way, then the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    while list_all_keys(&clients[0], 1000).await.len() < 20 {
        assert!(Instant::now() < deadline, "the load never got going");
    }
    down.store(true, Ordering::SeqCst);
    postgres("stop-server", &dir);
    // The outage lasts until requests were seen failing on both nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    for client in &clients {
        loop {
            match client.list_keys().send().await {
                Err(SdkError::ServiceError(se))
                    if matches!(
                        se.err().code(),
                        Some("DependencyTimeoutException" | "KMSInternalException")
                    ) =>
                {
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "requests kept succeeding with PostgreSQL down: {other:?}"
                ),
            }
        }
    }
    postgres("start-server", &dir);
    back.store(true, Ordering::SeqCst);

    let mut created = Vec::new();
    let mut failed = 0;
    let mut violations = Vec::new();
    while let Some(done) = loops.join_next().await {
        let (c, f, v) = done.expect("load loop");
        created.extend(c);
        failed += f;
        violations.extend(v);
    }
    assert!(violations.is_empty(), "{violations:#?}");
    let listed: BTreeSet<String> = list_all_keys(&clients[1], 1000).await.into_iter().collect();
    let missing: Vec<&String> = created.iter().filter(|k| !listed.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged keys lost across the restart: {missing:?}"
    );
    eprintln!(
        "{} keys acknowledged, {failed} requests failed during the outage",
        created.len()
    );
}

/// The host's PostgreSQL serves a key record's bytes under the next version
/// (a direct `UPDATE` of the table, as an operator could do): every node
/// refuses the record, with a clear KMSInternalException, within the cache
/// bound (no hint is sent for this change: the re-validation finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_served_under_another_version_is_refused_by_every_node() {
    let Some(url) = fresh_database().await else { return };
    let mut sandboxes = cluster_sandboxes(&url, 2);
    let nodes = start_all(&mut sandboxes).await;
    let key = create_key(&nodes[0].client(), "version-bound").await;
    let plaintext = random_bytes(16);
    let ciphertext = encrypt(&nodes[1].client(), &key, &plaintext, None).await;
    assert_eq!(decrypt(&nodes[0].client(), None, &ciphertext, None).await, plaintext);

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let shifted = client
        .execute(
            "UPDATE keyward_records SET version = version + 1 WHERE ns = 'key' AND key = $1",
            &[&format!("{}/{key}", crate::harness::ACCOUNT)],
        )
        .await
        .expect("UPDATE");
    assert_eq!(shifted, 1);

    for node in &nodes {
        let c = node.client();
        let since = Instant::now();
        let took = time_until(since, PROPAGATION_BOUND, "a version-shifted record", || async {
            let r = c
                .decrypt()
                .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext.clone()))
                .send()
                .await;
            match r {
                Ok(out) => {
                    assert_eq!(out.plaintext().map(|p| p.as_ref().to_vec()), Some(plaintext.clone()));
                    false
                }
                Err(SdkError::ServiceError(se)) => {
                    assert_eq!(se.err().code(), Some("KMSInternalException"));
                    let message = se.err().message().unwrap_or_default();
                    assert!(
                        message.contains("does not authenticate") && message.contains("served as version"),
                        "{message}"
                    );
                    true
                }
                Err(e) => panic!("Decrypt: {}", DisplayErrorContext(e)),
            }
        })
        .await;
        eprintln!("node {} refused the version-shifted record after {took:?}", node.url);
    }
}
