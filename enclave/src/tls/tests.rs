//! The TLS identity, the enclave CA, the CSR and chain import (serving is
//! tested in `serve/tests.rs`).

use std::sync::Arc;

use der::{Decode, Encode};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::*;
use crate::seal::Sealer;
use crate::secret::Key256;
use crate::store::{MemoryStore, Records};

pub(crate) struct Fixture {
    pub store: Arc<MemoryStore>,
    pub sealer: Sealer,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            store: MemoryStore::new(),
            sealer: Sealer::new(Arc::new(Key256::generate())),
        }
    }

    pub fn records(&self) -> Records<'_> {
        Records::new(&*self.store, &self.sealer)
    }

    pub async fn identity(&self) -> TlsIdentity {
        TlsIdentity::load_or_create(&self.records(), &TlsName::dev_defaults(), OffsetDateTime::now_utc())
            .await
            .expect("the TLS identity loads")
    }
}

/// An operator's CA, made in the test as `openssl` would.
pub(crate) struct OperatorCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pub cert: CertificateDer<'static>,
}

impl OperatorCa {
    pub fn new(common_name: &str) -> Self {
        Self::with_key(common_name, rcgen::KeyPair::generate().expect("key"))
    }

    fn with_key(common_name: &str, key: rcgen::KeyPair) -> Self {
        let now = OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.self_signed(&key).expect("self-signed").der().clone();
        OperatorCa { key, params, cert }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, common_name: &str) -> OperatorCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut ca = Self::with_key(common_name, key);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        ca.cert = ca.params.signed_by(&ca.key, &issuer).expect("signed").der().clone();
        ca
    }

    /// A server certificate for `public`, valid for `names` over `[from, until]`.
    pub fn issue(
        &self,
        public: &impl rcgen::PublicKeyData,
        names: &[&str],
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("names");
        params.not_before = from;
        params.not_after = until;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        params.signed_by(public, &issuer).expect("signed").der().clone()
    }

    pub fn issue_now(&self, public: &impl rcgen::PublicKeyData, names: &[&str]) -> CertificateDer<'static> {
        let now = OffsetDateTime::now_utc();
        self.issue(
            public,
            names,
            now - time::Duration::hours(1),
            now + time::Duration::days(90),
        )
    }
}

pub(crate) fn pem(chain: &[&CertificateDer<'_>]) -> Vec<u8> {
    chain
        .iter()
        .map(|c| ca::pem_encode("CERTIFICATE", c))
        .collect::<String>()
        .into_bytes()
}

fn verifies_for(leaf: &CertificateDer<'_>, anchor: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(anchor) = webpki::anchor_from_trusted_cert(anchor) else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let now = rustls::pki_types::UnixTime::now();
    let path_ok = ee
        .verify_for_usage(
            algorithms,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok();
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    path_ok && ee.verify_is_valid_for_subject_name(&server_name).is_ok()
}

#[test]
fn tls_names_parse_as_dns_names_or_ip_addresses() {
    assert_eq!(
        TlsName::parse("Kms.Example.COM").expect("dns"),
        TlsName::Dns("kms.example.com".into())
    );
    assert!(matches!(TlsName::parse("127.0.0.1"), Ok(TlsName::Ip(_))));
    assert!(matches!(TlsName::parse("::1"), Ok(TlsName::Ip(_))));
    for bad in ["", "*.example.com", "two words", "a..b", "under_score\u{e9}"] {
        assert!(TlsName::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn the_enclave_ca_issues_the_serving_certificate_for_the_configured_names() {
    let fixture = Fixture::new();
    let identity = fixture.identity().await;
    assert_eq!(identity.source(), ChainSource::EnclaveCa);
    let leaf = &identity.chain()[0];
    let ca = identity.ca_certificate_der();
    assert!(verifies_for(leaf, ca, "localhost"));
    assert!(verifies_for(leaf, ca, "127.0.0.1"));
    assert!(!verifies_for(leaf, ca, "example.com"));
    assert!(!verifies_for(leaf, &OperatorCa::new("other").cert, "localhost"));
    // The exported CA certificate is the PEM of the anchor.
    let pem_ca = identity.ca_certificate_pem();
    assert!(pem_ca.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let parsed: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(pem_ca.as_bytes())
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .expect("PEM");
    assert_eq!(parsed, vec![ca.clone()]);
    // The CA is a CA; the leaf is not.
    let leaf_cert = x509_cert::Certificate::from_der(leaf).expect("leaf parses");
    let ca_cert = x509_cert::Certificate::from_der(ca).expect("CA parses");
    assert_eq!(leaf_cert.tbs_certificate.issuer, ca_cert.tbs_certificate.subject);
}

#[tokio::test]
async fn the_identity_survives_a_reload_from_its_sealed_records() {
    let fixture = Fixture::new();
    let first = fixture.identity().await;
    let again = fixture.identity().await;
    assert_eq!(first.spki_der(), again.spki_der());
    assert_eq!(first.ca_certificate_der(), again.ca_certificate_der());
    assert_eq!(
        first.chain(),
        again.chain(),
        "an up-to-date certificate is not re-issued"
    );

    // The private key is stored sealed only.
    use p256::pkcs8::DecodePrivateKey as _;
    let secret = p256::SecretKey::from_pkcs8_der(first.key().pair().serialized_der()).expect("PKCS#8");
    let scalar = secret.to_bytes();
    assert!(
        fixture
            .store
            .all_values()
            .iter()
            .all(|v| !v.windows(scalar.len()).any(|w| w == scalar.as_slice())),
        "the serving key's scalar is in the store"
    );
    // Records sealed under another root do not open: an error, never a new key.
    let foreign = Fixture {
        store: Arc::clone(&fixture.store),
        sealer: Sealer::new(Arc::new(Key256::generate())),
    };
    assert!(
        TlsIdentity::load_or_create(&foreign.records(), &TlsName::dev_defaults(), OffsetDateTime::now_utc())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn changed_names_or_near_expiry_reissue_the_leaf_with_the_same_key_and_ca() {
    let fixture = Fixture::new();
    let first = fixture.identity().await;
    let names = [TlsName::parse("kms.example.com").expect("name")];
    let renamed = TlsIdentity::load_or_create(&fixture.records(), &names, OffsetDateTime::now_utc())
        .await
        .expect("loads");
    assert_eq!(renamed.spki_der(), first.spki_der());
    assert_eq!(renamed.ca_certificate_der(), first.ca_certificate_der());
    assert_ne!(renamed.chain(), first.chain());
    assert!(verifies_for(
        &renamed.chain()[0],
        renamed.ca_certificate_der(),
        "kms.example.com"
    ));
    assert!(!verifies_for(
        &renamed.chain()[0],
        renamed.ca_certificate_der(),
        "localhost"
    ));

    // Within the renewal window of its expiry, a start re-issues.
    let later = OffsetDateTime::now_utc() + ca::LEAF_VALIDITY - time::Duration::days(10);
    assert!(renamed.renewal_due(later));
    assert!(!renamed.renewal_due(OffsetDateTime::now_utc()));
    let renewed = TlsIdentity::load_or_create(&fixture.records(), &names, later)
        .await
        .expect("loads");
    assert_ne!(renewed.chain(), renamed.chain());
    assert!(!renewed.renewal_due(later));
}

#[tokio::test]
async fn the_csr_parses_and_carries_the_enclave_key() {
    let fixture = Fixture::new();
    let identity = fixture.identity().await;
    let pem = identity.certificate_request_pem().expect("CSR");
    let der = <rustls::pki_types::CertificateSigningRequestDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_slice(
        pem.as_bytes(),
    )
    .expect("PEM CERTIFICATE REQUEST");
    let request = x509_cert::request::CertReq::from_der(&der).expect("PKCS#10 parses");
    assert_eq!(request.info.public_key.to_der().expect("SPKI"), identity.spki_der());
    // Signed by the enclave key: proof of possession.
    let info = request.info.to_der().expect("info");
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        request.info.public_key.subject_public_key.raw_bytes(),
    );
    key.verify(&info, request.signature.raw_bytes())
        .expect("the CSR is signed by the serving key");
    assert!(
        request.info.subject.to_string().contains("CN=localhost"),
        "{}",
        request.info.subject
    );
}

#[tokio::test]
async fn an_operator_chain_is_installed_and_survives_a_reload() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    let spki_hash = identity.spki_sha256();
    let root = OperatorCa::new("Operator Root");
    let intermediate = root.intermediate("Operator Issuing CA");
    let leaf = intermediate.issue_now(identity.key().pair(), &["kms.example.com"]);
    // Leaf and intermediate, without the root: accepted.
    identity
        .import_chain(
            &fixture.records(),
            &pem(&[&leaf, &intermediate.cert]),
            OffsetDateTime::now_utc(),
        )
        .await
        .expect("imported");
    assert_eq!(identity.source(), ChainSource::Operator);
    assert_eq!(identity.chain(), &[leaf.clone(), intermediate.cert.clone()]);
    assert_eq!(identity.spki_sha256(), spki_hash);
    identity.certified_key().expect("rustls accepts the chain and the key");

    let reloaded = fixture.identity().await;
    assert_eq!(reloaded.source(), ChainSource::Operator);
    assert_eq!(reloaded.chain(), identity.chain());
    assert!(!reloaded.renewal_due(OffsetDateTime::now_utc() + time::Duration::days(3650)));

    // The full chain with its root is accepted too.
    let mut identity = reloaded;
    identity
        .import_chain(
            &fixture.records(),
            &pem(&[&leaf, &intermediate.cert, &root.cert]),
            OffsetDateTime::now_utc(),
        )
        .await
        .expect("imported with the root");
    assert_eq!(identity.chain().len(), 3);
}

async fn refused(identity: &mut TlsIdentity, fixture: &Fixture, pem: &[u8]) -> ImportError {
    let before = identity.chain().to_vec();
    let source = identity.source();
    let error = match identity
        .import_chain(&fixture.records(), pem, OffsetDateTime::now_utc())
        .await
    {
        Err(TlsError::Import(e)) => e,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(()) => panic!("an invalid chain was installed"),
    };
    assert_eq!(
        identity.chain(),
        before.as_slice(),
        "a refused chain changed the identity"
    );
    assert_eq!(identity.source(), source);
    let reloaded = fixture.identity().await;
    assert_eq!(reloaded.chain(), before.as_slice(), "a refused chain was persisted");
    error
}

#[tokio::test]
async fn a_chain_for_another_key_is_refused() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    let ca = OperatorCa::new("Operator Root");
    let other_key = rcgen::KeyPair::generate().expect("key");
    let leaf = ca.issue_now(&other_key, &["localhost"]);
    let error = refused(&mut identity, &fixture, &pem(&[&leaf, &ca.cert])).await;
    assert_eq!(error, ImportError::KeyMismatch);
    assert!(
        error.to_string().contains("does not match the enclave's key"),
        "{error}"
    );
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_chain_is_refused() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    let ca = OperatorCa::new("Operator Root");
    let now = OffsetDateTime::now_utc();
    let expired = ca.issue(
        identity.key().pair(),
        &["localhost"],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let error = refused(&mut identity, &fixture, &pem(&[&expired, &ca.cert])).await;
    assert!(matches!(error, ImportError::Expired(1, _)), "{error:?}");
    assert!(error.to_string().contains("expired"), "{error}");

    let future = ca.issue(
        identity.key().pair(),
        &["localhost"],
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );
    let error = refused(&mut identity, &fixture, &pem(&[&future, &ca.cert])).await;
    assert!(matches!(error, ImportError::NotYetValid(1, _)), "{error:?}");
}

#[tokio::test]
async fn a_list_that_is_not_a_chain_is_refused() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    let ca = OperatorCa::new("Operator Root");
    let leaf = ca.issue_now(identity.key().pair(), &["localhost"]);

    // Followed by an unrelated CA.
    let unrelated = OperatorCa::new("Someone Else");
    let error = refused(&mut identity, &fixture, &pem(&[&leaf, &unrelated.cert])).await;
    assert_eq!(error, ImportError::NotIssuedByNext(1));
    assert!(error.to_string().contains("not a chain"), "{error}");

    // Followed by an impostor with the issuer's name but another key: the
    // names link, the signature does not.
    let impostor = OperatorCa::new("Operator Root");
    let error = refused(&mut identity, &fixture, &pem(&[&leaf, &impostor.cert])).await;
    assert!(matches!(error, ImportError::BadSignature(_)), "{error:?}");
    assert!(error.to_string().contains("not a chain"), "{error}");

    // Root first, leaf last: the "leaf" is not the enclave's key.
    let error = refused(&mut identity, &fixture, &pem(&[&ca.cert, &leaf])).await;
    assert_eq!(error, ImportError::KeyMismatch);
}

#[tokio::test]
async fn text_that_is_not_pem_certificates_is_refused() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    for text in [
        &b""[..],
        b"hello",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ] {
        let error = refused(&mut identity, &fixture, text).await;
        assert_eq!(error, ImportError::NotPem, "{}", String::from_utf8_lossy(text));
        assert!(error.to_string().contains("not PEM"), "{error}");
    }
    // PEM whose content is not a certificate.
    let error = refused(
        &mut identity,
        &fixture,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .await;
    assert_eq!(error, ImportError::Malformed(1));
    // Too many certificates.
    let ca = OperatorCa::new("Operator Root");
    let leaf = ca.issue_now(identity.key().pair(), &["localhost"]);
    let long: Vec<&CertificateDer<'_>> = std::iter::once(&leaf)
        .chain(std::iter::repeat_n(&ca.cert, import::MAX_CHAIN))
        .collect();
    assert_eq!(
        refused(&mut identity, &fixture, &pem(&long)).await,
        ImportError::TooLong
    );
}

#[tokio::test]
async fn the_spki_hash_is_that_of_the_served_certificate() {
    let fixture = Fixture::new();
    let mut identity = fixture.identity().await;
    let expected: [u8; 32] = Sha256::digest(identity.spki_der()).into();
    assert_eq!(identity.spki_sha256(), expected);
    assert_eq!(spki_sha256(&identity.chain()[0]).expect("parses"), expected);
    let ca = OperatorCa::new("Operator Root");
    let leaf = ca.issue_now(identity.key().pair(), &["localhost"]);
    identity
        .import_chain(&fixture.records(), &pem(&[&leaf, &ca.cert]), OffsetDateTime::now_utc())
        .await
        .expect("imported");
    assert_eq!(spki_sha256(&identity.chain()[0]).expect("parses"), expected);
    assert_ne!(spki_sha256(&ca.cert).expect("parses"), expected);
}

proptest::proptest! {
    /// Whatever the operator sends, validation answers; it never panics.
    #[test]
    fn chain_validation_never_panics(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        wrap in proptest::prelude::any::<bool>(),
    ) {
        let input = if wrap { ca::pem_encode("CERTIFICATE", &bytes).into_bytes() } else { bytes };
        let result = import::validate_chain(&input, b"not a key", OffsetDateTime::now_utc());
        proptest::prop_assert!(result.is_err());
    }
}
