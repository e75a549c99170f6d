//! The operator-CA path, first half: a PKCS#10 certificate request (RFC
//! 2986) for the enclave's serving key, signed by that key, for the
//! configured names (`Keyward.GetTlsCertificateRequest`, `kmsctl tls csr`).
//! The operator's CA signs it; [`super::import`] takes the chain back.

use super::identity::PrivateKey;
use super::{TlsError, TlsName, subject_params};

/// PEM (`CERTIFICATE REQUEST`): subject `O=Keyward, CN=<first name>`, the
/// names as subject alternative names, signed with ECDSA P-256 / SHA-256.
pub(crate) fn certificate_request_pem(key: &PrivateKey, names: &[TlsName]) -> Result<String, TlsError> {
    let params = subject_params(names)?;
    Ok(params.serialize_request(key.pair())?.pem()?)
}
