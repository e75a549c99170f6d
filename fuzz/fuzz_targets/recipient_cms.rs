//! keyward-sdk's `CiphertextForRecipient` parser on hostile bytes.
//!
//! Proves: `recipient::Envelope::parse` (BER and DER CMS EnvelopedData, as
//! AWS KMS and Keyward emit it; what a workload receives through the
//! untrusted host) never panics, never recurses without bound, and whatever
//! it accepts has a 16-byte IV and a non-empty ciphertext of whole AES
//! blocks no longer than the input.
#![no_main]

use keyward_sdk::recipient::{Envelope, MAX_CIPHERTEXT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::parse(data) {
        assert!(data.len() <= MAX_CIPHERTEXT_LEN);
        assert_eq!(envelope.iv().len(), 16);
        let ciphertext = envelope.ciphertext();
        assert!(!ciphertext.is_empty() && ciphertext.len() % 16 == 0);
        assert!(ciphertext.len() + envelope.encrypted_key().len() < data.len());
    }
});
