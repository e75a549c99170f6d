use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use der::{Decode as _, DecodePem as _, Encode as _};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{DerSignature, Signature, VerifyingKey};
use p384::pkcs8::DecodePublicKey as _;
use rand::RngCore as _;
use serde_bytes::{ByteBuf, Bytes};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

use super::pki::millis;
use super::*;

const AWS_ROOT_PEM: &str = include_str!("../aws-nitro-enclaves-root-g1.pem");
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "keyward-mock-pki-{}-{}-{:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::rngs::OsRng.next_u32()
        ));
        fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    millis(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970"))
}

struct Cose {
    protected: Vec<u8>,
    unprotected: BTreeMap<i64, i64>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn decode(doc: &[u8]) -> Cose {
    let (protected, unprotected, payload, signature): (ByteBuf, BTreeMap<i64, i64>, ByteBuf, ByteBuf) =
        serde_cbor::from_slice(doc).expect("COSE_Sign1");
    Cose {
        protected: protected.into_vec(),
        unprotected,
        payload: payload.into_vec(),
        signature: signature.into_vec(),
    }
}

fn payload(doc: &[u8]) -> AttestationDoc {
    serde_cbor::from_slice(&decode(doc).payload).expect("payload")
}

fn cert(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("certificate")
}

fn verifying_key(cert: &Certificate) -> VerifyingKey {
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().expect("spki");
    VerifyingKey::from_public_key_der(&spki).expect("P-384 key")
}

fn ext<'a, T: der::Decode<'a> + der::oid::AssociatedOid>(cert: &'a Certificate) -> Option<(bool, T)> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == T::OID)?;
    Some((ext.critical, T::from_der(ext.extn_value.as_bytes()).expect("extension")))
}

/// Independent check of a document (until the shared verifier lands):
/// the COSE signature under the leaf, and the chain
/// leaf → reversed(cabundle[1..]) → the pinned `anchor_der`, at `at_ms`.
fn verify_independently(doc: &[u8], anchor_der: &[u8], at_ms: u64) -> Result<AttestationDoc, String> {
    let cose = decode(doc);
    if cose.protected != PROTECTED_HEADER || !cose.unprotected.is_empty() {
        return Err("headers".into());
    }
    let parsed: AttestationDoc = serde_cbor::from_slice(&cose.payload).map_err(|e| e.to_string())?;
    let leaf = cert(&parsed.certificate);
    let mut chain = vec![leaf.clone()];
    chain.extend(parsed.cabundle.iter().skip(1).rev().map(|der| cert(der)));
    chain.push(cert(anchor_der));
    for pair in chain.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.tbs_certificate.issuer != parent.tbs_certificate.subject {
            return Err(format!("issuer mismatch at {}", child.tbs_certificate.subject));
        }
        let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
        let sig = DerSignature::from_bytes(child.signature.raw_bytes()).map_err(|e| e.to_string())?;
        verifying_key(parent)
            .verify(&tbs, &sig)
            .map_err(|_| format!("bad certificate signature on {}", child.tbs_certificate.subject))?;
    }
    for c in &chain {
        let v = c.tbs_certificate.validity;
        let (from, to) = (
            millis(v.not_before.to_unix_duration()),
            millis(v.not_after.to_unix_duration()),
        );
        if !(from <= at_ms && at_ms <= to) {
            return Err(format!("{} not valid at {at_ms}", c.tbs_certificate.subject));
        }
    }
    let sig_structure = serde_cbor::to_vec(&(
        "Signature1",
        Bytes::new(&cose.protected),
        Bytes::new(&[]),
        Bytes::new(&cose.payload),
    ))
    .map_err(|e| e.to_string())?;
    let sig = Signature::from_slice(&cose.signature).map_err(|e| e.to_string())?;
    verifying_key(&leaf)
        .verify(&sig_structure, &sig)
        .map_err(|_| "bad COSE signature".to_string())?;
    Ok(parsed)
}

#[test]
fn root_files_are_created_once_and_reused() {
    let tmp = TempDir::new();
    let first = MockPki::load_or_create(&tmp.0).expect("creates");
    let dir = tmp.0.join("mock-attestation");
    let key_mode = fs::metadata(dir.join("root.key.pem"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert_eq!(fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700);
    let cert_pem = fs::read_to_string(dir.join("root.crt.pem")).expect("cert file");
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        fs::read_to_string(dir.join("root.key.pem"))
            .expect("key")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(first.root_pem(), cert_pem);
    // No temporary files left behind.
    assert_eq!(fs::read_dir(&dir).expect("dir").count(), 2);

    let second = MockPki::load_or_create(&tmp.0).expect("reloads");
    assert_eq!(first.root_der(), second.root_der());
    assert_eq!(first.root_fingerprint_sha256(), second.root_fingerprint_sha256());
    // The intermediate is issued per boot.
    assert_ne!(first.intermediate_der(), second.intermediate_der());

    // A workload holding only the root files joins the same PKI.
    let workload = MockPki::from_root_files(&dir).expect("loads");
    assert_eq!(workload.root_der(), first.root_der());
    let now = now_ms();
    let doc = attest_with(&workload, "i-workload", &default_pcrs(), None, Some(b"n"), None, now).expect("doc");
    verify_independently(&doc, first.root_der(), now).expect("verifies under the enclave's mock root");
}

#[test]
fn missing_or_mismatched_root_files_fail_cleanly() {
    let tmp = TempDir::new();
    assert!(matches!(MockPki::from_root_files(&tmp.0), Err(MockError::Io { .. })));

    MockPki::load_or_create(&tmp.0).expect("creates");
    let dir = mock_dir(&tmp.0);
    let other = MockPki::ephemeral().expect("pki");
    fs::write(dir.join(ROOT_CERT_FILE), other.root_pem()).expect("overwrite");
    assert!(matches!(MockPki::from_root_files(&dir), Err(MockError::BadRoot { .. })));
    assert!(matches!(
        MockPki::load_or_create(&tmp.0),
        Err(MockError::BadRoot { .. })
    ));

    fs::remove_file(dir.join(ROOT_KEY_FILE)).expect("rm key");
    assert!(matches!(
        MockPki::load_or_create(&tmp.0),
        Err(MockError::BadRoot { .. })
    ));

    fs::write(dir.join(ROOT_KEY_FILE), "garbage").expect("write");
    assert!(matches!(MockPki::from_root_files(&dir), Err(MockError::BadRoot { .. })));
}

#[test]
fn lost_root_certificate_is_reissued_from_the_key() {
    let tmp = TempDir::new();
    let first = MockPki::load_or_create(&tmp.0).expect("creates");
    fs::remove_file(mock_dir(&tmp.0).join(ROOT_CERT_FILE)).expect("rm cert");
    let second = MockPki::load_or_create(&tmp.0).expect("reissues");
    let (a, b) = (cert(first.root_der()), cert(second.root_der()));
    assert_eq!(
        a.tbs_certificate.subject_public_key_info,
        b.tbs_certificate.subject_public_key_info
    );
}

#[test]
fn certificates_have_the_nitro_profile_and_say_mock() {
    let pki = MockPki::ephemeral().expect("pki");
    let now = now_ms();
    let doc = payload(&MockAttester::new(pki).attest(None, None, None, now).expect("doc"));
    assert_eq!(doc.cabundle.len(), 2);
    let root = cert(&doc.cabundle[0]);
    let intermediate = cert(&doc.cabundle[1]);
    let leaf = cert(&doc.certificate);

    let subject = root.tbs_certificate.subject.to_string();
    assert!(subject.contains("MOCK") && subject.contains("NOT AWS"), "{subject}");
    assert_eq!(root.tbs_certificate.issuer, root.tbs_certificate.subject);
    for c in [&root, &intermediate, &leaf] {
        assert!(c.tbs_certificate.subject.to_string().contains("MOCK"));
        assert_eq!(c.signature_algorithm.oid.to_string(), ECDSA_WITH_SHA384);
        assert_eq!(c.tbs_certificate.signature.oid.to_string(), ECDSA_WITH_SHA384);
        verifying_key(c); // P-384
    }
    for (c, path_len) in [(&root, 1), (&intermediate, 0)] {
        let (critical, bc) = ext::<BasicConstraints>(c).expect("basicConstraints");
        assert!(critical && bc.ca);
        assert_eq!(bc.path_len_constraint, Some(path_len));
        let (_, ku) = ext::<KeyUsage>(c).expect("keyUsage");
        assert!(ku.0.contains(KeyUsages::KeyCertSign));
        assert!(!ku.0.contains(KeyUsages::DigitalSignature));
    }
    let (critical, bc) = ext::<BasicConstraints>(&leaf).expect("basicConstraints");
    assert!(critical && !bc.ca);
    let (_, ku) = ext::<KeyUsage>(&leaf).expect("keyUsage");
    assert!(ku.0.contains(KeyUsages::DigitalSignature));
    assert!(!ku.0.contains(KeyUsages::KeyCertSign));

    let v = leaf.tbs_certificate.validity;
    let lifetime = v.not_after.to_unix_duration() - v.not_before.to_unix_duration();
    assert_eq!(lifetime, LEAF_LIFETIME + LEAF_BACKDATE);
    let v = root.tbs_certificate.validity;
    assert!(v.not_after.to_unix_duration() - v.not_before.to_unix_duration() > ROOT_LIFETIME);
}

#[test]
fn document_has_the_nitro_byte_layout() {
    let attester = MockAttester::new(MockPki::ephemeral().expect("pki"));
    let doc = attester.attest(Some(b"user"), None, None, now_ms()).expect("doc");
    assert_eq!(doc[..8], [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59]);
    let payload_len = usize::from(u16::from_be_bytes([doc[8], doc[9]]));
    assert_eq!(doc.len(), 10 + payload_len + 2 + 96);
    assert_eq!(doc[10 + payload_len..12 + payload_len], [0x58, 0x60]);

    let payload = &doc[10..10 + payload_len];
    assert_eq!(payload[0], 0xa9, "definite map of nine entries");
    let mut at = 0;
    for key in [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ] {
        let mut needle = vec![0x60 | u8::try_from(key.len()).expect("short")];
        needle.extend_from_slice(key.as_bytes());
        let found = payload[at..]
            .windows(needle.len())
            .position(|w| w == needle)
            .expect(key);
        at += found + needle.len();
    }
    // Absent options are CBOR null, never omitted.
    let public_key = b"\x6apublic_key\xf6";
    assert!(payload.windows(public_key.len()).any(|w| w == public_key));
    assert!(payload.ends_with(b"\x65nonce\xf6"));
    // "digest": "SHA384"
    let digest = b"\x66digest\x66SHA384";
    assert!(payload.windows(digest.len()).any(|w| w == digest));

    // The Sig_structure the signature covers, built by hand.
    let cose = decode(&doc);
    let mut sig_structure = vec![0x84, 0x6a];
    sig_structure.extend_from_slice(b"Signature1");
    sig_structure.extend_from_slice(&[0x44, 0xa1, 0x01, 0x38, 0x22, 0x40, 0x59]);
    sig_structure.extend_from_slice(&doc[8..10]);
    sig_structure.extend_from_slice(payload);
    let leaf = cert(&payload_of(&cose).certificate);
    let sig = Signature::from_slice(&cose.signature).expect("r||s");
    verifying_key(&leaf)
        .verify(&sig_structure, &sig)
        .expect("signature over the hand-built Sig_structure");
}

fn payload_of(cose: &Cose) -> AttestationDoc {
    serde_cbor::from_slice(&cose.payload).expect("payload")
}

#[test]
fn document_verifies_under_its_mock_root_only() {
    let pki = MockPki::ephemeral().expect("pki");
    let root = pki.root_der().to_vec();
    let attester = MockAttester::new(pki);
    let now = now_ms();
    let doc = attester.attest(None, Some(b"nonce"), None, now).expect("doc");
    verify_independently(&doc, &root, now).expect("verifies");

    let aws_root = Certificate::from_pem(AWS_ROOT_PEM)
        .expect("AWS root")
        .to_der()
        .expect("der");
    assert!(verify_independently(&doc, &aws_root, now).is_err());
    let other = MockPki::ephemeral().expect("pki");
    assert!(verify_independently(&doc, other.root_der(), now).is_err());
    let foreign = attest_with(&other, "i-other", &default_pcrs(), None, None, None, now).expect("doc");
    assert!(verify_independently(&foreign, &root, now).is_err());

    // Tampering with a PCR byte breaks the COSE signature.
    let mut tampered = doc.clone();
    let pcr0 = default_pcrs()[&0].clone();
    let at = tampered
        .windows(PCR_LEN)
        .position(|w| w == pcr0)
        .expect("PCR0 in the document");
    tampered[at + PCR_LEN - 1] ^= 1;
    assert_eq!(
        verify_independently(&tampered, &root, now).err().as_deref(),
        Some("bad COSE signature")
    );

    // The leaf lives about three hours.
    assert!(verify_independently(&doc, &root, now + 4 * 3600 * 1000).is_err());
}

#[test]
fn fields_round_trip() {
    let attester = MockAttester::new(MockPki::ephemeral().expect("pki"))
        .with_module_id("i-0123456789abcdef0-enc0123456789abcdef")
        .with_pcr(8, vec![0x88; 48])
        .expect("pcr8");
    let ts = now_ms();
    let user_data = vec![7u8; MAX_USER_DATA_LEN];
    let nonce = vec![9u8; 256];
    let public_key = b"\x30\x82 some DER".to_vec();
    let doc = payload(
        &attester
            .attest(Some(&user_data), Some(&nonce), Some(&public_key), ts)
            .expect("doc"),
    );
    assert_eq!(doc.module_id, "i-0123456789abcdef0-enc0123456789abcdef");
    assert_eq!(doc.digest, Digest::SHA384);
    assert_eq!(doc.timestamp, ts);
    assert_eq!(doc.user_data.map(ByteBuf::into_vec), Some(user_data));
    assert_eq!(doc.nonce.map(ByteBuf::into_vec), Some(nonce));
    assert_eq!(doc.public_key.map(ByteBuf::into_vec), Some(public_key));
    assert_eq!(doc.pcrs.len(), 16);
    assert!(doc.pcrs.values().all(|v| v.len() == PCR_LEN));
    for i in 0..3 {
        assert_ne!(doc.pcrs[&i].as_slice(), [0u8; 48], "PCR{i} is not debug-mode zero");
    }
    assert_ne!(doc.pcrs[&0], doc.pcrs[&1]);
    assert_eq!(doc.pcrs[&3].as_slice(), [0u8; 48]);
    assert_eq!(doc.pcrs[&8].as_slice(), [0x88u8; 48]);

    let empty = payload(&attester.attest(None, None, None, ts).expect("doc"));
    assert_eq!((empty.user_data, empty.nonce, empty.public_key), (None, None, None));
}

#[test]
fn inputs_are_checked_like_the_nsm() {
    let attester = MockAttester::new(MockPki::ephemeral().expect("pki"));
    let ts = now_ms();
    let big = vec![0u8; 1025];
    assert!(matches!(
        attester.attest(Some(&big[..513]), None, None, ts),
        Err(MockError::InputTooLarge { field: "user_data", .. })
    ));
    assert!(matches!(
        attester.attest(None, Some(&big[..513]), None, ts),
        Err(MockError::InputTooLarge { field: "nonce", .. })
    ));
    assert!(matches!(
        attester.attest(None, None, Some(&big), ts),
        Err(MockError::InputTooLarge {
            field: "public_key",
            ..
        })
    ));
    attester
        .attest(None, None, Some(&big[..1024]), ts)
        .expect("1024-byte key fits");

    let pki = attester.pki();
    let short = BTreeMap::from([(0u8, vec![1u8; 32])]);
    assert!(matches!(
        attest_with(pki, "m", &short, None, None, None, ts),
        Err(MockError::BadPcrLength { index: 0, len: 32 })
    ));
    let high = BTreeMap::from([(32u8, vec![1u8; 48])]);
    assert!(matches!(
        attest_with(pki, "m", &high, None, None, None, ts),
        Err(MockError::BadPcrIndex(32))
    ));
    let extra = BTreeMap::from([(20u8, vec![2u8; 48])]);
    let doc = payload(&attest_with(pki, "m", &extra, None, None, None, ts).expect("doc"));
    assert_eq!(doc.pcrs.len(), 17);
    assert_eq!(doc.pcrs[&20].as_slice(), [2u8; 48]);
    assert!(
        MockAttester::new(MockPki::ephemeral().expect("pki"))
            .with_pcr(1, vec![0; 47])
            .is_err()
    );
}

#[test]
fn leaf_is_reused_while_fresh_and_rotated_after() {
    let pki = MockPki::ephemeral().expect("pki");
    let root = pki.root_der().to_vec();
    let attester = MockAttester::new(pki);
    let t0 = now_ms();
    let a = attester.attest(None, None, None, t0).expect("doc");
    let b = attester.attest(None, None, None, t0 + 60_000).expect("doc");
    assert_eq!(payload(&a).certificate, payload(&b).certificate);
    let later = t0 + 5 * 3600 * 1000;
    let c = attester.attest(None, None, None, later).expect("doc");
    assert_ne!(payload(&a).certificate, payload(&c).certificate);
    verify_independently(&c, &root, later).expect("a rotated leaf verifies at its time");
    // The intermediate stays for the boot.
    assert_eq!(payload(&a).cabundle, payload(&c).cabundle);
}

fn at(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time")
}

#[test]
fn shared_verifier_accepts_mock_documents_under_the_mock_root_only() {
    use crate::document;
    use crate::verify::{AttestationError, Expectations, TrustAnchor, Verifier};

    let pki = MockPki::ephemeral().expect("pki");
    let verifier = Verifier::new(TrustAnchor::from_der(pki.root_der()).expect("mock root is an anchor"));
    assert_eq!(verifier.anchor().fingerprint(), pki.root_fingerprint_sha256());
    TrustAnchor::from_pem(pki.root_pem()).expect("PEM anchor");
    let attester = MockAttester::new(pki);
    let now = now_ms();
    let key = vec![0x30; 294];
    let doc = attester
        .attest(Some(b"user"), Some(b"nonce"), Some(&key), now)
        .expect("doc");

    // The shared parser sees the same document and Sig_structure.
    let cose = document::parse_cose(&doc).expect("COSE");
    assert_eq!(cose.protected, document::protected_es384());
    let mut hand_built = vec![0x84, 0x6a];
    hand_built.extend_from_slice(b"Signature1\x44\xa1\x01\x38\x22\x40\x59");
    hand_built.extend_from_slice(&doc[8..10]);
    hand_built.extend_from_slice(&cose.payload);
    assert_eq!(document::sig_structure(&cose), hand_built);
    let parsed = document::parse_payload(&cose.payload).expect("payload");
    assert_eq!(parsed.pcrs, *attester.pcrs());

    let expect = Expectations {
        nonce: Some(b"nonce".to_vec()),
        pcrs: BTreeMap::from([(0, vec![attester.pcrs()[&0].clone()])]),
        ..Expectations::default()
    };
    let verified = verifier.verify(&doc, at(now), &expect).expect("verifies");
    assert_eq!(verified.module_id(), DEFAULT_MODULE_ID);
    assert_eq!(verified.timestamp_ms(), now);
    assert_eq!(verified.nonce(), Some(&b"nonce"[..]));
    assert_eq!(verified.user_data(), Some(&b"user"[..]));
    assert_eq!(verified.public_key(), Some(&key[..]));
    assert!(!verified.is_debug_mode());

    // Absent options come back absent.
    let bare = attester.attest(None, None, None, now).expect("doc");
    let verified = verifier
        .verify(&bare, at(now), &Expectations::default())
        .expect("verifies");
    assert_eq!(
        (verified.nonce(), verified.user_data(), verified.public_key()),
        (None, None, None)
    );

    // Never under the AWS root.
    let aws = Verifier::new(TrustAnchor::aws_nitro_root().expect("AWS root"));
    assert!(aws.verify(&doc, at(now), &Expectations::default()).is_err());

    // Not under another mock root, in either direction.
    let other = MockPki::ephemeral().expect("pki");
    let foreign = attest_with(&other, "i-other", &default_pcrs(), None, None, None, now).expect("doc");
    assert!(verifier.verify(&foreign, at(now), &Expectations::default()).is_err());
    let other_verifier = Verifier::new(TrustAnchor::from_der(other.root_der()).expect("anchor"));
    assert!(other_verifier.verify(&doc, at(now), &Expectations::default()).is_err());
    other_verifier
        .verify(&foreign, at(now), &Expectations::default())
        .expect("its own root accepts it");

    // Tampering, a wrong nonce and a PCR mismatch are refused.
    let mut tampered = doc.clone();
    let pcr0 = &attester.pcrs()[&0];
    let i = tampered
        .windows(PCR_LEN)
        .position(|w| w == pcr0.as_slice())
        .expect("PCR0");
    tampered[i + PCR_LEN - 1] ^= 1;
    assert_eq!(
        verifier.verify(&tampered, at(now), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    let wrong_nonce = Expectations {
        nonce: Some(b"other".to_vec()),
        ..Expectations::default()
    };
    assert_eq!(
        verifier.verify(&doc, at(now), &wrong_nonce),
        Err(AttestationError::NonceMismatch)
    );
    let wrong_pcr = Expectations {
        pcrs: BTreeMap::from([(0, vec![vec![0; 48]])]),
        ..Expectations::default()
    };
    assert_eq!(
        verifier.verify(&doc, at(now), &wrong_pcr),
        Err(AttestationError::PcrMismatch { index: 0 })
    );

    // A rotated leaf (hours later) verifies at its own time.
    let later = now + 5 * 3600 * 1000;
    let doc = attester.attest(None, None, None, later).expect("doc");
    verifier
        .verify(&doc, at(later), &Expectations::default())
        .expect("rotated leaf verifies");
}

#[test]
fn shared_verifier_accepts_documents_from_persisted_root_files() {
    use crate::verify::{Expectations, TrustAnchor, Verifier};

    let tmp = TempDir::new();
    let enclave = MockPki::load_or_create(&tmp.0).expect("creates");
    let pem = fs::read_to_string(mock_dir(&tmp.0).join(ROOT_CERT_FILE)).expect("root file");
    let verifier = Verifier::new(TrustAnchor::from_pem(&pem).expect("anchor"));
    let workload = MockPki::from_root_files(&mock_dir(&tmp.0)).expect("workload");
    let now = now_ms();
    let pcrs = BTreeMap::from([(0, vec![0xaa; 48]), (1, vec![0xbb; 48]), (2, vec![0xcc; 48])]);
    for pki in [&enclave, &workload] {
        let doc = attest_with(pki, "i-workload", &pcrs, None, Some(b"n"), None, now).expect("doc");
        let verified = verifier
            .verify(&doc, at(now), &Expectations::default())
            .expect("verifies");
        assert_eq!(verified.pcr(1), Some(&[0xbb; 48][..]));
        assert_eq!(verified.pcr(15), Some(&[0; 48][..]));
    }
}

#[test]
fn pcr_arguments_parse() {
    let hex48 = "ab".repeat(48);
    assert_eq!(parse_pcr_arg(&format!("0={hex48}")), Ok((0, vec![0xab; 48])));
    assert_eq!(
        parse_pcr_arg(&format!("31=0x{}", hex48.to_uppercase())),
        Ok((31, vec![0xab; 48]))
    );
    assert!(parse_pcr_arg(&format!("32={hex48}")).is_err());
    assert!(parse_pcr_arg(&format!("-1={hex48}")).is_err());
    assert!(parse_pcr_arg(&format!("x={hex48}")).is_err());
    assert!(parse_pcr_arg(&hex48).is_err());
    assert!(parse_pcr_arg("4=abcd").is_err());
    assert!(parse_pcr_arg(&format!("4={}", "zz".repeat(48))).is_err());
}
