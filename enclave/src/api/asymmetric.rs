//! ECC_NIST_P256 keys: Sign, Verify, GetPublicKey (SIGN_VERIFY) and
//! DeriveSharedSecret (KEY_AGREEMENT).
//!
//! The private scalar is unwrapped for the one operation that needs it and
//! held only in zeroizing types (`SecretBytes`, `SigningKey`).

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{self, Access, b64, blob, length, parse, required};
use crate::context::Ctx;
use crate::keys::record::KeyRecord;
use crate::keys::spec::{KeySpec, KeyUsage};

/// AWS KMS: a signature is at most 6144 bytes.
pub const MAX_SIGNATURE: usize = 6144;
/// AWS KMS: a peer public key (DER SubjectPublicKeyInfo) is at most 8192 bytes.
pub const MAX_PUBLIC_KEY: usize = 8192;

const ECDSA_SHA_256: &str = "ECDSA_SHA_256";
const ECDH: &str = "ECDH";
/// SHA-256 output: the only digest length ECDSA_SHA_256 accepts.
const SHA_256_LEN: usize = 32;

/// Every signing algorithm AWS KMS knows: a known one the key can't use is
/// `InvalidKeyUsageException`, an unknown one `ValidationException`.
const AWS_SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
];

/// How Sign and Verify treat `Message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageType {
    /// The message itself; hashed with SHA-256.
    Raw,
    /// A SHA-256 digest, signed as is.
    Digest,
    /// ML-DSA's external mu: known to AWS, not usable with ECDSA.
    ExternalMu,
}

fn message_type(value: Option<&str>) -> Result<MessageType, KmsError> {
    match value {
        None | Some("RAW") => Ok(MessageType::Raw),
        Some("DIGEST") => Ok(MessageType::Digest),
        Some("EXTERNAL_MU") => Ok(MessageType::ExternalMu),
        Some(_) => Err(KmsError::validation(
            "messageType",
            "Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]",
        )),
    }
}

/// A signing algorithm AWS knows (checked before the key is looked up).
fn signing_algorithm(value: Option<String>) -> Result<String, KmsError> {
    let algorithm = required("signingAlgorithm", value)?;
    if !AWS_SIGNING_ALGORITHMS.contains(&algorithm.as_str()) {
        return Err(KmsError::validation(
            "signingAlgorithm",
            "Member must satisfy enum value set",
        ));
    }
    Ok(algorithm)
}

/// A P-256 key usable for `usage`.
async fn usable_key(ctx: &Ctx<'_>, key_id: Option<String>, usage: KeyUsage) -> Result<KeyRecord, KmsError> {
    let rec = params::resolve_key(ctx, &required("keyId", key_id)?).await?;
    params::require_usable(&rec, usage)?;
    if rec.key_spec != KeySpec::EccNistP256 {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} has key spec {}, which does not support {usage}.",
            rec.arn, rec.key_spec
        )));
    }
    Ok(rec)
}

/// The algorithm and message type a signing key can use with this message.
fn check_signing(rec: &KeyRecord, algorithm: &str, kind: MessageType, message: &[u8]) -> Result<(), KmsError> {
    if algorithm != ECDSA_SHA_256 {
        return Err(KmsError::InvalidKeyUsage(format!(
            "Signing algorithm {algorithm} is not compatible with {} (key spec {}).",
            rec.arn, rec.key_spec
        )));
    }
    match kind {
        MessageType::Raw => Ok(()),
        MessageType::Digest if message.len() == SHA_256_LEN => Ok(()),
        MessageType::Digest => Err(KmsError::Validation(format!(
            "Digest is invalid length for algorithm {ECDSA_SHA_256}."
        ))),
        MessageType::ExternalMu => Err(KmsError::Validation(
            "The EXTERNAL_MU message type is supported only for ML_DSA key specs.".into(),
        )),
    }
}

/// The key's private half, unwrapped from its only version.
fn private_key(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<SigningKey, KmsError> {
    let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
    let material = rec.material(&kek, rec.current_version()).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        KmsError::Internal
    })?;
    SigningKey::from_slice(material.expose()).map_err(|_| {
        tracing::error!("key material is not a P-256 private key");
        KmsError::Internal
    })
}

/// The key's public half as DER SubjectPublicKeyInfo.
fn public_key_der(key: &VerifyingKey) -> Result<Vec<u8>, KmsError> {
    key.to_public_key_der().map(|der| der.into_vec()).map_err(|_| {
        tracing::error!("public key does not encode");
        KmsError::Internal
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignRequest {
    key_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    signing_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    /// Accepted for compatibility; not honoured (the operation runs).
    #[serde(rename = "DryRun")]
    _dry_run: Option<bool>,
}

pub async fn sign(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: SignRequest = parse(body)?;
    let message = params::message(req.message)?;
    let kind = message_type(req.message_type.as_deref())?;
    let algorithm = signing_algorithm(req.signing_algorithm)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let rec = usable_key(ctx, req.key_id, KeyUsage::SignVerify).await?;
    check_signing(&rec, &algorithm, kind, &message)?;
    let key = private_key(ctx, &rec)?;
    let signature: DerSignature = match kind {
        MessageType::Digest => key.sign_prehash(&message).map_err(|_| KmsError::Internal)?,
        // EXTERNAL_MU was refused by `check_signing`.
        MessageType::Raw | MessageType::ExternalMu => key.try_sign(&message).map_err(|_| KmsError::Internal)?,
    };
    Ok(json!({
        "KeyId": rec.arn,
        "Signature": b64(signature.as_bytes()),
        "SigningAlgorithm": algorithm,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyRequest {
    key_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    signature: Option<String>,
    signing_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    /// Accepted for compatibility; not honoured (the operation runs).
    #[serde(rename = "DryRun")]
    _dry_run: Option<bool>,
}

fn invalid_signature() -> KmsError {
    KmsError::InvalidSignatureValue("The signature is not valid for this message, key and signing algorithm.".into())
}

/// Checks an ECDSA signature; AWS never answers `SignatureValid: false`, an
/// invalid or malformed signature is `KMSInvalidSignatureException`.
pub async fn verify(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: VerifyRequest = parse(body)?;
    let message = params::message(req.message)?;
    let kind = message_type(req.message_type.as_deref())?;
    let signature = blob("signature", &required("signature", req.signature)?)?;
    length("signature", signature.len(), 1, MAX_SIGNATURE)?;
    let algorithm = signing_algorithm(req.signing_algorithm)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let rec = usable_key(ctx, req.key_id, KeyUsage::SignVerify).await?;
    check_signing(&rec, &algorithm, kind, &message)?;
    let key = *private_key(ctx, &rec)?.verifying_key();
    let signature = Signature::from_der(&signature).map_err(|_| invalid_signature())?;
    let verified = match kind {
        MessageType::Digest => key.verify_prehash(&message, &signature),
        MessageType::Raw | MessageType::ExternalMu => key.verify(&message, &signature),
    };
    verified.map_err(|_| invalid_signature())?;
    Ok(json!({
        "KeyId": rec.arn,
        "SignatureValid": true,
        "SigningAlgorithm": algorithm,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetPublicKeyRequest {
    key_id: Option<String>,
    grant_tokens: Option<Vec<String>>,
}

pub async fn get_public_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetPublicKeyRequest = parse(body)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let rec = params::resolve_key(ctx, &required("keyId", req.key_id)?).await?;
    params::check_state(&rec, Access::Crypto)?;
    if rec.key_spec != KeySpec::EccNistP256 {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is not an asymmetric key; GetPublicKey is supported only for asymmetric keys.",
            rec.arn
        )));
    }
    let public = public_key_der(private_key(ctx, &rec)?.verifying_key())?;
    let mut out = json!({
        "KeyId": rec.arn,
        "PublicKey": b64(&public),
        "CustomerMasterKeySpec": rec.key_spec,
        "KeySpec": rec.key_spec,
        "KeyUsage": rec.key_usage,
    });
    match rec.key_usage {
        KeyUsage::SignVerify => out["SigningAlgorithms"] = json!([ECDSA_SHA_256]),
        KeyUsage::KeyAgreement => out["KeyAgreementAlgorithms"] = json!([ECDH]),
        _ => {}
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeriveSharedSecretRequest {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<String>,
    grant_tokens: Option<Vec<String>>,
    recipient: Option<Value>,
    /// Accepted for compatibility; not honoured (the operation runs).
    #[serde(rename = "DryRun")]
    _dry_run: Option<bool>,
}

/// ECDH between the key's private half and a peer's P-256 public key; the
/// shared secret is the raw x-coordinate of the shared point, as AWS returns it.
pub async fn derive_shared_secret(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DeriveSharedSecretRequest = parse(body)?;
    if required("keyAgreementAlgorithm", req.key_agreement_algorithm)? != ECDH {
        return Err(KmsError::validation(
            "keyAgreementAlgorithm",
            "Member must satisfy enum value set: [ECDH]",
        ));
    }
    let peer = blob("publicKey", &required("publicKey", req.public_key)?)?;
    length("publicKey", peer.len(), 1, MAX_PUBLIC_KEY)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let recipient = super::recipient::verify(ctx, req.recipient)?;
    let rec = usable_key(ctx, req.key_id, KeyUsage::KeyAgreement).await?;
    super::recipient::enforce(&rec, recipient.as_ref())?;
    let peer = p256::PublicKey::from_public_key_der(&peer).map_err(|_| {
        KmsError::Validation(format!(
            "The public key must be a DER-encoded SubjectPublicKeyInfo of a point on the curve of {} ({}).",
            rec.arn,
            KeySpec::EccNistP256
        ))
    })?;
    let key = private_key(ctx, &rec)?;
    let shared = p256::ecdh::diffie_hellman(key.as_nonzero_scalar(), peer.as_affine());
    let mut out = json!({ "KeyId": rec.arn, "KeyAgreementAlgorithm": ECDH, "KeyOrigin": rec.origin });
    super::crypto::release(&mut out, "SharedSecret", shared.raw_secret_bytes(), recipient.as_ref())?;
    Ok(out)
}

#[cfg(test)]
mod tests {

    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    use super::super::error::KmsError;
    use super::super::{Ctx, lifecycle};

    use crate::store::MemoryStore;

    use super::super::tests::{TENANT, aws_type, b64, create, ctx, enclave, unb64};

    async fn sign(ctx: &Ctx<'_>, key_id: &str, message: &[u8], message_type: &str) -> Result<Value, KmsError> {
        super::sign(
            ctx,
            json!({
                "KeyId": key_id,
                "Message": b64(message),
                "MessageType": message_type,
                "SigningAlgorithm": "ECDSA_SHA_256",
            }),
        )
        .await
    }

    async fn verify(
        ctx: &Ctx<'_>,
        key_id: &str,
        message: &[u8],
        message_type: &str,
        signature: &[u8],
    ) -> Result<Value, KmsError> {
        super::verify(
            ctx,
            json!({
                "KeyId": key_id,
                "Message": b64(message),
                "MessageType": message_type,
                "Signature": b64(signature),
                "SigningAlgorithm": "ECDSA_SHA_256",
            }),
        )
        .await
    }

    async fn public_key(ctx: &Ctx<'_>, key_id: &str) -> Value {
        super::get_public_key(ctx, json!({ "KeyId": key_id }))
            .await
            .expect("public key")
    }

    #[tokio::test]
    async fn sign_verify_round_trips_raw_and_digest() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, arn) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let message = b"message to be signed";

        let signed = sign(&ctx, &key_id, message, "RAW").await.expect("signs");
        assert_eq!(signed["KeyId"], arn.as_str());
        assert_eq!(signed["SigningAlgorithm"], "ECDSA_SHA_256");
        let raw_signature = unb64(&signed, "Signature");
        let verified = verify(&ctx, &key_id, message, "RAW", &raw_signature)
            .await
            .expect("verifies");
        assert_eq!(verified["SignatureValid"], true);
        assert_eq!(verified["KeyId"], arn.as_str());
        assert_eq!(verified["SigningAlgorithm"], "ECDSA_SHA_256");

        // MessageType defaults to RAW.
        let defaulted = super::sign(
            &ctx,
            json!({ "KeyId": arn, "Message": b64(message), "SigningAlgorithm": "ECDSA_SHA_256" }),
        )
        .await
        .expect("signs");
        verify(&ctx, &key_id, message, "RAW", &unb64(&defaulted, "Signature"))
            .await
            .expect("verifies");

        // DIGEST signs the SHA-256 digest as is: it verifies as RAW over the
        // message, and a RAW signature verifies as DIGEST of the digest.
        let digest = Sha256::digest(message);
        let signed = sign(&ctx, &key_id, &digest, "DIGEST").await.expect("signs digest");
        let digest_signature = unb64(&signed, "Signature");
        verify(&ctx, &key_id, &digest, "DIGEST", &digest_signature)
            .await
            .expect("verifies digest");
        verify(&ctx, &key_id, message, "RAW", &digest_signature)
            .await
            .expect("digest signature verifies over the raw message");
        verify(&ctx, &key_id, &digest, "DIGEST", &raw_signature)
            .await
            .expect("raw signature verifies over the digest");
    }

    #[tokio::test]
    async fn signatures_verify_independently_against_get_public_key() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, arn) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;

        let public = public_key(&ctx, &key_id).await;
        assert_eq!(public["KeyId"], arn.as_str());
        assert_eq!(public["KeySpec"], "ECC_NIST_P256");
        assert_eq!(public["CustomerMasterKeySpec"], "ECC_NIST_P256");
        assert_eq!(public["KeyUsage"], "SIGN_VERIFY");
        assert_eq!(public["SigningAlgorithms"], json!(["ECDSA_SHA_256"]));
        assert!(public.get("KeyAgreementAlgorithms").is_none());
        let verifying_key = p256::ecdsa::VerifyingKey::from_public_key_der(&unb64(&public, "PublicKey"))
            .expect("PublicKey is a P-256 SubjectPublicKeyInfo");

        let message = b"independently checked";
        let signed = sign(&ctx, &key_id, message, "RAW").await.expect("signs");
        let signature = p256::ecdsa::Signature::from_der(&unb64(&signed, "Signature")).expect("DER signature");
        verifying_key
            .verify(message, &signature)
            .expect("valid ECDSA P-256/SHA-256 signature");
        assert!(verifying_key.verify(b"something else", &signature).is_err());

        let signed = sign(&ctx, &key_id, &Sha256::digest(message), "DIGEST")
            .await
            .expect("signs");
        let signature = p256::ecdsa::Signature::from_der(&unb64(&signed, "Signature")).expect("DER signature");
        verifying_key
            .verify(message, &signature)
            .expect("valid over the raw message");

        // And the other way: a signature made outside verifies inside.
        let outside = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let foreign: p256::ecdsa::DerSignature = p256::ecdsa::signature::Signer::sign(&outside, message);
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "RAW", foreign.as_bytes()).await),
            "KMSInvalidSignatureException"
        );
    }

    #[tokio::test]
    async fn invalid_signatures_are_kms_invalid_signature_exception() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let (other_id, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let message = b"the original message";
        let signature = unb64(&sign(&ctx, &key_id, message, "RAW").await.expect("signs"), "Signature");

        let tampered_message = b"the original messagE";
        assert_eq!(
            aws_type(verify(&ctx, &key_id, tampered_message, "RAW", &signature).await),
            "KMSInvalidSignatureException"
        );
        // Flip a bit inside s (the last byte of the DER encoding).
        let mut tampered = signature.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "RAW", &tampered).await),
            "KMSInvalidSignatureException"
        );
        // Malformed DER, or the signature of another key.
        for bad in [
            &b"not a DER signature"[..],
            &[0x30, 0x00],
            &signature[..signature.len() - 1],
        ] {
            assert_eq!(
                aws_type(verify(&ctx, &key_id, message, "RAW", bad).await),
                "KMSInvalidSignatureException"
            );
        }
        assert_eq!(
            aws_type(verify(&ctx, &other_id, message, "RAW", &signature).await),
            "KMSInvalidSignatureException"
        );
        // The RAW signature is not a signature of the message taken as a digest.
        let digest_sized = [7u8; 32];
        let raw_signed = unb64(
            &sign(&ctx, &key_id, &digest_sized, "RAW").await.expect("signs"),
            "Signature",
        );
        assert_eq!(
            aws_type(verify(&ctx, &key_id, &digest_sized, "DIGEST", &raw_signed).await),
            "KMSInvalidSignatureException"
        );
        // Empty and oversized signatures are request validation errors.
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "RAW", &[]).await),
            "ValidationException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &key_id, message, "RAW", &[0u8; 6145]).await),
            "ValidationException"
        );
    }

    #[tokio::test]
    async fn sign_rejects_bad_parameters_like_aws() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let with = |algorithm: Value, message: &[u8], message_type: &str| {
            json!({
                "KeyId": key_id,
                "Message": b64(message),
                "MessageType": message_type,
                "SigningAlgorithm": algorithm,
            })
        };
        let cases = [
            // Known AWS algorithms this key can't use.
            (
                with(json!("RSASSA_PSS_SHA_256"), b"m", "RAW"),
                "InvalidKeyUsageException",
            ),
            (with(json!("ECDSA_SHA_384"), b"m", "RAW"), "InvalidKeyUsageException"),
            (with(json!("ML_DSA_SHAKE_256"), b"m", "RAW"), "InvalidKeyUsageException"),
            // Unknown names, missing values, bad lengths and types.
            (with(json!("ECDSA_SHA_257"), b"m", "RAW"), "ValidationException"),
            (with(Value::Null, b"m", "RAW"), "ValidationException"),
            (with(json!("ECDSA_SHA_256"), b"m", "HASHED"), "ValidationException"),
            (with(json!("ECDSA_SHA_256"), b"", "RAW"), "ValidationException"),
            (with(json!("ECDSA_SHA_256"), &[1; 4097], "RAW"), "ValidationException"),
            (with(json!("ECDSA_SHA_256"), &[1; 31], "DIGEST"), "ValidationException"),
            (with(json!("ECDSA_SHA_256"), &[1; 33], "DIGEST"), "ValidationException"),
            (
                with(json!("ECDSA_SHA_256"), &[1; 32], "EXTERNAL_MU"),
                "ValidationException",
            ),
            (with(json!(256), b"m", "RAW"), "SerializationException"),
            (
                json!({ "KeyId": key_id, "SigningAlgorithm": "ECDSA_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256" }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": key_id, "Message": "not base64!", "SigningAlgorithm": "ECDSA_SHA_256" }),
                "SerializationException",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(aws_type(super::sign(&ctx, body.clone()).await), expected, "{body}");
        }
        // The limits themselves are fine; grant tokens are accepted.
        sign(&ctx, &key_id, &[1; 4096], "RAW").await.expect("4096 bytes");
        let mut body = with(json!("ECDSA_SHA_256"), b"m", "RAW");
        body["GrantTokens"] = json!(["token"]);
        body["DryRun"] = json!(false);
        super::sign(&ctx, body.clone()).await.expect("grant tokens accepted");
        body["GrantTokens"] = json!(vec!["t"; 11]);
        assert_eq!(aws_type(super::sign(&ctx, body).await), "ValidationException");
        // An unknown key.
        assert_eq!(
            aws_type(sign(&ctx, "alias/none", b"m", "RAW").await),
            "NotFoundException"
        );
    }

    #[tokio::test]
    async fn wrong_key_usage_or_spec_is_rejected() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (symmetric, _) = create(&ctx, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
        let (hmac, _) = create(&ctx, "HMAC_256", "GENERATE_VERIFY_MAC").await;
        let (agreement, _) = create(&ctx, "ECC_NIST_P256", "KEY_AGREEMENT").await;
        let (signing, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let signature = unb64(&sign(&ctx, &signing, b"m", "RAW").await.expect("signs"), "Signature");
        for key_id in [&symmetric, &hmac, &agreement] {
            assert_eq!(
                aws_type(sign(&ctx, key_id, b"m", "RAW").await),
                "InvalidKeyUsageException"
            );
            assert_eq!(
                aws_type(verify(&ctx, key_id, b"m", "RAW", &signature).await),
                "InvalidKeyUsageException"
            );
        }
        // GetPublicKey is for asymmetric keys only.
        for key_id in [&symmetric, &hmac] {
            assert_eq!(
                aws_type(super::get_public_key(&ctx, json!({ "KeyId": key_id })).await),
                "UnsupportedOperationException"
            );
        }
        // DeriveSharedSecret needs KEY_AGREEMENT.
        let peer = peer_spki(&p256::SecretKey::random(&mut rand::rngs::OsRng));
        for key_id in [&symmetric, &hmac, &signing] {
            assert_eq!(
                aws_type(
                    derive(
                        &ctx,
                        json!({ "KeyId": key_id, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(&peer) })
                    )
                    .await
                ),
                "InvalidKeyUsageException"
            );
        }
    }

    #[tokio::test]
    async fn disabled_and_pending_deletion_keys_are_refused() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (signing, _) = create(&ctx, "ECC_NIST_P256", "SIGN_VERIFY").await;
        let (agreement, _) = create(&ctx, "ECC_NIST_P256", "KEY_AGREEMENT").await;
        let signature = unb64(&sign(&ctx, &signing, b"m", "RAW").await.expect("signs"), "Signature");
        let peer = b64(&peer_spki(&p256::SecretKey::random(&mut rand::rngs::OsRng)));
        let derive_body = json!({ "KeyId": agreement, "KeyAgreementAlgorithm": "ECDH", "PublicKey": peer });

        for key_id in [&signing, &agreement] {
            lifecycle::disable_key(&ctx, json!({ "KeyId": key_id }))
                .await
                .expect("disabled");
        }
        assert_eq!(aws_type(sign(&ctx, &signing, b"m", "RAW").await), "DisabledException");
        assert_eq!(
            aws_type(verify(&ctx, &signing, b"m", "RAW", &signature).await),
            "DisabledException"
        );
        assert_eq!(
            aws_type(super::get_public_key(&ctx, json!({ "KeyId": signing })).await),
            "DisabledException"
        );
        assert_eq!(aws_type(derive(&ctx, derive_body.clone()).await), "DisabledException");

        for key_id in [&signing, &agreement] {
            lifecycle::schedule_key_deletion(&ctx, json!({ "KeyId": key_id, "PendingWindowInDays": 7 }))
                .await
                .expect("scheduled");
        }
        assert_eq!(
            aws_type(sign(&ctx, &signing, b"m", "RAW").await),
            "KMSInvalidStateException"
        );
        assert_eq!(
            aws_type(verify(&ctx, &signing, b"m", "RAW", &signature).await),
            "KMSInvalidStateException"
        );
        assert_eq!(
            aws_type(super::get_public_key(&ctx, json!({ "KeyId": agreement })).await),
            "KMSInvalidStateException"
        );
        assert_eq!(aws_type(derive(&ctx, derive_body).await), "KMSInvalidStateException");
    }

    fn peer_spki(peer: &p256::SecretKey) -> Vec<u8> {
        use p256::pkcs8::EncodePublicKey as _;
        peer.public_key().to_public_key_der().expect("encodes").into_vec()
    }

    async fn derive(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
        super::derive_shared_secret(ctx, body).await
    }

    #[tokio::test]
    async fn derive_shared_secret_matches_the_peer_side_computation() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, arn) = create(&ctx, "ECC_NIST_P256", "KEY_AGREEMENT").await;

        let public = public_key(&ctx, &key_id).await;
        assert_eq!(public["KeyUsage"], "KEY_AGREEMENT");
        assert_eq!(public["KeyAgreementAlgorithms"], json!(["ECDH"]));
        assert!(public.get("SigningAlgorithms").is_none());
        let kms_public = p256::PublicKey::from_public_key_der(&unb64(&public, "PublicKey")).expect("P-256 SPKI");

        let peer = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let derived = derive(
            &ctx,
            json!({
                "KeyId": key_id,
                "KeyAgreementAlgorithm": "ECDH",
                "PublicKey": b64(&peer_spki(&peer)),
                "GrantTokens": ["token"],
            }),
        )
        .await
        .expect("derives");
        assert_eq!(derived["KeyId"], arn.as_str());
        assert_eq!(derived["KeyAgreementAlgorithm"], "ECDH");
        assert_eq!(derived["KeyOrigin"], "AWS_KMS");
        let shared = unb64(&derived, "SharedSecret");
        assert_eq!(shared.len(), 32);
        let peer_side = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), kms_public.as_affine());
        assert_eq!(shared.as_slice(), peer_side.raw_secret_bytes().as_slice());

        // Another peer, another secret; the same peer (by alias too), the same secret.
        let other = derive(
            &ctx,
            json!({
                "KeyId": key_id,
                "KeyAgreementAlgorithm": "ECDH",
                "PublicKey": b64(&peer_spki(&p256::SecretKey::random(&mut rand::rngs::OsRng))),
            }),
        )
        .await
        .expect("derives");
        assert_ne!(unb64(&other, "SharedSecret"), shared);
        let again = derive(
            &ctx,
            json!({ "KeyId": arn, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(&peer_spki(&peer)) }),
        )
        .await
        .expect("derives");
        assert_eq!(unb64(&again, "SharedSecret"), shared);
    }

    #[tokio::test]
    async fn derive_shared_secret_rejects_bad_parameters() {
        let enclave = enclave();
        let store = MemoryStore::new();
        let ctx = ctx(&enclave, &store, TENANT).await;
        let (key_id, _) = create(&ctx, "ECC_NIST_P256", "KEY_AGREEMENT").await;
        let spki = peer_spki(&p256::SecretKey::random(&mut rand::rngs::OsRng));

        // Same structure, other curve: prime256v1 (1.2.840.10045.3.1.7) → prime192v1 (…3.1.1).
        const PRIME256V1: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
        let at = spki
            .windows(PRIME256V1.len())
            .position(|w| w == PRIME256V1)
            .expect("curve OID in SPKI");
        let mut other_curve = spki.clone();
        other_curve[at + PRIME256V1.len() - 1] = 0x01;
        // A point off the curve.
        let mut off_curve = spki.clone();
        if let Some(last) = off_curve.last_mut() {
            *last ^= 1;
        }
        // The raw SEC1 point without the SPKI wrapping.
        let bare_point = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_sec1_bytes()
            .to_vec();
        for bad in [
            other_curve,
            off_curve,
            bare_point,
            b"garbage".to_vec(),
            vec![0u8; 8193],
            Vec::new(),
        ] {
            assert_eq!(
                aws_type(
                    derive(
                        &ctx,
                        json!({ "KeyId": key_id, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(&bad) })
                    )
                    .await
                ),
                "ValidationException"
            );
        }
        let cases = [
            (
                json!({ "KeyId": key_id, "KeyAgreementAlgorithm": "ECDHE", "PublicKey": b64(&spki) }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": key_id, "PublicKey": b64(&spki) }),
                "ValidationException",
            ),
            (
                json!({ "KeyId": key_id, "KeyAgreementAlgorithm": "ECDH" }),
                "ValidationException",
            ),
            (
                json!({ "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(&spki) }),
                "ValidationException",
            ),
            (
                json!({
                    "KeyId": key_id,
                    "KeyAgreementAlgorithm": "ECDH",
                    "PublicKey": b64(&spki),
                    "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "AA==" },
                }),
                "UnsupportedOperationException",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(aws_type(derive(&ctx, body.clone()).await), expected, "{body}");
        }
    }
}
