//! Cluster join, the joiner's side (docs/custody.md "Adding a node"): a
//! sealed enclave whose store holds a boot record asks Ready peers of its
//! deployment for the root (`Keyward.JoinCluster` over an outbound HTTPS
//! stream, the deployment's CA pinned) instead of waiting for custodians.
//!
//! * [`Enclave::join_from`]: one round over every peer, in order, with one
//!   fresh attested join key (`custody::join::JoinSession`); each package
//!   opened, its root checked against the boot record's commitment and its
//!   signed checkpoint against the same commitment; a peer that is down or
//!   refuses is skipped. Per scope the highest epoch of all the peers that
//!   released is the floor for the store (`bootstrap::joined`, the unseal's
//!   freshness check): older, or a tenant root missing, stays Sealed with
//!   the reason (`keyward_freshness_violations_total`), nothing written.
//!   The custody lock is not held across the network calls, so custodians
//!   can unseal the node meanwhile (whichever comes first makes it Ready).
//! * [`Enclave::join_through`]: the same with one peer.
//! * [`Enclave::start_join`]: at start (the first host link), with
//!   `--join-peer`: rounds until Ready, backing off from [`FIRST_RETRY`] to
//!   [`MAX_RETRY`] between them. Each failure is logged and is the sealed
//!   503's "Last refusal"; `/healthz` stays `sealed`. The same code runs in
//!   mock and nitro mode (only the NSM and the host's transport differ).
//!
//! Security does not rest on the peer list (the host chooses where the
//! streams go): a peer releases the root only to a document of the allowed
//! image, sealed to the document's key, and the joiner takes only a root
//! that matches its boot record's commitment.

use std::sync::Arc;
use std::time::Duration;

use crate::bootstrap::{self, BootError};
use crate::config::JoinConfig;
use crate::custody::CustodyError;
use crate::outbound::https::{Endpoint, HttpsClient, pinned_client_config};
use crate::service::Enclave;
use crate::store::StoreTransport;

/// The pause after the first failed round.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between rounds.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

impl Enclave {
    /// The `--join-peer` clients, over the host's outbound streams.
    pub fn join_peers(&self, join: &JoinConfig) -> Vec<HttpsClient> {
        let tls = match pinned_client_config(&join.ca_pem) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, "--join-ca");
                return Vec::new();
            }
        };
        let connector: Arc<dyn crate::outbound::Connect> = self.outbound.clone();
        join.peers
            .iter()
            .filter_map(|url| match Endpoint::parse(url) {
                Ok(endpoint) => Some(HttpsClient::new(endpoint, Arc::clone(&tls), Arc::clone(&connector))),
                Err(e) => {
                    tracing::error!(error = %e, "--join-peer");
                    None
                }
            })
            .collect()
    }

    /// With `--join-peer`: asks the peers for the root (over the first live
    /// host link) until Ready, by join or otherwise. Stops when there is
    /// nothing to join (no boot record: awaiting genesis, or a store this
    /// enclave cannot use).
    pub fn start_join(self: &Arc<Self>) {
        let Some(join) = self.config.join.clone() else {
            return;
        };
        if self.join_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let enclave = Arc::clone(self);
        tokio::spawn(async move {
            let peers = enclave.join_peers(&join);
            if peers.is_empty() {
                return;
            }
            let mut backoff = FIRST_RETRY;
            while !enclave.is_ready() {
                if let Some(link) = enclave.store_link() {
                    match enclave.join_from(&*link, &peers).await {
                        Ok(()) => return,
                        Err(BootError::NotNow(why)) => {
                            if !enclave.is_ready() {
                                tracing::warn!(reason = %why, "cluster join: nothing to join; not trying again");
                            }
                            return;
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            retry_in_s = backoff.as_secs(),
                            "cluster join: no peer released the root; still sealed"
                        ),
                    }
                }
                // Back-off between rounds (a retry timer, not synchronisation).
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY);
            }
        });
    }

    /// One round: every peer is asked (in order, with one attested join
    /// key) and each package that opens — the root matching the boot
    /// record's commitment, the peer's checkpoint signed under it — counts:
    /// per scope, the highest epoch any of them reports must not be newer
    /// than the store this node is served (`bootstrap::joined`). `Ok` once
    /// Ready (by this join or otherwise); `NotNow` when there is nothing to
    /// join; else why (no peer released the root, or the store is older).
    ///
    /// The host chooses which peers answer: the rule is "the highest epoch
    /// among all peers that answered, and at least the releasing one's"
    /// (THREAT-MODEL.md, "Rollback and omission across restarts").
    pub async fn join_from(&self, transport: &dyn StoreTransport, peers: &[HttpsClient]) -> Result<(), BootError> {
        if peers.is_empty() {
            return Err(BootError::Custody(CustodyError::Join("no --join-peer to ask".into())));
        }
        if self.is_ready() {
            return Ok(());
        }
        let (session, document) = {
            let mut custody = self.custody(transport).await?;
            let Some(state) = custody.as_mut() else {
                return Ok(());
            };
            let Some(record) = state.record.as_ref() else {
                return Err(BootError::NotNow(bootstrap::not_unsealing(&state.state)));
            };
            let session = crate::custody::join::JoinSession::start(record);
            let document = session.document(&*self.nsm)?;
            (session, document)
        };
        // The custody lock is not held across the calls: custodians may
        // unseal meanwhile.
        let mut answers = Vec::with_capacity(peers.len());
        for peer in peers {
            if self.is_ready() {
                return Ok(());
            }
            let answer = crate::outbound::join::request_root(peer, &document).await;
            answers.push((peer.endpoint().url.clone(), answer));
        }
        let mut custody = self.custody(transport).await?;
        if self.is_ready() {
            return Ok(());
        }
        let Some(state) = custody.as_mut() else {
            return Ok(());
        };
        let Some(record) = state.record.as_ref() else {
            return Err(BootError::NotNow(bootstrap::not_unsealing(&state.state)));
        };
        let mut released: Option<(crate::secret::Key256, keyward_custody::checkpoint::Checkpoint)> = None;
        let mut answered = 0usize;
        let mut last = None;
        for (peer, answer) in answers {
            let opened = answer
                .map_err(CustodyError::Join)
                .and_then(|package| session.open(&package, record));
            match opened {
                Ok((root, checkpoint)) => {
                    answered += 1;
                    match &mut released {
                        Some((_, seen)) => seen.merge(&checkpoint),
                        None => released = Some((root, checkpoint)),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, peer = %peer, "cluster join: this peer's answer was refused");
                    last = Some(e);
                }
            }
        }
        let Some((root, seen)) = released else {
            let error = last.unwrap_or_else(|| CustodyError::Join("no peer answered".into()));
            tracing::warn!(error = %error, "cluster join failed; still sealed");
            let received = state.session.as_ref().map_or(0, |s| s.progress().0);
            state.state.refused(&error, received);
            return Err(error.into());
        };
        let now = self.clock.now().unix_timestamp();
        let joined = bootstrap::joined(
            state,
            root,
            &seen,
            answered,
            &*self.nsm,
            transport,
            self.dev_credentials(),
            now,
        )
        .await;
        if let Err(BootError::Custody(CustodyError::StaleJoin { omission, .. })) = &joined {
            self.count_stale_store(*omission);
        }
        self.become_ready(joined?);
        Ok(())
    }

    /// A sealed node joins its cluster through the one Ready peer behind
    /// `peer` ([`Enclave::join_from`] with one peer).
    pub async fn join_through(&self, transport: &dyn StoreTransport, peer: &HttpsClient) -> Result<(), BootError> {
        if self.is_ready() {
            return Err(BootError::NotNow("the service is not sealed".into()));
        }
        self.join_from(transport, std::slice::from_ref(peer)).await
    }
}
