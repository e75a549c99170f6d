//! `keyward-proxy` refuses a data dir whose store was written by the sled
//! engine of earlier versions, and says how to start fresh.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

#[test]
fn proxy_refuses_a_sled_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("data").join("store");
    {
        let db = sled::open(&store).expect("sled opens");
        db.insert(b"boot/root-key", b"sealed".to_vec()).expect("insert");
        db.flush().expect("flush");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_keyward-proxy"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--enclave-socket")
        .arg(dir.path().join("enclave.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("runs the proxy");
    assert!(!out.status.success(), "the proxy started on a sled store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sled") && stderr.contains("pre-1.0"), "{stderr}");
    assert!(stderr.contains(&format!("mv {}", store.display())), "{stderr}");
    assert!(
        !store.join("keyward.sqlite3").exists(),
        "nothing is created beside the old store"
    );
}
