//! The SigV4 signing key: derivation of the per-scope HMAC key from a secret access key, and the
//! HMAC-SHA-256 primitive the derivation and the signature check share. The key is zeroized on
//! drop and never printed.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::TERMINATOR;

type HmacSha256 = Hmac<Sha256>;

/// The SigV4 signing key: HMAC chain `kSecret = "AWS4" + secret` → date → region → service →
/// `aws4_request`. Zeroized on drop; deliberately neither `Clone` nor (derived) `Debug`.
pub struct SigningKey(pub(super) [u8; 32]);

impl SigningKey {
    /// Derives the key for one credential scope.
    pub fn derive(secret_access_key: &[u8], scope_date: &str, region: &str, service: &str) -> SigningKey {
        let mut k_secret = Zeroizing::new(Vec::with_capacity(secret_access_key.len().saturating_add(4)));
        k_secret.extend_from_slice(b"AWS4");
        k_secret.extend_from_slice(secret_access_key);
        let k_date = Zeroizing::new(hmac_sha256(&k_secret, scope_date.as_bytes()));
        let k_region = Zeroizing::new(hmac_sha256(&*k_date, region.as_bytes()));
        let k_service = Zeroizing::new(hmac_sha256(&*k_region, service.as_bytes()));
        SigningKey(hmac_sha256(&*k_service, TERMINATOR.as_bytes()))
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC (RFC 2104) is defined for keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
