//! Keys: the hierarchy above customer master keys, their stored records, and
//! the ciphertext format they produce.

pub mod aead;
pub mod blob;
pub mod context;
pub mod hierarchy;
pub mod import;
pub mod record;
pub mod spec;
