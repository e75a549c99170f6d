//! Attestation in the enclave: the shared parser, verifier and mock PKI
//! (crate `keyward-attestation`, also used by clients), and the CMS
//! EnvelopedData answered to attested recipients.

pub use keyward_attestation::{document, mock, verify};

pub mod recipient;
