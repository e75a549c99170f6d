//! The load client: who signs ([`Signer`]), where to ([`Endpoint`]: HTTPS trusting one CA
//! bundle, or plain HTTP for the benchmark of old builds only), what is sent ([`Prepared`]),
//! kept-alive HTTP/1.1 connections that send SigV4-signed requests, and [`drive`], which runs one
//! measured load run and returns its [`RunResult`].

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::args::Args;
use crate::stats::{CLOCK_TICKS_PER_SECOND, Measured};
use crate::tls::ClientTls;

/// Who signs: an access key and its secret.
#[derive(Clone)]
pub(crate) struct Signer {
    pub(crate) access_key_id: String,
    pub(crate) secret: String,
    pub(crate) region: String,
}

/// Where requests go: an address, the authority the requests name (`Host`
/// and SigV4), and TLS (`None` only for `--plain-http`).
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) tls: Option<ClientTls>,
}

impl Endpoint {
    /// `https://host:port` trusting `ca_pem`, or, with `plain_http` (the
    /// "before" benchmark of builds that served plain HTTP), `http://host:port`.
    pub(crate) fn new(url: &str, plain_http: bool, ca_pem: Option<&[u8]>) -> anyhow::Result<Endpoint> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad endpoint {url}"))?;
        let authority = uri.authority().context("endpoint without host")?;
        let tls = match (uri.scheme_str(), plain_http) {
            (Some("https"), false) => {
                let ca_pem = ca_pem.context("an https:// endpoint needs --ca-bundle PEM (or AWS_CA_BUNDLE)")?;
                let name = authority.host().trim_start_matches('[').trim_end_matches(']');
                Some(ClientTls::new(ca_pem, name)?)
            }
            (Some("http"), true) => None,
            (Some("http"), false) => {
                bail!("{url}: Keyward serves HTTPS only; http:// is only for --plain-http (benchmark of old builds)")
            }
            (_, true) => bail!("--plain-http drives an http:// endpoint, not {url}"),
            _ => bail!("{url}: the endpoint must be https://host:port"),
        };
        let default_port = if tls.is_some() { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .context("endpoint does not resolve")?;
        Ok(Endpoint {
            addr,
            host: authority.as_str().to_owned(),
            tls,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// One prepared request: where, which operation, which body.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) endpoint: Endpoint,
    pub(crate) target: &'static str,
    pub(crate) body: Bytes,
}

pub(crate) fn env_signer(region: &str) -> anyhow::Result<Signer> {
    let pick = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
    let access_key_id = pick("KEYWARD_DEV_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        .context("set KEYWARD_DEV_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID)")?;
    let secret = pick("KEYWARD_DEV_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
        .context("set KEYWARD_DEV_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)")?;
    Ok(Signer {
        access_key_id,
        secret,
        region: region.to_owned(),
    })
}

pub(crate) type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A new kept-alive HTTP/1.1 connection to `endpoint`, its TLS handshake done.
pub(crate) async fn connect(endpoint: &Endpoint) -> anyhow::Result<Conn> {
    let addr = endpoint.addr;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let Some(tls) = &endpoint.tls else {
        let (send, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        return Ok(send);
    };
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config))
        .connect(tls.server_name.clone(), stream)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    let (send, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

fn signed(prepared: &Prepared, signer: &Signer) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let headers = [
        ("host", prepared.endpoint.host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", prepared.target),
    ];
    let identity = Credentials::new(&signer.access_key_id, &signer.secret, None, None, "keyward-load").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signer.region)
        .name("kms")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let url = format!("{}://{}/", prepared.endpoint.scheme(), prepared.endpoint.host);
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(&prepared.body),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut builder = http::Request::builder().method(http::Method::POST).uri("/");
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Full::new(prepared.body.clone()))?)
}

pub(crate) async fn send(conn: &mut Conn, prepared: &Prepared, signer: &Signer) -> anyhow::Result<(u16, Bytes)> {
    let request = signed(prepared, signer)?;
    conn.ready().await?;
    let response = conn.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One call whose answer the setup needs: the JSON of a 200, else an error
/// naming the operation, the status and the body.
pub(crate) async fn call(
    conn: &mut Conn,
    endpoint: &Endpoint,
    signer: &Signer,
    target: &'static str,
    request: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let prepared = Prepared {
        endpoint: endpoint.clone(),
        target,
        body: Bytes::from(serde_json::to_vec(request)?),
    };
    let (status, body) = send(conn, &prepared, signer).await?;
    if status != 200 {
        bail!("{target} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("{target} answered something that is not JSON"))
}

/// What one run measured.
pub(crate) struct RunResult {
    pub(crate) throughput: f64,
    /// CPU time (user + system) per answered request over the measured
    /// window, in microseconds, per measured process (this client first).
    pub(crate) cpu_per_request: Vec<(String, f64)>,
    /// Sorted latencies of the measured window, in microseconds.
    pub(crate) latencies: Vec<u32>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl RunResult {
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        f64::from(self.latencies[index]) / 1000.0
    }
}

/// `concurrency` connections, connection i sending `prepared[i % len]` back
/// to back; the CPU time of this process and of `pids` is read at both ends
/// of the measured window (added up per label).
pub(crate) async fn drive(
    prepared: &[Prepared],
    signer: &Signer,
    concurrency: usize,
    args: &Args,
    pids: &[Measured],
) -> anyhow::Result<RunResult> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.duration);
    let mut conns = Vec::with_capacity(concurrency);
    for (_, prepared) in (0..concurrency).zip(prepared.iter().cycle()) {
        conns.push((connect(&prepared.endpoint).await?, prepared.clone()));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let (from, until) = (start + warmup, start + warmup + measured);
    let mut measured_pids = vec![Measured {
        label: "client".to_owned(),
        pid: std::process::id(),
        tree: false,
    }];
    measured_pids.extend(pids.iter().cloned());
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before: Vec<Option<u64>> = measured_pids.iter().map(Measured::cpu_ticks).collect();
        tokio::time::sleep_until(until.into()).await;
        let mut sums: Vec<(String, u64)> = Vec::new();
        for (m, before) in measured_pids.into_iter().zip(before) {
            let Some(ticks) = m
                .cpu_ticks()
                .zip(before)
                .and_then(|(after, before)| after.checked_sub(before))
            else {
                continue;
            };
            match sums.iter_mut().find(|(label, _)| *label == m.label) {
                Some((_, sum)) => *sum += ticks,
                None => sums.push((m.label, ticks)),
            }
        }
        sums
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for (mut conn, prepared) in conns {
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::with_capacity(4096);
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let outcome = send(&mut conn, &prepared, &signer).await;
                let done = Instant::now();
                let ok = match &outcome {
                    Ok((200, _)) => true,
                    Ok((status, body)) => {
                        if first_error.is_none() {
                            first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
                        }
                        false
                    }
                    Err(e) => {
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                        false
                    }
                };
                if sent >= from && done <= until {
                    if ok {
                        latencies.push(u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
                if outcome.is_err() {
                    // A broken connection: open a new one and go on.
                    conn = match connect(&prepared.endpoint).await {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (l, e, f) = task.await?;
        latencies.extend(l);
        errors += e;
        first_error = first_error.or(f);
    }
    latencies.sort_unstable();
    let answered = latencies.len().max(1) as f64;
    let cpu_per_request = cpu
        .await?
        .into_iter()
        .map(|(name, ticks)| (name, ticks as f64 * 1e6 / CLOCK_TICKS_PER_SECOND / answered))
        .collect();
    Ok(RunResult {
        cpu_per_request,
        throughput: latencies.len() as f64 / measured.as_secs_f64(),
        latencies,
        errors,
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::EchoPki;

    fn error_of(result: anyhow::Result<Endpoint>) -> String {
        result.err().map(|e| format!("{e:#}")).unwrap_or_default()
    }

    #[test]
    fn https_endpoints_trust_the_given_bundle_and_check_the_host() -> anyhow::Result<()> {
        let ca = EchoPki::generate()?.ca_pem;
        let endpoint = Endpoint::new("https://127.0.0.1:7800", false, Some(ca.as_bytes()))?;
        assert_eq!(endpoint.addr, "127.0.0.1:7800".parse()?);
        assert_eq!(endpoint.host, "127.0.0.1:7800");
        assert_eq!(endpoint.scheme(), "https");
        let name = endpoint.tls.map(|t| t.server_name.to_str().into_owned());
        assert_eq!(name.as_deref(), Some("127.0.0.1"));

        let v6 = Endpoint::new("https://[::1]:7800", false, Some(ca.as_bytes()))?;
        assert_eq!(v6.addr, "[::1]:7800".parse()?);
        let name = v6.tls.map(|t| t.server_name.to_str().into_owned());
        assert_eq!(name.as_deref(), Some("::1"));

        let default_port = Endpoint::new("https://localhost", false, Some(ca.as_bytes()))?;
        assert_eq!(default_port.addr.port(), 443);
        Ok(())
    }

    #[test]
    fn plain_http_only_with_the_benchmark_flag() -> anyhow::Result<()> {
        let ca = EchoPki::generate()?.ca_pem;
        let refused = error_of(Endpoint::new("http://127.0.0.1:7800", false, Some(ca.as_bytes())));
        assert!(
            refused.contains("HTTPS only") && refused.contains("--plain-http"),
            "{refused}"
        );
        let plain = Endpoint::new("http://127.0.0.1:7800", true, None)?;
        assert!(plain.tls.is_none());
        assert_eq!(plain.scheme(), "http");
        let mixed = error_of(Endpoint::new("https://127.0.0.1:7800", true, Some(ca.as_bytes())));
        assert!(mixed.contains("--plain-http drives an http:// endpoint"), "{mixed}");
        Ok(())
    }

    #[test]
    fn https_without_a_bundle_or_another_scheme_is_refused() {
        let no_ca = error_of(Endpoint::new("https://127.0.0.1:7800", false, None));
        assert!(no_ca.contains("--ca-bundle"), "{no_ca}");
        let ftp = error_of(Endpoint::new("ftp://127.0.0.1:21", false, None));
        assert!(ftp.contains("must be https://"), "{ftp}");
    }
}
