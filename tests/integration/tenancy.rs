//! Tenant isolation: another tenant's key id, key ARN, alias name, alias ARN
//! and ciphertext answer exactly like a key that does not exist, for every
//! key operation and both roles; lists show nothing of another tenant.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::harness::{Creds, Keyward, RawResponse, Sandbox};
use crate::principals::{
    Fixture, KEY_OPS, Need, Tenant, b64, call_as, create_key_as, create_tenant, create_tenant_keys, message, ok_json,
    outcome, peer_public_key, random_alias, request_id, sdk, sdk_ok, unb64,
};

/// A key reference form: how the probe names the other tenant's key, and
/// how the same form names a key that does not exist.
struct Form {
    name: &'static str,
    probe: String,
    missing: String,
    /// Substrings that identify the key in messages (replaced before comparing).
    identifiers: Vec<String>,
}

/// `msg` with every identifier (longest first) replaced by `<ID>`.
fn normalize(msg: &str, identifiers: &[String]) -> String {
    let mut ids: Vec<&String> = identifiers.iter().filter(|s| !s.is_empty()).collect();
    ids.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = msg.to_string();
    for id in ids {
        out = out.replace(id.as_str(), "<ID>");
    }
    out
}

/// Compares a probe on another tenant's key with the same call on a missing
/// key: both must be `expected` (400; `NotFoundException` unless the form is
/// not one the operation takes) with the same message once the identifiers
/// are masked. Returns a description of any difference.
fn compare(
    what: &str,
    probe: &RawResponse,
    missing: &RawResponse,
    identifiers: &[String],
    expected: &str,
) -> Option<String> {
    let expected = (400, expected.to_string());
    let (p, m) = (outcome(probe), outcome(missing));
    if p != expected || m != p {
        return Some(format!(
            "{what}: other tenant's key -> {p:?} {:?}; missing key -> {m:?} {:?} (both must be {expected:?})",
            message(probe),
            message(missing)
        ));
    }
    let (pm, mm) = (
        normalize(&message(probe), identifiers),
        normalize(&message(missing), identifiers),
    );
    (pm != mm).then(|| format!("{what}: messages differ beyond the key named: {pm:?} vs {mm:?}"))
}

/// A probe and its missing-key baseline, to compare their audit records too
/// (B reads its own chain: a difference there would tell what exists).
struct AuditPair {
    what: String,
    probe: String,
    missing: String,
    identifiers: Vec<String>,
}

fn audit_pair(what: &str, probe: &RawResponse, missing: &RawResponse, identifiers: &[String]) -> AuditPair {
    let rid = |r: &RawResponse| request_id(r).unwrap_or_else(|| panic!("{what}: no x-amzn-RequestId: {r:?}"));
    AuditPair {
        what: what.to_string(),
        probe: rid(probe),
        missing: rid(missing),
        identifiers: identifiers.to_vec(),
    }
}

fn principals_for(need: Need, tenant: &Tenant) -> Vec<(&'static str, &Creds)> {
    match need {
        Need::KeyAdmin => vec![("KeyAdmin", &tenant.admin)],
        Need::KeyUser => vec![("KeyUser", &tenant.user)],
        Need::Either => vec![("KeyAdmin", &tenant.admin), ("KeyUser", &tenant.user)],
    }
}

async fn create_alias(kw: &Keyward, admin: &Creds, alias: &str, key: &str) {
    let resp = call_as(
        kw,
        admin,
        "CreateAlias",
        &json!({ "AliasName": alias, "TargetKeyId": key }),
    )
    .await;
    ok_json(&format!("CreateAlias {alias}"), &resp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_keys_answer_like_missing_keys() {
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let a = create_tenant(&kw).await;
    let b = create_tenant(&kw).await;
    assert_ne!(a.id, b.id);

    // A: keys (symmetric, ECC, HMAC), an alias for each, a ciphertext.
    let a_keys = create_tenant_keys(&kw, &a).await;
    let mut a_targets: Vec<(&'static str, String, String)> = Vec::new();
    for (label, key) in [
        ("symmetric", &a_keys.symmetric),
        ("ECC", &a_keys.ecc_sign),
        ("HMAC", &a_keys.hmac),
    ] {
        let alias = random_alias();
        create_alias(&kw, &a.admin, &alias, key).await;
        a_targets.push((label, key.clone(), alias));
    }

    // B: a key and an alias of its own (UpdateAlias needs one to exist).
    let b_key = create_key_as(&kw, &b.admin, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let b_alias = random_alias();
    create_alias(&kw, &b.admin, &b_alias, &b_key).await;
    let b_ciphertext = {
        let resp = call_as(
            &kw,
            &b.user,
            "Encrypt",
            &json!({ "KeyId": b_key, "Plaintext": b64(b"B's own data") }),
        )
        .await;
        ok_json("B encrypts with its own key", &resp)["CiphertextBlob"]
            .as_str()
            .expect("CiphertextBlob")
            .to_string()
    };
    let a_blob = unb64(&a_keys.fixture.ciphertext);
    let b_fixture = Fixture {
        ciphertext: a_keys.fixture.ciphertext.clone(),
        signature: a_keys.fixture.signature.clone(),
        mac: a_keys.fixture.mac.clone(),
        peer_public_key: peer_public_key(),
        new_alias: String::new(),
        existing_alias: b_alias.clone(),
    };

    let mut failures: Vec<String> = Vec::new();
    let mut probes = 0usize;
    // Every call of B's that failed, to find in B's audit chain.
    let mut b_failed = 0usize;
    let mut pairs: Vec<AuditPair> = Vec::new();
    let missing_uuid = uuid::Uuid::new_v4().to_string();
    let missing_alias = random_alias();
    // Baselines are the same for every one of A's keys: (op, role, form) -> response.
    let mut baselines: HashMap<(&str, &str, &str), RawResponse> = HashMap::new();

    for (label, key, alias) in &a_targets {
        let forms = [
            Form {
                name: "key id",
                probe: key.clone(),
                missing: missing_uuid.clone(),
                identifiers: vec![key.clone(), missing_uuid.clone()],
            },
            Form {
                name: "key ARN",
                probe: a.key_arn(key),
                missing: a.key_arn(&missing_uuid),
                identifiers: vec![
                    a.key_arn(key),
                    a.key_arn(&missing_uuid),
                    key.clone(),
                    missing_uuid.clone(),
                ],
            },
            Form {
                name: "alias name",
                probe: alias.clone(),
                missing: missing_alias.clone(),
                identifiers: vec![alias.clone(), missing_alias.clone()],
            },
            Form {
                name: "alias ARN",
                probe: a.alias_arn(alias),
                missing: a.alias_arn(&missing_alias),
                identifiers: vec![
                    a.alias_arn(alias),
                    a.alias_arn(&missing_alias),
                    alias.clone(),
                    missing_alias.clone(),
                ],
            },
        ];
        for op in KEY_OPS {
            for (role, creds) in principals_for(op.need, &b) {
                for form in &forms {
                    let mut fx = b_fixture.clone();
                    fx.new_alias = random_alias();
                    let mut identifiers = form.identifiers.clone();
                    identifiers.push(fx.new_alias.clone());
                    let body = probe_body(op.name, &form.probe, key, &fx, &a_blob, &b_ciphertext);
                    let probe = call_as(&kw, creds, op.name, &body).await;
                    b_failed += usize::from(probe.status != 200);
                    let base_key = (op.name, role, form.name);
                    if let std::collections::hash_map::Entry::Vacant(slot) = baselines.entry(base_key) {
                        let mut fx = b_fixture.clone();
                        fx.new_alias = random_alias();
                        let body = probe_body(op.name, &form.missing, &missing_uuid, &fx, &a_blob, &b_ciphertext);
                        let resp = call_as(&kw, creds, op.name, &body).await;
                        b_failed += usize::from(resp.status != 200);
                        slot.insert(resp);
                    }
                    let missing = &baselines[&base_key];
                    let what = format!("B's {role}: {} on A's {label} key by {}", op.name, form.name);
                    // CreateAlias / UpdateAlias take a key id or key ARN as
                    // TargetKeyId, never an alias: both answer the same
                    // ValidationException.
                    let alias_target =
                        matches!(op.name, "CreateAlias" | "UpdateAlias") && form.name.starts_with("alias");
                    let expected = if alias_target {
                        "ValidationException"
                    } else {
                        "NotFoundException"
                    };
                    probes += 1;
                    // The baseline's own CreateAlias name differs: masked too.
                    let ids = mask_new_aliases(&identifiers, missing);
                    if let Some(f) = compare(&what, &probe, missing, &ids, expected) {
                        failures.push(f);
                    }
                    pairs.push(audit_pair(&what, &probe, missing, &ids));
                }
            }
        }
    }
    eprintln!("tenant isolation: {probes} probes of A's keys by B's principals");

    // A's ciphertext without a KeyId, against a ciphertext naming a key that
    // does not exist (A's blob with the key uuid replaced).
    let forged = blob_naming(&a_blob, &uuid::Uuid::new_v4().to_string());
    let a_blob_key = uuid::Uuid::from_slice(&a_blob[1..17]).expect("uuid").to_string();
    let forged_key = uuid::Uuid::from_slice(&forged[1..17]).expect("uuid").to_string();
    assert_eq!(a_blob_key, a_keys.symmetric, "the ciphertext names A's key");
    let ids = vec![
        a.key_arn(&a_blob_key),
        b.key_arn(&a_blob_key),
        b.key_arn(&forged_key),
        a_blob_key.clone(),
        forged_key.clone(),
    ];
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "Decrypt of A's ciphertext",
            json!({ "CiphertextBlob": b64(&a_blob) }),
            json!({ "CiphertextBlob": b64(&forged) }),
        ),
        (
            "ReEncrypt of A's ciphertext to B's key",
            json!({ "CiphertextBlob": b64(&a_blob), "DestinationKeyId": b_key }),
            json!({ "CiphertextBlob": b64(&forged), "DestinationKeyId": b_key }),
        ),
        (
            "ReEncrypt of A's ciphertext naming A's key as the source",
            json!({ "CiphertextBlob": b64(&a_blob), "SourceKeyId": a_blob_key, "DestinationKeyId": b_key }),
            json!({ "CiphertextBlob": b64(&forged), "SourceKeyId": forged_key, "DestinationKeyId": b_key }),
        ),
        (
            "ReEncrypt of B's ciphertext to A's key",
            json!({ "CiphertextBlob": b_ciphertext, "DestinationKeyId": a_blob_key }),
            json!({ "CiphertextBlob": b_ciphertext, "DestinationKeyId": forged_key }),
        ),
    ];
    for (what, probe_body, missing_body) in cases {
        let op = what.split_whitespace().next().expect("op");
        let probe = call_as(&kw, &b.user, op, &probe_body).await;
        let missing = call_as(&kw, &b.user, op, &missing_body).await;
        b_failed += usize::from(probe.status != 200) + usize::from(missing.status != 200);
        let what = format!("B's KeyUser: {what}");
        if let Some(f) = compare(&what, &probe, &missing, &ids, "NotFoundException") {
            failures.push(f);
        }
        pairs.push(audit_pair(&what, &probe, &missing, &ids));
    }

    // DeleteAlias of A's alias names, against an alias that does not exist.
    for (label, _, alias) in &a_targets {
        let probe = call_as(&kw, &b.admin, "DeleteAlias", &json!({ "AliasName": alias })).await;
        let missing = call_as(&kw, &b.admin, "DeleteAlias", &json!({ "AliasName": missing_alias })).await;
        b_failed += usize::from(probe.status != 200) + usize::from(missing.status != 200);
        let ids = vec![
            a.alias_arn(alias),
            b.alias_arn(alias),
            b.alias_arn(&missing_alias),
            alias.clone(),
            missing_alias.clone(),
        ];
        let what = format!("B's KeyAdmin: DeleteAlias of A's {label} alias");
        if let Some(f) = compare(&what, &probe, &missing, &ids, "NotFoundException") {
            failures.push(f);
        }
        pairs.push(audit_pair(&what, &probe, &missing, &ids));
    }

    // B's own key and alias named through A's account are not B's either:
    // the account in an ARN is checked, not ignored.
    for reference in [a.key_arn(&b_key), a.alias_arn(&b_alias)] {
        let resp = call_as(&kw, &b.admin, "DescribeKey", &json!({ "KeyId": reference })).await;
        b_failed += usize::from(resp.status != 200);
        if outcome(&resp) != (400, "NotFoundException".to_string()) {
            failures.push(format!(
                "B's DescribeKey of its own key as {reference}: {:?} {}",
                outcome(&resp),
                message(&resp)
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of the isolation checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // B's lists show nothing of A: no key id, no alias name, not even A's account.
    let a_secrets: Vec<&str> = a_targets
        .iter()
        .flat_map(|(_, key, alias)| [key.as_str(), alias.as_str()])
        .chain([a.id.as_str()])
        .collect();
    for (role, creds) in [("KeyAdmin", &b.admin), ("KeyUser", &b.user)] {
        for op in ["ListKeys", "ListAliases"] {
            let resp = call_as(&kw, creds, op, &json!({ "Limit": 100 })).await;
            let out = ok_json(&format!("B's {role}: {op}"), &resp);
            assert_eq!(out["Truncated"], json!(false), "{op}: one page holds everything");
            let text = out.to_string();
            for s in &a_secrets {
                assert!(!text.contains(s), "B's {role}: {op} shows {s:?} of tenant A: {text}");
            }
            let expected_own = if op == "ListKeys" { &b_key } else { &b_alias };
            assert!(
                text.contains(expected_own.as_str()),
                "B's {op} lists B's own {expected_own}: {text}"
            );
        }
    }

    // Alias names are per tenant: B may use A's alias name for its own key,
    // and A's alias is unaffected.
    let (_, a_sym, a_sym_alias) = &a_targets[0];
    create_alias(&kw, &b.admin, a_sym_alias, &b_key).await;
    for (who, creds, expected) in [("A", &a.admin, a_sym), ("B", &b.admin, &b_key)] {
        let resp = call_as(&kw, creds, "DescribeKey", &json!({ "KeyId": a_sym_alias })).await;
        let out = ok_json(&format!("{who} describes {a_sym_alias}"), &resp);
        assert_eq!(
            out["KeyMetadata"]["KeyId"].as_str(),
            Some(expected.as_str()),
            "{who}'s {a_sym_alias} names {who}'s key"
        );
    }

    // Nothing B tried changed A's keys.
    for (label, key, _) in &a_targets {
        let out = ok_json(
            "A describes its key",
            &call_as(&kw, &a.admin, "DescribeKey", &json!({ "KeyId": key })).await,
        );
        let meta = &out["KeyMetadata"];
        assert_eq!(
            meta["KeyState"],
            json!("Enabled"),
            "A's {label} key after B's attempts: {meta}"
        );
        assert_ne!(
            meta["Description"],
            json!("changed by the multi-tenant tests"),
            "A's {label} key description changed by B: {meta}"
        );
        let tags = ok_json(
            "A lists its key's tags",
            &call_as(&kw, &a.admin, "ListResourceTags", &json!({ "KeyId": key })).await,
        );
        assert_eq!(tags["Tags"], json!([]), "A's {label} key got tags from B: {tags}");
    }
    let plain = ok_json(
        "A decrypts its ciphertext",
        &call_as(&kw, &a.user, "Decrypt", &json!({ "CiphertextBlob": b64(&a_blob) })).await,
    );
    assert_eq!(plain["Plaintext"], json!(b64(b"fixture plaintext")));

    // B cannot page into A's audit chain with a marker naming A's records.
    use base64::Engine as _;
    let foreign_marker =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}/r/{:020}", a.id, 0).as_bytes());
    let resp = call_as(
        &kw,
        &b.admin,
        "Keyward.GetAuditLog",
        &json!({ "Marker": foreign_marker }),
    )
    .await;
    resp.assert_error(
        "B's GetAuditLog with a marker into A's chain",
        400,
        "InvalidMarkerException",
    );

    // A's audit chain holds only A's principals; B's attempts are in B's chain.
    let chain = sdk_ok("A's audit chain", sdk(&kw, &a.admin).fetch_audit_chain().await);
    let a_principals = [a.admin.access_key_id.as_str(), a.user.access_key_id.as_str()];
    for r in &chain.records {
        assert!(
            a_principals.contains(&r.access_key_id.as_str()) && r.chain == a.id,
            "A's chain holds a record of someone else: {r:?}"
        );
    }
    let b_chain = sdk_ok("B's audit chain", sdk(&kw, &b.admin).fetch_audit_chain().await);
    let b_refused: Vec<_> = b_chain.records.iter().filter(|r| r.decision != "Allow").collect();
    // + 1: the GetAuditLog with A's marker.
    assert_eq!(
        b_refused.len(),
        b_failed + 1,
        "B's chain records each of B's failed calls ({probes} probes among them)"
    );
    assert!(
        b_refused
            .iter()
            .all(|r| r.chain == b.id && (r.key_arn.is_empty() || r.key_arn == b.key_arn(&b_key))),
        "B's refused calls name no key but B's own: {b_refused:#?}"
    );
    // ... and each probe's record is the same as its baseline's, but for the key named.
    let by_id: HashMap<&str, &keyward_sdk::audit::AuditRecord> =
        b_chain.records.iter().map(|r| (r.request_id.as_str(), r)).collect();
    let mut audit_failures = Vec::new();
    for pair in &pairs {
        let (Some(p), Some(m)) = (by_id.get(pair.probe.as_str()), by_id.get(pair.missing.as_str())) else {
            audit_failures.push(format!("{}: no audit record in B's chain", pair.what));
            continue;
        };
        let view = |r: &keyward_sdk::audit::AuditRecord| {
            (
                r.operation.clone(),
                r.access_key_id.clone(),
                r.decision.clone(),
                normalize(&r.reason, &pair.identifiers),
                r.key_arn.clone(),
            )
        };
        if view(p) != view(m) {
            audit_failures.push(format!(
                "{}: audit records differ: {:?} vs {:?}",
                pair.what,
                view(p),
                view(m)
            ));
        }
    }
    assert!(
        audit_failures.is_empty(),
        "{} of {} probe/baseline audit records differ:\n{}",
        audit_failures.len(),
        pairs.len(),
        audit_failures.join("\n")
    );
}

/// Identifiers to mask, plus the `alias/it-...` names that appear in the
/// baseline's message (each call used its own fresh CreateAlias name).
fn mask_new_aliases(identifiers: &[String], missing: &RawResponse) -> Vec<String> {
    let mut out = identifiers.to_vec();
    let msg = message(missing);
    let mut rest = msg.as_str();
    while let Some(pos) = rest.find("alias/it-") {
        let name: String = rest[pos..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/-_".contains(*c))
            .collect();
        rest = &rest[pos + name.len()..];
        out.push(name);
    }
    out
}

/// `blob` (a ciphertext blob) with its key uuid (bytes 1..17) replaced by `key_id`.
fn blob_naming(blob: &[u8], key_id: &str) -> Vec<u8> {
    let mut out = blob.to_vec();
    out[1..17].copy_from_slice(uuid::Uuid::parse_str(key_id).expect("key uuid").as_bytes());
    out
}

/// The body of a probe of `op` naming a key as `reference` (of key uuid
/// `key_id`). Decrypt gets a ciphertext naming that same key (so the KeyId
/// matches the blob and the key lookup is what answers); ReEncrypt
/// re-encrypts B's own ciphertext (so the destination key is what answers).
fn probe_body(op: &str, reference: &str, key_id: &str, fx: &Fixture, a_blob: &[u8], b_ciphertext: &str) -> Value {
    let mut body = crate::principals::key_op_body(op, reference, fx);
    match op {
        "Decrypt" => body["CiphertextBlob"] = json!(b64(&blob_naming(a_blob, key_id))),
        "ReEncrypt" => body["CiphertextBlob"] = json!(b_ciphertext),
        _ => {}
    }
    body
}
