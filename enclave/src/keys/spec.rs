//! Key specs and usages as AWS KMS names them, what each supports, and how
//! fresh material for each is made.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::SecretBytes;

/// The key specs Keyward can create. Stored (and rendered) as AWS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeySpec {
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
    #[serde(rename = "ECC_NIST_P256")]
    EccNistP256,
    #[serde(rename = "HMAC_224")]
    Hmac224,
    #[serde(rename = "HMAC_256")]
    Hmac256,
    #[serde(rename = "HMAC_384")]
    Hmac384,
    #[serde(rename = "HMAC_512")]
    Hmac512,
}

/// AWS KMS key usages (all of them: Keyward supports each with some spec).
/// Stored (and rendered) as AWS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
    GenerateVerifyMac,
    KeyAgreement,
}

/// Every key spec AWS KMS knows: a known but unsupported one is
/// `UnsupportedOperationException`, an unknown one `ValidationException`.
pub const AWS_KEY_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
];

impl KeyUsage {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ENCRYPT_DECRYPT" => KeyUsage::EncryptDecrypt,
            "SIGN_VERIFY" => KeyUsage::SignVerify,
            "GENERATE_VERIFY_MAC" => KeyUsage::GenerateVerifyMac,
            "KEY_AGREEMENT" => KeyUsage::KeyAgreement,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            KeyUsage::KeyAgreement => "KEY_AGREEMENT",
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeySpec {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "SYMMETRIC_DEFAULT" => KeySpec::SymmetricDefault,
            "ECC_NIST_P256" => KeySpec::EccNistP256,
            "HMAC_224" => KeySpec::Hmac224,
            "HMAC_256" => KeySpec::Hmac256,
            "HMAC_384" => KeySpec::Hmac384,
            "HMAC_512" => KeySpec::Hmac512,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::Hmac224 => "HMAC_224",
            KeySpec::Hmac256 => "HMAC_256",
            KeySpec::Hmac384 => "HMAC_384",
            KeySpec::Hmac512 => "HMAC_512",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512
        )
    }

    /// Key usages this spec allows; the first is the default.
    pub fn usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            KeySpec::EccNistP256 => &[KeyUsage::SignVerify, KeyUsage::KeyAgreement],
            _ => &[KeyUsage::GenerateVerifyMac],
        }
    }

    /// The MAC algorithm of an HMAC spec.
    pub fn mac_algorithm(self) -> Option<&'static str> {
        match self {
            KeySpec::Hmac224 => Some("HMAC_SHA_224"),
            KeySpec::Hmac256 => Some("HMAC_SHA_256"),
            KeySpec::Hmac384 => Some("HMAC_SHA_384"),
            KeySpec::Hmac512 => Some("HMAC_SHA_512"),
            _ => None,
        }
    }

    /// Fresh key material: 256-bit AES key, P-256 private scalar (SEC1, 32
    /// bytes), or an HMAC key as long as AWS makes it (28/32/48/64 bytes).
    pub fn generate(self) -> SecretBytes {
        match self {
            KeySpec::SymmetricDefault => SecretBytes::random(32),
            KeySpec::EccNistP256 => {
                let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
                SecretBytes::new(secret.to_bytes().to_vec())
            }
            KeySpec::Hmac224 => SecretBytes::random(28),
            KeySpec::Hmac256 => SecretBytes::random(32),
            KeySpec::Hmac384 => SecretBytes::random(48),
            KeySpec::Hmac512 => SecretBytes::random(64),
        }
    }

    /// Whether this spec can be rotated automatically or on demand (AWS:
    /// symmetric encryption keys only).
    pub fn rotatable(self) -> bool {
        self == KeySpec::SymmetricDefault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_material_lengths() {
        for name in [
            "SYMMETRIC_DEFAULT",
            "ECC_NIST_P256",
            "HMAC_224",
            "HMAC_256",
            "HMAC_384",
            "HMAC_512",
        ] {
            let spec = KeySpec::parse(name).expect("supported");
            assert_eq!(spec.as_str(), name);
            assert!(AWS_KEY_SPECS.contains(&name));
        }
        assert_eq!(KeySpec::parse("RSA_2048"), None);
        for name in &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"] {
            assert_eq!(KeyUsage::parse(name).expect("every AWS usage").as_str(), *name);
        }
        assert_eq!(KeyUsage::parse("SIGN"), None);
        assert_eq!(KeySpec::Hmac384.generate().len(), 48);
        let ecc = KeySpec::EccNistP256.generate();
        assert!(p256::SecretKey::from_slice(ecc.expose()).is_ok());
    }
}
