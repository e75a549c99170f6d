//! Root-key custody end to end (issue 18, docs/custody.md), with real
//! processes: the nitro path with the mock NSM (`keyward enclave` +
//! `keyward proxy`, genesis by `kmsctl init`, unseal by `kmsctl unseal`),
//! the refusals `kmsctl` makes before anything is sent, `keyward dev`'s
//! 1-of-1 dev custodian, and that no share, root key or operator secret is
//! written to any file under the data dir or to any log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyward_sdk::custody::{CustodyKey, ShareSecret, read_share_package};

use crate::audit::kmsctl_path;
use crate::harness::{Sandbox, create_key, decrypt, encrypt, error_parts, files_under, random_bytes};
use crate::split::{Split, contains, encodings};

/// The mock NSM's PCR0 (no `--mock-pcr`), hex.
fn mock_pcr0_hex() -> String {
    hex::encode(&keyward_attestation::mock::default_pcrs()[&0])
}

/// Runs `kmsctl ARGS` (no credential in its environment) against `split`,
/// trusting its current CA.
pub(crate) fn kmsctl(split: &Split, work: &Path, args: &[&str]) -> Output {
    let ca = work.join("ca.pem");
    std::fs::write(&ca, &split.ca_pem).expect("write the CA");
    Command::new(kmsctl_path())
        .arg("--endpoint")
        .arg(&split.url)
        .arg("--ca-bundle")
        .arg(&ca)
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("KEYWARD_ENDPOINT")
        .output()
        .expect("run kmsctl")
}

/// `kmsctl` with no endpoint (the offline commands).
pub(crate) fn kmsctl_offline(args: &[&str]) -> Output {
    Command::new(kmsctl_path()).args(args).output().expect("run kmsctl")
}

pub(crate) fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
pub(crate) fn succeeded(what: &str, out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{what}: {}\n{stdout}\n{stderr}", out.status);
    stdout
}

/// `kmsctl custodian keygen --out DIR/NAME`; returns the prefix.
pub(crate) fn keygen(dir: &Path, name: &str) -> PathBuf {
    let prefix = dir.join(name);
    let out = kmsctl_offline(&["custodian", "keygen", "--out", &prefix.display().to_string()]);
    succeeded("custodian keygen", &out);
    prefix
}

pub(crate) fn file(prefix: &Path, suffix: &str) -> String {
    format!("{}{suffix}", prefix.display())
}

/// `kmsctl init` 2-of-3 (alice, bob, carol) with an operator key, into
/// `work/genesis`; returns the stdout.
fn init_2_of_3(split: &Split, work: &Path, custodians: &[PathBuf], operator: &Path) -> String {
    let out_dir = work.join("genesis");
    let mut args = vec!["init".to_string()];
    for prefix in custodians {
        args.push("--custodian".into());
        args.push(file(prefix, ".pub"));
    }
    args.extend([
        "--threshold".into(),
        "2".into(),
        "--operator-key".into(),
        file(operator, ".pub"),
        "--out".into(),
        out_dir.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded("kmsctl init", &kmsctl(split, work, &args))
}

fn unseal_args(split: &Split, share: &Path, key: &str, pcr0_hex: &str) -> Vec<String> {
    vec![
        "unseal".into(),
        "--share".into(),
        share.display().to_string(),
        "--key".into(),
        key.into(),
        "--expected-pcr".into(),
        format!("0={pcr0_hex}"),
        "--attestation-root".into(),
        split.mock_attestation_dir().join("root.crt.pem").display().to_string(),
    ]
}

fn unseal(split: &Split, work: &Path, share: &Path, key: &str, pcr0_hex: &str) -> Output {
    let args = unseal_args(split, share, key, pcr0_hex);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kmsctl(split, work, &args)
}

/// The share inside a package, opened with the custodian's key file.
fn open_share(package: &Path, key: &str) -> ShareSecret {
    let key = CustodyKey::read_private_pem(Path::new(key)).expect("custodian key");
    key.open_share(&read_share_package(package).expect("package"))
        .expect("the package opens")
}

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (the field of
/// vsss-rs's byte-wise shares).
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            product ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    product
}

fn gf_inv(a: u8) -> u8 {
    // a^254 = a^-1 for a != 0.
    let mut result = 1u8;
    for _ in 0..254 {
        result = gf_mul(result, a);
    }
    result
}

/// The secret the shares (`x ‖ y₁…y₃₂`, at least M of them) rebuild:
/// Lagrange interpolation at 0, byte by byte.
fn combine(shares: &[&ShareSecret]) -> Vec<u8> {
    let len = shares[0].value().len() - 1;
    let mut secret = vec![0u8; len];
    for (i, share) in shares.iter().enumerate() {
        let xi = share.value()[0];
        let mut basis = 1u8;
        for (j, other) in shares.iter().enumerate() {
            if i != j {
                let xj = other.value()[0];
                basis = gf_mul(basis, gf_mul(xj, gf_inv(xi ^ xj)));
            }
        }
        for (byte, y) in secret.iter_mut().zip(&share.value()[1..]) {
            *byte ^= gf_mul(basis, *y);
        }
    }
    secret
}

/// Where any of `secrets` (in any of its encodings) occurs in the bytes of
/// a file under `dir` or in `logs`.
fn find_secrets(dir: &Path, logs: &[(String, Vec<u8>)], secrets: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut haystacks: Vec<(String, Vec<u8>)> = files_under(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path.display().to_string(), bytes)
        })
        .collect();
    haystacks.extend(logs.iter().cloned());
    let mut found = Vec::new();
    for (name, secret) in secrets {
        for (encoding, needle) in encodings(secret) {
            for (place, bytes) in &haystacks {
                if contains(bytes, &needle) {
                    found.push(format!("{name} ({encoding}) in {place}"));
                }
            }
        }
    }
    found
}

/// The nitro path with the mock NSM: genesis by `kmsctl init` (2 of 3,
/// operator key), keys and ciphertexts, the enclave SIGKILLed and started
/// again: sealed (API 503, `/healthz` sealed) until `kmsctl unseal` with
/// two custodians' shares; then every old ciphertext decrypts. No share,
/// root key or operator secret is in any file under the data dir or in
/// any log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_2_of_3_survives_an_enclave_kill_and_unseals_with_two_shares() {
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let mut split = Split::start_sealed().await;
    assert_eq!(split.healthz().await, (503, "sealed".to_string()));

    let custodians: Vec<PathBuf> = ["alice", "bob", "carol"].iter().map(|n| keygen(work, n)).collect();
    let operator = keygen(work, "operator");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file(&custodians[0], ".key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a private key file is 0600");
    }
    // keygen never overwrites a key.
    let again = kmsctl_offline(&["custodian", "keygen", "--out", &custodians[0].display().to_string()]);
    assert_eq!(again.status.code(), Some(2), "{:?}", text(&again));

    // A key-service genesis sent to this Shamir enclave: refused saying what to run, nothing written.
    let wrong = work.join("wrong");
    let out = kmsctl(
        &split,
        work,
        &[
            "init",
            "--key-service",
            "--operator-key",
            &file(&operator, ".pub"),
            "--out",
            &wrong.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("kmsctl init --custodian"), "{:?}", text(&out));
    assert_eq!(std::fs::read_dir(&wrong).map(|d| d.count()).unwrap_or(0), 0);
    assert_eq!(split.healthz().await, (503, "sealed".to_string()));

    let stdout = init_2_of_3(&split, work, &custodians, &operator);
    let deployment = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployment"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no deployment line: {stdout}"));
    assert_eq!(deployment.len(), 32, "{stdout}");
    assert!(stdout.contains("root commitment"), "{stdout}");
    let genesis = work.join("genesis");
    for i in 1..=3 {
        assert!(genesis.join(format!("custodian-{i}.share")).is_file());
    }
    // The operator's credential, opened locally, works.
    let out = kmsctl_offline(&[
        "operator",
        "credential",
        "--package",
        &genesis.join("operator.credential").display().to_string(),
        "--key",
        &file(&operator, ".key"),
    ]);
    let stdout = succeeded("operator credential", &out);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name}: {stdout}"))
            .to_owned()
    };
    let (operator_id, operator_secret) = (field("AWS_ACCESS_KEY_ID"), field("AWS_SECRET_ACCESS_KEY"));
    split.await_ready_ca().await;
    assert_eq!(split.healthz().await, (200, "ok".to_string()));
    let operator_client = keyward_sdk::Client::new(&split.url, "us-east-1", &operator_id, &operator_secret)
        .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(split.ca_pem.clone())))
        .expect("operator client");
    operator_client
        .list_tenants()
        .await
        .expect("ListTenants with the operator credential from genesis");
    // A second genesis is refused (asked of the Ready enclave, trusting its persistent CA).
    let second = kmsctl(
        &split,
        work,
        &[
            "init",
            "--custodian",
            &file(&custodians[0], ".pub"),
            "--threshold",
            "1",
            "--out",
            &work.join("again").display().to_string(),
        ],
    );
    assert_eq!(second.status.code(), Some(1), "{:?}", text(&second));
    assert!(text(&second).1.contains("already initialised"), "{:?}", text(&second));

    // Keys and ciphertexts.
    let client = split.client();
    let mut ciphertexts = Vec::new();
    for i in 0..3 {
        let key = create_key(&client, &format!("custody {i}")).await;
        let plaintext = random_bytes(40 + i);
        ciphertexts.push((encrypt(&client, &key, &plaintext, None).await, plaintext));
    }

    // Alice records the service's signed checkpoint (issue 19 item 3).
    let state = work.join("alice.checkpoint");
    let share_1 = genesis.join("custodian-1.share").display().to_string();
    let state_arg = state.display().to_string();
    let out = kmsctl(
        &split,
        work,
        &["custodian", "checkpoint", "--share", &share_1, "--state", &state_arg],
    );
    let stdout = succeeded("alice's checkpoint", &out);
    assert!(stdout.contains("first checkpoint of deployment"), "{stdout}");
    assert!(
        std::fs::read_to_string(&state)
            .expect("state file")
            .contains("BEGIN KEYWARD CHECKPOINT")
    );

    // SIGKILL the enclave; the new process is sealed.
    split.kill9_and_restart_enclave().await;
    assert_eq!(split.healthz().await, (503, "sealed".to_string()));
    let refused = split.client().list_keys().send().await.expect_err("sealed");
    let (status, code) = error_parts(&refused);
    assert_eq!(
        (status, code.as_deref()),
        (Some(503), Some("ServiceUnavailableException"))
    );

    // Alice, stating her checkpoint (the store is not older): 1 of 2, still sealed.
    let pcr0 = mock_pcr0_hex();
    let mut args = unseal_args(
        &split,
        &genesis.join("custodian-1.share"),
        &file(&custodians[0], ".key"),
        &pcr0,
    );
    args.extend(["--state".to_string(), state_arg.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kmsctl(&split, work, &args);
    let stdout = succeeded("alice's unseal", &out);
    assert!(stdout.contains("sending this custodian's checkpoint"), "{stdout}");
    assert!(stdout.contains("1 of 2 shares; state Sealed"), "{stdout}");
    assert!(stdout.contains(&deployment), "{stdout}");
    assert_eq!(split.healthz().await.0, 503);
    // The same share again is refused and not counted.
    let out = unseal(
        &split,
        work,
        &genesis.join("custodian-1.share"),
        &file(&custodians[0], ".key"),
        &pcr0,
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("already accepted"), "{:?}", text(&out));
    // Carol: 2 of 2, ready.
    let out = unseal(
        &split,
        work,
        &genesis.join("custodian-3.share"),
        &file(&custodians[2], ".key"),
        &pcr0,
    );
    let stdout = succeeded("carol's unseal", &out);
    assert!(stdout.contains("2 of 2 shares; state Ready"), "{stdout}");
    split.await_ready_ca().await;
    assert_eq!(split.healthz().await, (200, "ok".to_string()));

    let client = split.client();
    for (ciphertext, plaintext) in &ciphertexts {
        assert_eq!(&decrypt(&client, None, ciphertext, None).await, plaintext);
    }

    // Nothing secret at rest or in a log: the shares, the root they
    // rebuild (checked against the root commitment), the operator secret.
    let shares: Vec<ShareSecret> = (0..3)
        .map(|i| {
            open_share(
                &genesis.join(format!("custodian-{}.share", i + 1)),
                &file(&custodians[i], ".key"),
            )
        })
        .collect();
    let root = combine(&[&shares[0], &shares[2]]);
    assert_eq!(
        root,
        combine(&[&shares[1], &shares[2]]),
        "any two shares rebuild the same root"
    );
    let package = read_share_package(&genesis.join("custodian-1.share")).expect("package");
    let root_key = keyward_enclave::secret::Key256::from_slice(&root).expect("32 bytes");
    assert_eq!(
        keyward_enclave::keys::hierarchy::audit_public_key_der(&root_key).as_deref(),
        Some(package.root_commitment.as_slice()),
        "the rebuilt root is the deployment's (its commitment)"
    );
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("the root key", root),
        ("the operator secret", operator_secret.into_bytes()),
    ];
    for share in &shares {
        secrets.push(("a share", share.value()[1..].to_vec()));
    }
    let logs: Vec<(String, Vec<u8>)> = split
        .logs()
        .into_iter()
        .enumerate()
        .map(|(i, (name, log))| (format!("{name} log {i}"), log.into_bytes()))
        .collect();
    let found = find_secrets(&split.data_dir, &logs, &secrets);
    assert!(found.is_empty(), "secrets found: {found:#?}");
}

/// What `kmsctl unseal` refuses before sending anything: a document whose
/// PCR0 is not the expected one, a package that does not open with the
/// key given, a share of another deployment. The enclave stays sealed
/// with no share counted; the right share then unseals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_unseal_refuses_wrong_pcr_wrong_key_and_another_deployments_share() {
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let alice = keygen(work, "alice");
    let bob = keygen(work, "bob");
    let operator = keygen(work, "operator");

    // Deployment A: 1 of 1 (alice); deployment B: 1 of 1 (bob).
    let mut a = Split::start_sealed().await;
    let a_dir = work.join("a");
    std::fs::create_dir(&a_dir).expect("dir");
    let out = kmsctl(
        &a,
        &a_dir,
        &[
            "init",
            "--custodian",
            &file(&alice, ".pub"),
            "--threshold",
            "1",
            "--operator-key",
            &file(&operator, ".pub"),
            "--out",
            &a_dir.display().to_string(),
        ],
    );
    succeeded("init A", &out);
    let b = Split::start_sealed().await;
    let b_dir = work.join("b");
    std::fs::create_dir(&b_dir).expect("dir");
    let out = kmsctl(
        &b,
        &b_dir,
        &[
            "init",
            "--custodian",
            &file(&bob, ".pub"),
            "--threshold",
            "1",
            "--operator-key",
            &file(&operator, ".pub"),
            "--out",
            &b_dir.display().to_string(),
        ],
    );
    succeeded("init B", &out);
    drop(b);

    a.kill9_and_restart_enclave().await;
    let pcr0 = mock_pcr0_hex();
    let a_share = a_dir.join("custodian-1.share");
    let received = |split: &Split| {
        let client = split.custody_client();
        async move {
            client
                .get_unseal_document(b"nonce-for-progress")
                .await
                .expect("GetUnsealDocument")
                .received
        }
    };

    // Wrong PCR0.
    let out = unseal(&a, work, &a_share, &file(&alice, ".key"), &"00".repeat(48));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the enclave's attestation document was refused"),
        "{stderr}"
    );
    assert_eq!(received(&a).await, 0);

    // Wrong custodian key for the package.
    let out = unseal(&a, work, &a_share, &file(&bob, ".key"), &pcr0);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not decrypt with this key"), "{stderr}");

    // A share of deployment B.
    let out = unseal(&a, work, &b_dir.join("custodian-1.share"), &file(&bob, ".key"), &pcr0);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("but this share is for deployment") && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    assert_eq!(received(&a).await, 0);
    assert_eq!(a.healthz().await, (503, "sealed".to_string()));

    // Usage errors: exit 2.
    let out = unseal(&a, work, &a_share, &file(&alice, ".key"), "zz");
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = unseal(&a, work, &work.join("missing.share"), &file(&alice, ".key"), &pcr0);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    // --attest-pcr0 cannot apply to a sealed service: refused, not ignored.
    let mut args = vec!["--attest-pcr0".to_string(), pcr0.clone()];
    args.extend(unseal_args(&a, &a_share, &file(&alice, ".key"), &pcr0));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kmsctl(&a, work, &args);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("--expected-pcr"), "{:?}", text(&out));

    // The right share.
    let out = unseal(&a, work, &a_share, &file(&alice, ".key"), &pcr0);
    assert!(succeeded("alice's unseal", &out).contains("1 of 1 shares; state Ready"));
    assert_eq!(a.healthz().await, (200, "ok".to_string()));
}

/// `keyward dev`: the first start creates the dev custodian (key 0600,
/// share package) by a 1-of-1 genesis; a restart unseals with it, and so
/// does the launcher after the enclave is SIGKILLed. The root (the 1-of-1
/// share's value) is in no file under the data dir and in no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_dev_creates_its_custodian_then_unseals_every_start_with_it() {
    let mut sb = Sandbox::new();
    let mut kw = sb.start().await;
    let dir = sb.dev_custodian_dir();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("custodian.key"))
            .expect("custodian.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(dir.join("custodian.pub").is_file() && dir.join("custodian.share").is_file());
    let lines = kw.stdout_lines();
    assert!(
        lines.iter().any(|l| l.contains("WARNING: the dev custodian key")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("dev custody: genesis of deployment")),
        "{lines:#?}"
    );

    let client = kw.client();
    let key = create_key(&client, "dev custody").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&client, &key, &plaintext, None).await;

    // The enclave dies: the launcher restarts it and unseals it.
    let first_enclave = kw.enclave_pid;
    let _ = Command::new("kill")
        .args(["-KILL", &first_enclave.to_string()])
        .status();
    kw.wait_for_enclave_restart(crate::harness::READY_TIMEOUT).await;
    kw.wait_healthy(crate::harness::READY_TIMEOUT).await;
    assert_eq!(decrypt(&kw.client(), None, &ciphertext, None).await, plaintext);
    let share_before = std::fs::read(dir.join("custodian.share")).expect("share");
    kw.stop();
    let stdout_1 = kw.stdout_lines();
    drop(kw);

    // A new launcher unseals (no new genesis).
    let mut kw = sb.start().await;
    assert_eq!(decrypt(&kw.client(), None, &ciphertext, None).await, plaintext);
    let lines = kw.stdout_lines();
    assert!(!lines.iter().any(|l| l.contains("genesis of deployment")), "{lines:#?}");
    assert_eq!(std::fs::read(dir.join("custodian.share")).expect("share"), share_before);
    kw.stop();
    let stdout_2 = kw.stdout_lines();
    drop(kw);

    let share = open_share(
        &dir.join("custodian.share"),
        &dir.join("custodian.key").display().to_string(),
    );
    let root = share.value()[1..].to_vec();
    let mut logs: Vec<(String, Vec<u8>)> = sb
        .log_files()
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap_or_default()))
        .collect();
    logs.push(("stdout".into(), [stdout_1, stdout_2].concat().join("\n").into_bytes()));
    let found = find_secrets(&sb.data_dir(), &logs, &[("the root key (the 1-of-1 share)", root)]);
    assert!(found.is_empty(), "secrets found: {found:#?}");
}

/// A `keyward dev` node on a store that already holds a deployment (here
/// the first node's embedded store, the first node stopped) has no share
/// of its own and no Ready peer to join from (the first node removed its
/// record when it stopped): the launcher stops before starting an enclave,
/// naming `--dev-custodian-dir`, and creates no custodian; given the first
/// node's dev custodian it unseals and serves the first node's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_on_another_nodes_store_needs_that_nodes_custodian() {
    let mut first = Sandbox::new();
    let mut kw = first.start().await;
    let key = create_key(&kw.client(), "first node").await;
    let plaintext = random_bytes(32);
    let ciphertext = encrypt(&kw.client(), &key, &plaintext, None).await;
    kw.stop();
    drop(kw);

    let mut second = Sandbox::new();
    second.creds = first.creds.clone();
    second.operator = first.operator.clone();
    let store = first.store_dir().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--store",
            &store,
        ])
        .arg("--data-dir")
        .arg(second.data_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keyward dev");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no Ready node of the cluster is registered") && stderr.contains("--dev-custodian-dir"),
        "{stderr}"
    );
    assert!(!second.dev_custodian_dir().exists());

    second.extra_args = vec!["--store".into(), store];
    second.unseal_with_custodian_of(&first);
    let kw = second.start().await;
    assert_eq!(decrypt(&kw.client(), Some(&key), &ciphertext, None).await, plaintext);
}

/// `kmsctl custodian reshare` with the operator's credential: Bob and
/// Carol leave, Dave joins (2 of 2 with Alice). After the enclave is
/// killed and restarted, Bob's old share is refused and Alice's and Dave's
/// new shares unseal the same deployment. Without a credential the
/// command is a usage error, and a pinned commitment of another
/// deployment is refused before any file is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_custodian_reshare_replaces_the_custodians_and_old_shares_are_refused() {
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();
    let mut split = Split::start_sealed().await;
    let custodians: Vec<PathBuf> = ["alice", "bob", "carol"].iter().map(|n| keygen(work, n)).collect();
    let operator = keygen(work, "operator");
    let dave = keygen(work, "dave");
    let stdout = init_2_of_3(&split, work, &custodians, &operator);
    let deployment = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployment"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no deployment line: {stdout}"));
    let genesis = work.join("genesis");
    let out = kmsctl_offline(&[
        "operator",
        "credential",
        "--package",
        &genesis.join("operator.credential").display().to_string(),
        "--key",
        &file(&operator, ".key"),
    ]);
    let stdout = succeeded("operator credential", &out);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name}: {stdout}"))
            .to_owned()
    };
    let (operator_id, operator_secret) = (field("AWS_ACCESS_KEY_ID"), field("AWS_SECRET_ACCESS_KEY"));
    split.await_ready_ca().await;
    let client = split.client();
    let key = create_key(&client, "outlives bob and carol").await;
    let plaintext = random_bytes(48);
    let ciphertext = encrypt(&client, &key, &plaintext, None).await;

    let reshare_args = |out: &Path, commitment: &Path| -> Vec<String> {
        vec![
            "custodian".into(),
            "reshare".into(),
            "--custodian".into(),
            file(&custodians[0], ".pub"),
            "--custodian".into(),
            file(&dave, ".pub"),
            "--threshold".into(),
            "2".into(),
            "--out".into(),
            out.display().to_string(),
            "--expect-commitment".into(),
            commitment.display().to_string(),
        ]
    };
    let run = |args: &[String], creds: Option<(&str, &str)>| {
        let ca = work.join("ca.pem");
        std::fs::write(&ca, &split.ca_pem).expect("write the CA");
        let mut command = Command::new(kmsctl_path());
        command
            .arg("--endpoint")
            .arg(&split.url)
            .arg("--ca-bundle")
            .arg(&ca)
            .args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("KEYWARD_ENDPOINT");
        if let Some((id, secret)) = creds {
            command
                .env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
        }
        command.output().expect("run kmsctl")
    };
    let commitment = genesis.join("root-commitment.pem");
    let new_dir = work.join("reshared");

    // No credential: a usage error, nothing asked.
    let out = run(&reshare_args(&new_dir, &commitment), None);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    // A pinned commitment of another deployment: refused, nothing written.
    let other = work.join("other-commitment.der");
    let other_root = keyward_enclave::secret::Key256::generate();
    std::fs::write(
        &other,
        keyward_enclave::keys::hierarchy::audit_public_key_der(&other_root).expect("an audit key"),
    )
    .expect("write");
    let out = run(
        &reshare_args(&work.join("refused"), &other),
        Some((&operator_id, &operator_secret)),
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("not this deployment's root commitment"),
        "{:?}",
        text(&out)
    );
    assert!(!work.join("refused").join("custodian-1.share").exists());

    let out = run(
        &reshare_args(&new_dir, &commitment),
        Some((&operator_id, &operator_secret)),
    );
    let stdout = succeeded("kmsctl custodian reshare", &out);
    assert!(stdout.contains(&deployment), "{stdout}");
    assert!(stdout.contains("Shamir 2 of 2"), "{stdout}");
    assert!(new_dir.join("custodian-1.share").is_file() && new_dir.join("custodian-2.share").is_file());
    assert!(!new_dir.join("custodian-3.share").exists());

    split.kill9_and_restart_enclave().await;
    let pcr0 = mock_pcr0_hex();
    let out = unseal(
        &split,
        work,
        &genesis.join("custodian-2.share"),
        &file(&custodians[1], ".key"),
        &pcr0,
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("does not match the boot record"),
        "{:?}",
        text(&out)
    );
    let out = unseal(
        &split,
        work,
        &new_dir.join("custodian-1.share"),
        &file(&custodians[0], ".key"),
        &pcr0,
    );
    assert!(succeeded("alice's new share", &out).contains("1 of 2 shares; state Sealed"));
    let out = unseal(
        &split,
        work,
        &new_dir.join("custodian-2.share"),
        &file(&dave, ".key"),
        &pcr0,
    );
    assert!(succeeded("dave's share", &out).contains("2 of 2 shares; state Ready"));
    split.await_ready_ca().await;
    assert_eq!(decrypt(&split.client(), None, &ciphertext, None).await, plaintext);
}
