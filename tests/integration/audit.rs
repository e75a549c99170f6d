//! The audit chain: a scripted session of one fresh tenant is returned by
//! `Keyward.GetAuditLog` exactly, in order, and verifies; tampering with the
//! sealed records in the host's store (deleting, swapping, editing, dropping
//! the last) is detected and names the first bad record; `kmsctl audit
//! verify` agrees; no secret of the session is on disk or in a log.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_sdk::audit::{AuditError, AuditRecord, verify_chain};
use serde_json::{Value, json};

use crate::harness::{Creds, Keyward, RawResponse, Sandbox, files_under};
use crate::principals::{Tenant, b64, call_as, create_tenant, operator, request_id, sdk, sdk_ok, unb64};

/// What one request of the script must have left in the chain.
#[derive(Debug, Clone)]
struct Expected {
    operation: String,
    access_key_id: String,
    role: &'static str,
    decision: &'static str,
    key_arn: String,
    /// The exact `Reason`: "" when allowed, else "<__type>: <message>".
    reason: String,
    request_id: Option<String>,
}

/// A finished scripted session: its tenant, the records it must have
/// produced (in order), and every secret it handled.
struct Session {
    tenant: Tenant,
    key_arn: String,
    expected: Vec<Expected>,
    /// (label, bytes) of secrets that must appear nowhere on disk or in logs.
    secrets: Vec<(String, Vec<u8>)>,
}

/// The exact Reason a failed response must be audited with.
fn reason_of(resp: &RawResponse) -> String {
    if resp.status == 200 {
        return String::new();
    }
    let json = resp.json();
    format!(
        "{}: {}",
        json["__type"].as_str().unwrap_or_default(),
        json["message"].as_str().unwrap_or_default()
    )
}

/// Runs one request of the script and notes what its record must be.
#[allow(clippy::too_many_arguments)]
async fn step(
    kw: &Keyward,
    expected: &mut Vec<Expected>,
    creds: &Creds,
    role: &'static str,
    op: &str,
    body: Value,
    status_type: (u16, &str),
    decision: &'static str,
    key_arn: &str,
) -> RawResponse {
    let resp = call_as(kw, creds, op, &body).await;
    let what = format!("script step {}: {op} as {role}", expected.len() + 1);
    if status_type.0 == 200 {
        crate::principals::ok_json(&what, &resp);
    } else {
        resp.assert_error(&what, status_type.0, status_type.1);
    }
    expected.push(Expected {
        operation: crate::principals::target(op),
        access_key_id: creds.access_key_id.clone(),
        role,
        decision,
        key_arn: key_arn.to_string(),
        reason: reason_of(&resp),
        request_id: request_id(&resp),
    });
    resp
}

/// The scripted session: a fresh tenant's KeyAdmin and KeyUser make a known
/// sequence of requests, allowed, denied and failing.
async fn scripted_session(kw: &Keyward) -> Session {
    let tenant = create_tenant(kw).await;
    let (admin, user) = (&tenant.admin, &tenant.user);
    let mut exp = Vec::new();
    // create_tenant: the KeyAdmin's CreateAccessKey is record 1.
    exp.push(Expected {
        operation: "Keyward.CreateAccessKey".into(),
        access_key_id: admin.access_key_id.clone(),
        role: "KeyAdmin",
        decision: "Allow",
        key_arn: String::new(),
        reason: String::new(),
        request_id: None,
    });
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("tenant KeyAdmin secret".into(), admin.secret.clone().into_bytes()),
        ("tenant KeyUser secret".into(), user.secret.clone().into_bytes()),
        ("bootstrap secret".into(), kw.creds.secret.clone().into_bytes()),
        ("operator secret".into(), kw.operator.secret.clone().into_bytes()),
    ];
    let ok = (200, "");

    let created = step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "CreateKey",
        json!({ "Description": "audited" }),
        ok,
        "Allow",
        "",
    )
    .await;
    let key_arn = created.json()["KeyMetadata"]["Arn"]
        .as_str()
        .expect("KeyMetadata.Arn")
        .to_string();
    let key_id = created.json()["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyMetadata.KeyId")
        .to_string();
    exp.last_mut().expect("step").key_arn = key_arn.clone();

    let second = step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "Keyward.CreateAccessKey",
        json!({ "Role": "KeyUser" }),
        ok,
        "Allow",
        "",
    )
    .await;
    let second_user = Creds {
        access_key_id: second.json()["AccessKeyId"].as_str().expect("AccessKeyId").to_string(),
        secret: second.json()["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey")
            .to_string(),
    };
    secrets.push(("second KeyUser secret".into(), second_user.secret.clone().into_bytes()));

    let plaintext = format!("AUDIT-SESSION-PLAINTEXT-{}", crate::harness::random_alnum(24)).into_bytes();
    secrets.push(("plaintext".into(), plaintext.clone()));
    let enc = step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "Encrypt",
        json!({ "KeyId": key_id, "Plaintext": b64(&plaintext) }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;
    let ciphertext = enc.json()["CiphertextBlob"]
        .as_str()
        .expect("CiphertextBlob")
        .to_string();
    let dec = step(
        kw,
        &mut exp,
        &second_user,
        "KeyUser",
        "Decrypt",
        json!({ "CiphertextBlob": ciphertext }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;
    assert_eq!(unb64(dec.json()["Plaintext"].as_str().expect("Plaintext")), plaintext);

    // Denied: the KeyAdmin may not encrypt; the KeyUser may not create keys.
    step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "Encrypt",
        json!({ "KeyId": key_id, "Plaintext": b64(b"denied") }),
        (400, "AccessDeniedException"),
        "Deny",
        "",
    )
    .await;
    step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "CreateKey",
        json!({}),
        (400, "AccessDeniedException"),
        "Deny",
        "",
    )
    .await;
    // Failing: a key that does not exist.
    step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "DescribeKey",
        json!({ "KeyId": uuid::Uuid::new_v4().to_string() }),
        (400, "NotFoundException"),
        "Error",
        "",
    )
    .await;
    // A disabled key: failing, and the record names the key.
    step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "DisableKey",
        json!({ "KeyId": key_id }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;
    step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "Encrypt",
        json!({ "KeyId": key_id, "Plaintext": b64(b"disabled") }),
        (400, "DisabledException"),
        "Error",
        &key_arn,
    )
    .await;
    step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "EnableKey",
        json!({ "KeyId": key_arn }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;
    let gdk = step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "GenerateDataKey",
        json!({ "KeyId": key_id, "KeySpec": "AES_256" }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;
    secrets.push((
        "data key".into(),
        unb64(gdk.json()["Plaintext"].as_str().expect("data key Plaintext")),
    ));
    let random = step(
        kw,
        &mut exp,
        user,
        "KeyUser",
        "GenerateRandom",
        json!({ "NumberOfBytes": 32 }),
        ok,
        "Allow",
        "",
    )
    .await;
    secrets.push((
        "random bytes".into(),
        unb64(random.json()["Plaintext"].as_str().expect("random Plaintext")),
    ));
    // Failing authentication with a known access key: refused, and nothing
    // in its tenant's chain (the chain holds only requests that
    // authenticated as the tenant; the script's expected records say so by
    // not listing it). Sampled into the operator's chain instead.
    let wrong = Creds {
        access_key_id: user.access_key_id.clone(),
        secret: Creds::random().secret,
    };
    call_as(kw, &wrong, "GenerateRandom", &json!({ "NumberOfBytes": 8 }))
        .await
        .assert_error(
            "a known access key with the wrong secret",
            400,
            "InvalidSignatureException",
        );
    // An operation that does not exist.
    step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "TrentService.NoSuchOperation",
        json!({}),
        (400, "UnknownOperationException"),
        "Error",
        "",
    )
    .await;
    step(
        kw,
        &mut exp,
        admin,
        "KeyAdmin",
        "DescribeKey",
        json!({ "KeyId": key_id }),
        ok,
        "Allow",
        &key_arn,
    )
    .await;

    Session {
        tenant,
        key_arn,
        expected: exp,
        secrets,
    }
}

/// Asserts `records` are exactly the session's records 1..=n, in order.
#[track_caller]
fn assert_records_match(records: &[AuditRecord], session: &Session) {
    let summary = |r: &AuditRecord| {
        format!(
            "{} {} {} {} {:?} {:?}",
            r.sequence, r.operation, r.decision, r.access_key_id, r.key_arn, r.reason
        )
    };
    let got: Vec<String> = records.iter().map(summary).collect();
    assert_eq!(
        records.len(),
        session.expected.len(),
        "the chain holds exactly the session's requests:\n{}",
        got.join("\n")
    );
    let mut last_time = 0;
    for (i, (r, e)) in records.iter().zip(&session.expected).enumerate() {
        let at = format!("record {} ({})", i + 1, summary(r));
        assert_eq!(r.sequence, i as u64 + 1, "{at}: sequence");
        assert!(!r.corrupt, "{at}: corrupt");
        assert_eq!(r.chain, session.tenant.id, "{at}: chain");
        assert_eq!(r.operation, e.operation, "{at}: operation");
        assert_eq!(r.decision, e.decision, "{at}: decision");
        assert_eq!(r.access_key_id, e.access_key_id, "{at}: access key");
        assert_eq!(r.role, e.role, "{at}: role");
        assert_eq!(r.key_arn, e.key_arn, "{at}: key ARN");
        assert_eq!(r.reason, e.reason, "{at}: reason");
        assert_eq!(r.policy_module, "", "{at}: no policy module decided");
        if let Some(id) = &e.request_id {
            assert_eq!(&r.request_id, id, "{at}: request id (x-amzn-RequestId)");
        }
        assert!(!r.request_id.is_empty(), "{at}: request id");
        assert!(r.time >= last_time, "{at}: time goes backwards");
        last_time = r.time;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_session_is_audited_exactly_and_verifies() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let started_ms = crate::harness::epoch_secs(std::time::SystemTime::now()) as u64 * 1000;
    let session = scripted_session(&kw).await;
    let n = session.expected.len() as u64;
    let admin = sdk(&kw, &session.tenant.admin);

    // GetAuditLog answers with the records before its own.
    let page = sdk_ok("GetAuditLog", admin.get_audit_log(None, None, Some(1000), None).await);
    assert!(!page.truncated && page.next_marker.is_none());
    assert_eq!(page.head.chain, session.tenant.id);
    assert_eq!(page.head.sequence, n, "head after the session");
    assert_records_match(&page.records, &session);
    assert!(page.records[0].time >= started_ms.saturating_sub(5_000));
    let key = unb64(&page.audit_public_key);
    let verified = verify_chain(&page.records, &page.head, &key).unwrap_or_else(|e| panic!("verify_chain: {e}"));
    assert_eq!(
        (verified.chain.as_str(), verified.records),
        (session.tenant.id.as_str(), n)
    );
    assert_eq!(verified.head_hash, page.records[n as usize - 1].hash);

    // The GetAuditLog itself is record n + 1, seen by the next one.
    let chain = sdk_ok("fetch_audit_chain", admin.fetch_audit_chain().await);
    assert_eq!(chain.head.sequence, n + 1);
    assert_records_match(&chain.records[..n as usize], &session);
    let own = &chain.records[n as usize];
    assert_eq!(
        (
            own.operation.as_str(),
            own.decision.as_str(),
            own.access_key_id.as_str()
        ),
        (
            "Keyward.GetAuditLog",
            "Allow",
            session.tenant.admin.access_key_id.as_str()
        )
    );
    chain
        .verify_with(&key)
        .unwrap_or_else(|e| panic!("verify after GetAuditLog: {e}"));
    // Records are immutable: the prefix is the same as before.
    assert_eq!(&chain.records[..n as usize], &page.records[..]);

    // Paging (Limit 2, following NextMarker) returns the same records.
    let mut paged: Vec<AuditRecord> = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..100 {
        let p = sdk_ok(
            "GetAuditLog page",
            admin.get_audit_log(None, None, Some(2), marker.as_deref()).await,
        );
        assert!(p.records.len() <= 2);
        paged.extend(p.records);
        if !p.truncated {
            break;
        }
        marker = Some(p.next_marker.expect("NextMarker on a truncated page"));
    }
    assert!(paged.len() > n as usize + 1, "pages cover the chain: {}", paged.len());
    assert_eq!(&paged[..n as usize + 1], &chain.records[..]);
    for (i, r) in paged.iter().enumerate() {
        assert_eq!(r.sequence, i as u64 + 1, "paged sequences are contiguous");
    }
    // A time window in the future holds nothing.
    let future = crate::harness::epoch_secs(std::time::SystemTime::now()) as u64 + 3600;
    let empty = sdk_ok(
        "GetAuditLog in the future",
        admin.get_audit_log(Some(future), None, None, None).await,
    );
    assert!(empty.records.is_empty(), "{:?}", empty.records);

    // A KeyUser reads the same chain.
    let by_user = sdk_ok(
        "GetAuditLog as KeyUser",
        sdk(&kw, &session.tenant.user).fetch_audit_chain().await,
    );
    assert_eq!(by_user.head.chain, session.tenant.id);
    assert_eq!(&by_user.records[..n as usize], &page.records[..]);

    // The operator chain: the tenant's creation, and a request with an unknown access key.
    let unknown = Creds::random();
    call_as(&kw, &unknown, "ListKeys", &json!({})).await.assert_error(
        "unknown access key",
        400,
        "UnrecognizedClientException",
    );
    let op_chain = sdk_ok("operator chain", operator(&kw).fetch_audit_chain().await);
    assert_eq!(op_chain.head.chain, "operator");
    assert_eq!(op_chain.audit_public_key, key, "one audit key for every chain");
    op_chain
        .verify_with(&key)
        .unwrap_or_else(|e| panic!("operator chain: {e}"));
    assert!(
        op_chain
            .records
            .iter()
            .any(|r| r.operation == "Keyward.CreateTenant" && r.decision == "Allow"),
        "{:#?}",
        op_chain.records
    );
    let unknown_rec = op_chain
        .records
        .iter()
        .find(|r| r.access_key_id == unknown.access_key_id)
        .unwrap_or_else(|| panic!("unknown access key not in the operator chain: {:#?}", op_chain.records));
    assert_eq!(
        (unknown_rec.operation.as_str(), unknown_rec.decision.as_str()),
        ("TrentService.ListKeys", "Deny")
    );
    assert!(unknown_rec.reason.starts_with("UnrecognizedClientException: "));
    assert!(
        unknown_rec.reason.contains("(sampled: "),
        "failed authentications reach the operator's chain as samples: {unknown_rec:?}"
    );
    // The KeyUser's wrong-secret request was sampled there too (the first failures are).
    assert!(
        op_chain
            .records
            .iter()
            .any(|r| r.access_key_id == session.tenant.user.access_key_id
                && r.reason.starts_with("InvalidSignatureException: ")
                && r.role.is_empty()),
        "{:#?}",
        op_chain.records
    );
    // ... and the tenant's chain holds none of the operator's, unknown or
    // unauthenticated records.
    assert!(
        chain.records.iter().all(|r| r.chain == session.tenant.id
            && r.access_key_id != unknown.access_key_id
            && !r.reason.starts_with("InvalidSignatureException")),
        "{:#?}",
        chain.records
    );

    // A forged chain does not verify: every record altered in turn.
    for i in 0..chain.records.len() {
        let mut forged = chain.records.clone();
        forged[i].decision = if forged[i].decision == "Allow" { "Deny" } else { "Allow" }.into();
        let err = verify_chain(&forged, &chain.head, &key).expect_err("an altered record");
        assert_eq!(err.sequence(), Some(i as u64 + 1), "{err}");
    }

    // No secret of the session on disk or in the logs.
    let stdout = kw.stdout_lines().join("\n");
    kw.stop();
    let hits = scan_for_secrets(&sb, &session.secrets, &stdout);
    assert!(hits.is_empty(), "secrets found:\n{}", hits.join("\n"));
    // Positive control: the scan does find what the logs do hold (access key ids).
    let ids = vec![(
        "tenant KeyAdmin access key id".to_string(),
        session.tenant.admin.access_key_id.clone().into_bytes(),
    )];
    let hits = scan_for_secrets(&sb, &ids, &stdout);
    assert!(
        hits.iter().any(|h| h.contains("stderr.log")),
        "the scan reads the logs (the access key id is logged at creation): {hits:?}"
    );
}

// ---------------------------------------------------------------- secrets

/// Every encoding of each secret a file or log could hold it in: raw,
/// base64 (standard and URL-safe, unpadded) and hex.
fn encodings(secrets: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for (label, bytes) in secrets {
        out.push((format!("{label} (raw)"), bytes.clone()));
        let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        out.push((format!("{label} (base64)"), std.into_bytes()));
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        out.push((format!("{label} (base64url)"), url.into_bytes()));
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push((format!("{label} (hex)"), hex.into_bytes()));
    }
    out
}

/// Which needles occur in `haystack` (one pass, needles bucketed by first byte).
fn occurring(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<usize> {
    let mut by_first: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, (_, n)) in needles.iter().enumerate() {
        assert!(n.len() >= 8, "needle {} is too short to search for", needles[i].0);
        by_first[usize::from(n[0])].push(i);
    }
    let mut hit = vec![false; needles.len()];
    for pos in 0..haystack.len() {
        for &i in &by_first[usize::from(haystack[pos])] {
            if !hit[i] && haystack[pos..].starts_with(&needles[i].1) {
                hit[i] = true;
            }
        }
    }
    (0..needles.len()).filter(|&i| hit[i]).collect()
}

#[test]
fn occurring_finds_and_misses() {
    let needles = vec![
        ("a".to_string(), b"secret-1".to_vec()),
        ("b".to_string(), b"absent-2".to_vec()),
    ];
    assert_eq!(occurring(b"xx secret-1 yy", &needles), vec![0]);
    assert_eq!(occurring(b"secret-", &needles), Vec::<usize>::new());
}

/// Every (file, secret) pair where a secret occurs under the sandbox's data
/// dir, in its processes' stderr logs, or in `stdout`.
fn scan_for_secrets(sb: &Sandbox, secrets: &[(String, Vec<u8>)], stdout: &str) -> Vec<String> {
    let needles = encodings(secrets);
    let mut files = files_under(&sb.data_dir());
    files.extend(sb.log_files());
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("store")),
        "the store was scanned: {files:?}"
    );
    let mut hits = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        for i in occurring(&bytes, &needles) {
            hits.push(format!("{}: {}", f.display(), needles[i].0));
        }
    }
    for i in occurring(stdout.as_bytes(), &needles) {
        hits.push(format!("stdout: {}", needles[i].0));
    }
    hits
}

// ---------------------------------------------------------------- tampering

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
        let dest = to.join(entry.file_name());
        if meta.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if meta.is_file() {
            std::fs::copy(entry.path(), &dest).expect("copy file");
        } // sockets are recreated by the service
    }
}

/// A sandbox whose data dir is a copy of `from`'s (which must be stopped),
/// with the same bootstrap and operator credentials.
fn clone_sandbox(from: &Sandbox) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.creds = from.creds.clone();
    sb.operator = from.operator.clone();
    copy_dir(&from.data_dir(), &sb.data_dir());
    sb
}

fn record_key(chain: &str, sequence: u64) -> String {
    format!("{chain}/r/{sequence:020}")
}

#[derive(Debug, Clone, Copy)]
enum Tampering {
    None,
    DeleteMiddle,
    SwapTwo,
    EditOneByte,
    DeleteLast,
}

/// A record of namespace `audit` in a stopped sandbox's embedded store.
async fn audit_record(store: &keyward_proxy::Store, key: String) -> Option<Vec<u8>> {
    let op = keyward_wire::StoreOp::Get {
        namespace: "audit".into(),
        key,
    };
    match store.call(op).await {
        keyward_wire::StoreResult::Value(v) => v.map(serde_bytes::ByteBuf::into_vec),
        other => panic!("read from the store: {other:?}"),
    }
}

/// Writes (or with `None` deletes) a record of namespace `audit`.
async fn set_audit_record(store: &keyward_proxy::Store, key: String, value: Option<Vec<u8>>) {
    let namespace = "audit".to_string();
    let op = match value {
        Some(value) => keyward_wire::StoreOp::Put { namespace, key, value },
        None => keyward_wire::StoreOp::Delete { namespace, key },
    };
    assert_eq!(
        store.call(op).await,
        keyward_wire::StoreResult::Done,
        "write to the store"
    );
}

/// Applies `how` to chain `chain` (records 1..=n) in the stopped sandbox's
/// embedded store; returns the sequence a verifier must name.
async fn tamper_store(sb: &Sandbox, chain: &str, n: u64, how: Tampering) -> Option<u64> {
    let store = keyward_proxy::Store::embedded(&sb.store_dir(), None).expect("open the embedded store");
    let head = audit_record(&store, format!("{chain}/head")).await;
    assert!(head.is_some(), "{chain}/head exists in namespace audit");
    for s in 1..=n {
        assert!(
            audit_record(&store, record_key(chain, s)).await.is_some(),
            "record {s} of {chain} is in namespace audit"
        );
    }
    let mid = n / 2;
    match how {
        Tampering::None => None,
        Tampering::DeleteMiddle => {
            set_audit_record(&store, record_key(chain, mid), None).await;
            Some(mid)
        }
        Tampering::SwapTwo => {
            let a = audit_record(&store, record_key(chain, mid)).await.expect("record");
            let b = audit_record(&store, record_key(chain, mid + 1)).await.expect("record");
            assert_ne!(a, b);
            set_audit_record(&store, record_key(chain, mid), Some(b)).await;
            set_audit_record(&store, record_key(chain, mid + 1), Some(a)).await;
            Some(mid)
        }
        Tampering::EditOneByte => {
            let mut v = audit_record(&store, record_key(chain, mid)).await.expect("record");
            let i = v.len() / 2;
            v[i] ^= 0x01;
            set_audit_record(&store, record_key(chain, mid), Some(v)).await;
            Some(mid)
        }
        Tampering::DeleteLast => {
            set_audit_record(&store, record_key(chain, n), None).await;
            Some(n)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_audit_store_is_detected_at_the_first_bad_record() {
    let mut base = Sandbox::new();
    let mut kw = base.start().await;
    let session = scripted_session(&kw).await;
    let n = session.expected.len() as u64;
    // The audit key, read by the operator so the tenant's chain stays at n records.
    let pinned_key = sdk_ok("operator GetAuditLog", operator(&kw).fetch_audit_chain().await).audit_public_key;
    kw.stop();
    drop(kw);

    for how in [
        Tampering::None,
        Tampering::DeleteMiddle,
        Tampering::SwapTwo,
        Tampering::EditOneByte,
        Tampering::DeleteLast,
    ] {
        let mut sb = clone_sandbox(&base);
        let bad = tamper_store(&sb, &session.tenant.id, n, how).await;
        let mut kw = sb.start().await;
        let chain = sdk_ok(
            &format!("GetAuditLog after {how:?}"),
            sdk(&kw, &session.tenant.admin).fetch_audit_chain().await,
        );
        assert_eq!(
            chain.audit_public_key, pinned_key,
            "{how:?}: the audit key survives the restart"
        );
        let result = verify_chain(&chain.records, &chain.head, &pinned_key);
        match (bad, result) {
            (None, Ok(v)) => {
                assert_eq!(v.records, n, "{how:?}");
                assert_records_match(&chain.records, &session);
            }
            (Some(seq), Err(e)) => {
                assert_eq!(e.sequence(), Some(seq), "{how:?}: verification names record {seq}: {e}");
                let kind_ok = match how {
                    Tampering::DeleteMiddle => matches!(e, AuditError::Missing { .. }),
                    Tampering::SwapTwo | Tampering::EditOneByte => matches!(e, AuditError::Corrupt { .. }),
                    Tampering::DeleteLast => matches!(e, AuditError::MissingBeforeHead { .. }),
                    Tampering::None => false,
                };
                assert!(kind_ok, "{how:?}: unexpected kind of failure: {e:?}");
                eprintln!("{how:?}: detected: {e}");
            }
            (bad, result) => panic!("{how:?}: expected first bad record {bad:?}, verification gave {result:?}"),
        }
        // The service keeps serving the tenant after the tampering.
        ok_key(&kw, &session).await;
        kw.stop();
    }
}

/// The session's key still works (DescribeKey by the KeyAdmin).
async fn ok_key(kw: &Keyward, session: &Session) {
    let resp = call_as(
        kw,
        &session.tenant.admin,
        "DescribeKey",
        &json!({ "KeyId": session.key_arn }),
    )
    .await;
    crate::principals::ok_json("DescribeKey after restart", &resp);
}

// ---------------------------------------------------------------- kmsctl

/// `kmsctl`, built next to the `keyward` binary by
/// `cargo build -p keyward-sdk --bin kmsctl` (a root-package test does not
/// build another package's binaries).
pub(crate) fn kmsctl_path() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_keyward")).with_file_name("kmsctl");
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build -p keyward-sdk --bin kmsctl` \
         (with the same profile as the tests)",
        path.display()
    );
    path
}

fn kmsctl(kw: &Keyward, creds: &Creds, args: &[&str]) -> std::process::Output {
    Command::new(kmsctl_path())
        .args(args)
        .env("KEYWARD_ENDPOINT", &kw.url)
        .env("AWS_CA_BUNDLE", kw.data_dir.join("tls").join("ca.pem"))
        .env("AWS_REGION", crate::harness::REGION)
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .output()
        .expect("run kmsctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_audit_verify_accepts_the_chain_and_names_a_deleted_record() {
    let kmsctl_bin = kmsctl_path();
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let session = scripted_session(&kw).await;
    let n = session.expected.len() as u64;
    let key_file = sb.data_dir().with_file_name("audit-key.der");
    let page = sdk_ok(
        "GetAuditLog",
        sdk(&kw, &session.tenant.admin)
            .get_audit_log(None, None, Some(1), None)
            .await,
    );
    std::fs::write(&key_file, unb64(&page.audit_public_key)).expect("write the audit key");
    let key_arg = key_file.to_str().expect("utf-8 path");

    let out = kmsctl(
        &kw,
        &session.tenant.admin,
        &["audit", "verify", "--public-key", key_arg],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} audit verify: {stdout} {stderr}",
        kmsctl_bin.display()
    );
    assert!(
        stdout.contains("audit chain OK") && stdout.contains(&session.tenant.id),
        "{stdout}"
    );

    kw.stop();
    drop(kw);
    let bad = tamper_store(&sb, &session.tenant.id, n, Tampering::DeleteMiddle)
        .await
        .expect("a bad record");
    let kw = sb.start().await;
    let out = kmsctl(&kw, &session.tenant.user, &["audit", "verify", "--public-key", key_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kmsctl after deleting record {bad}: {stderr}"
    );
    assert!(
        stderr.contains(&format!("audit chain INVALID at record {bad}:")),
        "kmsctl names record {bad}: {stderr}"
    );
}

/// Issue 19 item 3: `kmsctl audit verify --state` remembers the signed head
/// it verified; after the host puts an older copy of the data dir back (the
/// enclave restarts on it and signs the older head genuinely), the same
/// command reports the rollback and exits 1, leaving the memory as it was;
/// once the restored chain has grown past the remembered head, it is a fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_audit_verify_with_state_reports_a_rolled_back_store() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let tenant = create_tenant(&kw).await;
    let head_now = |kw: &Keyward| {
        let client = sdk(kw, &tenant.admin);
        async move { sdk_ok("GetAuditLog", client.get_audit_log(None, None, Some(1), None).await) }
    };
    let page = head_now(&kw).await;
    let key_file = sb.data_dir().with_file_name("audit-key.der");
    std::fs::write(&key_file, unb64(&page.audit_public_key)).expect("write the audit key");
    // The verifier's memory lives with the verifier, outside the host's data dir.
    let state = sb.data_dir().with_file_name("verifier").join("audit-heads.json");
    let (key_arg, state_arg) = (
        key_file.to_str().expect("utf-8 path").to_owned(),
        state.to_str().expect("utf-8 path").to_owned(),
    );
    let verify = |kw: &Keyward| {
        kmsctl(
            kw,
            &tenant.admin,
            &["audit", "verify", "--public-key", &key_arg, "--state", &state_arg],
        )
    };
    let ok = |out: &std::process::Output, says: &str| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "kmsctl audit verify: {stdout} {stderr}");
        assert!(stdout.contains("audit chain OK") && stdout.contains(says), "{stdout}");
    };
    ok(&verify(&kw), "first seen for this chain and key");

    // The host keeps a copy of the data dir (store and dev custodian alike).
    kw.stop();
    drop(kw);
    let snapshot = sb.data_dir().with_file_name("data-copy");
    copy_dir(&sb.data_dir(), &snapshot);

    // Life goes on: the chain grows, and the verifier sees it grow.
    let mut kw = sb.start().await;
    ok(&verify(&kw), "extends the one last seen");
    ok(&verify(&kw), "extends the one last seen");
    let remembered = serde_json::from_slice::<Value>(&std::fs::read(&state).expect("state file"))
        .expect("state file is JSON")["Heads"][0]["Sequence"]
        .as_u64()
        .expect("a remembered sequence");
    kw.stop();
    drop(kw);

    // The host puts the copy back: the enclave starts on the older store and
    // signs its (older, genuine) head.
    std::fs::remove_dir_all(sb.data_dir()).expect("remove the data dir");
    copy_dir(&snapshot, &sb.data_dir());
    let kw = sb.start().await;
    let state_before = std::fs::read(&state).expect("state file");
    let out = verify(&kw);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rollback fails the verification: {stderr}"
    );
    assert!(
        stderr.contains(&format!("ROLLBACK of audit chain \"{}\"", tenant.id))
            && stderr.contains(&format!("sequence {remembered}"))
            && stderr.contains(&state_arg),
        "kmsctl names the rollback, the remembered head and the memory: {stderr}"
    );
    assert!(!stderr.contains("audit chain OK"), "{stderr}");
    assert_eq!(
        std::fs::read(&state).expect("state file"),
        state_before,
        "the memory is unchanged"
    );

    // Requests on the restored store grow the chain past the remembered
    // sequence, along another history: a fork at the remembered head.
    let mut served = head_now(&kw).await.head.sequence;
    let mut requests = 0;
    while served <= remembered + 1 {
        requests += 1;
        assert!(requests < 64, "the chain does not grow: head at {served}");
        served = head_now(&kw).await.head.sequence;
    }
    let out = verify(&kw);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a fork fails the verification: {stderr}");
    assert!(
        stderr.contains(&format!(
            "FORK of audit chain \"{}\" at sequence {remembered}",
            tenant.id
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&state).expect("state file"),
        state_before,
        "the memory is unchanged"
    );

    // A corrupt memory is refused before anything is sent (usage error).
    std::fs::write(&state, b"{\"Format\": \"keyward/audit-heads/v1\", \"Heads\": [").expect("write");
    let out = verify(&kw);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is corrupt") && stderr.contains(&state_arg), "{stderr}");
}
