use proptest::prelude::*;

use super::*;
use crate::keys::blob::{self, BlobHeader};
use crate::keys::context::EncryptionContext;
use crate::keys::record::{self, WrappedMaterial};
use crate::seal::Sealer;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

proptest! {
    #[test]
    fn seal_open_roundtrip(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let key = Key256::from_bytes(key);
        let sealed = seal(&key, &nonce, &aad, &plaintext).expect("seals");
        prop_assert_eq!(sealed.len(), plaintext.len() + TAG_LEN);
        prop_assert_eq!(open(&key, &nonce, &aad, &sealed).expect("opens"), plaintext);
    }

    #[test]
    fn any_change_fails_to_open(pos in any::<usize>(), bit in 0u8..8) {
        let key = Key256::from_bytes([5; 32]);
        let nonce = [6; NONCE_LEN];
        let mut sealed = seal(&key, &nonce, b"aad", b"plaintext").expect("seals");
        let i = pos % sealed.len();
        sealed[i] ^= 1 << bit;
        prop_assert_eq!(open(&key, &nonce, b"aad", &sealed), Err(AeadError::Open));
    }

    #[test]
    fn open_never_panics(nonce in proptest::collection::vec(any::<u8>(), 0..20), ct in proptest::collection::vec(any::<u8>(), 0..40)) {
        prop_assert!(open(&Key256::from_bytes([0; 32]), &nonce, b"", &ct).is_err());
    }
}

#[test]
fn key_nonce_and_aad_are_bound() {
    let key = Key256::from_bytes([1; 32]);
    let nonce = [2; NONCE_LEN];
    let sealed = seal(&key, &nonce, b"aad", b"secret").expect("seals");
    assert_eq!(
        open(&Key256::from_bytes([9; 32]), &nonce, b"aad", &sealed),
        Err(AeadError::Open)
    );
    assert_eq!(open(&key, &[3; NONCE_LEN], b"aad", &sealed), Err(AeadError::Open));
    assert_eq!(open(&key, &nonce, b"aae", &sealed), Err(AeadError::Open));
    // A nonce of the wrong length is refused, not a panic.
    assert_eq!(open(&key, &nonce[..11], b"aad", &sealed), Err(AeadError::Open));
    assert_eq!(open(&key, &[2; 13], b"aad", &sealed), Err(AeadError::Open));
    // Fresh nonces differ.
    assert_ne!(random_nonce(), random_nonce());
}

/// NIST GCM test case 14 (AES-256, zero key and nonce, one zero block).
#[test]
fn known_answer() {
    let key = Key256::from_bytes([0; 32]);
    let sealed = seal(&key, &[0; NONCE_LEN], b"", &[0; 16]).expect("seals");
    assert_eq!(
        hex::encode(sealed),
        "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
    );
}

// Bytes sealed by the code before the four wrappers shared this module
// (generated with it, commit afa13eb): they still open, and sealing the same
// input under the same nonce gives the same bytes, so the formats on disk and
// on the wire are unchanged.

/// `seal::Sealer` (record sealing): key [0x11; 32], record key/111122223333/record.
const OLD_RECORD: &str =
    "012c40623cc6beb63bd771a6fd0f604b20129d8fa83a96f06345c2eec37c2db8f006a7d7fb49819f493a40f39a21dca99bd733d6c9";
/// `WrappedMaterial::seal` (material under a tenant KEK): KEK [0x22; 32].
const OLD_WRAPPED: &str = r#"{"nonce":[129,160,118,171,187,188,183,107,140,110,164,204],"ciphertext":[193,165,94,142,55,42,181,186,175,102,140,234,88,75,249,30,3,177,227,69,215,152,211,224,8,124,111,110,28,33,229,161,209,213,1,219,32,21,150,212,155,69,143,135,100,103,177,37]}"#;
/// `KeyRecord::push_version`: version 1 of [`OLD_ARN`], material [0x33; 32], KEK [0x22; 32].
const OLD_VERSIONS: &str = r#"[{"nonce":[83,169,221,0,235,90,0,105,246,106,146,184],"ciphertext":[224,52,82,252,96,97,37,217,129,32,98,226,104,246,2,2,94,178,99,222,200,98,251,111,199,96,213,160,36,110,127,30,165,46,229,69,17,142,104,182,184,72,133,189,242,100,123,208]}]"#;
const OLD_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001";
/// `keys::blob::seal`: material [0x44; 32], key 00000000-0000-4000-8000-000000000001 version 7, context purpose=vector.
const OLD_BLOB: &str = "010000000000004000800000000000000100000007b33923eb377a092e3306dc2be6a53ee6e5fa44cde87a144695623a2d8f7dc5681c588b62bb802000a6fa02200caf288fc30839e70da2f9";

/// Record format 1 (before store versions were bound into the associated
/// data) is refused, with how to start fresh, rather than misread; the
/// shared AEAD still computes exactly what the old sealer wrote.
#[test]
fn records_sealed_by_the_old_sealer_are_refused_clearly() {
    let key = Key256::from_bytes([0x11; 32]);
    let sealed = unhex(OLD_RECORD);
    let sealer = Sealer::new(std::sync::Arc::new(Key256::from_bytes([0x11; 32])));
    let err = sealer
        .open("key", "111122223333/record", 1, &sealed)
        .expect_err("format 1 is refused");
    assert!(matches!(err, crate::seal::SealError::OldFormat(_)), "{err}");
    assert!(err.to_string().contains("does not migrate"), "{err}");
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    let nonce: Nonce = nonce.try_into().expect("12 bytes");
    let opened = crate::keys::aead::open(&key, &nonce, &old_identity("key", "111122223333/record"), ct).expect("opens");
    assert_eq!(opened, b"sealed by the old Sealer");
    let again = seal(&key, &nonce, &old_identity("key", "111122223333/record"), &opened).expect("seals");
    assert_eq!(again, ct);
}

/// Record format 1's associated data: the identity without a version.
fn old_identity(namespace: &str, key: &str) -> Vec<u8> {
    let mut aad = b"keyward/v1/record\0".to_vec();
    aad.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    aad.extend_from_slice(namespace.as_bytes());
    aad.extend_from_slice(&(key.len() as u32).to_be_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad
}

#[test]
fn material_wrapped_by_the_old_code_still_unwraps() {
    let kek = Key256::from_bytes([0x22; 32]);
    let wrapped: WrappedMaterial = serde_json::from_str(OLD_WRAPPED).expect("decodes");
    let opened = wrapped.open(&kek, b"aad of the material").expect("unwraps");
    assert_eq!(opened.expose(), b"material wrapped by the old code");
    let fields: serde_json::Value = serde_json::from_str(OLD_WRAPPED).expect("JSON");
    let bytes = |f: &str| -> Vec<u8> { serde_json::from_value(fields[f].clone()).expect("bytes") };
    let nonce: Nonce = bytes("nonce").as_slice().try_into().expect("12 bytes");
    let again = seal(&kek, &nonce, b"aad of the material", opened.expose()).expect("seals");
    assert_eq!(again, bytes("ciphertext"));
    assert!(wrapped.open(&kek, b"other aad").is_err());

    let mut rec = record::test_record(OLD_ARN);
    rec.versions = serde_json::from_str(OLD_VERSIONS).expect("decodes");
    assert_eq!(rec.material(&kek, 1).expect("unwraps").expose(), &[0x33; 32]);
    assert_eq!(
        rec.symmetric_material(&kek, 1).expect("unwraps"),
        Key256::from_bytes([0x33; 32])
    );
}

#[test]
fn blobs_sealed_by_the_old_code_still_open() {
    let material = Key256::from_bytes([0x44; 32]);
    let context =
        EncryptionContext::new([("purpose".to_owned(), "vector".to_owned())].into_iter().collect()).expect("valid");
    let sealed = unhex(OLD_BLOB);
    let header = blob::parse_header(&sealed).expect("header");
    assert_eq!(
        header,
        BlobHeader {
            key_id: uuid::Uuid::parse_str("00000000-0000-4000-8000-000000000001").expect("uuid"),
            key_version: 7,
        }
    );
    let opened = blob::open(&sealed, &material, &context).expect("opens");
    assert_eq!(opened.expose(), b"blob sealed by the old code");
    let (head, rest) = sealed.split_at(21);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let nonce: Nonce = nonce.try_into().expect("12 bytes");
    let mut aad = head.to_vec();
    aad.extend_from_slice(&context.canonical());
    assert_eq!(seal(&material, &nonce, &aad, opened.expose()).expect("seals"), ct);
    assert!(blob::open(&sealed, &material, &EncryptionContext::default()).is_err());
}
