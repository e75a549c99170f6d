//! Data-plane operations: Encrypt, Decrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext, GenerateRandom.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Ctx;
use super::error::KmsError;
use super::params::{self, b64, blob, length, parse, required, resolve_key_id};
use crate::keys::blob::{self as cipherblob, BlobError, BlobHeader};
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

fn reject_recipient(recipient: &Option<Value>) -> Result<(), KmsError> {
    if recipient.is_some() {
        return Err(KmsError::UnsupportedOperation("Recipient is not supported yet.".into()));
    }
    Ok(())
}

async fn usable_key(ctx: &Ctx<'_>, key_id: Option<String>) -> Result<KeyRecord, KmsError> {
    let id = resolve_key_id(ctx, &required("keyId", key_id)?)?;
    let rec = params::load_key(ctx, &id).await?;
    params::require_enabled(&rec)?;
    if rec.key_usage != "ENCRYPT_DECRYPT" {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} key usage is {}",
            rec.arn, rec.key_usage
        )));
    }
    Ok(rec)
}

/// Encrypts under the key's current version.
fn seal_under(
    ctx: &Ctx<'_>,
    rec: &KeyRecord,
    context: &crate::keys::context::EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
    let version = rec.current_version();
    let material = rec.material(&kek, version).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        KmsError::Internal
    })?;
    Ok(cipherblob::seal(
        BlobHeader {
            key_id: rec.key_id,
            key_version: version,
        },
        &material,
        context,
        plaintext,
    ))
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
    length("ciphertextBlob", ciphertext.len(), 1, MAX_CIPHERTEXT)?;
    check_algorithm(req.encryption_algorithm.as_deref())?;
    reject_recipient(&req.recipient)?;
    let context = params::context(req.encryption_context)?;
    let invalid = || {
        KmsError::InvalidCiphertext(
            "The ciphertext is invalid or was not encrypted under this key and encryption context.".into(),
        )
    };
    let header = cipherblob::parse_header(&ciphertext).map_err(|_| invalid())?;
    if let Some(key_id) = req.key_id {
        let wanted = resolve_key_id(ctx, &key_id)?;
        if wanted != header.key_id {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a CMK that can perform this operation.".into(),
            ));
        }
    }
    let rec = params::load_key(ctx, &header.key_id).await?;
    params::require_enabled(&rec)?;
    let kek = ctx.keyring.hierarchy.tenant_kek(&rec.tenant);
    let material = rec.material(&kek, header.key_version).map_err(|_| invalid())?;
    let plaintext = cipherblob::open(&ciphertext, &material, &context).map_err(|_: BlobError| invalid())?;
    Ok(json!({
        "KeyId": rec.arn,
        "Plaintext": b64(plaintext.expose()),
        "EncryptionAlgorithm": SYMMETRIC_DEFAULT,
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
    reject_recipient(&req.recipient)?;
    let context = params::context(req.encryption_context)?;
    let rec = usable_key(ctx, req.key_id).await?;
    let data_key = SecretBytes::random(len);
    let ciphertext = seal_under(ctx, &rec, &context, data_key.expose())?;
    let mut out = json!({ "CiphertextBlob": b64(&ciphertext), "KeyId": rec.arn });
    if with_plaintext {
        out["Plaintext"] = Value::String(b64(data_key.expose()));
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

pub async fn generate_random(_ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GenerateRandomRequest = parse(body)?;
    if req.custom_key_store_id.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Custom key stores are not supported.".into(),
        ));
    }
    reject_recipient(&req.recipient)?;
    let len = random_length(required("numberOfBytes", req.number_of_bytes)?)?;
    let random = SecretBytes::random(len);
    Ok(json!({ "Plaintext": b64(random.expose()) }))
}
