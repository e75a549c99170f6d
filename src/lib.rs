//! # keyward: the one-command development launcher
//!
//! `keyward dev` runs a complete mock-mode Keyward: it starts the enclave as a
//! **child process** (this same executable, re-run as `keyward enclave`, so a
//! fresh `cargo run --bin keyward` builds everything it needs), runs the host
//! proxy in this process, restarts the enclave if it dies, and stops both on
//! Ctrl-C or SIGTERM. The trust boundary is the process boundary, exactly as
//! in a Nitro deployment; only the transport (Unix socket) and the NSM differ.
#![forbid(unsafe_code)]

pub mod dev;
pub mod dev_cluster;
pub mod dev_custody;
pub mod dev_kms;
