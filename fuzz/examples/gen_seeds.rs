//! Writes the committed seed corpora under `seeds/` (and, on first use, the
//! mock root CA under `fixtures/mock-attestation/`). Run from `fuzz/`:
//!
//!     cargo run --example gen_seeds [FUZZ_DIR]
//!
//! Seeds are small, valid inputs that let the fuzzer start deep in each
//! parser; the corpora the fuzzer grows go to `corpus/` (not committed).

use std::fs;
use std::path::Path;

use keyward_attestation::mock::{MockAttester, MockPki};
use keyward_wire::{ApiRequest, ApiResponse, Frame, StoreOp, StoreResult, Timing, encode};

fn main() {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(), Into::into);
    let root = root.as_path();
    frame_seeds(&root.join("seeds/frame"));
    attestation_seeds(root);
    api_seeds(&root.join("seeds/api"));
    custody_seeds(&root.join("seeds/custody_formats"));
}

/// Unseal messages of format 1 and 2 and checkpoints (`custody_formats`).
fn custody_seeds(dir: &Path) {
    use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};
    use keyward_custody::share::ShareSecret;
    use keyward_custody::suite::PrivateKey;
    use keyward_custody::unseal::{Freshness, UnsealMessage};

    let deployment = [7u8; 16];
    let checkpoint = Checkpoint::new(
        deployment,
        42,
        [("111122223333".to_owned(), 9), ("444455556666".to_owned(), 3)]
            .into_iter()
            .collect(),
    );
    let bytes = checkpoint.to_bytes().expect("a checkpoint");
    write(dir, "checkpoint", &bytes);
    let signed = SignedCheckpoint::new(bytes, vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]);
    write(dir, "signed_checkpoint", &signed.to_bytes().expect("a signed checkpoint"));
    let mut value = vec![1];
    value.extend_from_slice(&[9; 32]);
    let share = ShareSecret::new(deployment, 1, value).expect("a share");
    let session = PrivateKey::generate().public_key();
    let v1 = UnsealMessage::seal_format1(&share, &session).expect("format 1");
    write(dir, "unseal_v1", &v1.to_bytes().expect("encodes"));
    let freshness = Freshness {
        checkpoint: Some(checkpoint),
        accept_store_rollback: true,
    };
    let v2 = UnsealMessage::seal_with(&share, &session, &freshness).expect("format 2");
    write(dir, "unseal_v2", &v2.to_bytes().expect("encodes"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("seed dir");
    fs::write(dir.join(name), bytes).expect("seed");
}

/// Length-prefixed frames (the `frame` target reads its input both as one
/// body and as a stream of prefixed frames).
fn frame_seeds(dir: &Path) {
    let frames = [
        ("hello", Frame::Hello { version: 1 }),
        ("ping", Frame::Ping { id: 7 }),
        (
            "request",
            Frame::Request {
                id: 1,
                request: ApiRequest {
                    request_id: "r-1".into(),
                    method: "POST".into(),
                    path: "/".into(),
                    query: String::new(),
                    headers: vec![("x-amz-target".into(), b"TrentService.Encrypt".to_vec().into())],
                    body: br#"{"KeyId":"alias/a","Plaintext":"aGk="}"#.to_vec(),
                    client_addr: None,
                },
            },
        ),
        (
            "response",
            Frame::Response {
                id: 1,
                response: ApiResponse {
                    status: 400,
                    error_type: Some("ValidationException".into()),
                    body: b"{}".to_vec(),
                    timing: Timing::default(),
                },
            },
        ),
        (
            "store_call",
            Frame::StoreCall {
                id: 2,
                op: StoreOp::List {
                    namespace: "key".into(),
                    prefix: "t/".into(),
                    start_after: Some("t/a".into()),
                    limit: 10,
                },
            },
        ),
        (
            "store_reply",
            Frame::StoreReply {
                id: 2,
                result: StoreResult::Entries(vec![("t/b".into(), b"sealed".to_vec().into())]),
            },
        ),
    ];
    let mut stream = Vec::new();
    for (name, frame) in &frames {
        let bytes = encode(frame).expect("encodes");
        // The body alone, and the prefixed frame.
        write(dir, &format!("{name}.body"), &bytes[4..]);
        stream.extend_from_slice(&bytes);
    }
    write(dir, "stream", &stream);
}

/// Mock documents under the committed mock root: nonce `b"fuzz"` (what the
/// `attestation_verify` target's strict expectations demand), with and
/// without a public key and user data.
fn attestation_seeds(root: &Path) {
    let pki = MockPki::load_or_create(&root.join("fixtures")).expect("mock root");
    let attester = MockAttester::new(pki);
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    let spki = include_bytes!("../fixtures/recipient-rsa2048.spki.der");
    let dir = root.join("seeds/attestation_verify");
    let plain = attester.attest(None, Some(b"fuzz"), None, now_ms).expect("doc");
    write(&dir, "mock_nonce.cbor", &plain);
    let full = attester
        .attest(Some(b"user data"), Some(b"fuzz"), Some(spki), now_ms)
        .expect("doc");
    write(&dir, "mock_nonce_user_data_public_key.cbor", &full);
    let payload = keyward_attestation::document::parse_cose(&plain)
        .expect("parses")
        .payload;
    write(&root.join("seeds/attestation_parse"), "mock_payload.cbor", &payload);
    write(&root.join("seeds/attestation_parse"), "mock_nonce.cbor", &plain);
}

/// One body per operation family, with the target's placeholders (`@k0` …).
/// The first byte is the operation's index in the target's list.
fn api_seeds(dir: &Path) {
    let seeds: &[(u8, &str, &str)] = &[
        (
            0,
            "create_key",
            r#"{"KeySpec":"ECC_NIST_P256","KeyUsage":"SIGN_VERIFY","Description":"d","Tags":[{"TagKey":"k","TagValue":"v"}]}"#,
        ),
        (1, "describe_key", r#"{"KeyId":"alias/fuzz"}"#),
        (2, "list_keys", r#"{"Limit":2,"Marker":"x"}"#),
        (
            3,
            "encrypt",
            r#"{"KeyId":"@a0","Plaintext":"aGVsbG8=","EncryptionContext":{"a":"b"}}"#,
        ),
        (4, "decrypt", r#"{"CiphertextBlob":"@c0","KeyId":"@k0"}"#),
        (
            4,
            "decrypt_recipient",
            r#"{"CiphertextBlob":"@c0","Recipient":{"KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256","AttestationDocument":"@d0"}}"#,
        ),
        (5, "generate_data_key", r#"{"KeyId":"@k0","NumberOfBytes":32}"#),
        (7, "generate_random", r#"{"NumberOfBytes":16}"#),
        (
            8,
            "re_encrypt",
            r#"{"CiphertextBlob":"@c0","DestinationKeyId":"@k0","DestinationEncryptionContext":{"x":"y"}}"#,
        ),
        (
            9,
            "generate_data_key_pair",
            r#"{"KeyId":"@k0","KeyPairSpec":"ECC_NIST_P256"}"#,
        ),
        (
            13,
            "schedule_key_deletion",
            r#"{"KeyId":"@k0","PendingWindowInDays":7}"#,
        ),
        (15, "update_key_description", r#"{"KeyId":"@k0","Description":"new"}"#),
        (
            16,
            "enable_key_rotation",
            r#"{"KeyId":"@k0","RotationPeriodInDays":90}"#,
        ),
        (20, "list_key_rotations", r#"{"KeyId":"@k0","Limit":1}"#),
        (21, "create_alias", r#"{"AliasName":"alias/new","TargetKeyId":"@k0"}"#),
        (24, "list_aliases", r#"{"KeyId":"@k0"}"#),
        (
            25,
            "tag_resource",
            r#"{"KeyId":"@k0","Tags":[{"TagKey":"a","TagValue":"b"}]}"#,
        ),
        (
            28,
            "sign",
            r#"{"KeyId":"@k1","Message":"aGVsbG8=","SigningAlgorithm":"ECDSA_SHA_256","MessageType":"RAW"}"#,
        ),
        (
            29,
            "verify",
            r#"{"KeyId":"@k1","Message":"aGVsbG8=","Signature":"MEUCIQ==","SigningAlgorithm":"ECDSA_SHA_256"}"#,
        ),
        (30, "get_public_key", r#"{"KeyId":"@k2"}"#),
        (
            31,
            "derive_shared_secret",
            r#"{"KeyId":"@k2","KeyAgreementAlgorithm":"ECDH","PublicKey":"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"}"#,
        ),
        (
            32,
            "generate_mac",
            r#"{"KeyId":"@k3","Message":"aGk=","MacAlgorithm":"HMAC_SHA_256"}"#,
        ),
        (
            33,
            "verify_mac",
            r#"{"KeyId":"@k3","Message":"aGk=","MacAlgorithm":"HMAC_SHA_256","Mac":"AAAA"}"#,
        ),
        (
            34,
            "get_parameters_for_import",
            r#"{"KeyId":"@k4","WrappingAlgorithm":"RSAES_OAEP_SHA_256","WrappingKeySpec":"RSA_2048"}"#,
        ),
        (
            35,
            "import_key_material",
            r#"{"KeyId":"@k4","ImportToken":"AAAA","EncryptedKeyMaterial":"AAAA","ExpirationModel":"KEY_MATERIAL_DOES_NOT_EXPIRE"}"#,
        ),
        (0x80 | 37, "create_tenant", r#"{"TenantId":"444455556666"}"#),
        (41, "create_access_key", r#"{"Roles":["KeyUser"]}"#),
        (44, "get_audit_log", r#"{"Limit":5}"#),
        (
            45,
            "update_key_attestation_policy",
            r#"{"KeyId":"@k0","RequireRecipient":true,"AllowedPCRs":{"0":["00"]}}"#,
        ),
        (47, "get_attestation_document", r#"{"Nonce":"AAAA"}"#),
        (
            48,
            "put_key_policy_module",
            r#"{"KeyId":"@k0","Module":"AGFzbQEAAAA="}"#,
        ),
        (53, "test_policy", r#"{"Module":"AGFzbQEAAAA=","Context":{}}"#),
    ];
    for (selector, name, body) in seeds {
        let mut bytes = vec![*selector];
        bytes.extend_from_slice(body.as_bytes());
        write(dir, name, &bytes);
    }
}
