//! Symmetric data-plane operations: Encrypt, Decrypt, ReEncrypt,
//! GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateDataKeyPair,
//! GenerateDataKeyPairWithoutPlaintext, GenerateRandom.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::KmsError;
use super::params::{self, b64, blob, length, parse, required, resolve_key_id};
use super::recipient;
use crate::context::Ctx;
use crate::keys::blob::{self as cipherblob, BlobError, BlobHeader};
use crate::keys::context::EncryptionContext;
use crate::keys::record::KeyRecord;
use crate::secret::SecretBytes;

/// AWS KMS: Encrypt takes at most 4096 bytes of plaintext.
pub const MAX_PLAINTEXT: usize = 4096;
/// AWS KMS: a ciphertext blob is at most 6144 bytes.
pub const MAX_CIPHERTEXT: usize = 6144;
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

/// Puts a secret in the answer: as `field` in the clear, or — for an attested
/// recipient — only as `CiphertextForRecipient`, as AWS KMS does.
pub(crate) fn release(
    out: &mut Value,
    field: &str,
    secret: &[u8],
    recipient: Option<&recipient::Recipient>,
) -> Result<(), KmsError> {
    match recipient {
        Some(r) => out["CiphertextForRecipient"] = json!(r.envelope(secret)?),
        None => out[field] = json!(b64(secret)),
    }
    Ok(())
}

/// A symmetric encryption key the caller may use.
pub(crate) async fn usable_key(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<KeyRecord, KmsError> {
    let rec = params::resolve_key(ctx, &required("keyId", key_id)?).await?;
    params::require_usable(&rec, "ENCRYPT_DECRYPT")?;
    Ok(rec)
}

/// Encrypts under the key's current version.
pub(crate) fn seal_under(
    ctx: &Ctx<'_>,
    rec: &KeyRecord,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
    let version = rec.current_version();
    let material = rec.symmetric_material(&kek, version).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        KmsError::Internal
    })?;
    cipherblob::seal(
        BlobHeader {
            key_id: rec.key_id,
            key_version: version,
        },
        &material,
        context,
        plaintext,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "ciphertext blob");
        KmsError::Internal
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptRequest {
    key_id: Option<String>,
    plaintext: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
}

pub async fn encrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: EncryptRequest = parse(body)?;
    let plaintext = SecretBytes::new(blob("plaintext", &required("plaintext", req.plaintext)?)?);
    length("plaintext", plaintext.len(), 1, MAX_PLAINTEXT)?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let context = params::context(req.encryption_context)?;
    let rec = usable_key(ctx, req.key_id).await?;
    let ciphertext = seal_under(ctx, &rec, &context, plaintext.expose())?;
    Ok(json!({
        "CiphertextBlob": b64(&ciphertext),
        "KeyId": rec.arn,
        "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
    }))
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

pub async fn decrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DecryptRequest = parse(body)?;
    let ciphertext = blob("ciphertextBlob", &required("ciphertextBlob", req.ciphertext_blob)?)?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    let context = params::context(req.encryption_context)?;
    let recipient = recipient::verify(ctx, req.recipient)?;
    let (rec, plaintext) = open_blob(ctx, &ciphertext, req.key_id.as_deref(), &context).await?;
    recipient::enforce(&rec, recipient.as_ref())?;
    let mut out = json!({ "KeyId": rec.arn, "EncryptionAlgorithm": SYMMETRIC_DEFAULT });
    release(&mut out, "Plaintext", plaintext.expose(), recipient.as_ref())?;
    Ok(out)
}

fn invalid_ciphertext() -> KmsError {
    KmsError::InvalidCiphertext(
        "The ciphertext is invalid or was not encrypted under this key and encryption context.".into(),
    )
}

/// Decrypts a ciphertext blob of the caller's, checking `key_id` when given.
async fn open_blob(
    ctx: &Ctx<'_>,
    ciphertext: &[u8],
    key_id: Option<&str>,
    context: &EncryptionContext,
) -> Result<(KeyRecord, SecretBytes), KmsError> {
    length("ciphertextBlob", ciphertext.len(), 1, MAX_CIPHERTEXT)?;
    let header = cipherblob::parse_header(ciphertext).map_err(|_| invalid_ciphertext())?;
    if let Some(key_id) = key_id {
        let wanted = resolve_key_id(ctx, key_id).await?;
        if wanted != header.key_id {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a CMK that can perform this operation.".into(),
            ));
        }
    }
    let rec = params::load_key(ctx, &header.key_id).await?;
    params::require_usable(&rec, "ENCRYPT_DECRYPT")?;
    let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
    let material = rec
        .symmetric_material(&kek, header.key_version)
        .map_err(|_| invalid_ciphertext())?;
    let plaintext = cipherblob::open(ciphertext, &material, context).map_err(|_: BlobError| invalid_ciphertext())?;
    Ok((rec, plaintext))
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

/// Decrypts and re-encrypts inside the enclave; the plaintext never leaves it.
pub async fn re_encrypt(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ReEncryptRequest = parse(body)?;
    let ciphertext = blob("ciphertextBlob", &required("ciphertextBlob", req.ciphertext_blob)?)?;
    let destination = required("destinationKeyId", req.destination_key_id)?;
    check_algorithm(req.source_encryption_algorithm.as_deref())?;
    check_algorithm(req.destination_encryption_algorithm.as_deref())?;
    let source_context = params::context(req.source_encryption_context)?;
    let destination_context = params::context(req.destination_encryption_context)?;
    let destination = usable_key(ctx, Some(destination)).await?;
    let (source, plaintext) = open_blob(ctx, &ciphertext, req.source_key_id.as_deref(), &source_context).await?;
    // A key that releases only to attested recipients must not be escaped by
    // re-encrypting its data under a key that does not.
    recipient::enforce(&source, None)?;
    let resealed = seal_under(ctx, &destination, &destination_context, plaintext.expose())?;
    Ok(json!({
        "CiphertextBlob": b64(&resealed),
        "SourceKeyId": source.arn,
        "KeyId": destination.arn,
        "SourceEncryptionAlgorithm": SYMMETRIC_DEFAULT,
        "DestinationEncryptionAlgorithm": SYMMETRIC_DEFAULT,
    }))
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
    let recipient = recipient::verify(ctx, req.recipient)?;
    let rec = usable_key(ctx, req.key_id).await?;
    if with_plaintext {
        recipient::enforce(&rec, recipient.as_ref())?;
    }
    let data_key = SecretBytes::random(len);
    let ciphertext = seal_under(ctx, &rec, &context, data_key.expose())?;
    let mut out = json!({ "CiphertextBlob": b64(&ciphertext), "KeyId": rec.arn });
    if with_plaintext {
        release(&mut out, "Plaintext", data_key.expose(), recipient.as_ref())?;
    }
    Ok(out)
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
    let random = SecretBytes::random(len);
    let mut out = json!({});
    release(&mut out, "Plaintext", random.expose(), recipient.as_ref())?;
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyPairRequest {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    recipient: Option<Value>,
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
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
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
    let recipient = recipient::verify(ctx, req.recipient)?;
    let rec = usable_key(ctx, req.key_id).await?;
    if with_plaintext {
        recipient::enforce(&rec, recipient.as_ref())?;
    }
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private_der = secret.to_pkcs8_der().map_err(|_| KmsError::Internal)?;
    let public_der = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| KmsError::Internal)?;
    let private_ciphertext = seal_under(ctx, &rec, &context, private_der.as_bytes())?;
    let mut out = json!({
        "PrivateKeyCiphertextBlob": b64(&private_ciphertext),
        "PublicKey": b64(public_der.as_bytes()),
        "KeyId": rec.arn,
        "KeyPairSpec": spec,
    });
    if with_plaintext {
        release(
            &mut out,
            "PrivateKeyPlaintext",
            private_der.as_bytes(),
            recipient.as_ref(),
        )?;
    }
    Ok(out)
}
