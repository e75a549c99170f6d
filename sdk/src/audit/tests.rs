//! The verifier against synthetic chains built here with an independent
//! implementation of the record hash and a P-256 signing key.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

// --- an independent writer of chains (the spec, written out) ---

fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn spec_hash(r: &AuditRecord) -> String {
    let v2 = !(r.recipient_module_id.is_empty()
        && r.recipient_pcrs.is_empty()
        && r.encryption_context_keys.is_empty()
        && r.encryption_context_hash.is_empty()
        && r.source_encryption_context_keys.is_empty()
        && r.source_encryption_context_hash.is_empty());
    let mut pre = if v2 {
        b"keyward/audit/v2\0".to_vec()
    } else {
        b"keyward/audit/v1\0".to_vec()
    };
    pre.extend_from_slice(&r.sequence.to_be_bytes());
    pre.extend_from_slice(&r.time.to_be_bytes());
    for s in [
        &r.request_id,
        &r.chain,
        &r.access_key_id,
        &r.role,
        &r.operation,
        &r.key_arn,
        &r.decision,
        &r.reason,
        &r.policy_module,
    ] {
        lp(&mut pre, s);
    }
    if v2 {
        lp(&mut pre, &r.recipient_module_id);
        pre.extend_from_slice(&(r.recipient_pcrs.len() as u32).to_be_bytes());
        for (i, v) in &r.recipient_pcrs {
            pre.push(*i);
            lp(&mut pre, v);
        }
        for (keys, hash) in [
            (&r.encryption_context_keys, &r.encryption_context_hash),
            (&r.source_encryption_context_keys, &r.source_encryption_context_hash),
        ] {
            pre.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            for k in keys {
                lp(&mut pre, k);
            }
            lp(&mut pre, hash);
        }
    }
    pre.extend_from_slice(&hex::decode(&r.previous_hash).expect("hex PreviousHash"));
    hex::encode(Sha256::digest(&pre))
}

pub(super) fn spec_head(chain: &str, sequence: u64, hash: &str, key: &SigningKey) -> Head {
    let mut msg = b"keyward/audit-head/v1\0".to_vec();
    lp(&mut msg, chain);
    msg.extend_from_slice(&sequence.to_be_bytes());
    msg.extend_from_slice(&hex::decode(hash).expect("hex hash"));
    let signature: Signature = key.sign(&msg);
    Head {
        chain: chain.to_owned(),
        sequence,
        hash: hash.to_owned(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes()),
    }
}

/// Sets sequences, links and hashes of `records` in place; returns the signed head.
pub(super) fn seal(records: &mut [AuditRecord], chain: &str, key: &SigningKey) -> Head {
    let mut previous = "0".repeat(64);
    for (i, r) in records.iter_mut().enumerate() {
        r.sequence = i as u64 + 1;
        r.chain = chain.to_owned();
        r.previous_hash = previous;
        r.hash = spec_hash(r);
        previous = r.hash.clone();
    }
    spec_head(chain, records.len() as u64, &previous, key)
}

pub(super) fn record(i: u64) -> AuditRecord {
    let allowed = !i.is_multiple_of(3);
    AuditRecord {
        time: 1_714_000_000_000 + i * 1_000,
        request_id: format!("req-{i}"),
        access_key_id: "AKIAEXAMPLE".to_owned(),
        role: "KeyAdmin,KeyUser".to_owned(),
        operation: if allowed {
            "TrentService.Encrypt"
        } else {
            "TrentService.ScheduleKeyDeletion"
        }
        .to_owned(),
        key_arn: format!("arn:aws:kms:us-east-1:111122223333:key/0000000{i}-aaaa-bbbb-cccc-dddddddddddd"),
        decision: if allowed { "Allow" } else { "Deny" }.to_owned(),
        reason: if allowed {
            String::new()
        } else {
            "AccessDeniedException: KeyUser may not".to_owned()
        },
        policy_module: if i == 2 { "ab".repeat(32) } else { String::new() },
        // Record 4 is a Decrypt for an attested recipient, with an encryption context.
        recipient_module_id: if i == 4 {
            "i-0123456789abcdef0-enc0123456789abcdef".to_owned()
        } else {
            String::new()
        },
        recipient_pcrs: if i == 4 {
            [(0, "aa".repeat(48)), (8, "bb".repeat(48))].into_iter().collect()
        } else {
            BTreeMap::new()
        },
        encryption_context_keys: if i == 4 {
            vec!["purpose".to_owned(), "tenant".to_owned()]
        } else {
            vec![]
        },
        encryption_context_hash: if i == 4 { "cd".repeat(32) } else { String::new() },
        ..AuditRecord::default()
    }
}

pub(super) fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid P-256 scalar")
}

pub(super) fn public_der(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("SPKI")
        .as_bytes()
        .to_vec()
}

pub(super) fn chain_of(chain: &str, n: u64, key: &SigningKey) -> (Vec<AuditRecord>, Head) {
    let mut records: Vec<AuditRecord> = (1..=n).map(record).collect();
    let head = seal(&mut records, chain, key);
    (records, head)
}

/// A valid 5-record chain of tenant 111122223333 and its key.
fn five() -> (Vec<AuditRecord>, Head, Vec<u8>) {
    let k = key(7);
    let (records, head) = chain_of("111122223333", 5, &k);
    (records, head, public_der(&k))
}

fn err(records: &[AuditRecord], head: &Head, der: &[u8]) -> AuditError {
    match verify_chain(records, head, der) {
        Ok(v) => panic!("verified a bad chain: {v:?}"),
        Err(e) => e,
    }
}

// --- the valid cases ---

#[test]
fn a_valid_chain_verifies() {
    let (records, head, der) = five();
    let verified = verify_chain(&records, &head, &der).expect("valid chain");
    assert_eq!(
        verified,
        Verified {
            chain: "111122223333".to_owned(),
            records: 5,
            head_hash: records[4].hash.clone(),
        }
    );
}

#[test]
fn an_empty_chain_verifies_with_the_genesis_head() {
    let k = key(3);
    let head = spec_head("operator", 0, GENESIS_HASH, &k);
    let verified = verify_chain(&[], &head, &public_der(&k)).expect("empty chain");
    assert_eq!(verified.records, 0);
    let bad = spec_head("operator", 0, &"11".repeat(32), &k);
    assert_eq!(
        err(&[], &bad, &public_der(&k)),
        AuditError::HeadMismatch { sequence: 0 }
    );
}

#[test]
fn records_parse_from_the_wire_format() {
    let (records, head, der) = five();
    let json = serde_json::to_string(&serde_json::json!({ "Records": records, "Head": head })).expect("json");
    for field in [
        "\"Sequence\":1",
        "\"KeyArn\":",
        "\"PreviousHash\":",
        "\"PolicyModule\":",
        "\"RequestId\":",
        "\"RecipientModuleId\":\"i-0123456789abcdef0-enc0123456789abcdef\"",
        "\"RecipientPcrs\":{\"0\":",
        "\"EncryptionContextKeys\":[\"purpose\",\"tenant\"]",
        "\"EncryptionContextHash\":",
    ] {
        assert!(json.contains(field), "{field} in {json}");
    }
    assert_eq!(json.matches("RecipientModuleId").count(), 1, "omitted when empty");
    assert!(!json.contains("Corrupt"), "Corrupt is omitted when false");
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Page {
        records: Vec<AuditRecord>,
        head: Head,
    }
    let page: Page = serde_json::from_str(&json).expect("parse");
    assert_eq!(page.records, records);
    verify_chain(&page.records, &page.head, &der).expect("valid after the round trip");

    let corrupt: AuditRecord = serde_json::from_str(r#"{"Sequence": 4, "Corrupt": true}"#).expect("corrupt");
    assert_eq!(
        (corrupt.sequence, corrupt.corrupt, corrupt.hash.as_str()),
        (4, true, "")
    );
    let nulls: AuditRecord = serde_json::from_str(r#"{"Sequence": 1, "KeyArn": null}"#).expect("null");
    assert_eq!(nulls.key_arn, "");
}

#[test]
fn an_older_genuine_head_is_accepted_rollback_is_out_of_reach() {
    // The documented limit: the host may serve records 1..=3 with the head
    // the enclave signed when record 3 was the last.
    let k = key(7);
    let (records, _) = chain_of("t", 5, &k);
    let old_head = spec_head("t", 3, &records[2].hash, &k);
    assert_eq!(
        verify_chain(&records[..3], &old_head, &public_der(&k)).map(|v| v.records),
        Ok(3)
    );
}

// --- each kind of damage, naming the right record ---

#[test]
fn a_dropped_middle_record_is_missing() {
    let (mut records, head, der) = five();
    records.remove(2);
    let e = err(&records, &head, &der);
    assert_eq!(e, AuditError::Missing { sequence: 3 });
    assert_eq!(e.to_string(), "record 3: missing record (gap in the sequence)");
}

#[test]
fn a_dropped_last_record_is_missing_before_the_head() {
    let (mut records, head, der) = five();
    records.pop();
    assert_eq!(
        err(&records, &head, &der),
        AuditError::MissingBeforeHead { sequence: 5, head: 5 }
    );
    records.truncate(2);
    assert_eq!(
        err(&records, &head, &der),
        AuditError::MissingBeforeHead { sequence: 3, head: 5 }
    );
    assert_eq!(
        err(&[], &head, &der),
        AuditError::MissingBeforeHead { sequence: 1, head: 5 }
    );
}

#[test]
fn swapped_records_are_out_of_order() {
    let (mut records, head, der) = five();
    records.swap(2, 3);
    assert_eq!(
        err(&records, &head, &der),
        AuditError::OutOfOrder { sequence: 3, found: 4 }
    );
    let (mut records, head, der) = five();
    records.swap(0, 4);
    assert_eq!(
        err(&records, &head, &der),
        AuditError::OutOfOrder { sequence: 1, found: 5 }
    );
}

#[test]
fn a_duplicated_record_is_out_of_order() {
    let (mut records, head, der) = five();
    records.insert(3, records[2].clone());
    assert_eq!(
        err(&records, &head, &der),
        AuditError::OutOfOrder { sequence: 4, found: 3 }
    );
}

#[test]
fn edited_fields_are_altered() {
    type EditFn = fn(&mut AuditRecord);
    let edits: [(usize, EditFn); 14] = [
        (1, |r| r.reason = "nothing to see".to_owned()),
        (3, |r| r.key_arn.push('0')),
        (0, |r| r.decision = "Deny".to_owned()),
        (4, |r| r.time += 1),
        (1, |r| r.policy_module.clear()),
        (2, |r| r.request_id.push('x')),
        // What was attested, and the encryption context (record 4).
        (3, |r| r.recipient_module_id.push('x')),
        (3, |r| {
            r.recipient_pcrs.insert(0, "00".repeat(48));
        }),
        (3, |r| {
            r.recipient_pcrs.remove(&8);
        }),
        (3, |r| r.encryption_context_keys.reverse()),
        (3, |r| r.encryption_context_hash = "ce".repeat(32)),
        (3, |r| {
            r.source_encryption_context_keys = std::mem::take(&mut r.encryption_context_keys);
            r.source_encryption_context_hash = std::mem::take(&mut r.encryption_context_hash);
        }),
        // Stripped of every new field: hashed as v1, it no longer matches.
        (3, |r| {
            r.recipient_module_id.clear();
            r.recipient_pcrs.clear();
            r.encryption_context_keys.clear();
            r.encryption_context_hash.clear();
        }),
        // A field added to a record that had none.
        (1, |r| r.recipient_module_id = "i-0".to_owned()),
    ];
    for (index, edit) in edits {
        let (mut records, head, der) = five();
        edit(&mut records[index]);
        assert_eq!(
            err(&records, &head, &der),
            AuditError::Altered {
                sequence: index as u64 + 1
            }
        );
    }
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (mut records, head, der) = five();
    // Record 3 was denied; make it look allowed.
    records[2].decision = "Allow".to_owned();
    records[2].reason.clear();
    records[2].hash = spec_hash(&records[2]);
    assert_eq!(err(&records, &head, &der), AuditError::BrokenLink { sequence: 4 });
}

#[test]
fn a_recomputed_tail_needs_a_new_head_signature() {
    // Edit record 2 and rehash everything after it: every link holds, so
    // only the head signature can tell.
    let (mut records, head, der) = five();
    records[1].reason = "rewritten".to_owned();
    let forged_head = seal(&mut records, "111122223333", &key(9));
    assert_eq!(err(&records, &head, &der), AuditError::HeadMismatch { sequence: 5 });
    let mut relabelled = forged_head.clone();
    relabelled.signature = head.signature.clone();
    assert_eq!(
        err(&records, &relabelled, &der),
        AuditError::BadSignature { sequence: 5 }
    );
    assert_eq!(
        err(&records, &forged_head, &der),
        AuditError::BadSignature { sequence: 5 }
    );
}

#[test]
fn a_corrupt_record_is_reported() {
    let (mut records, head, der) = five();
    records[2] = serde_json::from_str(r#"{"Sequence": 3, "Corrupt": true}"#).expect("corrupt record");
    let e = err(&records, &head, &der);
    assert_eq!(e, AuditError::Corrupt { sequence: 3 });
    assert_eq!(e.sequence(), Some(3));
}

#[test]
fn a_forged_head_signature_is_rejected() {
    let (records, head, der) = five();
    // Same content, signed by another key.
    let forged = spec_head(&head.chain, head.sequence, &head.hash, &key(8));
    assert_eq!(err(&records, &forged, &der), AuditError::BadSignature { sequence: 5 });
    // Garbage and empty signatures.
    for signature in ["", "not base64!", "AAAA"] {
        let mut bad = head.clone();
        bad.signature = signature.to_owned();
        assert_eq!(err(&records, &bad, &der), AuditError::BadSignature { sequence: 5 });
    }
    // A truncated chain with a head the attacker signed.
    let truncated = spec_head(&head.chain, 3, &records[2].hash, &key(8));
    assert_eq!(
        err(&records[..3], &truncated, &der),
        AuditError::BadSignature { sequence: 3 }
    );
    // The right signature under the wrong key.
    assert_eq!(
        err(&records, &head, &public_der(&key(8))),
        AuditError::BadSignature { sequence: 5 }
    );
}

#[test]
fn a_head_from_another_chain_is_rejected() {
    let k = key(7);
    let der = public_der(&k);
    let (records, _) = chain_of("111122223333", 5, &k);
    let (_, other_head) = chain_of("444455556666", 7, &k);
    let e = err(&records, &other_head, &der);
    assert_eq!(
        e,
        AuditError::HeadChainMismatch {
            sequence: 7,
            head_chain: "444455556666".to_owned(),
            records_chain: "111122223333".to_owned(),
        }
    );
    assert_eq!(e.sequence(), Some(7));
    // A head of the same length from another chain.
    let (_, other_head) = chain_of("444455556666", 5, &k);
    assert!(matches!(
        err(&records, &other_head, &der),
        AuditError::HeadChainMismatch { sequence: 5, .. }
    ));
}

#[test]
fn a_record_of_another_chain_is_rejected() {
    let k = key(7);
    let der = public_der(&k);
    let (mut records, head) = chain_of("111122223333", 5, &k);
    let (other, _) = chain_of("444455556666", 5, &k);
    records[2] = other[2].clone();
    assert_eq!(
        err(&records, &head, &der),
        AuditError::WrongChain {
            sequence: 3,
            chain: "444455556666".to_owned(),
            expected: "111122223333".to_owned(),
        }
    );
}

#[test]
fn records_past_the_head_are_not_vouched_for() {
    let k = key(7);
    let (records, _) = chain_of("t", 5, &k);
    let head4 = spec_head("t", 4, &records[3].hash, &k);
    assert_eq!(
        err(&records, &head4, &public_der(&k)),
        AuditError::BeyondHead { sequence: 5, head: 4 }
    );
}

#[test]
fn a_head_whose_hash_is_not_the_last_records_is_rejected() {
    let (records, head, der) = five();
    let k = key(7);
    let wrong = spec_head(&head.chain, 5, &records[3].hash, &k);
    assert_eq!(err(&records, &wrong, &der), AuditError::HeadMismatch { sequence: 5 });
    let mut upper = head.clone();
    upper.hash = upper.hash.to_uppercase();
    assert_eq!(err(&records, &upper, &der), AuditError::HeadMismatch { sequence: 5 });
}

#[test]
fn an_unusable_public_key_is_reported() {
    let (records, head, _) = five();
    let e = err(&records, &head, b"not a key");
    assert!(matches!(e, AuditError::InvalidPublicKey(_)));
    assert_eq!(e.sequence(), None);
}

#[test]
fn public_keys_load_from_der_and_pem() {
    use p256::pkcs8::LineEnding;
    let k = key(5);
    let der = public_der(&k);
    let pem = k.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem");
    assert_eq!(public_key_spki_der(&der), Ok(der.clone()));
    assert_eq!(public_key_spki_der(pem.as_bytes()), Ok(der.clone()));
    assert!(public_key_spki_der(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    assert!(public_key_spki_der(&der[..der.len() - 1]).is_err());
}

// --- any single-field edit of any record is detected, naming it ---

/// One field of a record and a new value for it.
#[derive(Debug, Clone)]
enum Edit {
    Sequence(u64),
    Time(u64),
    Text(usize, String),
    PreviousHash(String),
    Hash(String),
    Corrupt,
}

fn text_field(r: &mut AuditRecord, i: usize) -> &mut String {
    match i % 9 {
        0 => &mut r.request_id,
        1 => &mut r.chain,
        2 => &mut r.access_key_id,
        3 => &mut r.role,
        4 => &mut r.operation,
        5 => &mut r.key_arn,
        6 => &mut r.decision,
        7 => &mut r.reason,
        _ => &mut r.policy_module,
    }
}

fn hash_like() -> impl Strategy<Value = String> {
    prop_oneof![any::<[u8; 32]>().prop_map(hex::encode), "[0-9a-fA-F]{0,70}", ".{0,8}",]
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<u64>().prop_map(Edit::Sequence),
        any::<u64>().prop_map(Edit::Time),
        (0..9usize, ".{0,12}").prop_map(|(i, s)| Edit::Text(i, s)),
        hash_like().prop_map(Edit::PreviousHash),
        hash_like().prop_map(Edit::Hash),
        Just(Edit::Corrupt),
    ]
}

/// Applies `edit`, making sure the value really changes.
fn apply(r: &mut AuditRecord, edit: Edit) {
    fn differ(old: &str, new: String) -> String {
        if new == old { format!("{new}x") } else { new }
    }
    match edit {
        Edit::Sequence(s) => r.sequence = if s == r.sequence { s.wrapping_add(1) } else { s },
        Edit::Time(t) => r.time = if t == r.time { t.wrapping_add(1) } else { t },
        Edit::Text(i, s) => {
            let field = text_field(r, i);
            *field = differ(field, s);
        }
        Edit::PreviousHash(h) => r.previous_hash = differ(&r.previous_hash, h),
        Edit::Hash(h) => r.hash = differ(&r.hash, h),
        Edit::Corrupt => r.corrupt = true,
    }
}

fn arbitrary_record() -> impl Strategy<Value = AuditRecord> {
    (any::<u64>(), proptest::collection::vec(".{0,10}", 9)).prop_map(|(time, texts)| {
        let mut r = AuditRecord {
            time,
            ..AuditRecord::default()
        };
        for (i, t) in texts.into_iter().enumerate() {
            *text_field(&mut r, i) = t;
        }
        r
    })
}

proptest! {
    #[test]
    fn any_single_field_edit_is_detected(
        mut records in proptest::collection::vec(arbitrary_record(), 1..8),
        chain in "[a-z0-9]{1,12}",
        pick in any::<prop::sample::Index>(),
        edit in edit_strategy(),
    ) {
        let k = key(7);
        let der = public_der(&k);
        let head = seal(&mut records, &chain, &k);
        prop_assert_eq!(verify_chain(&records, &head, &der).map(|v| v.records), Ok(records.len() as u64));

        let index = pick.index(records.len());
        apply(&mut records[index], edit);
        match verify_chain(&records, &head, &der) {
            Ok(v) => prop_assert!(false, "edit of record {} not detected: {:?}", index + 1, v),
            Err(e) => prop_assert_eq!(e.sequence(), Some(index as u64 + 1), "{}", e),
        }
    }

    #[test]
    fn any_head_edit_is_detected(
        n in 0..6u64,
        field in 0..4usize,
        new in ".{0,12}",
        number in any::<u64>(),
    ) {
        let k = key(7);
        let (records, mut head) = chain_of("t", n, &k);
        let der = public_der(&k);
        match field {
            0 => head.chain = if new == head.chain { format!("{new}x") } else { new },
            1 => head.sequence = if number == n { number.wrapping_add(1) } else { number },
            2 => head.hash = hex::encode(Sha256::digest(new.as_bytes())),
            _ => head.signature = spec_head("t", n, &head.hash, &key(8)).signature,
        }
        prop_assert!(verify_chain(&records, &head, &der).is_err());
    }
}
