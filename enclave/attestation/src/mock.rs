//! The mock NSM's PKI: genuine Nitro-shaped attestation documents under a
//! mock root that nitro mode never trusts.
//!
//! A mock P-384 PKI mirrors the real one: a self-signed root CA (its subject
//! says MOCK and NOT AWS), an intermediate CA, and a short-lived leaf (about
//! 3 hours, like the NSM's) that signs the documents. The root persists in
//! `<data_dir>/mock-attestation/` (`root.crt.pem`, and `root.key.pem` with
//! mode 0600) so verifiers can pin it across restarts; the intermediate and
//! the leaf are issued in memory on every boot. When a document's timestamp
//! falls outside the current leaf's window, a fresh leaf is issued, as the
//! real NSM does.
//!
//! Documents are byte-for-byte in the Nitro shape: an untagged COSE_Sign1
//! `[h'a1013822', {}, payload, r‖s]` (ES384), whose payload is the NSM
//! driver crate's own `AttestationDoc` encoding (definite map, keys
//! `module_id, digest, timestamp, pcrs, certificate, cabundle, public_key,
//! user_data, nonce`, absent options as CBOR null, `cabundle` root first).
//!
//! Workloads that act as another mock enclave (tests, the SDK's mock
//! workloads) load the same root with [`MockPki::from_root_files`] and issue
//! documents with [`attest_with`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use der::pem::LineEnding;
use der::{DecodePem as _, Encode as _, EncodePem as _};
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::RngCore as _;
use serde_bytes::{ByteBuf, Bytes};
use sha2::Digest as _;
use x509_cert::Certificate;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// The directory under the data directory that holds the mock root.
pub const MOCK_DIR: &str = "mock-attestation";
/// The mock root certificate (PEM) inside [`MOCK_DIR`].
pub const ROOT_CERT_FILE: &str = "root.crt.pem";
/// The mock root's PKCS#8 private key (PEM, mode 0600) inside [`MOCK_DIR`].
pub const ROOT_KEY_FILE: &str = "root.key.pem";

/// The mock root's subject. Anyone reading the certificate sees it is not AWS's.
pub const ROOT_SUBJECT: &str = "CN=Keyward MOCK Nitro Root - NOT AWS,OU=MOCK,O=Keyward";
const INTERMEDIATE_SUBJECT: &str = "CN=Keyward MOCK Nitro Intermediate - NOT AWS,OU=MOCK,O=Keyward";
const LEAF_SUBJECT: &str = "CN=Keyward MOCK Nitro Secure Module - NOT AWS,OU=MOCK,O=Keyward";

/// The module id a [`MockAttester`] reports unless told otherwise.
pub const DEFAULT_MODULE_ID: &str = "i-00000000000000000-enc0000000000mock";

/// How many PCRs every document carries (as the NSM's documents do).
pub const PCR_COUNT: u8 = 16;
/// Highest PCR index the NSM has (32 registers).
pub const MAX_PCR_INDEX: u8 = 31;
/// A PCR value is a SHA-384 digest.
pub const PCR_LEN: usize = 48;

/// The NSM's input limits (AWS Nitro Enclaves documentation).
pub const MAX_USER_DATA_LEN: usize = 512;
pub const MAX_NONCE_LEN: usize = 512;
pub const MAX_PUBLIC_KEY_LEN: usize = 1024;

/// COSE protected header `{1: -35}` (alg: ES384), exactly as the NSM encodes it.
const PROTECTED_HEADER: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

const ROOT_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);
const ROOT_LIFETIME: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
/// A leaf lives about 3 hours, like the NSM's.
const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 60 * 60);
/// A leaf's notBefore lies this far before the first document it signs
/// (tolerates small clock differences between attester and verifier).
const LEAF_BACKDATE: Duration = Duration::from_secs(60);
/// A cached leaf is replaced once it has less than this left at the document's time.
const LEAF_MIN_REMAINING: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    #[error("mock attestation file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mock attestation root at {path} is unusable: {reason}")]
    BadRoot { path: PathBuf, reason: String },
    #[error("issuing a mock certificate failed: {0}")]
    Certificate(String),
    #[error("PCR{index} must be {PCR_LEN} bytes (SHA-384), got {len}")]
    BadPcrLength { index: u8, len: usize },
    #[error("PCR index {0} is out of range (0-{MAX_PCR_INDEX})")]
    BadPcrIndex(u8),
    #[error("{field} is {len} bytes; the NSM accepts at most {max}")]
    InputTooLarge {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("encoding the attestation document failed: {0}")]
    Encoding(String),
    #[error("the timestamp {0} ms cannot be represented in a certificate")]
    BadTimestamp(u64),
}

fn cert_err(e: impl fmt::Display) -> MockError {
    MockError::Certificate(e.to_string())
}

fn enc_err(e: impl fmt::Display) -> MockError {
    MockError::Encoding(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MockError + '_ {
    move |source| MockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The mock PKI: a persistent root, and an intermediate and leaf issued per boot.
pub struct MockPki {
    root_der: Vec<u8>,
    root_pem: String,
    intermediate_key: SigningKey,
    intermediate_name: Name,
    intermediate_der: Vec<u8>,
    leaf: Mutex<Option<Leaf>>,
}

#[derive(Clone)]
struct Leaf {
    key: SigningKey,
    der: Vec<u8>,
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
    fn leaf_for(&self, timestamp_ms: u64) -> Result<Leaf, MockError> {
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

fn millis(d: Duration) -> u64 {
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

/// The PCRs a [`MockAttester`] reports by default: PCR0, 1 and 2 are the
/// SHA-384 of fixed mock strings (so the mock is not mistaken for a
/// debug-mode enclave, whose PCR0-2 are zero); PCR3-15 are zero.
pub fn default_pcrs() -> BTreeMap<u8, Vec<u8>> {
    (0..PCR_COUNT)
        .map(|i| {
            let value = match i {
                0..=2 => sha2::Sha384::digest(format!("Keyward MOCK enclave image PCR{i}").as_bytes()).to_vec(),
                _ => vec![0; PCR_LEN],
            };
            (i, value)
        })
        .collect()
}

fn check_len(field: &'static str, value: Option<&[u8]>, max: usize) -> Result<Option<ByteBuf>, MockError> {
    match value {
        Some(v) if v.len() > max => Err(MockError::InputTooLarge {
            field,
            len: v.len(),
            max,
        }),
        other => Ok(other.map(|v| ByteBuf::from(v.to_vec()))),
    }
}

/// Issues a genuine Nitro-shaped attestation document under `pki`, as the
/// enclave `module_id` with `pcrs` (PCR0-15 always present, zero unless
/// given; any given index up to 31 included), signed by the PKI's leaf.
/// Returns the untagged COSE_Sign1 bytes.
pub fn attest_with(
    pki: &MockPki,
    module_id: &str,
    pcrs: &BTreeMap<u8, Vec<u8>>,
    user_data: Option<&[u8]>,
    nonce: Option<&[u8]>,
    public_key: Option<&[u8]>,
    timestamp_ms: u64,
) -> Result<Vec<u8>, MockError> {
    let user_data = check_len("user_data", user_data, MAX_USER_DATA_LEN)?;
    let nonce = check_len("nonce", nonce, MAX_NONCE_LEN)?;
    let public_key = check_len("public_key", public_key, MAX_PUBLIC_KEY_LEN)?;

    let mut all_pcrs: BTreeMap<usize, ByteBuf> = (0..usize::from(PCR_COUNT))
        .map(|i| (i, ByteBuf::from(vec![0u8; PCR_LEN])))
        .collect();
    for (&index, value) in pcrs {
        if index > MAX_PCR_INDEX {
            return Err(MockError::BadPcrIndex(index));
        }
        if value.len() != PCR_LEN {
            return Err(MockError::BadPcrLength {
                index,
                len: value.len(),
            });
        }
        all_pcrs.insert(usize::from(index), ByteBuf::from(value.clone()));
    }

    let leaf = pki.leaf_for(timestamp_ms)?;
    let doc = AttestationDoc {
        module_id: module_id.to_owned(),
        digest: Digest::SHA384,
        timestamp: timestamp_ms,
        pcrs: all_pcrs,
        certificate: ByteBuf::from(leaf.der),
        cabundle: vec![
            ByteBuf::from(pki.root_der.clone()),
            ByteBuf::from(pki.intermediate_der.clone()),
        ],
        public_key,
        user_data,
        nonce,
    };
    let payload = serde_cbor::to_vec(&doc).map_err(enc_err)?;

    // Sig_structure = ["Signature1", protected, external_aad = h'', payload] (RFC 9052 §4.4).
    let sig_structure = serde_cbor::to_vec(&(
        "Signature1",
        Bytes::new(&PROTECTED_HEADER),
        Bytes::new(&[]),
        Bytes::new(&payload),
    ))
    .map_err(enc_err)?;
    let signature: Signature = leaf.key.try_sign(&sig_structure).map_err(enc_err)?;
    let signature = signature.to_bytes();

    // COSE_Sign1 = [protected, unprotected = {}, payload, signature], untagged like the NSM's.
    serde_cbor::to_vec(&(
        Bytes::new(&PROTECTED_HEADER),
        BTreeMap::<u8, u8>::new(),
        Bytes::new(&payload),
        Bytes::new(&signature),
    ))
    .map_err(enc_err)
}

/// The mock NSM's attestation: one enclave's identity (module id, PCRs)
/// under a mock PKI.
#[derive(Debug)]
pub struct MockAttester {
    pki: MockPki,
    module_id: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl MockAttester {
    /// An attester with [`DEFAULT_MODULE_ID`] and [`default_pcrs`].
    pub fn new(pki: MockPki) -> MockAttester {
        MockAttester {
            pki,
            module_id: DEFAULT_MODULE_ID.to_owned(),
            pcrs: default_pcrs(),
        }
    }

    pub fn with_module_id(mut self, module_id: impl Into<String>) -> MockAttester {
        self.module_id = module_id.into();
        self
    }

    /// Sets one PCR (index 0-31, 48 bytes), e.g. from `--mock-pcr`.
    pub fn with_pcr(mut self, index: u8, value: Vec<u8>) -> Result<MockAttester, MockError> {
        if index > MAX_PCR_INDEX {
            return Err(MockError::BadPcrIndex(index));
        }
        if value.len() != PCR_LEN {
            return Err(MockError::BadPcrLength {
                index,
                len: value.len(),
            });
        }
        self.pcrs.insert(index, value);
        Ok(self)
    }

    pub fn pki(&self) -> &MockPki {
        &self.pki
    }

    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    pub fn pcrs(&self) -> &BTreeMap<u8, Vec<u8>> {
        &self.pcrs
    }

    /// A signed document stamped `timestamp_ms` (ms since the Unix epoch).
    pub fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
        timestamp_ms: u64,
    ) -> Result<Vec<u8>, MockError> {
        attest_with(
            &self.pki,
            &self.module_id,
            &self.pcrs,
            user_data,
            nonce,
            public_key,
            timestamp_ms,
        )
    }
}

/// Parses `INDEX=HEX` (the `--mock-pcr` flag): an index 0-31 and a 48-byte
/// value in hex.
pub fn parse_pcr_arg(s: &str) -> Result<(u8, Vec<u8>), String> {
    let (index, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected INDEX=HEX, got {s:?}"))?;
    let index: u8 = index
        .trim()
        .parse()
        .map_err(|_| format!("PCR index must be a number 0-{MAX_PCR_INDEX}, got {:?}", index.trim()))?;
    if index > MAX_PCR_INDEX {
        return Err(format!("PCR index must be 0-{MAX_PCR_INDEX}, got {index}"));
    }
    let value = value.trim();
    let value = hex::decode(value.strip_prefix("0x").unwrap_or(value))
        .map_err(|e| format!("PCR{index} value is not hex: {e}"))?;
    if value.len() != PCR_LEN {
        return Err(format!(
            "PCR{index} value must be {PCR_LEN} bytes ({} hex digits), got {}",
            PCR_LEN * 2,
            value.len()
        ));
    }
    Ok((index, value))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use der::{Decode as _, Encode as _};
    use p384::ecdsa::VerifyingKey;
    use p384::ecdsa::signature::Verifier as _;
    use p384::pkcs8::DecodePublicKey as _;
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

    use super::*;

    const AWS_ROOT_PEM: &str = include_str!("aws-nitro-enclaves-root-g1.pem");
    const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";

    /// A scratch directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "keyward-mock-pki-{}-{}-{:08x}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                rand::rngs::OsRng.next_u32()
            ));
            fs::create_dir_all(&path).expect("temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn now_ms() -> u64 {
        millis(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970"))
    }

    struct Cose {
        protected: Vec<u8>,
        unprotected: BTreeMap<i64, i64>,
        payload: Vec<u8>,
        signature: Vec<u8>,
    }

    fn decode(doc: &[u8]) -> Cose {
        let (protected, unprotected, payload, signature): (ByteBuf, BTreeMap<i64, i64>, ByteBuf, ByteBuf) =
            serde_cbor::from_slice(doc).expect("COSE_Sign1");
        Cose {
            protected: protected.into_vec(),
            unprotected,
            payload: payload.into_vec(),
            signature: signature.into_vec(),
        }
    }

    fn payload(doc: &[u8]) -> AttestationDoc {
        serde_cbor::from_slice(&decode(doc).payload).expect("payload")
    }

    fn cert(der: &[u8]) -> Certificate {
        Certificate::from_der(der).expect("certificate")
    }

    fn verifying_key(cert: &Certificate) -> VerifyingKey {
        let spki = cert.tbs_certificate.subject_public_key_info.to_der().expect("spki");
        VerifyingKey::from_public_key_der(&spki).expect("P-384 key")
    }

    fn ext<'a, T: der::Decode<'a> + der::oid::AssociatedOid>(cert: &'a Certificate) -> Option<(bool, T)> {
        let ext = cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id == T::OID)?;
        Some((ext.critical, T::from_der(ext.extn_value.as_bytes()).expect("extension")))
    }

    /// Independent check of a document (until the shared verifier lands):
    /// the COSE signature under the leaf, and the chain
    /// leaf → reversed(cabundle[1..]) → the pinned `anchor_der`, at `at_ms`.
    fn verify_independently(doc: &[u8], anchor_der: &[u8], at_ms: u64) -> Result<AttestationDoc, String> {
        let cose = decode(doc);
        if cose.protected != PROTECTED_HEADER || !cose.unprotected.is_empty() {
            return Err("headers".into());
        }
        let parsed: AttestationDoc = serde_cbor::from_slice(&cose.payload).map_err(|e| e.to_string())?;
        let leaf = cert(&parsed.certificate);
        let mut chain = vec![leaf.clone()];
        chain.extend(parsed.cabundle.iter().skip(1).rev().map(|der| cert(der)));
        chain.push(cert(anchor_der));
        for pair in chain.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.tbs_certificate.issuer != parent.tbs_certificate.subject {
                return Err(format!("issuer mismatch at {}", child.tbs_certificate.subject));
            }
            let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
            let sig = DerSignature::from_bytes(child.signature.raw_bytes()).map_err(|e| e.to_string())?;
            verifying_key(parent)
                .verify(&tbs, &sig)
                .map_err(|_| format!("bad certificate signature on {}", child.tbs_certificate.subject))?;
        }
        for c in &chain {
            let v = c.tbs_certificate.validity;
            let (from, to) = (
                millis(v.not_before.to_unix_duration()),
                millis(v.not_after.to_unix_duration()),
            );
            if !(from <= at_ms && at_ms <= to) {
                return Err(format!("{} not valid at {at_ms}", c.tbs_certificate.subject));
            }
        }
        let sig_structure = serde_cbor::to_vec(&(
            "Signature1",
            Bytes::new(&cose.protected),
            Bytes::new(&[]),
            Bytes::new(&cose.payload),
        ))
        .map_err(|e| e.to_string())?;
        let sig = Signature::from_slice(&cose.signature).map_err(|e| e.to_string())?;
        verifying_key(&leaf)
            .verify(&sig_structure, &sig)
            .map_err(|_| "bad COSE signature".to_string())?;
        Ok(parsed)
    }

    #[test]
    fn root_files_are_created_once_and_reused() {
        let tmp = TempDir::new();
        let first = MockPki::load_or_create(&tmp.0).expect("creates");
        let dir = tmp.0.join("mock-attestation");
        let key_mode = fs::metadata(dir.join("root.key.pem"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700);
        let cert_pem = fs::read_to_string(dir.join("root.crt.pem")).expect("cert file");
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            fs::read_to_string(dir.join("root.key.pem"))
                .expect("key")
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(first.root_pem(), cert_pem);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 2);

        let second = MockPki::load_or_create(&tmp.0).expect("reloads");
        assert_eq!(first.root_der(), second.root_der());
        assert_eq!(first.root_fingerprint_sha256(), second.root_fingerprint_sha256());
        // The intermediate is issued per boot.
        assert_ne!(first.intermediate_der(), second.intermediate_der());

        // A workload holding only the root files joins the same PKI.
        let workload = MockPki::from_root_files(&dir).expect("loads");
        assert_eq!(workload.root_der(), first.root_der());
        let now = now_ms();
        let doc = attest_with(&workload, "i-workload", &default_pcrs(), None, Some(b"n"), None, now).expect("doc");
        verify_independently(&doc, first.root_der(), now).expect("verifies under the enclave's mock root");
    }

    #[test]
    fn missing_or_mismatched_root_files_fail_cleanly() {
        let tmp = TempDir::new();
        assert!(matches!(MockPki::from_root_files(&tmp.0), Err(MockError::Io { .. })));

        MockPki::load_or_create(&tmp.0).expect("creates");
        let dir = mock_dir(&tmp.0);
        let other = MockPki::ephemeral().expect("pki");
        fs::write(dir.join(ROOT_CERT_FILE), other.root_pem()).expect("overwrite");
        assert!(matches!(MockPki::from_root_files(&dir), Err(MockError::BadRoot { .. })));
        assert!(matches!(
            MockPki::load_or_create(&tmp.0),
            Err(MockError::BadRoot { .. })
        ));

        fs::remove_file(dir.join(ROOT_KEY_FILE)).expect("rm key");
        assert!(matches!(
            MockPki::load_or_create(&tmp.0),
            Err(MockError::BadRoot { .. })
        ));

        fs::write(dir.join(ROOT_KEY_FILE), "garbage").expect("write");
        assert!(matches!(MockPki::from_root_files(&dir), Err(MockError::BadRoot { .. })));
    }

    #[test]
    fn lost_root_certificate_is_reissued_from_the_key() {
        let tmp = TempDir::new();
        let first = MockPki::load_or_create(&tmp.0).expect("creates");
        fs::remove_file(mock_dir(&tmp.0).join(ROOT_CERT_FILE)).expect("rm cert");
        let second = MockPki::load_or_create(&tmp.0).expect("reissues");
        let (a, b) = (cert(first.root_der()), cert(second.root_der()));
        assert_eq!(
            a.tbs_certificate.subject_public_key_info,
            b.tbs_certificate.subject_public_key_info
        );
    }

    #[test]
    fn certificates_have_the_nitro_profile_and_say_mock() {
        let pki = MockPki::ephemeral().expect("pki");
        let now = now_ms();
        let doc = payload(&MockAttester::new(pki).attest(None, None, None, now).expect("doc"));
        assert_eq!(doc.cabundle.len(), 2);
        let root = cert(&doc.cabundle[0]);
        let intermediate = cert(&doc.cabundle[1]);
        let leaf = cert(&doc.certificate);

        let subject = root.tbs_certificate.subject.to_string();
        assert!(subject.contains("MOCK") && subject.contains("NOT AWS"), "{subject}");
        assert_eq!(root.tbs_certificate.issuer, root.tbs_certificate.subject);
        for c in [&root, &intermediate, &leaf] {
            assert!(c.tbs_certificate.subject.to_string().contains("MOCK"));
            assert_eq!(c.signature_algorithm.oid.to_string(), ECDSA_WITH_SHA384);
            assert_eq!(c.tbs_certificate.signature.oid.to_string(), ECDSA_WITH_SHA384);
            verifying_key(c); // P-384
        }
        for (c, path_len) in [(&root, 1), (&intermediate, 0)] {
            let (critical, bc) = ext::<BasicConstraints>(c).expect("basicConstraints");
            assert!(critical && bc.ca);
            assert_eq!(bc.path_len_constraint, Some(path_len));
            let (_, ku) = ext::<KeyUsage>(c).expect("keyUsage");
            assert!(ku.0.contains(KeyUsages::KeyCertSign));
            assert!(!ku.0.contains(KeyUsages::DigitalSignature));
        }
        let (critical, bc) = ext::<BasicConstraints>(&leaf).expect("basicConstraints");
        assert!(critical && !bc.ca);
        let (_, ku) = ext::<KeyUsage>(&leaf).expect("keyUsage");
        assert!(ku.0.contains(KeyUsages::DigitalSignature));
        assert!(!ku.0.contains(KeyUsages::KeyCertSign));

        let v = leaf.tbs_certificate.validity;
        let lifetime = v.not_after.to_unix_duration() - v.not_before.to_unix_duration();
        assert_eq!(lifetime, LEAF_LIFETIME + LEAF_BACKDATE);
        let v = root.tbs_certificate.validity;
        assert!(v.not_after.to_unix_duration() - v.not_before.to_unix_duration() > ROOT_LIFETIME);
    }

    #[test]
    fn document_has_the_nitro_byte_layout() {
        let attester = MockAttester::new(MockPki::ephemeral().expect("pki"));
        let doc = attester.attest(Some(b"user"), None, None, now_ms()).expect("doc");
        assert_eq!(doc[..8], [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59]);
        let payload_len = usize::from(u16::from_be_bytes([doc[8], doc[9]]));
        assert_eq!(doc.len(), 10 + payload_len + 2 + 96);
        assert_eq!(doc[10 + payload_len..12 + payload_len], [0x58, 0x60]);

        let payload = &doc[10..10 + payload_len];
        assert_eq!(payload[0], 0xa9, "definite map of nine entries");
        let mut at = 0;
        for key in [
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
            "public_key",
            "user_data",
            "nonce",
        ] {
            let mut needle = vec![0x60 | u8::try_from(key.len()).expect("short")];
            needle.extend_from_slice(key.as_bytes());
            let found = payload[at..]
                .windows(needle.len())
                .position(|w| w == needle)
                .expect(key);
            at += found + needle.len();
        }
        // Absent options are CBOR null, never omitted.
        let public_key = b"\x6apublic_key\xf6";
        assert!(payload.windows(public_key.len()).any(|w| w == public_key));
        assert!(payload.ends_with(b"\x65nonce\xf6"));
        // "digest": "SHA384"
        let digest = b"\x66digest\x66SHA384";
        assert!(payload.windows(digest.len()).any(|w| w == digest));

        // The Sig_structure the signature covers, built by hand.
        let cose = decode(&doc);
        let mut sig_structure = vec![0x84, 0x6a];
        sig_structure.extend_from_slice(b"Signature1");
        sig_structure.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40, 0x59]);
        sig_structure.extend_from_slice(&doc[8..10]);
        sig_structure.extend_from_slice(payload);
        let leaf = cert(&payload_of(&cose).certificate);
        let sig = Signature::from_slice(&cose.signature).expect("r||s");
        verifying_key(&leaf)
            .verify(&sig_structure, &sig)
            .expect("signature over the hand-built Sig_structure");
    }

    fn payload_of(cose: &Cose) -> AttestationDoc {
        serde_cbor::from_slice(&cose.payload).expect("payload")
    }

    #[test]
    fn document_verifies_under_its_mock_root_only() {
        let pki = MockPki::ephemeral().expect("pki");
        let root = pki.root_der().to_vec();
        let attester = MockAttester::new(pki);
        let now = now_ms();
        let doc = attester.attest(None, Some(b"nonce"), None, now).expect("doc");
        verify_independently(&doc, &root, now).expect("verifies");

        let aws_root = Certificate::from_pem(AWS_ROOT_PEM)
            .expect("AWS root")
            .to_der()
            .expect("der");
        assert!(verify_independently(&doc, &aws_root, now).is_err());
        let other = MockPki::ephemeral().expect("pki");
        assert!(verify_independently(&doc, other.root_der(), now).is_err());
        let foreign = attest_with(&other, "i-other", &default_pcrs(), None, None, None, now).expect("doc");
        assert!(verify_independently(&foreign, &root, now).is_err());

        // Tampering with a PCR byte breaks the COSE signature.
        let mut tampered = doc.clone();
        let pcr0 = default_pcrs()[&0].clone();
        let at = tampered
            .windows(PCR_LEN)
            .position(|w| w == pcr0)
            .expect("PCR0 in the document");
        tampered[at + PCR_LEN - 1] ^= 1;
        assert_eq!(
            verify_independently(&tampered, &root, now).err().as_deref(),
            Some("bad COSE signature")
        );

        // The leaf lives about three hours.
        assert!(verify_independently(&doc, &root, now + 4 * 3600 * 1000).is_err());
    }

    #[test]
    fn fields_round_trip() {
        let attester = MockAttester::new(MockPki::ephemeral().expect("pki"))
            .with_module_id("i-0123456789abcdef0-enc0123456789abcdef")
            .with_pcr(8, vec![0x88; 48])
            .expect("pcr8");
        let ts = now_ms();
        let user_data = vec![7u8; MAX_USER_DATA_LEN];
        let nonce = vec![9u8; 256];
        let public_key = b"\x30\x82 some DER".to_vec();
        let doc = payload(
            &attester
                .attest(Some(&user_data), Some(&nonce), Some(&public_key), ts)
                .expect("doc"),
        );
        assert_eq!(doc.module_id, "i-0123456789abcdef0-enc0123456789abcdef");
        assert_eq!(doc.digest, Digest::SHA384);
        assert_eq!(doc.timestamp, ts);
        assert_eq!(doc.user_data.map(ByteBuf::into_vec), Some(user_data));
        assert_eq!(doc.nonce.map(ByteBuf::into_vec), Some(nonce));
        assert_eq!(doc.public_key.map(ByteBuf::into_vec), Some(public_key));
        assert_eq!(doc.pcrs.len(), 16);
        assert!(doc.pcrs.values().all(|v| v.len() == PCR_LEN));
        for i in 0..3 {
            assert_ne!(doc.pcrs[&i].as_slice(), [0u8; 48], "PCR{i} is not debug-mode zero");
        }
        assert_ne!(doc.pcrs[&0], doc.pcrs[&1]);
        assert_eq!(doc.pcrs[&3].as_slice(), [0u8; 48]);
        assert_eq!(doc.pcrs[&8].as_slice(), [0x88u8; 48]);

        let empty = payload(&attester.attest(None, None, None, ts).expect("doc"));
        assert_eq!((empty.user_data, empty.nonce, empty.public_key), (None, None, None));
    }

    #[test]
    fn inputs_are_checked_like_the_nsm() {
        let attester = MockAttester::new(MockPki::ephemeral().expect("pki"));
        let ts = now_ms();
        let big = vec![0u8; 1025];
        assert!(matches!(
            attester.attest(Some(&big[..513]), None, None, ts),
            Err(MockError::InputTooLarge { field: "user_data", .. })
        ));
        assert!(matches!(
            attester.attest(None, Some(&big[..513]), None, ts),
            Err(MockError::InputTooLarge { field: "nonce", .. })
        ));
        assert!(matches!(
            attester.attest(None, None, Some(&big), ts),
            Err(MockError::InputTooLarge {
                field: "public_key",
                ..
            })
        ));
        attester
            .attest(None, None, Some(&big[..1024]), ts)
            .expect("1024-byte key fits");

        let pki = attester.pki();
        let short = BTreeMap::from([(0u8, vec![1u8; 32])]);
        assert!(matches!(
            attest_with(pki, "m", &short, None, None, None, ts),
            Err(MockError::BadPcrLength { index: 0, len: 32 })
        ));
        let high = BTreeMap::from([(32u8, vec![1u8; 48])]);
        assert!(matches!(
            attest_with(pki, "m", &high, None, None, None, ts),
            Err(MockError::BadPcrIndex(32))
        ));
        let extra = BTreeMap::from([(20u8, vec![2u8; 48])]);
        let doc = payload(&attest_with(pki, "m", &extra, None, None, None, ts).expect("doc"));
        assert_eq!(doc.pcrs.len(), 17);
        assert_eq!(doc.pcrs[&20].as_slice(), [2u8; 48]);
        assert!(
            MockAttester::new(MockPki::ephemeral().expect("pki"))
                .with_pcr(1, vec![0; 47])
                .is_err()
        );
    }

    #[test]
    fn leaf_is_reused_while_fresh_and_rotated_after() {
        let pki = MockPki::ephemeral().expect("pki");
        let root = pki.root_der().to_vec();
        let attester = MockAttester::new(pki);
        let t0 = now_ms();
        let a = attester.attest(None, None, None, t0).expect("doc");
        let b = attester.attest(None, None, None, t0 + 60_000).expect("doc");
        assert_eq!(payload(&a).certificate, payload(&b).certificate);
        let later = t0 + 5 * 3600 * 1000;
        let c = attester.attest(None, None, None, later).expect("doc");
        assert_ne!(payload(&a).certificate, payload(&c).certificate);
        verify_independently(&c, &root, later).expect("a rotated leaf verifies at its time");
        // The intermediate stays for the boot.
        assert_eq!(payload(&a).cabundle, payload(&c).cabundle);
    }

    fn at(ms: u64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time")
    }

    #[test]
    fn shared_verifier_accepts_mock_documents_under_the_mock_root_only() {
        use crate::document;
        use crate::verify::{AttestationError, Expectations, TrustAnchor, Verifier};

        let pki = MockPki::ephemeral().expect("pki");
        let verifier = Verifier::new(TrustAnchor::from_der(pki.root_der()).expect("mock root is an anchor"));
        assert_eq!(verifier.anchor().fingerprint(), pki.root_fingerprint_sha256());
        TrustAnchor::from_pem(pki.root_pem()).expect("PEM anchor");
        let attester = MockAttester::new(pki);
        let now = now_ms();
        let key = vec![0x30; 294];
        let doc = attester
            .attest(Some(b"user"), Some(b"nonce"), Some(&key), now)
            .expect("doc");

        // The shared parser sees the same document and Sig_structure.
        let cose = document::parse_cose(&doc).expect("COSE");
        assert_eq!(cose.protected, document::protected_es384());
        let mut hand_built = vec![0x84, 0x6a];
        hand_built.extend_from_slice(b"Signature1\x44\xa1\x01\x38\x22\x40\x59");
        hand_built.extend_from_slice(&doc[8..10]);
        hand_built.extend_from_slice(&cose.payload);
        assert_eq!(document::sig_structure(&cose), hand_built);
        let parsed = document::parse_payload(&cose.payload).expect("payload");
        assert_eq!(parsed.pcrs, *attester.pcrs());

        let expect = Expectations {
            nonce: Some(b"nonce".to_vec()),
            pcrs: BTreeMap::from([(0, vec![attester.pcrs()[&0].clone()])]),
            ..Expectations::default()
        };
        let verified = verifier.verify(&doc, at(now), &expect).expect("verifies");
        assert_eq!(verified.module_id(), DEFAULT_MODULE_ID);
        assert_eq!(verified.timestamp_ms(), now);
        assert_eq!(verified.nonce(), Some(&b"nonce"[..]));
        assert_eq!(verified.user_data(), Some(&b"user"[..]));
        assert_eq!(verified.public_key(), Some(&key[..]));
        assert!(!verified.is_debug_mode());

        // Absent options come back absent.
        let bare = attester.attest(None, None, None, now).expect("doc");
        let verified = verifier
            .verify(&bare, at(now), &Expectations::default())
            .expect("verifies");
        assert_eq!(
            (verified.nonce(), verified.user_data(), verified.public_key()),
            (None, None, None)
        );

        // Never under the AWS root.
        let aws = Verifier::new(TrustAnchor::aws_nitro_root().expect("AWS root"));
        assert!(aws.verify(&doc, at(now), &Expectations::default()).is_err());

        // Not under another mock root, in either direction.
        let other = MockPki::ephemeral().expect("pki");
        let foreign = attest_with(&other, "i-other", &default_pcrs(), None, None, None, now).expect("doc");
        assert!(verifier.verify(&foreign, at(now), &Expectations::default()).is_err());
        let other_verifier = Verifier::new(TrustAnchor::from_der(other.root_der()).expect("anchor"));
        assert!(other_verifier.verify(&doc, at(now), &Expectations::default()).is_err());
        other_verifier
            .verify(&foreign, at(now), &Expectations::default())
            .expect("its own root accepts it");

        // Tampering, a wrong nonce and a PCR mismatch are refused.
        let mut tampered = doc.clone();
        let pcr0 = &attester.pcrs()[&0];
        let i = tampered
            .windows(PCR_LEN)
            .position(|w| w == pcr0.as_slice())
            .expect("PCR0");
        tampered[i + PCR_LEN - 1] ^= 1;
        assert_eq!(
            verifier.verify(&tampered, at(now), &Expectations::default()),
            Err(AttestationError::BadSignature)
        );
        let wrong_nonce = Expectations {
            nonce: Some(b"other".to_vec()),
            ..Expectations::default()
        };
        assert_eq!(
            verifier.verify(&doc, at(now), &wrong_nonce),
            Err(AttestationError::NonceMismatch)
        );
        let wrong_pcr = Expectations {
            pcrs: BTreeMap::from([(0, vec![vec![0; 48]])]),
            ..Expectations::default()
        };
        assert_eq!(
            verifier.verify(&doc, at(now), &wrong_pcr),
            Err(AttestationError::PcrMismatch { index: 0 })
        );

        // A rotated leaf (hours later) verifies at its own time.
        let later = now + 5 * 3600 * 1000;
        let doc = attester.attest(None, None, None, later).expect("doc");
        verifier
            .verify(&doc, at(later), &Expectations::default())
            .expect("rotated leaf verifies");
    }

    #[test]
    fn shared_verifier_accepts_documents_from_persisted_root_files() {
        use crate::verify::{Expectations, TrustAnchor, Verifier};

        let tmp = TempDir::new();
        let enclave = MockPki::load_or_create(&tmp.0).expect("creates");
        let pem = fs::read_to_string(mock_dir(&tmp.0).join(ROOT_CERT_FILE)).expect("root file");
        let verifier = Verifier::new(TrustAnchor::from_pem(&pem).expect("anchor"));
        let workload = MockPki::from_root_files(&mock_dir(&tmp.0)).expect("workload");
        let now = now_ms();
        let pcrs = BTreeMap::from([(0, vec![0xaa; 48]), (1, vec![0xbb; 48]), (2, vec![0xcc; 48])]);
        for pki in [&enclave, &workload] {
            let doc = attest_with(pki, "i-workload", &pcrs, None, Some(b"n"), None, now).expect("doc");
            let verified = verifier
                .verify(&doc, at(now), &Expectations::default())
                .expect("verifies");
            assert_eq!(verified.pcr(1), Some(&[0xbb; 48][..]));
            assert_eq!(verified.pcr(15), Some(&[0; 48][..]));
        }
    }

    #[test]
    fn pcr_arguments_parse() {
        let hex48 = "ab".repeat(48);
        assert_eq!(parse_pcr_arg(&format!("0={hex48}")), Ok((0, vec![0xab; 48])));
        assert_eq!(
            parse_pcr_arg(&format!("31=0x{}", hex48.to_uppercase())),
            Ok((31, vec![0xab; 48]))
        );
        assert!(parse_pcr_arg(&format!("32={hex48}")).is_err());
        assert!(parse_pcr_arg(&format!("-1={hex48}")).is_err());
        assert!(parse_pcr_arg(&format!("x={hex48}")).is_err());
        assert!(parse_pcr_arg(&hex48).is_err());
        assert!(parse_pcr_arg("4=abcd").is_err());
        assert!(parse_pcr_arg(&format!("4={}", "zz".repeat(48))).is_err());
    }
}
