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
//!
//! `pki` holds the PKI itself (root persistence, certificate issuance, the
//! rotating leaf); `attester` builds and signs the documents.

mod attester;
mod pki;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use attester::{MockAttester, attest_with, default_pcrs, parse_pcr_arg};
pub use pki::{MockPki, mock_dir};

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

#[cfg(test)]
mod tests;
