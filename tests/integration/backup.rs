//! Backup and restore (issue 18, item 7), with real processes: `keyward dev`
//! with keys, aliases, a tenant's credentials and ciphertexts → `kmsctl
//! backup` → `kmsctl restore` into a new data dir → `keyward dev` on it
//! serves every key, alias, credential and ciphertext. A tampered backup is
//! refused naming the record, and nothing of it is loaded; a non-empty
//! store is refused.

use std::path::Path;
use std::process::{Command, Output};

use keyward_sdk::backup::format;

use crate::audit::kmsctl_path;
use crate::harness::{Creds, Keyward, REGION, Sandbox, create_key, decrypt, encrypt, random_bytes};

const TENANT: &str = "444455556666";

fn kmsctl(kw: &Keyward, creds: &Creds, args: &[&str]) -> Output {
    Command::new(kmsctl_path())
        .args(args)
        .env("KEYWARD_ENDPOINT", &kw.url)
        .env("AWS_CA_BUNDLE", kw.data_dir.join("tls").join("ca.pem"))
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .output()
        .expect("run kmsctl")
}

/// `kmsctl restore` needs no service and no credentials.
fn restore(file: &Path, data_dir: &Path) -> Output {
    Command::new(kmsctl_path())
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run kmsctl restore")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn sdk(kw: &Keyward, creds: &Creds) -> keyward_sdk::Client {
    keyward_sdk::Client::new(&kw.url, REGION, &creds.access_key_id, &creds.secret)
        .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(kw.ca_pem.as_bytes().to_vec())))
        .expect("an SDK client")
}

/// Copies `from` into `to` recursively (the dev custodian's directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A new sandbox for the restored data dir: the same dev credentials, and
/// the source's dev custodian (the same custody unseals the restored store).
fn restored_sandbox(source: &Sandbox) -> Sandbox {
    let mut target = Sandbox::new();
    target.creds = source.creds.clone();
    target.operator = source.operator.clone();
    let custodian = source.data_dir().join("dev-custodian");
    if custodian.is_dir() {
        copy_dir(&custodian, &target.data_dir().join("dev-custodian"));
    }
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_data_dir_serves_every_key_alias_credential_and_ciphertext() {
    let mut source = Sandbox::new();
    let mut kw = source.start().await;
    let client = kw.client();

    // Keys with aliases and ciphertexts in the dev tenant.
    let mut ciphertexts = Vec::new();
    for i in 0..3 {
        let key = create_key(&client, &format!("backed up {i}")).await;
        client
            .create_alias()
            .alias_name(format!("alias/restored-{i}"))
            .target_key_id(&key)
            .send()
            .await
            .expect("CreateAlias");
        let plaintext = random_bytes(24 + i);
        let ciphertext = encrypt(&client, &format!("alias/restored-{i}"), &plaintext, None).await;
        ciphertexts.push((key, plaintext, ciphertext));
    }
    // A tenant of the operator's, its KeyAdmin and a KeyUser credential.
    let tenant = sdk(&kw, &kw.operator)
        .create_tenant(TENANT)
        .await
        .expect("CreateTenant");
    let admin = Creds {
        access_key_id: tenant.access_key_id.clone(),
        secret: tenant.secret_access_key.expose().to_owned(),
    };
    let user = sdk(&kw, &admin)
        .create_access_key(keyward_sdk::Role::KeyUser)
        .await
        .expect("CreateAccessKey");
    let user = Creds {
        access_key_id: user.access_key_id.clone(),
        secret: user.secret_access_key.expose().to_owned(),
    };
    let tenant_key = create_key(&kw.client_with(&admin.access_key_id, &admin.secret), "the tenant's").await;
    let tenant_plain = random_bytes(40);
    let tenant_ciphertext = encrypt(
        &kw.client_with(&user.access_key_id, &user.secret),
        &tenant_key,
        &tenant_plain,
        None,
    )
    .await;

    // A tenant may not back up; the operator may.
    let file = source.data_dir().with_file_name("keyward.backup");
    let denied = kmsctl(&kw, &kw.creds, &["backup", "--out", file.to_str().expect("utf-8")]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert!(text(&denied).contains("AccessDeniedException"), "{}", text(&denied));
    assert!(!file.exists(), "a refused backup leaves no file");
    let made = kmsctl(&kw, &kw.operator, &["backup", "--out", file.to_str().expect("utf-8")]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    assert!(text(&made).contains("backup written to"), "{}", text(&made));
    kw.stop();
    drop(kw);

    // A tampered copy: one key record's sealed bytes altered.
    let bytes = std::fs::read(&file).expect("read the backup");
    let mut pages = format::read_file(&bytes).expect("a backup file");
    let (page, index) = pages
        .iter()
        .enumerate()
        .find_map(|(p, page)| {
            page.records
                .iter()
                .position(|r| r.namespace == "key" && r.key.ends_with(&ciphertexts[1].0))
                .map(|i| (p, i))
        })
        .expect("the key's record is in the backup");
    let altered = &mut pages[page].records[index];
    let name = format!("key/{} (version {})", altered.key, altered.version);
    let last = altered.value.len() - 1;
    altered.value[last] ^= 1;
    let mut tampered = format::FILE_MAGIC.to_vec();
    for page in &pages {
        tampered.extend(format::encode_page(page).expect("encodes"));
    }
    let tampered_file = file.with_file_name("tampered.backup");
    std::fs::write(&tampered_file, tampered).expect("write");
    let elsewhere = Sandbox::new();
    let refused = restore(&tampered_file, &elsewhere.data_dir());
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains(&name), "names {name}: {}", text(&refused));
    assert!(
        !elsewhere.store_dir().exists(),
        "a refused backup writes nothing (not even an empty store)"
    );

    // The real backup, into a new data dir.
    let mut target = restored_sandbox(&source);
    let restored = restore(&file, &target.data_dir());
    assert_eq!(restored.status.code(), Some(0), "{}", text(&restored));
    assert!(text(&restored).contains("restored "), "{}", text(&restored));
    let again = restore(&file, &target.data_dir());
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("not empty"), "{}", text(&again));

    // The backup is older than what the dev custodian last saw (the
    // backup's own audit records came after it): a restore is a rollback,
    // refused until the custodian accepts it (issue 19 item 3).
    let kw = target.start_maybe_sealed().await;
    assert!(
        kw.sealed,
        "a restored (older) store came up without --accept-store-rollback"
    );
    drop(kw);
    target.extra_args.push("--accept-store-rollback".into());
    let kw = target.start().await;
    let client = kw.client();
    for (i, (key, plaintext, ciphertext)) in ciphertexts.iter().enumerate() {
        assert_eq!(
            &decrypt(&client, None, ciphertext, None).await,
            plaintext,
            "ciphertext under {key}"
        );
        let described = client
            .describe_key()
            .key_id(format!("alias/restored-{i}"))
            .send()
            .await
            .expect("DescribeKey by alias");
        assert_eq!(described.key_metadata().map(|m| m.key_id()), Some(key.as_str()));
        let fresh = encrypt(&client, &format!("alias/restored-{i}"), b"after restore", None).await;
        assert_eq!(decrypt(&client, None, &fresh, None).await, b"after restore");
    }
    let user_client = kw.client_with(&user.access_key_id, &user.secret);
    assert_eq!(
        decrypt(&user_client, Some(&tenant_key), &tenant_ciphertext, None).await,
        tenant_plain,
        "the tenant's KeyUser credential and ciphertext"
    );
    let listed = sdk(&kw, &admin)
        .list_access_keys()
        .await
        .expect("the tenant's KeyAdmin credential");
    assert!(
        listed.iter().any(|k| k.access_key_id == user.access_key_id),
        "{listed:?}"
    );
    let tenants = sdk(&kw, &kw.operator)
        .list_tenants()
        .await
        .expect("the operator's credential");
    assert!(tenants.iter().any(|t| t.tenant_id == TENANT));
}
