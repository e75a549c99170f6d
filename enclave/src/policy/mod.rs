//! Customer key policies: WebAssembly modules (ABI v1, `policies/ABI.md`)
//! that the enclave runs in a wasmtime sandbox after built-in authorization,
//! on every operation that acts on a key: first the tenant's default module,
//! then the key's. A module that traps, runs out of fuel or time, or answers
//! anything but a well-formed decision denies.

pub mod context;
pub mod modules;
pub mod sandbox;
pub mod scheduler;
