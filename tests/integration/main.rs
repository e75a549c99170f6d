//! End-to-end tests of `keyward dev`: the launcher, the mock-mode enclave
//! child and the host proxy, driven through the official AWS SDK for KMS and
//! through raw signed HTTP for what an SDK cannot send.
//!
//! Every test starts its own `keyward dev` on its own temp data dir with port
//! 0, and stops it with SIGTERM when done (also on panic: see
//! [`harness::Keyward`]'s `Drop`). Tests can run in parallel.
//!
//! Only what needs real processes lives here: the launcher and the proxy,
//! the wire between the processes, crashes and restarts, the on-disk store,
//! the tampering proxy, sockets, metrics, multi-tenant flows through
//! `keyward-sdk`. Operations that only need the enclave's request handling
//! (keys, aliases, tags, rotation, lifecycle, cryptography) are tested in
//! process, which is much cheaper: `tests/inprocess`.
//!
//! The tests of hostile policy modules and floods (`policy_sandbox::`
//! hostile modules and memory-grow bombs, `abuse::` flood) run the enclave
//! with `--memory-budget 512` inside a 512 MiB memory cgroup without swap
//! and assert that nothing in it was OOM-killed ([`memcap`]; needs root;
//! without a writable memory cgroup they warn loudly, and fail under
//! `CI=true`).

mod abuse;
mod api;
mod at_rest;
mod attestation_policy;
mod attested_channel;
mod audit;
mod auth;
mod backup;
mod byok;
mod cluster;
mod compat;
mod crash;
mod custody;
mod custody_kms;
mod deletion_clock;
mod errors;
mod fairness;
mod harness;
mod memcap;
mod metrics;
mod persistence;
mod policies;
mod policy_sandbox;
mod principals;
mod recipient;
mod roles;
mod rollback;
mod self_attestation;
mod socket;
mod split;
mod storage;
mod tamper;
mod tenancy;
mod throttle;
mod tls_transport;
