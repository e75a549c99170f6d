//! The Nitro Secure Module, behind one trait: the real device in nitro mode,
//! a mock in mock mode. Only the leaf differs; callers are the same.
//!
//! This capability starts with randomness (used for the root key); attestation
//! is added to the same trait by the attestation capability.

use aws_nitro_enclaves_nsm_api::api::{Request, Response};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NsmError {
    #[error("the NSM device could not be opened")]
    Unavailable,
    #[error("the NSM answered {0}")]
    Unexpected(String),
}

pub trait Nsm: Send + Sync {
    /// Fills `out` with random bytes from the module.
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError>;
}

/// Mock mode: the operating system's CSPRNG stands in for the NSM.
#[derive(Debug, Default)]
pub struct MockNsm;

impl Nsm for MockNsm {
    fn fill_random(&self, out: &mut [u8]) -> Result<(), NsmError> {
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, out).map_err(|e| NsmError::Unexpected(e.to_string()))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_randomness_fills_the_buffer() {
        let mut a = [0u8; 48];
        let mut b = [0u8; 48];
        MockNsm.fill_random(&mut a).expect("random");
        MockNsm.fill_random(&mut b).expect("random");
        assert_ne!(a, b);
    }

    #[test]
    fn nitro_device_is_absent_here() {
        // On plain Linux there is no /dev/nsm: opening must fail cleanly, not panic.
        if !std::path::Path::new("/dev/nsm").exists() {
            assert!(matches!(NitroNsm::open(), Err(NsmError::Unavailable)));
        }
    }
}
