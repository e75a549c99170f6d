use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::BitString;
use der::oid::AssociatedOid;
use der::{Decode, Encode};
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use time::OffsetDateTime;
use time::macros::datetime;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::*;
use crate::document::{
    self, AttestationDocument, CoseSign1, MAX_DOCUMENT_LEN, encode_cose, encode_payload, parse_cose, parse_payload,
};

const DOC1: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/nitro_real_production_definite_map.cbor"
));
const DOC2: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/nitro_real_production_indefinite_map_nonce.cbor"
));
const DOC3: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/nitro_real_debug_mode_long_nonce.cbor"
));
const DOC1_PCR0: &str =
    "ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2";
const DOC2_NONCE: &str = "0123456789abcdef0123456789abcdef01234567";

/// One AWS verifier shared by the tests that do not inspect the cache.
static AWS: LazyLock<Verifier> = LazyLock::new(aws);

fn aws() -> Verifier {
    Verifier::new(TrustAnchor::aws_nitro_root().expect("aws root"))
}

fn decoded(bytes: &[u8]) -> AttestationDocument {
    parse_payload(&parse_cose(bytes).expect("cose").payload).expect("payload")
}

fn at_ms(ms: i128) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("time")
}

fn doc_ms(bytes: &[u8]) -> i128 {
    i128::from(decoded(bytes).timestamp_ms)
}

fn doc_time(bytes: &[u8]) -> OffsetDateTime {
    at_ms(doc_ms(bytes))
}

fn expect_debug(allow_debug: bool) -> Expectations {
    Expectations {
        allow_debug,
        ..Expectations::default()
    }
}

/// `bytes` with its payload edited (the signature no longer matches it).
fn edited(bytes: &[u8], edit: impl FnOnce(&mut AttestationDocument)) -> Vec<u8> {
    let mut cose = parse_cose(bytes).expect("cose");
    let mut doc = parse_payload(&cose.payload).expect("payload");
    edit(&mut doc);
    cose.payload = encode_payload(&doc);
    encode_cose(&cose)
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

// ----- a synthetic P-384 PKI built with x509-cert's builder -----

const TS_MS: u64 = 1_750_000_000_000;
const TS_S: u64 = TS_MS / 1000;
const HOUR: u64 = 3600;

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 48]).expect("key")
}

fn spki(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).expect("spki")
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

fn validity(from_s: u64, to_s: u64) -> Validity {
    let time = |s: u64| Time::try_from(UNIX_EPOCH + Duration::from_secs(s)).expect("time");
    Validity {
        not_before: time(from_s),
        not_after: time(to_s),
    }
}

fn issue(profile: Profile, subject: &str, subject_spki: SubjectPublicKeyInfoOwned, issuer: &SigningKey) -> Certificate {
    issue_valid(
        profile,
        subject,
        subject_spki,
        issuer,
        validity(TS_S - 24 * HOUR, TS_S + 24 * HOUR),
    )
}

fn issue_valid(
    profile: Profile,
    subject: &str,
    subject_spki: SubjectPublicKeyInfoOwned,
    issuer: &SigningKey,
    validity: Validity,
) -> Certificate {
    CertificateBuilder::new(
        profile,
        SerialNumber::from(7u32),
        validity,
        name(subject),
        subject_spki,
        issuer,
    )
    .expect("builder")
    .build::<DerSignature>()
    .expect("certificate")
}

fn der_of(cert: &Certificate) -> Vec<u8> {
    cert.to_der().expect("der")
}

/// Re-signs `cert` (after an edit of its TBS) with `issuer`.
fn resign(mut cert: Certificate, issuer: &SigningKey) -> Vec<u8> {
    let tbs = cert.tbs_certificate.to_der().expect("tbs");
    let signature: DerSignature = issuer.sign(&tbs);
    cert.signature = BitString::from_bytes(signature.as_bytes()).expect("bits");
    der_of(&cert)
}

const ROOT: &str = "CN=Test Root,O=Keyward";
const INTER: &str = "CN=Test Intermediate,O=Keyward";
const LEAF: &str = "CN=Test Leaf,O=Keyward";

fn sub_ca(issuer: &str, path_len: Option<u8>) -> Profile {
    Profile::SubCA {
        issuer: name(issuer),
        path_len_constraint: path_len,
    }
}

fn leaf_profile(issuer: &str) -> Profile {
    Profile::Leaf {
        issuer: name(issuer),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    }
}

struct Pki {
    root_key: SigningKey,
    root: Vec<u8>,
    inter_key: SigningKey,
    inter: Vec<u8>,
    leaf_key: SigningKey,
    leaf: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let (root_key, inter_key, leaf_key) = (key(1), key(2), key(3));
        let root = der_of(&issue(Profile::Root, ROOT, spki(&root_key), &root_key));
        let inter = der_of(&issue(sub_ca(ROOT, Some(0)), INTER, spki(&inter_key), &root_key));
        let leaf = der_of(&issue(leaf_profile(INTER), LEAF, spki(&leaf_key), &inter_key));
        Pki {
            root_key,
            root,
            inter_key,
            inter,
            leaf_key,
            leaf,
        }
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(TrustAnchor::from_der(&self.root).expect("anchor"))
    }

    fn doc(&self) -> AttestationDocument {
        synthetic(self.leaf.clone(), vec![self.root.clone(), self.inter.clone()])
    }

    fn sign(&self, doc: &AttestationDocument) -> Vec<u8> {
        sign_with(&self.leaf_key, doc)
    }
}

fn synthetic(certificate: Vec<u8>, cabundle: Vec<Vec<u8>>) -> AttestationDocument {
    AttestationDocument {
        module_id: "i-test-enc0".into(),
        digest: "SHA384".into(),
        timestamp_ms: TS_MS,
        pcrs: (0u8..16)
            .map(|i| (i, vec![if i < 3 { i + 1 } else { 0 }; 48]))
            .collect(),
        certificate,
        cabundle,
        public_key: Some(b"rsa key".to_vec()),
        user_data: None,
        nonce: Some(b"nonce".to_vec()),
    }
}

fn sign_with(key: &SigningKey, doc: &AttestationDocument) -> Vec<u8> {
    let mut cose = CoseSign1 {
        protected: document::protected_es384(),
        payload: encode_payload(doc),
        signature: vec![],
    };
    let signature: Signature = key.sign(&document::sig_structure(&cose));
    cose.signature = signature.to_bytes().to_vec();
    encode_cose(&cose)
}

fn ts() -> OffsetDateTime {
    at_ms(i128::from(TS_MS))
}

fn chain_error(r: Result<VerifiedDocument, AttestationError>) -> bool {
    matches!(r, Err(AttestationError::ChainInvalid(_)))
}

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

// ----- forged chains -----

#[test]
fn forged_intermediates_are_refused() {
    let now = doc_time(DOC1);
    let expect = Expectations::default();
    let real = decoded(DOC1);
    let instance = Certificate::from_der(&real.cabundle[3]).expect("instance CA");

    // The leaf's issuer replaced by a CA of the same name under another key.
    let impostor_key = key(11);
    let mut impostor = instance.clone();
    impostor.tbs_certificate.subject_public_key_info = spki(&impostor_key);
    let impostor = resign(impostor, &impostor_key);
    let forged = edited(DOC1, |d| d.cabundle[3] = impostor.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // An intermediate from another real chain.
    let other = decoded(DOC2);
    let forged = edited(DOC1, |d| d.cabundle[3] = other.cabundle[3].clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));
    let forged = edited(DOC1, |d| d.cabundle[1] = other.cabundle[1].clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A leaf from another chain under this chain's CAs.
    let forged = edited(DOC1, |d| d.certificate = other.certificate.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A root of the same name as AWS's in cabundle[0]: the real regional CA is not its child.
    let fake_root_key = key(12);
    let mut fake_root = Certificate::from_der(&real.cabundle[0]).expect("root");
    fake_root.tbs_certificate.subject_public_key_info = spki(&fake_root_key);
    let fake_root = resign(fake_root, &fake_root_key);
    let forged = edited(DOC1, |d| d.cabundle[0] = fake_root.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A whole forged chain under a fake root of AWS's name.
    let (i_key, l_key) = (key(13), key(14));
    let aws_name = "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US";
    let fake_root = der_of(&issue(Profile::Root, aws_name, spki(&fake_root_key), &fake_root_key));
    let fake_inter = der_of(&issue(sub_ca(aws_name, None), INTER, spki(&i_key), &fake_root_key));
    let fake_leaf = der_of(&issue(leaf_profile(INTER), LEAF, spki(&l_key), &i_key));
    let mut doc = synthetic(fake_leaf.clone(), vec![fake_root.clone(), fake_inter.clone()]);
    doc.timestamp_ms = real.timestamp_ms;
    let forged = sign_with(&l_key, &doc);
    let r = AWS.verify(&forged, now, &expect);
    assert!(
        chain_error(r.clone()) || r == Err(AttestationError::UntrustedRoot),
        "{r:?}"
    );
    doc.cabundle = vec![fake_inter];
    assert_eq!(
        AWS.verify(&sign_with(&l_key, &doc), now, &expect),
        Err(AttestationError::UntrustedRoot)
    );
    doc.cabundle = vec![TrustAnchor::aws_nitro_root().expect("root").der().to_vec()];
    assert!(AWS.verify(&sign_with(&l_key, &doc), now, &expect).is_err());
}

#[test]
fn cabundle_without_the_root_is_accepted() {
    // The chain still ends at the anchor; only the signature fails because the payload changed.
    let forged = edited(DOC1, |d| {
        d.cabundle.remove(0);
    });
    assert_eq!(
        AWS.verify(&forged, doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    // The same with a synthetic PKI verifies fully.
    let pki = Pki::new();
    let doc = AttestationDocument {
        cabundle: vec![pki.inter.clone()],
        ..pki.doc()
    };
    assert!(
        pki.verifier()
            .verify(&pki.sign(&doc), ts(), &Expectations::default())
            .is_ok()
    );
}

// ----- structural chain rules on a synthetic PKI -----

#[test]
fn synthetic_pki_verifies() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let v = verifier
        .verify(&pki.sign(&pki.doc()), ts(), &Expectations::default())
        .expect("verifies");
    assert_eq!(v.nonce(), Some(&b"nonce"[..]));
    // Signed by a key other than the leaf's.
    assert_eq!(
        verifier.verify(&sign_with(&pki.inter_key, &pki.doc()), ts(), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    // A leaf directly under the root.
    let leaf = der_of(&issue(leaf_profile(ROOT), LEAF, spki(&pki.leaf_key), &pki.root_key));
    let doc = synthetic(leaf, vec![pki.root.clone()]);
    assert!(verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()).is_ok());
    // The AWS verifier does not trust it.
    assert_eq!(
        AWS.verify(&pki.sign(&pki.doc()), ts(), &Expectations::default()),
        Err(AttestationError::UntrustedRoot)
    );
}

#[test]
fn path_length_is_enforced() {
    let pki = Pki::new();
    let ca2_key = key(20);
    // root → INTER (pathlen 0) → CA2 → leaf: INTER's pathlen is exceeded.
    let ca2 = der_of(&issue(sub_ca(INTER, None), "CN=CA2", spki(&ca2_key), &pki.inter_key));
    let leaf = der_of(&issue(leaf_profile("CN=CA2"), LEAF, spki(&pki.leaf_key), &ca2_key));
    let doc = synthetic(leaf.clone(), vec![pki.root.clone(), pki.inter.clone(), ca2.clone()]);
    assert!(chain_error(pki.verifier().verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // With pathlen 1 on the first intermediate it is fine.
    let inter1 = der_of(&issue(
        sub_ca(ROOT, Some(1)),
        INTER,
        spki(&pki.inter_key),
        &pki.root_key,
    ));
    let doc = synthetic(leaf, vec![pki.root.clone(), inter1, ca2]);
    assert!(
        pki.verifier()
            .verify(&pki.sign(&doc), ts(), &Expectations::default())
            .is_ok()
    );
}

#[test]
fn anchor_path_length_is_enforced() {
    let root_key = key(21);
    let root = der_of(&issue(sub_ca(ROOT, Some(0)), ROOT, spki(&root_key), &root_key));
    let pki = Pki::new();
    let inter = der_of(&issue(sub_ca(ROOT, None), INTER, spki(&pki.inter_key), &root_key));
    let verifier = Verifier::new(TrustAnchor::from_der(&root).expect("anchor"));
    let doc = synthetic(pki.leaf.clone(), vec![root.clone(), inter]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn leaf_must_not_be_a_ca_and_intermediates_must_be() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let ca_leaf = der_of(&issue(sub_ca(INTER, None), LEAF, spki(&pki.leaf_key), &pki.inter_key));
    let doc = synthetic(ca_leaf, vec![pki.root.clone(), pki.inter.clone()]);
    let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
    assert_eq!(
        r,
        Err(AttestationError::ChainInvalid("the leaf certificate is a CA".into()))
    );

    let not_ca = der_of(&issue(leaf_profile(ROOT), INTER, spki(&pki.inter_key), &pki.root_key));
    let doc = synthetic(pki.leaf.clone(), vec![pki.root.clone(), not_ca]);
    let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
    assert_eq!(
        r,
        Err(AttestationError::ChainInvalid(
            "intermediate certificate 1 is not a CA".into()
        ))
    );
}

fn with_extension(cert: &[u8], issuer: &SigningKey, edit: impl FnOnce(&mut Vec<Extension>)) -> Vec<u8> {
    let mut cert = Certificate::from_der(cert).expect("cert");
    edit(cert.tbs_certificate.extensions.get_or_insert_with(Vec::new));
    resign(cert, issuer)
}

#[test]
fn key_usage_and_critical_extensions() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let sign = |inter: Vec<u8>, leaf: Vec<u8>| pki.sign(&synthetic(leaf, vec![pki.root.clone(), inter]));
    let key_usage = |usages| {
        let value = KeyUsage(usages).to_der().expect("ku");
        move |exts: &mut Vec<Extension>| {
            for ext in exts.iter_mut().filter(|e| e.extn_id == KeyUsage::OID) {
                ext.extn_value = der::asn1::OctetString::new(value.clone()).expect("octets");
            }
        }
    };

    // A CA whose keyUsage lacks keyCertSign.
    let inter = with_extension(&pki.inter, &pki.root_key, key_usage(KeyUsages::DigitalSignature.into()));
    assert!(chain_error(verifier.verify(
        &sign(inter, pki.leaf.clone()),
        ts(),
        &Expectations::default()
    )));
    // A leaf whose keyUsage lacks digitalSignature.
    let leaf = with_extension(&pki.leaf, &pki.inter_key, key_usage(KeyUsages::KeyEncipherment.into()));
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // No keyUsage at all is fine (the check applies when present); no AKI/SKI is fine.
    let bare = |cert: &[u8], issuer: &SigningKey| {
        with_extension(cert, issuer, |exts| {
            exts.retain(|e| e.extn_id == BasicConstraints::OID);
        })
    };
    let doc = sign(bare(&pki.inter, &pki.root_key), bare(&pki.leaf, &pki.inter_key));
    assert!(verifier.verify(&doc, ts(), &Expectations::default()).is_ok());
    // An unknown critical extension.
    let unknown = |exts: &mut Vec<Extension>| {
        exts.push(Extension {
            extn_id: der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: true,
            extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).expect("octets"),
        });
    };
    let leaf = with_extension(&pki.leaf, &pki.inter_key, unknown);
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // A duplicated extension.
    let leaf = with_extension(&pki.leaf, &pki.inter_key, |exts| {
        let first = exts[0].clone();
        exts.push(first);
    });
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // A CA without basicConstraints.
    let inter = with_extension(&pki.inter, &pki.root_key, |exts| {
        exts.retain(|e| e.extn_id != BasicConstraints::OID)
    });
    assert!(chain_error(verifier.verify(
        &sign(inter, pki.leaf.clone()),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn certificate_signatures_and_names_are_checked() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    // The leaf signed by the root instead of its named issuer.
    let leaf = resign(Certificate::from_der(&pki.leaf).expect("leaf"), &pki.root_key);
    let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // The leaf naming another issuer.
    let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
    leaf.tbs_certificate.issuer = name("CN=Someone Else");
    let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // Garbage as a certificate.
    let doc = synthetic(b"not a certificate".to_vec(), vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // Too many intermediates.
    let doc = synthetic(pki.leaf.clone(), vec![pki.inter.clone(); MAX_INTERMEDIATES + 2]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn other_algorithms_are_unsupported() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    // A P-256 leaf key.
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("p256");
    let p256_spki = SubjectPublicKeyInfoOwned::from_key(*p256_key.verifying_key()).expect("spki");
    let leaf = der_of(&issue(leaf_profile(INTER), LEAF, p256_spki, &pki.inter_key));
    let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
    assert_eq!(
        verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
        Err(AttestationError::UnsupportedAlgorithm)
    );
    // A certificate claiming ecdsa-with-SHA256.
    let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
    let sha256 = der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    leaf.signature_algorithm.oid = sha256;
    leaf.tbs_certificate.signature.oid = sha256;
    let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
    assert_eq!(
        verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
        Err(AttestationError::UnsupportedAlgorithm)
    );
}

#[test]
fn invalid_signature_scalars_are_bad_signatures() {
    let pki = Pki::new();
    let mut cose = parse_cose(&pki.sign(&pki.doc())).expect("cose");
    for fill in [0x00, 0xff] {
        cose.signature = vec![fill; 96];
        let r = pki
            .verifier()
            .verify(&encode_cose(&cose), ts(), &Expectations::default());
        assert_eq!(r, Err(AttestationError::BadSignature));
    }
}

#[test]
fn mock_documents_verify_under_the_mock_root_only() {
    use crate::mock::{MockAttester, MockPki};
    let attester = MockAttester::new(MockPki::ephemeral().expect("mock pki"));
    let verifier = Verifier::new(TrustAnchor::from_der(attester.pki().root_der()).expect("mock anchor"));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis();
    let now_ms = u64::try_from(now_ms).expect("ms");
    let doc = attester
        .attest(Some(b"ud"), Some(b"n0"), Some(b"pk"), now_ms)
        .expect("attest");
    let now = at_ms(i128::from(now_ms));
    let expect = Expectations {
        nonce: Some(b"n0".to_vec()),
        ..Expectations::default()
    };
    let v = verifier.verify(&doc, now, &expect).expect("mock document verifies");
    assert_eq!(v.public_key(), Some(&b"pk"[..]));
    assert!(verifier.verify(&doc, now, &expect).is_ok());
    assert_eq!(verifier.cache_hits(), 1);
    assert_eq!(AWS.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
    let other = MockPki::ephemeral().expect("other mock pki");
    let other = Verifier::new(TrustAnchor::from_der(other.root_der()).expect("anchor"));
    assert_eq!(other.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_verify(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert!(AWS.verify(&bytes, doc_time(DOC1), &Expectations::default()).is_err());
    }

    #[test]
    fn mutated_real_documents_never_panic_or_verify(
        which in 0usize..3,
        at in any::<usize>(),
        value in 1u8..=255,
    ) {
        let bytes = [DOC1, DOC2, DOC3][which];
        let mut mutated = bytes.to_vec();
        let at = at % mutated.len();
        mutated[at] ^= value;
        let r = AWS.verify(&mutated, doc_time(bytes), &expect_debug(true));
        prop_assert!(r.is_err(), "byte {} ^ {} verified", at, value);
    }
}
