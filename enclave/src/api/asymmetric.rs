//! Sign, Verify, GetPublicKey and DeriveSharedSecret (ECC_NIST_P256 keys):
//! AWS's parameters and validation, then [`crate::keystore::asymmetric`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{self, b64, blob, length, parse, render, required};
use crate::context::Ctx;
use crate::keystore::asymmetric::{self as domain, ECDH, MessageType, Signing};

/// AWS KMS: a signature is at most 6144 bytes.
pub const MAX_SIGNATURE: usize = 6144;
/// AWS KMS: a peer public key (DER SubjectPublicKeyInfo) is at most 8192 bytes.
pub const MAX_PUBLIC_KEY: usize = 8192;

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

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SignResponse {
    key_id: String,
    /// Base64 DER ECDSA signature.
    signature: String,
    signing_algorithm: String,
}

pub async fn sign(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: SignRequest = parse(body)?;
    let message = params::message(req.message)?;
    let kind = message_type(req.message_type.as_deref())?;
    let algorithm = signing_algorithm(req.signing_algorithm)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let key_id = required("keyId", req.key_id)?;
    let what = Signing {
        algorithm: &algorithm,
        kind,
        message: &message,
    };
    let signed = domain::sign(ctx, &key_id, &what).await?;
    render(&SignResponse {
        key_id: signed.key_arn,
        signature: b64(&signed.signature),
        signing_algorithm: algorithm,
    })
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

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyResponse {
    key_id: String,
    /// Always `true`: an invalid signature is an error.
    signature_valid: bool,
    signing_algorithm: String,
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
    let key_id = required("keyId", req.key_id)?;
    let what = Signing {
        algorithm: &algorithm,
        kind,
        message: &message,
    };
    let key_arn = domain::verify(ctx, &key_id, &what, &signature).await?;
    render(&VerifyResponse {
        key_id: key_arn,
        signature_valid: true,
        signing_algorithm: algorithm,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetPublicKeyRequest {
    key_id: Option<String>,
    grant_tokens: Option<Vec<String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetPublicKeyResponse {
    key_id: String,
    /// Base64 DER SubjectPublicKeyInfo.
    public_key: String,
    customer_master_key_spec: &'static str,
    key_spec: &'static str,
    key_usage: &'static str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    signing_algorithms: &'static [&'static str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    key_agreement_algorithms: &'static [&'static str],
}

pub async fn get_public_key(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetPublicKeyRequest = parse(body)?;
    params::check_grant_tokens(req.grant_tokens.as_deref())?;
    let public = domain::public_key(ctx, &required("keyId", req.key_id)?).await?;
    render(&GetPublicKeyResponse {
        key_id: public.key_arn,
        public_key: b64(&public.public_key),
        customer_master_key_spec: public.key_spec.as_str(),
        key_spec: public.key_spec.as_str(),
        key_usage: public.key_usage.as_str(),
        signing_algorithms: public.signing_algorithms,
        key_agreement_algorithms: public.key_agreement_algorithms,
    })
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

/// The secret is in `SharedSecret`, or — for an attested recipient — only
/// in `CiphertextForRecipient`, as AWS KMS does.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeriveSharedSecretResponse {
    key_id: String,
    key_agreement_algorithm: &'static str,
    key_origin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_for_recipient: Option<String>,
}

/// ECDH between the key's private half and a peer's P-256 public key.
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
    let key_id = required("keyId", req.key_id)?;
    let recipient = super::recipient::verify_for(ctx, req.recipient, super::recipient::Named::Key(&key_id)).await?;
    let rec = domain::agreement_key(ctx, &key_id).await?;
    crate::keystore::recipient::enforce(ctx, &rec, recipient.as_ref())?;
    let shared = domain::shared_secret(ctx, &rec, &peer)?;
    let (shared_secret, ciphertext_for_recipient) = match &recipient {
        Some(r) => (None, Some(b64(&r.envelope(shared.expose())?))),
        None => (Some(b64(shared.expose())), None),
    };
    render(&DeriveSharedSecretResponse {
        key_id: rec.arn,
        key_agreement_algorithm: ECDH,
        key_origin: rec.origin.as_str(),
        shared_secret,
        ciphertext_for_recipient,
    })
}

#[cfg(test)]
mod tests;
