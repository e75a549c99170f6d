//! The Nitro Secure Module, behind one trait: the real device in nitro mode,
//! a mock in mock mode. Only the leaf differs; callers are the same.
//!
//! Randomness (used for the root key) and attestation documents. In mock
//! mode, [`MockNsm`] gives randomness only; [`MockAttestingNsm`] also issues
//! genuine Nitro-shaped documents under the mock PKI
//! ([`crate::attestation::mock`]).

use std::fmt;
use std::sync::Arc;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use serde_bytes::ByteBuf;

use crate::attestation::mock::{MockAttester, MockError};
use crate::clock::{Clock, SystemClock};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    #[error("the NSM device could not be opened")]
    Unavailable,
    #[error("the NSM answered {0}")]
    Unexpected(String),
    #[error("mock attestation failed: {0}")]
    Mock(#[from] MockError),
}

pub trait Nsm: Send + Sync {
    /// Fills `out` with random bytes from the module.
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError>;

    /// Asks the module for a signed attestation document carrying the given
    /// optional fields; returns the COSE_Sign1 bytes exactly as the module
    /// produced them. A module that cannot attest answers `Unavailable`.
    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        let _ = (user_data, nonce, public_key);
        Err(NsmError::Unavailable)
    }
}

fn os_random(out: &mut [u8]) -> Result<(), NsmError> {
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, out).map_err(|e| NsmError::Unexpected(e.to_string()))
}

/// Mock mode without attestation: the operating system's CSPRNG stands in
/// for the NSM; `attest` answers `Unavailable`.
#[derive(Debug, Default)]
pub struct MockNsm;

impl Nsm for MockNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        os_random(out)
    }

    fn attest(&self, _: Option<&[u8]>, _: Option<&[u8]>, _: Option<&[u8]>) -> Result<Vec<u8>, NsmError> {
        Err(NsmError::Unavailable)
    }
}

/// Mock mode with attestation: OS randomness, and documents from a
/// [`MockAttester`] stamped with the clock's time.
pub struct MockAttestingNsm {
    attester: MockAttester,
    clock: Arc<dyn Clock>,
}

impl MockAttestingNsm {
    /// Documents stamped with the system clock.
    pub fn new(attester: MockAttester) -> MockAttestingNsm {
        MockAttestingNsm::with_clock(attester, Arc::new(SystemClock))
    }

    /// Documents stamped with `clock` (e.g. mock mode's shifted clock).
    pub fn with_clock(attester: MockAttester, clock: Arc<dyn Clock>) -> MockAttestingNsm {
        MockAttestingNsm { attester, clock }
    }

    pub fn attester(&self) -> &MockAttester {
        &self.attester
    }
}

impl fmt::Debug for MockAttestingNsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockAttestingNsm")
            .field("attester", &self.attester)
            .finish_non_exhaustive()
    }
}

impl Nsm for MockAttestingNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        os_random(out)
    }

    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        let now = self.clock.now();
        let timestamp_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| NsmError::Unexpected(format!("the clock reads {now}, before 1970")))?;
        Ok(self.attester.attest(user_data, nonce, public_key, timestamp_ms)?)
    }
}

/// Nitro mode: `/dev/nsm` through the official driver crate.
#[derive(Debug)]
pub struct NitroNsm {
    fd: i32,
}

impl NitroNsm {
    pub fn open() -> Result<Self, NsmError> {
        let fd = aws_nitro_enclaves_nsm_api::driver::nsm_init();
        if fd < 0 {
            Err(NsmError::Unavailable)
        } else {
            Ok(NitroNsm { fd })
        }
    }
}

impl Drop for NitroNsm {
    fn drop(&mut self) {
        aws_nitro_enclaves_nsm_api::driver::nsm_exit(self.fd);
    }
}

impl Nsm for NitroNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        let mut filled = 0;
        while filled < out.len() {
            match aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, Request::GetRandom {}) {
                Response::GetRandom { random } if !random.is_empty() => {
                    let n = random.len().min(out.len() - filled);
                    out[filled..filled + n].copy_from_slice(&random[..n]);
                    filled += n;
                }
                other => return Err(NsmError::Unexpected(format!("{other:?}"))),
            }
        }
        Ok(())
    }

    fn attest(
        &self,
        user_data: Option<&[u8]>,
        nonce: Option<&[u8]>,
        public_key: Option<&[u8]>,
    ) -> Result<Vec<u8>, NsmError> {
        let request = Request::Attestation {
            user_data: user_data.map(|b| ByteBuf::from(b.to_vec())),
            nonce: nonce.map(|b| ByteBuf::from(b.to_vec())),
            public_key: public_key.map(|b| ByteBuf::from(b.to_vec())),
        };
        match aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, request) {
            Response::Attestation { document } if !document.is_empty() => Ok(document),
            other => Err(NsmError::Unexpected(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_nitro_enclaves_nsm_api::api::AttestationDoc;
    use time::OffsetDateTime;

    use super::*;
    use crate::attestation::mock::MockPki;
    use crate::attestation::verify::{Expectations, TrustAnchor, Verifier};
    use crate::clock::OffsetClock;

    #[test]
    fn mock_randomness_fills_the_buffer() {
        let mut a = [0u8; 48];
        let mut b = [0u8; 48];
        MockNsm.fill_random(&mut a).expect("random");
        MockNsm.fill_random(&mut b).expect("random");
        assert_ne!(a, b);
    }

    #[test]
    fn mock_nsm_without_attester_cannot_attest() {
        assert!(matches!(
            MockNsm.attest(None, Some(b"nonce"), None),
            Err(NsmError::Unavailable)
        ));
    }

    fn payload(document: &[u8]) -> AttestationDoc {
        let (_, _, payload, _): (ByteBuf, std::collections::BTreeMap<i64, i64>, ByteBuf, ByteBuf) =
            serde_cbor::from_slice(document).expect("COSE_Sign1");
        serde_cbor::from_slice(&payload).expect("payload")
    }

    #[test]
    fn mock_attesting_nsm_issues_documents_at_the_clock_time() {
        let attester = MockAttester::new(MockPki::ephemeral().expect("pki"));
        let root = attester.pki().root_der().to_vec();
        let nsm = MockAttestingNsm::new(attester);
        let mut random = [0u8; 32];
        nsm.fill_random(&mut random).expect("random");
        assert_ne!(random, [0u8; 32]);

        let before = OffsetDateTime::now_utc();
        let document = nsm
            .attest(Some(b"user"), Some(b"nonce"), Some(b"key"))
            .expect("document");
        let doc = payload(&document);
        let ms = |t: OffsetDateTime| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("after 1970");
        assert!(ms(before) <= doc.timestamp && doc.timestamp <= ms(OffsetDateTime::now_utc()));
        assert_eq!(doc.nonce.map(ByteBuf::into_vec), Some(b"nonce".to_vec()));
        assert_eq!(doc.user_data.map(ByteBuf::into_vec), Some(b"user".to_vec()));
        assert_eq!(doc.public_key.map(ByteBuf::into_vec), Some(b"key".to_vec()));
        assert_eq!(doc.cabundle[0].as_slice(), root.as_slice());
        let verifier = Verifier::new(TrustAnchor::from_der(&root).expect("anchor"));
        let expect = Expectations {
            nonce: Some(b"nonce".to_vec()),
            ..Expectations::default()
        };
        verifier
            .verify(&document, OffsetDateTime::now_utc(), &expect)
            .expect("verifies under the mock root");

        // Mock mode's shifted clock shifts the document's time too.
        let shifted = MockAttestingNsm::with_clock(
            MockAttester::new(MockPki::ephemeral().expect("pki")),
            Arc::new(OffsetClock { offset_seconds: 86_400 }),
        );
        let doc = payload(&shifted.attest(None, None, None).expect("document"));
        assert!(doc.timestamp >= ms(before) + 86_400_000);

        // The NSM's input limits surface as errors, not panics.
        assert!(matches!(
            nsm.attest(Some(&[0u8; 513]), None, None),
            Err(NsmError::Mock(_))
        ));
    }

    #[test]
    fn nitro_device_is_absent_here() {
        // On plain Linux there is no /dev/nsm: opening must fail cleanly, not panic.
        if !std::path::Path::new("/dev/nsm").exists() {
            assert!(matches!(NitroNsm::open(), Err(NsmError::Unavailable)));
        }
    }
}
