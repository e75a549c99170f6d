//! The enclave's JSON request handling, after authentication: the real
//! dispatcher (`keyward_enclave::api::dispatch`) with the real parameter
//! parsing and operations, over an in-memory store and the mock NSM.
//!
//! Input: byte 0 picks the operation from [`OPERATIONS`] (its top bit makes
//! the caller the operator instead of a tenant KeyAdmin + KeyUser); the rest
//! is the request body. Before parsing, the placeholders `@k0` … `@k5`
//! become the ids of keys that exist (see [`KEYS`]), `@a0` key 0's ARN,
//! `@c0` a ciphertext under key 0 and `@d0` a mock attestation document with
//! a recipient key, so that mutations reach past "key not found".
//!
//! SigV4 is not fuzzed here (no test-only bypass exists; the principal is
//! built directly, as the benchmarks do); the built-in authorization, the
//! tenant-enabled check and the `DryRun` handling run as `api::handle` runs
//! them. Every store
//! starts from the same snapshot, so inputs do not affect one another.
//!
//! Proves: no operation panics on any body, and every failure is an AWS
//! error shape (a known error type, a 4xx/5xx status, a JSON body with
//! `__type` and `message`); internal errors (500) are reported as findings.
#![no_main]

use std::sync::{Arc, LazyLock};

use keyward_enclave::api::error::KmsError;
use keyward_enclave::api::{self, Ctx};
use keyward_enclave::attestation::mock::{MockAttester, MockPki};
use keyward_enclave::attestation::verify::{TrustAnchor, Verifier};
use keyward_enclave::auth::Principal;
use keyward_enclave::auth::authorize;
use keyward_enclave::auth::credentials::Role;
use keyward_enclave::keystore::tenants;
use keyward_enclave::store::{MemoryStore, Records};
use keyward_enclave::{Args, Enclave, Mode};
use keyward_wire::Operation;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const TENANT: &str = "111122223333";

/// Every operation the dispatcher knows, and two it does not.
const OPERATIONS: &[&str] = &[
    "TrentService.CreateKey",
    "TrentService.DescribeKey",
    "TrentService.ListKeys",
    "TrentService.Encrypt",
    "TrentService.Decrypt",
    "TrentService.GenerateDataKey",
    "TrentService.GenerateDataKeyWithoutPlaintext",
    "TrentService.GenerateRandom",
    "TrentService.ReEncrypt",
    "TrentService.GenerateDataKeyPair",
    "TrentService.GenerateDataKeyPairWithoutPlaintext",
    "TrentService.EnableKey",
    "TrentService.DisableKey",
    "TrentService.ScheduleKeyDeletion",
    "TrentService.CancelKeyDeletion",
    "TrentService.UpdateKeyDescription",
    "TrentService.EnableKeyRotation",
    "TrentService.DisableKeyRotation",
    "TrentService.GetKeyRotationStatus",
    "TrentService.RotateKeyOnDemand",
    "TrentService.ListKeyRotations",
    "TrentService.CreateAlias",
    "TrentService.UpdateAlias",
    "TrentService.DeleteAlias",
    "TrentService.ListAliases",
    "TrentService.TagResource",
    "TrentService.UntagResource",
    "TrentService.ListResourceTags",
    "TrentService.Sign",
    "TrentService.Verify",
    "TrentService.GetPublicKey",
    "TrentService.DeriveSharedSecret",
    "TrentService.GenerateMac",
    "TrentService.VerifyMac",
    "TrentService.GetParametersForImport",
    "TrentService.ImportKeyMaterial",
    "TrentService.DeleteImportedKeyMaterial",
    "Keyward.CreateTenant",
    "Keyward.ListTenants",
    "Keyward.DisableTenant",
    "Keyward.EnableTenant",
    "Keyward.CreateAccessKey",
    "Keyward.ListAccessKeys",
    "Keyward.DeleteAccessKey",
    "Keyward.GetAuditLog",
    "Keyward.UpdateKeyAttestationPolicy",
    "Keyward.DescribeKeyAttestationPolicy",
    "Keyward.GetAttestationDocument",
    "Keyward.PutKeyPolicyModule",
    "Keyward.GetKeyPolicyModule",
    "Keyward.DeleteKeyPolicyModule",
    "Keyward.PutTenantPolicyModule",
    "Keyward.DeleteTenantPolicyModule",
    "Keyward.TestPolicy",
    "TrentService.NoSuchOperation",
    "Keyward.NoSuchOperation",
];

/// The keys in the starting store, `@k0` … `@k5`: (KeySpec, KeyUsage, Origin).
const KEYS: &[(&str, &str, &str)] = &[
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AWS_KMS"),
    ("ECC_NIST_P256", "SIGN_VERIFY", "AWS_KMS"),
    ("ECC_NIST_P256", "KEY_AGREEMENT", "AWS_KMS"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "AWS_KMS"),
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "EXTERNAL"),
    ("HMAC_512", "GENERATE_VERIFY_MAC", "AWS_KMS"),
];

struct World {
    runtime: tokio::runtime::Runtime,
    enclave: Enclave,
    snapshot: MemoryStore,
    /// Placeholder -> replacement, longest placeholders first.
    placeholders: Vec<(String, String)>,
}

static WORLD: LazyLock<World> = LazyLock::new(world);

fn principal(operator: bool) -> Principal {
    if operator {
        Principal {
            tenant: keyward_enclave::auth::OPERATOR.into(),
            access_key_id: "AKIAFUZZOPERATOR0000".into(),
            roles: vec![Role::Operator],
        }
    } else {
        Principal {
            tenant: TENANT.into(),
            access_key_id: "AKIAFUZZFUZZFUZZ0000".into(),
            roles: vec![Role::KeyAdmin, Role::KeyUser],
        }
    }
}

fn world() -> World {
    // Policy decisions may use block_in_place: a multi-threaded runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let args = Args {
        mode: Mode::Mock,
        socket: Some("/unused".into()),
        vsock_port: 5000,
        tls_socket: None,
        tls_vsock_port: 5001,
        tls_names: Vec::new(),
        max_client_streams: 4096,
        memory_budget: None,
        region: "us-east-1".into(),
        dev_tenant: TENANT.into(),
        mock_clock_offset: 0,
        tenant_rate_limit: 1_000_000,
        data_dir: None,
        mock_pcrs: Vec::new(),
        allow_debug_attestation: false,
        exit_on_stdin_close: false,
        custody: Default::default(),
        join: Default::default(),
    };
    let config = args.validate(|_| None).expect("config");
    let clock: Arc<dyn keyward_enclave::clock::Clock> = Arc::new(keyward_enclave::clock::SystemClock);
    let pki = MockPki::ephemeral().expect("mock pki");
    let anchor = TrustAnchor::from_der(pki.root_der()).expect("anchor");
    let attester = MockAttester::new(pki);
    // A second attester under the same root, for the `@d0` document.
    let recipient_doc = {
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
        let spki = recipient_spki();
        attester.attest(None, None, Some(&spki), now_ms).expect("document")
    };
    let nsm = keyward_enclave::nsm::MockAttestingNsm::with_clock(attester, Arc::clone(&clock));
    let enclave = Enclave::new(config, Box::new(nsm), clock).with_verifier(Verifier::new(anchor));

    let store = MemoryStore::default();
    let mut placeholders = Vec::new();
    runtime.block_on(async {
        let keyring = enclave.ready_for_tests(&store).await.expect("boots");
        // The tenant, as the operator creates it (`api::handle` refuses a
        // tenant principal whose tenant record is missing or disabled).
        let operator = Ctx::new(
            &enclave,
            keyring,
            Records::new(&store, &keyring.sealer),
            principal(true),
            time::OffsetDateTime::now_utc(),
        );
        api::tenants::create_tenant(&operator, json!({ "TenantId": TENANT }))
            .await
            .expect("tenant");
        let ctx = Ctx::new(
            &enclave,
            keyring,
            Records::new(&store, &keyring.sealer),
            principal(false),
            time::OffsetDateTime::now_utc(),
        );
        for (i, (spec, usage, origin)) in KEYS.iter().enumerate() {
            let created = api::keys::create_key(&ctx, json!({ "KeySpec": spec, "KeyUsage": usage, "Origin": origin }))
                .await
                .unwrap_or_else(|e| panic!("key {i} ({spec}, {usage}, {origin}): {e:?}"));
            let meta = &created["KeyMetadata"];
            placeholders.push((format!("@k{i}"), text(&meta["KeyId"])));
            if i == 0 {
                placeholders.push(("@a0".into(), text(&meta["Arn"])));
            }
        }
        let key0 = placeholders[0].1.clone();
        api::aliases::create_alias(&ctx, json!({ "AliasName": "alias/fuzz", "TargetKeyId": key0 }))
            .await
            .expect("alias");
        let encrypted = api::crypto::encrypt(&ctx, json!({ "KeyId": key0, "Plaintext": "ZnV6eg==" }))
            .await
            .expect("ciphertext");
        placeholders.push(("@c0".into(), text(&encrypted["CiphertextBlob"])));
    });
    placeholders.push(("@d0".into(), api::params::b64(&recipient_doc)));
    let snapshot = store.snapshot();
    World {
        runtime,
        enclave,
        snapshot,
        placeholders,
    }
}

/// A recipient's RSA-2048 public key (SubjectPublicKeyInfo, DER), as an
/// attested workload puts in its document's `public_key`.
fn recipient_spki() -> Vec<u8> {
    include_bytes!("../fixtures/recipient-rsa2048.spki.der").to_vec()
}

fn text(v: &Value) -> String {
    v.as_str().expect("string").to_owned()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let world = &*WORLD;
    let target = OPERATIONS[usize::from(selector & 0x7f) % OPERATIONS.len()];
    let principal = principal(selector & 0x80 != 0);

    let mut body = body.to_vec();
    for (placeholder, value) in &world.placeholders {
        body = replace(&body, placeholder.as_bytes(), value.as_bytes());
    }

    let store = world.snapshot.snapshot();
    let result = world.runtime.block_on(async {
        let keyring = world.enclave.ready_for_tests(&store).await.expect("booted");
        // As `api::handle` does after authentication.
        let op = Operation::from_target(target).ok_or_else(|| KmsError::UnknownOperation("unknown".into()))?;
        authorize::authorize(&principal, op)?;
        let records = Records::new(&store, &keyring.sealer);
        let mut tenant_policy = None;
        let mut tenant_generation = None;
        if !principal.is_operator() {
            let tenant = tenants::get(&records, &principal.tenant).await?;
            tenant_generation = tenant.as_ref().and_then(|t| t.generation().ok());
            tenant_policy = tenant.as_ref().and_then(|t| t.policy_module.clone());
            if !tenant.is_some_and(|t| t.enabled) {
                return Err(KmsError::AccessDenied("tenant disabled".into()));
            }
        }
        let body = api::parse_body(&body)?;
        if body.get("DryRun").and_then(Value::as_bool) == Some(true) {
            return Err(KmsError::DryRunOperation("dry run".into()));
        }
        let mut facts = keyward_enclave::policy::context::facts_of(op, &body);
        facts.tenant_policy = tenant_policy;
        let ctx = Ctx::new(
            &world.enclave,
            keyring,
            records,
            principal,
            time::OffsetDateTime::now_utc(),
        )
        .with_facts(facts);
        if let Some(generation) = tenant_generation {
            ctx.set_tenant_generation(generation);
        }
        api::dispatch(&ctx, op, body).await
    });

    match result {
        Ok(answer) => assert!(answer.is_object(), "{target} answered {answer}"),
        Err(e) => {
            let response = e.to_response();
            assert!((400..600).contains(&response.status));
            let json: Value = serde_json::from_slice(&response.body).expect("error body is JSON");
            assert!(json["__type"].is_string() && json["message"].is_string(), "{json}");
            // An internal error on client input is a bug, not an answer.
            assert_ne!(
                response.status,
                500,
                "{target}: internal error {:?}: {json}",
                e.aws_type()
            );
        }
    }
});

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
