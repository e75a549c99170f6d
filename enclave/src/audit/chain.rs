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

/// Chain heads as last written; owned by the single appender.
#[derive(Default)]
pub struct ChainWriter {
    heads: HashMap<String, HeadRecord>,
}

impl ChainWriter {
    /// Chains `entries` after their chains' heads and writes records and new
    /// heads in one batch. On failure nothing is assumed written: the heads
    /// are re-read from the store next time.
    pub async fn append(&mut self, records: &Records<'_>, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut heads: HashMap<String, HeadRecord> = HashMap::new();
        let mut batch = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            let head = match heads.get(&entry.chain) {
                Some(h) => *h,
                None => match self.heads.get(&entry.chain) {
                    Some(h) => *h,
                    None => records
                        .get::<HeadRecord>(NAMESPACE, &head_key(&entry.chain))
                        .await?
                        .unwrap_or(HeadRecord::EMPTY),
                },
            };
            let record = AuditRecord::new(entry, head.sequence + 1, head.hash);
            let key = record_key(&record.chain, record.sequence);
            heads.insert(
                record.chain.clone(),
                HeadRecord {
                    sequence: record.sequence,
                    hash: record.hash,
                },
            );
            batch.push((key, encode(&record)?));
        }
        for (chain, head) in &heads {
            batch.push((head_key(chain), encode(head)?));
        }
        let written = records.put_batch_encoded(NAMESPACE, batch).await;
        match written {
            Ok(()) => {
                self.heads.extend(heads);
                Ok(())
            }
            Err(e) => {
                self.heads.clear();
                Err(e)
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_cbor::to_vec(value).map_err(|e| StoreError::Decode(e.to_string()))
}
