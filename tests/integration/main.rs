//! End-to-end tests of `keyward dev`: the launcher, the mock-mode enclave
//! child and the host proxy, driven through the official AWS SDK for KMS and
//! through raw signed HTTP for what an SDK cannot send.
//!
//! Every test starts its own `keyward dev` on its own temp data dir with port
//! 0, and stops it with SIGTERM when done (also on panic: see
//! [`harness::Keyward`]'s `Drop`). Tests can run in parallel.

mod aliases;
mod api;
mod asymmetric;
mod at_rest;
mod attestation_policy;
mod audit;
mod auth;
mod byok;
mod compat;
mod crash;
mod deletion_clock;
mod errors;
mod harness;
mod hmac;
mod lifecycle;
mod metrics;
mod persistence;
mod policies;
mod policy_sandbox;
mod principals;
mod recipient;
mod roles;
mod rotation;
mod self_attestation;
mod socket;
mod split;
mod storage;
mod tags;
mod tamper;
mod tenancy;
mod throttle;
