//! Test harness: starts and stops `keyward dev`, builds SDK clients, and sends
//! raw (optionally SigV4-signed) HTTP/1.1 requests for what an SDK can't send.
//!
//! Synchronisation with the service is done by reading its stdout lines (the
//! "ready" and "enclave process started" lines), never by sleeping.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The bootstrap tenant of `keyward dev`.
pub const ACCOUNT: &str = "111122223333";
/// The launcher's default region (not passed on the command line).
pub const REGION: &str = "us-east-1";
/// How long the service may take to print its ready line (debug build, 2
/// cores, other tests starting in parallel).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the launcher may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any single request in the tests (a hang is a failure).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const READY_MARKER: &str = "Keyward is ready at ";
const ENCLAVE_MARKER: &str = "enclave process started: pid ";

// ---------------------------------------------------------------- randomness

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill(&mut v[..]);
    v
}

fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub fn random_alnum(n: usize) -> String {
    random_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
}

// ---------------------------------------------------------------- credentials

#[derive(Clone, Debug)]
pub struct Creds {
    pub access_key_id: String,
    pub secret: String,
}

impl Creds {
    /// `AKIA` + 16 upper-case alphanumerics, and a 40-character secret.
    pub fn random() -> Self {
        Self {
            access_key_id: format!("AKIA{}", random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
            secret: random_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+", 40),
        }
    }
}

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
            &extra,
            offset_seconds,
        )
        .await
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
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub data_dir: PathBuf,
    pub creds: Creds,
    /// The operator's credential.
    pub operator: Creds,
    /// Seconds the enclave's clock is shifted by (`--mock-clock-offset`);
    /// [`Keyward::client`] and [`Keyward::signed_call`] sign with that time.
    pub clock_offset: i64,
    /// The pid from the most recent "enclave process started" line.
    pub enclave_pid: u32,
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

fn parse_ready_url(line: &str) -> Option<String> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let url = rest.split_whitespace().next()?;
    Some(url.trim_end_matches('/').to_string())
}

impl Keyward {
    async fn start(
        data_dir: &Path,
        creds: &Creds,
        operator: &Creds,
        log_path: &Path,
        extra_args: &[String],
        clock_offset: i64,
    ) -> Keyward {
        let log = std::fs::File::create(log_path).expect("create stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("dev")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env("KEYWARD_DEV_ACCESS_KEY_ID", &creds.access_key_id)
            .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &creds.secret)
            .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
            .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
            .env("RUST_LOG", "info")
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
            data_dir: data_dir.to_path_buf(),
            creds: creds.clone(),
            operator: operator.clone(),
            clock_offset,
            enclave_pid: 0,
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
        while url.is_none() || enclave_pid.is_none() {
            let line = kw.next_line_until(deadline, "the ready and enclave pid lines").await;
            if let Some(u) = parse_ready_url(&line) {
                url = Some(u);
            } else if let Some(p) = parse_enclave_pid(&line) {
                enclave_pid = Some(p);
            }
        }
        let url = url.expect("ready url");
        kw.addr = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("ready url is not http://: {url}"))
            .to_string();
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
        sdk_client(&self.url, access_key_id, secret, Some(REQUEST_TIMEOUT))
    }

    /// No retries and no operation timeout: callers bound requests
    /// themselves so a hang is told apart from an error.
    pub fn client_unbounded(&self) -> aws_sdk_kms::Client {
        sdk_client(&self.url, &self.creds.access_key_id, &self.creds.secret, None)
    }

    /// ARN of a key of the bootstrap tenant.
    pub fn key_arn(key_id: &str) -> String {
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
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
        http_request(&self.addr, "POST", "/", &headers, body).await
    }

    pub async fn healthz(&self) -> u16 {
        let headers = vec![("host".to_string(), self.addr.clone())];
        http_request(&self.addr, "GET", "/healthz", &headers, b"").await.status
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
        let headers = vec![("host".to_string(), self.addr.clone())];
        Ok(try_http_request(&self.addr, "GET", "/healthz", &headers, b"")
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

/// The real time shifted by `offset_seconds` (negative is the past).
pub fn shifted_now(offset_seconds: i64) -> SystemTime {
    let now = SystemTime::now();
    let delta = Duration::from_secs(offset_seconds.unsigned_abs());
    if offset_seconds >= 0 { now + delta } else { now - delta }
}

/// An SDK time source running `offset_seconds` ahead of (or behind) the
/// real clock, for signing requests to an enclave with a shifted clock.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedTimeSource {
    pub offset_seconds: i64,
}

impl aws_smithy_async::time::TimeSource for ShiftedTimeSource {
    fn now(&self) -> SystemTime {
        shifted_now(self.offset_seconds)
    }
}

pub fn sdk_client(url: &str, access_key_id: &str, secret: &str, op_timeout: Option<Duration>) -> aws_sdk_kms::Client {
    sdk_client_shifted(url, access_key_id, secret, op_timeout, 0)
}

/// [`sdk_client`] signing with the real time shifted by `offset_seconds`.
pub fn sdk_client_shifted(
    url: &str,
    access_key_id: &str,
    secret: &str,
    op_timeout: Option<Duration>,
    offset_seconds: i64,
) -> aws_sdk_kms::Client {
    let mut timeouts = TimeoutConfig::builder().connect_timeout(Duration::from_secs(10));
    if let Some(t) = op_timeout {
        timeouts = timeouts.operation_timeout(t);
    }
    let config = aws_sdk_kms::Config::builder()
        .endpoint_url(url)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .behavior_version(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .time_source(ShiftedTimeSource { offset_seconds })
        // The SDK learns a "clock skew" from the HTTP Date header, which the
        // host proxy sets from the host's real clock, and would then sign
        // with that time instead of the enclave's shifted one.
        .disable_clock_skew_correction(offset_seconds != 0)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

// ---------------------------------------------------------------- SDK errors

/// HTTP status and AWS error code (`__type`) of a failed SDK call.
pub fn error_parts<E>(err: &SdkError<E>) -> (Option<u16>, Option<String>)
where
    E: ProvideErrorMetadata,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    (status, err.code().map(str::to_string))
}

/// Asserts that an SDK call failed with exactly this status and `__type`.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug, E>(what: &str, result: Result<T, SdkError<E>>, status: u16, code: &str)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(v) => panic!("{what}: expected {code} ({status}), but the call succeeded: {v:?}"),
        Err(err) => {
            let (got_status, got_code) = error_parts(&err);
            assert_eq!(
                (got_status, got_code.as_deref()),
                (Some(status), Some(code)),
                "{what}: wrong error: {}",
                aws_sdk_kms::error::DisplayErrorContext(&err)
            );
        }
    }
}

// ---------------------------------------------------------------- raw HTTP

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    #[allow(dead_code)] // printed in failure messages through Debug
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `__type` of an AWS JSON error body.
    pub fn error_type(&self) -> Option<String> {
        self.json().get("__type").and_then(|t| t.as_str()).map(str::to_string)
    }

    /// Asserts an AWS JSON error with this status and `__type`, and a message.
    #[track_caller]
    pub fn assert_error(&self, what: &str, status: u16, code: &str) {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{what}: wrong status; body: {body}");
        assert_eq!(
            self.error_type().as_deref(),
            Some(code),
            "{what}: wrong __type; body: {body}"
        );
        let json = self.json();
        let has_message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .is_some_and(|m| m.is_string());
        assert!(has_message, "{what}: error body has no message: {body}");
    }
}

/// `host`, `content-type` and `x-amz-target` for an API call.
pub fn api_headers(addr: &str, target: &str) -> Vec<(String, String)> {
    vec![
        ("host".to_string(), addr.to_string()),
        ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ("x-amz-target".to_string(), target.to_string()),
    ]
}

/// SigV4-signs (service `kms`) a `POST /` with these headers and body at
/// `time`, appending `x-amz-date` and `authorization`.
pub fn sign_headers(headers: &mut Vec<(String, String)>, addr: &str, body: &[u8], creds: &Creds, time: SystemTime) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    let identity = Credentials::new(&creds.access_key_id, &creds.secret, None, None, "test").into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{addr}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();
    let added: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    assert!(
        added.iter().any(|(k, _)| k == "authorization"),
        "signer produced no authorization header"
    );
    headers.extend(added);
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

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
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

// ---------------------------------------------------------------- SDK helpers

pub type Context = std::collections::HashMap<String, String>;

pub fn context(pairs: &[(&str, &str)]) -> Context {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Creates a symmetric key and returns its KeyId (a uuid).
pub async fn create_key(client: &aws_sdk_kms::Client, description: &str) -> String {
    let out = client
        .create_key()
        .description(description)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateKey: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
    let meta = out.key_metadata().expect("CreateKey returns KeyMetadata");
    meta.key_id().to_string()
}

pub async fn encrypt(client: &aws_sdk_kms::Client, key_id: &str, plaintext: &[u8], ctx: Option<&Context>) -> Vec<u8> {
    let out = client
        .encrypt()
        .key_id(key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext))
        .set_encryption_context(ctx.cloned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("Encrypt: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
    out.ciphertext_blob()
        .expect("Encrypt returns CiphertextBlob")
        .as_ref()
        .to_vec()
}

/// Decrypts (optionally naming the key) and returns the plaintext.
pub async fn decrypt(
    client: &aws_sdk_kms::Client,
    key_id: Option<&str>,
    ciphertext: &[u8],
    ctx: Option<&Context>,
) -> Vec<u8> {
    let out = client
        .decrypt()
        .set_key_id(key_id.map(str::to_string))
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext))
        .set_encryption_context(ctx.cloned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("Decrypt: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
    out.plaintext().expect("Decrypt returns Plaintext").as_ref().to_vec()
}

/// Whether `id` (as returned in a response's KeyId) names the key `key_id`:
/// its uuid or its ARN.
pub fn names_key(id: Option<&str>, key_id: &str) -> bool {
    id.is_some_and(|id| id == key_id || id == Keyward::key_arn(key_id))
}

/// Every KeyId, following NextMarker with pages of `limit`.
pub async fn list_all_keys(client: &aws_sdk_kms::Client, limit: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..10_000 {
        let out = client
            .list_keys()
            .limit(limit)
            .set_marker(marker.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListKeys: {}", aws_sdk_kms::error::DisplayErrorContext(&e)));
        ids.extend(out.keys().iter().filter_map(|e| e.key_id().map(str::to_string)));
        if !out.truncated() {
            return ids;
        }
        marker = Some(
            out.next_marker()
                .expect("truncated ListKeys page without NextMarker")
                .to_string(),
        );
    }
    panic!("ListKeys never stopped paginating");
}

// ---------------------------------------------------------------- more helpers

/// Unwraps an SDK result, panicking with the full error context.
#[track_caller]
pub fn must<T, E>(what: &str, result: Result<T, SdkError<E>>) -> T
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.unwrap_or_else(|e| panic!("{what}: {}", aws_sdk_kms::error::DisplayErrorContext(&e)))
}

/// Creates a key of this spec and usage (`None` leaves it to the service's
/// default) and returns its KeyId.
pub async fn create_key_of(
    client: &aws_sdk_kms::Client,
    spec: aws_sdk_kms::types::KeySpec,
    usage: Option<aws_sdk_kms::types::KeyUsageType>,
) -> String {
    let what = format!("CreateKey {spec:?} {usage:?}");
    let out = must(
        &what,
        client.create_key().key_spec(spec).set_key_usage(usage).send().await,
    );
    out.key_metadata()
        .unwrap_or_else(|| panic!("{what}: no KeyMetadata"))
        .key_id()
        .to_string()
}

/// The key uuid and key version of a ciphertext blob (byte 0 = 1, bytes
/// 1..17 the key uuid, bytes 17..21 the key version, big-endian).
pub fn blob_key_version(blob: &[u8]) -> (uuid::Uuid, u32) {
    assert!(blob.len() >= 21, "ciphertext blob of {} bytes is too short", blob.len());
    assert_eq!(blob[0], 1, "ciphertext blob format byte");
    let key = uuid::Uuid::from_slice(&blob[1..17]).expect("16 bytes");
    let version = u32::from_be_bytes(blob[17..21].try_into().expect("4 bytes"));
    (key, version)
}

/// Seconds since the epoch of a SystemTime.
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub const DAY: i64 = 24 * 3600;

/// Asserts that an SDK timestamp lies within `tolerance` seconds of `expected`
/// (seconds since the epoch).
#[track_caller]
pub fn assert_near(what: &str, got: Option<&aws_sdk_kms::primitives::DateTime>, expected: i64, tolerance: i64) {
    let got = got.unwrap_or_else(|| panic!("{what}: missing timestamp"));
    let diff = got.secs() - expected;
    assert!(
        diff.abs() <= tolerance,
        "{what}: {got} is {diff} s away from the expected {} (tolerance {tolerance} s)",
        aws_sdk_kms::primitives::DateTime::from_secs(expected)
    );
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

/// The example policies (`policies/examples/<name>`), by crate name.
pub const EXAMPLE_POLICIES: &[&str] = &[
    "attested-pcr0",
    "context-tenant",
    "time-window",
    "justification",
    "deletion-guard",
];

/// `policies/target/wasm32-unknown-unknown/release`, once the example
/// policies were built (once per test run), or why they could not be.
static EXAMPLE_POLICY_DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();

/// The WebAssembly module of example policy `name` (one of
/// [`EXAMPLE_POLICIES`]). The first call builds every example with
/// `cargo build --release --target wasm32-unknown-unknown` in `policies/`
/// (its own workspace and target dir, so no lock conflict with the cargo
/// running the tests); later calls only read the file. Blocks while building:
/// call it before starting a service.
pub fn example_policy(name: &str) -> Vec<u8> {
    assert!(
        EXAMPLE_POLICIES.contains(&name),
        "{name} is not an example policy ({EXAMPLE_POLICIES:?})"
    );
    let dir = match EXAMPLE_POLICY_DIR.get_or_init(build_example_policies) {
        Ok(dir) => dir,
        Err(why) => panic!("{why}"),
    };
    // Cargo names a cdylib after its crate, with `-` as `_`.
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn build_example_policies() -> Result<PathBuf, String> {
    const TARGET: &str = "wasm32-unknown-unknown";
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let target_dir = workspace.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        // Its own target dir even if the outer build set another one.
        .env("CARGO_TARGET_DIR", &target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cargo:?} build in {}: {e}", workspace.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing_target = stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`");
        let hint = if missing_target {
            format!("the {TARGET} target is not installed: run `rustup target add {TARGET}`\n")
        } else {
            String::new()
        };
        return Err(format!(
            "{hint}building the example policies (`cargo build --release --locked --target {TARGET}` in {}) \
             failed with {}:\n{stderr}",
            workspace.display(),
            output.status
        ));
    }
    let dir = target_dir.join(TARGET).join("release");
    for name in EXAMPLE_POLICIES {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        if !path.is_file() {
            return Err(format!(
                "the example policy build succeeded but {} is missing",
                path.display()
            ));
        }
    }
    Ok(dir)
}

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
