//! Freshness across restarts, the enclave's side (issue 19 item 3;
//! docs/custody.md, "Checkpoints"): the signed checkpoint a Ready enclave
//! states (`Keyward.GetCheckpoint`), and the audit record of a store
//! rollback a custodian accepted at unseal.

use super::Enclave;
use crate::audit::record::AuditEntry;
use crate::bootstrap;
use crate::store::StoreTransport;

/// How the audit record of an accepted store rollback begins (its reason).
pub const ACCEPTED_ROLLBACK: &str = "a custodian accepted a store older than its checkpoint (--accept-store-rollback)";

impl Enclave {
    /// Appends to the operator's chain that a custodian accepted a store
    /// older than its checkpoint (`--accept-store-rollback`): which scopes,
    /// served vs seen epochs. A failure to append is logged (the enclave is
    /// Ready already; the log line says what was accepted).
    pub(super) async fn audit_accepted_rollback(&self, lags: &str) {
        let entry = AuditEntry {
            time: (self.clock.now().unix_timestamp_nanos() / 1_000_000).max(0) as u64,
            request_id: uuid::Uuid::new_v4().to_string(),
            chain: crate::audit::record::OPERATOR_CHAIN.to_owned(),
            role: "Custodian".to_owned(),
            operation: keyward_wire::Operation::Unseal.target().to_owned(),
            decision: crate::audit::record::ALLOW,
            reason: format!("{ACCEPTED_ROLLBACK}: {lags}"),
            ..Default::default()
        };
        if let Err(e) = self.audit(entry).await {
            tracing::error!(error = %e, lags, "the audit record of an accepted store rollback was not written");
        }
    }

    /// Counts a start refused because the store was older than the
    /// custodians' or peers' checkpoints (`keyward_freshness_violations_total`):
    /// the keyring of the refused start is dropped with its own counts.
    pub(crate) fn count_stale_store(&self, omission: bool) {
        self.stale_unseals[usize::from(omission)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Keyward.GetCheckpoint`: the store's index epochs now (the global
    /// root's and every tenant scope's), signed with the audit key over
    /// `keyward_custody::checkpoint::signed_message`. Ready only.
    pub async fn signed_checkpoint(
        &self,
        transport: &dyn StoreTransport,
    ) -> Result<keyward_custody::checkpoint::SignedCheckpoint, bootstrap::BootError> {
        use p256::ecdsa::signature::Signer as _;
        let Some(keyring) = self.keyring.get() else {
            return Err(bootstrap::BootError::NotNow(
                "the service is sealed: only a Ready enclave states a checkpoint".into(),
            ));
        };
        let deployment = {
            let custody = self.custody(transport).await?;
            custody
                .as_ref()
                .and_then(|c| c.record.as_ref())
                .map(|r| r.deployment_id)
        };
        let Some(deployment) = deployment else {
            return Err(bootstrap::BootError::NotNow(
                "this enclave has no custody boot record: there is no deployment to state a checkpoint of".into(),
            ));
        };
        let checkpoint = keyring.records(transport).checkpoint(deployment).await?;
        let bytes = checkpoint
            .to_bytes()
            .map_err(|e| bootstrap::BootError::Custody(e.into()))?;
        let signature: p256::ecdsa::Signature = keyring
            .hierarchy
            .audit_signing_key()
            .sign(&keyward_custody::checkpoint::signed_message(&bytes));
        Ok(keyward_custody::checkpoint::SignedCheckpoint::new(
            bytes,
            signature.to_der().as_bytes().to_vec(),
        ))
    }
}
