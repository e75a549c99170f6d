//! TLS that ends inside the enclave (issue 16; design in `docs/tls.md`).
//!
//! The client's TLS session terminates here, so the host only ever carries
//! ciphertext. This module is the enclave-side core:
//!
//! * [`identity`]: the serving key, an ECDSA P-256 key born in the enclave
//!   (aws-lc-rs) and kept only sealed in the host store, and the certificate
//!   chain served with it;
//! * [`ca`]: the default certificate path, a deployment CA whose key is also
//!   born and sealed here and which issues the serving certificate for the
//!   configured names (`--tls-name`);
//! * [`csr`] and [`import`]: the operator-CA path, a PKCS#10 request for the
//!   serving key and the validation of the chain the operator brings back;
//! * [`config`]: the rustls server configuration (aws-lc-rs, TLS 1.3 and 1.2,
//!   the suites the AWS SDKs offer) with a certificate slot that an import
//!   replaces without a restart;
//! * [`serve`]: HTTPS on one byte stream, rustls + hyper, with the request
//!   limits and timeouts that used to live in the host proxy.
//!
//! Nothing here knows the KMS API: [`serve::serve_tls_stream`] hands each
//! request to a handler as a [`keyward_wire::ApiRequest`].

pub mod ca;
pub mod config;
pub mod csr;
pub mod identity;
pub mod import;
pub mod live;
pub mod serve;
mod write_deadline;

use std::net::IpAddr;

pub use config::{CertSlot, server_config};
pub use identity::{ChainSource, TlsIdentity, spki_sha256};
pub use import::ImportError;
pub use live::LiveTls;
pub use serve::{Limits, Refusal, Refuser, ServeError, TlsServer, serve_tls_stream};

use crate::store::StoreError;

/// Store namespace of the TLS records (serving key, enclave CA, chain); every
/// record is sealed like any other.
pub const NAMESPACE: &str = "tls";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the TLS name {0:?} is neither a DNS name nor an IP address")]
    InvalidName(String),
    #[error("no TLS name is configured")]
    NoNames,
    #[error("cannot build a certificate: {0}")]
    Certificate(String),
    #[error("the sealed TLS record {0} is unusable: {1}")]
    Record(&'static str, String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Import(#[from] ImportError),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Certificate(e.to_string())
    }
}

/// A name the serving certificate is valid for (`--tls-name`, repeatable): a
/// DNS name (a `dNSName` SAN) or an IP address (an `iPAddress` SAN).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsName {
    Dns(String),
    Ip(IpAddr),
}

impl TlsName {
    /// Parses a `--tls-name` value. DNS names are lower-cased and must be
    /// valid hostnames (no wildcards).
    pub fn parse(value: &str) -> Result<Self, TlsError> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(TlsName::Ip(ip));
        }
        let lower = value.to_ascii_lowercase();
        if lower.contains('*') || rustls::pki_types::DnsName::try_from(lower.as_str()).is_err() {
            return Err(TlsError::InvalidName(value.to_owned()));
        }
        Ok(TlsName::Dns(lower))
    }

    /// The names a dev deployment serves: `localhost` and `127.0.0.1`.
    pub fn dev_defaults() -> Vec<TlsName> {
        vec![
            TlsName::Dns("localhost".to_owned()),
            TlsName::Ip(IpAddr::from([127, 0, 0, 1])),
        ]
    }

    fn san(&self) -> Result<rcgen::SanType, TlsError> {
        Ok(match self {
            TlsName::Dns(name) => rcgen::SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| TlsError::InvalidName(name.clone()))?,
            ),
            TlsName::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        })
    }
}

impl std::fmt::Display for TlsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsName::Dns(name) => f.write_str(name),
            TlsName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Sorted, without duplicates: the form names are compared and stored in.
fn canonical_names(names: &[TlsName]) -> Result<Vec<TlsName>, TlsError> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(TlsError::NoNames);
    }
    Ok(names)
}

/// Subject alternative names and the common name (the first name) of a
/// certificate or request for `names`.
fn subject_params(names: &[TlsName]) -> Result<rcgen::CertificateParams, TlsError> {
    let names = canonical_names(names)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = names.iter().map(TlsName::san).collect::<Result<_, _>>()?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Keyward");
    dn.push(rcgen::DnType::CommonName, names[0].to_string());
    params.distinguished_name = dn;
    Ok(params)
}

#[cfg(test)]
pub(crate) mod tests;
