//! The audit log: one hash chain per tenant (and one for the operator),
//! appended inside the enclave for every request, sealed in the host store,
//! heads signed with the enclave's audit key. Format: `ARCHITECTURE.md`.

pub mod chain;
pub mod context;
pub mod record;
