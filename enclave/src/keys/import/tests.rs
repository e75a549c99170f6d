//! Wrapping and unwrapping with the customer's side done by independent
//! code: RustCrypto `rsa` for the public-key encryption (public operations
//! only) and AWS-LC's key wrap for RFC 5649.

use std::sync::OnceLock;

use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use proptest::prelude::*;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

use super::*;

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/0b5fd2a1-5d5b-4bd8-a1fb-4e2b38fbbcf3";

fn kek() -> Key256 {
    Key256::from_bytes([9; 32])
}

fn params(algorithm: WrappingAlgorithm) -> NewParameters {
    generate(
        &kek(),
        uuid::Uuid::nil(),
        "111122223333",
        ARN,
        algorithm,
        WrappingKeySpec::Rsa2048,
        1_000,
    )
    .expect("generates")
}

/// One RSA-2048 key for the property test (key generation is the slow part).
fn shared() -> &'static NewParameters {
    static SHARED: OnceLock<NewParameters> = OnceLock::new();
    SHARED.get_or_init(|| params(WrappingAlgorithm::RsaesOaepSha256))
}

fn oaep(algorithm: WrappingAlgorithm) -> Oaep {
    match algorithm {
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => Oaep::new::<sha1::Sha1>(),
        _ => Oaep::new::<sha2::Sha256>(),
    }
}

/// What a customer sends: the material wrapped to the public key as `algorithm` says.
fn wrap(p: &ImportParameters, algorithm: WrappingAlgorithm, material: &[u8]) -> Vec<u8> {
    let public = RsaPublicKey::from_public_key_der(&p.public_key).expect("SPKI");
    let mut rng = rand::rngs::OsRng;
    if !algorithm.key_wrap() {
        return public.encrypt(&mut rng, oaep(algorithm), material).expect("encrypts");
    }
    let aes_key = [7u8; 32];
    let mut out = public.encrypt(&mut rng, oaep(algorithm), &aes_key).expect("encrypts");
    let mut wrapped = vec![0u8; material.len() + 16];
    let kek = AesKek::new(&AES_256, &aes_key).expect("kek");
    let n = kek.wrap_with_padding(material, &mut wrapped).expect("wraps").len();
    out.extend_from_slice(&wrapped[..n]);
    out
}

#[test]
fn every_algorithm_round_trips() {
    for name in WrappingAlgorithm::NAMES {
        let algorithm = WrappingAlgorithm::parse(name).expect("known");
        assert_eq!(algorithm.as_str(), *name);
        let new = params(algorithm);
        let p = &new.parameters;
        assert!(p.token_matches(&new.token));
        let material = [0x5au8; 32];
        let encrypted = wrap(p, algorithm, &material);
        let unwrapped = p.unwrap_material(&kek(), ARN, &encrypted).expect("unwraps");
        assert_eq!(unwrapped.expose(), &material, "{name}");
    }
}

#[test]
fn key_sizes_are_the_ones_asked_for() {
    for (spec, bits) in [(WrappingKeySpec::Rsa3072, 3072), (WrappingKeySpec::Rsa4096, 4096)] {
        let new = generate(
            &kek(),
            uuid::Uuid::nil(),
            "t",
            ARN,
            WrappingAlgorithm::RsaesOaepSha256,
            spec,
            0,
        )
        .expect("generates");
        let public = RsaPublicKey::from_public_key_der(&new.parameters.public_key).expect("SPKI");
        assert_eq!(rsa::traits::PublicKeyParts::size(&public) * 8, bits);
        assert_eq!(WrappingKeySpec::parse(spec.as_str()), Some(spec));
    }
    assert_eq!(WrappingKeySpec::parse("RSA_1024"), None);
    assert_eq!(WrappingAlgorithm::parse("RSAES_PKCS1_V1_5"), None);
}

#[test]
fn tokens_are_checked_and_distinct() {
    let a = params(WrappingAlgorithm::RsaesOaepSha256);
    let b = shared();
    assert!(!a.parameters.token_matches(&b.token));
    assert!(!a.parameters.token_matches(&a.token[..31]));
    assert!(!a.parameters.token_matches(b""));
    assert_ne!(a.parameters.public_key, b.parameters.public_key);
}

#[test]
fn tampered_or_misdirected_ciphertexts_fail_with_one_answer() {
    let new = shared();
    let p = &new.parameters;
    let good = wrap(p, WrappingAlgorithm::RsaesOaepSha256, &[1; 32]);
    let mut flipped = good.clone();
    flipped[10] ^= 1;
    for bad in [
        flipped,
        good[..255].to_vec(),
        [good.clone(), vec![0]].concat(),
        Vec::new(),
    ] {
        assert_eq!(
            p.unwrap_material(&kek(), ARN, &bad).err(),
            Some(ImportError::Undecryptable)
        );
    }
    // Material wrapped with SHA-1 OAEP does not unwrap as SHA-256 OAEP.
    let sha1 = wrap(p, WrappingAlgorithm::RsaesOaepSha1, &[1; 32]);
    assert_eq!(
        p.unwrap_material(&kek(), ARN, &sha1).err(),
        Some(ImportError::Undecryptable)
    );
    // The stored private key is bound to its key and tenant KEK.
    assert_eq!(
        p.unwrap_material(&kek(), "arn:other", &good).err(),
        Some(ImportError::Corrupt)
    );
    assert_eq!(
        p.unwrap_material(&Key256::from_bytes([1; 32]), ARN, &good).err(),
        Some(ImportError::Corrupt)
    );
}

#[test]
fn key_wrap_rejects_a_bad_wrapped_part() {
    let new = params(WrappingAlgorithm::RsaAesKeyWrapSha256);
    let p = &new.parameters;
    let mut encrypted = wrap(p, WrappingAlgorithm::RsaAesKeyWrapSha256, &[3; 32]);
    let last = encrypted.len() - 1;
    encrypted[last] ^= 1;
    assert_eq!(
        p.unwrap_material(&kek(), ARN, &encrypted).err(),
        Some(ImportError::Undecryptable)
    );
    // Only the RSA part, nothing wrapped.
    assert_eq!(
        p.unwrap_material(&kek(), ARN, &encrypted[..256]).err(),
        Some(ImportError::Undecryptable)
    );
}

#[test]
fn fingerprints_name_material_and_key_without_revealing_either() {
    let k = Key256::from_bytes([4; 32]);
    let f = fingerprint(&k, ARN, &[1; 32]);
    assert_eq!(f, fingerprint(&k, ARN, &[1; 32]));
    assert_ne!(f, fingerprint(&k, ARN, &[2; 32]));
    assert_ne!(f, fingerprint(&k, "arn:other", &[1; 32]));
    assert_ne!(f, fingerprint(&Key256::from_bytes([5; 32]), ARN, &[1; 32]));
    assert!(!f.windows(32).any(|w| w == [1u8; 32]));
}

#[test]
fn the_attestation_binding_names_key_and_arn() {
    let binding = attestation_binding(b"spki", ARN);
    assert!(binding.starts_with(ATTESTATION_BINDING_PREFIX));
    assert!(binding.ends_with(ARN.as_bytes()));
    assert_ne!(binding, attestation_binding(b"spkj", ARN));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_material_round_trips(material in proptest::collection::vec(any::<u8>(), 1..=190)) {
        let p = &shared().parameters;
        let encrypted = wrap(p, WrappingAlgorithm::RsaesOaepSha256, &material);
        let unwrapped = p.unwrap_material(&kek(), ARN, &encrypted).expect("unwraps");
        prop_assert_eq!(unwrapped.expose(), material.as_slice());
    }
}
