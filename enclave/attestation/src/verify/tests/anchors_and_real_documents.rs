//! Trust anchors, and real Nitro documents: time, freshness, nonce, PCRs, tampering.

use super::*;

// ----- trust anchors -----

#[test]
fn aws_root_is_pinned() {
    let anchor = TrustAnchor::aws_nitro_root().expect("aws root");
    assert_eq!(anchor.fingerprint_hex(), AWS_NITRO_ROOT_G1_SHA256);
    assert_eq!(hex::encode(Sha256::digest(anchor.der())), AWS_NITRO_ROOT_G1_SHA256);
    let again = TrustAnchor::from_der(anchor.der()).expect("from der");
    assert_eq!(again.fingerprint(), anchor.fingerprint());
    // Every real document's cabundle[0] is this root.
    for bytes in [DOC1, DOC2, DOC3] {
        assert_eq!(decoded(bytes).cabundle[0], anchor.der());
    }
}

#[test]
fn trust_anchor_inputs_are_checked() {
    assert!(matches!(
        TrustAnchor::from_der(b"garbage"),
        Err(AttestationError::ChainInvalid(_))
    ));
    assert!(matches!(
        TrustAnchor::from_pem("not pem"),
        Err(AttestationError::Malformed(_))
    ));
    let key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        TrustAnchor::from_pem(key_pem),
        Err(AttestationError::Malformed(_))
    ));
    // An intermediate is not a root.
    let pki = Pki::new();
    assert_eq!(
        TrustAnchor::from_der(&pki.inter).err(),
        Some(AttestationError::UntrustedRoot)
    );
    // A self-issued certificate whose signature is not its own key's.
    let forged = resign(Certificate::from_der(&pki.root).expect("root"), &pki.inter_key);
    assert_eq!(
        TrustAnchor::from_der(&forged).err(),
        Some(AttestationError::UntrustedRoot)
    );
    // PEM round trip.
    let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &pki.root).expect("pem");
    assert_eq!(TrustAnchor::from_pem(&pem).expect("pem").der(), pki.root);
}

// ----- the real documents -----

#[test]
fn real_documents_verify_at_their_own_time() {
    let verifier = aws();
    let v1 = verifier
        .verify(DOC1, doc_time(DOC1), &Expectations::default())
        .expect("doc 1");
    assert_eq!(v1.module_id(), "i-0de38b2b6853cc9e8-enc0193685e7fee7d85");
    assert_eq!(v1.timestamp_ms(), 1_732_983_768_387);
    assert_eq!(v1.pcr(0).map(hex::encode).as_deref(), Some(DOC1_PCR0));
    assert_eq!(v1.public_key().map(<[u8]>::len), Some(65));
    assert_eq!((v1.user_data(), v1.nonce(), v1.is_debug_mode()), (None, None, false));

    let v2 = verifier
        .verify(DOC2, doc_time(DOC2), &Expectations::default())
        .expect("doc 2");
    assert_eq!(v2.nonce().map(hex::encode).as_deref(), Some(DOC2_NONCE));
    assert_eq!(v2.public_key(), Some(&b"dummy"[..]));

    let v3 = verifier
        .verify(DOC3, doc_time(DOC3), &expect_debug(true))
        .expect("doc 3 with debug allowed");
    assert!(v3.is_debug_mode());
    assert_eq!(v3.nonce().map(<[u8]>::len), Some(256));
    assert_eq!(
        verifier.verify(DOC3, doc_time(DOC3), &expect_debug(false)),
        Err(AttestationError::DebugModePcrs)
    );

    // Without a freshness window, any `now` while the chain is valid works.
    let lenient = Expectations {
        max_age: None,
        ..Expectations::default()
    };
    let later = at_ms(doc_ms(DOC1) + 2 * 3600 * 1000);
    assert!(verifier.verify(DOC1, later, &lenient).is_ok());
}

#[test]
fn tag_18_prefix_still_verifies() {
    for (bytes, debug) in [(DOC1, false), (DOC2, false), (DOC3, true)] {
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(bytes);
        assert!(AWS.verify(&tagged, doc_time(bytes), &expect_debug(debug)).is_ok());
    }
}

#[test]
fn flipped_bytes_break_the_signature() {
    for bytes in [DOC1, DOC2, DOC3] {
        // Bytes 101..104 are `00 58 30`, the head of PCR0's 48-byte value.
        assert_eq!(&bytes[101..104], &[0x00, 0x58, 0x30]);
        for at in [151, 30, bytes.len() - 1] {
            let r = AWS.verify(&flipped(bytes, at), doc_time(bytes), &expect_debug(true));
            assert_eq!(r, Err(AttestationError::BadSignature), "byte {at}");
        }
    }
}

#[test]
fn truncated_documents_fail_cleanly() {
    for bytes in [DOC1, DOC2, DOC3] {
        let r = AWS.verify(&bytes[..bytes.len() - 1], doc_time(bytes), &expect_debug(true));
        assert!(matches!(r, Err(AttestationError::Malformed(_))), "{r:?}");
    }
    assert_eq!(
        AWS.verify(
            &vec![0u8; MAX_DOCUMENT_LEN + 1],
            doc_time(DOC1),
            &Expectations::default()
        ),
        Err(AttestationError::Oversized)
    );
}

#[test]
fn expired_chain_at_a_later_now() {
    let now = datetime!(2026-11-24 0:00 UTC);
    let no_window = Expectations {
        max_age: None,
        allow_debug: true,
        ..Expectations::default()
    };
    for bytes in [DOC1, DOC2, DOC3] {
        assert_eq!(
            AWS.verify(bytes, now, &no_window),
            Err(AttestationError::CertificateExpired)
        );
        // With a freshness window the age is reported first.
        assert!(matches!(
            AWS.verify(bytes, now, &expect_debug(true)),
            Err(AttestationError::Stale { .. })
        ));
    }
}

#[test]
fn another_root_is_untrusted() {
    let other = key(9);
    let root = issue(
        Profile::Root,
        "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US",
        spki(&other),
        &other,
    );
    let verifier = Verifier::new(TrustAnchor::from_der(&der_of(&root)).expect("anchor"));
    for bytes in [DOC1, DOC2, DOC3] {
        assert_eq!(
            verifier.verify(bytes, doc_time(bytes), &expect_debug(true)),
            Err(AttestationError::UntrustedRoot)
        );
    }
    let unrelated = issue(Profile::Root, "CN=Someone Else", spki(&other), &other);
    let verifier = Verifier::new(TrustAnchor::from_der(&der_of(&unrelated)).expect("anchor"));
    assert_eq!(
        verifier.verify(DOC1, doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::UntrustedRoot)
    );
}

#[test]
fn freshness_window() {
    let ts = doc_ms(DOC1);
    let expect = Expectations {
        max_age: Some(Duration::from_secs(60)),
        max_future: Duration::from_secs(10),
        ..Expectations::default()
    };
    assert!(AWS.verify(DOC1, at_ms(ts + 60_000), &expect).is_ok());
    assert_eq!(
        AWS.verify(DOC1, at_ms(ts + 60_001), &expect),
        Err(AttestationError::Stale { age_ms: 60_001 })
    );
    assert!(AWS.verify(DOC1, at_ms(ts - 10_000), &expect).is_ok());
    assert_eq!(
        AWS.verify(DOC1, at_ms(ts - 10_001), &expect),
        Err(AttestationError::FromTheFuture)
    );
    // The future bound applies even without a freshness window.
    let no_window = Expectations {
        max_age: None,
        ..expect
    };
    assert_eq!(
        AWS.verify(DOC1, at_ms(ts - 10_001), &no_window),
        Err(AttestationError::FromTheFuture)
    );
}

#[test]
fn nonce_expectations() {
    let nonce = hex::decode(DOC2_NONCE).expect("hex");
    let with_nonce = |n: &[u8]| Expectations {
        nonce: Some(n.to_vec()),
        ..Expectations::default()
    };
    assert!(AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&nonce)).is_ok());
    let mut wrong = nonce.clone();
    wrong[19] ^= 1;
    assert_eq!(
        AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&wrong)),
        Err(AttestationError::NonceMismatch)
    );
    assert_eq!(
        AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&nonce[..19])),
        Err(AttestationError::NonceMismatch)
    );
    assert_eq!(
        AWS.verify(DOC2, doc_time(DOC2), &with_nonce(&[])),
        Err(AttestationError::NonceMismatch)
    );
    // Document 1's nonce is null.
    assert_eq!(
        AWS.verify(DOC1, doc_time(DOC1), &with_nonce(&nonce)),
        Err(AttestationError::NonceMismatch)
    );
}

#[test]
fn pcr_expectations() {
    let pcr0 = hex::decode(DOC1_PCR0).expect("hex");
    let expect = |pcrs: Vec<(u8, Vec<Vec<u8>>)>| Expectations {
        pcrs: pcrs.into_iter().collect(),
        ..Expectations::default()
    };
    let now = doc_time(DOC1);
    assert!(AWS.verify(DOC1, now, &expect(vec![(0, vec![pcr0.clone()])])).is_ok());
    assert!(
        AWS.verify(
            DOC1,
            now,
            &expect(vec![(0, vec![vec![0; 48], pcr0.clone()]), (8, vec![vec![0; 48]])])
        )
        .is_ok()
    );
    let mut other = pcr0.clone();
    other[0] ^= 1;
    assert_eq!(
        AWS.verify(DOC1, now, &expect(vec![(0, vec![other])])),
        Err(AttestationError::PcrMismatch { index: 0 })
    );
    assert_eq!(
        AWS.verify(
            DOC1,
            now,
            &expect(vec![(0, vec![pcr0.clone()]), (1, vec![pcr0.clone()])])
        ),
        Err(AttestationError::PcrMismatch { index: 1 })
    );
    assert_eq!(
        AWS.verify(DOC1, now, &expect(vec![(0, vec![])])),
        Err(AttestationError::PcrMismatch { index: 0 })
    );
    assert_eq!(
        AWS.verify(DOC1, now, &expect(vec![(20, vec![vec![0; 48]])])),
        Err(AttestationError::PcrMismatch { index: 20 })
    );
    assert_eq!(
        AWS.verify(DOC1, now, &expect(vec![(0, vec![pcr0[..32].to_vec()])])),
        Err(AttestationError::PcrMismatch { index: 0 })
    );
}
