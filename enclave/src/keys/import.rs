//! BYOK: importing customer key material (`Origin: EXTERNAL`), as AWS KMS
//! does it.
//!
//! `GetParametersForImport` creates a fresh RSA wrapping key pair inside
//! the enclave and an import token; the customer wraps its material to the
//! public key (RSA-OAEP, or RSA-OAEP of an ephemeral AES key plus AES key
//! wrap with padding) and sends it back with the token in `ImportKeyMaterial`.
//!
//! What this module guarantees:
//! - every RSA private-key operation (generation, OAEP decryption) runs in
//!   AWS-LC through `aws-lc-rs`, a constant-time implementation; RustCrypto's
//!   `rsa` crate (Marvin timing side channel, RUSTSEC-2023-0071) never
//!   touches a private key here;
//! - the wrapping private key is stored only as PKCS#8 wrapped under the
//!   tenant's KEK (AES-256-GCM, bound to the key ARN and the token), inside a
//!   record the enclave seals again; it is single-use: the record is deleted
//!   before the material is decrypted, and the sweep drops the private key
//!   of expired parameters (and the rest of the record a lifetime later). In memory it lives in AWS-LC (`RSA_free` clears the private
//!   components) and in zeroize-on-drop buffers;
//! - decryption failures of every kind give one answer, so the error is not
//!   a padding oracle (and a token cannot be retried anyway);
//! - the material's fingerprint is an HMAC-SHA256 under a key derived from
//!   the root, so the audit log and the record can name "the same material"
//!   without revealing anything about it.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::record::WrappedMaterial;
use crate::secret::{Key256, SecretBytes};

/// Store namespace of outstanding import parameters; record key
/// `<tenant>/<key uuid>` (one outstanding set per key: a new
/// `GetParametersForImport` replaces the previous one).
pub const NAMESPACE: &str = "import";

/// How long import parameters are valid (AWS: 24 hours).
pub const PARAMETERS_LIFETIME_SECONDS: i64 = 24 * 3600;

/// Bytes of an import token.
const TOKEN_LEN: usize = 32;

/// The `WrappingAlgorithm` values Keyward accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrappingAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
    RsaAesKeyWrapSha1,
    RsaAesKeyWrapSha256,
}

impl WrappingAlgorithm {
    pub const NAMES: &'static [&'static str] = &[
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_AES_KEY_WRAP_SHA_256",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RSAES_OAEP_SHA_1" => WrappingAlgorithm::RsaesOaepSha1,
            "RSAES_OAEP_SHA_256" => WrappingAlgorithm::RsaesOaepSha256,
            "RSA_AES_KEY_WRAP_SHA_1" => WrappingAlgorithm::RsaAesKeyWrapSha1,
            "RSA_AES_KEY_WRAP_SHA_256" => WrappingAlgorithm::RsaAesKeyWrapSha256,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            WrappingAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            WrappingAlgorithm::RsaAesKeyWrapSha1 => "RSA_AES_KEY_WRAP_SHA_1",
            WrappingAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        match self {
            WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => &OAEP_SHA1_MGF1SHA1,
            WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }

    fn key_wrap(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256
        )
    }
}

/// The `WrappingKeySpec` values Keyward accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WrappingKeySpec {
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl WrappingKeySpec {
    pub const NAMES: &'static [&'static str] = &["RSA_2048", "RSA_3072", "RSA_4096"];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RSA_2048" => WrappingKeySpec::Rsa2048,
            "RSA_3072" => WrappingKeySpec::Rsa3072,
            "RSA_4096" => WrappingKeySpec::Rsa4096,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WrappingKeySpec::Rsa2048 => "RSA_2048",
            WrappingKeySpec::Rsa3072 => "RSA_3072",
            WrappingKeySpec::Rsa4096 => "RSA_4096",
        }
    }

    fn size(self) -> KeySize {
        match self {
            WrappingKeySpec::Rsa2048 => KeySize::Rsa2048,
            WrappingKeySpec::Rsa3072 => KeySize::Rsa3072,
            WrappingKeySpec::Rsa4096 => KeySize::Rsa4096,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportError {
    #[error("the wrapping key could not be generated")]
    KeyGeneration,
    #[error("the wrapping key could not be sealed under the tenant KEK")]
    Seal,
    #[error("the import parameters do not match this token")]
    WrongToken,
    #[error("the stored import parameters are malformed")]
    Corrupt,
    /// One answer for every way decryption or unwrapping can fail.
    #[error("the encrypted key material could not be decrypted")]
    Undecryptable,
}

/// Outstanding import parameters of one key, as sealed in the store.
#[derive(Clone, Serialize, Deserialize)]
pub struct ImportParameters {
    pub key_id: uuid::Uuid,
    pub tenant: String,
    pub algorithm: String,
    pub key_spec: String,
    /// SHA-256 of the import token handed to the customer.
    pub token_sha256: [u8; 32],
    /// SubjectPublicKeyInfo DER of the wrapping key.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// PKCS#8 of the wrapping private key, wrapped under the tenant KEK;
    /// `None` once expired (the sweep keeps the rest one more lifetime, so
    /// a late import is told its token expired rather than unknown).
    pub private_key: Option<WrappedMaterial>,
    /// Seconds since the epoch.
    pub valid_to: i64,
}

/// Fresh parameters and the token to give the customer.
pub struct NewParameters {
    pub parameters: ImportParameters,
    pub token: Vec<u8>,
}

/// Generates a wrapping key pair of `spec` for `arn`. Slow for RSA-4096
/// (about a second): call it off the async reactor.
pub fn generate(
    kek: &Key256,
    key_id: uuid::Uuid,
    tenant: &str,
    arn: &str,
    algorithm: WrappingAlgorithm,
    spec: WrappingKeySpec,
    valid_to: i64,
) -> Result<NewParameters, ImportError> {
    let private = PrivateDecryptingKey::generate(spec.size()).map_err(|_| ImportError::KeyGeneration)?;
    let public: PublicKeyX509Der<'static> = private.public_key().as_der().map_err(|_| ImportError::KeyGeneration)?;
    let pkcs8: Pkcs8V1Der<'static> = private.as_der().map_err(|_| ImportError::KeyGeneration)?;
    let pkcs8 = SecretBytes::new(pkcs8.as_ref().to_vec());
    let token = SecretBytes::random(TOKEN_LEN);
    let token_sha256: [u8; 32] = Sha256::digest(token.expose()).into();
    let private_key = WrappedMaterial::seal(kek, &private_key_aad(arn, &token_sha256), pkcs8.expose())
        .map_err(|_| ImportError::Seal)?;
    Ok(NewParameters {
        parameters: ImportParameters {
            key_id,
            tenant: tenant.to_owned(),
            algorithm: algorithm.as_str().to_owned(),
            key_spec: spec.as_str().to_owned(),
            token_sha256,
            public_key: public.as_ref().to_vec(),
            private_key: Some(private_key),
            valid_to,
        },
        token: token.expose().to_vec(),
    })
}

impl ImportParameters {
    /// Whether `token` is the one these parameters were issued with (constant time).
    pub fn token_matches(&self, token: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(token).into();
        presented.ct_eq(&self.token_sha256).into()
    }

    /// Decrypts `encrypted` (wrapped as `self.algorithm` says) with the
    /// wrapping private key. Every failure is [`ImportError::Undecryptable`]
    /// (or `Corrupt` when the stored record itself is bad).
    pub fn unwrap_material(&self, kek: &Key256, arn: &str, encrypted: &[u8]) -> Result<SecretBytes, ImportError> {
        let algorithm = WrappingAlgorithm::parse(&self.algorithm).ok_or(ImportError::Corrupt)?;
        let pkcs8 = self
            .private_key
            .as_ref()
            .ok_or(ImportError::Corrupt)?
            .open(kek, &private_key_aad(arn, &self.token_sha256))
            .map_err(|_| ImportError::Corrupt)?;
        let private = PrivateDecryptingKey::from_pkcs8(pkcs8.expose()).map_err(|_| ImportError::Corrupt)?;
        drop(pkcs8);
        let private = OaepPrivateDecryptingKey::new(private).map_err(|_| ImportError::Corrupt)?;
        let modulus_len = private.key_size_bytes();
        let (rsa_part, rest) = if algorithm.key_wrap() {
            if encrypted.len() <= modulus_len {
                return Err(ImportError::Undecryptable);
            }
            encrypted.split_at(modulus_len)
        } else {
            (encrypted, &[][..])
        };
        if rsa_part.len() != modulus_len {
            return Err(ImportError::Undecryptable);
        }
        let mut buffer = Zeroizing::new(vec![0u8; private.min_output_size()]);
        let plaintext = private
            .decrypt(algorithm.oaep(), rsa_part, &mut buffer, None)
            .map_err(|_| ImportError::Undecryptable)?;
        if !algorithm.key_wrap() {
            return Ok(SecretBytes::new(plaintext.to_vec()));
        }
        // RSA_AES_KEY_WRAP: the RSA part is an ephemeral AES-256 key; the rest
        // is the material under AES key wrap with padding (RFC 5649).
        if plaintext.len() != 32 {
            return Err(ImportError::Undecryptable);
        }
        let kek = AesKek::new(&AES_256, plaintext).map_err(|_| ImportError::Undecryptable)?;
        let mut out = Zeroizing::new(vec![0u8; rest.len()]);
        let material = kek
            .unwrap_with_padding(rest, &mut out)
            .map_err(|_| ImportError::Undecryptable)?;
        Ok(SecretBytes::new(material.to_vec()))
    }
}

fn private_key_aad(arn: &str, token_sha256: &[u8; 32]) -> Vec<u8> {
    let mut aad = b"keyward/v1/import-wrapping-key\0".to_vec();
    aad.extend_from_slice(arn.as_bytes());
    aad.push(0);
    aad.extend_from_slice(token_sha256);
    aad
}

/// The keyed fingerprint of imported `material` for key `arn`:
/// HMAC-SHA256(`fingerprint_key`, "keyward/v1/material-fingerprint\0" ‖ arn ‖ 0 ‖ material).
pub fn fingerprint(fingerprint_key: &Key256, arn: &str, material: &[u8]) -> [u8; 32] {
    // HMAC (RFC 2104) is defined for keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(fingerprint_key.expose()).expect("HMAC accepts keys of any length");
    mac.update(b"keyward/v1/material-fingerprint\0");
    mac.update(arn.as_bytes());
    mac.update(&[0]);
    mac.update(material);
    mac.finalize().into_bytes().into()
}

/// What binds the wrapping key in the enclave's attestation document's
/// `user_data`: this prefix ‖ SHA-256(SubjectPublicKeyInfo DER) ‖ key ARN.
pub const ATTESTATION_BINDING_PREFIX: &[u8] = b"keyward/v1/import-wrapping-key-sha256:";

/// The `user_data` binding the wrapping key `public_key` of key `arn`.
pub fn attestation_binding(public_key: &[u8], arn: &str) -> Vec<u8> {
    let mut user_data = ATTESTATION_BINDING_PREFIX.to_vec();
    user_data.extend_from_slice(&Sha256::digest(public_key));
    user_data.extend_from_slice(arn.as_bytes());
    user_data
}

#[cfg(test)]
mod tests;
