//! `Keyward.ExportBackup` (issue 18, item 7): the operator exports the
//! store's sealed records page by page with manifests signed by the audit
//! key; the pages verify as one backup holding exactly the stored bytes; a
//! tenant may not export; a record that does not authenticate stops the
//! export, naming it.

use keyward_sdk::backup::format::{self, FilePage};
use keyward_sdk::backup::{ExportedPage, format::Verified};
use keyward_test_support::Creds;
use serde_json::json;

use crate::support::{Service, create_key, encrypt};

async fn export_page(service: &Service, creds: &Creds, limit: u32, marker: Option<&str>) -> ExportedPage {
    let body = json!({ "Limit": limit, "Marker": marker }).to_string();
    let answer = service
        .signed_call_as(creds, "Keyward.ExportBackup", body.as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    serde_json::from_value(answer.json()).expect("an ExportBackup page")
}

/// Every page of a backup, `limit` records a page.
async fn export_all(service: &Service, limit: u32) -> Vec<FilePage> {
    let mut pages = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = export_page(service, &service.operator, limit, marker.as_deref()).await;
        pages.push(page.file_page().expect("decodes"));
        if !page.truncated {
            return pages;
        }
        marker = Some(page.next_marker.expect("NextMarker of a truncated page"));
        assert!(pages.len() < 1000, "the export does not end");
    }
}

async fn audit_public_key(service: &Service) -> Vec<u8> {
    let answer = service
        .signed_call_as(&service.operator, "Keyward.GetAuditLog", b"{}")
        .await;
    assert_eq!(answer.status, 200);
    keyward_test_support::b64::unb64(answer.json()["AuditPublicKey"].as_str().expect("AuditPublicKey"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_exports_every_sealed_record_under_a_signed_manifest() {
    let service = Service::start().await;
    let client = service.client();
    for i in 0..3 {
        let key = create_key(&client, &format!("backed up {i}")).await;
        client
            .create_alias()
            .alias_name(format!("alias/backup-{i}"))
            .target_key_id(&key)
            .send()
            .await
            .expect("CreateAlias");
        encrypt(&client, &key, b"plaintext", None).await;
    }

    let commitment = audit_public_key(&service).await;
    let pages = export_all(&service, 3).await;
    assert!(
        pages.len() > 3,
        "a small Limit pages the backup ({} pages)",
        pages.len()
    );
    let Verified {
        records,
        root_commitment,
        deployment_id,
        ..
    } = format::verify(pages.clone(), Some(&commitment)).expect("the backup verifies against the audit key");
    assert_eq!(root_commitment, commitment);
    let genesis = service.custodian().expect("Service::start ran genesis");
    assert_eq!(
        deployment_id.as_deref(),
        Some(&genesis.package.deployment_id[..]),
        "the manifest names the deployment of the boot record"
    );

    // Exactly the stored bytes at their versions, every key and alias included.
    for namespace in ["key", "alias", "cred", "tenant"] {
        let stored = service.stored_keys(namespace).await;
        let exported: Vec<&str> = records
            .iter()
            .filter(|r| r.namespace == namespace)
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(exported, stored, "namespace {namespace}");
        assert!(!stored.is_empty(), "namespace {namespace} has records");
    }
    for record in &records {
        let (version, value) = service.store().raw(&record.namespace, &record.key);
        if record.namespace == "audit" {
            // The audit chain grew since (the export itself is audited).
            continue;
        }
        if record.namespace == "index" && record.key.ends_with("/root") {
            // An index root carries its scope's audit head: it moved with
            // the chain (and is exported with the head as the chain was cut).
            continue;
        }
        assert_eq!((version, value.as_deref()), (record.version, Some(&record.value[..])));
    }

    // One page at the largest limit is the same set of records.
    let whole = format::verify(export_all(&service, 1000).await, Some(&commitment)).expect("verifies");
    let names = |records: &[format::FileRecord]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.namespace != "audit")
            .map(|r| format!("{}/{}", r.namespace, r.key))
            .collect()
    };
    assert_eq!(names(&whole.records), names(&records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chains_are_cut_at_the_head_the_backup_read() {
    let service = Service::start().await;
    let client = service.client();
    create_key(&client, "audited").await;
    // The operator's chain grows by one record with every export page (each
    // is audited before it is answered). With one record a page, the backup
    // would chase that chain for ever; it stops at the head it read instead.
    // Genesis may already have audited operator records.
    let before = service.audit_chain_len("operator").await;
    let pages = export_all(&service, 1).await;
    let head_page = pages
        .iter()
        .position(|p| {
            p.records
                .iter()
                .any(|r| r.namespace == "audit" && r.key == "operator/head")
        })
        .expect("the operator's chain head is backed up");
    let verified = format::verify(pages, None).expect("verifies");
    let operator_records: Vec<&str> = verified
        .records
        .iter()
        .filter(|r| r.namespace == "audit" && r.key.starts_with("operator/r/"))
        .map(|r| r.key.as_str())
        .collect();
    // When the head was read, the pages before it had been audited: that many records more.
    assert_eq!(operator_records.len(), before + head_page, "{operator_records:?}");
    assert!(
        service.audit_chain_len("operator").await > before + head_page,
        "the chain grew past the head the backup read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_exports_and_a_forged_record_stops_the_export() {
    let service = Service::start().await;
    let key = create_key(&service.client(), "forged later").await;

    let denied = service
        .signed_call_as(&service.creds, "Keyward.ExportBackup", b"{}")
        .await;
    denied.assert_error("a tenant's ExportBackup", 400, "AccessDeniedException");

    let bad_marker = service
        .signed_call_as(&service.operator, "Keyward.ExportBackup", br#"{"Marker": "AAAA"}"#)
        .await;
    bad_marker.assert_error("a made-up marker", 400, "InvalidMarkerException");

    let stored = service.stored_keys("key").await;
    let record = stored.iter().find(|k| k.ends_with(&key)).expect("the key's record");
    let (_, value) = service.store().raw("key", record);
    let mut forged = value.expect("stored");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    service.store().replace_bytes("key", record, forged);
    let refused = service
        .signed_call_as(&service.operator, "Keyward.ExportBackup", br#"{"Limit": 1000}"#)
        .await;
    refused.assert_error("an export over a forged record", 500, "KMSInternalException");
    let message = refused.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(&format!("key/{record}")),
        "names the record: {message}"
    );
}
