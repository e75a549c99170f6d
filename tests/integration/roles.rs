//! Principals and roles: KeyAdmin manages keys, KeyUser uses them, read-only
//! operations are open to both; the operator administers tenants and can use
//! no key; a disabled tenant can do nothing; a deleted access key is unknown;
//! a stale signature is refused.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::harness::{Creds, Keyward, Sandbox, api_headers, error_parts, sign_headers};
use crate::principals::{
    KEY_OPS, Need, Tenant, b64, call_as, create_access_key, create_key_as, create_tenant, create_tenant_keys,
    expect_sdk_error, kms, ok_json, operator, outcome, random_tenant_id, sdk, sdk_ok,
};

const DENIED: (u16, &str) = (400, "AccessDeniedException");

/// The Keyward extension operations only the operator may call, with bodies.
fn operator_ops(tenant_id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("Keyward.CreateTenant", json!({ "TenantId": random_tenant_id() })),
        ("Keyward.ListTenants", json!({})),
        ("Keyward.DisableTenant", json!({ "TenantId": tenant_id })),
        ("Keyward.EnableTenant", json!({ "TenantId": tenant_id })),
    ]
}

/// Operations that name no key, with the role they need and a valid body.
fn keyless_ops(alias_to_delete: &str, access_key_to_delete: &str) -> Vec<(&'static str, Need, Value)> {
    vec![
        ("CreateKey", Need::KeyAdmin, json!({ "Description": "roles" })),
        ("ListKeys", Need::Either, json!({})),
        ("ListAliases", Need::Either, json!({})),
        ("GenerateRandom", Need::KeyUser, json!({ "NumberOfBytes": 16 })),
        ("DeleteAlias", Need::KeyAdmin, json!({ "AliasName": alias_to_delete })),
        ("Keyward.CreateAccessKey", Need::KeyAdmin, json!({ "Role": "KeyUser" })),
        ("Keyward.ListAccessKeys", Need::KeyAdmin, json!({})),
        (
            "Keyward.DeleteAccessKey",
            Need::KeyAdmin,
            json!({ "AccessKeyId": access_key_to_delete }),
        ),
        ("Keyward.GetAuditLog", Need::Either, json!({ "Limit": 5 })),
    ]
}

/// Runs `op` as the role it is denied to (must be AccessDeniedException),
/// then as each role it is allowed to (must succeed), collecting failures.
async fn check_separation(kw: &Keyward, t: &Tenant, op: &str, need: Need, body: &Value, failures: &mut Vec<String>) {
    type Principals<'a> = Vec<(&'a str, &'a Creds)>;
    let (denied, allowed): (Principals, Principals) = match need {
        Need::KeyAdmin => (vec![("KeyUser", &t.user)], vec![("KeyAdmin", &t.admin)]),
        Need::KeyUser => (vec![("KeyAdmin", &t.admin)], vec![("KeyUser", &t.user)]),
        Need::Either => (vec![], vec![("KeyAdmin", &t.admin), ("KeyUser", &t.user)]),
    };
    for (role, creds) in denied {
        let got = outcome(&call_as(kw, creds, op, body).await);
        if got != (DENIED.0, DENIED.1.to_string()) {
            failures.push(format!("{role} calling {op}: expected {DENIED:?}, got {got:?}"));
        }
    }
    for (role, creds) in allowed {
        let resp = call_as(kw, creds, op, body).await;
        if resp.status != 200 {
            failures.push(format!(
                "{role} calling {op}: expected success, got {:?} {}",
                outcome(&resp),
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_admin_and_key_user_are_separated_both_ways() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let t = create_tenant(&kw).await;
    let keys = create_tenant_keys(&kw, &t).await;
    let throwaway = create_access_key(&kw, &t.admin, keyward_sdk::Role::KeyUser).await;

    let mut failures = Vec::new();
    for op in KEY_OPS {
        let body = crate::principals::key_op_body(op.name, keys.of(op.kind), &keys.fixture);
        check_separation(&kw, &t, op.name, op.need, &body, &mut failures).await;
    }
    // After the table, fixture.new_alias exists (CreateAlias ran): DeleteAlias deletes it.
    for (op, need, body) in keyless_ops(&keys.fixture.new_alias, &throwaway.access_key_id) {
        check_separation(&kw, &t, op, need, &body, &mut failures).await;
    }
    // No tenant principal, not even the bootstrap credential holding both
    // roles, may administer tenants.
    for (op, body) in operator_ops(&t.id) {
        for (who, creds) in [
            ("KeyAdmin", &t.admin),
            ("KeyUser", &t.user),
            ("the bootstrap KeyAdmin+KeyUser", &kw.creds),
        ] {
            let got = outcome(&call_as(&kw, creds, op, &body).await);
            if got != (DENIED.0, DENIED.1.to_string()) {
                failures.push(format!("{who} calling {op}: expected {DENIED:?}, got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} role checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The denied calls changed nothing: the throwaway key was deleted by the
    // KeyAdmin (not before), the tenant still exists and is enabled.
    let listed = sdk_ok("ListAccessKeys", sdk(&kw, &t.admin).list_access_keys().await);
    assert!(
        !listed.iter().any(|k| k.access_key_id == throwaway.access_key_id),
        "the KeyAdmin deleted the throwaway access key: {listed:?}"
    );
    let tenants = sdk_ok("ListTenants", operator(&kw).list_tenants().await);
    let entry = tenants.iter().find(|x| x.tenant_id == t.id).expect("tenant listed");
    assert!(entry.enabled, "no tenant principal could disable its tenant: {entry:?}");

    // A KeyAdmin cannot mint a credential of a role a tenant does not have.
    for role in ["Operator", "operator", "KeyAdmin,KeyUser", ""] {
        let resp = call_as(&kw, &t.admin, "Keyward.CreateAccessKey", &json!({ "Role": role })).await;
        resp.assert_error(
            &format!("CreateAccessKey with Role {role:?}"),
            400,
            "ValidationException",
        );
    }

    // The bootstrap credential holds both roles: it manages and uses keys.
    let boot = kw.client();
    let key = crate::harness::create_key(&boot, "both roles").await;
    let ct = crate::harness::encrypt(&boot, &key, b"both roles", None).await;
    assert_eq!(crate::harness::decrypt(&boot, None, &ct, None).await, b"both roles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_administers_tenants_and_can_use_no_key() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    // Keys of the bootstrap tenant for the operator to aim at.
    let boot = Tenant {
        id: crate::harness::ACCOUNT.to_string(),
        admin: kw.creds.clone(),
        user: kw.creds.clone(),
    };
    let keys = create_tenant_keys(&kw, &boot).await;
    let op_creds = kw.operator.clone();

    let mut failures = Vec::new();
    let mut check = |what: String, got: (u16, String)| {
        if got != (DENIED.0, DENIED.1.to_string()) {
            failures.push(format!("operator {what}: expected {DENIED:?}, got {got:?}"));
        }
    };
    for op in KEY_OPS {
        let key = keys.of(op.kind);
        for reference in [key.to_string(), boot.key_arn(key)] {
            let body = crate::principals::key_op_body(op.name, &reference, &keys.fixture);
            check(
                format!("{} on {reference}", op.name),
                outcome(&call_as(&kw, &op_creds, op.name, &body).await),
            );
        }
    }
    for (op, _, body) in keyless_ops(&keys.fixture.existing_alias, &kw.creds.access_key_id) {
        if op == "Keyward.GetAuditLog" {
            continue; // the operator reads its own chain (below)
        }
        check(op.to_string(), outcome(&call_as(&kw, &op_creds, op, &body).await));
    }
    // The SDK's typed calls agree.
    check(
        "ListKeys through aws-sdk-kms".into(),
        match kms(&kw, &op_creds).list_keys().send().await {
            Ok(_) => (200, "success".into()),
            Err(e) => sdk_outcome(&e),
        },
    );
    assert!(
        failures.is_empty(),
        "{} operator checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing the operator tried took effect on the bootstrap tenant.
    let listed = crate::harness::list_all_keys(&kw.client(), 100).await;
    assert_eq!(listed.len(), 5, "the operator created or deleted no key: {listed:?}");
    let describe = ok_json(
        "DescribeKey",
        &call_as(&kw, &kw.creds, "DescribeKey", &json!({ "KeyId": keys.scratch })).await,
    );
    assert_eq!(describe["KeyMetadata"]["KeyState"], json!("Enabled"));

    // Tenant administration.
    let op = operator(&kw);
    let (x, y) = (random_tenant_id(), random_tenant_id());
    for id in [&x, &y] {
        let created = sdk_ok("CreateTenant", op.create_tenant(id).await);
        assert_eq!(&created.tenant_id, id);
        assert!(
            created.access_key_id.len() >= 16 && created.secret_access_key.expose().len() >= 30,
            "CreateTenant returns a usable credential: {created:?}"
        );
    }
    expect_sdk_error(
        "CreateTenant of an existing tenant",
        op.create_tenant(&x).await,
        400,
        "AlreadyExistsException",
    );
    expect_sdk_error(
        "CreateTenant with a malformed id",
        op.create_tenant("12345").await,
        400,
        "ValidationException",
    );
    expect_sdk_error(
        "DisableTenant of an unknown tenant",
        op.disable_tenant(&random_tenant_id()).await,
        400,
        "NotFoundException",
    );
    let enabled = |tenants: &[keyward_sdk::Tenant], id: &str| {
        tenants
            .iter()
            .find(|t| t.tenant_id == id)
            .unwrap_or_else(|| panic!("tenant {id} not listed: {tenants:?}"))
            .enabled
    };
    let tenants = sdk_ok("ListTenants", op.list_tenants().await);
    assert!(enabled(&tenants, &x) && enabled(&tenants, &y), "{tenants:?}");
    sdk_ok("DisableTenant", op.disable_tenant(&x).await);
    let tenants = sdk_ok("ListTenants", op.list_tenants().await);
    assert!(!enabled(&tenants, &x) && enabled(&tenants, &y), "{tenants:?}");
    sdk_ok("EnableTenant", op.enable_tenant(&x).await);
    let tenants = sdk_ok("ListTenants", op.list_tenants().await);
    assert!(enabled(&tenants, &x) && enabled(&tenants, &y), "{tenants:?}");

    // The operator's own chain: its administration and its denials.
    let chain = sdk_ok("operator GetAuditLog", op.fetch_audit_chain().await);
    assert_eq!(chain.head.chain, "operator");
    let verified = chain
        .verify_with(&chain.audit_public_key)
        .unwrap_or_else(|e| panic!("the operator chain verifies: {e}"));
    assert_eq!(verified.chain, "operator");
    let count = |operation: &str, decision: &str| {
        chain
            .records
            .iter()
            .filter(|r| r.operation == operation && r.decision == decision && r.access_key_id == op_creds.access_key_id)
            .count()
    };
    assert_eq!(count("Keyward.CreateTenant", "Allow"), 2, "{:#?}", chain.records);
    assert_eq!(count("TrentService.Encrypt", "Deny"), 2, "{:#?}", chain.records);
    assert_eq!(count("Keyward.DisableTenant", "Allow"), 1);
}

/// `(status, __type)` of a failed AWS SDK call.
fn sdk_outcome<E>(err: &aws_sdk_kms::error::SdkError<E>) -> (u16, String)
where
    E: aws_sdk_kms::error::ProvideErrorMetadata,
{
    let (status, code) = error_parts(err);
    (status.unwrap_or(0), code.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_tenant_is_denied_everything_until_enabled() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let t = create_tenant(&kw).await;
    let other = create_tenant(&kw).await;
    let keys = create_tenant_keys(&kw, &t).await;
    let other_key = create_key_as(&kw, &other.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let spare = create_access_key(&kw, &t.admin, keyward_sdk::Role::KeyUser).await;

    sdk_ok("DisableTenant", operator(&kw).disable_tenant(&t.id).await);

    let mut calls: Vec<(String, Value)> = KEY_OPS
        .iter()
        .map(|op| {
            (
                op.name.to_string(),
                crate::principals::key_op_body(op.name, keys.of(op.kind), &keys.fixture),
            )
        })
        .collect();
    calls.extend(
        keyless_ops(&keys.fixture.existing_alias, &spare.access_key_id)
            .into_iter()
            .map(|(op, _, body)| (op.to_string(), body)),
    );
    let mut failures = Vec::new();
    let mut denied = 0usize;
    for (op, body) in &calls {
        for (role, creds) in [("KeyAdmin", &t.admin), ("KeyUser", &t.user), ("KeyUser 2", &spare)] {
            let resp = call_as(&kw, creds, op, body).await;
            let got = outcome(&resp);
            denied += 1;
            if got != (DENIED.0, DENIED.1.to_string()) {
                failures.push(format!(
                    "disabled tenant's {role} calling {op}: expected {DENIED:?}, got {got:?} {}",
                    String::from_utf8_lossy(&resp.body)
                ));
            }
        }
    }
    // The AWS SDK sees the same.
    match kms(&kw, &t.user)
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(crate::principals::unb64(
            &keys.fixture.ciphertext,
        )))
        .send()
        .await
    {
        Ok(out) => failures.push(format!("disabled tenant decrypted through the AWS SDK: {out:?}")),
        Err(e) => {
            let got = sdk_outcome(&e);
            if got != (DENIED.0, DENIED.1.to_string()) {
                failures.push(format!("AWS SDK Decrypt of a disabled tenant: {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {denied} calls of the disabled tenant were not denied:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Other tenants are unaffected meanwhile.
    let resp = call_as(
        &kw,
        &other.user,
        "Encrypt",
        &json!({ "KeyId": other_key, "Plaintext": b64(b"unaffected") }),
    )
    .await;
    ok_json("another tenant encrypts while T is disabled", &resp);

    // Enabled again, everything works, with the same keys and credentials.
    sdk_ok("EnableTenant", operator(&kw).enable_tenant(&t.id).await);
    let plain = ok_json(
        "Decrypt after EnableTenant",
        &call_as(
            &kw,
            &t.user,
            "Decrypt",
            &json!({ "CiphertextBlob": keys.fixture.ciphertext }),
        )
        .await,
    );
    assert_eq!(plain["Plaintext"], json!(b64(b"fixture plaintext")));
    let listed = ok_json(
        "ListKeys after EnableTenant",
        &call_as(&kw, &t.admin, "ListKeys", &json!({})).await,
    );
    assert_eq!(listed["Keys"].as_array().map(Vec::len), Some(5), "{listed}");
    ok_json(
        "spare KeyUser after EnableTenant",
        &call_as(&kw, &spare, "GenerateRandom", &json!({ "NumberOfBytes": 8 })).await,
    );
    ok_json(
        "CreateKey after EnableTenant",
        &call_as(&kw, &t.admin, "CreateKey", &json!({})).await,
    );

    // Every refusal is in the tenant's chain as a Deny.
    let chain = sdk_ok("GetAuditLog", sdk(&kw, &t.admin).fetch_audit_chain().await);
    let disabled_denials = chain
        .records
        .iter()
        .filter(|r| r.decision == "Deny" && r.reason.starts_with("AccessDeniedException: "))
        .count();
    assert!(
        disabled_denials > denied,
        "{disabled_denials} AccessDenied records for {denied} + 1 refused calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_access_key_is_unrecognized() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let t = create_tenant(&kw).await;
    let other = create_tenant(&kw).await;
    let key = create_key_as(&kw, &t.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let admin = sdk(&kw, &t.admin);

    let doomed = create_access_key(&kw, &t.admin, keyward_sdk::Role::KeyUser).await;
    let second_admin = create_access_key(&kw, &t.admin, keyward_sdk::Role::KeyAdmin).await;
    crate::harness::encrypt(&kms(&kw, &doomed), &key, b"before deletion", None).await;

    let listed = sdk_ok("ListAccessKeys", admin.list_access_keys().await);
    let roles_of = |id: &str| {
        listed
            .iter()
            .find(|k| k.access_key_id == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"))
            .roles
            .clone()
    };
    assert_eq!(roles_of(&t.admin.access_key_id), ["KeyAdmin"]);
    assert_eq!(roles_of(&t.user.access_key_id), ["KeyUser"]);
    assert_eq!(roles_of(&doomed.access_key_id), ["KeyUser"]);
    assert_eq!(roles_of(&second_admin.access_key_id), ["KeyAdmin"]);
    assert_eq!(listed.len(), 4, "{listed:?}");
    let raw = ok_json(
        "ListAccessKeys (raw)",
        &call_as(&kw, &t.admin, "Keyward.ListAccessKeys", &json!({})).await,
    );
    for secret in [&t.admin.secret, &t.user.secret, &doomed.secret, &second_admin.secret] {
        assert!(
            !raw.to_string().contains(secret.as_str()),
            "ListAccessKeys shows a secret: {raw}"
        );
    }

    // Another tenant's KeyAdmin cannot delete it (it does not exist there).
    expect_sdk_error(
        "another tenant deletes T's access key",
        sdk(&kw, &other.admin).delete_access_key(&doomed.access_key_id).await,
        400,
        "NotFoundException",
    );
    crate::harness::encrypt(&kms(&kw, &doomed), &key, b"still alive", None).await;

    // A second KeyAdmin of T deletes it.
    sdk_ok(
        "DeleteAccessKey",
        sdk(&kw, &second_admin).delete_access_key(&doomed.access_key_id).await,
    );
    crate::harness::expect_error(
        "Encrypt with a deleted access key",
        kms(&kw, &doomed)
            .encrypt()
            .key_id(&key)
            .plaintext(aws_sdk_kms::primitives::Blob::new(b"after deletion".to_vec()))
            .send()
            .await,
        400,
        "UnrecognizedClientException",
    );
    let resp = call_as(&kw, &doomed, "GenerateRandom", &json!({ "NumberOfBytes": 8 })).await;
    resp.assert_error(
        "raw GenerateRandom with a deleted access key",
        400,
        "UnrecognizedClientException",
    );
    expect_sdk_error(
        "Keyward.GetAuditLog with a deleted access key",
        sdk(&kw, &doomed).get_audit_log(None, None, None, None).await,
        400,
        "UnrecognizedClientException",
    );
    let listed = sdk_ok("ListAccessKeys", admin.list_access_keys().await);
    assert!(
        !listed.iter().any(|k| k.access_key_id == doomed.access_key_id),
        "deleted key still listed: {listed:?}"
    );
    expect_sdk_error(
        "deleting it again",
        admin.delete_access_key(&doomed.access_key_id).await,
        400,
        "NotFoundException",
    );
    // The others still work.
    crate::harness::encrypt(&kms(&kw, &t.user), &key, b"the other KeyUser", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_or_future_timestamp_is_rejected() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let t = create_tenant(&kw).await;
    let body = br#"{"NumberOfBytes":16}"#.to_vec();
    let signed_at = |time: SystemTime| {
        let mut headers = api_headers(&kw.addr, "TrentService.GenerateRandom");
        sign_headers(&mut headers, &kw.addr, &body, &t.user, time);
        headers
    };
    let now = SystemTime::now();
    let resp = kw.request("POST", "/", &signed_at(now), &body).await;
    ok_json("signed now", &resp);
    for (what, time) in [
        ("10 minutes old", now - Duration::from_secs(600)),
        ("10 minutes ahead", now + Duration::from_secs(600)),
    ] {
        let resp = kw.request("POST", "/", &signed_at(time), &body).await;
        resp.assert_error(&format!("X-Amz-Date {what}"), 400, "InvalidSignatureException");
    }
    // Both refusals are audited as Deny in the tenant's chain, as the KeyUser.
    let records = sdk_ok("GetAuditLog", sdk(&kw, &t.admin).audit_records(None, None).await);
    let stale: Vec<_> = records
        .iter()
        .filter(|r| r.decision == "Deny" && r.access_key_id == t.user.access_key_id)
        .collect();
    assert_eq!(stale.len(), 2, "{records:#?}");
    for r in stale {
        assert_eq!(r.operation, "TrentService.GenerateRandom");
        assert!(r.reason.starts_with("InvalidSignatureException: "), "{r:?}");
        assert_eq!(r.role, "KeyUser");
        assert_eq!(r.chain, t.id);
    }
}
