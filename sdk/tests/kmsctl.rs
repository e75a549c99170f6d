//! The `kmsctl` binary as a user runs it, without a server: usage and
//! configuration errors. (Its calls against a live service are exercised by
//! the workspace's integration tests, which find this binary next to
//! `keyward` — `cargo test --workspace` builds it for this test.)

use std::process::Command;

fn kmsctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kmsctl"));
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("KEYWARD_ENDPOINT");
    command
}

#[test]
fn help_lists_the_command_groups() {
    let out = kmsctl().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for group in ["tenant", "access-key", "audit", "policy", "key"] {
        assert!(text.contains(group), "--help must mention {group}: {text}");
    }
}

#[test]
fn missing_credentials_is_a_usage_error() {
    let out = kmsctl().args(["tenant", "list"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = kmsctl().arg("no-such-command").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_endpoint_is_a_service_error_not_a_panic() {
    let out = kmsctl()
        .args(["--endpoint", "https://127.0.0.1:9", "tenant", "list"])
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
        .env("AWS_SECRET_ACCESS_KEY", "x".repeat(40))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn attest_pcr0_refuses_an_endpoint_it_cannot_attest() {
    let run = |pcr0: &str| {
        kmsctl()
            .args([
                "--endpoint",
                "https://127.0.0.1:9",
                "--attest-pcr0",
                pcr0,
                "tenant",
                "list",
            ])
            .env_remove("AWS_CA_BUNDLE")
            .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
            .env("AWS_SECRET_ACCESS_KEY", "x".repeat(40))
            .output()
            .expect("runs")
    };
    let out = run(&"ab".repeat(48));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to send anything"), "{stderr}");
    // A PCR0 that is not 48 bytes of hex is a usage error, before any connection.
    let out = run("abcd");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
