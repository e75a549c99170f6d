//! The keystore domain: keys, aliases, what falls due on them, policy
//! enforcement, cryptography with keys (`crypto`, `mac`) and attested
//! recipients (`recipient`), over the sealed-record store. Knows nothing of JSON or HTTP
//! and never imports the request layer (`api`): functions take the request
//! context ([`crate::context::Ctx`]) or, for work without a request (the
//! sweep), the store itself, and return [`crate::error::KmsError`].

pub mod aliases;
pub mod crypto;
pub mod due;
pub mod keys;
pub mod mac;
pub mod policy;
pub mod recipient;
