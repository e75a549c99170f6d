//! The enclave attests itself (`Keyward.GetAttestationDocument`): under
//! `keyward dev --mock-pcr 0=…` its document verifies against the mock root
//! in the data dir with the caller's nonce and the configured PCR0, and
//! binds the same audit key `Keyward.GetAuditLog` reports — so a client can
//! pin the audit key from attestation instead of from the host. A wrong
//! nonce, a wrong expected PCR, or another trust anchor (the AWS root,
//! another mock root) fail. The key and the root survive a restart.

use std::collections::BTreeMap;

use keyward_attestation::mock::MockPki;
use keyward_sdk::attestation::{
    AttestationError, DEFAULT_MODULE_ID, DocumentError, TrustAnchor, default_pcrs, verify_enclave,
};
use serde_json::json;
use sha2::{Digest, Sha384};

use crate::harness::{Sandbox, random_bytes};
use crate::principals::{b64, call_as, ok_json, sdk, unb64};

#[track_caller]
fn assert_document_error(
    what: &str,
    result: Result<keyward_sdk::attestation::EnclaveIdentity, AttestationError>,
) -> DocumentError {
    match result {
        Err(AttestationError::Document(e)) => e,
        other => panic!("{what}: expected a document verification error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enclave_attests_the_audit_key_it_signs_with() {
    let pcr0 = Sha384::digest(b"keyward self-attestation test image").to_vec();
    assert_ne!(pcr0, default_pcrs()[&0]);
    let mut sandbox = Sandbox::new();
    sandbox.extra_args.push("--mock-pcr".into());
    sandbox.extra_args.push(format!("0={}", hex::encode(&pcr0)));
    let mut kw = sandbox.start().await;
    let client = sdk(&kw, &kw.creds);
    let root_path = kw.data_dir.join("mock-attestation").join("root.crt.pem");
    let root_pem = std::fs::read_to_string(&root_path).expect("the enclave created its mock root");
    let anchor = TrustAnchor::from_pem(&root_pem).expect("mock root");
    let expected = BTreeMap::from([(0u8, pcr0.clone())]);

    let nonce = random_bytes(32);
    let (document, connection_spki) = client
        .get_attestation_document_and_tls_spki(&nonce)
        .await
        .expect("Keyward.GetAttestationDocument");
    let identity =
        verify_enclave(&document, anchor.clone(), &nonce, &expected).expect("the enclave's document verifies");
    // The document binds the TLS key of the very connection that carried it.
    assert_eq!(
        identity.tls_spki_sha256, connection_spki,
        "the attested TLS key is not the one serving this connection"
    );
    let ca_only = keyward_sdk::TlsOptions::default().with_ca_bundle(kw.ca_pem.clone());
    let pinned = keyward_sdk::Client::new(
        &kw.url,
        crate::harness::REGION,
        &kw.creds.access_key_id,
        &kw.creds.secret,
    )
    .and_then(|c| c.with_tls(ca_only.clone().with_pinned_spki(identity.tls_spki_sha256)))
    .expect("client");
    pinned
        .get_attestation_document(b"pinned")
        .await
        .expect("a client pinning the attested key is served");
    let mut wrong = identity.tls_spki_sha256;
    wrong[0] ^= 1;
    let mispinned = keyward_sdk::Client::new(
        &kw.url,
        crate::harness::REGION,
        &kw.creds.access_key_id,
        &kw.creds.secret,
    )
    .and_then(|c| c.with_tls(ca_only.with_pinned_spki(wrong)))
    .expect("client");
    assert!(
        matches!(
            mispinned.get_attestation_document(b"mispinned").await,
            Err(keyward_sdk::Error::Transport(_))
        ),
        "a client pinning another key was served"
    );
    assert_eq!(identity.module_id, DEFAULT_MODULE_ID);
    assert_eq!(identity.pcrs.get(&0), Some(&pcr0), "PCR0 is the --mock-pcr value");
    for i in 1..16 {
        assert_eq!(
            identity.pcrs.get(&i),
            default_pcrs().get(&i),
            "PCR{i} is the mock default"
        );
    }

    // The attested key is the audit key, and the chain verifies under it.
    let chain = client.fetch_audit_chain().await.expect("Keyward.GetAuditLog");
    assert_eq!(
        identity.audit_public_key, chain.audit_public_key,
        "the attested key must be GetAuditLog's AuditPublicKey"
    );
    chain
        .verify_with(&identity.audit_public_key)
        .expect("the audit chain verifies under the attested key");
    // The operator's chain is signed by the same enclave key.
    let operator_chain = sdk(&kw, &kw.operator)
        .fetch_audit_chain()
        .await
        .expect("operator GetAuditLog");
    operator_chain
        .verify_with(&identity.audit_public_key)
        .expect("the operator chain verifies under the attested key");

    // Wrong nonce, wrong expected PCRs, other anchors.
    let e = assert_document_error(
        "another nonce",
        verify_enclave(&document, anchor.clone(), b"not the nonce sent", &expected),
    );
    assert_eq!(e, DocumentError::NonceMismatch);
    let e = assert_document_error(
        "the default PCR0",
        verify_enclave(
            &document,
            anchor.clone(),
            &nonce,
            &BTreeMap::from([(0, default_pcrs()[&0].clone())]),
        ),
    );
    assert_eq!(e, DocumentError::PcrMismatch { index: 0 });
    let e = assert_document_error(
        "an unexpected PCR8",
        verify_enclave(
            &document,
            anchor.clone(),
            &nonce,
            &BTreeMap::from([(0, pcr0.clone()), (8, vec![0x08; 48])]),
        ),
    );
    assert_eq!(e, DocumentError::PcrMismatch { index: 8 });
    let e = assert_document_error(
        "the AWS Nitro root",
        verify_enclave(
            &document,
            TrustAnchor::aws_nitro_root().expect("AWS root"),
            &nonce,
            &expected,
        ),
    );
    assert_eq!(e, DocumentError::UntrustedRoot);
    let other_root = TrustAnchor::from_der(MockPki::ephemeral().expect("mock PKI").root_der()).expect("anchor");
    let e = assert_document_error(
        "another mock root",
        verify_enclave(&document, other_root, &nonce, &expected),
    );
    assert_eq!(e, DocumentError::UntrustedRoot);

    // Every request gets a fresh document; the convenience call agrees.
    let again = client
        .attest_enclave(anchor.clone(), &expected)
        .await
        .expect("attest_enclave");
    assert_eq!(again.audit_public_key, identity.audit_public_key);
    assert!(again.timestamp_ms >= identity.timestamp_ms);

    // Any principal may ask (the operator too); the nonce is bounded.
    let resp = call_as(
        &kw,
        &kw.operator,
        "Keyward.GetAttestationDocument",
        &json!({ "Nonce": b64(&nonce) }),
    )
    .await;
    let operator_document = unb64(
        ok_json("GetAttestationDocument as operator", &resp)["AttestationDocument"]
            .as_str()
            .expect("AttestationDocument"),
    );
    let operator_identity =
        verify_enclave(&operator_document, anchor.clone(), &nonce, &expected).expect("operator's document verifies");
    assert_eq!(operator_identity.audit_public_key, identity.audit_public_key);
    call_as(
        &kw,
        &kw.creds,
        "Keyward.GetAttestationDocument",
        &json!({ "Nonce": b64(&[7; 513]) }),
    )
    .await
    .assert_error("a 513-byte nonce", 400, "ValidationException");
    call_as(
        &kw,
        &kw.creds,
        "Keyward.GetAttestationDocument",
        &json!({ "Nonce": "***" }),
    )
    .await
    .assert_error("a nonce that is not base64", 400, "SerializationException");
    let resp = call_as(&kw, &kw.creds, "Keyward.GetAttestationDocument", &json!({})).await;
    let no_nonce = unb64(
        ok_json("GetAttestationDocument without a nonce", &resp)["AttestationDocument"]
            .as_str()
            .expect("AttestationDocument"),
    );
    let e = assert_document_error(
        "a document without a nonce",
        verify_enclave(&no_nonce, anchor.clone(), &nonce, &expected),
    );
    assert_eq!(e, DocumentError::NonceMismatch);

    // After a restart: the same mock root, the same attested audit key.
    kw.stop();
    drop(kw);
    let kw = sandbox.start().await;
    assert_eq!(
        std::fs::read_to_string(&root_path).expect("mock root"),
        root_pem,
        "the mock root persists"
    );
    let after = sdk(&kw, &kw.creds)
        .attest_enclave(anchor, &expected)
        .await
        .expect("attest_enclave after a restart");
    assert_eq!(
        after.audit_public_key, identity.audit_public_key,
        "the audit key persists"
    );
}
