//! # keyward-sdk: client library for Keyward
//!
//! Keyward speaks the AWS KMS JSON 1.1 API, so for every `TrentService.*`
//! operation (CreateKey, Encrypt, Decrypt, GenerateDataKey, …) use an
//! unmodified AWS SDK with its endpoint pointed at Keyward, for example the
//! official `aws-sdk-kms` crate:
//!
//! ```text
//! let config = aws_sdk_kms::Config::builder()
//!     .endpoint_url("https://127.0.0.1:7800") // with the CA bundle of the deployment
//!     .region(aws_sdk_kms::config::Region::new("us-east-1"))
//!     .credentials_provider(aws_sdk_kms::config::Credentials::new(akid, secret, None, None, "keyward"))
//!     .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
//!     .build();
//! let kms = aws_sdk_kms::Client::from_conf(config);
//! ```
//!
//! This crate carries what no AWS SDK has:
//!
//! - [`Client`]: typed async calls for the `Keyward.*` extension operations
//!   (tenants, access keys, the audit log), each a `POST /` with
//!   `Content-Type: application/x-amz-json-1.1`, `X-Amz-Target: Keyward.<Op>`
//!   and a JSON body, SigV4-signed (service `kms`) exactly as an AWS SDK signs
//!   a KMS call. [`Client::call`] sends any other operation with the same
//!   framing.
//! - [`audit`]: the client-side verifier of the audit hash chain
//!   ([`audit::verify_chain`]).
//! - [`recipient`] and [`attestation`]: for attested workloads, the RSA key
//!   that opens `CiphertextForRecipient` and the attestation documents
//!   (Nitro NSM or mock) that carry it; and [`attestation::verify_enclave`] /
//!   [`Client::attest_enclave`], which verify the enclave's own attestation
//!   and yield its audit key to pin.
//! - [`custody`]: the custodian's and operator's side of root-key custody
//!   (key files, share packages, sealing a share for an attested unseal
//!   session, the operator credential package).
//! - the `kmsctl` command-line tool (feature `cli`, on by default).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keyward_sdk::{Client, Role};
//! let client = Client::new("https://127.0.0.1:7800", "us-east-1", "AKIA…", "secret…")?;
//! let key = client.create_access_key(Role::KeyUser).await?;
//! println!("{} {}", key.access_key_id, key.secret_access_key.expose());
//!
//! let chain = client.fetch_audit_chain().await?;
//! let pinned_key_der: Vec<u8> = std::fs::read("audit-key.der")?;
//! let verified = keyward_sdk::audit::verify_chain(&chain.records, &chain.head, &pinned_key_der)?;
//! println!("{} records of chain {}", verified.records, verified.chain);
//! # Ok(()) }
//! ```
//!
//! ## What the SDK trusts, and what it guarantees
//!
//! The host in front of the enclave (the proxy, its store, the network) is
//! untrusted. The SDK trusts nothing it receives from there: responses are
//! parsed defensively (size-limited, never panicking on malformed input) and
//! audit records are only believed after [`audit::verify_chain`] accepts them.
//!
//! The one thing the audit verifier trusts is **the audit public key it is
//! given** (SPKI DER). Against that key it guarantees that the records it
//! accepted are exactly records `1..=n` of one chain, in order, unaltered,
//! with none missing, none corrupt and none added past the head, and that the
//! head — chain name, sequence `n` and hash of record `n` — was signed by the
//! holder of that key's private half (the enclave). What one verification
//! cannot see: a host that serves an *older*, genuinely signed head together
//! with the records up to it (rollback, e.g. after restarting the enclave on
//! an older copy of its store); [`audit::HeadMemory`] closes that for heads
//! newer than one it verified before: it remembers the last verified head per
//! deployment and chain in a local file and reports a lower sequence as
//! [`audit::FreshnessError::Rollback`], another record at the remembered
//! sequence as [`audit::FreshnessError::Fork`] (`kmsctl audit verify
//! --state FILE`). And if the key itself came from the host (the
//! `AuditPublicKey` field of a response), a host that substitutes both key
//! and chain. Obtain the key out of band (e.g. from an attested enclave) and
//! pin it to close the latter.
//!
//! ```no_run
//! # async fn demo(client: keyward_sdk::Client, pinned_key_der: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! use keyward_sdk::audit::{FreshnessError, HeadMemory};
//! let mut memory = HeadMemory::open("/var/lib/my-verifier/audit-heads.json")?;
//! let chain = client.fetch_audit_chain().await?;
//! match memory.verify_chain(&chain.records, &chain.head, &pinned_key_der) {
//!     Ok((verified, seen)) => println!("{} records, {seen:?}", verified.records),
//!     Err(e @ (FreshnessError::Rollback { .. } | FreshnessError::Fork { .. })) => eprintln!("{e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! Secrets the service returns (`SecretAccessKey`) are held in [`Secret`],
//! which zeroizes its memory on drop and never prints its content in `Debug`;
//! the response buffer it was parsed from is wiped too (best effort: copies
//! inside the HTTP stack are outside the SDK's reach). The client's own
//! secret access key is held the same way.
//!
//! ## Transport: HTTPS only, TLS ending in the enclave
//!
//! Keyward's TLS session ends inside the enclave; the host only forwards
//! bytes. The client speaks `https://` only (rustls, aws-lc-rs provider;
//! `http://` is refused) and checks the certificate against the CA bundle of
//! [`TlsOptions::ca_bundle_pem`] (the deployment's enclave CA,
//! `<data-dir>/tls/ca.pem` in dev; [`TlsOptions::from_env`] reads
//! `AWS_CA_BUNDLE` as the aws CLI does) or else the system's roots:
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keyward_sdk::{Client, TlsOptions};
//! let ca = std::fs::read("keyward-data/tls/ca.pem")?;
//! let client = Client::new("https://127.0.0.1:7800", "us-east-1", "AKIA…", "secret…")?
//!     .with_tls(TlsOptions::default().with_ca_bundle(ca))?;
//! # Ok(()) }
//! ```
//!
//! **Pinning the enclave's key.** [`TlsOptions::pin_spki_sha256`] makes the
//! client also require SHA-256(end-entity SubjectPublicKeyInfo DER) to equal
//! the pin (a rustls `ServerCertVerifier` that runs the normal WebPKI
//! verification first), so a host holding another valid certificate from
//! the same CA is refused. The value to pin is the one the enclave's
//! attestation binds (`tls-spki-sha256:` in `user_data`,
//! [`attestation::EnclaveIdentity::tls_spki_sha256`]).
//! [`Client::get_attestation_document_and_tls_spki`] (and, for any
//! operation, [`Client::call_with_tls_spki`]) return, with the response, the
//! SPKI SHA-256 of the certificate of the very connection that carried it.
#![forbid(unsafe_code)]

pub mod attestation;
pub mod audit;
pub mod backup;
pub mod channel;
mod client;
pub mod custody;
mod error;
pub mod import;
mod model;
pub mod recipient;
mod secret;
pub mod tls;

pub use client::Client;
pub use error::Error;
pub use model::{
    AccessKeyInfo, AuditChain, AuditLogPage, CreatedAccessKey, CreatedTenant, ParseRoleError, Role, Tenant,
};
pub use secret::Secret;
pub use tls::TlsOptions;

/// `X-Amz-Target` prefix of the AWS KMS operations.
pub const AWS_KMS_TARGET_PREFIX: &str = "TrentService.";
/// `X-Amz-Target` prefix of Keyward's extension operations.
pub const KEYWARD_TARGET_PREFIX: &str = "Keyward.";
/// Content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// SigV4 service name of every request.
pub const SIGNING_SERVICE: &str = "kms";
