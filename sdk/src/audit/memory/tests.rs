//! The head memory against synthetic chains signed here (the writer of
//! `audit/tests.rs`): first sight, extension, rollback, forks at the same
//! and at a higher sequence, heads without records, tenants and deployments
//! kept apart, and state files that must be refused.

use std::path::PathBuf;

use super::super::tests::{chain_of, key, public_der, record, seal, spec_head};
use super::super::verify_chain;
use super::*;

const TENANT: &str = "111122223333";

fn state() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("conf").join("audit-heads.json");
    (dir, path)
}

/// Records 1..=n of `TENANT`'s chain whose record `from` on differs from
/// [`chain_of`]'s (the same history up to `from - 1`, then another one).
fn forked(n: u64, from: u64, k: &p256::ecdsa::SigningKey) -> (Vec<AuditRecord>, Head) {
    let mut records: Vec<AuditRecord> = (1..=n).map(record).collect();
    for r in records.iter_mut().skip(usize::try_from(from - 1).expect("small")) {
        r.request_id.push_str("-other");
    }
    let head = seal(&mut records, TENANT, k);
    (records, head)
}

fn remembered_sequence(path: &Path, der: &[u8], chain: &str) -> Option<u64> {
    HeadMemory::open(path)
        .expect("the state file opens")
        .remembered(der, chain)
        .map(|r| r.head.sequence)
}

#[test]
fn an_unknown_chain_is_remembered_and_survives_reopening() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    let (records, head) = chain_of(TENANT, 3, &k);
    let mut memory = HeadMemory::open(&path).expect("no file yet: empty");
    assert_eq!(memory.heads().count(), 0);
    let (verified, seen) = memory.verify_chain(&records, &head, &der).expect("verifies");
    assert_eq!((verified.records, seen), (3, Observation::First));
    assert!(path.is_file(), "the memory was written (its directory created)");

    let reopened = HeadMemory::open(&path).expect("reopens");
    let kept = reopened.remembered(&der, TENANT).expect("remembered");
    assert_eq!(kept.head, head);
    assert_eq!(kept.deployment(), hex::encode(Sha256::digest(&der)));
    // The same again: unchanged.
    let mut memory = reopened;
    assert_eq!(
        memory.verify_chain(&records, &head, &der).expect("verifies").1,
        Observation::Unchanged
    );
    // No temporary file is left next to it.
    let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("audit-heads.json")]);
}

#[test]
fn a_longer_chain_through_the_remembered_head_extends_it() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    let mut memory = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 3, &k);
    memory.verify_chain(&records, &head, &der).expect("first");
    let (records, head) = chain_of(TENANT, 5, &k);
    let (_, seen) = memory.verify_chain(&records, &head, &der).expect("extends");
    assert_eq!(seen, Observation::Extended { from: 3 });
    assert_eq!(remembered_sequence(&path, &der, TENANT), Some(5));
    // From an empty chain (the genesis head) any chain extends.
    let (_dir, path) = state();
    let mut memory = HeadMemory::open(&path).expect("opens");
    memory
        .verify_chain(&[], &spec_head(TENANT, 0, GENESIS_HASH, &k), &der)
        .expect("empty chain");
    let (_, seen) = memory.verify_chain(&records, &head, &der).expect("extends");
    assert_eq!(seen, Observation::Extended { from: 0 });
}

#[test]
fn an_older_genuine_head_is_a_rollback_and_is_not_remembered() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    let mut memory = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 5, &k);
    memory.verify_chain(&records, &head, &der).expect("first");
    let before = fs::read(&path).expect("state");

    // What a host that restarted the enclave on an older store serves: the
    // chain up to 3 under a genuinely signed head at 3. It verifies alone.
    let (old_records, old_head) = chain_of(TENANT, 3, &k);
    verify_chain(&old_records, &old_head, &der).expect("the older chain is genuine");
    match memory.verify_chain(&old_records, &old_head, &der) {
        Err(FreshnessError::Rollback {
            chain,
            remembered,
            served,
            remembered_hash,
            served_hash,
        }) => {
            assert_eq!((chain.as_str(), remembered, served), (TENANT, 5, 3));
            assert_eq!(
                (remembered_hash, served_hash),
                (head.hash.clone(), old_head.hash.clone())
            );
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    let message = memory
        .verify_head(&old_head, &der)
        .expect_err("the head alone too")
        .to_string();
    assert!(message.starts_with("ROLLBACK of audit chain"), "{message}");
    assert!(
        message.contains("sequence 3") && message.contains("sequence 5"),
        "{message}"
    );
    assert_eq!(fs::read(&path).expect("state"), before, "the memory is unchanged");
    assert_eq!(memory.remembered(&der, TENANT).map(|r| r.head.sequence), Some(5));
}

#[test]
fn another_history_at_the_same_or_a_higher_sequence_is_a_fork() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    let mut memory = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 4, &k);
    memory.verify_chain(&records, &head, &der).expect("first");

    // The same sequence, another hash (records 3 and 4 rewritten).
    let (other, other_head) = forked(4, 3, &k);
    match memory.verify_chain(&other, &other_head, &der) {
        Err(FreshnessError::Fork {
            sequence, served_head, ..
        }) => assert_eq!((sequence, served_head), (4, 4)),
        other => panic!("expected a fork, got {other:?}"),
    }
    // A longer chain that does not hold the remembered head: the records
    // show record 4 is not the one seen.
    let (longer, longer_head) = forked(7, 3, &k);
    match memory.verify_chain(&longer, &longer_head, &der) {
        Err(FreshnessError::Fork {
            sequence,
            remembered_hash,
            served_hash,
            served_head,
            ..
        }) => {
            assert_eq!((sequence, served_head), (4, 7));
            assert_eq!(remembered_hash, head.hash);
            assert_eq!(served_hash, longer[3].hash);
        }
        other => panic!("expected a fork, got {other:?}"),
    }
    assert_eq!(
        remembered_sequence(&path, &der, TENANT),
        Some(4),
        "nothing forked was remembered"
    );
    // The same longer head alone cannot be told apart: newer, remembered.
    assert_eq!(
        memory.verify_head(&longer_head, &der).expect("a newer head"),
        Observation::Newer { from: 4 }
    );
    assert_eq!(remembered_sequence(&path, &der, TENANT), Some(7));
}

#[test]
fn tenants_and_deployments_are_remembered_apart() {
    let (_dir, path) = state();
    let (k1, k2) = (key(7), key(9));
    let (der1, der2) = (public_der(&k1), public_der(&k2));
    let mut memory = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 5, &k1);
    memory.verify_chain(&records, &head, &der1).expect("first");
    // Another tenant of the deployment: unknown, at any sequence.
    let (records, head) = chain_of("444455556666", 2, &k1);
    assert_eq!(
        memory.verify_chain(&records, &head, &der1).expect("verifies").1,
        Observation::First
    );
    // The same tenant id in another deployment (another audit key).
    let (records, head) = chain_of(TENANT, 2, &k2);
    assert_eq!(
        memory.verify_chain(&records, &head, &der2).expect("verifies").1,
        Observation::First
    );
    let reopened = HeadMemory::open(&path).expect("reopens");
    assert_eq!(reopened.heads().count(), 3);
    assert_eq!(reopened.remembered(&der1, TENANT).map(|r| r.head.sequence), Some(5));
    assert_eq!(reopened.remembered(&der2, TENANT).map(|r| r.head.sequence), Some(2));
}

#[test]
fn a_head_that_does_not_verify_is_neither_compared_nor_remembered() {
    let (_dir, path) = state();
    let (k, other) = (key(7), key(9));
    let der = public_der(&k);
    let mut memory = HeadMemory::open(&path).expect("opens");
    // A newer head signed by another key.
    let (records, _) = chain_of(TENANT, 5, &k);
    let forged = spec_head(TENANT, 5, &records[4].hash, &other);
    assert!(matches!(
        memory.verify_chain(&records, &forged, &der),
        Err(FreshnessError::Chain(AuditError::BadSignature { sequence: 5 }))
    ));
    assert!(matches!(
        memory.verify_head(&forged, &der),
        Err(FreshnessError::Chain(AuditError::BadSignature { sequence: 5 }))
    ));
    assert!(!path.exists(), "nothing was written");
}

#[test]
fn a_corrupt_state_file_is_refused_clearly() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    let mut memory = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 5, &k);
    memory.verify_chain(&records, &head, &der).expect("first");
    let good = fs::read_to_string(&path).expect("state");

    let edited_sequence = good.replacen("\"Sequence\": 5", "\"Sequence\": 9", 1);
    assert_ne!(edited_sequence, good);
    let duplicated = {
        let file: serde_json::Value = serde_json::from_str(&good).expect("json");
        let entry = file["Heads"][0].clone();
        serde_json::json!({ "Format": STATE_FORMAT, "Heads": [entry.clone(), entry] }).to_string()
    };
    let cases = [
        ("truncated", good[..good.len() / 2].to_owned(), "not a state file"),
        ("empty", String::new(), "not a state file"),
        ("garbage", "\u{0}\u{1}binary".to_owned(), "not a state file"),
        (
            "other format",
            good.replace(STATE_FORMAT, "keyward/audit-heads/v0"),
            "format",
        ),
        (
            "unknown field",
            good.replacen("\"Chain\"", "\"Extra\": 1, \"Chain\"", 1),
            "not a state file",
        ),
        ("edited sequence", edited_sequence, "does not verify"),
        (
            "bad key",
            good.replacen("\"AuditPublicKey\": \"", "\"AuditPublicKey\": \"AA", 1),
            "head of chain",
        ),
        ("duplicate", duplicated, "a second head"),
    ];
    for (what, content, says) in cases {
        fs::write(&path, &content).expect("write");
        match HeadMemory::open(&path) {
            Err(e @ StateError::Corrupt { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&path.display().to_string()) && message.contains("is corrupt"),
                    "{what}: {message}"
                );
                assert!(message.contains(says), "{what}: {message}");
                assert!(message.contains("refusing to use it"), "{what}: {message}");
            }
            other => panic!("{what}: expected a corrupt state file, got {other:?}"),
        }
        // A memory opened before the file went bad refuses to overwrite it.
        assert!(
            matches!(
                memory.verify_chain(&chain_of(TENANT, 6, &k).0, &chain_of(TENANT, 6, &k).1, &der),
                Err(FreshnessError::State(StateError::Corrupt { .. }))
            ),
            "{what}"
        );
        assert_eq!(
            fs::read_to_string(&path).expect("state"),
            content,
            "{what}: left as found"
        );
    }
    // A directory where the file should be: an I/O error, not an empty memory.
    fs::remove_file(&path).expect("remove");
    fs::create_dir(&path).expect("mkdir");
    assert!(matches!(HeadMemory::open(&path), Err(StateError::Io { .. })));
}

#[test]
fn a_newer_head_another_process_remembered_meanwhile_is_kept() {
    let (_dir, path) = state();
    let k = key(7);
    let der = public_der(&k);
    // Both open the (empty) memory; one remembers 5, the other then 3.
    let mut first = HeadMemory::open(&path).expect("opens");
    let mut second = HeadMemory::open(&path).expect("opens");
    let (records, head) = chain_of(TENANT, 5, &k);
    first.verify_chain(&records, &head, &der).expect("first");
    let (records, head) = chain_of(TENANT, 3, &k);
    assert_eq!(
        second.verify_chain(&records, &head, &der).expect("unknown to it").1,
        Observation::First
    );
    assert_eq!(remembered_sequence(&path, &der, TENANT), Some(5));
    assert_eq!(second.remembered(&der, TENANT).map(|r| r.head.sequence), Some(5));
}
