//! The enclave and the host proxy as separate processes (`keyward enclave`,
//! `keyward proxy`), with recording Unix-socket forwarders of the test's
//! own between them, one on the host link and one on the client streams:
//! everything that crosses the host↔enclave boundary, in both directions
//! and on every connection, is kept for inspection. Plus
//! the attestation helpers the Recipient tests share.
//!
//! Readiness is read from the processes' output (the enclave's "enclave
//! listening" log line, the proxy's "Keyward proxy listening on" line),
//! never slept for. Dropping a [`Split`] stops both processes (SIGTERM, then
//! SIGKILL after a bound); the enclave also exits when the test process
//! dies (`--exit-on-stdin-close`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyEncryptionMechanism, RecipientInfo};
use base64::Engine as _;
use keyward_sdk::recipient::RecipientKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::harness::{Creds, READY_TIMEOUT, REQUEST_TIMEOUT, STOP_TIMEOUT, sdk_client};

const ENCLAVE_READY: &str = "enclave listening";
const PROXY_READY: &str = "Keyward proxy listening on https://";
const PROXY_ADMIN: &str = "Keyward proxy admin (healthz, metrics) on http://";

// ---------------------------------------------------------------- processes

/// One child process whose output goes to a log file, with the lines of the
/// watched stream also delivered to the test.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    /// Kept open: the enclave exits when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    log_path: PathBuf,
}

/// Which output stream carries the readiness line.
#[derive(Clone, Copy, PartialEq)]
enum Watch {
    Stdout,
    Stderr,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command, watch: Watch, log_path: PathBuf) -> Proc {
        let log = std::fs::File::create(&log_path).expect("create log");
        let other = Stdio::from(log.try_clone().expect("clone log handle"));
        command.stdin(Stdio::piped());
        match watch {
            Watch::Stdout => command.stdout(Stdio::piped()).stderr(other),
            Watch::Stderr => command.stderr(Stdio::piped()).stdout(other),
        };
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stream: Box<dyn std::io::Read + Send> = match watch {
            Watch::Stdout => Box::new(child.stdout.take().expect("piped stdout")),
            Watch::Stderr => Box::new(child.stderr.take().expect("piped stderr")),
        };
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                // The receiver may be gone; keep copying to the log anyway.
                let _ = tx.send(line);
            }
        });
        Proc {
            name,
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            log_path,
        }
    }

    /// Waits for a line containing `marker`; returns it.
    async fn wait_for(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(marker) => return line,
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.dump_log();
                    panic!(
                        "{} closed its output before printing {marker:?}; exit status: {:?}",
                        self.name,
                        self.child.as_mut().map(Child::try_wait)
                    );
                }
                Err(_) => {
                    self.dump_log();
                    panic!("{} did not print {marker:?} within {READY_TIMEOUT:?}", self.name);
                }
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn dump_log(&self) {
        eprintln!("---- {} log ({}) ----", self.name, self.log_path.display());
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(200)..] {
            eprintln!("{line}");
        }
        eprintln!("---- end of {} log ----", self.name);
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        if rx.recv_timeout(STOP_TIMEOUT).is_err() {
            eprintln!(
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it",
                self.name
            );
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let _ = rx.recv_timeout(STOP_TIMEOUT);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.dump_log();
        }
    }
}

// ---------------------------------------------------------------- recorder

/// One direction of one forwarded connection.
pub struct Recording {
    pub connection: usize,
    /// `"host->enclave"` or `"enclave->host"`.
    pub direction: &'static str,
    pub bytes: Vec<u8>,
}

type Streams = Arc<Mutex<Vec<(usize, &'static str, Arc<Mutex<Vec<u8>>>)>>>;

/// A Unix-socket forwarder that records every byte it relays.
pub struct Recorder {
    streams: Streams,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Recorder {
    /// Listens on `listen`; each accepted connection is connected to
    /// `upstream` and relayed both ways.
    pub fn start(listen: &Path, upstream: PathBuf) -> Recorder {
        let listener = UnixListener::bind(listen).expect("bind the recorder socket");
        let streams: Streams = Arc::default();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let streams = Arc::clone(&streams);
            let tasks = Arc::clone(&tasks);
            tokio::spawn(async move {
                let mut connection = 0;
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(outbound) = UnixStream::connect(&upstream).await else {
                        continue; // the enclave is not there (yet); the proxy reconnects
                    };
                    connection += 1;
                    let (host_read, host_write) = inbound.into_split();
                    let (enclave_read, enclave_write) = outbound.into_split();
                    let up = Arc::new(Mutex::new(Vec::new()));
                    let down = Arc::new(Mutex::new(Vec::new()));
                    {
                        let mut s = streams.lock().expect("streams");
                        s.push((connection, "host->enclave", Arc::clone(&up)));
                        s.push((connection, "enclave->host", Arc::clone(&down)));
                    }
                    let mut t = tasks.lock().expect("tasks");
                    t.push(tokio::spawn(relay(host_read, enclave_write, up)));
                    t.push(tokio::spawn(relay(enclave_read, host_write, down)));
                }
            })
        };
        tasks.lock().expect("tasks").push(accept);
        Recorder { streams, tasks }
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<Recording> {
        self.streams
            .lock()
            .expect("streams")
            .iter()
            .map(|(connection, direction, bytes)| Recording {
                connection: *connection,
                direction,
                bytes: bytes.lock().expect("recording").clone(),
            })
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

/// Copies `from` to `to`, recording each chunk before forwarding it.
async fn relay(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        record.lock().expect("recording").extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ---------------------------------------------------------------- the setup

/// `keyward enclave` ← recorder ← `keyward proxy`, on one temp data dir.
pub struct Split {
    // Dropped in this order: the proxy, the recorder, the enclave, the dir.
    proxy: Proc,
    /// The host link (store calls, pings, status).
    pub recorder: Recorder,
    /// The client streams (each a client's TLS connection).
    pub stream_recorder: Recorder,
    enclave: Proc,
    pub url: String,
    /// The proxy's admin listener (`/healthz`, `/ca.pem`), `127.0.0.1:PORT`.
    pub admin: String,
    /// The enclave CA certificate (from the proxy's admin `/ca.pem`): the
    /// persistent one once Ready, the sealed enclave's in-memory one before.
    pub ca_pem: String,
    pub operator: Creds,
    pub creds: Creds,
    pub data_dir: PathBuf,
    /// Enclave starts so far (each has its own log file).
    enclave_starts: usize,
    /// What every enclave start (the first and each restart) gets besides the defaults.
    options: SplitOptions,
    _dir: tempfile::TempDir,
}

/// What a [`Split`] adds to the defaults, e.g. `--custody kms …` for the
/// enclave and `--custody-endpoint` for the proxy.
#[derive(Clone, Default)]
pub struct SplitOptions {
    /// Extra arguments of every `keyward enclave` start.
    pub enclave_args: Vec<String>,
    /// Extra environment of every `keyward enclave` start.
    pub enclave_env: Vec<(String, String)>,
    /// Extra arguments of `keyward proxy`.
    pub proxy_args: Vec<String>,
    /// A `mock-attestation/` directory copied into the data dir before the
    /// enclave first starts (its documents then chain to that root).
    pub mock_attestation_from: Option<PathBuf>,
}

/// `keyward enclave` (mock mode) on `data_dir`, with the dev credentials
/// and `options`' extra arguments and environment.
fn enclave_command(
    data_dir: &Path,
    enclave_socket: &Path,
    creds: &Creds,
    operator: &Creds,
    options: &SplitOptions,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    command
        .args(["enclave", "--mode", "mock", "--exit-on-stdin-close", "--socket"])
        .arg(enclave_socket)
        .arg("--data-dir")
        .arg(data_dir)
        .env("KEYWARD_DEV_ACCESS_KEY_ID", &creds.access_key_id)
        .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &creds.secret)
        .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
        .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
        .env("RUST_LOG", "info")
        .args(&options.enclave_args)
        .envs(options.enclave_env.iter().map(|(k, v)| (k, v)));
    command
}

impl Split {
    /// Both processes, the enclave made Ready by a 1-of-1 genesis (as
    /// `keyward dev` does on first start) whose custodian key is dropped.
    pub async fn start() -> Split {
        let mut split = Split::start_sealed().await;
        let custodian = keyward_sdk::custody::CustodyKey::generate();
        let request = keyward_sdk::custody::InitCustodyRequest {
            threshold: 1,
            custodians: vec![custodian.public_key()],
            operator_key: None,
        };
        let output = split
            .custody_client()
            .init_custody(&request)
            .await
            .unwrap_or_else(|e| panic!("genesis: {e}"));
        assert_eq!(output.state, "Ready");
        split.await_ready_ca().await;
        split
    }

    /// Both processes; the enclave stays sealed (awaiting genesis or, on a
    /// data dir with a deployment, its custodians). `ca_pem` is the sealed
    /// enclave's in-memory CA.
    pub async fn start_sealed() -> Split {
        Split::start_sealed_with(SplitOptions::default()).await
    }

    /// [`Split::start_sealed`] with `options`.
    pub async fn start_sealed_with(options: SplitOptions) -> Split {
        let dir = tempfile::Builder::new()
            .prefix("keyward-split-")
            .tempdir()
            .expect("temp dir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("data dir");
        let creds = Creds::random();
        let operator = Creds::random();
        let enclave_socket = data_dir.join("enclave.sock");
        let enclave_tls_socket = data_dir.join("enclave-tls.sock");
        let recorder_socket = data_dir.join("recorder.sock");
        let recorder_tls_socket = data_dir.join("recorder-tls.sock");

        if let Some(from) = &options.mock_attestation_from {
            let to = data_dir.join("mock-attestation");
            std::fs::create_dir_all(&to).expect("mock-attestation dir");
            for entry in std::fs::read_dir(from).expect("the mock-attestation dir to copy") {
                let path = entry.expect("entry").path();
                std::fs::copy(&path, to.join(path.file_name().expect("file name"))).expect("copy the mock root");
            }
        }
        let command = enclave_command(&data_dir, &enclave_socket, &creds, &operator, &options);
        let mut enclave = Proc::spawn(
            "keyward enclave",
            command,
            Watch::Stderr,
            dir.path().join("enclave-1.log"),
        );
        enclave.wait_for(ENCLAVE_READY).await;

        let recorder = Recorder::start(&recorder_socket, enclave_socket);
        let stream_recorder = Recorder::start(&recorder_tls_socket, enclave_tls_socket);

        let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
        command
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data_dir)
            .arg("--enclave-socket")
            .arg(&recorder_socket)
            .arg("--enclave-tls-socket")
            .arg(&recorder_tls_socket)
            .args(&options.proxy_args)
            .env("RUST_LOG", "info");
        let mut proxy = Proc::spawn("keyward proxy", command, Watch::Stdout, dir.path().join("proxy.log"));
        let line = proxy.wait_for(PROXY_READY).await;
        let addr = line[line.find(PROXY_READY).expect("marker") + PROXY_READY.len()..]
            .split_whitespace()
            .next()
            .expect("address")
            .to_string();
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{line}");
        let line = proxy.wait_for(PROXY_ADMIN).await;
        let admin = line[line.find(PROXY_ADMIN).expect("marker") + PROXY_ADMIN.len()..]
            .split_whitespace()
            .next()
            .expect("admin address")
            .to_string();
        let ca_pem = fetch_ca(&admin).await;
        Split {
            proxy,
            recorder,
            stream_recorder,
            enclave,
            url: format!("https://{addr}"),
            admin,
            ca_pem,
            creds,
            operator,
            data_dir,
            enclave_starts: 1,
            options,
            _dir: dir,
        }
    }

    /// An unauthenticated SDK client for the custody operations, trusting
    /// the current `ca_pem`.
    pub fn custody_client(&self) -> keyward_sdk::Client {
        keyward_sdk::Client::unauthenticated(&self.url)
            .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(self.ca_pem.clone())))
            .map(|c| c.with_timeout(REQUEST_TIMEOUT))
            .expect("a custody client")
    }

    /// Once the enclave is Ready: waits (bounded) until the proxy reports
    /// its persistent CA instead of the sealed one, and trusts it.
    pub async fn await_ready_ca(&mut self) {
        let sealed = std::mem::take(&mut self.ca_pem);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ca = fetch_ca(&self.admin).await;
            if ca != sealed {
                self.ca_pem = ca;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the enclave kept serving its sealed TLS identity"
            );
            // A new connection has a Ready enclave load its identity.
            if let Ok(probe) = keyward_sdk::Client::unauthenticated(&self.url) {
                let _ = probe.with_timeout(REQUEST_TIMEOUT).get_unseal_document(b"probe").await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The proxy's `/healthz`: status and body.
    pub async fn healthz(&self) -> (u16, String) {
        let headers = vec![("host".to_string(), self.admin.clone())];
        let response = crate::harness::http_request(&self.admin, "GET", "/healthz", &headers, b"").await;
        (
            response.status,
            String::from_utf8_lossy(&response.body).trim().to_owned(),
        )
    }

    /// SIGKILLs the enclave (the proxy stays) and starts a new enclave
    /// process on the same data dir and socket; it starts sealed. Then
    /// trusts the new enclave's sealed CA.
    pub async fn kill9_and_restart_enclave(&mut self) {
        if let Some(child) = self.enclave.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.enclave.child = None;
        self.enclave_starts += 1;
        let socket = self.data_dir.join("enclave.sock");
        let command = enclave_command(&self.data_dir, &socket, &self.creds, &self.operator, &self.options);
        let log = self._dir.path().join(format!("enclave-{}.log", self.enclave_starts));
        self.enclave = Proc::spawn("keyward enclave", command, Watch::Stderr, log);
        self.enclave.wait_for(ENCLAVE_READY).await;
        // The proxy reconnects; the new enclave serves a new sealed CA.
        let old = self.ca_pem.clone();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ca = fetch_ca(&self.admin).await;
            if ca != old {
                self.ca_pem = ca;
                return;
            }
            assert!(Instant::now() < deadline, "the restarted enclave's CA never showed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the enclave and starts a new one on the same data dir that
    /// unseals by itself (`--custody kms`); waits (bounded) until `/healthz`
    /// says ok and the proxy serves the persistent CA `ca_pem` had before.
    pub async fn kill9_and_restart_self_unsealing_enclave(&mut self) {
        if let Some(child) = self.enclave.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.enclave.child = None;
        self.enclave_starts += 1;
        let socket = self.data_dir.join("enclave.sock");
        let command = enclave_command(&self.data_dir, &socket, &self.creds, &self.operator, &self.options);
        let log = self._dir.path().join(format!("enclave-{}.log", self.enclave_starts));
        self.enclave = Proc::spawn("keyward enclave", command, Watch::Stderr, log);
        self.enclave.wait_for(ENCLAVE_READY).await;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.healthz().await == (200, "ok".to_string()) && fetch_ca(&self.admin).await == self.ca_pem {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted enclave did not become ready with its persistent CA"
            );
            // A new connection has a Ready enclave load its identity.
            if let Ok(probe) = keyward_sdk::Client::unauthenticated(&self.url) {
                let _ = probe.with_timeout(REQUEST_TIMEOUT).get_unseal_document(b"probe").await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> aws_sdk_kms::Client {
        self.client_as(&self.creds)
    }

    pub fn client_as(&self, creds: &Creds) -> aws_sdk_kms::Client {
        sdk_client(
            &self.url,
            &self.ca_pem,
            &creds.access_key_id,
            &creds.secret,
            Some(REQUEST_TIMEOUT),
        )
    }

    /// Everything recorded on the host link and the client streams.
    pub fn recordings(&self) -> Vec<Recording> {
        let mut all = self.recorder.snapshot();
        all.extend(self.stream_recorder.snapshot().into_iter().map(|mut r| {
            r.connection += 1_000_000;
            r
        }));
        all
    }

    /// `<data-dir>/mock-attestation`, created by the enclave at start.
    pub fn mock_attestation_dir(&self) -> PathBuf {
        self.data_dir.join("mock-attestation")
    }

    /// Both processes' logs so far (the proxy's stdout and stderr, the
    /// stderr of every enclave process started).
    pub fn logs(&self) -> Vec<(&'static str, String)> {
        let mut logs = vec![(self.proxy.name, self.proxy.log())];
        for i in 1..=self.enclave_starts {
            let path = self._dir.path().join(format!("enclave-{i}.log"));
            logs.push((self.enclave.name, std::fs::read_to_string(path).unwrap_or_default()));
        }
        logs
    }
}

/// The enclave CA from the proxy's admin listener, once the enclave has its
/// TLS identity (polled with a deadline).
async fn fetch_ca(admin: &str) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    let headers = vec![("host".to_string(), admin.to_string())];
    loop {
        if let Ok(response) = crate::harness::try_http_request(admin, "GET", "/ca.pem", &headers, b"").await
            && response.status == 200
        {
            return String::from_utf8(response.body).expect("PEM is text");
        }
        assert!(
            Instant::now() < deadline,
            "no CA certificate from the proxy's admin listener"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- secrets in bytes

/// The encodings a secret could cross the boundary in: raw, hex (both
/// cases), and standard and URL-safe base64 at each of the three byte
/// alignments (the full 3-byte groups of `secret[j..]`, which appear
/// verbatim in the base64 of any message containing `secret`).
pub fn encodings(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    assert!(secret.len() >= 12, "too short to search for without false positives");
    let mut out = vec![
        ("raw".to_string(), secret.to_vec()),
        ("hex".to_string(), hex::encode(secret).into_bytes()),
        ("HEX".to_string(), hex::encode_upper(secret).into_bytes()),
    ];
    for j in 0..3 {
        let rest = &secret[j..];
        let aligned = &rest[..rest.len() / 3 * 3];
        out.push((format!("base64@{j}"), STANDARD_NO_PAD.encode(aligned).into_bytes()));
        out.push((format!("base64url@{j}"), URL_SAFE_NO_PAD.encode(aligned).into_bytes()));
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where (recording, encoding) `secret` occurs in the recordings.
pub fn find_secret(recordings: &[Recording], secret: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for r in recordings {
        for (encoding, needle) in encodings(secret) {
            if contains(&r.bytes, &needle) {
                found.push(format!("connection {} {}: {encoding}", r.connection, r.direction));
            }
        }
    }
    found
}

// ---------------------------------------------------------------- attestation helpers

pub use keyward_test_support::{b64, now_ms};

/// `Recipient` for aws-sdk-kms.
pub fn recipient_info(document: &[u8]) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

/// A workload's mock document (default module id) for `key`, under the
/// enclave's mock root in `mock_attestation_dir`.
pub fn workload_document(mock_attestation_dir: &Path, pcrs: &BTreeMap<u8, Vec<u8>>, key: &RecipientKey) -> Vec<u8> {
    keyward_sdk::attestation::mock_document(
        mock_attestation_dir,
        keyward_sdk::attestation::DEFAULT_MODULE_ID,
        pcrs,
        key.public_key_der(),
        None,
    )
    .expect("mock document")
}

/// Opens a `CiphertextForRecipient` with `key`.
#[track_caller]
pub fn open(what: &str, key: &RecipientKey, ciphertext_for_recipient: Option<&Blob>) -> Vec<u8> {
    let blob = ciphertext_for_recipient.unwrap_or_else(|| panic!("{what}: no CiphertextForRecipient"));
    key.open(blob.as_ref())
        .unwrap_or_else(|e| panic!("{what}: CiphertextForRecipient does not open: {e}"))
        .to_vec()
}
