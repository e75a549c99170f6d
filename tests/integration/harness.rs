//! Test harness of the process-spawning tests: starts and stops `keyward
//! dev`, builds SDK clients against it, and sends raw (optionally
//! SigV4-signed) HTTP/1.1 requests for what an SDK can't send. What these
//! tests share with the in-process ones (`tests/inprocess`) and the
//! benchmarks (credentials, SigV4 signing, SDK assertions, the example policy
//! modules) comes from `keyward-test-support` and is re-exported here.
//!
//! Synchronisation with the service is done by reading its stdout lines (the
//! "ready" and "enclave process started" lines), never by sleeping.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use keyward_test_support::sdk::{client_config, shifted_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

// What the in-process tests share too (`keyward-test-support`).
pub use keyward_test_support::policies::example_policy;
pub use keyward_test_support::raw::RawResponse;
pub use keyward_test_support::sdk::{
    Context, assert_near, context, create_key, create_key_of, decrypt, encrypt, epoch_secs, error_parts, expect_error,
    list_all_keys, must, names_key,
};
pub use keyward_test_support::sigv4::{api_headers, sign_headers};
pub use keyward_test_support::{ACCOUNT, Creds, DAY, REGION, random_alnum, random_bytes};

/// How long the service may take to print its ready line (debug build, 2
/// cores, other tests starting in parallel).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the launcher may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any single request in the tests (a hang is a failure).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const READY_MARKER: &str = "Keyward is ready at ";
/// The line of a node that waits, sealed, to join its cluster.
const SEALED_MARKER: &str = "Keyward is sealed at ";
/// What `keyward dev` prints instead when its store is older than the dev
/// custodian's checkpoint (issue 19 item 3): it stays sealed.
const STALE_MARKER: &str = "Keyward stays SEALED at ";
const ADMIN_MARKER: &str = "  admin              http://";
const ENCLAVE_MARKER: &str = "enclave process started: pid ";

// ---------------------------------------------------------------- sandbox

/// A temp directory holding one data dir (reused across restarts) and the
/// stderr logs of every start, plus the credentials used for every start.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub creds: Creds,
    /// The operator's credential (`KEYWARD_DEV_OPERATOR_*`), the same for every start.
    pub operator: Creds,
    /// Extra `keyward dev` arguments for every start (e.g. `--tenant-rate-limit=2`).
    pub extra_args: Vec<String>,
    /// Extra environment variables of `keyward dev` for every start (e.g.
    /// the `AWS_*` credential of `--custody-credentials env`).
    pub extra_env: Vec<(String, String)>,
    starts: usize,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-it-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("create data dir");
        Self {
            dir,
            creds: Creds::random(),
            operator: Creds::random(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            starts: 0,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The stderr logs (both processes) of every start so far.
    pub fn log_files(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|i| self.dir.path().join(format!("keyward-{i}.stderr.log")))
            .collect()
    }

    /// Starts `keyward dev` on this sandbox's data dir and waits until it
    /// printed both its ready line and the enclave's pid line.
    pub async fn start(&mut self) -> Keyward {
        self.start_with_clock_offset(0).await
    }

    /// Like [`Sandbox::start`], with the enclave's clock shifted by
    /// `offset_seconds` (`--mock-clock-offset`). The returned service's
    /// clients sign with the same shifted time.
    pub async fn start_with_clock_offset(&mut self, offset_seconds: i64) -> Keyward {
        let kw = self.start_until(offset_seconds, Until::Ready).await;
        assert!(!kw.sealed, "keyward dev stayed sealed: {:?}", kw.stdout_seen);
        kw
    }

    /// Starts `keyward dev` and waits until it says it is ready or that it
    /// stays sealed (a store older than its custodian's checkpoint):
    /// [`Keyward::sealed`] tells which. While sealed, `ca_pem` is the
    /// in-memory CA of the sealed enclave (the admin `/ca.pem`).
    pub async fn start_maybe_sealed(&mut self) -> Keyward {
        self.start_until(0, Until::Ready).await
    }

    /// Starts `keyward dev` on a node that waits, sealed, to join its
    /// cluster (no dev custodian share, a store with a deployment): returns
    /// once it printed its sealed line and the enclave's pid line. Its
    /// `ca_pem` is the sealed enclave's in-memory CA (admin `/ca.pem`).
    pub async fn start_sealed(&mut self) -> Keyward {
        self.start_until(0, Until::Sealed).await
    }

    async fn start_until(&mut self, offset_seconds: i64, until: Until) -> Keyward {
        self.starts += 1;
        let log_path = self.dir.path().join(format!("keyward-{}.stderr.log", self.starts));
        let mut extra = if offset_seconds == 0 {
            Vec::new()
        } else {
            vec![format!("--mock-clock-offset={offset_seconds}")]
        };
        extra.extend(self.extra_args.iter().cloned());
        Keyward::start(
            &self.data_dir(),
            &self.creds,
            &self.operator,
            &log_path,
            (&extra, &self.extra_env),
            offset_seconds,
            until,
        )
        .await
    }

    /// `<data-dir>/dev-custodian`: the dev custodian's key and share
    /// (`keyward dev`'s 1-of-1 custody).
    pub fn dev_custodian_dir(&self) -> PathBuf {
        self.data_dir().join("dev-custodian")
    }

    /// This node will unseal with `first`'s dev custodian
    /// (`--dev-custodian-dir`) instead of joining `first`'s cluster from a
    /// Ready peer.
    pub fn unseal_with_custodian_of(&mut self, first: &Sandbox) {
        self.extra_args.push("--dev-custodian-dir".into());
        self.extra_args.push(first.dev_custodian_dir().display().to_string());
    }

    /// The host's embedded sealed-record store (`<data-dir>/store`, SQLite).
    /// Only valid while no service runs on this sandbox.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir().join("store")
    }
}

// ---------------------------------------------------------------- service

/// One running `keyward dev`. Dropping it SIGTERMs it and waits (bounded);
/// if the test panicked, its stderr log is printed.
pub struct Keyward {
    child: Option<Child>,
    pub pid: u32,
    /// `https://127.0.0.1:PORT` (TLS ends in the enclave)
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The proxy's admin listener (`/healthz`, `/metrics`; plain HTTP), `127.0.0.1:PORT`.
    pub admin_addr: String,
    /// The enclave CA certificate (`<data-dir>/tls/ca.pem`), PEM.
    pub ca_pem: String,
    pub data_dir: PathBuf,
    pub creds: Creds,
    /// The operator's credential.
    pub operator: Creds,
    /// Seconds the enclave's clock is shifted by (`--mock-clock-offset`);
    /// [`Keyward::client`] and [`Keyward::signed_call`] sign with that time.
    pub clock_offset: i64,
    /// The pid from the most recent "enclave process started" line.
    pub enclave_pid: u32,
    /// It said it stays sealed instead of ready (`STALE_MARKER`).
    pub sealed: bool,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read but not yet consumed by a `wait_*`/`drain_*` call.
    pending: VecDeque<String>,
    /// Every stdout line seen so far (for failure reports).
    stdout_seen: Vec<String>,
    log_path: PathBuf,
}

fn parse_enclave_pid(line: &str) -> Option<u32> {
    let rest = &line[line.find(ENCLAVE_MARKER)? + ENCLAVE_MARKER.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn parse_admin_addr(line: &str) -> Option<String> {
    let rest = line.strip_prefix(ADMIN_MARKER)?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// What [`Keyward::start`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    Ready,
    Sealed,
}

/// The URL and admin address of a sealed node's line: `Keyward is sealed
/// at https://ADDR (admin http://ADMIN): …`.
fn parse_sealed(line: &str) -> Option<(String, String)> {
    let rest = &line[line.find(SEALED_MARKER)? + SEALED_MARKER.len()..];
    let mut words = rest.split_whitespace();
    let url = words.next()?.to_string();
    let admin = rest.split_once("(admin http://")?.1.split(')').next()?.to_string();
    Some((url, admin))
}

fn parse_ready_url(line: &str) -> Option<String> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let url = rest.split_whitespace().next()?;
    Some(url.trim_end_matches('/').to_string())
}

fn parse_sealed_url(line: &str) -> Option<String> {
    let rest = &line[line.find(STALE_MARKER)? + STALE_MARKER.len()..];
    let url = rest.split_whitespace().next()?;
    Some(url.trim_end_matches(':').trim_end_matches('/').to_string())
}

impl Keyward {
    async fn start(
        data_dir: &Path,
        creds: &Creds,
        operator: &Creds,
        log_path: &Path,
        (extra_args, extra_env): (&[String], &[(String, String)]),
        clock_offset: i64,
        until: Until,
    ) -> Keyward {
        let log = std::fs::File::create(log_path).expect("create stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("dev")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env("KEYWARD_DEV_ACCESS_KEY_ID", &creds.access_key_id)
            .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &creds.secret)
            .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
            .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn keyward dev");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut kw = Keyward {
            pid: child.id(),
            child: Some(child),
            url: String::new(),
            addr: String::new(),
            admin_addr: String::new(),
            ca_pem: String::new(),
            data_dir: data_dir.to_path_buf(),
            creds: creds.clone(),
            operator: operator.clone(),
            clock_offset,
            enclave_pid: 0,
            sealed: false,
            lines: rx,
            pending: VecDeque::new(),
            stdout_seen: Vec::new(),
            log_path: log_path.to_path_buf(),
        };
        // Read stdout until both the ready line and the enclave pid line were
        // seen (in either order).
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut url = None;
        let mut enclave_pid = None;
        let mut admin = None;
        while url.is_none() || enclave_pid.is_none() {
            let line = kw
                .next_line_until(deadline, "the ready (or sealed) and enclave pid lines")
                .await;
            if until == Until::Sealed
                && let Some((u, a)) = parse_sealed(&line)
            {
                url = Some(u);
                admin = Some(a);
            } else if let Some(u) = parse_ready_url(&line).filter(|_| until == Until::Ready) {
                url = Some(u);
            } else if let Some(u) = parse_sealed_url(&line) {
                url = Some(u);
                kw.sealed = true;
            } else if let Some(p) = parse_enclave_pid(&line) {
                enclave_pid = Some(p);
            } else if let Some(a) = parse_admin_addr(&line) {
                admin = Some(a);
            }
        }
        let url = url.expect("ready url");
        kw.addr = url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("ready url is not https://: {url}"))
            .to_string();
        kw.admin_addr = admin.expect("the admin line precedes the ready line");
        if until == Until::Sealed || kw.sealed {
            let ca = kw.admin_get("/ca.pem").await;
            assert_eq!(ca.status, 200, "the sealed enclave's CA (admin /ca.pem)");
            kw.ca_pem = String::from_utf8(ca.body).expect("a PEM");
        } else {
            let ca_path = data_dir.join("tls").join("ca.pem");
            kw.ca_pem = std::fs::read_to_string(&ca_path).unwrap_or_else(|e| panic!("{}: {e}", ca_path.display()));
        }
        assert!(
            kw.addr.starts_with("127.0.0.1:"),
            "listening on {} instead of 127.0.0.1",
            kw.addr
        );
        let port: u16 = kw.addr["127.0.0.1:".len()..].parse().expect("port in ready url");
        assert_ne!(port, 0, "ready line must name the actual bound port");
        kw.url = url;
        kw.enclave_pid = enclave_pid.expect("enclave pid");
        kw
    }

    /// Next stdout line, panicking with the logs if the deadline passes or
    /// stdout closes first.
    async fn next_line_until(&mut self, deadline: Instant, waiting_for: &str) -> String {
        if let Some(line) = self.pending.pop_front() {
            return line;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.stdout_seen.push(line.clone());
                line
            }
            Ok(None) => panic!(
                "keyward stdout closed while waiting for {waiting_for}; exit status: {:?}",
                self.child.as_mut().map(|c| c.try_wait())
            ),
            Err(_) => panic!("timed out waiting for {waiting_for}"),
        }
    }

    /// Blocks on stdout until a new "enclave process started" line appears;
    /// returns (and records) the new pid.
    pub async fn wait_for_enclave_restart(&mut self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .next_line_until(deadline, "a new 'enclave process started' line")
                .await;
            if let Some(pid) = parse_enclave_pid(&line) {
                self.enclave_pid = pid;
                return pid;
            }
        }
    }

    /// The pids of "enclave process started" lines printed since the last
    /// look, without waiting.
    pub fn drain_enclave_starts(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            self.stdout_seen.push(line.clone());
            self.pending.push_back(line);
        }
        self.pending.retain(|line| match parse_enclave_pid(line) {
            Some(pid) => {
                pids.push(pid);
                false
            }
            None => true,
        });
        pids
    }

    /// SIGTERMs the launcher and waits (bounded) for it to exit. Panics if it
    /// had to be killed.
    pub fn stop(&mut self) -> ExitStatus {
        match self.stop_inner() {
            Ok(status) => status,
            Err(e) => panic!("{e}"),
        }
    }

    fn stop_inner(&mut self) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("keyward already stopped".into());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("keyward had already exited before SIGTERM: {status}"));
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("waiting for keyward: {e}")),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
                if self.enclave_pid != 0 {
                    let _ = Command::new("kill")
                        .args(["-KILL", &self.enclave_pid.to_string()])
                        .status();
                }
                let _ = rx.recv_timeout(STOP_TIMEOUT);
                Err(format!(
                    "keyward did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it"
                ))
            }
        }
    }

    /// SIGKILLs the whole node at once, launcher (with its host proxy) and
    /// enclave, as a machine failure would, and reaps the launcher.
    pub fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string(), &self.enclave_pid.to_string()])
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    pub fn dump_logs(&self) {
        eprintln!("---- keyward stdout ({} lines) ----", self.stdout_seen.len());
        for line in &self.stdout_seen {
            eprintln!("{line}");
        }
        eprintln!("---- keyward stderr ({}) ----", self.log_path.display());
        match std::fs::read_to_string(&self.log_path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(300);
                for line in &lines[from..] {
                    eprintln!("{line}");
                }
            }
            Err(e) => eprintln!("(cannot read: {e})"),
        }
        eprintln!("---- end of keyward logs ----");
    }

    // ------------------------------------------------------------ clients

    /// An SDK client with this service's credentials; no retries (failures
    /// must be visible), 30 s operation timeout (a hang fails the test). It
    /// signs with the enclave's (possibly shifted) time.
    pub fn client(&self) -> aws_sdk_kms::Client {
        sdk_client_shifted(
            &self.url,
            &self.ca_pem,
            &self.creds.access_key_id,
            &self.creds.secret,
            Some(REQUEST_TIMEOUT),
            self.clock_offset,
        )
    }

    /// An SDK client signing with the real (unshifted) time.
    pub fn client_real_time(&self) -> aws_sdk_kms::Client {
        sdk_client(
            &self.url,
            &self.ca_pem,
            &self.creds.access_key_id,
            &self.creds.secret,
            Some(REQUEST_TIMEOUT),
        )
    }

    /// The enclave's current time: the real time shifted by `clock_offset`.
    pub fn now(&self) -> SystemTime {
        shifted_now(self.clock_offset)
    }

    pub fn client_with(&self, access_key_id: &str, secret: &str) -> aws_sdk_kms::Client {
        sdk_client(&self.url, &self.ca_pem, access_key_id, secret, Some(REQUEST_TIMEOUT))
    }

    /// No retries and no operation timeout: callers bound requests
    /// themselves so a hang is told apart from an error.
    pub fn client_unbounded(&self) -> aws_sdk_kms::Client {
        sdk_client(
            &self.url,
            &self.ca_pem,
            &self.creds.access_key_id,
            &self.creds.secret,
            None,
        )
    }

    /// ARN of a key of the bootstrap tenant.
    pub fn key_arn(key_id: &str) -> String {
        keyward_test_support::key_arn(key_id)
    }

    // ------------------------------------------------------------ raw HTTP

    /// A SigV4-signed `POST /` with `X-Amz-Target: TrentService.{op}`.
    pub async fn signed_call(&self, op: &str, body: &[u8]) -> RawResponse {
        self.signed_call_target(&format!("TrentService.{op}"), body).await
    }

    /// A SigV4-signed `POST /` with this exact `X-Amz-Target`.
    pub async fn signed_call_target(&self, target: &str, body: &[u8]) -> RawResponse {
        let mut headers = api_headers(&self.addr, target);
        sign_headers(&mut headers, &self.addr, body, &self.creds, self.now());
        self.request("POST", "/", &headers, body).await
    }

    /// One HTTPS request to the service (`Connection: close`, the enclave
    /// CA trusted), read to the end. Panics on I/O errors or after
    /// [`REQUEST_TIMEOUT`].
    pub async fn request(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> RawResponse {
        let config = keyward_test_support::tls::client_config(&self.ca_pem);
        let exchange = async {
            let stream = keyward_test_support::tls::connect(&self.addr, config).await?;
            exchange(stream, method, path, headers, body).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => panic!("{method} {path} to https://{}: {e}", self.addr),
            Err(_) => panic!(
                "{method} {path} to https://{}: no complete response within {REQUEST_TIMEOUT:?}",
                self.addr
            ),
        }
    }

    /// `GET` on the proxy's admin listener (plain HTTP).
    pub async fn admin_get(&self, path: &str) -> RawResponse {
        let headers = vec![("host".to_string(), self.admin_addr.clone())];
        http_request(&self.admin_addr, "GET", path, &headers, b"").await
    }

    pub async fn healthz(&self) -> u16 {
        self.admin_get("/healthz").await.status
    }

    /// Bounded readiness polling of `/healthz` (used only after an enclave
    /// restart, whose stdout line says the process started, not that the
    /// proxy reconnected).
    pub async fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if let Ok(Ok(200)) = tokio::time::timeout(Duration::from_secs(5), self.healthz_checked()).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz did not return 200 within {timeout:?}"
            );
        }
    }

    async fn healthz_checked(&self) -> std::io::Result<u16> {
        let headers = vec![("host".to_string(), self.admin_addr.clone())];
        Ok(try_http_request(&self.admin_addr, "GET", "/healthz", &headers, b"")
            .await?
            .status)
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop_inner()
        {
            eprintln!("stopping keyward: {e}");
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Whether a process is gone (no /proc entry) or a zombie awaiting reaping.
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // "pid (comm) S ..." — the state follows the last ')'.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some(Some('Z' | 'X')))
        }
    }
}

/// An SDK client for the HTTPS endpoint `url` trusting only `ca_pem`.
pub fn sdk_client(
    url: &str,
    ca_pem: &str,
    access_key_id: &str,
    secret: &str,
    op_timeout: Option<Duration>,
) -> aws_sdk_kms::Client {
    sdk_client_shifted(url, ca_pem, access_key_id, secret, op_timeout, 0)
}

/// [`sdk_client`] signing with the real time shifted by `offset_seconds`.
pub fn sdk_client_shifted(
    url: &str,
    ca_pem: &str,
    access_key_id: &str,
    secret: &str,
    op_timeout: Option<Duration>,
    offset_seconds: i64,
) -> aws_sdk_kms::Client {
    let config = client_config(access_key_id, secret, op_timeout, offset_seconds)
        .endpoint_url(url)
        .http_client(keyward_test_support::tls::sdk_http_client(ca_pem))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the response
/// to EOF. Panics on I/O errors or after [`REQUEST_TIMEOUT`].
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> RawResponse {
    match tokio::time::timeout(REQUEST_TIMEOUT, try_http_request(addr, method, path, headers, body)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => panic!("{method} {path} to {addr}: {e}"),
        Err(_) => panic!("{method} {path} to {addr}: no complete response within {REQUEST_TIMEOUT:?}"),
    }
}

pub async fn try_http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<RawResponse> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);

    let stream = tokio::net::TcpStream::connect(addr).await?;
    send_and_read(stream, bytes).await
}

/// Sends one request (`Connection: close`) on `stream` and reads the response to EOF.
pub async fn exchange<S>(
    stream: S,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<RawResponse>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    send_and_read(stream, bytes).await
}

async fn send_and_read<S>(mut stream: S, bytes: Vec<u8>) -> std::io::Result<RawResponse>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_response(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn parse_response(raw: &[u8]) -> Result<RawResponse, String> {
    let text_err = || format!("malformed HTTP response: {:?}", String::from_utf8_lossy(raw));
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(text_err)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| text_err())?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(text_err)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(text_err());
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(text_err)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let body = if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        decode_chunked(rest).ok_or_else(text_err)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| text_err())?;
        if rest.len() < len {
            return Err(format!("truncated body: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawResponse { status, headers, body })
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------- stdout, for secret scans

impl Keyward {
    /// Every stdout line the launcher printed so far (without waiting; lines
    /// not yet consumed by a `wait_*` call stay pending for it).
    pub fn stdout_lines(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout_seen.push(line.clone());
            self.pending.push_back(line);
        }
        self.stdout_seen.clone()
    }
}

// ---------------------------------------------------------------- policy modules

/// `tests/data/<name>.wat` compiled to a WebAssembly binary.
pub fn wat_module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names (without `.wat`) of every hostile policy module in
/// `tests/data` (`fail_policy_*.wat`), sorted.
pub fn hostile_policy_modules() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".wat")?;
            stem.starts_with("fail_policy_").then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Resident memory (`VmRSS`) of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

/// Every regular file below `dir` (no links followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.push(path);
            }
        }
    }
    out
}
