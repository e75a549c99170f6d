//! Symmetric cryptography with the caller's keys: encrypting into and
//! opening ciphertext blobs (`keys::blob`) under a key's versions, data keys
//! and data key pairs, random bytes; secrets leave through
//! [`recipient::release`] (in the clear, or only to an attested recipient).

use super::keys::{load_key, require_usable, resolve_key, resolve_key_id};
use super::recipient::{self, Recipient, Released};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::blob::{self as cipherblob, BlobHeader};
use crate::keys::context::EncryptionContext;
use crate::keys::record::{KeyRecord, MaterialError};
use crate::keys::spec::KeyUsage;
use crate::policy::context::ReEncryptSide;
use crate::secret::SecretBytes;

/// AWS KMS: a ciphertext blob is at most 6144 bytes.
pub const MAX_CIPHERTEXT: usize = 6144;

/// A symmetric encryption key the caller may use.
pub async fn usable_key(ctx: &Ctx<'_>, key_id: &str) -> Result<KeyRecord, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    require_usable(&rec, KeyUsage::EncryptDecrypt)?;
    Ok(rec)
}

/// Encrypts under the key's current version.
pub fn seal_under(
    ctx: &Ctx<'_>,
    rec: &KeyRecord,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let kek = ctx.tenant_kek(&rec.tenant)?;
    let version = rec.current_version();
    let material = rec.symmetric_material(&kek, version).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        material_error(rec, &e)
    })?;
    let header = BlobHeader {
        key_id: rec.key_id,
        key_version: version,
    };
    cipherblob::seal(header, &material, context, plaintext).map_err(|e| {
        tracing::error!(error = %e, "ciphertext blob");
        KmsError::Internal
    })
}

/// What a caller is told when `rec`'s material does not unwrap under its
/// tenant's key: a key of an earlier tenant of the same id (another tenant
/// generation) or an altered record. Nothing is released.
pub fn material_error(rec: &KeyRecord, e: &MaterialError) -> KmsError {
    match e {
        MaterialError::Forged => KmsError::InternalDetail(format!(
            "The key material of {} does not unwrap under the key of tenant {} (a key of an earlier tenant \
             of this id, or an altered record); nothing was released.",
            rec.arn, rec.tenant
        )),
        _ => KmsError::Internal,
    }
}

fn invalid_ciphertext() -> KmsError {
    KmsError::InvalidCiphertext(
        "The ciphertext is invalid or was not encrypted under this key and encryption context.".into(),
    )
}

/// Decrypts a ciphertext blob of the caller's, checking `key_id` when given.
pub async fn open_blob(
    ctx: &Ctx<'_>,
    ciphertext: &[u8],
    key_id: Option<&str>,
    context: &EncryptionContext,
) -> Result<(KeyRecord, SecretBytes), KmsError> {
    if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT {
        return Err(KmsError::validation(
            "ciphertextBlob",
            &format!("Member must have length between 1 and {MAX_CIPHERTEXT} (inclusive)"),
        ));
    }
    let header = cipherblob::parse_header(ciphertext).map_err(|_| invalid_ciphertext())?;
    if let Some(key_id) = key_id {
        let wanted = resolve_key_id(ctx, key_id).await?;
        if wanted != header.key_id {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a CMK that can perform this operation.".into(),
            ));
        }
    }
    let rec = load_key(ctx, &header.key_id).await?;
    require_usable(&rec, KeyUsage::EncryptDecrypt)?;
    let kek = ctx.tenant_kek(&rec.tenant)?;
    let material = rec
        .symmetric_material(&kek, header.key_version)
        .map_err(|_| invalid_ciphertext())?;
    let plaintext = cipherblob::open(ciphertext, &material, context).map_err(|_| invalid_ciphertext())?;
    Ok((rec, plaintext))
}

/// Notes, for the audit record, the key a Decrypt names: `key_id` when
/// given, else the key in the blob's header (nothing is loaded or opened).
pub async fn note_named_key(ctx: &Ctx<'_>, ciphertext: &[u8], key_id: Option<&str>) {
    match key_id {
        Some(key_id) => super::keys::note_named_key(ctx, key_id).await,
        None => {
            if let Ok(header) = cipherblob::parse_header(ciphertext) {
                ctx.notes.key(&super::keys::key_arn(
                    ctx.region(),
                    &ctx.principal.tenant,
                    &header.key_id,
                ));
            }
        }
    }
}

/// A ciphertext blob and the ARN of the key it is under.
pub struct Encrypted {
    pub key_arn: String,
    pub ciphertext_blob: Vec<u8>,
}

/// Encrypt: `plaintext` under the caller's key `key_id`.
pub async fn encrypt(
    ctx: &Ctx<'_>,
    key_id: &str,
    plaintext: &[u8],
    context: &EncryptionContext,
) -> Result<Encrypted, KmsError> {
    let rec = usable_key(ctx, key_id).await?;
    let ciphertext_blob = seal_under(ctx, &rec, context, plaintext)?;
    Ok(Encrypted {
        key_arn: rec.arn,
        ciphertext_blob,
    })
}

/// What Decrypt answers: the key's ARN and the plaintext as released.
pub struct Decrypted {
    pub key_arn: String,
    pub plaintext: Released,
}

/// Decrypt: opens a blob of the caller's (checking `key_id` when given) and
/// releases the plaintext as the key's attestation policy allows.
pub async fn decrypt(
    ctx: &Ctx<'_>,
    ciphertext: &[u8],
    key_id: Option<&str>,
    context: &EncryptionContext,
    recipient: Option<&Recipient>,
) -> Result<Decrypted, KmsError> {
    let (rec, plaintext) = open_blob(ctx, ciphertext, key_id, context).await?;
    recipient::enforce(ctx, &rec, recipient)?;
    Ok(Decrypted {
        plaintext: recipient::release(plaintext.expose(), recipient)?,
        key_arn: rec.arn,
    })
}

/// What ReEncrypt answers.
pub struct ReEncrypted {
    pub source_key_arn: String,
    pub key_arn: String,
    pub ciphertext_blob: Vec<u8>,
}

/// The ciphertext's source (blob, its key when named, its context) and destination.
pub struct ReEncryption<'a> {
    pub ciphertext: &'a [u8],
    pub source_key_id: Option<&'a str>,
    pub source_context: &'a EncryptionContext,
    pub destination_key_id: &'a str,
    pub destination_context: &'a EncryptionContext,
}

/// ReEncrypt: decrypts and re-encrypts inside the enclave; the plaintext never leaves it.
/// Policy modules see the destination key as `kms:ReEncryptTo` with the
/// destination context, the source key as `kms:ReEncryptFrom` with the
/// source context.
pub async fn re_encrypt(ctx: &Ctx<'_>, re: ReEncryption<'_>) -> Result<ReEncrypted, KmsError> {
    ctx.facts().re_encrypt_side(ReEncryptSide::To);
    let destination = usable_key(ctx, re.destination_key_id).await?;
    ctx.facts().re_encrypt_side(ReEncryptSide::From);
    let (source, plaintext) = open_blob(ctx, re.ciphertext, re.source_key_id, re.source_context).await?;
    // A key that releases only to attested recipients must not be escaped by
    // re-encrypting its data under a key that does not (ReEncrypt takes no
    // Recipient, so an attestation policy always refuses it).
    recipient::enforce(ctx, &source, None)?;
    let ciphertext_blob = seal_under(ctx, &destination, re.destination_context, plaintext.expose())?;
    Ok(ReEncrypted {
        source_key_arn: source.arn,
        key_arn: destination.arn,
        ciphertext_blob,
    })
}

/// A data key: encrypted under the caller's key and, when asked for, released.
pub struct DataKey {
    pub key_arn: String,
    pub ciphertext_blob: Vec<u8>,
    pub plaintext: Option<Released>,
}

/// GenerateDataKey(WithoutPlaintext): `len` random bytes encrypted under
/// `key_id`, released too when `with_plaintext`.
pub async fn generate_data_key(
    ctx: &Ctx<'_>,
    key_id: &str,
    len: usize,
    context: &EncryptionContext,
    recipient: Option<&Recipient>,
    with_plaintext: bool,
) -> Result<DataKey, KmsError> {
    let rec = usable_key(ctx, key_id).await?;
    if with_plaintext {
        recipient::enforce(ctx, &rec, recipient)?;
    }
    let data_key = SecretBytes::random(len);
    let ciphertext_blob = seal_under(ctx, &rec, context, data_key.expose())?;
    let plaintext = if with_plaintext {
        Some(recipient::release(data_key.expose(), recipient)?)
    } else {
        None
    };
    Ok(DataKey {
        key_arn: rec.arn,
        ciphertext_blob,
        plaintext,
    })
}

/// GenerateRandom: `len` random bytes, released as the tenant's default
/// attestation policy allows.
pub fn generate_random(ctx: &Ctx<'_>, len: usize, recipient: Option<&Recipient>) -> Result<Released, KmsError> {
    recipient::enforce_tenant(ctx, recipient)?;
    recipient::release(SecretBytes::random(len).expose(), recipient)
}

/// A data key pair: the private key encrypted under the caller's key and,
/// when asked for, released; the public key in the clear.
pub struct DataKeyPair {
    pub key_arn: String,
    /// PKCS#8 DER of the private key, in a ciphertext blob.
    pub private_key_ciphertext_blob: Vec<u8>,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    pub private_key_plaintext: Option<Released>,
}

/// GenerateDataKeyPair(WithoutPlaintext) for `ECC_NIST_P256`, the one
/// key pair spec Keyward generates.
pub async fn generate_p256_data_key_pair(
    ctx: &Ctx<'_>,
    key_id: &str,
    context: &EncryptionContext,
    recipient: Option<&Recipient>,
    with_plaintext: bool,
) -> Result<DataKeyPair, KmsError> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let rec = usable_key(ctx, key_id).await?;
    if with_plaintext {
        recipient::enforce(ctx, &rec, recipient)?;
    }
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private_der = secret.to_pkcs8_der().map_err(|_| KmsError::Internal)?;
    let public_der = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| KmsError::Internal)?;
    let private_key_ciphertext_blob = seal_under(ctx, &rec, context, private_der.as_bytes())?;
    let private_key_plaintext = if with_plaintext {
        Some(recipient::release(private_der.as_bytes(), recipient)?)
    } else {
        None
    };
    Ok(DataKeyPair {
        key_arn: rec.arn,
        private_key_ciphertext_blob,
        public_key: public_der.as_bytes().to_vec(),
        private_key_plaintext,
    })
}
