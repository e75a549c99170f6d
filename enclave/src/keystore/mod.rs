//! The keystore domain: keys (creation, state, rotation, tags), aliases,
//! what falls due on keys, cryptography with keys (`crypto`, `mac`,
//! `asymmetric`), attested recipients (`recipient`), BYOK import, policy
//! modules and their enforcement, key protection locks (`protection`), tenants, access keys, attestation and the
//! audit log as callers read it, over the sealed-record store. Knows nothing
//! of JSON or HTTP and never imports the request layer (`api`): functions
//! take the request context ([`crate::context::Ctx`]) or, for work without a
//! request (the sweep, boot's dev tenant in [`tenants`]), the store itself,
//! and return [`crate::error::KmsError`].

pub mod alias_ops;
pub mod aliases;
pub mod asymmetric;
pub mod attestation;
pub mod audit_log;
pub mod backup;
pub mod credentials;
pub mod crypto;
pub mod custody;
pub mod due;
pub mod import;
pub mod keys;
pub mod lifecycle;
pub mod mac;
pub mod policy;
pub mod policy_modules;
pub mod protection;
pub mod recipient;
pub mod rotation;
pub mod tags;
pub mod tenants;
