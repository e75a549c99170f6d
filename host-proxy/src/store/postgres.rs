//! The PostgreSQL store (`--store postgres://USER@HOST:PORT/DB`), shared by
//! the nodes of a cluster: one table, `keyward_records`, created on first
//! start.
//!
//! # Atomicity and isolation of a batch
//! A call's writes run in one transaction, in (namespace, key) order (two
//! batches on overlapping records lock them in the same order, so they do not
//! deadlock). Each write first locks its row (`SELECT … FOR UPDATE`) and
//! checks the caller's expectation against the row's latest committed
//! version; a record that does not exist yet is created with `INSERT … ON
//! CONFLICT DO NOTHING`, and a concurrent creation (no row inserted) retries
//! the whole transaction. Rows stay locked until the commit, so every
//! expectation still holds when the batch becomes visible: the batch is
//! linearizable at its commit, as under SERIALIZABLE, without SERIALIZABLE's
//! false conflicts. Deadlocks and serialization failures, should a server
//! configuration cause them, are retried a few times.
//!
//! # Durability
//! The commit returns once PostgreSQL has flushed its WAL (its default
//! `synchronous_commit=on`); a server configured with `off` is overridden to
//! `on` for Keyward's sessions. Concurrent calls run on several connections,
//! so PostgreSQL's own group commit shares one WAL flush among them.
//!
//! # Invalidation hints
//! Every committed write also sends `NOTIFY keyward_invalidate,
//! '<namespace>/<key>/<version>'` (delivered by PostgreSQL at commit, to
//! every listening node, this one included). A dedicated connection
//! `LISTEN`s and forwards each notification to [`super::Store::invalidations`]
//! as an [`Invalidation::Record`]; after every (re)connection of the listener
//! it sends [`Invalidation::All`], since notifications sent while it was
//! away are lost.

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use tokio::sync::{Mutex, broadcast};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Backend, CommitError, Expect, Invalidation, Page, StoreOpenError, Stored, Write};

/// The `LISTEN`/`NOTIFY` channel of invalidation hints.
pub const CHANNEL: &str = "keyward_invalidate";
/// Connections for reads and writes.
const CONNECTIONS: usize = 8;
/// Longest a store call may take (the request deadline is 30 s by default).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a transaction that hit a deadlock, serialization failure or
/// creation race.
const ATTEMPTS: usize = 8;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS keyward_records (
    ns      TEXT COLLATE "C" NOT NULL,
    key     TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    value   BYTEA,
    PRIMARY KEY (ns, key)
);
"#;

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

struct Shared {
    config: tokio_postgres::Config,
    slots: Vec<Mutex<Option<Client>>>,
    next: std::sync::atomic::AtomicUsize,
    timer: Option<Histogram>,
}

/// The PostgreSQL store.
pub struct Postgres {
    shared: Arc<Shared>,
    invalidations: broadcast::Sender<Invalidation>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Postgres {
    /// Connects, creates the schema if missing and starts listening for
    /// invalidation hints.
    pub async fn connect(url: &str, timer: Option<Histogram>) -> Result<Self, StoreOpenError> {
        let failed = |e: String| StoreOpenError::Open(redact(url), e);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| failed(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let shared = Arc::new(Shared {
            config,
            slots: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            timer,
        });
        {
            let mut slot = shared.slots[0].lock().await;
            let client = shared.client(&mut slot).await.map_err(|e| failed(e.to_string()))?;
            create_schema(client).await.map_err(|e| failed(e.to_string()))?;
        }
        let invalidations = super::invalidation_channel();
        let listener = tokio::spawn(listen(shared.config.clone(), invalidations.clone()));
        Ok(Postgres {
            shared,
            invalidations,
            listener,
        })
    }
}

pub(crate) async fn create_schema(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Several nodes may start at once: one creates, the others wait and see it.
    tx.execute("SELECT pg_advisory_xact_lock(7306071563150504247)", &[])
        .await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await
}

impl Shared {
    /// The slot's client, (re)connected if needed.
    async fn client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client, String> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.config.connect(NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            let mode: String = client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| e.to_string())?;
            if mode == "off" {
                client
                    .batch_execute("SET synchronous_commit TO on")
                    .await
                    .map_err(|e| e.to_string())?;
            }
            *slot = Some(client);
        }
        slot.as_mut().ok_or_else(|| "no connection".to_string())
    }

    /// Runs `work` on a connection, within [`CALL_TIMEOUT`].
    async fn with_client<T, F>(self: Arc<Self>, work: F) -> Result<T, String>
    where
        F: for<'c> FnOnce(&'c mut Client) -> BoxFuture<'c, Result<T, String>>,
    {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.slots.len();
        let attempt = async {
            let mut slot = self.slots[i].lock().await;
            let client = self.client(&mut slot).await?;
            work(client).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err("PostgreSQL did not answer in time".into()),
        }
    }
}

fn version(v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("negative record version {v}"))
}

impl Backend for Postgres {
    fn get(&self, namespace: String, key: String) -> BoxFuture<'static, Result<Stored, String>> {
        Arc::clone(&self.shared)
            .with_client(move |client| {
                async move {
                    let row = client
                        .query_opt(
                            "SELECT version, value FROM keyward_records WHERE ns = $1 AND key = $2",
                            &[&namespace, &key],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    match row {
                        None => Ok(Stored {
                            version: 0,
                            value: None,
                        }),
                        Some(row) => Ok(Stored {
                            version: version(row.try_get(0).map_err(|e| e.to_string())?)?,
                            value: row.try_get(1).map_err(|e| e.to_string())?,
                        }),
                    }
                }
                .boxed()
            })
            .boxed()
    }

    fn list(
        &self,
        namespace: String,
        prefix: String,
        start_after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Page, String>> {
        Arc::clone(&self.shared)
            .with_client(move |client| {
                async move {
                    let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
                    let rows = client
                        .query(
                            "SELECT key, version, value FROM keyward_records
                             WHERE ns = $1 AND key >= $2 AND starts_with(key, $2)
                               AND ($3::text IS NULL OR key > $3) AND value IS NOT NULL
                             ORDER BY key LIMIT $4",
                            &[&namespace, &prefix, &start_after, &fetch],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let more = rows.len() > limit;
                    let mut entries = Vec::with_capacity(rows.len().min(limit));
                    for row in rows.into_iter().take(limit) {
                        let key: String = row.try_get(0).map_err(|e| e.to_string())?;
                        let v: i64 = row.try_get(1).map_err(|e| e.to_string())?;
                        let value: Vec<u8> = row.try_get(2).map_err(|e| e.to_string())?;
                        entries.push((key, version(v)?, value));
                    }
                    Ok((entries, more))
                }
                .boxed()
            })
            .boxed()
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'static, Result<Vec<u64>, CommitError>> {
        let shared = Arc::clone(&self.shared);
        async move {
            let timer = shared.timer.clone();
            let started = std::time::Instant::now();
            let writes = Arc::new(writes);
            let outcome = shared
                .with_client(move |client| {
                    async move {
                        for attempt in 1..=ATTEMPTS {
                            match commit_once(client, &writes).await {
                                Ok(Some(outcome)) => return Ok(outcome),
                                // A creation race: the other writer committed; look again.
                                Ok(None) => {}
                                Err(e) if retryable(&e) && attempt < ATTEMPTS => {}
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                        Err("PostgreSQL: too many retries".to_string())
                    }
                    .boxed()
                })
                .await;
            if let Some(timer) = timer {
                timer.observe(started.elapsed().as_secs_f64());
            }
            match outcome {
                Ok(outcome) => outcome,
                Err(e) => Err(CommitError::Failed(e)),
            }
        }
        .boxed()
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// One attempt: `Ok(None)` when a record was created by someone else
/// between our look and our insert (the transaction is rolled back; retry).
async fn commit_once(
    client: &mut Client,
    writes: &[Write],
) -> Result<Option<Result<Vec<u64>, CommitError>>, tokio_postgres::Error> {
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by(|&a, &b| (&writes[a].namespace, &writes[a].key).cmp(&(&writes[b].namespace, &writes[b].key)));
    let tx = client.transaction().await?;
    let mut versions = vec![0u64; writes.len()];
    let mut hints = Vec::new();
    for &index in &order {
        let w = &writes[index];
        let row = tx
            .query_opt(
                "SELECT version, value IS NOT NULL FROM keyward_records WHERE ns = $1 AND key = $2 FOR UPDATE",
                &[&w.namespace, &w.key],
            )
            .await?;
        let (exists_row, current) = match row {
            Some(row) => {
                let v: i64 = row.try_get(0)?;
                let live: bool = row.try_get(1)?;
                (
                    true,
                    Stored {
                        version: u64::try_from(v).unwrap_or(0),
                        value: live.then(Vec::new),
                    },
                )
            }
            None => (
                false,
                Stored {
                    version: 0,
                    value: None,
                },
            ),
        };
        if !w.expect.holds(&current, w.value.is_none()) {
            // Dropping the transaction rolls it back.
            return Ok(Some(Err(CommitError::Conflict { index, current })));
        }
        if w.value.is_none() && current.value.is_none() {
            debug_assert_eq!(w.expect, Expect::Any);
            versions[index] = current.version;
            continue;
        }
        let Some(next) = current.version.checked_add(1).and_then(|v| i64::try_from(v).ok()) else {
            return Ok(Some(Err(CommitError::Failed("record version overflow".into()))));
        };
        if exists_row {
            tx.execute(
                "UPDATE keyward_records SET version = $3, value = $4 WHERE ns = $1 AND key = $2",
                &[&w.namespace, &w.key, &next, &w.value],
            )
            .await?;
        } else {
            let inserted = tx
                .execute(
                    "INSERT INTO keyward_records (ns, key, version, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (ns, key) DO NOTHING",
                    &[&w.namespace, &w.key, &next, &w.value],
                )
                .await?;
            if inserted == 0 {
                return Ok(None);
            }
        }
        versions[index] = next as u64;
        hints.push(Invalidation::payload(&w.namespace, &w.key, next as u64));
    }
    if !hints.is_empty() {
        tx.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&CHANNEL, &hints],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(Ok(versions)))
}

/// Forwards notifications on [`CHANNEL`] to `hints`, reconnecting forever.
async fn listen(config: tokio_postgres::Config, hints: broadcast::Sender<Invalidation>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = futures::StreamExt::next(&mut messages).await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL listener connection ended");
                                return;
                            }
                        }
                    }
                });
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).await.is_ok() {
                    backoff = Duration::from_millis(50);
                    // Whatever was notified while no listener was up is lost.
                    let _ = hints.send(Invalidation::All);
                    while let Some(payload) = rx.recv().await {
                        match Invalidation::parse(&payload) {
                            Some(hint) => {
                                let _ = hints.send(hint);
                            }
                            None => tracing::warn!("malformed invalidation hint ignored"),
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect the PostgreSQL listener"),
        }
        // Reconnection back-off while PostgreSQL is down.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
