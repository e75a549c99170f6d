//! The keystore domain: keys (creation, state, rotation, tags), aliases,
//! what falls due on keys, and policy enforcement, over the sealed-record
//! store. Knows nothing of JSON or HTTP and never imports the request layer
//! (`api`): functions take the request context ([`crate::context::Ctx`]) or,
//! for work without a request (the sweep), the store itself, and return
//! [`crate::error::KmsError`].

pub mod alias_ops;
pub mod aliases;
pub mod due;
pub mod keys;
pub mod lifecycle;
pub mod policy;
pub mod rotation;
pub mod tags;
