//! Tests of the verifier: real Nitro documents and a synthetic P-384 PKI (this file holds the
//! fixtures of both).

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

mod anchors_and_real_documents;
mod cache;
mod chain;
mod properties;

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
