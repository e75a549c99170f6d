//! A man in the middle cannot change a signed request: a test-only
//! forwarder between the official AWS SDK and the service (plain HTTP from
//! the SDK, TLS to the enclave: a party that sees the plaintext between
//! signing and the enclave, such as a TLS terminator the client trusts)
//! alters one request at a time after it was signed (its body, its `X-Amz-Target`, the KeyId in
//! its body, a signed header); each altered request is refused with
//! `InvalidSignatureException`, unaltered requests through the same forwarder
//! succeed, and each refusal is in the tenant's audit chain as a Deny.

use std::sync::{Arc, Mutex};

use aws_sdk_kms::primitives::{Blob, DateTime, DateTimeFormat};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{REQUEST_TIMEOUT, Sandbox, decrypt, encrypt, expect_error, sdk_client};
use crate::principals::{b64, create_key_as, create_tenant, sdk, sdk_ok};

/// One HTTP/1.1 request as the forwarder received it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub request_line: String,
    /// Names and values as received (original case and order).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces the value of an existing header.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        let slot = self
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("the request has no {name} header"))?;
        slot.1 = value.to_string();
        Ok(())
    }

    /// The `SignedHeaders` of the SigV4 `Authorization` header.
    pub fn signed_headers(&self) -> Vec<String> {
        self.header("authorization")
            .and_then(|a| a.split("SignedHeaders=").nth(1))
            .map(|rest| {
                rest.split([',', ' '])
                    .next()
                    .unwrap_or_default()
                    .split(';')
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the only occurrence of `from` in the body by `to` (same length).
    pub fn replace_in_body(&mut self, from: &str, to: &str) -> Result<(), String> {
        let body = String::from_utf8(self.body.clone()).map_err(|_| "body is not UTF-8".to_string())?;
        if body.matches(from).count() != 1 {
            return Err(format!("{from:?} does not occur exactly once in the body {body}"));
        }
        self.body = body.replace(from, to).into_bytes();
        Ok(())
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.request_line);
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("content-length") {
                out.push_str(&format!("{k}: {}\r\n", self.body.len()));
            } else {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Alters a request; returns what it did, or why it could not.
pub type Mutation = Box<dyn FnOnce(&mut HttpRequest) -> Result<String, String> + Send>;

/// What the forwarder did with one request.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// `X-Amz-Target` as the client sent it and as forwarded.
    pub target_in: String,
    pub target_out: String,
    /// The mutation's report, when one was armed for this request.
    pub altered: Option<Result<String, String>>,
}

#[derive(Default)]
struct State {
    next: Option<Mutation>,
    log: Vec<Forwarded>,
}

/// A TCP forwarder on 127.0.0.1:0 to `upstream` that applies an armed
/// [`Mutation`] to the next request it forwards.
pub struct Forwarder {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// `ca_pem`: the service's enclave CA, which the forwarder trusts upstream.
    pub async fn start(upstream: &str, ca_pem: &str) -> Forwarder {
        let tls = keyward_test_support::tls::client_config(ca_pem);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let url = format!("http://{}", listener.local_addr().expect("forwarder addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = upstream.to_string();
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve_connection(
                    client,
                    upstream.clone(),
                    Arc::clone(&tls),
                    Arc::clone(&shared),
                ));
            }
        });
        Forwarder { url, state, task }
    }

    /// Alters the next request with `mutation`.
    pub fn arm(&self, mutation: Mutation) {
        let mut state = self.state.lock().expect("forwarder state");
        assert!(state.next.is_none(), "a mutation is already armed");
        state.next = Some(mutation);
    }

    /// The log of forwarded requests so far (and clears it).
    pub fn take_log(&self) -> Vec<Forwarded> {
        std::mem::take(&mut self.state.lock().expect("forwarder state").log)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    client: TcpStream,
    upstream: String,
    tls: Arc<rustls::ClientConfig>,
    state: Arc<Mutex<State>>,
) {
    let (client_read, mut client_write) = client.into_split();
    let mut client_read = BufReader::new(client_read);
    let Ok(up) = keyward_test_support::tls::connect(&upstream, tls).await else {
        return;
    };
    let (up_read, mut up_write) = tokio::io::split(up);
    let mut up_read = BufReader::new(up_read);
    loop {
        let Ok(Some(mut request)) = read_request(&mut client_read).await else {
            return;
        };
        let target_in = request.header("x-amz-target").unwrap_or_default().to_string();
        let mutation = state.lock().expect("forwarder state").next.take();
        let altered = mutation.map(|m| m(&mut request));
        let target_out = request.header("x-amz-target").unwrap_or_default().to_string();
        state.lock().expect("forwarder state").log.push(Forwarded {
            target_in,
            target_out,
            altered,
        });
        if up_write.write_all(&request.to_bytes()).await.is_err() {
            return;
        }
        let Ok((response, close)) = read_response(&mut up_read).await else {
            return;
        };
        if client_write.write_all(&response).await.is_err() || close {
            return;
        }
    }
}

async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn split_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
}

async fn read_request<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> std::io::Result<Option<HttpRequest>> {
    let Some(lines) = read_head(reader).await? else {
        return Ok(None);
    };
    let headers = split_headers(&lines[1..]);
    let mut body = vec![0u8; content_length(&headers).unwrap_or(0)];
    reader.read_exact(&mut body).await?;
    Ok(Some(HttpRequest {
        request_line: lines[0].clone(),
        headers,
        body,
    }))
}

/// The raw response bytes, and whether the connection closes after it.
async fn read_response<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> std::io::Result<(Vec<u8>, bool)> {
    let lines = read_head(reader)
        .await?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    let headers = split_headers(&lines[1..]);
    let mut raw = lines.join("\r\n").into_bytes();
    raw.extend_from_slice(b"\r\n\r\n");
    let close = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).await?;
            raw.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).await?;
            raw.extend_from_slice(&chunk);
            if size == 0 {
                return Ok((raw, close));
            }
        }
    } else if let Some(len) = content_length(&headers) {
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        raw.extend_from_slice(&body);
        Ok((raw, close))
    } else {
        reader.read_to_end(&mut raw).await?;
        Ok((raw, true))
    }
}

/// Checks that `name` is among the request's SigV4 signed headers.
fn require_signed(request: &HttpRequest, name: &str) -> Result<(), String> {
    let signed = request.signed_headers();
    if signed.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(format!(
            "{name} is not a signed header ({signed:?}): altering it proves nothing"
        ))
    }
}

/// `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`) shifted by `seconds`.
fn shift_amz_date(value: &str, seconds: i64) -> Result<String, String> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(format!("unexpected X-Amz-Date {value:?}"));
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    let parsed = DateTime::from_str(&rfc3339, DateTimeFormat::DateTime).map_err(|e| e.to_string())?;
    let shifted = DateTime::from_secs(parsed.secs() + seconds)
        .fmt(DateTimeFormat::DateTime)
        .map_err(|e| e.to_string())?;
    Ok(shifted.replace(['-', ':'], ""))
}

#[test]
fn amz_date_shifts_across_midnight() {
    assert_eq!(shift_amz_date("20241231T235959Z", 1).as_deref(), Ok("20250101T000000Z"));
    assert!(shift_amz_date("2024-12-31", 1).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_altered_after_signing_are_refused_and_audited() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let t = create_tenant(&kw).await;
    let key1 = create_key_as(&kw, &t.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let key2 = create_key_as(&kw, &t.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    assert_eq!(key1.len(), key2.len());

    let fwd = Forwarder::start(&kw.addr, &kw.ca_pem).await;
    let client = sdk_client(
        &fwd.url,
        &kw.ca_pem,
        &t.user.access_key_id,
        &t.user.secret,
        Some(REQUEST_TIMEOUT),
    );

    // Control: unaltered requests pass through the forwarder.
    let plaintext = b"tamper-test plaintext".to_vec();
    let ct = encrypt(&client, &key1, &plaintext, None).await;
    assert_eq!(decrypt(&client, None, &ct, None).await, plaintext);

    let flipped = {
        let mut p = plaintext.clone();
        p[0] ^= 1;
        p
    };
    let (plain_b64, flipped_b64) = (b64(&plaintext), b64(&flipped));
    assert_eq!(plain_b64.len(), flipped_b64.len());
    let (k1, k2) = (key1.clone(), key2.clone());
    // (what, mutation, X-Amz-Target the service receives)
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "plaintext in the body changed",
            Box::new(move |r: &mut HttpRequest| {
                r.replace_in_body(&plain_b64, &flipped_b64)?;
                Ok("Plaintext changed".into())
            }),
            "TrentService.Encrypt",
        ),
        (
            "X-Amz-Target Encrypt -> Decrypt",
            Box::new(|r: &mut HttpRequest| {
                require_signed(r, "x-amz-target")?;
                r.set_header("x-amz-target", "TrentService.Decrypt")?;
                Ok("target changed".into())
            }),
            "TrentService.Decrypt",
        ),
        (
            "X-Amz-Target Encrypt -> GenerateDataKey",
            Box::new(|r: &mut HttpRequest| {
                r.set_header("x-amz-target", "TrentService.GenerateDataKey")?;
                Ok("target changed".into())
            }),
            "TrentService.GenerateDataKey",
        ),
        (
            "KeyId in the body changed to another key of the tenant",
            Box::new(move |r: &mut HttpRequest| {
                r.replace_in_body(&k1, &k2)?;
                Ok("KeyId changed".into())
            }),
            "TrentService.Encrypt",
        ),
        (
            "Content-Type changed",
            Box::new(|r: &mut HttpRequest| {
                require_signed(r, "content-type")?;
                let ct = r.header("content-type").unwrap_or_default().to_string();
                if ct != "application/x-amz-json-1.1" {
                    return Err(format!("unexpected content-type {ct:?}"));
                }
                r.set_header("content-type", "application/x-amz-json-1.0")?;
                Ok("content-type changed".into())
            }),
            "TrentService.Encrypt",
        ),
        (
            "X-Amz-Date one second later",
            Box::new(|r: &mut HttpRequest| {
                require_signed(r, "x-amz-date")?;
                let date = r.header("x-amz-date").ok_or("no x-amz-date")?.to_string();
                let later = shift_amz_date(&date, 1)?;
                r.set_header("x-amz-date", &later)?;
                Ok(format!("x-amz-date {date} -> {later}"))
            }),
            "TrentService.Encrypt",
        ),
    ];
    let mut expected_targets = Vec::new();
    fwd.take_log();
    for (what, mutation, received) in cases {
        fwd.arm(mutation);
        expect_error(
            what,
            client
                .encrypt()
                .key_id(&key1)
                .plaintext(Blob::new(plaintext.clone()))
                .send()
                .await,
            400,
            "InvalidSignatureException",
        );
        let log = fwd.take_log();
        assert_eq!(log.len(), 1, "{what}: one request forwarded: {log:?}");
        match &log[0].altered {
            Some(Ok(_)) => {}
            other => panic!("{what}: the forwarder did not alter the request: {other:?}"),
        }
        assert_eq!(log[0].target_in, "TrentService.Encrypt");
        assert_eq!(log[0].target_out, received);
        expected_targets.push(received);
    }

    // Control again, through the same forwarder and client.
    let ct2 = encrypt(&client, &key1, &plaintext, None).await;
    assert_eq!(decrypt(&client, Some(&key1), &ct2, None).await, plaintext);
    let log = fwd.take_log();
    assert!(log.len() == 2 && log.iter().all(|f| f.altered.is_none()), "{log:?}");
    // No altered request took effect: key2 encrypted nothing.
    let key_of = |blob: &[u8]| uuid::Uuid::from_slice(&blob[1..17]).expect("uuid").to_string();
    assert_eq!(key_of(&ct), key1);
    assert_eq!(key_of(&ct2), key1);

    // The tenant's chain: the KeyUser's records in order, one Deny per
    // altered request, as the service received it.
    let chain = sdk_ok("GetAuditLog", sdk(&kw, &t.admin).fetch_audit_chain().await);
    chain
        .verify_with(&chain.audit_public_key)
        .unwrap_or_else(|e| panic!("the chain verifies: {e}"));
    let mine: Vec<(String, String, bool)> = chain
        .records
        .iter()
        .filter(|r| r.access_key_id == t.user.access_key_id)
        .map(|r| {
            assert_eq!(r.role, "KeyUser", "{r:?}");
            assert_eq!(r.chain, t.id, "{r:?}");
            (
                r.operation.clone(),
                r.decision.clone(),
                r.reason.starts_with("InvalidSignatureException: "),
            )
        })
        .collect();
    let mut expected: Vec<(String, String, bool)> = vec![
        ("TrentService.Encrypt".into(), "Allow".into(), false),
        ("TrentService.Decrypt".into(), "Allow".into(), false),
    ];
    expected.extend(
        expected_targets
            .iter()
            .map(|t| (t.to_string(), "Deny".to_string(), true)),
    );
    expected.push(("TrentService.Encrypt".into(), "Allow".into(), false));
    expected.push(("TrentService.Decrypt".into(), "Allow".into(), false));
    assert_eq!(
        mine, expected,
        "the KeyUser's audit records (operation, decision, InvalidSignature reason)"
    );
}
