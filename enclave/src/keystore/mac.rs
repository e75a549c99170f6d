//! HMAC keys: generating and verifying MACs with the caller's
//! `GENERATE_VERIFY_MAC` keys (each key spec has one MAC algorithm).

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Sha224, Sha256, Sha384, Sha512};

use super::keys::{require_usable, resolve_key};
use super::recipient::{self, Recipient, Released};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::KeyRecord;
use crate::keys::spec::KeyUsage;
use crate::secret::SecretBytes;

/// The MAC algorithms AWS KMS knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlgorithm {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl MacAlgorithm {
    /// The algorithm AWS calls `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "HMAC_SHA_224" => MacAlgorithm::Sha224,
            "HMAC_SHA_256" => MacAlgorithm::Sha256,
            "HMAC_SHA_384" => MacAlgorithm::Sha384,
            "HMAC_SHA_512" => MacAlgorithm::Sha512,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MacAlgorithm::Sha224 => "HMAC_SHA_224",
            MacAlgorithm::Sha256 => "HMAC_SHA_256",
            MacAlgorithm::Sha384 => "HMAC_SHA_384",
            MacAlgorithm::Sha512 => "HMAC_SHA_512",
        }
    }

    fn generate(self, key: &SecretBytes, message: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(match self {
            MacAlgorithm::Sha224 => keyed::<Hmac<Sha224>>(key, message)?.finalize().into_bytes().to_vec(),
            MacAlgorithm::Sha256 => keyed::<Hmac<Sha256>>(key, message)?.finalize().into_bytes().to_vec(),
            MacAlgorithm::Sha384 => keyed::<Hmac<Sha384>>(key, message)?.finalize().into_bytes().to_vec(),
            MacAlgorithm::Sha512 => keyed::<Hmac<Sha512>>(key, message)?.finalize().into_bytes().to_vec(),
        })
    }

    /// Whether `tag` is the MAC of `message`, compared in constant time
    /// (a tag of another length never matches).
    fn verify(self, key: &SecretBytes, message: &[u8], tag: &[u8]) -> Result<bool, KmsError> {
        Ok(match self {
            MacAlgorithm::Sha224 => keyed::<Hmac<Sha224>>(key, message)?.verify_slice(tag).is_ok(),
            MacAlgorithm::Sha256 => keyed::<Hmac<Sha256>>(key, message)?.verify_slice(tag).is_ok(),
            MacAlgorithm::Sha384 => keyed::<Hmac<Sha384>>(key, message)?.verify_slice(tag).is_ok(),
            MacAlgorithm::Sha512 => keyed::<Hmac<Sha512>>(key, message)?.verify_slice(tag).is_ok(),
        })
    }
}

/// A MAC keyed with `key`, fed `message`.
fn keyed<M: Mac + KeyInit>(key: &SecretBytes, message: &[u8]) -> Result<M, KmsError> {
    let mut mac = <M as KeyInit>::new_from_slice(key.expose()).map_err(|_| {
        tracing::error!("HMAC key material has an unusable length");
        KmsError::Internal
    })?;
    mac.update(message);
    Ok(mac)
}

/// An HMAC key usable with `algorithm`, and its material.
async fn usable_key(
    ctx: &Ctx<'_>,
    key_id: &str,
    algorithm: MacAlgorithm,
) -> Result<(KeyRecord, SecretBytes), KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    require_usable(&rec, KeyUsage::GenerateVerifyMac)?;
    let key_algorithm = rec.key_spec.mac_algorithm();
    if key_algorithm != Some(algorithm.as_str()) {
        return Err(KmsError::InvalidKeyUsage(format!(
            "MAC algorithm {} is not compatible with {} (key spec {}).",
            algorithm.as_str(),
            rec.arn,
            rec.key_spec
        )));
    }
    let kek = ctx.tenant_kek(&rec.tenant)?;
    let material = rec.material(&kek, rec.current_version()).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        super::crypto::material_error(&rec, &e)
    })?;
    Ok((rec, material))
}

/// A MAC, as released, and the ARN of the key that made it.
pub struct Generated {
    pub key_arn: String,
    pub mac: Released,
}

/// GenerateMac: the MAC of `message` under the caller's key `key_id`. A MAC
/// is a key-derived secret: under an attestation policy (the key's or the
/// tenant's default) it is released only to a matching attested recipient
/// (the Keyward extension `Recipient`, answered as `CiphertextForRecipient`).
pub async fn generate_mac(
    ctx: &Ctx<'_>,
    key_id: &str,
    algorithm: MacAlgorithm,
    message: &[u8],
    recipient: Option<&Recipient>,
) -> Result<Generated, KmsError> {
    let (rec, key) = usable_key(ctx, key_id, algorithm).await?;
    recipient::enforce(ctx, &rec, recipient)?;
    let mac = algorithm.generate(&key, message)?;
    Ok(Generated {
        key_arn: rec.arn,
        mac: recipient::release(&mac, recipient)?,
    })
}

/// VerifyMac: the ARN of the key when `tag` is the MAC of `message`; a MAC
/// that does not match is `KMSInvalidMacException` (AWS never answers
/// `MacValid: false`).
pub async fn verify_mac(
    ctx: &Ctx<'_>,
    key_id: &str,
    algorithm: MacAlgorithm,
    message: &[u8],
    tag: &[u8],
) -> Result<String, KmsError> {
    let (rec, key) = usable_key(ctx, key_id, algorithm).await?;
    if !algorithm.verify(&key, message, tag)? {
        return Err(KmsError::InvalidMac(
            "The MAC is not valid for this message, key and MAC algorithm.".into(),
        ));
    }
    Ok(rec.arn)
}
