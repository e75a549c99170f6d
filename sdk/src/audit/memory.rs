//! Remembering signed audit heads across verifications: rollback and fork
//! detection (issue 19 item 3).
//!
//! [`super::verify_chain`] proves a chain complete and signed, but a host
//! that restarts the enclave on an older copy of its store makes it serve an
//! older chain under a genuinely signed older head: alone, nothing tells the
//! verifier. [`HeadMemory`] keeps, in a local file the caller chooses (never
//! in the host's store), the last verified head of every chain it verified,
//! per **deployment** (SHA-256 of the audit public key's SubjectPublicKeyInfo:
//! the root determines the key, so another deployment is another key) and
//! **chain** (tenant id, or `operator`). Each newly verified head is compared
//! with the remembered one:
//!
//! - the same sequence must carry the same hash, else [`FreshnessError::Fork`];
//! - a lower sequence is a [`FreshnessError::Rollback`];
//! - a higher sequence must extend it: with the records (a whole chain), the
//!   remembered head must be the record at its sequence in the new chain
//!   (an ancestor of the new head, as the verified links make it), else
//!   [`FreshnessError::Fork`]; with a head alone, it is accepted as
//!   [`Observation::Newer`].
//!
//! Only a head that verified against the given key and is not older or
//! forked replaces the remembered one. The file is rewritten atomically
//! (a temporary file in the same directory, written, `fsync`ed, renamed over
//! the old one, then the directory `fsync`ed); just before that, the file is
//! read again and any head another process remembered meanwhile at a higher
//! sequence is kept. Two processes racing still lose at most an update,
//! never remember a head that was not verified (so never raise a false
//! alarm): the memory then holds an older genuine head.
//!
//! The file (JSON, mode 0600 where the platform has modes):
//!
//! ```text
//! {"Format": "keyward/audit-heads/v1",
//!  "Heads": [{"AuditPublicKey": base64 SPKI DER, "Chain": "...", "Sequence": n,
//!             "Hash": hex, "Signature": base64 DER, "SeenAt": ms since the epoch}, ...]}
//! ```
//!
//! Every head in it is verified against its key when the file is opened; a
//! file that does not parse, has another format, a duplicate, or a head whose
//! signature does not verify is refused ([`StateError::Corrupt`]), never
//! silently reset: a reset memory would accept the very rollback it exists
//! to detect. A missing file is an empty memory.
//!
//! What it cannot do: see a rollback that happened before the first
//! verification it remembers, or protect a head it never saw; and a memory
//! kept with a key taken from the service's answer (not pinned) only tells
//! heads of that key apart, so a host that swaps key and chain together
//! looks like a new deployment ([`Observation::First`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuditError, AuditRecord, GENESIS_HASH, Head, Verified};

/// The `Format` of the state file.
pub const STATE_FORMAT: &str = "keyward/audit-heads/v1";

/// A head the memory holds: verified against `audit_public_key` when it was
/// remembered and again when the file was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedHead {
    /// The audit public key the head verified against (SPKI DER).
    pub audit_public_key: Vec<u8>,
    /// The signed head.
    pub head: Head,
    /// When it was remembered, milliseconds since the epoch (local clock;
    /// informational).
    pub seen_at: u64,
}

impl RememberedHead {
    /// The deployment: hex SHA-256 of the audit public key's SPKI DER.
    pub fn deployment(&self) -> String {
        deployment_of(&self.audit_public_key)
    }
}

/// How a verified head relates to the one remembered for its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// No head was remembered for this chain of this deployment; this one is now.
    First,
    /// The very head remembered.
    Unchanged,
    /// A newer head whose chain holds the remembered head (at sequence
    /// `from`) as an ancestor, checked through the records.
    Extended { from: u64 },
    /// A newer head, checked without records (a head alone): remembered, but
    /// that it descends from the head at `from` was not verifiable.
    Newer { from: u64 },
}

/// Why a verification with memory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FreshnessError {
    /// The chain or head itself did not verify (nothing was compared or remembered).
    #[error(transparent)]
    Chain(#[from] AuditError),
    /// The service served an older head than one verified before.
    #[error(
        "ROLLBACK of audit chain {chain:?}: the service served its head at sequence {served} ({served_hash}), \
         but the head at sequence {remembered} ({remembered_hash}), signed by the same audit key, was verified \
         before: the host's store was rolled back (or an older head replayed); records after {served} were hidden"
    )]
    Rollback {
        chain: String,
        /// The remembered head's sequence and hash.
        remembered: u64,
        remembered_hash: String,
        /// The served head's sequence and hash.
        served: u64,
        served_hash: String,
    },
    /// The service served a chain that holds another record at `sequence`
    /// than the remembered head: two histories signed by one key.
    #[error(
        "FORK of audit chain {chain:?} at sequence {sequence}: the head verified before has hash \
         {remembered_hash} there, the chain served now (head at {served_head}) has {served_hash}: the store was \
         rolled back and written again"
    )]
    Fork {
        chain: String,
        sequence: u64,
        remembered_hash: String,
        served_hash: String,
        /// The served head's sequence.
        served_head: u64,
    },
    /// The state file could not be read or written, or is corrupt.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing it failed.
    #[error("audit head memory {}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
    /// It is not a state file this version wrote, or a head in it does not verify.
    #[error(
        "audit head memory {} is corrupt: {reason}; refusing to use it (it holds the heads verified before, \
         and starting afresh would forget them: inspect it, and remove it only to accept that)",
        .path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
}

/// (deployment, chain) → the head remembered for it.
type Heads = BTreeMap<(String, String), RememberedHead>;

/// The last verified head per (deployment, chain), kept in a local file.
#[derive(Debug, Clone)]
pub struct HeadMemory {
    path: PathBuf,
    heads: Heads,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StateFile {
    format: String,
    heads: Vec<StoredHead>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StoredHead {
    audit_public_key: String,
    chain: String,
    sequence: u64,
    hash: String,
    signature: String,
    seen_at: u64,
}

impl HeadMemory {
    /// Opens the memory kept in `path` (none yet: an empty memory; the file
    /// is created at the first head remembered). A file that cannot be read
    /// or is corrupt is refused.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StateError> {
        let path = path.into();
        let heads = read_state(&path)?.unwrap_or_default();
        Ok(HeadMemory { path, heads })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The head remembered for `chain` of the deployment whose audit key is
    /// `public_key_spki_der`.
    pub fn remembered(&self, public_key_spki_der: &[u8], chain: &str) -> Option<&RememberedHead> {
        let key = canonical_key(public_key_spki_der).ok()?;
        self.heads.get(&(deployment_of(&key), chain.to_owned()))
    }

    /// Every remembered head, by deployment then chain.
    pub fn heads(&self) -> impl Iterator<Item = &RememberedHead> {
        self.heads.values()
    }

    /// [`super::verify_chain`], then the comparison with the head remembered
    /// for the chain (the records prove the remembered head an ancestor of a
    /// newer one); a verified head that is not older or forked is remembered
    /// and the file rewritten before this returns.
    pub fn verify_chain(
        &mut self,
        records: &[AuditRecord],
        head: &Head,
        public_key_spki_der: &[u8],
    ) -> Result<(Verified, Observation), FreshnessError> {
        let verified = super::verify_chain(records, head, public_key_spki_der)?;
        let observation = self.observe(head, public_key_spki_der, Some(records))?;
        Ok((verified, observation))
    }

    /// [`super::verify_head`] (the signature only), then the comparison: a
    /// lower sequence is a rollback, the same sequence must have the same
    /// hash, a higher one is remembered as [`Observation::Newer`].
    pub fn verify_head(&mut self, head: &Head, public_key_spki_der: &[u8]) -> Result<Observation, FreshnessError> {
        super::verify_head(head, public_key_spki_der)?;
        self.observe(head, public_key_spki_der, None)
    }

    fn observe(
        &mut self,
        head: &Head,
        public_key_spki_der: &[u8],
        records: Option<&[AuditRecord]>,
    ) -> Result<Observation, FreshnessError> {
        let key = canonical_key(public_key_spki_der)?;
        let id = (deployment_of(&key), head.chain.clone());
        let observation = judge(self.heads.get(&id).map(|r| &r.head), head, records)?;
        if observation != Observation::Unchanged {
            // Remembered only once the file holds it.
            let mut heads = self.heads.clone();
            heads.insert(
                id,
                RememberedHead {
                    audit_public_key: key,
                    head: head.clone(),
                    seen_at: now_millis(),
                },
            );
            self.heads = self.save(heads)?;
        }
        Ok(observation)
    }

    /// Writes `heads` atomically, keeping any head another process
    /// remembered meanwhile at a higher sequence; returns what was written.
    fn save(&self, mut heads: Heads) -> Result<Heads, StateError> {
        if let Some(on_disk) = read_state(&self.path)? {
            for (id, theirs) in on_disk {
                let newer = heads
                    .get(&id)
                    .is_none_or(|ours| theirs.head.sequence > ours.head.sequence);
                if newer {
                    heads.insert(id, theirs);
                }
            }
        }
        let file = StateFile {
            format: STATE_FORMAT.to_owned(),
            heads: heads
                .values()
                .map(|r| StoredHead {
                    audit_public_key: base64::engine::general_purpose::STANDARD.encode(&r.audit_public_key),
                    chain: r.head.chain.clone(),
                    sequence: r.head.sequence,
                    hash: r.head.hash.clone(),
                    signature: r.head.signature.clone(),
                    seen_at: r.seen_at,
                })
                .collect(),
        };
        let io = |e: &dyn std::fmt::Display| StateError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(&e))?;
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes).map_err(|e| io(&e))?;
        Ok(heads)
    }
}

/// How `served` relates to `remembered` (same chain, same key, both verified).
fn judge(
    remembered: Option<&Head>,
    served: &Head,
    records: Option<&[AuditRecord]>,
) -> Result<Observation, FreshnessError> {
    let Some(known) = remembered else {
        return Ok(Observation::First);
    };
    let fork = |sequence: u64, served_hash: &str| FreshnessError::Fork {
        chain: served.chain.clone(),
        sequence,
        remembered_hash: known.hash.clone(),
        served_hash: served_hash.to_owned(),
        served_head: served.sequence,
    };
    if served.sequence < known.sequence {
        return Err(FreshnessError::Rollback {
            chain: served.chain.clone(),
            remembered: known.sequence,
            remembered_hash: known.hash.clone(),
            served: served.sequence,
            served_hash: served.hash.clone(),
        });
    }
    if served.sequence == known.sequence {
        return if served.hash == known.hash {
            Ok(Observation::Unchanged)
        } else {
            Err(fork(known.sequence, &served.hash))
        };
    }
    let Some(records) = records else {
        return Ok(Observation::Newer { from: known.sequence });
    };
    // The records verified as 1..=served.sequence, so the ancestor at the
    // remembered sequence is the record there (genesis for an empty chain).
    let ancestor = match known.sequence.checked_sub(1) {
        None => Some(GENESIS_HASH),
        Some(index) => usize::try_from(index)
            .ok()
            .and_then(|i| records.get(i))
            .filter(|r| r.sequence == known.sequence)
            .map(|r| r.hash.as_str()),
    };
    match ancestor {
        Some(hash) if hash == known.hash => Ok(Observation::Extended { from: known.sequence }),
        Some(hash) => Err(fork(known.sequence, hash)),
        // Not the verified whole chain: only the head could be compared.
        None => Ok(Observation::Newer { from: known.sequence }),
    }
}

/// The key's SPKI DER as this crate writes it (the same key given in
/// another DER spelling is the same deployment).
fn canonical_key(public_key_spki_der: &[u8]) -> Result<Vec<u8>, AuditError> {
    let key = VerifyingKey::from_public_key_der(public_key_spki_der)
        .map_err(|e| AuditError::InvalidPublicKey(e.to_string()))?;
    let der = key
        .to_public_key_der()
        .map_err(|e| AuditError::InvalidPublicKey(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}

fn deployment_of(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The heads in `path`, every one verified; `None` when there is no file.
fn read_state(path: &Path) -> Result<Option<Heads>, StateError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a state file of this verifier ({e})")))?;
    if file.format != STATE_FORMAT {
        return Err(corrupt(format!("format {:?}, expected {STATE_FORMAT:?}", file.format)));
    }
    let mut heads = BTreeMap::new();
    for stored in file.heads {
        let what = format!("the head of chain {:?} at sequence {}", stored.chain, stored.sequence);
        let key = base64::engine::general_purpose::STANDARD
            .decode(stored.audit_public_key.trim())
            .map_err(|e| corrupt(format!("{what}: AuditPublicKey is not base64 ({e})")))
            .and_then(|der| canonical_key(&der).map_err(|e| corrupt(format!("{what}: {e}"))))?;
        let head = Head {
            chain: stored.chain,
            sequence: stored.sequence,
            hash: stored.hash,
            signature: stored.signature,
        };
        super::verify_head(&head, &key)
            .map_err(|e| corrupt(format!("{what} does not verify against its audit key ({})", e.what())))?;
        let id = (deployment_of(&key), head.chain.clone());
        let remembered = RememberedHead {
            audit_public_key: key,
            head,
            seen_at: stored.seen_at,
        };
        if heads.insert(id, remembered).is_some() {
            return Err(corrupt(format!("{what}: a second head for that chain and key")));
        }
    }
    Ok(Some(heads))
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the
/// new one, never a mix: a new file next to it, written and synced, renamed
/// over it, then the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}-{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        // The rename itself is durable once the directory is.
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests;
