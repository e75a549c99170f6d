//! The full attestation verifier (`Verifier::verify`) on hostile bytes, with
//! the committed mock root CA (`fixtures/mock-attestation/root.crt.pem`) as
//! the trust anchor, so that seeds signed under it (`seeds/attestation_verify/`)
//! reach the certificate-chain, signature, validity, freshness, nonce and PCR
//! checks, and mutations of them exercise each one.
//!
//! Proves: `verify` never panics; a document it accepts parses, and carries
//! the nonce and PCR values the expectations demanded.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use keyward_attestation::document::{parse_cose, parse_payload};
use keyward_attestation::verify::{Expectations, TrustAnchor, Verifier};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

static ANCHOR: LazyLock<TrustAnchor> = LazyLock::new(|| {
    TrustAnchor::from_pem(include_str!("../fixtures/mock-attestation/root.crt.pem")).expect("mock root")
});

fuzz_target!(|data: &[u8]| {
    // `now` just after the document's own timestamp when it has one, so that
    // a well-signed document is also fresh; the first byte (when there is a
    // document) moves it around the freshness bounds.
    let stamped = parse_cose(data)
        .ok()
        .and_then(|cose| parse_payload(&cose.payload).ok())
        .map(|doc| doc.timestamp_ms);
    let skew_ms = i128::from(data.first().copied().unwrap_or(0)) * 5_000 - 600_000;
    let now = stamped
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos((i128::from(ms) + skew_ms) * 1_000_000).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);

    // A fresh verifier each time: no cache state carried between inputs.
    let verifier = Verifier::new(ANCHOR.clone());
    let lenient = Expectations {
        allow_debug: true,
        max_age: None,
        ..Expectations::default()
    };
    if let Ok(verified) = verifier.verify(data, now, &lenient) {
        assert_eq!(Some(verified.timestamp_ms()), stamped);
    }

    // Strict: the default bounds, a nonce and PCR0 demanded (the seeds'
    // nonce is b"fuzz" and their PCR0 is the mock's).
    let mut pcrs = BTreeMap::new();
    pcrs.insert(
        0u8,
        vec![keyward_attestation::mock::default_pcrs()[&0].clone(), vec![0; 48]],
    );
    let strict = Expectations {
        nonce: Some(b"fuzz".to_vec()),
        pcrs,
        max_age: Some(Duration::from_secs(300)),
        ..Expectations::default()
    };
    if let Ok(verified) = verifier.verify(data, now, &strict) {
        assert_eq!(verified.nonce(), Some(&b"fuzz"[..]));
        assert!(!verified.is_debug_mode());
    }
});
