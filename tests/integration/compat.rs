//! Unmodified AWS clients — boto3, the aws CLI and the AWS Encryption SDK for
//! Python — against the real service over HTTPS, TLS ending in the enclave,
//! with the enclave CA (`<data-dir>/tls/ca.pem`) as their CA bundle
//! (`tests/compat/clients.py`).
//!
//! Where the Python packages are missing the test says so and passes, except
//! under CI (`CI` set), where `.ci/run` installs them and their absence fails.

use std::process::Command;

use crate::harness::Sandbox;

fn python_clients_available() -> bool {
    Command::new("python3")
        .args(["-c", "import boto3, aws_encryption_sdk, cryptography"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("aws")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_python_clients() {
    if !python_clients_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have boto3, awscli and aws-encryption-sdk installed"
        );
        eprintln!(
            "SKIPPED: boto3 / awscli / aws-encryption-sdk not installed (pip install -r tests/compat/requirements.txt)"
        );
        return;
    }
    let mut sb = Sandbox::new();
    let kw = sb.start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/clients.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .env("KEYWARD_ENDPOINT", &kw.url)
        .env("KEYWARD_CA_BUNDLE", kw.data_dir.join("tls").join("ca.pem"))
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", &sb.creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &sb.creds.secret)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all client checks passed"), "{stdout}");
}
