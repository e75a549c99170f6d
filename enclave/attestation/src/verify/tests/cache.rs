//! The signature and chain caches: what they skip, what they never skip, their bounds.

use super::*;

// ----- the chain cache -----

#[test]
fn signature_cache_skips_only_the_signature_of_the_same_bytes() {
    let verifier = aws();
    verifier
        .verify(DOC1, doc_time(DOC1), &Expectations::default())
        .expect("first");
    assert_eq!(verifier.signature_cache_hits(), 0);
    verifier
        .verify(DOC1, doc_time(DOC1), &Expectations::default())
        .expect("second");
    assert_eq!(verifier.signature_cache_hits(), 1);
    // Other bytes (a tampered signature) are verified and refused.
    assert_eq!(
        verifier.verify(&flipped(DOC1, DOC1.len() - 1), doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    assert_eq!(verifier.signature_cache_hits(), 1);
    // A known document is still held to time, freshness and nonce.
    let no_window = Expectations {
        max_age: None,
        ..Expectations::default()
    };
    assert_eq!(
        verifier.verify(DOC1, datetime!(2026-11-24 0:00 UTC), &no_window),
        Err(AttestationError::CertificateExpired)
    );
    assert!(matches!(
        verifier.verify(
            DOC1,
            doc_time(DOC1) + Duration::from_secs(3600),
            &Expectations::default()
        ),
        Err(AttestationError::Stale { .. })
    ));
    let wrong_nonce = Expectations {
        nonce: Some(vec![1, 2, 3]),
        ..Expectations::default()
    };
    assert_eq!(
        verifier.verify(DOC1, doc_time(DOC1), &wrong_nonce),
        Err(AttestationError::NonceMismatch)
    );
}

#[test]
fn chain_cache_skips_chain_checks_but_not_the_signature_or_time() {
    let verifier = aws();
    assert_eq!((verifier.cache_len(), verifier.cache_hits()), (0, 0));
    verifier
        .verify(DOC1, doc_time(DOC1), &Expectations::default())
        .expect("first");
    assert_eq!((verifier.cache_len(), verifier.cache_hits()), (1, 0));
    verifier
        .verify(DOC1, doc_time(DOC1), &Expectations::default())
        .expect("second");
    assert_eq!((verifier.cache_len(), verifier.cache_hits()), (1, 1));

    // Same chain, tampered signature or payload: the cached chain is used and the document still fails.
    let tampered = flipped(DOC1, DOC1.len() - 1);
    assert_eq!(
        verifier.verify(&tampered, doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    assert_eq!(
        verifier.verify(&flipped(DOC1, 151), doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    assert_eq!(verifier.cache_hits(), 3);

    // Validity is still checked with a cached chain.
    let no_window = Expectations {
        max_age: None,
        ..Expectations::default()
    };
    assert_eq!(
        verifier.verify(DOC1, datetime!(2026-11-24 0:00 UTC), &no_window),
        Err(AttestationError::CertificateExpired)
    );
    assert_eq!(verifier.cache_hits(), 4);

    // Another chain is another entry; a failed chain is not cached.
    verifier
        .verify(DOC2, doc_time(DOC2), &Expectations::default())
        .expect("doc 2");
    assert_eq!(verifier.cache_len(), 2);
    let bad_chain = edited(DOC1, |d| d.cabundle.swap(1, 2));
    assert!(chain_error(verifier.verify(
        &bad_chain,
        doc_time(DOC1),
        &Expectations::default()
    )));
    assert_eq!(verifier.cache_len(), 2);
}

#[test]
fn cached_validity_window_covers_the_whole_chain() {
    let pki = Pki::new();
    // The leaf lives one hour around TS; the intermediate ends before the leaf does.
    let inter = der_of(&issue_valid(
        sub_ca(ROOT, Some(0)),
        INTER,
        spki(&pki.inter_key),
        &pki.root_key,
        validity(TS_S - HOUR, TS_S + 10),
    ));
    let leaf = der_of(&issue_valid(
        leaf_profile(INTER),
        LEAF,
        spki(&pki.leaf_key),
        &pki.inter_key,
        validity(TS_S - 5, TS_S + HOUR),
    ));
    let verifier = pki.verifier();
    let lenient = Expectations {
        max_age: None,
        ..Expectations::default()
    };
    let doc = synthetic(leaf, vec![pki.root.clone(), inter]);
    assert!(verifier.verify(&pki.sign(&doc), ts(), &lenient).is_ok());
    for _ in 0..2 {
        // Stamped after the intermediate expired (first a miss, then a hit).
        let late = AttestationDocument {
            timestamp_ms: TS_MS + 11_000,
            ..doc.clone()
        };
        assert_eq!(
            verifier.verify(&pki.sign(&late), at_ms(i128::from(TS_MS) + 11_000), &lenient),
            Err(AttestationError::CertificateExpired)
        );
        // Stamped before the leaf's notBefore.
        let early = AttestationDocument {
            timestamp_ms: TS_MS - 6_000,
            ..doc.clone()
        };
        assert_eq!(
            verifier.verify(&pki.sign(&early), at_ms(i128::from(TS_MS) - 6_000), &lenient),
            Err(AttestationError::NotYetValid)
        );
    }
    assert!(verifier.cache_hits() >= 3);
}

#[test]
fn chain_cache_is_bounded() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let mut cache = verifier.cache.lock();
    for i in 0..CHAIN_CACHE_CAPACITY as u32 {
        let summary = ChainSummary {
            leaf_key: *pki.leaf_key.verifying_key(),
            not_before_s: 0,
            not_after_s: 0,
        };
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        cache.insert(k, summary);
    }
    drop(cache);
    assert_eq!(verifier.cache_len(), CHAIN_CACHE_CAPACITY);
    verifier
        .verify(&pki.sign(&pki.doc()), ts(), &Expectations::default())
        .expect("verifies");
    assert_eq!(verifier.cache_len(), 1);
}
