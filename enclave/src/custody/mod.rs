//! Custody of the root key (issue 18, docs/custody.md): how a root survives
//! an enclave restart without the host ever being able to read, replace or
//! half-supply it.
//!
//! - [`record`]: the **boot record** the host keeps (not secret, not sealed:
//!   the sealing key comes from the root). It names the deployment, the
//!   custody method and a **commitment to the root** (the audit signing
//!   public key the root derives); every root, however delivered, is checked
//!   against it before use.
//! - [`genesis`]: the first start of a deployment: a fresh root split M-of-N
//!   (Shamir over GF(256), `vsss-rs`), each share HPKE-sealed to its
//!   custodian, and the operator's first credential sealed to the operator.
//! - [`session`]: an **unseal session**: an ephemeral HPKE key bound into an
//!   attestation document; M valid, distinct shares sealed to it rebuild the
//!   root, which must match the commitment. Never half-unsealed.
//! - [`join`]: cluster join: a Ready node releases the root to an attested
//!   sealed node of the same deployment.
//! - [`kms`]: custody by an AWS-KMS-compatible key service: the root is a
//!   data key generated and released (with a Recipient) to this enclave only.
//! - [`reshare`]: a Ready enclave's root split anew for a new custodian
//!   set (same deployment and commitment, new share digests).
//! - [`state`]: the **Sealed → Ready** state machine and what the API
//!   answers while sealed.
//!
//! This is the domain layer: no JSON, no HTTP, never `crate::api`. The
//! formats shared with `kmsctl` are in the `keyward-custody` crate. Nothing
//! here is wired into startup or request dispatch yet: docs/custody.md,
//! "Wiring left".

pub mod genesis;
pub mod join;
pub mod kms;
pub mod record;
pub mod reshare;
pub mod session;
pub mod state;

#[cfg(test)]
mod tests;

pub use keyward_custody::{DeploymentId, FormatError, MAX_CUSTODIANS, deployment_hex};

use crate::nsm::NsmError;

/// Why a custody step was refused. Every refusal leaves the enclave Sealed;
/// the message says why (it names no secret).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// Genesis parameters out of range.
    #[error(
        "a Shamir custody needs 1 <= threshold <= custodians <= {MAX_CUSTODIANS}; got threshold {threshold} of {custodians} custodians"
    )]
    Threshold { threshold: usize, custodians: usize },
    /// The same custodian key twice at genesis.
    #[error("custodians {first} and {second} have the same public key; each custodian needs their own key")]
    DuplicateCustodian { first: usize, second: usize },
    /// The NSM gave no randomness or no document.
    #[error("the NSM failed: {0}")]
    Nsm(#[from] NsmError),
    /// Secret sharing failed (never expected with valid parameters).
    #[error("secret sharing failed: {0}")]
    Sharing(String),
    /// A package or message could not be made or read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The boot record is unreadable or inconsistent.
    #[error("the boot record is invalid: {0}")]
    Record(String),
    /// A root that does not match the boot record's commitment.
    #[error(
        "the reconstructed root does not match the boot record's root commitment; refusing it (shares or boot record of another deployment, or a root the host supplied)"
    )]
    CommitmentMismatch,
    /// The boot record's custody is not the method this step needs.
    #[error("the boot record's custody is {found}, not {needed}")]
    CustodyMethod { found: &'static str, needed: &'static str },
    /// An unseal message or share of another deployment.
    #[error(
        "this {what} is for deployment {found}; this enclave unseals deployment {expected}: use that deployment's share"
    )]
    WrongDeployment {
        what: &'static str,
        expected: String,
        found: String,
    },
    /// An unseal message sealed to another session (replayed, or made
    /// before the enclave restarted).
    #[error(
        "this unseal message was sealed to another unseal session (replayed, or the enclave restarted since): fetch the current session's attestation document and seal the share again"
    )]
    WrongSession,
    /// The unseal message does not decrypt under the session key.
    #[error("the unseal message does not decrypt with this session's key (altered or corrupt)")]
    Undecryptable,
    /// A custodian index the boot record does not have.
    #[error("custodian {index} does not exist: this deployment has custodians 1-{custodians}")]
    UnknownCustodian { index: u8, custodians: usize },
    /// The header and the share inside disagree.
    #[error("the unseal message's header names custodian {header} but carries custodian {inner}'s share")]
    IndexMismatch { header: u8, inner: u8 },
    /// The same custodian's share twice in one session.
    #[error("custodian {index}'s share was already accepted in this unseal session")]
    DuplicateShare { index: u8 },
    /// A share that does not match its digest in the boot record.
    #[error("custodian {index}'s share does not match the boot record (a wrong or corrupt share); it was not counted")]
    WrongShare { index: u8 },
    /// The session already yielded its root.
    #[error("this unseal session is finished")]
    SessionFinished,
    /// The custody key service refused or could not be reached.
    #[error("the custody key service did not release the root: {0}")]
    CustodyService(String),
    /// What the custody key service or a peer released does not open.
    #[error("the released root cannot be opened: {0}")]
    Recipient(String),
    /// The store is older than a custodian's checkpoint (issue 19 item 3):
    /// a rollback of the store while the enclave was down.
    #[error(
        "the store is older than its custodian last saw: {lags}. The host served an older copy of the store (a rollback) \
         or hid a tenant's index root; the service stays sealed. Restore the latest store, or, to accept this older \
         state (audited), unseal with `kmsctl unseal --accept-store-rollback` (`keyward dev --accept-store-rollback`)"
    )]
    StaleStore {
        /// Each scope that lags (`<scope> epoch served N, custodian saw M`).
        lags: String,
        /// Only roots missing (no older one served).
        omission: bool,
    },
    /// A joining node's store is older than its peers' checkpoints (issue
    /// 19 item 3): the host serves it an older copy, or hid a tenant's root.
    #[error(
        "cluster join refused: the store is older than the peers that released the root have seen ({peers} peer(s) \
         answered): {lags}. The host serves this node an older store (a rollback) or hid a tenant's index root; the \
         service stays sealed. Serve this node the current store, or unseal it with its custodians"
    )]
    StaleJoin {
        /// Each scope that lags (`<scope> epoch served N, the peers saw M`).
        lags: String,
        /// Only roots missing (no older one served).
        omission: bool,
        /// How many peers' checkpoints were merged.
        peers: usize,
    },
    /// A cluster join refused (by the peer: the joiner's document; by the
    /// joiner: the package).
    #[error("cluster join refused: {0}")]
    Join(String),
}
