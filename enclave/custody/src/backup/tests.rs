//! The manifest logic: a backup verifies as exported, and every alteration
//! is refused naming the first bad record.

use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;

use super::*;

const NAMESPACES: [&str; 3] = ["boot", "key", "alias"];

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid scalar")
}

fn commitment(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("SPKI")
        .as_bytes()
        .to_vec()
}

fn record(namespace: &str, key: &str, version: u64, value: &[u8]) -> FileRecord {
    FileRecord {
        namespace: namespace.into(),
        key: key.into(),
        version,
        value: value.to_vec(),
    }
}

/// A store's records, in export order.
fn store(tag: &str) -> Vec<FileRecord> {
    vec![
        record("boot", "custody", 1, format!("boot {tag}").as_bytes()),
        record("key", "t/k1", 3, format!("k1 {tag}").as_bytes()),
        record("key", "t/k2", 1, format!("k2 {tag}").as_bytes()),
        record("key", "t/k3", 2, format!("k3 {tag}").as_bytes()),
        record("alias", "t/alias/a", 1, format!("a {tag}").as_bytes()),
    ]
}

/// Exports `records` as the enclave does, `per_page` records a page.
fn export(key: &SigningKey, backup_id: u8, records: &[FileRecord], per_page: usize) -> Vec<FilePage> {
    let namespaces: Vec<String> = NAMESPACES.iter().map(|n| (*n).to_owned()).collect();
    let position = |r: &FileRecord| NAMESPACES.iter().position(|n| *n == r.namespace).expect("namespace") as u32;
    let chunks: Vec<&[FileRecord]> = records.chunks(per_page).collect();
    let mut pages = Vec::new();
    let mut previous = [0u8; 32];
    let mut from = Cursor::START;
    let mut count = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let to = if last {
            Cursor {
                namespace: NAMESPACES.len() as u32,
                after: None,
            }
        } else {
            let r = chunk.last().expect("non-empty chunk");
            Cursor {
                namespace: position(r),
                after: Some(r.key.clone()),
            }
        };
        count += chunk.len() as u64;
        let manifest = PageManifest {
            format: FORMAT_VERSION,
            backup_id: [backup_id; BACKUP_ID_LEN],
            page: i as u32,
            previous,
            created: 1_700_000_000,
            root_commitment: commitment(key),
            deployment_id: Some(vec![9; DEPLOYMENT_ID_LEN]),
            namespaces: namespaces.clone(),
            from: from.clone(),
            to: to.clone(),
            entries: chunk
                .iter()
                .map(|r| Entry {
                    namespace: r.namespace.clone(),
                    key: r.key.clone(),
                    version: r.version,
                    sha256: Sha256::digest(&r.value).into(),
                    sealed: r.namespace != "boot",
                })
                .collect(),
            count,
            last,
        };
        let bytes = manifest.encode().expect("encodes");
        let signature: Signature = key.sign(&signed_message(&bytes));
        previous = Sha256::digest(&bytes).into();
        from = to;
        pages.push(FilePage {
            manifest: bytes,
            signature: signature.to_der().as_bytes().to_vec(),
            records: chunk.to_vec(),
        });
    }
    pages
}

fn file(pages: &[FilePage]) -> Vec<u8> {
    let mut bytes = FILE_MAGIC.to_vec();
    for page in pages {
        bytes.extend(encode_page(page).expect("encodes"));
    }
    bytes
}

fn refused(pages: Vec<FilePage>) -> String {
    verify(pages, None).expect_err("refused").to_string()
}

#[test]
fn an_exported_backup_verifies_through_its_file() {
    let key = signing_key(1);
    for per_page in [1, 2, 5, 10] {
        let pages = export(&key, 1, &store("a"), per_page);
        let read = read_file(&file(&pages)).expect("reads");
        assert_eq!(read, pages);
        let verified = verify(read, Some(&commitment(&key))).expect("verifies");
        assert_eq!(verified.records, store("a"), "{per_page} a page");
        assert_eq!(verified.root_commitment, commitment(&key));
        assert_eq!(verified.deployment_id, Some(vec![9; DEPLOYMENT_ID_LEN]));
        assert_eq!(verified.backup_id, [1; BACKUP_ID_LEN]);
    }
}

#[test]
fn an_altered_record_is_refused_by_name() {
    let key = signing_key(1);
    let mut pages = export(&key, 1, &store("a"), 2);
    pages[1].records[0].value[0] ^= 1;
    let error = refused(pages);
    assert!(error.contains("key/t/k2 (version 1)"), "{error}");
    assert!(error.contains("SHA-256"), "{error}");

    // A record moved to another version (same bytes) is named too.
    let mut pages = export(&key, 1, &store("a"), 2);
    pages[0].records[1].version = 4;
    let error = refused(pages);
    assert!(error.contains("key/t/k1 (version 4)"), "{error}");
}

#[test]
fn a_truncated_backup_is_refused() {
    let key = signing_key(1);
    // The last page dropped.
    let mut pages = export(&key, 1, &store("a"), 2);
    pages.pop();
    let error = refused(pages);
    assert!(error.contains("truncated after record key/t/k3 (version 2)"), "{error}");

    // A record dropped from the end of a page.
    let mut pages = export(&key, 1, &store("a"), 2);
    pages[1].records.pop();
    let error = refused(pages);
    assert!(error.contains("truncated after record key/t/k2 (version 1)"), "{error}");

    // A page dropped from the middle.
    let mut pages = export(&key, 1, &store("a"), 2);
    pages.remove(1);
    let error = refused(pages);
    assert!(error.contains("alias/t/alias/a"), "{error}");

    // The file cut in the middle of a page.
    let bytes = file(&export(&key, 1, &store("a"), 2));
    let error = read_file(&bytes[..bytes.len() - 3]).expect_err("cut").to_string();
    assert!(error.contains("page 2 does not decode"), "{error}");

    // Nothing at all.
    assert_eq!(verify(Vec::new(), None).expect_err("empty"), BackupError::Empty);
    assert!(read_file(b"not a backup").is_err());
}

#[test]
fn a_record_from_another_deployments_backup_is_refused_by_name() {
    let ours = signing_key(1);
    let theirs = signing_key(2);
    let other = export(&theirs, 7, &store("b"), 2);

    // One record swapped for the other deployment's record of the same identity.
    let mut pages = export(&ours, 1, &store("a"), 2);
    pages[1].records[1] = other[1].records[1].clone();
    let error = refused(pages);
    assert!(error.contains("key/t/k3 (version 2)"), "{error}");

    // A whole page of theirs (signed by their key) in place of ours.
    let mut pages = export(&ours, 1, &store("a"), 2);
    pages[1] = other[1].clone();
    let error = refused(pages);
    assert!(error.contains("page 1 (first record key/t/k2 (version 1))"), "{error}");
    assert!(error.contains("not signed by the backup's root commitment"), "{error}");

    // A page of another backup of the same deployment.
    let mut pages = export(&ours, 1, &store("a"), 2);
    pages[1] = export(&ours, 2, &store("a"), 2)[1].clone();
    let error = refused(pages);
    assert!(error.contains("another backup"), "{error}");

    // Their whole backup, when ours is pinned.
    let error = verify(other, Some(&commitment(&ours))).expect_err("pinned");
    assert_eq!(error, BackupError::UnexpectedCommitment);
}

#[test]
fn a_bad_signature_is_refused() {
    let key = signing_key(1);
    let mut pages = export(&key, 1, &store("a"), 2);
    let last = pages[2].signature.len() - 1;
    pages[2].signature[last] ^= 1;
    let error = refused(pages);
    assert!(
        error.contains("page 2 (first record alias/t/alias/a (version 1))"),
        "{error}"
    );

    // A manifest edited after signing (a record dropped from its list, so
    // the file's records would match it) fails its signature.
    let mut pages = export(&key, 1, &store("a"), 2);
    let mut manifest = PageManifest::decode(&pages[1].manifest).expect("decodes");
    manifest.entries.pop();
    manifest.count -= 1;
    pages[1].manifest = manifest.encode().expect("encodes");
    pages[1].records.pop();
    let error = refused(pages);
    assert!(error.contains("page 1"), "{error}");
    assert!(error.contains("not signed"), "{error}");
}

#[test]
fn re_ordered_records_or_pages_are_refused() {
    let key = signing_key(1);
    let mut pages = export(&key, 1, &store("a"), 3);
    pages[0].records.swap(1, 2);
    let error = refused(pages);
    assert!(
        error.contains("key/t/k2 (version 1): is not the record the manifest lists here"),
        "{error}"
    );

    let mut pages = export(&key, 1, &store("a"), 2);
    pages.swap(1, 2);
    let error = refused(pages);
    assert!(error.contains("page 1 (first record alias/t/alias/a"), "{error}");

    // A page repeated.
    let mut pages = export(&key, 1, &store("a"), 2);
    let again = pages[1].clone();
    pages.insert(2, again);
    let error = refused(pages);
    assert!(error.contains("page 2 (first record key/t/k2"), "{error}");

    // A page after the last one.
    let mut pages = export(&key, 1, &store("a"), 2);
    let extra = pages[0].clone();
    pages.push(extra);
    let error = refused(pages);
    assert!(
        error.contains("boot/custody (version 1): follows the backup's last page"),
        "{error}"
    );

    // A record added to a page.
    let mut pages = export(&key, 1, &store("a"), 2);
    pages[0].records.push(record("key", "t/k9", 1, b"new"));
    let error = refused(pages);
    assert!(
        error.contains("key/t/k9 (version 1): is not in the manifest"),
        "{error}"
    );
}
