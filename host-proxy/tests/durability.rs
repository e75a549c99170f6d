//! Durability of acknowledged writes, proven from the system calls.
//!
//! The real `keyward-proxy` binary runs under `strace -f`, in front of a
//! scripted enclave (this test, on the enclave's Unix socket) that sends it
//! store writes whose values carry unique markers: some one at a time, most
//! all at once so that the proxy group-commits them. From the trace, for
//! every write `i`:
//!
//! * `W(i)`: the first write to the store's files (`keyward.sqlite3*`)
//!   whose bytes contain marker `i`: the commit's append to the WAL;
//! * `A(i)`: the first write to a socket whose bytes contain the exact
//!   encoded `StoreReply` frame for call `i`: the acknowledgement leaving
//!   for the enclave;
//!
//! and the test asserts that an `fsync`/`fdatasync` of a store file started
//! after `W(i)` completed and completed before `A(i)` started. That is the
//! durability contract: with SQLite in WAL mode and `synchronous=FULL`, the
//! WAL's sync is the commit point, so a write is on stable storage before
//! the enclave (and so the client) is told it is done.
//!
//! Needs `strace` (`.ci/run` installs it). Without it the test fails under
//! `CI=true` and skips loudly elsewhere.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyward_wire::{Expected, Frame, PROTOCOL_VERSION, StoreOp, StoreResult, read_frame};
use tokio::io::AsyncWriteExt as _;

/// Writes sent one at a time, then all at once.
const SEQUENTIAL: u64 = 10;
const CONCURRENT: u64 = 120;

fn strace_available() -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but strace is not installed: .ci/run must install it"
        );
        eprintln!("!!!!!! SKIPPING the durability test: strace is not installed (apt-get install strace) !!!!!!");
    }
    found
}

fn marker(i: u64) -> Vec<u8> {
    format!("durability-marker-{i:08}-{}", "m".repeat(40)).into_bytes()
}

fn op(i: u64) -> StoreOp {
    // Unconditional puts (what the enclave sends today) and versioned ones.
    if i.is_multiple_of(3) {
        StoreOp::CasPut {
            namespace: "key".into(),
            key: format!("k/{i}"),
            expected: Expected::Absent,
            value: marker(i),
        }
    } else {
        StoreOp::Put {
            namespace: "key".into(),
            key: format!("k/{i}"),
            value: marker(i),
        }
    }
}

fn expected_reply(i: u64) -> Vec<u8> {
    let result = if i.is_multiple_of(3) {
        StoreResult::Committed(vec![1])
    } else {
        StoreResult::Done
    };
    keyward_wire::encode(&Frame::StoreReply { id: i, result }).expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_synced_before_its_reply() {
    if !strace_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("enclave.sock");
    let trace = dir.path().join("trace");
    let listener = tokio::net::UnixListener::bind(&socket).expect("binds the enclave socket");
    let mut strace = tokio::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-x", "-s", "4194304", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,sendto,sendmsg,fsync,fdatasync",
        ])
        .arg(env!("CARGO_BIN_EXE_keyward-proxy"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--enclave-connections",
            "1",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--enclave-socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starts strace");

    let (stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("the proxy connects within a minute")
        .expect("accepts");
    let (mut reader, mut writer) = tokio::io::split(stream);
    match read_frame(&mut reader).await.expect("hello") {
        Frame::Hello { version } => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected Hello, got {other:?}"),
    }
    let ack = keyward_wire::encode(&Frame::HelloAck {
        version: PROTOCOL_VERSION,
    })
    .expect("encodes");
    writer.write_all(&ack).await.expect("handshake");

    let mut replies = std::collections::HashMap::new();
    // One at a time: a commit per write.
    for i in 0..SEQUENTIAL {
        let frame = keyward_wire::encode(&Frame::StoreCall { id: i, op: op(i) }).expect("encodes");
        writer.write_all(&frame).await.expect("sends");
        match read_frame(&mut reader).await.expect("reply") {
            Frame::StoreReply { id, result } => replies.insert(id, result),
            other => panic!("expected a store reply, got {other:?}"),
        };
    }
    // All at once: group commits.
    let mut burst = Vec::new();
    for i in SEQUENTIAL..SEQUENTIAL + CONCURRENT {
        keyward_wire::encode_into(&Frame::StoreCall { id: i, op: op(i) }, &mut burst).expect("encodes");
    }
    writer.write_all(&burst).await.expect("sends");
    while replies.len() < (SEQUENTIAL + CONCURRENT) as usize {
        match read_frame(&mut reader).await.expect("reply") {
            Frame::StoreReply { id, result } => replies.insert(id, result),
            other => panic!("expected a store reply, got {other:?}"),
        };
    }
    for i in 0..SEQUENTIAL + CONCURRENT {
        let want = match keyward_wire::decode(&expected_reply(i)[4..]).expect("decodes") {
            Frame::StoreReply { result, .. } => result,
            other => panic!("{other:?}"),
        };
        assert_eq!(replies.get(&i), Some(&want), "reply to write {i}");
    }

    // Stop the proxy (strace's child), then strace ends and its trace is complete.
    let strace_pid = strace.id().expect("strace runs");
    let children = std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).expect("children");
    let proxy_pid: i32 = children
        .split_whitespace()
        .next()
        .expect("the proxy")
        .parse()
        .expect("pid");
    let killed = Command::new("kill")
        .args(["-TERM", &proxy_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), strace.wait())
        .await
        .expect("strace ends after the proxy")
        .expect("waits");
    assert!(status.success() || status.code().is_some(), "strace: {status:?}");

    check_trace(&trace, SEQUENTIAL + CONCURRENT);
}

/// One traced system call: where it started and ended in the trace.
#[derive(Debug)]
struct Call {
    name: String,
    /// The file descriptor's path as `-y` shows it.
    target: String,
    data: Vec<u8>,
    start: usize,
    end: usize,
}

fn check_trace(trace: &Path, writes: u64) {
    let text = std::fs::read_to_string(trace).expect("reads the trace");
    let calls = parse(&text);
    let store_file = |c: &Call| c.target.contains("keyward.sqlite3");
    let syncs: Vec<&Call> = calls
        .iter()
        .filter(|c| (c.name == "fsync" || c.name == "fdatasync") && store_file(c))
        .collect();
    assert!(!syncs.is_empty(), "no fsync/fdatasync of the store in the trace");
    let mut commits_seen = std::collections::BTreeSet::new();
    for i in 0..writes {
        let marker = marker(i);
        let written = calls
            .iter()
            .filter(|c| c.name.starts_with("pwrite") || c.name == "write")
            .filter(|c| store_file(c) && contains(&c.data, &marker))
            .min_by_key(|c| c.end)
            .unwrap_or_else(|| panic!("write {i}: its value was never written to the store"));
        let reply = expected_reply(i);
        let acked = calls
            .iter()
            .filter(|c| matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg"))
            .filter(|c| c.target.starts_with("socket:") && contains(&c.data, &reply))
            .min_by_key(|c| c.start)
            .unwrap_or_else(|| panic!("write {i}: its reply never left for the enclave"));
        assert!(
            written.end < acked.start,
            "write {i}: acknowledged (trace line {}) before it reached the store file (line {})",
            acked.start + 1,
            written.end + 1
        );
        let sync = syncs
            .iter()
            .find(|s| s.start > written.end && s.end < acked.start)
            .unwrap_or_else(|| {
                panic!(
                    "write {i}: no fsync/fdatasync of the store between its write (trace line {}) and its \
                     acknowledgement (line {})",
                    written.end + 1,
                    acked.start + 1
                )
            });
        commits_seen.insert(sync.start);
    }
    // Group commit: the burst shares syncs (fewer syncs than writes).
    assert!(
        (commits_seen.len() as u64) < writes,
        "{} writes used {} distinct syncs: no group commit",
        writes,
        commits_seen.len()
    );
    eprintln!(
        "durability: {writes} acknowledged writes, each synced before its reply, in {} commits ({} store syncs traced)",
        commits_seen.len(),
        syncs.len()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses `strace -f -y -x` output into calls, pairing `<unfinished ...>`
/// lines with their `<... resumed>` lines (per thread id).
fn parse(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: std::collections::HashMap<String, Call> = std::collections::HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if resumed.contains(" resumed>")
                && let Some(mut call) = pending.remove(pid)
            {
                call.end = index;
                calls.push(call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let target = args
            .split_once('<')
            .and_then(|(fd, path)| fd.chars().all(|c| c.is_ascii_digit()).then_some(path))
            .and_then(|path| path.split_once('>'))
            .map(|(path, _)| path.to_string())
            .unwrap_or_default();
        let call = Call {
            name: name.to_string(),
            target,
            data: quoted_bytes(args),
            start: index,
            end: index,
        };
        if rest.ends_with("<unfinished ...>") {
            pending.insert(pid.to_string(), call);
        } else {
            calls.push(call);
        }
    }
    calls
}

/// The bytes of every quoted string in `args`, concatenated (`writev`'s
/// buffers in order), decoding strace's escapes.
fn quoted_bytes(args: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = args.as_bytes();
    let mut i = 0;
    let mut inside = false;
    while i < bytes.len() {
        let b = bytes[i];
        if !inside {
            if b == b'"' {
                inside = true;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => inside = false,
            b'\\' if i + 1 < bytes.len() => {
                i += 1;
                match bytes[i] {
                    b'x' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                        out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                        i += 2;
                    }
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    other => out.push(other),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}
