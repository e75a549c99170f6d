//! The attestation document parsers on hostile bytes.
//!
//! Proves: `parse_cose` and `parse_payload` never panic on any input (the
//! COSE_Sign1 envelope, and the payload both inside an envelope and alone);
//! every payload they accept satisfies the documented rules and survives
//! `encode_payload` -> `parse_payload` unchanged; every envelope they accept
//! survives `encode_cose` -> `parse_cose` unchanged.
#![no_main]

use keyward_attestation::document::{
    AttestationDocument, ES384_SIGNATURE_LEN, encode_cose, encode_payload, parse_cose, parse_payload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cose) = parse_cose(data) {
        assert_eq!(cose.signature.len(), ES384_SIGNATURE_LEN);
        assert_eq!(parse_cose(&encode_cose(&cose)).expect("re-parses"), cose);
        if let Ok(doc) = parse_payload(&cose.payload) {
            check(&doc);
        }
    }
    if let Ok(doc) = parse_payload(data) {
        check(&doc);
    }
});

fn check(doc: &AttestationDocument) {
    assert!(!doc.module_id.is_empty());
    assert_eq!(doc.digest, "SHA384");
    assert!(doc.timestamp_ms > 0);
    assert!((1..=32).contains(&doc.pcrs.len()));
    assert!(doc.pcrs.iter().all(|(&i, v)| i < 32 && matches!(v.len(), 32 | 48 | 64)));
    assert!(!doc.cabundle.is_empty());
    assert_eq!(&parse_payload(&encode_payload(doc)).expect("re-parses"), doc);
}
