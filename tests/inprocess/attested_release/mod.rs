//! Attested release (issue 20, items 1–3): attestation policies that mean
//! what they say, locked key protection, and the policy context per action.
//! Workloads' attestation documents are forged under the in-process
//! enclave's own mock root ([`Service::pki`]), so they verify as genuine.

mod bad_input;
mod holes;
mod lock;
mod rule_policy;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyEncryptionMechanism, RecipientInfo};
use keyward_enclave::attestation::mock::{attest_with, default_pcrs};
use keyward_sdk::recipient::RecipientKey;
use keyward_test_support::raw::RawResponse;
use keyward_test_support::{b64, now_ms};
use serde_json::Value;

use crate::support::Service;

/// The module id of forged workload documents.
const MODULE_ID: &str = "i-0123456789abcdef0-enc0123456789abcdef";

/// The workload's RSA-2048 key pair (generated once per test binary).
fn workload() -> &'static RecipientKey {
    static KEY: OnceLock<RecipientKey> = OnceLock::new();
    KEY.get_or_init(RecipientKey::generate)
}

/// PCR0 of documents forged with [`default_pcrs`], in hex.
fn pcr0() -> String {
    hex::encode(&default_pcrs()[&0])
}

/// A measurement nobody's image has.
fn other_measurement(byte: u8) -> String {
    hex::encode([byte; 48])
}

/// A document of the workload with `pcrs`, issued now under the enclave's root.
fn document_with(kw: &Service, pcrs: &BTreeMap<u8, Vec<u8>>) -> Vec<u8> {
    attest_with(
        &kw.pki,
        MODULE_ID,
        pcrs,
        None,
        None,
        Some(workload().public_key_der()),
        now_ms(),
    )
    .expect("mock document")
}

/// A document of the workload with the default (mock image) PCRs.
fn document(kw: &Service) -> Vec<u8> {
    document_with(kw, &default_pcrs())
}

/// The `Recipient` parameter for `document`.
fn recipient(document: &[u8]) -> RecipientInfo {
    RecipientInfo::builder()
        .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
        .attestation_document(Blob::new(document))
        .build()
}

/// The `Recipient` parameter as raw JSON (for operations aws-sdk-kms cannot send it with).
fn recipient_json(document: &[u8]) -> Value {
    serde_json::json!({ "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(document) })
}

/// Opens a `CiphertextForRecipient` with the workload's key.
#[track_caller]
fn open(what: &str, ciphertext_for_recipient: Option<&[u8]>) -> Vec<u8> {
    let cms = ciphertext_for_recipient.unwrap_or_else(|| panic!("{what}: no CiphertextForRecipient"));
    workload()
        .open(cms)
        .unwrap_or_else(|e| panic!("{what}: CiphertextForRecipient does not open: {e}"))
        .to_vec()
}

/// A signed call of `op` (`Decrypt` or `Keyward.<Op>`) with a JSON body.
async fn call(kw: &Service, op: &str, body: Value) -> RawResponse {
    kw.signed_call(op, body.to_string().as_bytes()).await
}

/// The JSON answer of a call that must succeed.
#[track_caller]
fn ok(what: &str, resp: &RawResponse) -> Value {
    assert_eq!(resp.status, 200, "{what}: {}", String::from_utf8_lossy(&resp.body));
    resp.json()
}

/// The message of an AWS error answer with `code` (HTTP 400).
#[track_caller]
fn refused(what: &str, resp: &RawResponse, code: &str) -> String {
    resp.assert_error(what, 400, code);
    resp.json()["message"].as_str().unwrap_or_default().to_owned()
}

/// Creates a key with a JSON `CreateKey` body; its id.
async fn create_key_json(kw: &Service, body: Value) -> String {
    let created = ok("CreateKey", &call(kw, "CreateKey", body).await);
    created["KeyMetadata"]["KeyId"].as_str().expect("KeyId").to_owned()
}

/// Every record of the tenant's audit chain, oldest first.
async fn audit_records(kw: &Service) -> Vec<Value> {
    let mut records = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut body = serde_json::json!({ "Limit": 1000 });
        if let Some(m) = &marker {
            body["Marker"] = Value::String(m.clone());
        }
        let page = ok("GetAuditLog", &call(kw, "Keyward.GetAuditLog", body).await);
        records.extend(page["Records"].as_array().expect("Records").iter().cloned());
        match page["NextMarker"].as_str() {
            Some(m) if page["Truncated"] == true => marker = Some(m.to_owned()),
            _ => return records,
        }
    }
}

/// The latest audit record of `operation` (e.g. `TrentService.Decrypt`).
async fn last_audit(kw: &Service, operation: &str) -> Value {
    audit_records(kw)
        .await
        .into_iter()
        .rev()
        .find(|r| r["Operation"] == operation)
        .unwrap_or_else(|| panic!("no audit record of {operation}"))
}

/// The message of an aws-sdk-kms call that must fail with `code` (HTTP 400).
#[track_caller]
fn sdk_refused<T: std::fmt::Debug, E>(
    what: &str,
    result: Result<T, aws_sdk_kms::error::SdkError<E>>,
    code: &str,
) -> String
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_kms::error::ProvideErrorMetadata as _;
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:?}"),
        Err(err) => {
            let (status, got) = keyward_test_support::sdk::error_parts(&err);
            assert_eq!(
                (status, got.as_deref()),
                (Some(400), Some(code)),
                "{what}: wrong error: {}",
                aws_sdk_kms::error::DisplayErrorContext(&err)
            );
            err.message().unwrap_or_default().to_owned()
        }
    }
}
