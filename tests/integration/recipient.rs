//! `Recipient` end to end, with the enclave and the proxy as separate
//! processes and a recording forwarder between them ([`crate::split`]): a
//! mock attested workload gets data keys, a data key pair, random bytes and
//! an ECDH shared secret only as `CiphertextForRecipient`, opens them with
//! its own RSA key, and none of those secrets ever crosses the host — not
//! in any frame in either direction on any connection (raw, hex or base64),
//! nor in either process's log.
//!
//! Since TLS ends inside the enclave, the same secret asked for *without*
//! Recipient does not cross the host either: each test ends with that
//! control, and with one showing the scan can fail (it finds the key id,
//! which does cross the host in clear, in the store calls' record names).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeyPairSpec, DataKeySpec, KeyAgreementAlgorithmSpec, KeySpec, KeyUsageType};
use keyward_sdk::attestation::default_pcrs;
use keyward_sdk::recipient::RecipientKey;
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};

use crate::harness::{context, create_key, create_key_of, decrypt, must, names_key};
use crate::split::{Recording, Split, b64, contains, encodings, find_secret, open, recipient_info, workload_document};

/// Asserts that no secret occurs in the recordings or in the logs.
#[track_caller]
fn assert_never_crossed(split: &Split, recordings: &[Recording], secrets: &[(&str, &[u8])]) {
    for (label, secret) in secrets {
        let found = find_secret(recordings, secret);
        assert!(
            found.is_empty(),
            "the {label} crossed the host↔enclave boundary: {found:?}"
        );
        for (process, log) in split.logs() {
            for (encoding, needle) in encodings(secret) {
                assert!(
                    !contains(log.as_bytes(), &needle),
                    "the {label} is in the {process} log ({encoding})"
                );
            }
        }
    }
}

/// Asserts that the recorders saw the real traffic: store calls naming
/// `key_id` on the host link, and TLS records (a handshake, then
/// application data) on the client streams.
#[track_caller]
fn assert_recorded_traffic(split: &Split, key_id: &str) {
    let link = split.recorder.snapshot();
    assert!(
        !find_secret(&link, key_id.as_bytes()).is_empty(),
        "the link recorder did not see the store calls naming {key_id}: the scan could never fail"
    );
    let streams = split.stream_recorder.snapshot();
    assert!(
        streams
            .iter()
            .any(|r| r.direction == "host->enclave" && r.bytes.windows(2).any(|w| w == [0x16, 0x03])),
        "the stream recorder saw no TLS handshake"
    );
    assert!(
        streams
            .iter()
            .any(|r| r.direction == "enclave->host" && r.bytes.windows(3).any(|w| w == [0x17, 0x03, 0x03])),
        "the stream recorder saw no TLS application data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_for_a_recipient_never_cross_the_host() {
    let split = Split::start().await;
    let kms = split.client();
    let key_id = create_key(&kms, "recipient end to end").await;
    let workload = RecipientKey::generate();
    let document = workload_document(&split.mock_attestation_dir(), &default_pcrs(), &workload);
    let ctx = context(&[("purpose", "recipient-e2e")]);

    // GenerateDataKey with Recipient: no Plaintext, the data key sealed to the workload.
    let generated = must(
        "GenerateDataKey with Recipient",
        kms.generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(
        generated.plaintext().is_none(),
        "GenerateDataKey with Recipient returned Plaintext"
    );
    assert!(names_key(generated.key_id(), &key_id), "{:?}", generated.key_id());
    let data_key = open("GenerateDataKey", &workload, generated.ciphertext_for_recipient());
    assert_eq!(data_key.len(), 32, "AES_256 data key");
    let blob = generated.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();

    // Decrypt of its CiphertextBlob with Recipient: the same data key.
    let decrypted = must(
        "Decrypt with Recipient",
        kms.decrypt()
            .ciphertext_blob(Blob::new(blob.clone()))
            .set_encryption_context(Some(ctx.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(
        decrypted.plaintext().is_none(),
        "Decrypt with Recipient returned Plaintext"
    );
    assert!(names_key(decrypted.key_id(), &key_id), "{:?}", decrypted.key_id());
    assert_eq!(
        open("Decrypt", &workload, decrypted.ciphertext_for_recipient()),
        data_key,
        "Decrypt(Recipient) of the CiphertextBlob must give the data key GenerateDataKey(Recipient) released"
    );

    // GenerateDataKeyPair with Recipient: no PrivateKeyPlaintext; the sealed
    // PKCS#8 belongs to the returned public key.
    let pair = must(
        "GenerateDataKeyPair with Recipient",
        kms.generate_data_key_pair()
            .key_id(&key_id)
            .key_pair_spec(DataKeyPairSpec::EccNistP256)
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(
        pair.private_key_plaintext().is_none(),
        "GenerateDataKeyPair with Recipient returned PrivateKeyPlaintext"
    );
    let private_der = open("GenerateDataKeyPair", &workload, pair.ciphertext_for_recipient());
    let private = p256::SecretKey::from_pkcs8_der(&private_der).expect("the released private key is P-256 PKCS#8");
    let public_der = private.public_key().to_public_key_der().expect("SPKI");
    assert_eq!(
        public_der.as_bytes(),
        pair.public_key().expect("PublicKey").as_ref(),
        "the released private key must match PublicKey"
    );
    let scalar = private.to_bytes().to_vec();

    // What crossed the host so far.
    let recorded = split.recordings();
    assert!(!recorded.is_empty(), "the proxy never connected through the recorder");
    assert_recorded_traffic(&split, &key_id);
    let _ = (&generated, &decrypted, &pair, &document);
    assert_never_crossed(
        &split,
        &recorded,
        &[
            ("data key", &data_key),
            ("data key pair's PKCS#8 private key", &private_der),
            ("data key pair's private scalar", &scalar),
        ],
    );

    // Control, after the recording was examined: a plain Decrypt returns
    // the same data key, and inside TLS it does not cross the host either.
    assert_eq!(decrypt(&kms, None, &blob, Some(&ctx)).await, data_key);
    assert!(
        find_secret(&split.recordings(), &data_key).is_empty(),
        "a data key released without Recipient crossed the host in clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_shared_secrets_for_a_recipient_never_cross_the_host() {
    let split = Split::start().await;
    let kms = split.client();
    let workload = RecipientKey::generate();
    let document = workload_document(&split.mock_attestation_dir(), &default_pcrs(), &workload);

    // GenerateRandom with Recipient: the bytes only as CiphertextForRecipient.
    let mut randoms = Vec::new();
    let mut sealed = Vec::new();
    for n in [64, 1024] {
        let out = must(
            "GenerateRandom with Recipient",
            kms.generate_random()
                .number_of_bytes(n)
                .recipient(recipient_info(&document))
                .send()
                .await,
        );
        assert!(
            out.plaintext().is_none(),
            "GenerateRandom with Recipient returned Plaintext"
        );
        let random = open("GenerateRandom", &workload, out.ciphertext_for_recipient());
        assert_eq!(random.len(), n as usize, "GenerateRandom NumberOfBytes={n}");
        sealed.push(b64(out.ciphertext_for_recipient().expect("checked").as_ref()));
        randoms.push(random);
    }
    assert_ne!(
        randoms[0][..],
        randoms[1][..64],
        "two GenerateRandom calls gave the same bytes"
    );

    // DeriveSharedSecret with Recipient: the secret the peer computes.
    let key_id = create_key_of(&kms, KeySpec::EccNistP256, Some(KeyUsageType::KeyAgreement)).await;
    let kms_public = must("GetPublicKey", kms.get_public_key().key_id(&key_id).send().await);
    let kms_public =
        p256::PublicKey::from_public_key_der(kms_public.public_key().expect("PublicKey").as_ref()).expect("P-256 SPKI");
    let peer = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let peer_spki = peer.public_key().to_public_key_der().expect("SPKI").into_vec();
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), kms_public.as_affine())
        .raw_secret_bytes()
        .to_vec();
    let derived = must(
        "DeriveSharedSecret with Recipient",
        kms.derive_shared_secret()
            .key_id(&key_id)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer_spki.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert!(
        derived.shared_secret().is_none(),
        "DeriveSharedSecret with Recipient returned SharedSecret"
    );
    assert!(names_key(derived.key_id(), &key_id), "{:?}", derived.key_id());
    let shared = open("DeriveSharedSecret", &workload, derived.ciphertext_for_recipient());
    assert_eq!(
        shared, expected,
        "the released shared secret must be the peer's ECDH result"
    );
    sealed.push(b64(derived.ciphertext_for_recipient().expect("checked").as_ref()));

    let recorded = split.recordings();
    assert_recorded_traffic(&split, &key_id);
    let _ = &sealed;
    assert_never_crossed(
        &split,
        &recorded,
        &[
            ("64 random bytes", &randoms[0]),
            ("1024 random bytes", &randoms[1]),
            ("shared secret", &shared),
        ],
    );

    // Control: without Recipient the same secret comes back to the client,
    // and inside TLS it does not cross the host either.
    let plain = must(
        "DeriveSharedSecret",
        kms.derive_shared_secret()
            .key_id(&key_id)
            .key_agreement_algorithm(KeyAgreementAlgorithmSpec::Ecdh)
            .public_key(Blob::new(peer_spki))
            .send()
            .await,
    );
    assert_eq!(
        plain.shared_secret().expect("SharedSecret").as_ref(),
        expected.as_slice()
    );
    assert!(plain.ciphertext_for_recipient().is_none());
    assert!(
        find_secret(&split.recordings(), &expected).is_empty(),
        "a shared secret released without Recipient crossed the host in clear"
    );
}

/// `kmsctl audit` shows what was attested (module id, PCR0) and the
/// encryption context's keys and keyed hash, never its values, and
/// `kmsctl audit verify` verifies the chain with those records in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_audit_shows_what_was_attested() {
    let split = Split::start().await;
    let kms = split.client();
    let key_id = create_key(&kms, "kmsctl audit of a recipient").await;
    let workload = RecipientKey::generate();
    let pcrs = default_pcrs();
    let document = workload_document(&split.mock_attestation_dir(), &pcrs, &workload);
    let value = "a customer value the audit must not hold";
    let ctx = context(&[("tenant-purpose", value)]);
    let blob = must(
        "Encrypt",
        kms.encrypt()
            .key_id(&key_id)
            .plaintext(Blob::new(&b"attested"[..]))
            .set_encryption_context(Some(ctx.clone()))
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
            .set_encryption_context(Some(ctx))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert_eq!(open("Decrypt", &workload, out.ciphertext_for_recipient()), b"attested");

    let ca_bundle = split.data_dir.join("client-ca.pem");
    std::fs::write(&ca_bundle, &split.ca_pem).expect("writing the CA bundle");
    let kmsctl = |args: &[&str]| {
        std::process::Command::new(crate::audit::kmsctl_path())
            .args(args)
            .env("KEYWARD_ENDPOINT", &split.url)
            .env("AWS_CA_BUNDLE", &ca_bundle)
            .env("AWS_REGION", crate::harness::REGION)
            .env("AWS_ACCESS_KEY_ID", &split.creds.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &split.creds.secret)
            .output()
            .expect("run kmsctl")
    };
    let listed = kmsctl(&["audit", "list"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "kmsctl audit: {stdout} {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let decrypt = stdout
        .lines()
        .rfind(|l| l.contains("\tTrentService.Decrypt\t"))
        .unwrap_or_else(|| panic!("no Decrypt line in {stdout}"));
    let pcr0 = pcrs.get(&0).map(hex::encode).expect("PCR0");
    assert!(
        decrypt.contains(&format!(
            "\t{} pcr0={pcr0}\tkeys=[\"tenant-purpose\"] hash=",
            keyward_sdk::attestation::DEFAULT_MODULE_ID
        )),
        "{decrypt}"
    );
    assert!(!stdout.contains(value), "a context value in kmsctl audit: {stdout}");
    let encrypt = stdout
        .lines()
        .rfind(|l| l.contains("\tTrentService.Encrypt\t"))
        .expect("an Encrypt line");
    assert!(
        encrypt.ends_with(&decrypt[decrypt.rfind("\tkeys=").expect("keys")..]),
        "same context, same hash: {encrypt} / {decrypt}"
    );

    let verified = kmsctl(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "kmsctl audit verify: {stdout} {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(stdout.contains("audit chain OK"), "{stdout}");
}
