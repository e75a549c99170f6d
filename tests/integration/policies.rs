//! WebAssembly key policies (ABI v1, `policies/ABI.md`) through the real
//! service: the five example policies (`policies/examples/*`, built once per
//! run by [`crate::harness::example_policy`]) attached to keys, allowing and
//! denying requests of the official aws-sdk-kms client; the tenant's default
//! module before the key's; replacing, reading back and deleting modules;
//! modules across a restart; the audit records of policy decisions; and
//! `Keyward.TestPolicy`.
//!
//! The hostile modules (`tests/data/fail_policy_*.wat`) are in
//! [`crate::policy_sandbox`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState, Tag};
use keyward_sdk::attestation::{DEFAULT_MODULE_ID, default_pcrs, mock_dir, mock_document};
use keyward_sdk::audit::AuditRecord;
use keyward_sdk::recipient::RecipientKey;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::{
    ACCOUNT, Context, Creds, DAY, Keyward, Sandbox, context, create_key, decrypt, encrypt, epoch_secs, example_policy,
    must, wat_module,
};
use crate::principals::{
    b64, call_as, create_access_key, create_key_as, create_tenant, expect_sdk_error, kms as kms_as, message, ok_json,
    sdk, sdk_ok, unb64,
};
use crate::split::{open, recipient_info};

// ---------------------------------------------------------------- helpers

/// A keyward-sdk client signing as `creds` with the service's (possibly
/// shifted) clock.
pub fn keyward(kw: &Keyward, creds: &Creds) -> keyward_sdk::Client {
    sdk(kw, creds).with_clock_offset(kw.clock_offset)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `Keyward.PutKeyPolicyModule` as `creds`.
pub async fn put_key_module(
    kw: &Keyward,
    creds: &Creds,
    key_id: &str,
    module: &[u8],
) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call(
            "Keyward.PutKeyPolicyModule",
            &json!({ "KeyId": key_id, "Module": b64(module) }),
        )
        .await
}

/// Attaches `module` to the bootstrap tenant's key `key_id` (as its
/// KeyAdmin) and returns the module's SHA-256, checking the answer.
pub async fn attach(kw: &Keyward, key_id: &str, module: &[u8]) -> String {
    attach_as(kw, &kw.creds, &Keyward::key_arn(key_id), key_id, module).await
}

/// Attaches `module` to key `key_id` (whose ARN is `arn`) as `admin`.
pub async fn attach_as(kw: &Keyward, admin: &Creds, arn: &str, key_id: &str, module: &[u8]) -> String {
    let out = sdk_ok("PutKeyPolicyModule", put_key_module(kw, admin, key_id, module).await);
    let sha = sha256_hex(module);
    assert_eq!(
        out,
        json!({ "KeyId": arn, "ModuleSha256": sha }),
        "PutKeyPolicyModule answers the key's ARN and the SHA-256 of the module bytes"
    );
    sha
}

async fn put_tenant_module(kw: &Keyward, creds: &Creds, module: &[u8]) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call("Keyward.PutTenantPolicyModule", &json!({ "Module": b64(module) }))
        .await
}

async fn get_key_module(kw: &Keyward, creds: &Creds, key_id: &str) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call("Keyward.GetKeyPolicyModule", &json!({ "KeyId": key_id }))
        .await
}

async fn delete_key_module(kw: &Keyward, creds: &Creds, key_id: &str) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call("Keyward.DeleteKeyPolicyModule", &json!({ "KeyId": key_id }))
        .await
}

async fn delete_tenant_module(kw: &Keyward, creds: &Creds) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call("Keyward.DeleteTenantPolicyModule", &json!({}))
        .await
}

async fn test_policy(kw: &Keyward, creds: &Creds, module: &[u8], context: &Value) -> Result<Value, keyward_sdk::Error> {
    keyward(kw, creds)
        .call(
            "Keyward.TestPolicy",
            &json!({ "Module": b64(module), "Context": context }),
        )
        .await
}

/// Asserts GetKeyPolicyModule returns exactly `module` for the key.
async fn assert_attached(kw: &Keyward, creds: &Creds, key_id: &str, arn: &str, module: &[u8]) {
    let got = sdk_ok("GetKeyPolicyModule", get_key_module(kw, creds, key_id).await);
    assert_eq!(got["KeyId"], json!(arn), "{got}");
    assert_eq!(got["ModuleSha256"], json!(sha256_hex(module)), "{got}");
    let bytes = unb64(got["Module"].as_str().expect("Module"));
    assert!(
        bytes == module,
        "GetKeyPolicyModule returned other bytes than were uploaded"
    );
}

/// A request denied by a policy module: the module's reason and the request id.
#[derive(Debug)]
pub struct Denial {
    pub reason: String,
    pub request_id: String,
}

/// Asserts an aws-sdk-kms call was denied by policy module `sha`
/// (`AccessDeniedException` "Denied by policy module <sha>: <reason>").
#[track_caller]
pub fn denied_by<T: std::fmt::Debug, E>(what: &str, result: Result<T, SdkError<E>>, sha: &str) -> Denial
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(v) => panic!("{what}: expected a deny by policy module {sha}, but the call succeeded: {v:?}"),
        Err(e) => e,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(
        (status, err.code()),
        (Some(400), Some("AccessDeniedException")),
        "{what}: wrong error: {}",
        DisplayErrorContext(&err)
    );
    let message = err.message().unwrap_or_default();
    let prefix = format!("Denied by policy module {sha}: ");
    let reason = message
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{what}: message {message:?} does not start with {prefix:?}"));
    Denial {
        reason: reason.to_string(),
        request_id: err.request_id().expect("x-amzn-RequestId").to_string(),
    }
}

/// Asserts a keyward-sdk call was denied by policy module `sha`.
#[track_caller]
fn sdk_denied_by<T: std::fmt::Debug>(what: &str, result: Result<T, keyward_sdk::Error>, sha: &str) -> Denial {
    match result {
        Err(keyward_sdk::Error::Service {
            error_type,
            message,
            status,
            request_id,
        }) => {
            assert_eq!(
                (status, error_type.as_str()),
                (400, "AccessDeniedException"),
                "{what}: {message}"
            );
            let prefix = format!("Denied by policy module {sha}: ");
            let reason = message
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{what}: message {message:?} does not start with {prefix:?}"));
            Denial {
                reason: reason.to_string(),
                request_id: request_id.expect("x-amzn-RequestId"),
            }
        }
        other => panic!("{what}: expected a deny by policy module {sha}, got {other:?}"),
    }
}

/// The audit record of request `request_id` in `creds`' tenant's chain.
pub async fn audit_record(kw: &Keyward, creds: &Creds, request_id: &str) -> AuditRecord {
    let records = sdk_ok("GetAuditLog", keyward(kw, creds).audit_records(None, None).await);
    records
        .into_iter()
        .find(|r| r.request_id == request_id)
        .unwrap_or_else(|| panic!("no audit record of request {request_id}"))
}

/// Asserts the audit record of a policy deny: Decision Deny, the module,
/// the operation, the key and the deny's full message as Reason.
pub async fn assert_deny_audited(kw: &Keyward, creds: &Creds, denial: &Denial, operation: &str, arn: &str, sha: &str) {
    let record = audit_record(kw, creds, &denial.request_id).await;
    assert_eq!(record.decision, "Deny", "{record:?}");
    assert_eq!(record.policy_module, sha, "{record:?}");
    assert_eq!(record.operation, operation, "{record:?}");
    assert_eq!(record.key_arn, arn, "{record:?}");
    assert_eq!(
        record.reason,
        format!(
            "AccessDeniedException: Denied by policy module {sha}: {}",
            denial.reason
        ),
        "{record:?}"
    );
}

/// Asserts the audit record of an allowed request that module `sha` decided.
async fn assert_allow_audited(kw: &Keyward, creds: &Creds, request_id: &str, operation: &str, sha: &str) {
    let record = audit_record(kw, creds, request_id).await;
    assert_eq!(
        (
            record.decision.as_str(),
            record.policy_module.as_str(),
            record.operation.as_str()
        ),
        ("Allow", sha, operation),
        "{record:?}"
    );
}

fn blob(bytes: &[u8]) -> Blob {
    Blob::new(bytes.to_vec())
}

/// A mock attestation document (the enclave's mock root) for `workload`
/// with these PCRs.
fn attested(kw: &Keyward, pcrs: &BTreeMap<u8, Vec<u8>>, workload: &RecipientKey) -> Vec<u8> {
    mock_document(
        &mock_dir(&kw.data_dir),
        DEFAULT_MODULE_ID,
        pcrs,
        workload.public_key_der(),
        None,
    )
    .expect("mock attestation document")
}

// ---------------------------------------------------------------- the examples

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_pcr0_example_lets_only_allow_listed_enclaves_decrypt() {
    let module = example_policy("attested-pcr0");
    // The example allow-lists the mock attester's default PCR0; a workload's
    // mock document states the PCRs the test gives it.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/attested-pcr0/src/lib.rs"),
    )
    .expect("example source");
    let allowed_pcrs = default_pcrs();
    let allowed_pcr0 = hex::encode(&allowed_pcrs[&0]);
    assert!(
        source.contains(&format!("\"{allowed_pcr0}\"")),
        "the example's ALLOWED_PCR0 no longer lists the mock PCR0 {allowed_pcr0}"
    );
    let mut other_pcrs = default_pcrs();
    other_pcrs.insert(0, vec![0xab; 48]);

    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "attested-pcr0").await;
    let arn = Keyward::key_arn(&key_id);
    let plaintext = b"for allow-listed enclaves only";
    let ciphertext = encrypt(&kms, &key_id, plaintext, None).await;
    // Without a policy, anyone with KeyUser decrypts.
    assert_eq!(decrypt(&kms, None, &ciphertext, None).await, plaintext);

    let sha = attach(&kw, &key_id, &module).await;

    // Other actions are not restricted.
    let again = encrypt(&kms, &key_id, plaintext, None).await;
    must("DescribeKey", kms.describe_key().key_id(&key_id).send().await);

    // Decrypt without a Recipient: denied, and audited as the module's deny.
    let denial = denied_by(
        "Decrypt without Recipient",
        kms.decrypt().ciphertext_blob(blob(&ciphertext)).send().await,
        &sha,
    );
    assert!(denial.reason.contains("not attested"), "{denial:?}");
    assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.Decrypt", &arn, &sha).await;

    // An attested workload whose PCR0 is allow-listed: allowed; the
    // plaintext is released only to it.
    let workload = RecipientKey::generate();
    let document = attested(&kw, &allowed_pcrs, &workload);
    for (what, ciphertext) in [("first", &ciphertext), ("second", &again)] {
        let out = must(
            &format!("Decrypt of the {what} ciphertext with an allow-listed Recipient"),
            kms.decrypt()
                .ciphertext_blob(blob(ciphertext))
                .recipient(recipient_info(&document))
                .send()
                .await,
        );
        assert!(out.plaintext().is_none(), "Decrypt with Recipient returned Plaintext");
        assert_eq!(open("Decrypt", &workload, out.ciphertext_for_recipient()), plaintext);
        let request_id = out.request_id().expect("x-amzn-RequestId").to_string();
        assert_allow_audited(&kw, &kw.creds, &request_id, "TrentService.Decrypt", &sha).await;
    }

    // An attested workload of another image: denied, naming its PCR0.
    let other = attested(&kw, &other_pcrs, &workload);
    let denial = denied_by(
        "Decrypt with a Recipient of another image",
        kms.decrypt()
            .ciphertext_blob(blob(&ciphertext))
            .recipient(recipient_info(&other))
            .send()
            .await,
        &sha,
    );
    // The module says "kms:Decrypt denied: PCR0 <96 hex digits> is not
    // allow-listed" (141 characters); the service cuts reasons to 128
    // characters, so the caller sees a prefix of it that names the PCR0.
    let full = format!(
        "kms:Decrypt denied: PCR0 {} is not allow-listed",
        hex::encode(&other_pcrs[&0])
    );
    assert!(
        full.starts_with(&denial.reason) && denial.reason.contains(&hex::encode(&other_pcrs[&0])),
        "{denial:?}"
    );
    assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.Decrypt", &arn, &sha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_tenant_example_binds_data_to_the_callers_tenant() {
    let module = example_policy("context-tenant");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "context-tenant").await;
    let arn = Keyward::key_arn(&key_id);
    let sha = attach(&kw, &key_id, &module).await;

    let own = context(&[("tenant", ACCOUNT), ("purpose", "backup")]);
    let foreign = context(&[("tenant", "444455556666")]);
    let plaintext = b"bound to the caller's tenant";

    // Encrypt with the caller's own tenant in the context: allowed.
    let ciphertext = encrypt(&kms, &key_id, plaintext, Some(&own)).await;
    // Another tenant's name, or none: denied.
    let denial = denied_by(
        "Encrypt naming another tenant",
        kms.encrypt()
            .key_id(&key_id)
            .plaintext(blob(plaintext))
            .set_encryption_context(Some(foreign.clone()))
            .send()
            .await,
        &sha,
    );
    assert_eq!(
        denial.reason,
        format!(
            "kms:Encrypt denied: encryption context tenant \"444455556666\" is not the caller's tenant \"{ACCOUNT}\""
        )
    );
    assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.Encrypt", &arn, &sha).await;
    let denial = denied_by(
        "Encrypt without encryption context",
        kms.encrypt().key_id(&key_id).plaintext(blob(plaintext)).send().await,
        &sha,
    );
    assert!(denial.reason.contains("must have \"tenant\""), "{denial:?}");

    // Decrypt and GenerateDataKey are guarded the same way.
    assert_eq!(decrypt(&kms, Some(&key_id), &ciphertext, Some(&own)).await, plaintext);
    must(
        "GenerateDataKey with the own tenant",
        kms.generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(own.clone()))
            .send()
            .await,
    );
    let denial = denied_by(
        "GenerateDataKey naming another tenant",
        kms.generate_data_key()
            .key_id(&key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(foreign.clone()))
            .send()
            .await,
        &sha,
    );
    assert!(denial.reason.starts_with("kms:GenerateDataKey denied"), "{denial:?}");
    // Unguarded actions are allowed.
    must("DescribeKey", kms.describe_key().key_id(&key_id).send().await);

    // The same module in another tenant decides by *that* caller's tenant.
    let tenant = create_tenant(&kw).await;
    let their_key = create_key_as(&kw, &tenant.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let their_sha = attach_as(&kw, &tenant.admin, &tenant.key_arn(&their_key), &their_key, &module).await;
    assert_eq!(their_sha, sha, "a module is identified by its bytes");
    let theirs = kms_as(&kw, &tenant.user);
    let their_own = context(&[("tenant", tenant.id.as_str())]);
    encrypt(&theirs, &their_key, plaintext, Some(&their_own)).await;
    let denial = denied_by(
        "the other tenant's Encrypt naming the bootstrap tenant",
        theirs
            .encrypt()
            .key_id(&their_key)
            .plaintext(blob(plaintext))
            .set_encryption_context(Some(context(&[("tenant", ACCOUNT)])))
            .send()
            .await,
        &sha,
    );
    assert!(
        denial
            .reason
            .contains(&format!("is not the caller's tenant \"{}\"", tenant.id)),
        "{denial:?}"
    );
    assert_deny_audited(
        &kw,
        &tenant.admin,
        &denial,
        "TrentService.Encrypt",
        &tenant.key_arn(&their_key),
        &sha,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_window_example_follows_the_enclaves_clock() {
    let module = example_policy("time-window");
    // Tomorrow (UTC), at noon and then at 23:00, by --mock-clock-offset; the
    // clients sign with the same shifted time.
    let tomorrow = (epoch_secs(SystemTime::now()) / DAY + 1) * DAY;
    let offset_to = |at: i64| at - epoch_secs(SystemTime::now());

    let mut sandbox = Sandbox::new();
    let mut kw = sandbox.start_with_clock_offset(offset_to(tomorrow + 12 * 3600)).await;
    let kms = kw.client();
    let key_id = create_key(&kms, "time-window").await;
    let arn = Keyward::key_arn(&key_id);
    let sha = attach(&kw, &key_id, &module).await;
    let plaintext = b"office hours only";
    let encrypted = must(
        "Encrypt at noon",
        kms.encrypt().key_id(&key_id).plaintext(blob(plaintext)).send().await,
    );
    let ciphertext = encrypted.ciphertext_blob().expect("CiphertextBlob").as_ref().to_vec();
    assert_allow_audited(
        &kw,
        &kw.creds,
        encrypted.request_id().expect("x-amzn-RequestId"),
        "TrentService.Encrypt",
        &sha,
    )
    .await;
    assert_eq!(decrypt(&kms, None, &ciphertext, None).await, plaintext);
    kw.stop();
    drop(kw);

    // 23:00 the same (shifted) day: everything on the key is denied.
    let kw = sandbox.start_with_clock_offset(offset_to(tomorrow + 23 * 3600)).await;
    let kms = kw.client();
    let denial = denied_by(
        "Decrypt at 23:00",
        kms.decrypt().ciphertext_blob(blob(&ciphertext)).send().await,
        &sha,
    );
    assert!(
        denial.reason.starts_with("kms:Decrypt denied: 23:")
            && denial.reason.ends_with(" UTC is outside 06:00-22:00 UTC"),
        "{denial:?}"
    );
    assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.Decrypt", &arn, &sha).await;
    let denial = denied_by(
        "DescribeKey at 23:00",
        kms.describe_key().key_id(&key_id).send().await,
        &sha,
    );
    assert!(denial.reason.starts_with("kms:DescribeKey denied: 23:"), "{denial:?}");
    // Keys without the module are not affected.
    let other = create_key(&kms, "no policy").await;
    encrypt(&kms, &other, plaintext, None).await;

    // Policy management is exempt: the module (kept across the restart) can
    // be read back and removed at night, and then the key answers again.
    assert_attached(&kw, &kw.creds, &key_id, &arn, &module).await;
    sdk_ok(
        "DeleteKeyPolicyModule",
        delete_key_module(&kw, &kw.creds, &key_id).await,
    );
    assert_eq!(decrypt(&kms, None, &ciphertext, None).await, plaintext);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn justification_example_requires_a_justification_to_decrypt() {
    let module = example_policy("justification");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "justification").await;
    let arn = Keyward::key_arn(&key_id);
    let justified = context(&[("justification", "INC-4711 customer support")]);
    let blank = context(&[("justification", " \t ")]);
    let plaintext = b"decrypted only with a reason";
    let with_reason = encrypt(&kms, &key_id, plaintext, Some(&justified)).await;
    let without = encrypt(&kms, &key_id, plaintext, None).await;
    let with_blank = encrypt(&kms, &key_id, plaintext, Some(&blank)).await;

    let sha = attach(&kw, &key_id, &module).await;

    // Encrypt is not restricted.
    encrypt(&kms, &key_id, plaintext, None).await;
    // Decrypt with a justification: allowed, and audited with the module.
    let out = must(
        "Decrypt with a justification",
        kms.decrypt()
            .ciphertext_blob(blob(&with_reason))
            .set_encryption_context(Some(justified.clone()))
            .send()
            .await,
    );
    assert_eq!(out.plaintext().expect("Plaintext").as_ref(), plaintext);
    assert_allow_audited(
        &kw,
        &kw.creds,
        out.request_id().expect("x-amzn-RequestId"),
        "TrentService.Decrypt",
        &sha,
    )
    .await;
    // Without one, or with a blank one: denied.
    for (what, ciphertext, ctx) in [
        ("Decrypt without a justification", &without, None::<&Context>),
        ("Decrypt with a blank justification", &with_blank, Some(&blank)),
    ] {
        let denial = denied_by(
            what,
            kms.decrypt()
                .ciphertext_blob(blob(ciphertext))
                .set_encryption_context(ctx.cloned())
                .send()
                .await,
            &sha,
        );
        assert_eq!(
            denial.reason,
            "kms:Decrypt denied: the encryption context needs a non-empty \"justification\" entry"
        );
        assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.Decrypt", &arn, &sha).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_guard_example_needs_the_allow_deletion_tag() {
    let module = example_policy("deletion-guard");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "deletion-guard").await;
    let arn = Keyward::key_arn(&key_id);
    let sha = attach(&kw, &key_id, &module).await;
    let tag = |value: &str| {
        Tag::builder()
            .tag_key("allow-deletion")
            .tag_value(value)
            .build()
            .expect("tag")
    };
    let schedule = || {
        kms.schedule_key_deletion()
            .key_id(&key_id)
            .pending_window_in_days(7)
            .send()
    };

    let denial = denied_by("ScheduleKeyDeletion of an untagged key", schedule().await, &sha);
    assert_eq!(
        denial.reason,
        format!("kms:ScheduleKeyDeletion denied: key {key_id} is not tagged allow-deletion=true")
    );
    assert_deny_audited(&kw, &kw.creds, &denial, "TrentService.ScheduleKeyDeletion", &arn, &sha).await;
    must(
        "TagResource allow-deletion=false",
        kms.tag_resource().key_id(&key_id).tags(tag("false")).send().await,
    );
    denied_by("ScheduleKeyDeletion with allow-deletion=false", schedule().await, &sha);
    let state = must("DescribeKey", kms.describe_key().key_id(&key_id).send().await);
    assert_eq!(
        state.key_metadata().and_then(|m| m.key_state()),
        Some(&KeyState::Enabled)
    );

    // Armed: the deletion is scheduled.
    must(
        "TagResource allow-deletion=true",
        kms.tag_resource().key_id(&key_id).tags(tag("true")).send().await,
    );
    let scheduled = must("ScheduleKeyDeletion of a tagged key", schedule().await);
    assert_allow_audited(
        &kw,
        &kw.creds,
        scheduled.request_id().expect("x-amzn-RequestId"),
        "TrentService.ScheduleKeyDeletion",
        &sha,
    )
    .await;
    let state = must("DescribeKey", kms.describe_key().key_id(&key_id).send().await);
    assert_eq!(
        state.key_metadata().and_then(|m| m.key_state()),
        Some(&KeyState::PendingDeletion)
    );
    must(
        "CancelKeyDeletion",
        kms.cancel_key_deletion().key_id(&key_id).send().await,
    );
}

// ---------------------------------------------------------------- management

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_default_module_runs_before_the_keys_own() {
    let justification = example_policy("justification");
    let attested_pcr0 = example_policy("attested-pcr0");
    let allow_all = wat_module("policy_allow_all");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let plaintext = b"two modules decide";
    let justified = context(&[("justification", "audit 2024-Q3")]);
    let guarded = create_key(&kms, "own module + tenant default").await;
    let plain = create_key(&kms, "tenant default only").await;
    let guarded_bare = encrypt(&kms, &guarded, plaintext, None).await;
    let guarded_justified = encrypt(&kms, &guarded, plaintext, Some(&justified)).await;
    let plain_bare = encrypt(&kms, &plain, plaintext, None).await;
    let plain_justified = encrypt(&kms, &plain, plaintext, Some(&justified)).await;
    // Another tenant, unaffected by this tenant's default.
    let tenant = create_tenant(&kw).await;
    let their_key = create_key_as(&kw, &tenant.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let theirs = kms_as(&kw, &tenant.user);
    let their_bare = encrypt(&theirs, &their_key, plaintext, None).await;

    // Only a KeyAdmin sets the tenant default.
    let user = create_access_key(&kw, &kw.creds, keyward_sdk::Role::KeyUser).await;
    expect_sdk_error(
        "PutTenantPolicyModule as KeyUser",
        put_tenant_module(&kw, &user, &justification).await,
        400,
        "AccessDeniedException",
    );
    let put = sdk_ok(
        "PutTenantPolicyModule",
        put_tenant_module(&kw, &kw.creds, &justification).await,
    );
    let tenant_sha = sha256_hex(&justification);
    assert_eq!(put, json!({ "ModuleSha256": tenant_sha }));
    let key_sha = attach(&kw, &guarded, &attested_pcr0).await;

    // Both modules would deny: the tenant's default decides first.
    let denial = denied_by(
        "Decrypt without justification or attestation",
        kms.decrypt().ciphertext_blob(blob(&guarded_bare)).send().await,
        &tenant_sha,
    );
    assert!(denial.reason.contains("justification"), "{denial:?}");
    assert_deny_audited(
        &kw,
        &kw.creds,
        &denial,
        "TrentService.Decrypt",
        &Keyward::key_arn(&guarded),
        &tenant_sha,
    )
    .await;
    // The tenant's default allows; then the key's own module denies.
    let denial = denied_by(
        "Decrypt with justification, without attestation",
        kms.decrypt()
            .ciphertext_blob(blob(&guarded_justified))
            .set_encryption_context(Some(justified.clone()))
            .send()
            .await,
        &key_sha,
    );
    assert!(denial.reason.contains("not attested"), "{denial:?}");
    assert_deny_audited(
        &kw,
        &kw.creds,
        &denial,
        "TrentService.Decrypt",
        &Keyward::key_arn(&guarded),
        &key_sha,
    )
    .await;
    // Both allow.
    let workload = RecipientKey::generate();
    let document = attested(&kw, &default_pcrs(), &workload);
    let out = must(
        "Decrypt with justification and attestation",
        kms.decrypt()
            .ciphertext_blob(blob(&guarded_justified))
            .set_encryption_context(Some(justified.clone()))
            .recipient(recipient_info(&document))
            .send()
            .await,
    );
    assert_eq!(open("Decrypt", &workload, out.ciphertext_for_recipient()), plaintext);
    let record = audit_record(&kw, &kw.creds, out.request_id().expect("x-amzn-RequestId")).await;
    assert_eq!(record.decision, "Allow", "{record:?}");
    assert!(
        record.policy_module == tenant_sha || record.policy_module == key_sha,
        "an allowed request's audit record names a module that decided: {record:?}"
    );

    // A key without its own module is governed by the default alone.
    denied_by(
        "Decrypt under the default only, without justification",
        kms.decrypt().ciphertext_blob(blob(&plain_bare)).send().await,
        &tenant_sha,
    );
    assert_eq!(decrypt(&kms, None, &plain_justified, Some(&justified)).await, plaintext);
    // Another tenant's keys are not.
    assert_eq!(decrypt(&theirs, None, &their_bare, None).await, plaintext);

    // Replacing the default takes effect for the next request.
    let replaced = sdk_ok(
        "PutTenantPolicyModule (replace)",
        put_tenant_module(&kw, &kw.creds, &allow_all).await,
    );
    assert_eq!(replaced, json!({ "ModuleSha256": sha256_hex(&allow_all) }));
    assert_eq!(decrypt(&kms, None, &plain_bare, None).await, plaintext);
    let denial = denied_by(
        "Decrypt without attestation, default replaced",
        kms.decrypt().ciphertext_blob(blob(&guarded_bare)).send().await,
        &key_sha,
    );
    assert!(denial.reason.contains("not attested"), "{denial:?}");

    // Deleting it too; only KeyAdmins may.
    sdk_ok(
        "PutTenantPolicyModule (back to justification)",
        put_tenant_module(&kw, &kw.creds, &justification).await,
    );
    denied_by(
        "Decrypt under the default only, without justification",
        kms.decrypt().ciphertext_blob(blob(&plain_bare)).send().await,
        &tenant_sha,
    );
    expect_sdk_error(
        "DeleteTenantPolicyModule as KeyUser",
        delete_tenant_module(&kw, &user).await,
        400,
        "AccessDeniedException",
    );
    sdk_ok("DeleteTenantPolicyModule", delete_tenant_module(&kw, &kw.creds).await);
    assert_eq!(decrypt(&kms, None, &plain_bare, None).await, plaintext);
    expect_sdk_error(
        "DeleteTenantPolicyModule without a default",
        delete_tenant_module(&kw, &kw.creds).await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_modules_are_replaced_read_back_and_deleted() {
    let justification = example_policy("justification");
    let allow_all = wat_module("policy_allow_all");
    let deny_all = wat_module("fail_policy_unreachable");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let user = create_access_key(&kw, &kw.creds, keyward_sdk::Role::KeyUser).await;
    let key_id = create_key(&kms, "module lifecycle").await;
    let arn = Keyward::key_arn(&key_id);
    let plaintext = b"policy lifecycle";
    let ciphertext = encrypt(&kms, &key_id, plaintext, None).await;

    expect_sdk_error(
        "GetKeyPolicyModule before any",
        get_key_module(&kw, &kw.creds, &key_id).await,
        400,
        "NotFoundException",
    );
    // Only a KeyAdmin attaches; any tenant role reads back.
    expect_sdk_error(
        "PutKeyPolicyModule as KeyUser",
        put_key_module(&kw, &user, &key_id, &justification).await,
        400,
        "AccessDeniedException",
    );
    let sha = attach(&kw, &key_id, &justification).await;
    assert_attached(&kw, &user, &key_id, &arn, &justification).await;
    assert_attached(&kw, &kw.creds, &key_id, &arn, &justification).await;
    denied_by(
        "Decrypt without justification",
        kms.decrypt().ciphertext_blob(blob(&ciphertext)).send().await,
        &sha,
    );

    // An invalid module is refused and leaves the attached one in place.
    expect_sdk_error(
        "PutKeyPolicyModule of garbage",
        put_key_module(&kw, &kw.creds, &key_id, b"not a WebAssembly module").await,
        400,
        "MalformedPolicyDocumentException",
    );
    assert_attached(&kw, &kw.creds, &key_id, &arn, &justification).await;

    // Replacing takes effect for the next request.
    let allow_sha = attach(&kw, &key_id, &allow_all).await;
    assert_attached(&kw, &user, &key_id, &arn, &allow_all).await;
    let out = must(
        "Decrypt under allow-all",
        kms.decrypt().ciphertext_blob(blob(&ciphertext)).send().await,
    );
    assert_eq!(out.plaintext().expect("Plaintext").as_ref(), plaintext);
    assert_allow_audited(
        &kw,
        &kw.creds,
        out.request_id().expect("x-amzn-RequestId"),
        "TrentService.Decrypt",
        &allow_sha,
    )
    .await;

    // A module that denies everything (it traps) still leaves the key
    // manageable: policy management is exempt from policies.
    let deny_sha = attach(&kw, &key_id, &deny_all).await;
    let denial = denied_by(
        "DescribeKey under a trapping module",
        kms.describe_key().key_id(&key_id).send().await,
        &deny_sha,
    );
    assert!(denial.reason.contains("unreachable"), "{denial:?}");
    assert_attached(&kw, &user, &key_id, &arn, &deny_all).await;
    expect_sdk_error(
        "DeleteKeyPolicyModule as KeyUser",
        delete_key_module(&kw, &user, &key_id).await,
        400,
        "AccessDeniedException",
    );
    assert_eq!(
        sdk_ok(
            "DeleteKeyPolicyModule",
            delete_key_module(&kw, &kw.creds, &key_id).await
        ),
        json!({})
    );
    // Deleted: no effect any more, and nothing to read back or delete.
    must("DescribeKey", kms.describe_key().key_id(&key_id).send().await);
    assert_eq!(decrypt(&kms, None, &ciphertext, None).await, plaintext);
    expect_sdk_error(
        "GetKeyPolicyModule after delete",
        get_key_module(&kw, &kw.creds, &key_id).await,
        400,
        "NotFoundException",
    );
    expect_sdk_error(
        "DeleteKeyPolicyModule after delete",
        delete_key_module(&kw, &kw.creds, &key_id).await,
        400,
        "NotFoundException",
    );
    // Unknown keys and other tenants' keys are not found.
    let missing = uuid::Uuid::new_v4().to_string();
    expect_sdk_error(
        "PutKeyPolicyModule on an unknown key",
        put_key_module(&kw, &kw.creds, &missing, &allow_all).await,
        400,
        "NotFoundException",
    );
    let tenant = create_tenant(&kw).await;
    expect_sdk_error(
        "PutKeyPolicyModule on another tenant's key",
        put_key_module(&kw, &tenant.admin, &key_id, &allow_all).await,
        400,
        "NotFoundException",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_survive_a_restart() {
    let justification = example_policy("justification");
    let context_tenant = example_policy("context-tenant");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "restart").await;
    let arn = Keyward::key_arn(&key_id);
    let own = context(&[("tenant", ACCOUNT)]);
    let justified = context(&[("tenant", ACCOUNT), ("justification", "restart test")]);
    let plaintext = b"policies are sealed records";
    let bare = encrypt(&kms, &key_id, plaintext, Some(&own)).await;
    let ok = encrypt(&kms, &key_id, plaintext, Some(&justified)).await;
    let key_sha = attach(&kw, &key_id, &context_tenant).await;
    sdk_ok(
        "PutTenantPolicyModule",
        put_tenant_module(&kw, &kw.creds, &justification).await,
    );
    let tenant_sha = sha256_hex(&justification);
    let check = Survivors {
        key_id: &key_id,
        arn: &arn,
        bare: &bare,
        justified_ciphertext: &ok,
        justified: &justified,
        key_module: &context_tenant,
        key_sha: &key_sha,
        tenant_sha: &tenant_sha,
    };
    check.assert_in_force(&kw, plaintext).await;
    let mut kw = kw;
    kw.stop();
    drop(kw);
    let kw = sandbox.start().await;
    check.assert_in_force(&kw, plaintext).await;
}

/// What [`modules_survive_a_restart`] checks before and after the restart.
struct Survivors<'a> {
    key_id: &'a str,
    arn: &'a str,
    bare: &'a [u8],
    justified_ciphertext: &'a [u8],
    justified: &'a Context,
    key_module: &'a [u8],
    key_sha: &'a str,
    tenant_sha: &'a str,
}

impl Survivors<'_> {
    async fn assert_in_force(&self, kw: &Keyward, plaintext: &[u8]) {
        let kms = kw.client();
        denied_by(
            "Decrypt without justification",
            kms.decrypt()
                .ciphertext_blob(blob(self.bare))
                .set_encryption_context(Some(context(&[("tenant", ACCOUNT)])))
                .send()
                .await,
            self.tenant_sha,
        );
        denied_by(
            "Encrypt without the tenant in the context",
            kms.encrypt().key_id(self.key_id).plaintext(blob(b"x")).send().await,
            self.key_sha,
        );
        assert_eq!(
            decrypt(&kms, None, self.justified_ciphertext, Some(self.justified)).await,
            plaintext
        );
        assert_attached(kw, &kw.creds, self.key_id, self.arn, self.key_module).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_policy_evaluates_a_module_on_a_given_context() {
    let context_tenant = example_policy("context-tenant");
    let time_window = example_policy("time-window");
    let contexts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/contexts");
    let sample = |name: &str| -> Value {
        let path = contexts.join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).expect("sample context")).expect("JSON")
    };
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    // Any tenant role may test; nothing is attached.
    let user = create_access_key(&kw, &kw.creds, keyward_sdk::Role::KeyUser).await;

    let decrypt_ctx = sample("decrypt.json");
    let out = sdk_ok(
        "TestPolicy context-tenant on decrypt.json",
        test_policy(&kw, &user, &context_tenant, &decrypt_ctx).await,
    );
    assert_eq!(
        out,
        json!({
            "ModuleSha256": sha256_hex(&context_tenant),
            "Allow": true,
            "Reason": "kms:Decrypt allowed: encryption context tenant is the caller's (acme)",
        })
    );
    let night = sample("decrypt-night-other-tenant.json");
    let out = sdk_ok(
        "TestPolicy context-tenant on decrypt-night-other-tenant.json",
        test_policy(&kw, &kw.creds, &context_tenant, &night).await,
    );
    assert_eq!(out["Allow"], json!(false), "{out}");
    assert_eq!(
        out["Reason"],
        json!("kms:Decrypt denied: encryption context tenant \"globex\" is not the caller's tenant \"acme\"")
    );
    // 1704150000000 ms is 2024-01-01T23:00:00Z.
    let out = sdk_ok(
        "TestPolicy time-window at night",
        test_policy(&kw, &user, &time_window, &night).await,
    );
    assert_eq!(
        (out["Allow"].clone(), out["Reason"].clone()),
        (
            json!(false),
            json!("kms:Decrypt denied: 23:00 UTC is outside 06:00-22:00 UTC")
        )
    );
    let out = sdk_ok(
        "TestPolicy time-window at noon",
        test_policy(&kw, &user, &time_window, &decrypt_ctx).await,
    );
    assert_eq!(out["Allow"], json!(true), "{out}");

    // The sandbox's limits apply: a module that never returns is a deny.
    let looping = wat_module("fail_policy_infinite_loop");
    let out = sdk_ok(
        "TestPolicy infinite loop",
        test_policy(&kw, &user, &looping, &decrypt_ctx).await,
    );
    assert_eq!(out["Allow"], json!(false), "{out}");
    let reason = out["Reason"].as_str().expect("Reason");
    assert!(reason.contains("fuel") || reason.contains("epoch deadline"), "{reason}");
    // An invalid module is refused as at upload.
    expect_sdk_error(
        "TestPolicy with an importing module",
        test_policy(&kw, &user, &wat_module("fail_policy_imports"), &decrypt_ctx).await,
        400,
        "MalformedPolicyDocumentException",
    );
    // Nothing was attached or set as the default.
    expect_sdk_error(
        "DeleteTenantPolicyModule after TestPolicy",
        delete_tenant_module(&kw, &kw.creds).await,
        400,
        "NotFoundException",
    );
}

/// The largest contexts the enclave can send still parse in the SDK's
/// modules within the sandbox's fuel and memory (ABI.md §5): thousands of
/// tiny encryption-context entries plus 50 maximal tags, and long values.
/// (Regression test for the SDK's own reader and bump allocator, which must
/// grow memory past its arena here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_parses_the_largest_contexts_within_the_limits() {
    let context_tenant = example_policy("context-tenant");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/contexts/decrypt.json");
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("sample context")).expect("JSON");
    const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    // 62 one-character and 3,844 two-character keys, empty values.
    let mut tiny: serde_json::Map<String, Value> = ALNUM
        .iter()
        .map(|&a| (char::from(a).to_string(), json!("")))
        .chain(ALNUM.iter().flat_map(|&a| {
            ALNUM
                .iter()
                .map(move |&b| (format!("{}{}", char::from(a), char::from(b)), json!("")))
        }))
        .collect();
    tiny.insert("tenant".into(), json!("acme"));
    let tags: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("{i:0>128}"), json!("v".repeat(256))))
        .collect();
    let mut many_tiny = sample.clone();
    many_tiny["request"]["encryption_context"] = Value::Object(tiny);
    many_tiny["resource"]["tags"] = Value::Object(tags);
    let long: serde_json::Map<String, Value> = (0..1_150)
        .map(|i| (format!("k{i:04}"), json!("x".repeat(40))))
        .chain([("tenant".to_owned(), json!("acme"))])
        .collect();
    let mut long_values = sample.clone();
    long_values["request"]["encryption_context"] = Value::Object(long);

    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    for (what, context) in [
        ("3,907 tiny entries and 50 tags", many_tiny),
        ("1,151 long values", long_values),
    ] {
        let size = serde_json::to_vec(&context).expect("JSON").len();
        assert!((48 * 1024..64 * 1024).contains(&size), "{what}: {size} bytes");
        let out = sdk_ok(what, test_policy(&kw, &kw.creds, &context_tenant, &context).await);
        assert_eq!(
            (out["Allow"].clone(), out["Reason"].clone()),
            (
                json!(true),
                json!("kms:Decrypt allowed: encryption context tenant is the caller's (acme)")
            ),
            "{what} ({size} bytes)"
        );
    }
}

/// A deny reaches every kind of client the same way: raw signed HTTP gets an
/// AWS JSON error, keyward-sdk a service error with the request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_is_returned_as_aws_json_to_raw_callers() {
    let justification = example_policy("justification");
    let mut sandbox = Sandbox::new();
    let kw = sandbox.start().await;
    let kms = kw.client();
    let key_id = create_key(&kms, "raw").await;
    let ciphertext = encrypt(&kms, &key_id, b"raw caller", None).await;
    let sha = attach(&kw, &key_id, &justification).await;
    let resp = call_as(
        &kw,
        &kw.creds,
        "Decrypt",
        &json!({ "CiphertextBlob": b64(&ciphertext) }),
    )
    .await;
    resp.assert_error("raw Decrypt", 400, "AccessDeniedException");
    assert_eq!(
        message(&resp),
        format!(
            "Denied by policy module {sha}: kms:Decrypt denied: the encryption context needs a non-empty \"justification\" entry"
        )
    );
    let ok = call_as(
        &kw,
        &kw.creds,
        "Encrypt",
        &json!({ "KeyId": key_id, "Plaintext": b64(b"x") }),
    )
    .await;
    ok_json("raw Encrypt", &ok);
    // A keyward-sdk caller sees the same deny.
    let denial = sdk_denied_by(
        "keyward-sdk Decrypt",
        keyward(&kw, &kw.creds)
            .call::<_, Value>("TrentService.Decrypt", &json!({ "CiphertextBlob": b64(&ciphertext) }))
            .await,
        &sha,
    );
    assert_deny_audited(
        &kw,
        &kw.creds,
        &denial,
        "TrentService.Decrypt",
        &Keyward::key_arn(&key_id),
        &sha,
    )
    .await;
}
