//! BYOK at enclave level, the customer side done with RustCrypto `rsa`
//! (public-key encryption only): the whole AWS flow, every refusal, expiry
//! by the sweep, and what reaches the host.

use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use serde_json::{Value, json};
use time::Duration;

use super::super::tests::{TENANT, aws_type, b64, ctx, enclave, unb64};
use super::super::{Ctx, crypto, keys, lifecycle, rotation, tags};
use crate::keys::import::{ImportParameters, NAMESPACE};
use crate::keys::record::{self, KeyRecord};
use crate::store::{MemoryStore, Records};

async fn create_external(ctx: &Ctx<'_>) -> String {
    let created = keys::create_key(ctx, json!({ "Origin": "EXTERNAL", "Description": "byok" }))
        .await
        .expect("created");
    assert_eq!(created["KeyMetadata"]["KeyState"], "PendingImport");
    assert_eq!(created["KeyMetadata"]["Origin"], "EXTERNAL");
    assert_eq!(created["KeyMetadata"]["Enabled"], false);
    created["KeyMetadata"]["KeyId"].as_str().expect("id").to_owned()
}

/// GetParametersForImport, then the material wrapped to the public key: (token, encrypted).
async fn wrap_for(ctx: &Ctx<'_>, key_id: &str, material: &[u8]) -> (String, String) {
    let p = super::get_parameters_for_import(
        ctx,
        json!({ "KeyId": key_id, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048" }),
    )
    .await
    .expect("parameters");
    let valid_to = p["ParametersValidTo"].as_i64().expect("valid to");
    assert_eq!(valid_to, ctx.now.unix_timestamp() + 24 * 3600);
    let public = RsaPublicKey::from_public_key_der(&unb64(&p, "PublicKey")).expect("SPKI");
    let encrypted = public
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha2::Sha256>(), material)
        .expect("wraps");
    (p["ImportToken"].as_str().expect("token").to_owned(), b64(&encrypted))
}

async fn import(
    ctx: &Ctx<'_>,
    key_id: &str,
    token: &str,
    encrypted: &str,
    expiry: Value,
) -> Result<Value, super::KmsError> {
    let mut body = json!({ "KeyId": key_id, "ImportToken": token, "EncryptedKeyMaterial": encrypted });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, expiry) {
        b.extend(e);
    }
    super::import_key_material(ctx, body).await
}

fn never() -> Value {
    json!({ "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE" })
}

fn expires(valid_to: i64) -> Value {
    json!({ "ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": valid_to })
}

async fn describe(ctx: &Ctx<'_>, key_id: &str) -> Value {
    keys::describe_key(ctx, json!({ "KeyId": key_id }))
        .await
        .expect("describe")["KeyMetadata"]
        .clone()
}

async fn decrypt(ctx: &Ctx<'_>, blob: &str) -> Result<Value, super::KmsError> {
    crypto::decrypt(ctx, json!({ "CiphertextBlob": blob })).await
}

#[tokio::test]
async fn import_use_delete_and_reimport_only_the_same_material() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let key_id = create_external(&ctx).await;
    assert_eq!(
        aws_type(crypto::encrypt(&ctx, json!({ "KeyId": key_id, "Plaintext": b64(b"x") })).await),
        "KMSInvalidStateException"
    );
    let material = [0x11u8; 32];
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    import(&ctx, &key_id, &token, &encrypted, never())
        .await
        .expect("imported");
    let meta = describe(&ctx, &key_id).await;
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["ExpirationModel"], "KEY_MATERIAL_DOES_NOT_EXPIRE");
    assert!(meta.get("ValidTo").is_none());

    // The token was single-use.
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "InvalidImportTokenException"
    );

    let sealed = crypto::encrypt(
        &ctx,
        json!({ "KeyId": key_id, "Plaintext": b64(b"under imported material") }),
    )
    .await
    .expect("encrypts");
    let blob = sealed["CiphertextBlob"].as_str().expect("blob").to_owned();
    assert_eq!(
        unb64(&decrypt(&ctx, &blob).await.expect("decrypts"), "Plaintext"),
        b"under imported material"
    );

    super::delete_imported_key_material(&ctx, json!({ "KeyId": key_id }))
        .await
        .expect("deleted");
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "PendingImport");
    assert_eq!(aws_type(decrypt(&ctx, &blob).await), "KMSInvalidStateException");

    // Different material: refused, the key stays without material.
    let (token, encrypted) = wrap_for(&ctx, &key_id, &[0x22; 32]).await;
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "IncorrectKeyMaterialException"
    );
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "PendingImport");

    // The same material again: old ciphertexts decrypt.
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    import(&ctx, &key_id, &token, &encrypted, never())
        .await
        .expect("re-imported");
    assert_eq!(
        unb64(&decrypt(&ctx, &blob).await.expect("decrypts"), "Plaintext"),
        b"under imported material"
    );

    // Re-importing the same material into an enabled key only changes its expiry.
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    let valid_to = ctx.now.unix_timestamp() + 3600;
    import(&ctx, &key_id, &token, &encrypted, expires(valid_to))
        .await
        .expect("re-imported");
    let meta = describe(&ctx, &key_id).await;
    assert_eq!(meta["ExpirationModel"], "KEY_MATERIAL_EXPIRES");
    assert_eq!(meta["ValidTo"], valid_to);
}

#[tokio::test]
async fn refusals_are_aws_shaped() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let mut ctx = ctx(&enclave, &store, TENANT).await;
    let key_id = create_external(&ctx).await;
    let params = |alg: &str, spec: &str| json!({ "KeyId": key_id, "WrappingAlgorithm": alg, "WrappingKeySpec": spec });
    for (alg, spec) in [
        ("RSAES_PKCS1_V1_5", "RSA_2048"),
        ("RSAES_OAEP_SHA_256", "RSA_1024"),
        ("RSAES_OAEP_SHA_256", "SM2"),
    ] {
        assert_eq!(
            aws_type(super::get_parameters_for_import(&ctx, params(alg, spec)).await),
            "ValidationException"
        );
    }
    // Not an EXTERNAL key.
    let (aws_key, _) = super::super::tests::create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    assert_eq!(
        aws_type(
            super::get_parameters_for_import(
                &ctx,
                json!({ "KeyId": aws_key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048" })
            )
            .await
        ),
        "UnsupportedOperationException"
    );
    assert_eq!(
        aws_type(super::delete_imported_key_material(&ctx, json!({ "KeyId": aws_key })).await),
        "UnsupportedOperationException"
    );
    // Only symmetric material can be imported.
    assert_eq!(
        aws_type(keys::create_key(&ctx, json!({ "Origin": "EXTERNAL", "KeySpec": "ECC_NIST_P256" })).await),
        "UnsupportedOperationException"
    );

    let material = [0x33u8; 32];
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    // Bad expiry settings are refused before the token is spent.
    for expiry in [
        json!({}),
        json!({ "ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": ctx.now.unix_timestamp() - 1 }),
        json!({ "ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": ctx.now.unix_timestamp() + 366 * 86_400 }),
        json!({ "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "ValidTo": ctx.now.unix_timestamp() + 60 }),
        json!({ "ExpirationModel": "SOMETIMES" }),
    ] {
        assert_eq!(
            aws_type(import(&ctx, &key_id, &token, &encrypted, expiry).await),
            "ValidationException"
        );
    }
    // A token that is not this key's.
    assert_eq!(
        aws_type(import(&ctx, &key_id, &b64(&[0; 32]), &encrypted, never()).await),
        "InvalidImportTokenException"
    );
    // Garbage instead of wrapped material: one answer, and the token is spent.
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &b64(&[7; 256]), never()).await),
        "InvalidCiphertextException"
    );
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "InvalidImportTokenException"
    );
    // Material of the wrong size.
    let (token, encrypted) = wrap_for(&ctx, &key_id, &[1; 16]).await;
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "IncorrectKeyMaterialException"
    );
    // A newer GetParametersForImport revokes the previous token.
    let (old_token, old_encrypted) = wrap_for(&ctx, &key_id, &material).await;
    let (_new_token, _) = wrap_for(&ctx, &key_id, &material).await;
    assert_eq!(
        aws_type(import(&ctx, &key_id, &old_token, &old_encrypted, never()).await),
        "InvalidImportTokenException"
    );
    // Parameters expire after 24 hours.
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    ctx.now += Duration::hours(24);
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "ExpiredImportTokenException"
    );
}

#[tokio::test]
async fn no_attestation_without_parameters_and_nothing_while_pending_deletion() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let key_id = create_external(&ctx).await;
    assert_eq!(
        aws_type(
            super::super::attestation_ops::get_attestation_document(
                &ctx,
                json!({ "KeyId": key_id, "Nonce": b64(b"n") })
            )
            .await
        ),
        "KMSInvalidStateException"
    );
    let (token, encrypted) = wrap_for(&ctx, &key_id, &[0x77; 32]).await;
    lifecycle::schedule_key_deletion(&ctx, json!({ "KeyId": key_id, "PendingWindowInDays": 7 }))
        .await
        .expect("scheduled");
    assert_eq!(
        aws_type(import(&ctx, &key_id, &token, &encrypted, never()).await),
        "KMSInvalidStateException"
    );
    assert_eq!(
        aws_type(super::delete_imported_key_material(&ctx, json!({ "KeyId": key_id })).await),
        "KMSInvalidStateException"
    );
    // Cancelling the deletion of a key without material leaves it waiting for material.
    lifecycle::cancel_key_deletion(&ctx, json!({ "KeyId": key_id }))
        .await
        .expect("cancelled");
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "PendingImport");
    import(&ctx, &key_id, &token, &encrypted, never())
        .await
        .expect("imports after all");
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "Enabled");
}

#[tokio::test]
async fn the_sweep_expires_material_and_import_parameters() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let key_id = create_external(&ctx).await;
    let (token, encrypted) = wrap_for(&ctx, &key_id, &[0x44; 32]).await;
    let valid_to = ctx.now.unix_timestamp() + 3600;
    import(&ctx, &key_id, &token, &encrypted, expires(valid_to))
        .await
        .expect("imported");
    // Outstanding parameters of another key.
    let other = create_external(&ctx).await;
    let (other_token, other_encrypted) = wrap_for(&ctx, &other, &[0x55; 32]).await;
    let idle = create_external(&ctx).await;
    let _ = wrap_for(&ctx, &idle, &[0x66; 32]).await;

    let sweep = |now: i64| {
        let records = Records::new(&*store, &ctx.keyring.sealer);
        let (hierarchy, locks) = (&ctx.keyring.hierarchy, &enclave.locks);
        async move {
            let mut events = Vec::new();
            crate::keystore::due::sweep(&records, hierarchy, locks, now, &mut events)
                .await
                .expect("sweep");
            events
        }
    };
    // (records, of which still holding a private key)
    let parameters = || async {
        let list: Vec<(String, ImportParameters)> = ctx.records.list(NAMESPACE, "", None, 10).await.expect("list");
        (list.len(), list.iter().filter(|(_, p)| p.private_key.is_some()).count())
    };
    assert!(sweep(valid_to - 1).await.is_empty());
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "Enabled");
    assert_eq!(parameters().await, (2, 2));

    let events = sweep(valid_to).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].operation, "Keyward.DeleteExpiredKeyMaterial");
    assert!(events[0].key_arn.ends_with(&key_id));
    assert!(events[0].reason.starts_with("key material expired; fingerprint "));
    let rec: KeyRecord = ctx
        .records
        .get(record::NAMESPACE, &format!("{TENANT}/{key_id}"))
        .await
        .expect("read")
        .expect("exists");
    assert!(rec.versions.is_empty(), "the material is gone");
    assert_eq!(describe(&ctx, &key_id).await["KeyState"], "PendingImport");
    assert_eq!(parameters().await, (2, 2), "parameters live 24 hours");

    let day = 24 * 3600;
    assert!(sweep(ctx.now.unix_timestamp() + day).await.is_empty());
    assert_eq!(parameters().await, (2, 0), "expired wrapping keys are deleted");
    // A late import hears that its token expired.
    let mut later = super::super::tests::ctx(&enclave, &store, TENANT).await;
    later.now = ctx.now + Duration::days(1);
    assert_eq!(
        aws_type(import(&later, &other, &other_token, &other_encrypted, never()).await),
        "ExpiredImportTokenException"
    );
    assert_eq!(parameters().await, (1, 0), "the late import spent its record");
    sweep(ctx.now.unix_timestamp() + 2 * day).await;
    assert_eq!(
        parameters().await,
        (0, 0),
        "and the rest of the record a lifetime later"
    );
}

#[tokio::test]
async fn nothing_secret_reaches_the_host() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let ctx = ctx(&enclave, &store, TENANT).await;
    let key_id = create_external(&ctx).await;
    let material = [0x5au8, 0xc3, 0x17, 0x99].repeat(8);
    let (token, encrypted) = wrap_for(&ctx, &key_id, &material).await;
    let token_bytes = unb64(&json!({ "t": token }), "t");
    import(&ctx, &key_id, &token, &encrypted, never())
        .await
        .expect("imported");
    for value in store.all_values() {
        for secret in [&material[..], &token_bytes[..]] {
            assert!(!value.windows(secret.len()).any(|w| w == secret));
        }
    }
}

/// Regression: an operation that holds a key's lock (tagging, rotation
/// settings, import…) on a key with a date due (here an automatic rotation)
/// took the same non-reentrant lock again and never answered.
#[tokio::test]
async fn changing_a_key_with_something_due_does_not_deadlock() {
    let enclave = enclave();
    let store = MemoryStore::new();
    let mut ctx = ctx(&enclave, &store, TENANT).await;
    let (key_id, _) = super::super::tests::create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    rotation::enable_key_rotation(&ctx, json!({ "KeyId": key_id, "RotationPeriodInDays": 90 }))
        .await
        .expect("rotation on");
    ctx.now += Duration::days(91);
    let tagged = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tags::tag_resource(
            &ctx,
            json!({ "KeyId": key_id, "Tags": [{ "TagKey": "k", "TagValue": "v" }] }),
        ),
    )
    .await
    .expect("answers instead of waiting for its own lock");
    tagged.expect("tagged");
    let rotations = rotation::list_key_rotations(&ctx, json!({ "KeyId": key_id }))
        .await
        .expect("rotations");
    assert_eq!(rotations["Rotations"].as_array().map(Vec::len), Some(1));
}
