//! TLS for the load client and the echo baseline: the client trusts one CA
//! bundle (the service's `ca.pem`, or the echo's own CA), and the echo serves
//! a certificate of the same shape as the enclave's (an ECDSA P-256 leaf for
//! `localhost` and `127.0.0.1`, issued by a P-256 CA made with rcgen) with the
//! same rustls provider, versions and suites as `enclave/src/tls/config.rs`,
//! so that the service / echo ratio compares like with like.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self as provider, cipher_suite};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN: HTTP/1.1 only, as the enclave.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// aws-lc-rs with the suites the enclave serves, in its order of preference
/// (a copy of `keyward_enclave::tls::config::crypto_provider`: this tool does
/// not link the enclave).
fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..provider::default_provider()
    }
}

/// How the client reaches an endpoint over TLS: whom it trusts and the name
/// it checks in the certificate (a DNS name or an IP address).
#[derive(Clone)]
pub(crate) struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts exactly the certificates of the PEM bundle `ca_pem` (no system
    /// roots) and checks `host` (an endpoint's host, without port or
    /// brackets) in the server's certificate.
    pub(crate) fn new(ca_pem: &[u8], host: &str) -> anyhow::Result<ClientTls> {
        Ok(ClientTls {
            config: client_config(ca_pem)?,
            server_name: ServerName::try_from(host.to_owned())
                .with_context(|| format!("{host:?} is not a TLS name"))?,
        })
    }
}

/// A client configuration trusting the certificates of `ca_pem` only.
pub(crate) fn client_config(ca_pem: &[u8]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.context("the CA bundle is not PEM certificates")?;
        roots
            .add(certificate)
            .context("a certificate of the CA bundle is not a usable trust anchor")?;
        count += 1;
    }
    if count == 0 {
        bail!("the CA bundle holds no certificate");
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The echo baseline's PKI: a CA and a serving certificate for `localhost`
/// and `127.0.0.1` it issued, both ECDSA P-256, made fresh for each run.
pub(crate) struct EchoPki {
    pub(crate) ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl EchoPki {
    pub(crate) fn generate() -> anyhow::Result<EchoPki> {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "keyward-load");
        // A random suffix, as the enclave CA's: two CAs are told apart by name.
        let suffix: u32 = rand::random();
        dn.push(rcgen::DnType::CommonName, format!("keyward-load echo CA {suffix:08x}"));
        ca_params.distinguished_name = dn;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_certificate = ca_params.self_signed(&ca_key)?;

        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "keyward-load");
        dn.push(rcgen::DnType::CommonName, "localhost");
        leaf_params.distinguished_name = dn;
        leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
        Ok(EchoPki {
            ca_pem: ca_certificate.pem(),
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    /// The echo's server configuration: the enclave's provider, versions,
    /// suites, ALPN and suite choice.
    pub(crate) fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let err = client_config(b"not a pem bundle").err().map(|e| format!("{e:#}"));
        assert_eq!(err.as_deref(), Some("the CA bundle holds no certificate"));
        let garbled = b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n";
        let err = client_config(garbled).err().map(|e| format!("{e:#}"));
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("the CA bundle is not PEM")),
            "{err:?}"
        );
    }

    #[test]
    fn the_echo_pki_is_a_p256_leaf_under_its_ca() -> anyhow::Result<()> {
        let pki = EchoPki::generate()?;
        assert!(client_config(pki.ca_pem.as_bytes()).is_ok());
        assert_eq!(pki.chain.len(), 1);
        // The leaf verifies under the CA for both names, as rustls clients check it.
        let anchors: Vec<_> = CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()).collect::<Result<_, _>>()?;
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(anchors);
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(provider::default_provider()),
        )
        .build()?;
        for name in ["localhost", "127.0.0.1"] {
            let server_name = ServerName::try_from(name)?;
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &pki.chain[0],
                &[],
                &server_name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )?;
        }
        // A P-256 key: its PKCS#8 names the prime256v1 curve.
        const PRIME256V1_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(
            pki.key
                .secret_pkcs8_der()
                .windows(PRIME256V1_OID.len())
                .any(|w| w == PRIME256V1_OID)
        );
        Ok(())
    }

    #[test]
    fn names_are_dns_names_or_ip_addresses() {
        let pki = EchoPki::generate().ok();
        let ca = pki.as_ref().map(|p| p.ca_pem.clone()).unwrap_or_default();
        assert!(matches!(
            ClientTls::new(ca.as_bytes(), "127.0.0.1").map(|t| t.server_name),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            ClientTls::new(ca.as_bytes(), "localhost").map(|t| t.server_name),
            Ok(ServerName::DnsName(_))
        ));
        assert!(ClientTls::new(ca.as_bytes(), "bad name!").is_err());
    }
}
