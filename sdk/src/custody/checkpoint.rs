//! What a custodian remembers between unseals (issue 19 item 3,
//! docs/custody.md "Checkpoints"): the newest **checkpoint** — the epochs of
//! the deployment's index roots — that a Ready enclave signed with the
//! deployment's root commitment (`Keyward.GetCheckpoint`).
//!
//! The state file (`kmsctl ... --state FILE`; `keyward dev` keeps
//! `<data-dir>/dev-custodian/checkpoint`) is a `KEYWARD CHECKPOINT` PEM of
//! the signed checkpoint exactly as the enclave answered it, verified again
//! against the share package's root commitment whenever it is read. Only a
//! checkpoint at least as new in every scope replaces it (monotonic), unless
//! the custodian explicitly accepted a store rollback. It is never written
//! to the store: the host must not be able to rewrite it.

use std::path::Path;

use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};

use super::{CustodyError, SharePackage, armor, file_error, io, unarmor};
use crate::Client;

/// PEM label of a checkpoint state file.
pub const CHECKPOINT_LABEL: &str = "KEYWARD CHECKPOINT";
/// The largest state file read (a checkpoint of the most tenant scopes).
const MAX_STATE_LEN: u64 = 1024 * 1024;

/// What [`record_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// No state file before: this is the first.
    First(Checkpoint),
    /// Newer (or equal) in every scope than the one kept: kept instead.
    Newer(Checkpoint),
    /// Older in some scope, and the custodian accepted a rollback: kept
    /// instead of `previous`.
    RolledBack { previous: Checkpoint, now: Checkpoint },
}

impl Recorded {
    pub fn checkpoint(&self) -> &Checkpoint {
        match self {
            Recorded::First(c) | Recorded::Newer(c) | Recorded::RolledBack { now: c, .. } => c,
        }
    }
}

/// The checkpoint kept in `path` for `package`'s deployment, verified
/// against its root commitment; `None` when there is no such file yet.
pub fn read_checkpoint(path: &Path, package: &SharePackage) -> Result<Option<Checkpoint>, CustodyError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(path, source)),
    };
    let mut text = String::new();
    file.take(MAX_STATE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|source| io(path, source))?;
    if text.len() as u64 > MAX_STATE_LEN {
        return Err(file_error(path, format!("larger than {MAX_STATE_LEN} bytes")));
    }
    let bytes = unarmor(CHECKPOINT_LABEL, &text).map_err(|reason| file_error(path, reason))?;
    let signed = SignedCheckpoint::from_bytes(&bytes)?;
    let checkpoint = signed
        .verify(&package.root_commitment, &package.deployment_id)
        .map_err(|e| file_error(path, e.to_string()))?;
    Ok(Some(checkpoint))
}

/// Keeps `signed` in `path` if it verifies against `package`'s root
/// commitment and deployment and is at least as new in every scope as the
/// checkpoint kept there. An older one is refused
/// ([`CustodyError::OlderCheckpoint`]: the service's store is older than
/// this custodian saw), unless `accept_store_rollback` (the custodian
/// accepted that rollback at unseal). Written whole, then renamed.
pub fn record_checkpoint(
    path: &Path,
    package: &SharePackage,
    signed: &SignedCheckpoint,
    accept_store_rollback: bool,
) -> Result<Recorded, CustodyError> {
    let now = signed
        .verify(&package.root_commitment, &package.deployment_id)
        .map_err(CustodyError::Checkpoint)?;
    let previous = read_checkpoint(path, package)?;
    let recorded = match previous {
        None => Recorded::First(now),
        Some(previous) if now.covers(&previous) => Recorded::Newer(now),
        Some(previous) if accept_store_rollback => Recorded::RolledBack { previous, now },
        Some(previous) => {
            let lags: Vec<String> = previous.lags(&now).iter().map(ToString::to_string).collect();
            return Err(CustodyError::OlderCheckpoint(lags.join("; ")));
        }
    };
    let pem = armor(CHECKPOINT_LABEL, &signed.to_bytes()?)?;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    std::fs::write(&partial, pem).map_err(|source| io(&partial, source))?;
    std::fs::rename(&partial, path).map_err(|source| io(path, source))?;
    Ok(recorded)
}

/// `Keyward.GetCheckpoint` on a Ready service, then [`record_checkpoint`]:
/// what `kmsctl custodian checkpoint` and `keyward dev` run.
pub async fn fetch_and_record_checkpoint(
    client: &Client,
    package: &SharePackage,
    path: &Path,
    accept_store_rollback: bool,
) -> Result<Recorded, CustodyError> {
    let signed = client.get_checkpoint().await?;
    record_checkpoint(path, package, &signed, accept_store_rollback)
}
