//! The mock PKI: the root CA (created once and persisted under the data directory, or loaded
//! from there), this boot's intermediate, and the short-lived leaf that signs documents, reissued
//! when a document's time falls outside its window.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::pem::LineEnding;
use der::{DecodePem as _, Encode as _, EncodePem as _};
use p384::ecdsa::{DerSignature, SigningKey};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::RngCore as _;
use sha2::Digest as _;
use x509_cert::Certificate;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use super::{
    INTERMEDIATE_SUBJECT, LEAF_BACKDATE, LEAF_LIFETIME, LEAF_MIN_REMAINING, LEAF_SUBJECT, MOCK_DIR, MockError,
    ROOT_BACKDATE, ROOT_CERT_FILE, ROOT_KEY_FILE, ROOT_LIFETIME, ROOT_SUBJECT, cert_err, io_err,
};

/// The mock PKI: a persistent root, and an intermediate and leaf issued per boot.
pub struct MockPki {
    pub(super) root_der: Vec<u8>,
    root_pem: String,
    intermediate_key: SigningKey,
    intermediate_name: Name,
    pub(super) intermediate_der: Vec<u8>,
    leaf: Mutex<Option<Leaf>>,
}

#[derive(Clone)]
pub(super) struct Leaf {
    pub(super) key: SigningKey,
    pub(super) der: Vec<u8>,
    not_before_ms: u64,
    not_after_ms: u64,
}

impl fmt::Debug for MockPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPki")
            .field("root_sha256", &hex::encode(self.root_fingerprint_sha256()))
            .finish_non_exhaustive()
    }
}

impl MockPki {
    /// Loads the mock root from `<data_dir>/mock-attestation/`, creating it
    /// on first use, and issues this boot's intermediate.
    pub fn load_or_create(data_dir: &Path) -> Result<MockPki, MockError> {
        let dir = mock_dir(data_dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let key_path = dir.join(ROOT_KEY_FILE);
        let cert_path = dir.join(ROOT_CERT_FILE);

        let root_key = match fs::read_to_string(&key_path) {
            Ok(pem) => parse_root_key(&key_path, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if cert_path.exists() {
                    return Err(MockError::BadRoot {
                        path: dir,
                        reason: format!("{ROOT_CERT_FILE} exists without {ROOT_KEY_FILE}; remove the directory"),
                    });
                }
                let key = SigningKey::random(&mut rand::rngs::OsRng);
                let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(cert_err)?;
                if write_new(&key_path, pem.as_bytes(), 0o600)? {
                    key
                } else {
                    // Another process created it first: use theirs.
                    let pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
                    parse_root_key(&key_path, &pem)?
                }
            }
            Err(e) => return Err(io_err(&key_path)(e)),
        };

        let root_cert = match fs::read_to_string(&cert_path) {
            Ok(pem) => parse_root_cert(&cert_path, &pem)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cert = issue_root(&root_key, SystemTime::now())?;
                let pem = cert.to_pem(LineEnding::LF).map_err(cert_err)?;
                if write_new(&cert_path, pem.as_bytes(), 0o644)? {
                    cert
                } else {
                    let pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
                    parse_root_cert(&cert_path, &pem)?
                }
            }
            Err(e) => return Err(io_err(&cert_path)(e)),
        };

        MockPki::from_root(root_key, root_cert, &dir)
    }

    /// Loads an existing mock root from `dir` (the `mock-attestation`
    /// directory holding `root.crt.pem` and `root.key.pem`) without creating
    /// anything: how a workload acting as another mock enclave joins the
    /// enclave's mock PKI.
    pub fn from_root_files(dir: &Path) -> Result<MockPki, MockError> {
        let key_path = dir.join(ROOT_KEY_FILE);
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let root_key = parse_root_key(&key_path, &key_pem)?;
        let root_cert = parse_root_cert(&cert_path, &cert_pem)?;
        MockPki::from_root(root_key, root_cert, dir)
    }

    /// A fresh mock PKI that lives only in memory (tests; a second,
    /// untrusted mock root).
    pub fn ephemeral() -> Result<MockPki, MockError> {
        let root_key = SigningKey::random(&mut rand::rngs::OsRng);
        let root_cert = issue_root(&root_key, SystemTime::now())?;
        MockPki::from_root(root_key, root_cert, Path::new("<memory>"))
    }

    fn from_root(root_key: SigningKey, root_cert: Certificate, origin: &Path) -> Result<MockPki, MockError> {
        let key_spki = SubjectPublicKeyInfoOwned::from_key(*root_key.verifying_key()).map_err(cert_err)?;
        if key_spki != root_cert.tbs_certificate.subject_public_key_info {
            return Err(MockError::BadRoot {
                path: origin.to_path_buf(),
                reason: format!("{ROOT_CERT_FILE} does not belong to {ROOT_KEY_FILE}"),
            });
        }
        let root_der = root_cert.to_der().map_err(cert_err)?;
        let root_pem = root_cert.to_pem(LineEnding::LF).map_err(cert_err)?;

        // This boot's intermediate, valid as long as the root.
        let intermediate_key = SigningKey::random(&mut rand::rngs::OsRng);
        let intermediate_name = Name::from_str(INTERMEDIATE_SUBJECT).map_err(cert_err)?;
        let intermediate = issue(
            Profile::SubCA {
                issuer: root_cert.tbs_certificate.subject.clone(),
                path_len_constraint: Some(0),
            },
            root_cert.tbs_certificate.validity,
            intermediate_name.clone(),
            &intermediate_key,
            &root_key,
        )?;
        let intermediate_der = intermediate.to_der().map_err(cert_err)?;

        Ok(MockPki {
            root_der,
            root_pem,
            intermediate_key,
            intermediate_name,
            intermediate_der,
            leaf: Mutex::new(None),
        })
    }

    /// The root certificate, DER: the trust anchor for mock documents.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// SHA-256 of the root certificate's DER (for logs and pinning).
    pub fn root_fingerprint_sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.root_der).into()
    }

    /// This boot's intermediate certificate, DER (`cabundle[1]`).
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The leaf that signs a document stamped `timestamp_ms`: the current
    /// one while it has at least an hour left at that time, else a new one.
    pub(super) fn leaf_for(&self, timestamp_ms: u64) -> Result<Leaf, MockError> {
        let mut slot = self.leaf.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(leaf) = slot.as_ref()
            && leaf.not_before_ms <= timestamp_ms
            && timestamp_ms.saturating_add(millis(LEAF_MIN_REMAINING)) <= leaf.not_after_ms
        {
            return Ok(leaf.clone());
        }
        let issued = UNIX_EPOCH
            .checked_add(Duration::from_millis(timestamp_ms))
            .ok_or(MockError::BadTimestamp(timestamp_ms))?;
        let not_before = issued.checked_sub(LEAF_BACKDATE).unwrap_or(UNIX_EPOCH);
        let not_after = issued
            .checked_add(LEAF_LIFETIME)
            .ok_or(MockError::BadTimestamp(timestamp_ms))?;
        let validity = Validity {
            not_before: Time::try_from(not_before).map_err(|_| MockError::BadTimestamp(timestamp_ms))?,
            not_after: Time::try_from(not_after).map_err(|_| MockError::BadTimestamp(timestamp_ms))?,
        };
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let cert = issue(
            Profile::Leaf {
                issuer: self.intermediate_name.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            validity,
            Name::from_str(LEAF_SUBJECT).map_err(cert_err)?,
            &key,
            &self.intermediate_key,
        )?;
        // Certificate times have whole seconds: keep the window the certificate states.
        let v = cert.tbs_certificate.validity;
        let leaf = Leaf {
            key,
            der: cert.to_der().map_err(cert_err)?,
            not_before_ms: millis(v.not_before.to_unix_duration()),
            not_after_ms: millis(v.not_after.to_unix_duration()),
        };
        *slot = Some(leaf.clone());
        Ok(leaf)
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `<data_dir>/mock-attestation`.
pub fn mock_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(MOCK_DIR)
}

fn parse_root_key(path: &Path, pem: &str) -> Result<SigningKey, MockError> {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the mock attestation root key is readable by others");
    }
    SigningKey::from_pkcs8_pem(pem).map_err(|e| MockError::BadRoot {
        path: path.to_path_buf(),
        reason: format!("not a P-384 PKCS#8 key: {e}"),
    })
}

fn parse_root_cert(path: &Path, pem: &str) -> Result<Certificate, MockError> {
    Certificate::from_pem(pem).map_err(|e| MockError::BadRoot {
        path: path.to_path_buf(),
        reason: format!("not a PEM certificate: {e}"),
    })
}

/// Writes `contents` to `path` only if `path` does not exist yet, atomically
/// (a temporary file hard-linked into place). Returns false when someone
/// else's file was already there.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<bool, MockError> {
    let tmp = path.with_extension(format!(
        "tmp.{}.{:016x}",
        std::process::id(),
        rand::rngs::OsRng.next_u64()
    ));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = fs::remove_file(&tmp);
    linked.map_err(io_err(path))
}

fn random_serial() -> Result<SerialNumber, MockError> {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::new(&bytes).map_err(cert_err)
}

fn issue(
    profile: Profile,
    validity: Validity,
    subject: Name,
    subject_key: &SigningKey,
    issuer_key: &SigningKey,
) -> Result<Certificate, MockError> {
    let spki = SubjectPublicKeyInfoOwned::from_key(*subject_key.verifying_key()).map_err(cert_err)?;
    CertificateBuilder::new(profile, random_serial()?, validity, subject, spki, issuer_key)
        .map_err(cert_err)?
        .build::<DerSignature>()
        .map_err(cert_err)
}

/// A self-signed root CA (basicConstraints CA, pathlen 1, critical; keyUsage
/// keyCertSign + cRLSign), valid for 30 years from a day before `now`.
fn issue_root(key: &SigningKey, now: SystemTime) -> Result<Certificate, MockError> {
    let subject = Name::from_str(ROOT_SUBJECT).map_err(cert_err)?;
    let validity = Validity {
        not_before: Time::try_from(now.checked_sub(ROOT_BACKDATE).unwrap_or(now)).map_err(cert_err)?,
        not_after: Time::try_from(now + ROOT_LIFETIME).map_err(cert_err)?,
    };
    // Self-issued with a path length, like a real root with one intermediate below.
    issue(
        Profile::SubCA {
            issuer: subject.clone(),
            path_len_constraint: Some(1),
        },
        validity,
        subject,
        key,
        key,
    )
}
