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
    // Unique per writer: two `keyward dev` nodes sharing a custodian
    // directory never write into each other's partial file.
    let mut partial = path.as_os_str().to_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    partial.push(format!(".partial.{}.{nanos}", std::process::id()));
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

#[cfg(test)]
mod tests {
    use keyward_custody::checkpoint::signed_message;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::EncodePublicKey as _;

    use super::*;
    use crate::custody::CustodyKey;

    const DEPLOYMENT: [u8; 16] = [5; 16];

    fn key() -> SigningKey {
        SigningKey::from_slice(&[9; 32]).expect("a key")
    }

    fn package(commitment: &SigningKey) -> SharePackage {
        SharePackage {
            format: 1,
            deployment_id: DEPLOYMENT,
            custodian_index: 1,
            threshold: 1,
            custodians: 1,
            custodian_key: CustodyKey::generate().public_key(),
            root_commitment: commitment.verifying_key().to_public_key_der().expect("spki").into_vec(),
            enc: [0; 32],
            ciphertext: Vec::new(),
        }
    }

    fn signed(by: &SigningKey, global: u64, tenant: u64) -> SignedCheckpoint {
        let checkpoint = Checkpoint::new(DEPLOYMENT, global, [("111122223333".to_owned(), tenant)].into());
        let bytes = checkpoint.to_bytes().expect("encodes");
        let signature: Signature = by.sign(&signed_message(&bytes));
        SignedCheckpoint::new(bytes, signature.to_der().as_bytes().to_vec())
    }

    #[test]
    fn only_newer_checkpoints_replace_the_kept_one_unless_a_rollback_was_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state");
        let package = package(&key());
        assert_eq!(read_checkpoint(&path, &package).expect("no file yet"), None);

        let first = record_checkpoint(&path, &package, &signed(&key(), 5, 3), false).expect("first");
        assert!(matches!(first, Recorded::First(_)));
        let newer = record_checkpoint(&path, &package, &signed(&key(), 6, 3), false).expect("newer");
        assert!(matches!(newer, Recorded::Newer(_)));
        // Newer globally but older in the tenant's scope: refused, kept as is.
        let older = record_checkpoint(&path, &package, &signed(&key(), 7, 2), false);
        let Err(CustodyError::OlderCheckpoint(lags)) = older else {
            panic!("an older tenant scope was recorded: {older:?}");
        };
        assert!(
            lags.contains("tenant scope 111122223333 epoch served 2, custodian saw 3"),
            "{lags}"
        );
        let kept = read_checkpoint(&path, &package).expect("reads").expect("kept");
        assert_eq!((kept.global, kept.epoch("111122223333")), (6, 3));
        // After an accepted rollback, the older one is kept instead.
        let accepted = record_checkpoint(&path, &package, &signed(&key(), 4, 1), true).expect("accepted");
        assert!(matches!(accepted, Recorded::RolledBack { .. }));
        assert_eq!(
            read_checkpoint(&path, &package).expect("reads").expect("kept").global,
            4
        );
    }

    #[test]
    fn a_checkpoint_not_signed_by_the_commitment_is_refused_and_the_kept_file_is_verified_when_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state");
        let package = package(&key());
        let other = SigningKey::from_slice(&[8; 32]).expect("a key");
        let forged = record_checkpoint(&path, &package, &signed(&other, 9, 9), false);
        assert!(matches!(forged, Err(CustodyError::Checkpoint(_))), "{forged:?}");
        assert!(!path.exists(), "nothing was written");
        record_checkpoint(&path, &package, &signed(&key(), 1, 1), false).expect("records");
        // The state file is checked again when read: one of another key is refused.
        assert!(read_checkpoint(&path, &super::tests::package(&other)).is_err());
    }
}
