//! `CiphertextForRecipient` as the clients Nitro workloads run read it:
//! Keyward's envelope must pass the AWS Nitro Enclaves SDK's CMS walk
//! (`keyward_test_support::kmstool_cms`, a re-enactment of `cms.c`) and
//! open in `keyward-sdk`, as AWS KMS's own captured responses do.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyEncryptionMechanism, RecipientInfo};
use keyward_sdk::attestation::{DEFAULT_MODULE_ID, default_pcrs};
use keyward_sdk::recipient::{Envelope, RecipientKey};
use keyward_test_support::kmstool_cms::{self, KmstoolParts};

use crate::support::{Service, create_key, must, random_bytes};

/// A vector of `tests/data/aws-kms-cms/` (hex).
fn aws_vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/aws-kms-cms/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let digits: String = text.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}

fn recipient(document: &[u8]) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

/// One workload key for the module (RSA key generation is slow in debug builds).
fn workload() -> &'static RecipientKey {
    static KEY: std::sync::OnceLock<RecipientKey> = std::sync::OnceLock::new();
    KEY.get_or_init(RecipientKey::generate)
}

/// The walk reads AWS KMS's captured responses to exactly the values the
/// Nitro Enclaves SDK's `cms_test.c` expects (so it is faithful), and
/// keyward-sdk agrees.
#[test]
fn kmstool_walk_and_sdk_read_aws_kms_responses() {
    for name in ["input_ber", "input_ber_w_ctx"] {
        let input = aws_vector(name);
        let expected = KmstoolParts {
            encrypted_key: aws_vector(&format!("{name}.encrypted_key")),
            iv: aws_vector(&format!("{name}.iv")),
            ciphertext: aws_vector(&format!("{name}.ciphertext")),
        };
        assert_eq!(
            kmstool_cms::parse_enveloped_data(&input),
            Ok(expected.clone()),
            "{name}"
        );
        let envelope = Envelope::parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(envelope.encrypted_key(), expected.encrypted_key, "{name}");
        assert_eq!(envelope.iv().as_slice(), expected.iv, "{name}");
        assert_eq!(envelope.ciphertext(), expected.ciphertext, "{name}");
    }
}

/// Checks one `CiphertextForRecipient` of Keyward's: the kmstool walk reads
/// it to the parts keyward-sdk reads, the workload opens it to `expected`,
/// and its DER re-encoding — what Keyward emitted before — fails the walk.
#[track_caller]
fn check_envelope(what: &str, envelope: &[u8], expected: &[u8]) {
    let walked = kmstool_cms::parse_enveloped_data(envelope)
        .unwrap_or_else(|step| panic!("{what}: the Nitro Enclaves SDK's walk fails at {step}"));
    let parsed = Envelope::parse(envelope).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(walked.encrypted_key, parsed.encrypted_key(), "{what}");
    assert_eq!(walked.iv, parsed.iv(), "{what}");
    assert_eq!(walked.ciphertext, parsed.ciphertext(), "{what}");
    assert_eq!(workload().open(envelope).expect("opens").as_slice(), expected, "{what}");

    let der = kmstool_cms::reencode_as_der(envelope);
    assert_ne!(der, envelope);
    assert_eq!(
        kmstool_cms::parse_enveloped_data(&der),
        Err("ContentInfo: no contentType OID"),
        "{what}: the definite-length encoding must fail the walk where kmstool fails"
    );
    // keyward-sdk opens both.
    assert_eq!(workload().open(&der).expect("DER opens").as_slice(), expected, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_envelopes_pass_the_kmstool_walk_and_open() {
    let service = Service::start().await;
    let kms = service.client();
    let key_id = create_key(&kms, "kmstool walk").await;
    let document = service.workload_document(DEFAULT_MODULE_ID, &default_pcrs(), workload().public_key_der());

    // Sizes around the 1000-byte segments, up to Decrypt's 4096 bytes.
    for len in [1, 15, 16, 983, 984, 999, 1000, 1001, 2000, 4096] {
        let plaintext = random_bytes(len);
        let blob = must(
            "Encrypt",
            kms.encrypt()
                .key_id(&key_id)
                .plaintext(Blob::new(plaintext.clone()))
                .send()
                .await,
        )
        .ciphertext_blob()
        .expect("CiphertextBlob")
        .as_ref()
        .to_vec();
        let out = must(
            "Decrypt with Recipient",
            kms.decrypt()
                .ciphertext_blob(Blob::new(blob))
                .recipient(recipient(&document))
                .send()
                .await,
        );
        assert!(out.plaintext().is_none());
        let envelope = out.ciphertext_for_recipient().expect("CiphertextForRecipient").as_ref();
        let segments = envelope.windows(4).filter(|w| *w == [0x04, 0x82, 0x03, 0xe8]).count();
        let padded = (len / 16 + 1) * 16;
        assert_eq!(segments, padded / 1000, "{len} bytes: full 1000-byte segments");
        check_envelope(&format!("Decrypt of {len} bytes"), envelope, &plaintext);
    }

    // GenerateRandom: what the walk extracts is what the SDK opens.
    let out = must(
        "GenerateRandom with Recipient",
        kms.generate_random()
            .number_of_bytes(1024)
            .recipient(recipient(&document))
            .send()
            .await,
    );
    let envelope = out.ciphertext_for_recipient().expect("CiphertextForRecipient").as_ref();
    let random = workload().open(envelope).expect("opens").to_vec();
    assert_eq!(random.len(), 1024);
    check_envelope("GenerateRandom", envelope, &random);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Property: for any plaintext size the service could release (up to an
    /// RSA-4096 PKCS#8 key and beyond), Keyward's envelope passes the kmstool
    /// walk and round-trips through keyward-sdk.
    #[test]
    fn any_plaintext_size_round_trips(len in 0usize..=8192, seed in proptest::prelude::any::<u8>()) {
        let plaintext: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let sealed = keyward_enclave::attestation::recipient::envelope(workload().public_key_der(), &plaintext)
            .expect("envelope");
        check_envelope(&format!("{len} bytes"), &sealed, &plaintext);
    }
}
