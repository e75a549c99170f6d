//! The store's index epochs as a [`Checkpoint`] (issue 19 item 3,
//! "freshness across restarts"; docs/custody.md, "Checkpoints").
//!
//! A Ready enclave states them, signed, to its custodians
//! (`Keyward.GetCheckpoint`); at the end of an unseal it reads them again
//! and compares them with the highest checkpoint its custodians sent. Both
//! read the roots afresh from the store: the global root, then, from the
//! global index's `tenant/<id>` entries, every tenant scope's root. A tenant
//! the global index holds whose root the host does not serve is an
//! omission (refused by `read_root`, counted, logged).

use std::collections::BTreeMap;

use keyward_custody::DeploymentId;
use keyward_custody::checkpoint::Checkpoint;

use super::index::{GLOBAL, TENANT_NAMESPACE};
use super::{Records, StoreError};

/// Reads of the global buckets before giving up while other nodes write.
const TRIES: usize = 8;

impl Records<'_> {
    /// The epochs of the store's index roots now: the global root's and
    /// each tenant scope's, read afresh and verified like any read (a
    /// root older than one this enclave verified, or a tenant's root
    /// hidden, is a violation).
    pub async fn checkpoint(&self, deployment: DeploymentId) -> Result<Checkpoint, StoreError> {
        let Some(index) = self.index else {
            return Err(StoreError::Protocol(
                "a checkpoint needs the authenticated index".into(),
            ));
        };
        let (global, _) = self.read_root(index, GLOBAL).await?;
        let mut loaded = false;
        for _ in 0..TRIES {
            if self.load_all_buckets(index, GLOBAL).await? {
                loaded = true;
                break;
            }
        }
        if !loaded {
            return Err(StoreError::Conflict {
                record: format!("{}/{}", super::index::NAMESPACE, super::index::root_key(GLOBAL)),
                expected: global,
                found: global,
            });
        }
        let prefix = format!("{TENANT_NAMESPACE}/");
        let tenants: Vec<String> = {
            let slot = index.slot(GLOBAL);
            let state = slot.lock();
            state
                .as_ref()
                .map(|state| {
                    (0..=u8::MAX)
                        .filter_map(|b| state.bucket(b))
                        .flat_map(|b| b.entries.keys())
                        .filter_map(|id| id.strip_prefix(&prefix))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut epochs = BTreeMap::new();
        for tenant in tenants {
            let (epoch, _) = self.read_root(index, &tenant).await?;
            epochs.insert(tenant, epoch);
        }
        Ok(Checkpoint::new(deployment, global, epochs))
    }
}
