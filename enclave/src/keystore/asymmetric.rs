//! ECC_NIST_P256 keys: signing and verification (SIGN_VERIFY), the public
//! half, and ECDH key agreement (KEY_AGREEMENT).
//!
//! The private scalar is unwrapped for the one operation that needs it and
//! held only in zeroizing types (`SecretBytes`, `SigningKey`).

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

use super::keys::{Access, check_state, require_usable, resolve_key};
use crate::context::Ctx;
use crate::error::KmsError;
use crate::keys::record::KeyRecord;
use crate::keys::spec::{KeySpec, KeyUsage};
use crate::secret::SecretBytes;

/// The one signing algorithm of an ECC_NIST_P256 key.
pub const ECDSA_SHA_256: &str = "ECDSA_SHA_256";
/// The one key agreement algorithm of an ECC_NIST_P256 key.
pub const ECDH: &str = "ECDH";
/// SHA-256 output: the only digest length ECDSA_SHA_256 accepts.
const SHA_256_LEN: usize = 32;

/// How Sign and Verify treat the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// The message itself; hashed with SHA-256.
    Raw,
    /// A SHA-256 digest, signed as is.
    Digest,
    /// ML-DSA's external mu: known to AWS, not usable with ECDSA.
    ExternalMu,
}

/// What to sign or verify: the message, how to read it, and the algorithm
/// the caller named (a known AWS name, not necessarily one the key can use).
pub struct Signing<'a> {
    pub algorithm: &'a str,
    pub kind: MessageType,
    pub message: &'a [u8],
}

/// A signature made by [`sign`].
pub struct Signed {
    pub key_arn: String,
    /// DER-encoded ECDSA signature.
    pub signature: Vec<u8>,
}

/// The public half of an asymmetric key, as [`public_key`] returns it.
pub struct PublicKeyInfo {
    pub key_arn: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    /// The signing algorithms of a SIGN_VERIFY key (empty otherwise).
    pub signing_algorithms: &'static [&'static str],
    /// The key agreement algorithms of a KEY_AGREEMENT key (empty otherwise).
    pub key_agreement_algorithms: &'static [&'static str],
}

/// Signs with the caller's SIGN_VERIFY key `key_id`.
pub async fn sign(ctx: &Ctx<'_>, key_id: &str, what: &Signing<'_>) -> Result<Signed, KmsError> {
    let rec = usable_key(ctx, key_id, KeyUsage::SignVerify).await?;
    check_signing(&rec, what)?;
    let key = private_key(ctx, &rec)?;
    let signature: DerSignature = match what.kind {
        MessageType::Digest => key.sign_prehash(what.message).map_err(|_| KmsError::Internal)?,
        // EXTERNAL_MU was refused by `check_signing`.
        MessageType::Raw | MessageType::ExternalMu => key.try_sign(what.message).map_err(|_| KmsError::Internal)?,
    };
    Ok(Signed {
        key_arn: rec.arn,
        signature: signature.as_bytes().to_vec(),
    })
}

/// Checks a DER ECDSA signature with the caller's SIGN_VERIFY key `key_id`
/// and returns the key's ARN. AWS never answers "not valid": an invalid or
/// malformed signature is `KMSInvalidSignatureException`.
pub async fn verify(ctx: &Ctx<'_>, key_id: &str, what: &Signing<'_>, signature: &[u8]) -> Result<String, KmsError> {
    let rec = usable_key(ctx, key_id, KeyUsage::SignVerify).await?;
    check_signing(&rec, what)?;
    let key = *private_key(ctx, &rec)?.verifying_key();
    let signature = Signature::from_der(signature).map_err(|_| invalid_signature())?;
    let verified = match what.kind {
        MessageType::Digest => key.verify_prehash(what.message, &signature),
        MessageType::Raw | MessageType::ExternalMu => key.verify(what.message, &signature),
    };
    verified.map_err(|_| invalid_signature())?;
    Ok(rec.arn)
}

/// The public half of the caller's asymmetric key `key_id`.
pub async fn public_key(ctx: &Ctx<'_>, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    check_state(&rec, Access::Crypto)?;
    if rec.key_spec != KeySpec::EccNistP256 {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} is not an asymmetric key; GetPublicKey is supported only for asymmetric keys.",
            rec.arn
        )));
    }
    let public_key = public_key_der(private_key(ctx, &rec)?.verifying_key())?;
    let (signing_algorithms, key_agreement_algorithms): (&[&str], &[&str]) = match rec.key_usage {
        KeyUsage::SignVerify => (&[ECDSA_SHA_256], &[]),
        KeyUsage::KeyAgreement => (&[], &[ECDH]),
        _ => (&[], &[]),
    };
    Ok(PublicKeyInfo {
        key_arn: rec.arn,
        public_key,
        key_spec: rec.key_spec,
        key_usage: rec.key_usage,
        signing_algorithms,
        key_agreement_algorithms,
    })
}

/// The caller's KEY_AGREEMENT key `key_id`, for [`shared_secret`] (the
/// request layer checks the key's release rules in between).
pub async fn agreement_key(ctx: &Ctx<'_>, key_id: &str) -> Result<KeyRecord, KmsError> {
    usable_key(ctx, key_id, KeyUsage::KeyAgreement).await
}

/// ECDH between `rec`'s private half and a peer's P-256 public key (DER
/// SubjectPublicKeyInfo); the shared secret is the raw x-coordinate of the
/// shared point, as AWS returns it.
pub fn shared_secret(ctx: &Ctx<'_>, rec: &KeyRecord, peer: &[u8]) -> Result<SecretBytes, KmsError> {
    let peer = p256::PublicKey::from_public_key_der(peer).map_err(|_| {
        KmsError::Validation(format!(
            "The public key must be a DER-encoded SubjectPublicKeyInfo of a point on the curve of {} ({}).",
            rec.arn,
            KeySpec::EccNistP256
        ))
    })?;
    let key = private_key(ctx, rec)?;
    let shared = p256::ecdh::diffie_hellman(key.as_nonzero_scalar(), peer.as_affine());
    Ok(SecretBytes::new(shared.raw_secret_bytes().to_vec()))
}

/// A P-256 key usable for `usage`.
async fn usable_key(ctx: &Ctx<'_>, key_id: &str, usage: KeyUsage) -> Result<KeyRecord, KmsError> {
    let rec = resolve_key(ctx, key_id).await?;
    require_usable(&rec, usage)?;
    if rec.key_spec != KeySpec::EccNistP256 {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{} has key spec {}, which does not support {usage}.",
            rec.arn, rec.key_spec
        )));
    }
    Ok(rec)
}

/// The algorithm and message type a signing key can use with this message.
fn check_signing(rec: &KeyRecord, what: &Signing<'_>) -> Result<(), KmsError> {
    if what.algorithm != ECDSA_SHA_256 {
        return Err(KmsError::InvalidKeyUsage(format!(
            "Signing algorithm {} is not compatible with {} (key spec {}).",
            what.algorithm, rec.arn, rec.key_spec
        )));
    }
    match what.kind {
        MessageType::Raw => Ok(()),
        MessageType::Digest if what.message.len() == SHA_256_LEN => Ok(()),
        MessageType::Digest => Err(KmsError::Validation(format!(
            "Digest is invalid length for algorithm {ECDSA_SHA_256}."
        ))),
        MessageType::ExternalMu => Err(KmsError::Validation(
            "The EXTERNAL_MU message type is supported only for ML_DSA key specs.".into(),
        )),
    }
}

fn invalid_signature() -> KmsError {
    KmsError::InvalidSignatureValue("The signature is not valid for this message, key and signing algorithm.".into())
}

/// The key's private half, unwrapped from its only version.
fn private_key(ctx: &Ctx<'_>, rec: &KeyRecord) -> Result<SigningKey, KmsError> {
    let kek = ctx.tenant_kek(&rec.tenant)?;
    let material = rec.material(&kek, rec.current_version()).map_err(|e| {
        tracing::error!(error = %e, "key material does not unwrap");
        super::crypto::material_error(rec, &e)
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
