use super::*;
use proptest::prelude::*;

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

fn doc(bytes: &[u8]) -> AttestationDocument {
    let cose = parse_cose(bytes).expect("cose");
    parse_payload(&cose.payload).expect("payload")
}

fn is_malformed<T: fmt::Debug>(r: Result<T, AttestationError>) -> bool {
    matches!(r, Err(AttestationError::Malformed(_)))
}

/// A hand-built payload map from (key, already-encoded value) pairs.
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    push_head(&mut out, MAJOR_MAP, entries.len() as u64);
    for (k, v) in entries {
        push_text(&mut out, k);
        out.extend_from_slice(v);
    }
    out
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::to_vec(value).expect("encode")
}

fn bstr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_bytes(&mut out, bytes);
    out
}

fn pcrs_map(entries: &[(u64, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    push_head(&mut out, MAJOR_MAP, entries.len() as u64);
    for (i, len) in entries {
        push_head(&mut out, MAJOR_UINT, *i);
        push_bytes(&mut out, &vec![7u8; *len]);
    }
    out
}

/// A valid synthetic payload's entries; tests edit them.
fn base_entries() -> Vec<(&'static str, Vec<u8>)> {
    let mut cabundle = Vec::new();
    push_head(&mut cabundle, MAJOR_ARRAY, 1);
    push_bytes(&mut cabundle, &[1, 2, 3]);
    vec![
        ("module_id", cbor(&"i-0123-enc0123")),
        ("digest", cbor(&"SHA384")),
        ("timestamp", cbor(&1_700_000_000_000u64)),
        ("pcrs", pcrs_map(&[(0, 48), (1, 48), (2, 48)])),
        ("certificate", bstr(&[4, 5, 6])),
        ("cabundle", cabundle),
        ("public_key", vec![CBOR_NULL]),
        ("user_data", bstr(b"hello")),
        ("nonce", vec![CBOR_NULL]),
    ]
}

fn with(key: &str, value: Vec<u8>) -> Vec<u8> {
    let mut entries = base_entries();
    for entry in &mut entries {
        if entry.0 == key {
            entry.1 = value.clone();
        }
    }
    map(&entries)
}

fn without(key: &str) -> Vec<u8> {
    let entries: Vec<_> = base_entries().into_iter().filter(|(k, _)| *k != key).collect();
    map(&entries)
}

#[test]
fn real_documents_decode() {
    let d1 = doc(DOC1);
    assert_eq!(d1.module_id, "i-0de38b2b6853cc9e8-enc0193685e7fee7d85");
    assert_eq!(d1.digest, "SHA384");
    assert_eq!(d1.timestamp_ms, 1_732_983_768_387);
    assert_eq!(d1.pcrs.len(), 16);
    assert_eq!(
        hex::encode(&d1.pcrs[&0]),
        "ec74bfbe7f7445a6c7610e152935e028276f638042b74797b119648e13f7a3675796b721034c320f140ea001b41aeae2"
    );
    assert_eq!(d1.cabundle.len(), 4);
    assert_eq!(d1.public_key.as_ref().map(Vec::len), Some(65));
    assert_eq!(d1.user_data, None);
    assert_eq!(d1.nonce, None);
    assert!(!d1.is_debug_mode());

    let cose2 = parse_cose(DOC2).expect("cose");
    assert_eq!(cose2.payload.first(), Some(&0xbf), "doc 2 has an indefinite-length map");
    let d2 = parse_payload(&cose2.payload).expect("indefinite map");
    assert_eq!(d2.timestamp_ms, 1_770_918_962_724);
    assert_eq!(d2.public_key.as_deref(), Some(&b"dummy"[..]));
    assert_eq!(d2.user_data.as_ref().map(Vec::len), Some(68));
    assert_eq!(
        hex::encode(d2.nonce.as_deref().expect("nonce")),
        "0123456789abcdef0123456789abcdef01234567"
    );

    let d3 = doc(DOC3);
    assert_eq!(d3.timestamp_ms, 1_695_049_410_860);
    assert_eq!(d3.public_key, None);
    assert_eq!(d3.user_data.as_ref().map(Vec::len), Some(91));
    assert_eq!(d3.nonce.as_ref().map(Vec::len), Some(256));
    assert!(d3.is_debug_mode());
}

#[test]
fn cose_shape() {
    for bytes in [DOC1, DOC2, DOC3] {
        let cose = parse_cose(bytes).expect("cose");
        assert_eq!(cose.protected, PROTECTED_ES384);
        assert_eq!(cose.signature.len(), 96);
        // Re-encoding reproduces the NSM's bytes exactly.
        assert_eq!(encode_cose(&cose), bytes);
        // Tag 18 is accepted and changes nothing.
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(bytes);
        assert_eq!(parse_cose(&tagged).expect("tagged"), cose);
    }
    // Two tags, or another tag, are refused.
    let mut twice = vec![0xd2, 0xd2];
    twice.extend_from_slice(DOC1);
    assert!(is_malformed(parse_cose(&twice)));
    let mut other = vec![0xd8, 0x12];
    other.extend_from_slice(DOC1);
    assert!(is_malformed(parse_cose(&other)));
}

#[test]
fn encode_payload_round_trips() {
    let d1 = doc(DOC1);
    let cose = parse_cose(DOC1).expect("cose");
    // Document 1 is a definite map in NSM order with null optionals.
    assert_eq!(encode_payload(&d1), cose.payload);
    for bytes in [DOC2, DOC3] {
        let d = doc(bytes);
        assert_eq!(parse_payload(&encode_payload(&d)).expect("round trip"), d);
    }
}

#[test]
fn sig_structure_matches_library_encoding() {
    for bytes in [DOC1, DOC2, DOC3] {
        let cose = parse_cose(bytes).expect("cose");
        let expected = cbor(&(
            "Signature1",
            serde_bytes::Bytes::new(&cose.protected),
            serde_bytes::Bytes::new(&[]),
            serde_bytes::Bytes::new(&cose.payload),
        ));
        let ours = sig_structure(&cose);
        assert_eq!(ours, expected);
        assert!(ours.starts_with(b"\x84\x6aSignature1\x44\xa1\x01\x38\x22\x40\x59"));
    }
}

#[test]
fn push_head_matches_library_for_all_widths() {
    for n in [
        0u64,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        let mut ours = Vec::new();
        push_head(&mut ours, MAJOR_UINT, n);
        assert_eq!(ours, cbor(&n), "{n}");
    }
}

#[test]
fn truncations_fail_cleanly() {
    for bytes in [DOC1, DOC2, DOC3] {
        for cut in [1, 2, 50, 97, 500, bytes.len() - 1] {
            let r = parse_cose(&bytes[..bytes.len() - cut]);
            assert!(is_malformed(r), "cut {cut}");
        }
    }
    assert!(is_malformed(parse_cose(&[])));
    let mut trailing = DOC1.to_vec();
    trailing.push(0);
    assert!(is_malformed(parse_cose(&trailing)));
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = vec![0u8; MAX_DOCUMENT_LEN + 1];
    assert_eq!(parse_cose(&big), Err(AttestationError::Oversized));
    assert_eq!(parse_payload(&big), Err(AttestationError::Oversized));
}

fn cose_with(protected: &[u8], unprotected: &[u8], signature_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    push_head(&mut out, MAJOR_ARRAY, 4);
    push_bytes(&mut out, protected);
    out.extend_from_slice(unprotected);
    push_bytes(&mut out, &map(&base_entries()));
    push_bytes(&mut out, &vec![1u8; signature_len]);
    out
}

#[test]
fn cose_header_rules() {
    assert!(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 96)).is_ok());
    // ES256 (-7) is refused.
    assert_eq!(
        parse_cose(&cose_with(&[0xa1, 0x01, 0x26], &[0xa0], 96)),
        Err(AttestationError::UnsupportedAlgorithm)
    );
    // No alg, extra headers, a duplicate alg, not a map.
    assert!(is_malformed(parse_cose(&cose_with(&[0xa0], &[0xa0], 96))));
    assert!(is_malformed(parse_cose(&cose_with(
        &[0xa2, 0x01, 0x38, 0x22, 0x04, 0x41, 0x00],
        &[0xa0],
        96
    ))));
    assert!(is_malformed(parse_cose(&cose_with(
        &[0xa2, 0x01, 0x38, 0x22, 0x01, 0x38, 0x22],
        &[0xa0],
        96
    ))));
    assert!(is_malformed(parse_cose(&cose_with(&[0x80], &[0xa0], 96))));
    assert!(is_malformed(parse_cose(&cose_with(&[], &[0xa0], 96))));
    // Unprotected must be a map.
    assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0x80], 96))));
    assert!(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa1, 0x04, 0x41, 0x00], 96)).is_ok());
    // Signature length.
    assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 95))));
    assert!(is_malformed(parse_cose(&cose_with(&PROTECTED_ES384, &[0xa0], 97))));
    // Detached payload (null), 3 or 5 elements, a map instead of an array.
    let mut detached = Vec::new();
    push_head(&mut detached, MAJOR_ARRAY, 4);
    push_bytes(&mut detached, &PROTECTED_ES384);
    detached.extend_from_slice(&[0xa0, CBOR_NULL]);
    push_bytes(&mut detached, &[1u8; 96]);
    assert!(is_malformed(parse_cose(&detached)));
    let mut five = cose_with(&PROTECTED_ES384, &[0xa0], 96);
    five[0] = 0x85;
    five.push(0x00);
    assert!(is_malformed(parse_cose(&five)));
    let mut three = Vec::new();
    push_head(&mut three, MAJOR_ARRAY, 3);
    push_bytes(&mut three, &PROTECTED_ES384);
    three.push(0xa0);
    push_bytes(&mut three, b"x");
    assert!(is_malformed(parse_cose(&three)));
    assert!(is_malformed(parse_cose(&[0xa0])));
}

#[test]
fn synthetic_payload_base_is_valid() {
    let d = parse_payload(&map(&base_entries())).expect("base");
    assert_eq!(d.user_data.as_deref(), Some(&b"hello"[..]));
    assert_eq!(d.public_key, None);
}

#[test]
fn missing_required_fields() {
    for (key, name) in [
        ("module_id", "module_id"),
        ("digest", "digest"),
        ("timestamp", "timestamp"),
        ("pcrs", "pcrs"),
        ("certificate", "certificate"),
        ("cabundle", "cabundle"),
    ] {
        assert_eq!(parse_payload(&without(key)), Err(AttestationError::MissingField(name)));
    }
    // Optional fields may be absent.
    for key in ["public_key", "user_data", "nonce"] {
        assert!(parse_payload(&without(key)).is_ok(), "{key}");
    }
}

#[test]
fn field_value_rules() {
    // module_id: non-empty text, not bytes.
    assert!(is_malformed(parse_payload(&with("module_id", cbor(&"")))));
    assert!(is_malformed(parse_payload(&with("module_id", bstr(b"i-0123")))));
    // digest.
    assert_eq!(
        parse_payload(&with("digest", cbor(&"SHA256"))),
        Err(AttestationError::UnsupportedAlgorithm)
    );
    assert!(is_malformed(parse_payload(&with("digest", bstr(b"SHA384")))));
    // timestamp: positive unsigned integer.
    assert!(is_malformed(parse_payload(&with("timestamp", cbor(&0u64)))));
    assert!(is_malformed(parse_payload(&with("timestamp", cbor(&-5i64)))));
    assert!(is_malformed(parse_payload(&with("timestamp", cbor(&1.5f64)))));
    assert!(is_malformed(parse_payload(&with("timestamp", cbor(&"1700000000000")))));
    // pcrs.
    assert!(parse_payload(&with("pcrs", pcrs_map(&[(31, 32), (5, 64)]))).is_ok());
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[])))));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(32, 48)])))));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(256, 48)])))));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 47)])))));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 0)])))));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&[(0, 96)])))));
    assert!(is_malformed(parse_payload(&with(
        "pcrs",
        pcrs_map(&[(0, 48), (0, 48)])
    ))));
    let all: Vec<(u64, usize)> = (0..32).map(|i| (i, 32)).collect();
    assert!(parse_payload(&with("pcrs", pcrs_map(&all))).is_ok());
    let mut too_many = all.clone();
    too_many.push((0, 32));
    assert!(is_malformed(parse_payload(&with("pcrs", pcrs_map(&too_many)))));
    let mut negative_key = Vec::new();
    push_head(&mut negative_key, MAJOR_MAP, 1);
    negative_key.push(0x20); // -1
    push_bytes(&mut negative_key, &[0u8; 48]);
    assert!(is_malformed(parse_payload(&with("pcrs", negative_key))));
    // certificate: 1..=1024 bytes.
    assert!(is_malformed(parse_payload(&with("certificate", bstr(&[])))));
    assert!(parse_payload(&with("certificate", bstr(&[1u8; 1024]))).is_ok());
    assert!(is_malformed(parse_payload(&with("certificate", bstr(&[1u8; 1025])))));
    assert!(is_malformed(parse_payload(&with(
        "certificate",
        cbor(&vec![1u8, 2, 3])
    ))));
    // cabundle: 1+ entries of 1..=1024 bytes, bounded count.
    let bundle = |entries: &[usize]| {
        let mut out = Vec::new();
        push_head(&mut out, MAJOR_ARRAY, entries.len() as u64);
        for len in entries {
            push_bytes(&mut out, &vec![1u8; *len]);
        }
        out
    };
    assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[])))));
    assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[10, 0])))));
    assert!(is_malformed(parse_payload(&with("cabundle", bundle(&[10, 1025])))));
    assert!(parse_payload(&with("cabundle", bundle(&[1024; MAX_CABUNDLE_LEN - 4]))).is_ok());
    assert!(is_malformed(parse_payload(&with(
        "cabundle",
        bundle(&[1; MAX_CABUNDLE_LEN + 1])
    ))));
    assert!(is_malformed(parse_payload(&with("cabundle", bstr(&[1]))))); // not an array
    // public_key: null, absent or 1..=1024 bytes.
    assert!(is_malformed(parse_payload(&with("public_key", bstr(&[])))));
    assert!(parse_payload(&with("public_key", bstr(&[1u8; 1024]))).is_ok());
    assert!(is_malformed(parse_payload(&with("public_key", bstr(&[1u8; 1025])))));
    assert!(is_malformed(parse_payload(&with("public_key", vec![0xf7])))); // undefined
    assert!(is_malformed(parse_payload(&with("public_key", cbor(&"key")))));
    // user_data and nonce: null, absent or 0..=512 bytes.
    for key in ["user_data", "nonce"] {
        let d = parse_payload(&with(key, bstr(&[]))).expect("empty allowed");
        let value = if key == "nonce" { d.nonce } else { d.user_data };
        assert_eq!(value, Some(Vec::new()));
        assert!(parse_payload(&with(key, bstr(&[1u8; 512]))).is_ok());
        assert!(is_malformed(parse_payload(&with(key, bstr(&[1u8; 513])))), "{key}");
        assert!(is_malformed(parse_payload(&with(key, cbor(&0u8)))), "{key}");
    }
}

#[test]
fn map_level_rules() {
    // Duplicate keys (even when the value is the same).
    let mut entries = base_entries();
    entries.push(("nonce", vec![CBOR_NULL]));
    assert!(is_malformed(parse_payload(&map(&entries))));
    let mut entries = base_entries();
    entries.push(("extra", cbor(&1u8)));
    entries.push(("extra", cbor(&1u8)));
    assert!(is_malformed(parse_payload(&map(&entries))));
    // Unknown keys are ignored.
    let mut entries = base_entries();
    entries.push(("future_field", cbor(&vec![1u8, 2])));
    assert!(parse_payload(&map(&entries)).is_ok());
    // Non-text keys, non-map payloads, trailing bytes.
    let mut int_key = map(&base_entries());
    int_key[0] += 1;
    int_key.extend_from_slice(&[0x01, 0x01]);
    assert!(is_malformed(parse_payload(&int_key)));
    assert!(is_malformed(parse_payload(&[0x80])));
    assert!(is_malformed(parse_payload(&[])));
    let mut trailing = map(&base_entries());
    trailing.push(0x00);
    assert!(is_malformed(parse_payload(&trailing)));
    // Indefinite-length form of the same map.
    let mut indefinite = map(&base_entries());
    indefinite[0] = 0xbf;
    indefinite.push(0xff);
    assert_eq!(parse_payload(&indefinite), parse_payload(&map(&base_entries())));
    // Deep nesting in an ignored value fails without overflowing the stack.
    let mut entries = base_entries();
    entries.push(("deep", vec![0x81; 10_000].into_iter().chain([0x00]).collect()));
    assert!(is_malformed(parse_payload(&map(&entries))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_cose(&bytes);
        let _ = parse_payload(&bytes);
    }

    #[test]
    fn mutated_documents_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in 0usize..64,
    ) {
        let mut bytes = [DOC1, DOC2, DOC3][which].to_vec();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(bytes.len() - cut);
        if let Ok(cose) = parse_cose(&bytes) {
            let _ = parse_payload(&cose.payload);
            let _ = sig_structure(&cose);
        }
    }

    #[test]
    fn mutated_payloads_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = map(&base_entries());
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        let _ = parse_payload(&bytes);
    }
}
