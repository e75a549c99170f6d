//! In-process API tests: the enclave's public request entry point
//! (`keyward_enclave::api::handle`) over an in-memory store, driven through
//! the official AWS SDK for KMS whose HTTP client calls the enclave directly
//! (see `keyward_test_support::inprocess`). Requests are SigV4-signed and
//! verified as in production; no process is spawned and no socket opened.
//!
//! Every test starts its own [`Service`](keyward_test_support::inprocess::Service)
//! on its own store. What needs real processes (the host proxy, crashes,
//! restarts of processes, the wire, metrics) is in `tests/integration`.

mod abuse;
mod aliases;
mod api;
mod asymmetric;
mod attested_release;
mod audit_attested;
mod backup;
mod cluster;
mod custody;
mod custody_join;
mod custody_kms;
mod custody_reshare;
mod deletion_clock;
mod freshness;
mod freshness_restart;
mod hmac;
mod lifecycle;
mod module_cache;
mod recipient_cms;
mod rotation;
mod signing;
mod tags;
mod tenant_generation;

/// What the test modules share, from `keyward-test-support`.
mod support {
    pub use keyward_test_support::inprocess::Service;
    pub use keyward_test_support::sdk::{
        Context, all_pages, assert_near, blob_key_version, context, create_key, create_key_of, decrypt, encrypt,
        epoch_secs, expect_error, list_all_keys, must, names_key,
    };
    pub use keyward_test_support::{ACCOUNT, DAY, REGION, key_arn, random_alnum, random_bytes};
}
