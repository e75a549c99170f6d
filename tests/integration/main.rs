//! End-to-end tests of `keyward dev`: the launcher, the mock-mode enclave
//! child and the host proxy, driven through the official AWS SDK for KMS and
//! through raw signed HTTP for what an SDK cannot send.
//!
//! Every test starts its own `keyward dev` on its own temp data dir with port
//! 0, and stops it with SIGTERM when done (also on panic: see
//! [`harness::Keyward`]'s `Drop`). Tests can run in parallel.

mod api;
mod at_rest;
mod auth;
mod compat;
mod crash;
mod errors;
mod harness;
mod persistence;
mod socket;
