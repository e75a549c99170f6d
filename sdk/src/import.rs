//! BYOK: import your own key material into a key created with
//! `Origin: EXTERNAL`, after checking that the wrapping key belongs to a
//! genuine Keyward enclave.
//!
//! [`Client::import_key`] does the whole flow:
//! 1. `GetParametersForImport` (RSAES_OAEP_SHA_256, RSA_4096): a wrapping
//!    public key the enclave generated and an import token;
//! 2. `Keyward.GetAttestationDocument {KeyId, Nonce}`: the enclave's
//!    attestation document binding that public key (`public_key`, and
//!    [`IMPORT_KEY_BINDING_PREFIX`] ‖ SHA-256(key) ‖ key ARN in
//!    `user_data`), verified here against the caller's [`TrustAnchor`],
//!    fresh nonce and expected PCRs — before any material leaves;
//! 3. the material wrapped with RSA-OAEP-SHA-256 to the attested key;
//! 4. `ImportKeyMaterial`.
//!
//! Every step is also available alone, and the AWS operations are the
//! standard ones: wrapping can equally be done by `openssl pkeyutl` or any
//! AWS tool, as AWS's import guide describes.
//!
//! What is trusted: the anchor and expected PCRs the caller passes. The
//! host relays everything and may substitute a public key of its own; the
//! attestation check is what rules that out.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use rand::RngCore as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::{Oaep, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::attestation::{AttestationError, TrustAnchor};
use crate::{AWS_KMS_TARGET_PREFIX, Client, Error, KEYWARD_TARGET_PREFIX};

/// What the enclave puts before SHA-256(wrapping key SPKI) ‖ key ARN in the
/// `user_data` of a document that attests an import wrapping key.
pub const IMPORT_KEY_BINDING_PREFIX: &[u8] = b"keyward/v1/import-wrapping-key-sha256:";

/// The wrapping algorithm [`Client::import_key`] uses.
pub const WRAPPING_ALGORITHM: &str = "RSAES_OAEP_SHA_256";
/// The wrapping key spec [`Client::import_key`] asks for.
pub const WRAPPING_KEY_SPEC: &str = "RSA_4096";

/// `GetParametersForImport`'s answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportParameters {
    /// The key's ARN.
    pub key_arn: String,
    /// The wrapping public key (SubjectPublicKeyInfo DER).
    pub public_key: Vec<u8>,
    /// The import token for `ImportKeyMaterial` (single use).
    pub import_token: Vec<u8>,
    /// Until when the parameters are valid (seconds since the epoch).
    pub valid_to: i64,
}

/// When imported material expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `KEY_MATERIAL_DOES_NOT_EXPIRE`.
    Never,
    /// `KEY_MATERIAL_EXPIRES` at this time (seconds since the epoch; at most
    /// 365 days ahead).
    At(i64),
}

/// Why an import could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The enclave's attestation did not verify or does not bind the
    /// wrapping key: nothing was sent.
    #[error("the wrapping key is not attested by a trusted enclave: {0}")]
    Attestation(#[from] AttestationError),
    /// The wrapping public key is not a usable RSA key.
    #[error("the wrapping public key is unusable: {0}")]
    PublicKey(String),
    /// A service call failed.
    #[error(transparent)]
    Client(#[from] Error),
}

/// The material wrapped with RSAES_OAEP_SHA_256 to `public_key` (SPKI DER).
pub fn wrap_key_material(public_key: &[u8], material: &[u8]) -> Result<Vec<u8>, ImportError> {
    let key = RsaPublicKey::from_public_key_der(public_key).map_err(|e| ImportError::PublicKey(e.to_string()))?;
    key.encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), material)
        .map_err(|e| ImportError::PublicKey(e.to_string()))
}

/// Verifies that `document` (from `Keyward.GetAttestationDocument` with
/// `KeyId`) comes from an enclave under `anchor` with the `expected_pcrs`
/// (at least one), echoes `nonce`, is at most five minutes old, and binds
/// exactly `public_key` as the wrapping key of `key_arn`.
pub fn verify_import_key(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    public_key: &[u8],
    key_arn: &str,
) -> Result<(), AttestationError> {
    verify_import_key_at(
        document,
        anchor,
        nonce,
        expected_pcrs,
        public_key,
        key_arn,
        SystemTime::now(),
    )
}

/// [`verify_import_key`] as of `now`.
pub fn verify_import_key_at(
    document: &[u8],
    anchor: TrustAnchor,
    nonce: &[u8],
    expected_pcrs: &BTreeMap<u8, Vec<u8>>,
    public_key: &[u8],
    key_arn: &str,
    now: SystemTime,
) -> Result<(), AttestationError> {
    let verified = crate::attestation::verify_enclave_document(document, anchor, nonce, expected_pcrs, now)?;
    if verified.public_key() != Some(public_key) {
        return Err(AttestationError::Unbound(
            "public_key is not the wrapping key GetParametersForImport returned",
        ));
    }
    let mut binding = IMPORT_KEY_BINDING_PREFIX.to_vec();
    binding.extend_from_slice(&Sha256::digest(public_key));
    binding.extend_from_slice(key_arn.as_bytes());
    if verified.user_data() != Some(binding.as_slice()) {
        return Err(AttestationError::Unbound(
            "user_data does not bind the wrapping key to this key",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersRequest<'a> {
    key_id: &'a str,
    wrapping_algorithm: &'a str,
    wrapping_key_spec: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersResponse {
    key_id: String,
    import_token: String,
    public_key: String,
    parameters_valid_to: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttestRequest<'a> {
    key_id: &'a str,
    nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttestResponse {
    attestation_document: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImportRequest<'a> {
    key_id: &'a str,
    import_token: String,
    encrypted_key_material: String,
    expiration_model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_to: Option<i64>,
}

#[derive(Deserialize)]
struct Empty {}

fn decode(operation: &str, field: &str, value: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| Error::Decode {
            operation: operation.to_owned(),
            reason: format!("{field} is not base64: {e}"),
        })
}

impl Client {
    /// `GetParametersForImport` for `key_id` (id, ARN or alias).
    pub async fn get_parameters_for_import(
        &self,
        key_id: &str,
        wrapping_algorithm: &str,
        wrapping_key_spec: &str,
    ) -> Result<ImportParameters, Error> {
        let target = format!("{AWS_KMS_TARGET_PREFIX}GetParametersForImport");
        let response: GetParametersResponse = self
            .call(
                &target,
                &GetParametersRequest {
                    key_id,
                    wrapping_algorithm,
                    wrapping_key_spec,
                },
            )
            .await?;
        Ok(ImportParameters {
            key_arn: response.key_id,
            public_key: decode(&target, "PublicKey", &response.public_key)?,
            import_token: decode(&target, "ImportToken", &response.import_token)?,
            valid_to: response.parameters_valid_to as i64,
        })
    }

    /// `Keyward.GetAttestationDocument {KeyId, Nonce}`: the enclave's
    /// document binding the key's outstanding wrapping key. Not yet
    /// verified: pass it to [`verify_import_key`].
    pub async fn get_import_attestation_document(&self, key_id: &str, nonce: &[u8]) -> Result<Vec<u8>, Error> {
        let target = format!("{KEYWARD_TARGET_PREFIX}GetAttestationDocument");
        let response: AttestResponse = self
            .call(
                &target,
                &AttestRequest {
                    key_id,
                    nonce: base64::engine::general_purpose::STANDARD.encode(nonce),
                },
            )
            .await?;
        decode(&target, "AttestationDocument", &response.attestation_document)
    }

    /// `ImportKeyMaterial` of already wrapped material.
    pub async fn import_key_material(
        &self,
        key_id: &str,
        import_token: &[u8],
        encrypted_key_material: &[u8],
        expiry: Expiry,
    ) -> Result<(), Error> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let (expiration_model, valid_to) = match expiry {
            Expiry::Never => ("KEY_MATERIAL_DOES_NOT_EXPIRE", None),
            Expiry::At(t) => ("KEY_MATERIAL_EXPIRES", Some(t)),
        };
        let _: Empty = self
            .call(
                &format!("{AWS_KMS_TARGET_PREFIX}ImportKeyMaterial"),
                &ImportRequest {
                    key_id,
                    import_token: b64(import_token),
                    encrypted_key_material: b64(encrypted_key_material),
                    expiration_model,
                    valid_to,
                },
            )
            .await?;
        Ok(())
    }

    /// The whole BYOK flow (see the [module docs](self)): parameters,
    /// attestation of the wrapping key against `anchor` and
    /// `expected_pcrs`, wrapping, import. Returns the key ARN. Nothing is
    /// sent if the attestation does not verify.
    pub async fn import_key(
        &self,
        key_id: &str,
        material: &[u8],
        anchor: TrustAnchor,
        expected_pcrs: &BTreeMap<u8, Vec<u8>>,
        expiry: Expiry,
    ) -> Result<String, ImportError> {
        let parameters = self
            .get_parameters_for_import(key_id, WRAPPING_ALGORITHM, WRAPPING_KEY_SPEC)
            .await?;
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let document = self
            .get_import_attestation_document(&parameters.key_arn, &nonce)
            .await?;
        verify_import_key(
            &document,
            anchor,
            &nonce,
            expected_pcrs,
            &parameters.public_key,
            &parameters.key_arn,
        )?;
        let encrypted = wrap_key_material(&parameters.public_key, material)?;
        self.import_key_material(&parameters.key_arn, &parameters.import_token, &encrypted, expiry)
            .await?;
        Ok(parameters.key_arn)
    }
}
