//! Custody by an AWS-KMS-compatible key service with real processes (issue
//! 18 item 3, docs/custody.md "Custody by a key service"): a second
//! `keyward dev` is the custody service; the first, started with
//! `--custody kms --custody-key ARN --custody-endpoint URL --custody-ca PEM
//! --custody-credentials env`, does genesis through it (`GenerateDataKey`
//! with its Recipient) and unseals through it after every enclave restart
//! (`Decrypt` with its Recipient). The custody key's attestation policy
//! naming another PCR0, or a custody service that is gone, leaves the
//! restarted enclave Sealed with the reason in its 503 message and its log.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::custody::{file, keygen, kmsctl, kmsctl_offline, succeeded, text};
use crate::harness::{
    Keyward, RawResponse, Sandbox, api_headers, create_key, decrypt, encrypt, exchange, sign_headers,
};
use crate::principals::call_as;
use crate::split::{Split, SplitOptions};

/// How long a restarted enclave may take to become Ready, or to show a reason.
const DEADLINE: Duration = Duration::from_secs(90);

/// The mock NSM's PCR0 (no `--mock-pcr`), hex: the image the custody key releases to.
fn mock_pcr0_hex() -> String {
    hex::encode(&keyward_attestation::mock::default_pcrs()[&0])
}

/// The custody key's attestation policy: release only to a Recipient with this PCR0.
async fn set_custody_policy(custody: &Keyward, key_id: &str, pcr0_hex: &str) {
    let body = json!({ "KeyId": key_id, "RequireRecipient": true, "AllowedPCRs": { "0": [pcr0_hex] } });
    let response = call_as(custody, &custody.creds, "Keyward.UpdateKeyAttestationPolicy", &body).await;
    assert_eq!(
        response.status,
        200,
        "UpdateKeyAttestationPolicy: {}",
        String::from_utf8_lossy(&response.body)
    );
}

/// The node's attestation documents must chain to a root the custody
/// instance trusts: both use the custody instance's mock root.
fn share_mock_root(custody_data: &Path, node_data: &Path) {
    let from = custody_data.join("mock-attestation");
    let to = node_data.join("mock-attestation");
    std::fs::create_dir_all(&to).expect("mock-attestation dir");
    for entry in std::fs::read_dir(&from).expect("custody mock-attestation") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("file name"))).expect("copy the mock root");
    }
}

/// A signed `ListKeys` to `node`, trusting the CA the enclave serves now
/// (while Sealed an in-memory one, from the admin `/ca.pem`).
async fn list_keys_now(node: &Keyward) -> Option<RawResponse> {
    let ca = node.admin_get("/ca.pem").await;
    if ca.status != 200 {
        return None;
    }
    let ca_pem = String::from_utf8(ca.body).ok()?;
    let body = b"{}";
    let mut headers = api_headers(&node.addr, "TrentService.ListKeys");
    sign_headers(&mut headers, &node.addr, body, &node.creds, node.now());
    let config = keyward_test_support::tls::client_config(&ca_pem);
    let exchange = async {
        let stream = keyward_test_support::tls::connect(&node.addr, config).await?;
        exchange(stream, "POST", "/", &headers, body).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.ok()?.ok()
}

/// Polls until the node's API answers 503 with a message containing every
/// one of `needles` (the enclave's sealed reason); returns that message.
async fn wait_sealed_with(node: &Keyward, needles: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last = String::new();
    loop {
        tick.tick().await;
        if let Some(response) = list_keys_now(node).await {
            last = format!("HTTP {}: {}", response.status, String::from_utf8_lossy(&response.body));
            if response.status == 503 {
                let message = response.json()["message"].as_str().unwrap_or_default().to_string();
                assert_eq!(
                    response.error_type().as_deref(),
                    Some("ServiceUnavailableException"),
                    "{last}"
                );
                if needles.iter().all(|n| message.contains(n)) {
                    return message;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the node did not answer 503 with {needles:?} within {DEADLINE:?}; last answer: {last}"
        );
    }
}

/// Polls until one of `sandbox`'s stderr logs has a line containing every one of `needles`.
async fn wait_logged(sandbox: &Sandbox, needles: &[&str]) {
    let deadline = Instant::now() + DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let found = sandbox.log_files().iter().any(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} within {DEADLINE:?}"
        );
    }
}

/// SIGKILLs the node's enclave and waits for the launcher to start a new one.
async fn kill_enclave(node: &mut Keyward) {
    let old = node.enclave_pid;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status();
    let new = node.wait_for_enclave_restart(DEADLINE).await;
    assert_ne!(new, old, "the launcher must start a new enclave process");
}

/// The whole lifecycle with two real `keyward dev` processes: genesis
/// through the custody instance, a key and a ciphertext, an enclave killed
/// and restarted that unseals by the custody service alone (no dev
/// custodian anywhere) and decrypts the old ciphertext; then the custody
/// key's policy names another PCR0 → the next restart stays Sealed
/// (`/healthz` 503, the API's 503 message and the log give the service's
/// AccessDeniedException); then the custody service is gone → Sealed, the
/// reason says the host cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_keeps_its_root_with_a_second_keyward_and_stays_sealed_when_refused_or_unreachable() {
    // The custody service: a plain `keyward dev`, with a custody key that
    // releases only to our image's PCR0.
    let mut custody_sandbox = Sandbox::new();
    let mut custody = custody_sandbox.start().await;
    let custody_key = create_key(&custody.client(), "root custody of another Keyward").await;
    let custody_arn = Keyward::key_arn(&custody_key);
    set_custody_policy(&custody, &custody_key, &mock_pcr0_hex()).await;

    // The node: its root kept by the custody service.
    let mut sandbox = Sandbox::new();
    share_mock_root(&custody.data_dir, &sandbox.data_dir());
    let custody_ca = custody.data_dir.join("tls").join("ca.pem");
    sandbox.extra_args.extend([
        "--custody".to_string(),
        "kms".to_string(),
        "--custody-key".to_string(),
        custody_arn.clone(),
        "--custody-endpoint".to_string(),
        custody.url.clone(),
        "--custody-ca".to_string(),
        custody_ca.display().to_string(),
        "--custody-credentials".to_string(),
        "env".to_string(),
    ]);
    sandbox.extra_env.extend([
        ("AWS_ACCESS_KEY_ID".to_string(), custody.creds.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), custody.creds.secret.clone()),
    ]);
    let mut node = sandbox.start().await;
    let genesis_line = node
        .stdout_lines()
        .into_iter()
        .find(|line| line.starts_with("custody key service: genesis of deployment"));
    assert!(
        genesis_line.is_some_and(|line| line.contains(&custody_arn)),
        "no genesis through the custody key: {:?}",
        node.stdout_lines()
    );
    assert!(
        !sandbox.dev_custodian_dir().exists(),
        "a dev custodian was made although the custody key service keeps the root"
    );

    let kms = node.client();
    let key_id = create_key(&kms, "kept across restarts by the custody service").await;
    let plaintext = b"decrypts after the enclave restarts".to_vec();
    let ciphertext = encrypt(&kms, &key_id, &plaintext, None).await;

    // Restart: the enclave unseals through the custody service by itself.
    kill_enclave(&mut node).await;
    node.wait_healthy(DEADLINE).await;
    assert_eq!(
        decrypt(&node.client(), Some(&key_id), &ciphertext, None).await,
        plaintext
    );
    wait_logged(&sandbox, &["unsealed by the custody key service"]).await;

    // The custody key now releases only to another image: Sealed, with the reason.
    set_custody_policy(&custody, &custody_key, &"ab".repeat(48)).await;
    kill_enclave(&mut node).await;
    let refused = wait_sealed_with(&node, &["AccessDeniedException", "PCR0"]).await;
    assert!(refused.contains("custody key service"), "{refused}");
    assert_eq!(node.healthz().await, 503, "/healthz while the custody service refuses");
    let healthz = node.admin_get("/healthz").await;
    assert_eq!(String::from_utf8_lossy(&healthz.body).trim(), "sealed");
    wait_logged(&sandbox, &["custody key service", "AccessDeniedException"]).await;

    // The custody service is gone (its policy would allow us again): Sealed,
    // the reason says the host cannot connect to it.
    set_custody_policy(&custody, &custody_key, &mock_pcr0_hex()).await;
    custody.stop();
    kill_enclave(&mut node).await;
    let target = custody.addr.clone();
    let unreachable = wait_sealed_with(&node, &["cannot connect", &target]).await;
    assert!(unreachable.contains("custody key service"), "{unreachable}");
    assert_eq!(node.healthz().await, 503, "/healthz while the custody service is gone");
    wait_logged(&sandbox, &["custody key service", "cannot connect"]).await;
    drop(custody_sandbox);
}

/// A `--custody kms` node without the credential that signs its calls is
/// refused by the launcher at once (not a crash-looping enclave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_dev_with_kms_custody_and_no_credential_stops_with_the_reason() {
    let sandbox = Sandbox::new();
    let ca = sandbox.data_dir().join("custody-ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n").expect("write CA");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(sandbox.data_dir())
        .args([
            "--custody",
            "kms",
            "--custody-key",
            "arn:aws:kms:us-east-1:111122223333:key/k",
            "--custody-endpoint",
            "https://127.0.0.1:9",
            "--custody-ca",
        ])
        .arg(&ca)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keyward dev");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
}

/// Genesis of a `--custody kms` enclave by `kmsctl init --key-service`, the
/// nitro-style path where the launcher does not run genesis: `keyward
/// enclave --custody kms …` and `keyward proxy --custody-endpoint …` as
/// separate processes ([`Split`]), a second `keyward dev` as the custody key
/// service. A Shamir genesis (custodians) sent to it is refused saying what
/// to run and writes nothing; `kmsctl init --key-service --operator-key`
/// then writes the operator credential and the root commitment (no shares);
/// `kmsctl operator credential` opens the credential, which lists and
/// creates tenants, and `kmsctl audit verify` accepts the operator's chain
/// under the written root commitment. A second genesis is refused. A
/// killed enclave then unseals through the key service by itself and the
/// credential still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_init_key_service_runs_genesis_of_a_custody_kms_enclave_and_the_operator_credential_works() {
    let work = tempfile::tempdir().expect("temp dir");
    let work = work.path();

    // The custody service, with a key that releases only to our image's PCR0.
    let mut custody_sandbox = Sandbox::new();
    let custody = custody_sandbox.start().await;
    let custody_key = create_key(&custody.client(), "root custody of a kmsctl genesis").await;
    let custody_arn = Keyward::key_arn(&custody_key);
    set_custody_policy(&custody, &custody_key, &mock_pcr0_hex()).await;

    // Our enclave and proxy, started separately: nothing runs genesis but kmsctl.
    let custody_ca = custody.data_dir.join("tls").join("ca.pem");
    let options = SplitOptions {
        enclave_args: vec![
            "--custody=kms".into(),
            format!("--custody-key={custody_arn}"),
            format!("--custody-endpoint={}", custody.url),
            format!("--custody-ca={}", custody_ca.display()),
            "--custody-credentials=env".into(),
        ],
        enclave_env: vec![
            ("AWS_ACCESS_KEY_ID".into(), custody.creds.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), custody.creds.secret.clone()),
        ],
        proxy_args: vec![format!("--custody-endpoint={}", custody.url)],
        mock_attestation_from: Some(custody.data_dir.join("mock-attestation")),
    };
    let mut split = Split::start_sealed_with(options).await;
    assert_eq!(split.healthz().await, (503, "sealed".to_string()));
    let operator = keygen(work, "operator");
    let alice = keygen(work, "alice");

    // Custodians for a key-service enclave: refused by the enclave, nothing written.
    let wrong = work.join("wrong");
    let out = kmsctl(
        &split,
        work,
        &[
            "init",
            "--custodian",
            &file(&alice, ".pub"),
            "--threshold",
            "1",
            "--operator-key",
            &file(&operator, ".pub"),
            "--out",
            &wrong.display().to_string(),
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        stderr.contains("--custody kms") && stderr.contains("kmsctl init --key-service"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&wrong).map(|d| d.count()).unwrap_or(0),
        0,
        "a refused genesis wrote files"
    );
    assert_eq!(split.healthz().await, (503, "sealed".to_string()));

    // The key-service genesis.
    let genesis = work.join("genesis");
    let init_args = [
        "init",
        "--key-service",
        "--operator-key",
        &file(&operator, ".pub"),
        "--out",
        &genesis.display().to_string(),
    ];
    let stdout = succeeded("kmsctl init --key-service", &kmsctl(&split, work, &init_args));
    let deployment = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployment"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no deployment line: {stdout}"));
    assert_eq!(deployment.len(), 32, "{stdout}");
    assert!(stdout.contains("the custody key service"), "{stdout}");
    assert!(stdout.contains("state Ready"), "{stdout}");
    let mut written: Vec<String> = std::fs::read_dir(&genesis)
        .expect("the genesis dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["operator.credential", "root-commitment.pem"], "{stdout}");

    // The operator opens the credential locally; it works.
    let out = kmsctl_offline(&[
        "operator",
        "credential",
        "--package",
        &genesis.join("operator.credential").display().to_string(),
        "--key",
        &file(&operator, ".key"),
    ]);
    let stdout = succeeded("operator credential", &out);
    assert!(stdout.contains(&format!("deployment {deployment}")), "{stdout}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name}: {stdout}"))
            .to_owned()
    };
    let (operator_id, operator_secret) = (field("AWS_ACCESS_KEY_ID"), field("AWS_SECRET_ACCESS_KEY"));
    assert_ne!(
        operator_id, split.operator.access_key_id,
        "not the environment's dev operator"
    );
    split.await_ready_ca().await;
    assert_eq!(split.healthz().await, (200, "ok".to_string()));
    // A second genesis is refused (into a fresh dir: the files are not in the way; the
    // Ready enclave serves its persistent CA now).
    let again = work.join("again");
    let mut second_args = init_args;
    let again_arg = again.display().to_string();
    second_args[5] = &again_arg;
    let second = kmsctl(&split, work, &second_args);
    assert_eq!(second.status.code(), Some(1), "{:?}", text(&second));
    assert!(text(&second).1.contains("already initialised"), "{:?}", text(&second));

    let operator_client = keyward_sdk::Client::new(&split.url, "us-east-1", &operator_id, &operator_secret)
        .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(split.ca_pem.clone())))
        .expect("operator client");
    let created = operator_client
        .create_tenant("444455556666")
        .await
        .expect("CreateTenant with the operator credential from genesis");
    assert_eq!(created.tenant_id, "444455556666");
    let tenants = operator_client
        .list_tenants()
        .await
        .expect("ListTenants with the operator credential from genesis");
    assert!(tenants.iter().any(|t| t.tenant_id == "444455556666"), "{tenants:?}");

    // The root commitment written is the audit key: the operator's chain verifies under it.
    let ca = work.join("ready-ca.pem");
    std::fs::write(&ca, &split.ca_pem).expect("write the CA");
    let out = std::process::Command::new(crate::audit::kmsctl_path())
        .arg("--endpoint")
        .arg(&split.url)
        .arg("--ca-bundle")
        .arg(&ca)
        .args(["audit", "verify", "--public-key"])
        .arg(genesis.join("root-commitment.pem"))
        .env("AWS_ACCESS_KEY_ID", &operator_id)
        .env("AWS_SECRET_ACCESS_KEY", &operator_secret)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("KEYWARD_ENDPOINT")
        .output()
        .expect("run kmsctl audit verify");
    succeeded("kmsctl audit verify --public-key root-commitment.pem", &out);

    // The custody kmsctl created lasts: a killed enclave unseals through the
    // key service by itself, and the operator credential still works.
    split.kill9_and_restart_self_unsealing_enclave().await;
    let operator_client = keyward_sdk::Client::new(&split.url, "us-east-1", &operator_id, &operator_secret)
        .and_then(|c| c.with_tls(keyward_sdk::TlsOptions::default().with_ca_bundle(split.ca_pem.clone())))
        .expect("operator client");
    let tenants = operator_client
        .list_tenants()
        .await
        .expect("ListTenants after the enclave restarted");
    assert!(tenants.iter().any(|t| t.tenant_id == "444455556666"), "{tenants:?}");
    let restarted_log = split.logs().pop().map(|(_, log)| log).unwrap_or_default();
    assert!(
        restarted_log.contains("unsealed by the custody key service"),
        "{restarted_log}"
    );
    drop(split);
    drop(custody);
    drop(custody_sandbox);
}
