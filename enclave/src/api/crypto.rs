//! Symmetric data-plane operations: Encrypt, Decrypt, ReEncrypt,
//! GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateDataKeyPair,
//! GenerateDataKeyPairWithoutPlaintext, GenerateRandom. Requests are parsed
//! and validated here; the work is `keystore::crypto`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, b64, blob, length, parse, required};
use super::recipient;
use crate::context::Ctx;
use crate::keystore::crypto::{self as domain, ReEncryption};
use crate::keystore::recipient::Released;
use crate::secret::SecretBytes;

/// AWS KMS: Encrypt takes at most 4096 bytes of plaintext.
pub const MAX_PLAINTEXT: usize = 4096;
/// AWS KMS: data keys and random strings are 1–1024 bytes.
pub const MAX_RANDOM: i64 = 1024;

const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
const KNOWN_ALGORITHMS: &[&str] = &["SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];

fn check_algorithm(algorithm: Option<&str>) -> Result<(), KmsError> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) if KNOWN_ALGORITHMS.contains(&a) => Err(KmsError::InvalidKeyUsage(format!(
            "The encryption algorithm {a} is not compatible with a symmetric key."
        ))),
        Some(_) => Err(KmsError::validation(
            "encryptionAlgorithm",
            "Member must satisfy enum value set",
        )),
    }
}

/// Renders a typed answer as the JSON body.
pub(crate) fn render<T: Serialize>(resp: T) -> Result<Value, KmsError> {
    serde_json::to_value(resp).map_err(|e| {
        tracing::error!(error = %e, "response does not serialize");
        KmsError::Internal
    })
}

/// A released secret as the answer carries it: in the clear as the
/// operation's own field, or — for an attested recipient — only as
/// `CiphertextForRecipient`, as AWS KMS does. Flattened into responses.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Secret {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    #[serde(rename = "CiphertextForRecipient", skip_serializing_if = "Option::is_none")]
    for_recipient: Option<String>,
}

impl From<Released> for Secret {
    fn from(released: Released) -> Self {
        match released {
            Released::Plaintext(p) => Secret {
                plaintext: Some(b64(p.expose())),
                for_recipient: None,
            },
            Released::ForRecipient(cms) => Secret {
                plaintext: None,
                for_recipient: Some(b64(&cms)),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptRequest {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptResponse {
    ciphertext_blob: String,
    key_id: String,
    encryption_algorithm: &'static str,
}

pub async fn encrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: EncryptRequest = parse(body)?;
    let plaintext = SecretBytes::new(blob("plaintext", &required("plaintext", req.plaintext)?)?);
    length("plaintext", plaintext.len(), 1, MAX_PLAINTEXT)?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let context = params::context(req.encryption_context)?;
    ctx.note_encryption_context(&context);
    let key_id = required("keyId", req.key_id)?;
    let encrypted = domain::encrypt(ctx, &key_id, plaintext.expose(), &context).await?;
    render(EncryptResponse {
        ciphertext_blob: b64(&encrypted.ciphertext_blob),
        key_id: encrypted.key_arn,
        encryption_algorithm: SYMMETRIC_DEFAULT,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptRequest {
    ciphertext_blob: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    recipient: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptResponse {
    key_id: String,
    encryption_algorithm: &'static str,
    #[serde(flatten)]
    plaintext: Secret,
}

pub async fn decrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DecryptRequest = parse(body)?;
    let ciphertext = blob("ciphertextBlob", &required("ciphertextBlob", req.ciphertext_blob)?)?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let context = params::context(req.encryption_context)?;
    ctx.note_encryption_context(&context);
    let recipient = recipient::verify_for(
        ctx,
        req.recipient,
        recipient::Named::Ciphertext(&ciphertext, req.key_id.as_deref()),
    )
    .await?;
    let decrypted = domain::decrypt(ctx, &ciphertext, req.key_id.as_deref(), &context, recipient.as_ref()).await?;
    render(DecryptResponse {
        key_id: decrypted.key_arn,
        encryption_algorithm: SYMMETRIC_DEFAULT,
        plaintext: decrypted.plaintext.into(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptRequest {
    ciphertext_blob: Option<String>,
    source_encryption_context: Option<BTreeMap<String, String>>,
    source_key_id: Option<String>,
    destination_key_id: Option<String>,
    destination_encryption_context: Option<BTreeMap<String, String>>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptResponse {
    ciphertext_blob: String,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
}

/// Decrypts and re-encrypts inside the enclave; the plaintext never leaves it.
pub async fn re_encrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ReEncryptRequest = parse(body)?;
    let ciphertext = blob("ciphertextBlob", &required("ciphertextBlob", req.ciphertext_blob)?)?;
    let destination = required("destinationKeyId", req.destination_key_id)?;
    check_algorithm(req.source_encryption_algorithm.as_deref())?;
    check_algorithm(req.destination_encryption_algorithm.as_deref())?;
    let source_context = params::context(req.source_encryption_context)?;
    let destination_context = params::context(req.destination_encryption_context)?;
    ctx.note_source_encryption_context(&source_context);
    ctx.note_encryption_context(&destination_context);
    let re = ReEncryption {
        ciphertext: &ciphertext,
        source_key_id: req.source_key_id.as_deref(),
        source_context: &source_context,
        destination_key_id: &destination,
        destination_context: &destination_context,
    };
    let resealed = domain::re_encrypt(ctx, re).await?;
    render(ReEncryptResponse {
        ciphertext_blob: b64(&resealed.ciphertext_blob),
        source_key_id: resealed.source_key_arn,
        key_id: resealed.key_arn,
        source_encryption_algorithm: SYMMETRIC_DEFAULT,
        destination_encryption_algorithm: SYMMETRIC_DEFAULT,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyRequest {
    key_id: Option<String>,
    key_spec: Option<String>,
    number_of_bytes: Option<i64>,
    encryption_context: Option<BTreeMap<String, String>>,
    recipient: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyResponse {
    ciphertext_blob: String,
    key_id: String,
    #[serde(flatten)]
    plaintext: Secret,
}

fn data_key_length(key_spec: Option<&str>, number_of_bytes: Option<i64>) -> Result<usize, KmsError> {
    match (key_spec, number_of_bytes) {
        (Some(_), Some(_)) => Err(KmsError::Validation(
            "Specify either KeySpec or NumberOfBytes, not both.".into(),
        )),
        (None, None) => Err(KmsError::Validation("Specify either KeySpec or NumberOfBytes.".into())),
        (Some("AES_256"), None) => Ok(32),
        (Some("AES_128"), None) => Ok(16),
        (Some(_), None) => Err(KmsError::validation(
            "keySpec",
            "Member must satisfy enum value set: [AES_256, AES_128]",
        )),
        (None, Some(n)) => random_length(n),
    }
}

fn random_length(n: i64) -> Result<usize, KmsError> {
    if !(1..=MAX_RANDOM).contains(&n) {
        return Err(KmsError::validation(
            "numberOfBytes",
            "Member must have value between 1 and 1024 (inclusive)",
        ));
    }
    Ok(n as usize)
}

pub async fn generate_data_key(ctx: &Ctx<'_>, body: Value, with_plaintext: bool) -> Result<Value, KmsError> {
    let req: GenerateDataKeyRequest = parse(body)?;
    let len = data_key_length(req.key_spec.as_deref(), req.number_of_bytes)?;
    if !with_plaintext && req.recipient.is_some() {
        return Err(KmsError::Serialization(
            "Recipient is not a parameter of GenerateDataKeyWithoutPlaintext.".into(),
        ));
    }
    let context = params::context(req.encryption_context)?;
    ctx.note_encryption_context(&context);
    let key_id = required("keyId", req.key_id)?;
    let recipient = recipient::verify_for(ctx, req.recipient, recipient::Named::Key(&key_id)).await?;
    let data_key = domain::generate_data_key(ctx, &key_id, len, &context, recipient.as_ref(), with_plaintext).await?;
    render(GenerateDataKeyResponse {
        ciphertext_blob: b64(&data_key.ciphertext_blob),
        key_id: data_key.key_arn,
        plaintext: data_key.plaintext.map(Secret::from).unwrap_or_default(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomRequest {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<Value>,
}

pub async fn generate_random(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GenerateRandomRequest = parse(body)?;
    if req.custom_key_store_id.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Custom key stores are not supported.".into(),
        ));
    }
    let recipient = recipient::verify(ctx, req.recipient)?;
    let len = random_length(required("numberOfBytes", req.number_of_bytes)?)?;
    render(Secret::from(domain::generate_random(ctx, len, recipient.as_ref())?))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyPairRequest {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    recipient: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyPairResponse {
    private_key_ciphertext_blob: String,
    public_key: String,
    key_id: String,
    key_pair_spec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_plaintext: Option<String>,
    #[serde(rename = "CiphertextForRecipient", skip_serializing_if = "Option::is_none")]
    for_recipient: Option<String>,
}

const AWS_KEY_PAIR_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
];

/// A P-256 key pair: the private key (PKCS#8 DER) encrypted under a symmetric
/// key, and the public key (SubjectPublicKeyInfo DER).
pub async fn generate_data_key_pair(ctx: &Ctx<'_>, body: Value, with_plaintext: bool) -> Result<Value, KmsError> {
    let req: GenerateDataKeyPairRequest = parse(body)?;
    let spec = required("keyPairSpec", req.key_pair_spec)?;
    if !AWS_KEY_PAIR_SPECS.contains(&spec.as_str()) {
        return Err(KmsError::validation(
            "keyPairSpec",
            "Member must satisfy enum value set",
        ));
    }
    if spec != "ECC_NIST_P256" {
        return Err(KmsError::UnsupportedOperation(format!(
            "KeyPairSpec {spec} is not supported."
        )));
    }
    if !with_plaintext && req.recipient.is_some() {
        return Err(KmsError::Serialization(
            "Recipient is not a parameter of GenerateDataKeyPairWithoutPlaintext.".into(),
        ));
    }
    let context = params::context(req.encryption_context)?;
    ctx.note_encryption_context(&context);
    let key_id = required("keyId", req.key_id)?;
    let recipient = recipient::verify_for(ctx, req.recipient, recipient::Named::Key(&key_id)).await?;
    let pair = domain::generate_p256_data_key_pair(ctx, &key_id, &context, recipient.as_ref(), with_plaintext).await?;
    let secret = pair.private_key_plaintext.map(Secret::from).unwrap_or_default();
    render(GenerateDataKeyPairResponse {
        private_key_ciphertext_blob: b64(&pair.private_key_ciphertext_blob),
        public_key: b64(&pair.public_key),
        key_id: pair.key_arn,
        key_pair_spec: spec,
        private_key_plaintext: secret.plaintext,
        for_recipient: secret.for_recipient,
    })
}
