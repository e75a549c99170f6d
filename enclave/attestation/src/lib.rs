//! # keyward-attestation: Nitro Enclaves attestation documents
//!
//! One parser ([`document`]) and one verifier ([`verify`]) for AWS Nitro
//! Enclaves attestation documents — COSE_Sign1 / ES384 over the Nitro CBOR
//! payload — used identically by the enclave (recipients' documents), by
//! clients (the enclave's own document) and in mock mode; only the trust
//! anchor differs. [`mock`] is the mock NSM's P-384 PKI, whose root nitro
//! mode never trusts.
//!
//! ## What this crate trusts
//! Only the trust anchor it is given: the embedded AWS Nitro Enclaves Root-G1
//! (checked against its pinned SHA-256) or a mock root. Every document byte is
//! attacker-controlled: inputs are bounded (16 KiB) and parsed strictly.
//!
//! ## What it guarantees
//! A document that verifies was signed (ES384) by a leaf that chains, with
//! valid CA constraints, to the anchor, at the document's own time; is fresh
//! against the caller's clock; and matches the caller's nonce and PCR
//! expectations. No input panics.
#![forbid(unsafe_code)]

pub mod cms;
pub mod document;
pub mod mock;
pub mod verify;
