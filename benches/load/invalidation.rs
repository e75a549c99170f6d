//! `--invalidation N`: how long a change made on one node of a cluster takes to be enforced by
//! another (ARCHITECTURE.md, "Cluster caching": within 1 s whatever the host does with the hints,
//! typically tens of milliseconds with PostgreSQL's `NOTIFY`).
//!
//! One key, created on the writer (the first endpoint). Each sample: the reader (the second
//! endpoint) decrypts the key's ciphertext back to back for a random 0-1 s (so that its cache
//! entry is hot and the change lands at any phase of its 500 ms re-validation), then the writer
//! disables the key, and the reader goes on decrypting until one Decrypt is refused with
//! `DisabledException`: the delay is from the writer's acknowledgement to that refusal (its
//! resolution is one Decrypt round trip), and when the last Decrypt still answered had been sent
//! (what the bound speaks of: requests that start after the change). Then the writer enables the key again and the reader
//! decrypts until one Decrypt succeeds (the same delay for a change the other way). A Decrypt
//! answered `KMSInternalException` is neither answer: it is counted and the reader goes on.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde_json::json;

use crate::client::{Conn, Endpoint, Prepared, Signer, call, connect, send};

/// How long a sample waits for the reader to see a change before the run fails.
const GIVE_UP: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seen {
    Decrypted,
    Disabled,
    /// A `KMSInternalException` (e.g. the tenant's audit chain changed
    /// concurrently by another node): neither answer; counted, and the
    /// reader goes on.
    Failed,
}

/// The reader's connection and its Decrypt request.
struct Reader {
    conn: Conn,
    decrypt: Prepared,
    failed: usize,
}

impl Reader {
    async fn decrypt(&mut self, signer: &Signer) -> anyhow::Result<Seen> {
        let (status, body) = send(&mut self.conn, &self.decrypt, signer).await?;
        let body = String::from_utf8_lossy(&body);
        match status {
            200 => Ok(Seen::Decrypted),
            400 if body.contains("DisabledException") => Ok(Seen::Disabled),
            500 if body.contains("KMSInternalException") => {
                self.failed += 1;
                Ok(Seen::Failed)
            }
            _ => bail!("Decrypt on the reader answered {status}: {body}"),
        }
    }

    /// Decrypts until the answer is `want`: the time from `since` to that
    /// answer, and from `since` to the sending of the last answer that was
    /// not (zero if none was).
    async fn until(&mut self, signer: &Signer, want: Seen, since: Instant) -> anyhow::Result<(Duration, Duration)> {
        let mut last_stale = Duration::ZERO;
        loop {
            let sent = since.elapsed();
            match self.decrypt(signer).await? {
                seen if seen == want => return Ok((since.elapsed(), last_stale)),
                Seen::Failed => {}
                _ => last_stale = sent,
            }
            if since.elapsed() > GIVE_UP {
                bail!("the reader did not see {want:?} within {GIVE_UP:?}");
            }
        }
    }
}

pub(crate) async fn measure(endpoints: &[Endpoint], signer: &Signer, samples: usize) -> anyhow::Result<()> {
    let [writer, reader, ..] = endpoints else {
        bail!("--invalidation needs two endpoints: --endpoint WRITER,READER");
    };
    let mut w = connect(writer).await?;
    // The writer's calls are idempotent: one answered KMSInternalException
    // (the audit chain contending with other nodes) is retried, a few times.
    let mut write = async |target: &'static str, request: serde_json::Value| {
        let mut tries = 0;
        loop {
            match call(&mut w, writer, signer, target, &request).await {
                Err(e) if tries < 5 && format!("{e:#}").contains("KMSInternalException") => tries += 1,
                result => return result,
            }
        }
    };
    let created = write(
        "TrentService.CreateKey",
        json!({"Description": "keyward-load invalidation"}),
    )
    .await?;
    let key = created["KeyMetadata"]["KeyId"]
        .as_str()
        .context("CreateKey returned no KeyId")?
        .to_owned();
    let encrypted = write(
        "TrentService.Encrypt",
        json!({"KeyId": key, "Plaintext": "a2V5d2FyZA=="}),
    )
    .await?;
    let blob = encrypted["CiphertextBlob"]
        .as_str()
        .context("Encrypt returned no CiphertextBlob")?;
    let mut reader = Reader {
        conn: connect(reader).await?,
        decrypt: Prepared {
            endpoint: reader.clone(),
            target: "TrentService.Decrypt",
            body: Bytes::from(serde_json::to_vec(&json!({"CiphertextBlob": blob}))?),
        },
        failed: 0,
    };
    println!(
        "keyward-load invalidation: writer {}, reader {}, {samples} samples",
        writer.host, reader.decrypt.endpoint.host
    );
    let (mut disabled, mut enabled, mut acknowledged) = (Vec::new(), Vec::new(), Vec::new());
    let mut stale = Vec::new();
    for sample in 0..samples {
        if sample > 0 {
            write("TrentService.EnableKey", json!({"KeyId": key})).await?;
            enabled.push(reader.until(signer, Seen::Decrypted, Instant::now()).await?.0);
        }
        let pause = Duration::from_millis(rand::random::<u64>() % 1000);
        let started = Instant::now();
        while started.elapsed() < pause {
            if reader.decrypt(signer).await? == Seen::Disabled {
                bail!("the reader refused a Decrypt with the key enabled");
            }
        }
        let sent = Instant::now();
        write("TrentService.DisableKey", json!({"KeyId": key})).await?;
        let acked = Instant::now();
        acknowledged.push(acked - sent);
        let (refused, last_stale) = reader.until(signer, Seen::Disabled, acked).await?;
        disabled.push(refused);
        stale.push(last_stale);
    }
    report(
        "DisableKey acknowledged on the writer -> first Decrypt refused on the reader",
        disabled,
    );
    report(
        "DisableKey acknowledged on the writer -> the last Decrypt answered on the reader was sent (0: none)",
        stale,
    );
    report(
        "EnableKey acknowledged on the writer -> first Decrypt answered on the reader",
        enabled,
    );
    report("DisableKey on the writer, sent -> acknowledged", acknowledged);
    println!(
        "Decrypts on the reader answered KMSInternalException (skipped): {}",
        reader.failed
    );
    Ok(())
}

/// The distribution of `delays`, nearest-rank percentiles, and every sample.
fn report(what: &str, mut delays: Vec<Duration>) {
    delays.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let percentile = |p: usize| {
        let rank = (p * delays.len()).div_ceil(100).clamp(1, delays.len().max(1));
        delays.get(rank - 1).map_or(f64::NAN, |d| ms(*d))
    };
    let over = |limit: u64| delays.iter().filter(|d| **d > Duration::from_millis(limit)).count();
    println!("{what}:");
    println!(
        "  n {}  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  over 500 ms: {}  over 1 s: {}",
        delays.len(),
        percentile(50),
        percentile(90),
        percentile(99),
        percentile(100),
        over(500),
        over(1000),
    );
    let all: Vec<String> = delays.iter().map(|d| format!("{:.1}", ms(*d))).collect();
    println!("  sorted (ms): {}", all.join(" "));
}
