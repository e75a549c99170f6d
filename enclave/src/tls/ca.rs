//! The enclave CA: the default certificate path. A deployment CA whose key
//! is born in the enclave and kept only sealed issues the serving
//! certificate for the configured names. Clients trust its certificate
//! (`ca.pem`, `--ca-bundle`, `AWS_CA_BUNDLE`); the host can read that
//! certificate but can neither issue with the CA nor see the serving key.
//!
//! Certificates are built with rcgen over aws-lc-rs keys (the crate and the
//! library rustls itself uses; see ARCHITECTURE.md).

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::identity::{KeyRecord, PrivateKey};
use super::{NAMESPACE, TlsError, TlsName, subject_params};
use crate::store::Records;

const CA_RECORD: &str = "ca";

/// How long the CA certificate is valid.
pub const CA_VALIDITY: time::Duration = time::Duration::days(10 * 365);
/// How long a serving certificate it issues is valid.
pub const LEAF_VALIDITY: time::Duration = time::Duration::days(365);
/// Certificates start this long before `now`, for clients whose clock is behind.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// The sealed form of the CA: its key, certificate and name. Wiped on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct CaRecord {
    key: KeyRecord,
    #[serde(with = "serde_bytes")]
    certificate: Vec<u8>,
    common_name: String,
}

/// The deployment CA. No `Debug`, `Clone` or `Serialize`: it holds a key.
pub struct EnclaveCa {
    key: PrivateKey,
    certificate: CertificateDer<'static>,
    common_name: String,
}

impl EnclaveCa {
    /// The CA of this deployment, created and persisted on first start.
    pub(crate) async fn load_or_create(records: &Records<'_>, now: OffsetDateTime) -> Result<Self, TlsError> {
        if let Some(record) = records.get::<CaRecord>(NAMESPACE, CA_RECORD).await? {
            return Ok(EnclaveCa {
                key: PrivateKey::from_record(&record.key, CA_RECORD)?,
                certificate: CertificateDer::from(record.certificate.clone()),
                common_name: record.common_name.clone(),
            });
        }
        let ca = Self::create(now)?;
        let record = CaRecord {
            key: ca.key.to_record(),
            certificate: ca.certificate.to_vec(),
            common_name: ca.common_name.clone(),
        };
        records.put(NAMESPACE, CA_RECORD, &record).await?;
        tracing::info!(common_name = %ca.common_name, "TLS: created the enclave CA");
        Ok(ca)
    }

    /// A new CA: a fresh key and a self-signed certificate whose name carries
    /// a random suffix, so two deployments' CAs are told apart.
    fn create(now: OffsetDateTime) -> Result<Self, TlsError> {
        let key = PrivateKey::generate()?;
        let mut suffix = [0u8; 4];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
        let common_name = format!("Keyward enclave CA {}", hex::encode(suffix));
        let mut params = Self::issuer_params(&common_name);
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let certificate = params.self_signed(key.pair())?.der().clone();
        Ok(EnclaveCa {
            key,
            certificate,
            common_name,
        })
    }

    /// What an issued certificate takes from its issuer (name, key
    /// identifier method, key usages); rebuilt identically at every start.
    fn issuer_params(common_name: &str) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Keyward");
        dn.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    /// A serving certificate for `key` and `names`, valid from `now` (minus
    /// a little) for [`LEAF_VALIDITY`] (never past the CA's own expiry).
    pub(crate) fn issue(
        &self,
        key: &PrivateKey,
        names: &[TlsName],
        now: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, TlsError> {
        let mut params = subject_params(names)?;
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        if let Ok((_, ca_not_after)) = super::import::validity(&self.certificate) {
            params.not_after = params.not_after.min(ca_not_after);
        }
        params.serial_number = Some(random_serial());
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = rcgen::Issuer::new(Self::issuer_params(&self.common_name), self.key.pair());
        Ok(params.signed_by(key.pair(), &issuer)?.der().clone())
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub fn certificate_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.certificate)
    }

    pub fn certificate_sha256(&self) -> Vec<u8> {
        Sha256::digest(&self.certificate).to_vec()
    }
}

/// 16 random bytes, positive and of fixed length (RFC 5280 4.1.2.2).
fn random_serial() -> rcgen::SerialNumber {
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&serial)
}

/// RFC 7468 text encoding, 64 columns.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
