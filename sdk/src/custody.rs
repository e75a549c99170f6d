//! Root-key custody, the custodian's and operator's side (what `kmsctl init`
//! and `kmsctl unseal` run; docs/custody.md).
//!
//! - **Keys.** A custodian (or operator) key is an X25519 key pair, stored
//!   as RFC 8410 PEM: `-----BEGIN PRIVATE KEY-----` (PKCS#8, written 0600,
//!   never overwritten) and `-----BEGIN PUBLIC KEY-----`
//!   (SubjectPublicKeyInfo) — the same files
//!   `openssl genpkey -algorithm X25519` and `openssl pkey -pubout` make.
//!   [`CustodyKey::generate`] makes one; private keys are wiped from memory
//!   when dropped and never printed.
//! - **Share packages.** Genesis returns one [`SharePackage`] per custodian
//!   (its share HPKE-sealed to the custodian's key), stored as a
//!   `KEYWARD SHARE PACKAGE` PEM file. [`CustodyKey::open_share`] opens one.
//! - **Unseal.** The sealed enclave publishes an attestation document for
//!   its current unseal session. [`seal_share_for`] verifies it (anchor,
//!   expected PCRs, the caller's fresh nonce, at most five minutes old —
//!   the same checks as [`crate::attestation::verify_enclave`]), checks that
//!   its `user_data` binds the document's key to the share's deployment
//!   (`"keyward/v1/unseal:" ‖ deployment id ‖ SHA-256(public_key)`), and
//!   seals the share to that key: only that enclave, in that session, can
//!   read it.
//! - **The service calls.** [`Client::init_custody`](crate::Client::init_custody),
//!   [`Client::get_unseal_document`](crate::Client::get_unseal_document),
//!   [`Client::unseal`](crate::Client::unseal) (unauthenticated:
//!   [`Client::unauthenticated`](crate::Client::unauthenticated)) and
//!   [`unseal_with_share`], the one unseal path of `kmsctl unseal` and
//!   `keyward dev`.
//! - **The operator credential.** Genesis seals the operator's first secret
//!   access key to the operator's key ([`OperatorCredentialPackage`]);
//!   [`CustodyKey::open_operator_credential`] opens it locally.
//!
//! ```no_run
//! # fn demo(document: &[u8], nonce: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use std::path::Path;
//! use keyward_sdk::attestation::TrustAnchor;
//! use keyward_sdk::custody::{CustodyKey, read_share_package, seal_share_for};
//! let key = CustodyKey::read_private_pem(Path::new("alice.key"))?;
//! let share = key.open_share(&read_share_package(Path::new("alice.share"))?)?;
//! let pcr0 = hex::decode("…the enclave image's PCR0…")?;
//! let message = seal_share_for(document, TrustAnchor::aws_nitro_root()?, nonce,
//!     &BTreeMap::from([(0, pcr0)]), &share)?;
//! let bytes = message.to_bytes()?; // what `kmsctl unseal` sends
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use der::pem::{self, LineEnding};
use zeroize::Zeroizing;

pub use keyward_custody::operator::OperatorCredentialPackage;
pub use keyward_custody::share::{SharePackage, ShareSecret};
pub use keyward_custody::suite::PublicKey;
use keyward_custody::suite::{KEY_LEN, PrivateKey};
pub use keyward_custody::unseal::{UNSEAL_BINDING_PREFIX, UnsealMessage};
use keyward_custody::unseal::{parse_session_binding, session_id};
pub use keyward_custody::{DeploymentId, FormatError, deployment_hex};

use crate::Secret;
use crate::attestation::{AttestationError, TrustAnchor, verify_enclave_document};

mod checkpoint;
mod service;
pub use checkpoint::{CHECKPOINT_LABEL, Recorded, fetch_and_record_checkpoint, read_checkpoint, record_checkpoint};
pub use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};
pub use keyward_custody::unseal::Freshness;
pub use service::{
    ExpectedPcrs, InitCustodyOutput, InitCustodyRequest, ReshareCustodyOutput, ReshareCustodyRequest, STATE_READY,
    STATE_SEALED, UnsealDocument, UnsealProgress, unseal_with_share, unseal_with_share_at, unseal_with_share_fresh_at,
};

/// RFC 8410 SubjectPublicKeyInfo of an X25519 key, before its 32 bytes.
const X25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];
/// RFC 8410 PKCS#8 (v1) of an X25519 key, before its 32 bytes.
const X25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
/// PEM label of a share package file.
pub const SHARE_PACKAGE_LABEL: &str = "KEYWARD SHARE PACKAGE";
/// PEM label of an operator credential package file.
pub const OPERATOR_CREDENTIAL_LABEL: &str = "KEYWARD OPERATOR CREDENTIAL";
/// Key and package files are small; anything larger is refused unread.
const MAX_FILE_LEN: u64 = 64 * 1024;

/// Why a custody step failed on the custodian's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A key or package file is never overwritten.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// Not a PEM file of the expected kind.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A package or message could not be read or opened.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The enclave's document did not verify (anchor, signature, freshness,
    /// nonce, PCRs, debug mode): nothing was sealed.
    #[error("the enclave's attestation document was refused: {0}")]
    Attestation(#[from] AttestationError),
    /// The document verified but does not bind an unseal session.
    #[error("the attestation document does not bind an unseal session: {0}")]
    Unbound(&'static str),
    /// The enclave unseals another deployment than the share's.
    #[error("the enclave unseals deployment {enclave}, but this share is for deployment {share}: nothing was sent")]
    WrongDeployment { share: String, enclave: String },
    /// The service refused a call or could not be reached.
    #[error(transparent)]
    Service(#[from] crate::Error),
    /// A checkpoint that does not verify (signature, deployment, format).
    #[error("the service's checkpoint was refused: {0}")]
    Checkpoint(keyward_custody::checkpoint::CheckpointError),
    /// The service states a checkpoint older than the one kept: its store
    /// was rolled back (or the answer replayed). Not recorded.
    #[error(
        "the service's store is older than this custodian last saw: {0}. The checkpoint was not recorded \
         (a rollback of the store; if it was accepted deliberately, record with --accept-store-rollback)"
    )]
    OlderCheckpoint(String),
}

/// A custodian's or operator's X25519 key pair.
pub struct CustodyKey {
    key: PrivateKey,
}

impl std::fmt::Debug for CustodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodyKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl CustodyKey {
    /// A fresh key pair from the operating system's CSPRNG.
    pub fn generate() -> CustodyKey {
        CustodyKey {
            key: PrivateKey::generate(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The private key as PKCS#8 PEM (wiped when dropped).
    pub fn private_pem(&self) -> Result<Zeroizing<String>, CustodyError> {
        let mut der = Zeroizing::new(X25519_PKCS8_PREFIX.to_vec());
        der.extend_from_slice(self.key.to_bytes().as_slice());
        armor(PRIVATE_KEY_LABEL, &der).map(Zeroizing::new)
    }

    /// Reads a private key from PKCS#8 PEM text.
    pub fn from_private_pem(text: &str) -> Result<CustodyKey, String> {
        let (label, der) = pem::decode_vec(text.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
        let der = Zeroizing::new(der);
        if label != PRIVATE_KEY_LABEL {
            return Err(format!("a {label} PEM, not a PRIVATE KEY"));
        }
        let raw = der
            .strip_prefix(X25519_PKCS8_PREFIX.as_slice())
            .filter(|raw| raw.len() == KEY_LEN)
            .ok_or("not an X25519 private key (RFC 8410 PKCS#8)")?;
        let key = PrivateKey::from_bytes(raw).map_err(|e| e.to_string())?;
        Ok(CustodyKey { key })
    }

    /// Writes the private key to a new file `path`, mode 0600. An existing
    /// file is never overwritten.
    pub fn write_private_pem(&self, path: &Path) -> Result<(), CustodyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => CustodyError::Exists(path.to_owned()),
                _ => io(path, source),
            })?;
        let pem = self.private_pem()?;
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| io(path, source))
    }

    /// Reads a private key file.
    pub fn read_private_pem(path: &Path) -> Result<CustodyKey, CustodyError> {
        let text = read_small(path)?;
        CustodyKey::from_private_pem(&text).map_err(|reason| file_error(path, reason))
    }

    /// Opens the share package genesis sealed to this key.
    pub fn open_share(&self, package: &SharePackage) -> Result<ShareSecret, CustodyError> {
        Ok(package.open(&self.key)?)
    }

    /// Opens the operator credential genesis sealed to this key: the access
    /// key id and its secret.
    pub fn open_operator_credential(
        &self,
        package: &OperatorCredentialPackage,
    ) -> Result<(String, Secret), CustodyError> {
        let secret = package.open(&self.key)?;
        let text = std::str::from_utf8(&secret).map_err(|_| FormatError::Malformed("operator credential"))?;
        Ok((package.access_key_id.clone(), Secret::new(text.to_owned())))
    }
}

/// A public key as SubjectPublicKeyInfo PEM (what `kmsctl init --custodian`
/// and `--operator-key` read).
pub fn public_key_pem(key: &PublicKey) -> Result<String, CustodyError> {
    let mut der = X25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    armor(PUBLIC_KEY_LABEL, &der)
}

/// Reads a public key from SubjectPublicKeyInfo PEM text.
pub fn public_key_from_pem(text: &str) -> Result<PublicKey, String> {
    let (label, der) = pem::decode_vec(text.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if label != PUBLIC_KEY_LABEL {
        return Err(format!("a {label} PEM, not a PUBLIC KEY"));
    }
    let raw = der
        .strip_prefix(X25519_SPKI_PREFIX.as_slice())
        .ok_or("not an X25519 public key (RFC 8410 SubjectPublicKeyInfo)")?;
    PublicKey::from_slice(raw).map_err(|e| e.to_string())
}

/// Writes a public key file (replacing any file there: it is public).
pub fn write_public_pem(key: &PublicKey, path: &Path) -> Result<(), CustodyError> {
    std::fs::write(path, public_key_pem(key)?).map_err(|source| io(path, source))
}

/// Reads a public key file.
pub fn read_public_pem(path: &Path) -> Result<PublicKey, CustodyError> {
    let text = read_small(path)?;
    public_key_from_pem(&text).map_err(|reason| file_error(path, reason))
}

/// A share package as `KEYWARD SHARE PACKAGE` PEM.
pub fn share_package_pem(package: &SharePackage) -> Result<String, CustodyError> {
    armor(SHARE_PACKAGE_LABEL, &package.to_bytes()?)
}

pub fn share_package_from_pem(text: &str) -> Result<SharePackage, String> {
    let bytes = unarmor(SHARE_PACKAGE_LABEL, text)?;
    SharePackage::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// Reads a share package file.
pub fn read_share_package(path: &Path) -> Result<SharePackage, CustodyError> {
    let text = read_small(path)?;
    share_package_from_pem(&text).map_err(|reason| file_error(path, reason))
}

/// An operator credential package as `KEYWARD OPERATOR CREDENTIAL` PEM.
pub fn operator_credential_pem(package: &OperatorCredentialPackage) -> Result<String, CustodyError> {
    armor(OPERATOR_CREDENTIAL_LABEL, &package.to_bytes()?)
}

pub fn operator_credential_from_pem(text: &str) -> Result<OperatorCredentialPackage, String> {
    let bytes = unarmor(OPERATOR_CREDENTIAL_LABEL, text)?;
    OperatorCredentialPackage::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// Reads an operator credential package file.
pub fn read_operator_credential(path: &Path) -> Result<OperatorCredentialPackage, CustodyError> {
    let text = read_small(path)?;
    operator_credential_from_pem(&text).map_err(|reason| file_error(path, reason))
}

/// Writes `text` (a package or public key PEM) to a new file `path`; an
/// existing file is never overwritten.
pub fn write_new_file(path: &Path, text: &str) -> Result<(), CustodyError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => CustodyError::Exists(path.to_owned()),
            _ => io(path, source),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io(path, source))
}

/// Verifies the sealed enclave's unseal-session document and seals `share`
/// to the session key it binds, as of now; see [`seal_share_for_at`].
pub fn seal_share_for(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    share: &ShareSecret,
) -> Result<UnsealMessage, CustodyError> {
    seal_share_for_at(document, anchor, nonce, expected_pcrs, share, SystemTime::now())
}

/// [`seal_share_for`] as of `now`: the document must chain to `anchor`, be
/// at most five minutes old, echo `nonce` (1-512 fresh bytes the caller
/// sent with its request for the document), have exactly `expected_pcrs`
/// (at least one; debug mode refused), carry a 32-byte `public_key` and a
/// `user_data` of `"keyward/v1/unseal:" ‖ the share's deployment id ‖
/// SHA-256(public_key)`. Only then is the share sealed to `public_key`.
pub fn seal_share_for_at(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    share: &ShareSecret,
    now: SystemTime,
) -> Result<UnsealMessage, CustodyError> {
    seal_share_fresh_for_at(
        document,
        anchor,
        nonce,
        expected_pcrs,
        share,
        &keyward_custody::unseal::Freshness::default(),
        now,
    )
}

/// [`seal_share_for_at`] stating `freshness` (the custodian's last
/// checkpoint, and whether it accepts a store rollback) in the format-2
/// unseal message.
pub fn seal_share_fresh_for_at(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    share: &ShareSecret,
    freshness: &keyward_custody::unseal::Freshness,
    now: SystemTime,
) -> Result<UnsealMessage, CustodyError> {
    let verified = verify_enclave_document(document, anchor, nonce, expected_pcrs, now)?;
    let public_key = verified
        .public_key()
        .ok_or(CustodyError::Unbound("it carries no public_key"))
        .and_then(|key| {
            PublicKey::from_slice(key).map_err(|_| CustodyError::Unbound("public_key is not 32 bytes of X25519"))
        })?;
    let (deployment, session) = verified
        .user_data()
        .and_then(parse_session_binding)
        .ok_or(CustodyError::Unbound(
            "user_data is not keyward/v1/unseal: ‖ deployment id ‖ SHA-256(public_key)",
        ))?;
    if session != session_id(&public_key) {
        return Err(CustodyError::Unbound("user_data binds another key than public_key"));
    }
    if &deployment != share.deployment_id() {
        return Err(CustodyError::WrongDeployment {
            share: deployment_hex(share.deployment_id()),
            enclave: deployment_hex(&deployment),
        });
    }
    Ok(UnsealMessage::seal_with(share, &public_key, freshness)?)
}

fn armor(label: &str, bytes: &[u8]) -> Result<String, CustodyError> {
    pem::encode_string(label, LineEnding::LF, bytes)
        .map_err(|_| CustodyError::Format(FormatError::Malformed("PEM armor")))
}

fn unarmor(expected: &str, text: &str) -> Result<Vec<u8>, String> {
    let (label, bytes) = pem::decode_vec(text.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if label != expected {
        return Err(format!("a {label} PEM, not a {expected}"));
    }
    Ok(bytes)
}

fn read_small(path: &Path) -> Result<Zeroizing<String>, CustodyError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|source| io(path, source))?;
    // Room for the largest file read, so the buffer never moves (and
    // leaves no unwiped copy of a private key behind).
    let mut text = Zeroizing::new(String::with_capacity(MAX_FILE_LEN as usize + 1));
    file.take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|source| io(path, source))?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(file_error(path, format!("larger than {MAX_FILE_LEN} bytes")));
    }
    Ok(text)
}

fn io(path: &Path, source: std::io::Error) -> CustodyError {
    CustodyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn file_error(path: &Path, reason: String) -> CustodyError {
    CustodyError::File {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests;
