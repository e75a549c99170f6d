//! Per-tenant rate limits (`--tenant-rate-limit`): a tenant over its rate
//! gets `ThrottlingException` (400) while other tenants and the operator,
//! each with its own bucket, are served.

use aws_sdk_kms::error::DisplayErrorContext;

use crate::harness::{Sandbox, error_parts};
use crate::principals::{create_tenant, kms, operator, sdk, sdk_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_is_throttled_alone() {
    let mut sb = Sandbox::new();
    // 2 requests per second; the bucket holds 2 s worth (4) and starts full.
    sb.extra_args.push("--tenant-rate-limit=2".into());
    let kw = sb.start().await;
    // Two CreateTenant calls from the operator's bucket; each tenant's
    // KeyAdmin spends one token of its tenant's bucket on CreateAccessKey.
    let a = create_tenant(&kw).await;
    let b = create_tenant(&kw).await;
    let (a_user, b_user) = (kms(&kw, &a.user), kms(&kw, &b.user));

    let mut a_ok = 0;
    let mut a_throttled = 0;
    let mut b_ok = 0;
    for i in 0..20 {
        match a_user.generate_random().number_of_bytes(8).send().await {
            Ok(_) => a_ok += 1,
            Err(e) => {
                assert_eq!(
                    error_parts(&e),
                    (Some(400), Some("ThrottlingException".to_string())),
                    "tenant A request {i}: {}",
                    DisplayErrorContext(&e)
                );
                a_throttled += 1;
            }
        }
        // Tenant B, in the same burst, stays within the 3 tokens it has left.
        if i % 6 == 5 {
            b_user
                .generate_random()
                .number_of_bytes(8)
                .send()
                .await
                .unwrap_or_else(|e| panic!("tenant B during A's burst: {}", DisplayErrorContext(&e)));
            b_ok += 1;
        }
    }
    assert!(
        a_throttled >= 1,
        "20 quick requests at 2/s with a bucket of 4: {a_ok} allowed, none throttled"
    );
    assert!(a_ok >= 3, "A's bucket started with 3 tokens left: only {a_ok} allowed");
    assert_eq!(b_ok, 3);

    // A's KeyAdmin shares A's bucket: 10 quick requests cannot all pass.
    let a_admin = kms(&kw, &a.admin);
    let mut admin_throttled = 0;
    for _ in 0..10 {
        if let Err(e) = a_admin.list_keys().send().await {
            assert_eq!(
                error_parts(&e),
                (Some(400), Some("ThrottlingException".to_string())),
                "A's KeyAdmin: {}",
                DisplayErrorContext(&e)
            );
            admin_throttled += 1;
        }
    }
    assert!(admin_throttled >= 1, "A's KeyAdmin has a bucket of its own");
    // The operator's bucket is its own too.
    sdk_ok("the operator after A's burst", operator(&kw).list_tenants().await);

    // Every refusal is audited in A's chain. The buckets live in the
    // enclave's memory: after a restart A's bucket is full again, so A can
    // read its chain without waiting for tokens.
    let mut kw = kw;
    kw.stop();
    drop(kw);
    let kw = sb.start().await;
    let chain = sdk_ok("A's chain", sdk(&kw, &a.admin).fetch_audit_chain().await);
    let throttled: Vec<_> = chain
        .records
        .iter()
        .filter(|r| r.reason.starts_with("ThrottlingException: "))
        .collect();
    assert_eq!(
        throttled.len(),
        a_throttled + admin_throttled,
        "one ThrottlingException record per refused request: {throttled:#?}"
    );
    for r in &throttled {
        assert_eq!(r.decision, "Deny", "{r:?}");
        assert!(
            r.access_key_id == a.user.access_key_id || r.access_key_id == a.admin.access_key_id,
            "{r:?}"
        );
    }
    let b_chain = sdk_ok("B's chain", sdk(&kw, &b.admin).fetch_audit_chain().await);
    assert!(
        b_chain.records.iter().all(|r| r.decision == "Allow"),
        "B was never refused: {:#?}",
        b_chain.records
    );
}
