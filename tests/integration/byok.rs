//! BYOK through the real service: keys created with `Origin: EXTERNAL`, the
//! official `aws-sdk-kms` for every AWS call and the `openssl` command for
//! the customer's wrapping (as AWS's import guide does it: `pkeyutl` with
//! RSA-OAEP, and `enc -id-aes256-wrap-pad` for RSA_AES_KEY_WRAP). Time moves
//! with `--mock-clock-offset` across restarts on one data dir. The
//! keyward-sdk flow checks the enclave's attestation of the wrapping key
//! before sending anything, and `kmsctl key import` does the same from the
//! command line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{AlgorithmSpec, ExpirationModelType, KeyState, OriginType, WrappingKeySpec};
use keyward_sdk::attestation::{AttestationError, TrustAnchor, default_pcrs};
use keyward_sdk::import::{Expiry, ImportError, verify_import_key, wrap_key_material};
use sha2::{Digest, Sha384};

use crate::harness::{Keyward, Sandbox, decrypt, encrypt, epoch_secs, expect_error, files_under, must, random_bytes};
use crate::principals::sdk;

/// `aws kms create-key --origin EXTERNAL`.
async fn create_external(client: &aws_sdk_kms::Client) -> String {
    let out = must(
        "CreateKey EXTERNAL",
        client
            .create_key()
            .origin(OriginType::External)
            .description("byok")
            .send()
            .await,
    );
    let meta = out.key_metadata().expect("metadata");
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert!(!meta.enabled());
    meta.key_id().to_string()
}

struct Parameters {
    public_key: Vec<u8>,
    token: Vec<u8>,
}

async fn parameters(client: &aws_sdk_kms::Client, key_id: &str, algorithm: AlgorithmSpec) -> Parameters {
    let out = must(
        "GetParametersForImport",
        client
            .get_parameters_for_import()
            .key_id(key_id)
            .wrapping_algorithm(algorithm)
            .wrapping_key_spec(WrappingKeySpec::Rsa2048)
            .send()
            .await,
    );
    Parameters {
        public_key: out.public_key().expect("PublicKey").as_ref().to_vec(),
        token: out.import_token().expect("ImportToken").as_ref().to_vec(),
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The material wrapped by `openssl`, as AWS's import guide shows.
fn wrap_with_openssl(dir: &Path, public_key: &[u8], material: &[u8], algorithm: &AlgorithmSpec) -> Vec<u8> {
    let public = dir.join("WrappingPublicKey.bin");
    let plain = dir.join("PlaintextKeyMaterial.bin");
    let out = dir.join("EncryptedKeyMaterial.bin");
    std::fs::write(&public, public_key).expect("write public key");
    std::fs::write(&plain, material).expect("write material");
    let oaep = |input: &Path, output: &Path| {
        openssl(&[
            "pkeyutl",
            "-encrypt",
            "-in",
            &input.display().to_string(),
            "-out",
            &output.display().to_string(),
            "-inkey",
            &public.display().to_string(),
            "-keyform",
            "DER",
            "-pubin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ]);
    };
    match algorithm {
        AlgorithmSpec::RsaesOaepSha256 => oaep(&plain, &out),
        AlgorithmSpec::RsaAesKeyWrapSha256 => {
            // An ephemeral AES-256 key under RSA-OAEP, then the material under
            // AES key wrap with padding (RFC 5649), concatenated.
            let aes_key = random_bytes(32);
            let aes_file = dir.join("aes-key.bin");
            std::fs::write(&aes_file, &aes_key).expect("write aes key");
            let wrapped_aes = dir.join("wrapped-aes-key.bin");
            oaep(&aes_file, &wrapped_aes);
            let wrapped_material = dir.join("wrapped-material.bin");
            openssl(&[
                "enc",
                "-id-aes256-wrap-pad",
                "-K",
                &hex::encode(&aes_key),
                "-iv",
                "A65959A6",
                "-in",
                &plain.display().to_string(),
                "-out",
                &wrapped_material.display().to_string(),
            ]);
            let mut joined = std::fs::read(&wrapped_aes).expect("read");
            joined.extend(std::fs::read(&wrapped_material).expect("read"));
            std::fs::write(&out, joined).expect("write");
        }
        other => panic!("no openssl recipe for {other:?}"),
    }
    std::fs::read(&out).expect("read encrypted material")
}

async fn import(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    token: &[u8],
    encrypted: &[u8],
    valid_to: Option<i64>,
) -> Result<
    aws_sdk_kms::operation::import_key_material::ImportKeyMaterialOutput,
    aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError>,
> {
    let request = client
        .import_key_material()
        .key_id(key_id)
        .import_token(Blob::new(token.to_vec()))
        .encrypted_key_material(Blob::new(encrypted.to_vec()));
    let request = match valid_to {
        Some(t) => request
            .expiration_model(ExpirationModelType::KeyMaterialExpires)
            .valid_to(DateTime::from_secs(t)),
        None => request.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
    };
    request.send().await
}

async fn state(client: &aws_sdk_kms::Client, key_id: &str) -> aws_sdk_kms::types::KeyMetadata {
    must("DescribeKey", client.describe_key().key_id(key_id).send().await)
        .key_metadata()
        .expect("metadata")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_revoke_reimport_and_expire_with_aws_sdk_and_openssl() {
    let work = tempfile::tempdir().expect("temp dir");
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let client = kw.client();
    let key_id = create_external(&client).await;
    let material = random_bytes(32);

    // Import (RSAES_OAEP_SHA_256), then use the key.
    let p = parameters(&client, &key_id, AlgorithmSpec::RsaesOaepSha256).await;
    let encrypted = wrap_with_openssl(work.path(), &p.public_key, &material, &AlgorithmSpec::RsaesOaepSha256);
    must(
        "ImportKeyMaterial",
        import(&client, &key_id, &p.token, &encrypted, None).await,
    );
    let meta = state(&client, &key_id).await;
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(
        meta.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialDoesNotExpire)
    );
    let plaintext = random_bytes(100);
    let ciphertext = encrypt(&client, &key_id, &plaintext, None).await;
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);

    // The token is single-use.
    let r = import(&client, &key_id, &p.token, &encrypted, None).await;
    expect_error(
        "ImportKeyMaterial with a spent token",
        r,
        400,
        "InvalidImportTokenException",
    );

    // Revocation: nothing decrypts any more.
    must(
        "DeleteImportedKeyMaterial",
        client.delete_imported_key_material().key_id(&key_id).send().await,
    );
    assert_eq!(
        state(&client, &key_id).await.key_state(),
        Some(&KeyState::PendingImport)
    );
    let r = client
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext.clone()))
        .send()
        .await;
    expect_error(
        "Decrypt after DeleteImportedKeyMaterial",
        r,
        400,
        "KMSInvalidStateException",
    );

    // Different material is refused.
    let p = parameters(&client, &key_id, AlgorithmSpec::RsaesOaepSha256).await;
    let other = wrap_with_openssl(
        work.path(),
        &p.public_key,
        &random_bytes(32),
        &AlgorithmSpec::RsaesOaepSha256,
    );
    let r = import(&client, &key_id, &p.token, &other, None).await;
    expect_error(
        "ImportKeyMaterial of other material",
        r,
        400,
        "IncorrectKeyMaterialException",
    );

    // The same material again (RSA_AES_KEY_WRAP_SHA_256 this time), expiring
    // in an hour: the old ciphertext decrypts again.
    let p = parameters(&client, &key_id, AlgorithmSpec::RsaAesKeyWrapSha256).await;
    let encrypted = wrap_with_openssl(
        work.path(),
        &p.public_key,
        &material,
        &AlgorithmSpec::RsaAesKeyWrapSha256,
    );
    let valid_to = epoch_secs(kw.now()) + 3600;
    must(
        "ImportKeyMaterial again",
        import(&client, &key_id, &p.token, &encrypted, Some(valid_to)).await,
    );
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, plaintext);
    let meta = state(&client, &key_id).await;
    assert_eq!(meta.expiration_model(), Some(&ExpirationModelType::KeyMaterialExpires));
    assert_eq!(meta.valid_to().map(|t| t.secs()), Some(valid_to));

    // Parameters for later, while they are fresh.
    let late = parameters(&client, &key_id, AlgorithmSpec::RsaesOaepSha256).await;
    let late_encrypted = wrap_with_openssl(
        work.path(),
        &late.public_key,
        &material,
        &AlgorithmSpec::RsaesOaepSha256,
    );
    kw.stop();
    drop(kw);

    // Two hours later the material has expired: the key waits for it again.
    let mut kw = sb.start_with_clock_offset(2 * 3600).await;
    let client = kw.client();
    let meta = state(&client, &key_id).await;
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert_eq!(meta.valid_to(), None);
    let r = client
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext.clone()))
        .send()
        .await;
    expect_error("Decrypt after ValidTo", r, 400, "KMSInvalidStateException");
    kw.stop();
    drop(kw);

    // A day later the import parameters have expired too.
    let mut kw = sb.start_with_clock_offset(25 * 3600).await;
    let client = kw.client();
    let r = import(&client, &key_id, &late.token, &late_encrypted, None).await;
    expect_error(
        "ImportKeyMaterial with an expired token",
        r,
        400,
        "ExpiredImportTokenException",
    );

    // Every step is in the audit log with the material's fingerprint (the
    // same one throughout), never the material.
    let audit = sdk(&kw, &kw.creds).with_clock_offset(kw.clock_offset);
    let chain = audit.fetch_audit_chain().await.expect("audit chain");
    chain.verify_with(&chain.audit_public_key).expect("the chain verifies");
    let arn = Keyward::key_arn(&key_id);
    let events: Vec<(&str, &str)> = chain
        .records
        .iter()
        .filter(|r| r.key_arn == arn && r.decision == "Allow" && r.reason.contains("fingerprint"))
        .map(|r| (r.operation.as_str(), r.reason.as_str()))
        .collect();
    let operations: Vec<&str> = events.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        operations,
        [
            "TrentService.ImportKeyMaterial",
            "TrentService.DeleteImportedKeyMaterial",
            "TrentService.ImportKeyMaterial",
            "Keyward.DeleteExpiredKeyMaterial",
        ],
        "{events:#?}"
    );
    let fingerprint = |reason: &str| reason.rsplit(' ').next().unwrap_or_default().to_owned();
    let first = fingerprint(events[0].1);
    assert_eq!(first.len(), 64, "{events:#?}");
    assert!(
        events.iter().all(|(_, reason)| fingerprint(reason) == first),
        "{events:#?}"
    );
    let material_hex = hex::encode(&material);
    assert!(chain.records.iter().all(|r| !r.reason.contains(&material_hex)));
    kw.stop();
    drop(kw);

    // Neither the material nor the import tokens are on disk or in the logs.
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("material", material.clone()),
        ("material (hex)", material_hex.into_bytes()),
        ("material (base64)", b64(&material).into_bytes()),
        ("import token", late.token.clone()),
        ("import token (base64)", b64(&late.token).into_bytes()),
    ];
    let mut files = files_under(&sb.data_dir());
    files.extend(sb.log_files());
    assert!(!files.is_empty());
    for file in files {
        let content = std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for (what, needle) in &needles {
            assert!(
                !content.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                file.display()
            );
        }
    }
}

/// The keyward-sdk flow: the enclave's attestation binds the wrapping key
/// GetParametersForImport returned, and nothing is sent unless it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_imports_only_to_an_attested_wrapping_key() {
    let pcr0 = Sha384::digest(b"keyward byok test image").to_vec();
    assert_ne!(pcr0, default_pcrs()[&0]);
    let mut sb = Sandbox::new();
    sb.extra_args.push("--mock-pcr".into());
    sb.extra_args.push(format!("0={}", hex::encode(&pcr0)));
    let mut kw = sb.start().await;
    let client = kw.client();
    let keyward = sdk(&kw, &kw.creds);
    let root = kw.data_dir.join("mock-attestation").join("root.crt.pem");
    let anchor = TrustAnchor::from_pem(&std::fs::read_to_string(&root).expect("mock root")).expect("anchor");
    let expected = BTreeMap::from([(0u8, pcr0.clone())]);

    // The document binds exactly the returned wrapping key, for this key.
    let key_id = create_external(&client).await;
    let arn = Keyward::key_arn(&key_id);
    let p = keyward
        .get_parameters_for_import(&key_id, "RSAES_OAEP_SHA_256", "RSA_3072")
        .await
        .expect("parameters");
    assert_eq!(p.key_arn, arn);
    let nonce = random_bytes(32);
    let document = keyward
        .get_import_attestation_document(&key_id, &nonce)
        .await
        .expect("document");
    verify_import_key(&document, anchor.clone(), &nonce, &expected, &p.public_key, &arn).expect("binds the key");
    let other_key = keyward
        .get_parameters_for_import(&create_external(&client).await, "RSAES_OAEP_SHA_256", "RSA_2048")
        .await
        .expect("other parameters");
    for (what, result) in [
        (
            "another wrapping key",
            verify_import_key(
                &document,
                anchor.clone(),
                &nonce,
                &expected,
                &other_key.public_key,
                &arn,
            ),
        ),
        (
            "another key ARN",
            verify_import_key(
                &document,
                anchor.clone(),
                &nonce,
                &expected,
                &p.public_key,
                &other_key.key_arn,
            ),
        ),
    ] {
        assert!(
            matches!(result, Err(AttestationError::Unbound(_))),
            "{what}: {result:?}"
        );
    }
    let wrong_pcr = BTreeMap::from([(0u8, default_pcrs()[&0].clone())]);
    let r = verify_import_key(&document, anchor.clone(), &nonce, &wrong_pcr, &p.public_key, &arn);
    assert!(matches!(r, Err(AttestationError::Document(_))), "wrong PCR0: {r:?}");
    let r = verify_import_key(
        &document,
        anchor.clone(),
        &random_bytes(32),
        &expected,
        &p.public_key,
        &arn,
    );
    assert!(matches!(r, Err(AttestationError::Document(_))), "wrong nonce: {r:?}");
    let r = verify_import_key(
        &document,
        TrustAnchor::aws_nitro_root().expect("aws root"),
        &nonce,
        &expected,
        &p.public_key,
        &arn,
    );
    assert!(matches!(r, Err(AttestationError::Document(_))), "AWS root: {r:?}");

    // The manual path works with those parameters.
    let material = random_bytes(32);
    keyward
        .import_key_material(
            &key_id,
            &p.import_token,
            &wrap_key_material(&p.public_key, &material).expect("wraps"),
            Expiry::Never,
        )
        .await
        .expect("ImportKeyMaterial");
    let ciphertext = encrypt(&client, &key_id, b"manual", None).await;
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, b"manual");

    // A wrong expectation stops the whole flow before anything is sent.
    let key_id = create_external(&client).await;
    let r = keyward
        .import_key(&key_id, &material, anchor.clone(), &wrong_pcr, Expiry::Never)
        .await;
    assert!(
        matches!(r, Err(ImportError::Attestation(AttestationError::Document(_)))),
        "{r:?}"
    );
    assert_eq!(
        state(&client, &key_id).await.key_state(),
        Some(&KeyState::PendingImport)
    );
    let arn = keyward
        .import_key(&key_id, &material, anchor.clone(), &expected, Expiry::Never)
        .await
        .expect("the whole flow");
    assert_eq!(arn, Keyward::key_arn(&key_id));
    let ciphertext = encrypt(&client, &key_id, b"flow", None).await;
    assert_eq!(decrypt(&client, None, &ciphertext, None).await, b"flow");

    // kmsctl key import, as a user runs it.
    let key_id = create_external(&client).await;
    let material_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(material_file.path(), random_bytes(32)).expect("write material");
    let run = |pcr: &[u8]| {
        Command::new(crate::audit::kmsctl_path())
            .args(["--endpoint", &kw.url, "key", "import", &key_id])
            .arg("--ca-bundle")
            .arg(kw.data_dir.join("tls").join("ca.pem"))
            .arg(material_file.path())
            .arg("--expected-pcr")
            .arg(format!("0={}", hex::encode(pcr)))
            .arg("--attestation-root")
            .arg(&root)
            .env("AWS_ACCESS_KEY_ID", &kw.creds.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &kw.creds.secret)
            .output()
            .expect("run kmsctl")
    };
    let refused = run(&default_pcrs()[&0]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        state(&client, &key_id).await.key_state(),
        Some(&KeyState::PendingImport)
    );
    let imported = run(&pcr0);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(String::from_utf8_lossy(&imported.stdout).contains(&Keyward::key_arn(&key_id)));
    assert_eq!(state(&client, &key_id).await.key_state(), Some(&KeyState::Enabled));
    kw.stop();
}
