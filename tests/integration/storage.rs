//! The service's store from the outside: `keyward dev --store
//! postgres://…` (the crash test on PostgreSQL; two nodes sharing one
//! database), two nodes on one embedded store's path, and a data dir from
//! the sled version refused by `keyward dev`.
//!
//! The PostgreSQL tests need `KEYWARD_TEST_POSTGRES_URL` (`.ci/postgres.sh`
//! starts a server; `.ci/run` always does): without it they skip loudly, and
//! fail under `CI=true`. Each test gets a database of its own.

use std::process::{Command, Stdio};

use crate::harness::{Sandbox, create_key, decrypt, encrypt, random_bytes};

/// A new, empty database on the test server, as a URL.
pub(crate) async fn fresh_database() -> Option<String> {
    let url = match std::env::var("KEYWARD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but KEYWARD_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)"
            );
            eprintln!(
                "!!!!!! SKIPPING a PostgreSQL store test: KEYWARD_TEST_POSTGRES_URL is not set \
                 (run `eval \"$(bash .ci/postgres.sh start)\"` first) !!!!!!"
            );
            return None;
        }
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let driver = tokio::spawn(connection);
    let name = format!("keyward_it_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    drop(client);
    let _ = driver.await;
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    Some(format!("{base}/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enclave_sigkill_under_load_on_postgres() {
    let Some(url) = fresh_database().await else { return };
    let mut sb = Sandbox::new();
    sb.extra_args = vec!["--store".into(), url];
    crate::crash::sigkill_under_load(sb).await;
}

/// Two `keyward dev` nodes, each with its own data dir and port, on one
/// PostgreSQL database (the second joins the first's cluster): a key
/// created on one is used on the other, and both survive a restart of the
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_keys_through_postgres() {
    let Some(url) = fresh_database().await else { return };
    let mut first = Sandbox::new();
    first.extra_args = vec!["--store".into(), url.clone()];
    let mut second = Sandbox::new();
    second.creds = first.creds.clone();
    second.operator = first.operator.clone();
    second.extra_args = first.extra_args.clone();

    let mut a = first.start().await;
    let key = create_key(&a.client(), "shared").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&a.client(), &key, &plaintext, None).await;

    let b = second.start().await;
    assert_eq!(decrypt(&b.client(), Some(&key), &ciphertext, None).await, plaintext);
    let from_b = encrypt(&b.client(), &key, &plaintext, None).await;
    assert!(
        !second.store_dir().join("keyward.sqlite3").exists(),
        "with --store postgres:// no embedded store is created"
    );

    a.stop();
    drop(a);
    let a = first.start().await;
    assert_eq!(decrypt(&a.client(), None, &from_b, None).await, plaintext);
    let described = a
        .client()
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .expect("DescribeKey after restart");
    assert_eq!(described.key_metadata().map(|m| m.key_id()), Some(key.as_str()));
}

/// `--store` also takes the embedded engine's path: a second node on the
/// first node's embedded store, running at the same time, joins the first
/// node's cluster (no other flag) and serves its keys; what it encrypts
/// decrypts on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_an_embedded_store_path_joins_the_first() {
    let mut first = Sandbox::new();
    let a = first.start().await;
    let key = create_key(&a.client(), "embedded cluster").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&a.client(), &key, &plaintext, None).await;

    let mut second = Sandbox::new();
    second.creds = first.creds.clone();
    second.operator = first.operator.clone();
    second.extra_args = vec!["--store".into(), first.store_dir().display().to_string()];
    let mut b = second.start().await;
    assert!(
        b.stdout_lines()
            .iter()
            .any(|l| l.contains("joined the cluster from a Ready peer")),
        "the second node did not join"
    );
    assert!(!second.dev_custodian_dir().exists());
    assert_eq!(decrypt(&b.client(), Some(&key), &ciphertext, None).await, plaintext);
    let from_b = encrypt(&b.client(), &key, &plaintext, None).await;
    assert_eq!(decrypt(&a.client(), None, &from_b, None).await, plaintext);
}

#[test]
fn keyward_dev_refuses_a_sled_data_dir() {
    let sb = Sandbox::new();
    let store = sb.store_dir();
    sled_like_store(&store);
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(sb.data_dir())
        .stdin(Stdio::null())
        .output()
        .expect("runs keyward dev");
    assert!(!out.status.success(), "keyward dev started on a sled store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sled") && stderr.contains("pre-1.0"), "{stderr}");
    assert!(stderr.contains("mv ") && stderr.contains("store.sled-old"), "{stderr}");
    assert!(
        !sb.data_dir().join("enclave.sock").exists(),
        "the enclave was not started"
    );
}

/// Writes the files sled 0.34 leaves in its directory (its `conf` header and
/// a non-SQLite `db`), without linking sled into this test binary.
fn sled_like_store(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("blobs")).expect("mkdir");
    std::fs::write(
        dir.join("conf"),
        b"segment_size: 524288\nuse_compression: false\nversion: 0.34\nv\x19Q\x00",
    )
    .expect("conf");
    std::fs::write(dir.join("db"), [0xd3u8, 0x9e, 0x0f, 0x00, 0x01, 0x02]).expect("db");
}
