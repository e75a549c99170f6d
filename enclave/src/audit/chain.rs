//! Appending to the chains: records from concurrent requests are queued,
//! chained and written in one atomic store batch (group commit); each request
//! is answered only after its record is durable.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::record::{AuditEntry, AuditRecord};
use crate::store::{Records, StoreError};

pub const NAMESPACE: &str = "audit";

pub fn record_key(chain: &str, sequence: u64) -> String {
    format!("{chain}/r/{sequence:020}")
}

pub fn records_prefix(chain: &str) -> String {
    format!("{chain}/r/")
}

pub fn head_key(chain: &str) -> String {
    format!("{chain}/head")
}

/// The last record of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    pub sequence: u64,
    pub hash: [u8; 32],
}

impl HeadRecord {
    pub const EMPTY: HeadRecord = HeadRecord {
        sequence: 0,
        hash: [0; 32],
    };
}

/// Chain heads as last written, with their store versions; owned by the
/// single appender.
#[derive(Default)]
pub struct ChainWriter {
    heads: HashMap<String, (HeadRecord, u64)>,
}

/// Times an append re-reads the heads after another writer (another node
/// sharing the store) moved one of them. Nodes of a cluster append to the
/// same tenant chains, so under load this is contended: each retry waits a
/// random moment that grows with the attempt (at most [`MAX_BACKOFF`]) so
/// the nodes fall out of step. Bounded well below the request's audit
/// timeout.
const APPEND_TRIES: u32 = 64;
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

impl ChainWriter {
    /// Chains `entries` after their chains' heads and writes records and new
    /// heads in one batch, as compare-and-swap writes: a head moved by
    /// another node, or a record it already wrote at the same sequence,
    /// fails the batch, and the heads are re-read and the entries chained
    /// again. On failure nothing is assumed written: the heads are re-read
    /// from the store next time.
    pub async fn append(&mut self, records: &Records<'_>, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut last = None;
        for attempt in 0..APPEND_TRIES {
            match self.try_append(records, entries.clone()).await {
                Ok(()) => return Ok(()),
                Err(e @ StoreError::Conflict { .. }) => {
                    self.heads.clear();
                    last = Some(e);
                    let ceiling = (attempt + 1).saturating_mul(1000).min(MAX_BACKOFF.as_micros() as u32);
                    let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling);
                    // Back-off against another node's appender, not synchronisation.
                    tokio::time::sleep(std::time::Duration::from_micros(u64::from(wait))).await;
                }
                Err(e) => {
                    self.heads.clear();
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Host("audit append gave up".into())))
    }

    async fn try_append(&mut self, records: &Records<'_>, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut heads: HashMap<String, (HeadRecord, u64)> = HashMap::new();
        let mut batch = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            let (head, version) = match heads.get(&entry.chain) {
                Some(h) => *h,
                None => match self.heads.get(&entry.chain) {
                    Some(h) => *h,
                    None => {
                        let (version, head) = records
                            .get_versioned::<HeadRecord>(NAMESPACE, &head_key(&entry.chain))
                            .await?;
                        (head.unwrap_or(HeadRecord::EMPTY), version)
                    }
                },
            };
            let record = AuditRecord::new(entry, head.sequence + 1, head.hash);
            let key = record_key(&record.chain, record.sequence);
            // A record is written once: another writer at the same sequence is a conflict.
            records.expect_version(NAMESPACE, &key, 0, false);
            heads.insert(
                record.chain.clone(),
                (
                    HeadRecord {
                        sequence: record.sequence,
                        hash: record.hash,
                    },
                    version,
                ),
            );
            batch.push((key, encode(&record)?));
        }
        for (chain, (head, version)) in &mut heads {
            records.expect_version(NAMESPACE, &head_key(chain), *version, *version > 0);
            batch.push((head_key(chain), encode(head)?));
            *version += 1;
        }
        records.put_batch_encoded(NAMESPACE, batch).await?;
        self.heads.extend(heads);
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_cbor::to_vec(value).map_err(|e| StoreError::Decode(e.to_string()))
}
