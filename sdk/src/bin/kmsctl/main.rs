//! `kmsctl`: administer a Keyward KMS from the command line — root-key
//! custody (custodian keys, genesis, unseal, the operator credential;
//! docs/custody.md), tenants, access keys, the audit log (listing and
//! verification), and key policy modules (WebAssembly, `policies/ABI.md`).
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//! (the custody commands need none: [`custody`]).
//! `--attest-pcr0 HEX` makes every command first verify the enclave's
//! attestation and that the TLS connection ends in it ([`attest`]).
//! Exit codes: 0 success, 1 service or verification failure, 2 usage error.
//!
//! `main.rs` reads the credentials, maps failures to exit codes and dispatches; each command group
//! lives in its own module ([`tenants`], [`audit`], [`policy`], [`keys`]), the command line in
//! [`args`] and the escaping and date formatting of what is printed in [`output`].
#![forbid(unsafe_code)]

mod args;
mod attest;
mod audit;
mod backup;
mod custody;
mod keys;
mod output;
mod policy;
mod tenants;
mod tls;

use std::process::ExitCode;

use clap::Parser as _;
use keyward_sdk::audit::{AuditError, HeadMemory};
use keyward_sdk::{Client, Error};

use args::{AuditCommand, Cli, Command};

/// Why kmsctl stops with a non-zero code.
pub(crate) enum Failure {
    /// Exit 2.
    Usage(String),
    /// Exit 1.
    Service(Error),
    /// Exit 1.
    Invalid(AuditError),
    /// Exit 1: a policy answer other than expected, or a response that does
    /// not match what was sent.
    Mismatch(String),
    /// Exit 1: `--attest-pcr0` refused the endpoint; nothing else was sent.
    Refused(String),
    /// Exit 1: `audit verify --state` saw a rollback or a fork, or could not
    /// write the memory (printed as is).
    Stale(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Service(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("kmsctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Service(e)) => {
            eprintln!("kmsctl: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Invalid(e)) => {
            match e.sequence() {
                Some(sequence) => eprintln!("audit chain INVALID at record {sequence}: {}", e.what()),
                None => eprintln!("kmsctl: {e}"),
            }
            ExitCode::from(1)
        }
        Err(Failure::Stale(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Err(Failure::Mismatch(message)) | Err(Failure::Refused(message)) => {
            eprintln!("kmsctl: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // Restore talks to a store, not to a service: no credentials.
    if let Command::Restore(args) = &cli.command {
        return backup::restore(args);
    }
    match cli.command {
        Command::Custodian(args::CustodianCommand::Keygen { out }) => return custody::keygen(&out),
        Command::Operator(args::OperatorCommand::Credential { package, key }) => {
            return custody::operator_credential(&package, &key);
        }
        Command::Init { .. }
        | Command::Unseal { .. }
        | Command::Custodian(args::CustodianCommand::Checkpoint { .. }) => {
            return run_custody(cli);
        }
        _ => {}
    }
    let credential = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Failure::Usage(format!("{name} is not set (credentials come from the environment)")))
    };
    let access_key_id = credential("AWS_ACCESS_KEY_ID")?;
    let secret = keyward_sdk::Secret::new(credential("AWS_SECRET_ACCESS_KEY")?);
    let usage = |e: Error| match e {
        Error::InvalidEndpoint { .. } | Error::Request(_) => Failure::Usage(e.to_string()),
        other => Failure::Service(other),
    };
    let mut tls = keyward_sdk::TlsOptions::default();
    if let Some(path) = &cli.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| Failure::Usage(format!("--ca-bundle {}: {e}", path.display())))?;
        tls = tls.with_ca_bundle(pem);
    }
    let client = Client::new(&cli.endpoint, &cli.region, &access_key_id, secret.expose())
        .and_then(|client| client.with_tls(tls))
        .map_err(usage)?;
    drop(secret);

    // Read a pinned key and the head memory before any network call, so a
    // bad file is a usage error.
    let (pinned_key, memory) = match &cli.command {
        Command::Audit(AuditCommand::Verify { public_key, state }) => (
            public_key.as_deref().map(audit::read_pinned_key).transpose()?,
            state.as_deref().map(audit::open_memory).transpose()?,
        ),
        _ => (None, None),
    };
    // The same for --attest-pcr0 / --attest-root.
    let attestation = attest::expected(cli.attest_pcr0.as_deref(), cli.attest_root.as_deref())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Service(Error::Transport(format!("starting the runtime: {e}"))))?;
    runtime.block_on(async {
        // With --attest-pcr0, nothing but the attestation request goes out
        // until the endpoint has proved to be the enclave, and every request
        // after it is pinned to the attested TLS key.
        let client = match attestation {
            Some(expected) => attest::attested(&client, expected).await?,
            None => client,
        };
        execute(&client, cli.command, pinned_key, memory).await
    })
}

/// `kmsctl init` and `kmsctl unseal`: unauthenticated calls to a sealed service.
fn run_custody(cli: Cli) -> Result<(), Failure> {
    if cli.attest_pcr0.is_some() || cli.attest_root.is_some() {
        // A sealed service answers nothing but the custody operations, so the attested channel
        // cannot be set up; unseal verifies the enclave itself (--expected-pcr).
        return Err(Failure::Usage(
            "--attest-pcr0/--attest-root do not apply to init and unseal (a sealed service cannot attest its TLS \
             key); unseal verifies the enclave's attestation itself with --expected-pcr"
                .into(),
        ));
    }
    let mut tls = keyward_sdk::TlsOptions::default();
    if let Some(path) = &cli.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| Failure::Usage(format!("--ca-bundle {}: {e}", path.display())))?;
        tls = tls.with_ca_bundle(pem);
    }
    let client = Client::unauthenticated(&cli.endpoint)
        .and_then(|client| client.with_tls(tls))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Service(Error::Transport(format!("starting the runtime: {e}"))))?;
    runtime.block_on(async {
        match cli.command {
            Command::Init {
                custodians,
                threshold,
                key_service,
                operator_key,
                out,
            } => {
                let genesis = match (key_service, threshold) {
                    (true, _) => custody::Genesis::KeyService,
                    (false, Some(threshold)) => custody::Genesis::Shamir {
                        custodians: &custodians,
                        threshold,
                    },
                    (false, None) => {
                        return Err(Failure::Usage(
                            "init needs --custodian FILE.pub ... --threshold M (Shamir custody) or --key-service \
                             (an enclave started with --custody kms)"
                                .into(),
                        ));
                    }
                };
                custody::init(&client, genesis, operator_key.as_deref(), &out).await
            }
            Command::Unseal {
                share,
                key,
                expected_pcrs,
                attestation_root,
                state,
                accept_store_rollback,
            } => {
                let freshness = custody::UnsealFreshness {
                    state: state.as_deref(),
                    accept_store_rollback,
                };
                custody::unseal(
                    &client,
                    &share,
                    &key,
                    &expected_pcrs,
                    attestation_root.as_deref(),
                    freshness,
                )
                .await
            }
            Command::Custodian(args::CustodianCommand::Checkpoint {
                share,
                state,
                accept_store_rollback,
            }) => custody::checkpoint(&client, &share, &state, accept_store_rollback).await,
            _ => Err(Failure::Usage("not a custody command".into())),
        }
    })
}

async fn execute(
    client: &Client,
    command: Command,
    pinned_key: Option<Vec<u8>>,
    memory: Option<HeadMemory>,
) -> Result<(), Failure> {
    match command {
        Command::Tenant(command) => tenants::tenant(client, command).await,
        Command::AccessKey(command) => tenants::access_key(client, command).await,
        Command::Audit(command) => audit::audit(client, command, pinned_key, memory).await,
        Command::Policy(command) => policy::policy(client, command).await,
        Command::Key(command) => keys::key(client, command).await,
        Command::Tls(command) => tls::tls(client, command).await,
        Command::Backup { out } => backup::backup(client, &out).await,
        Command::Restore(_) => Err(Failure::Usage("restore runs without a service".into())),
        Command::Custodian(args::CustodianCommand::Reshare {
            custodians,
            threshold,
            out,
            expect_commitment,
        }) => custody::reshare(client, &custodians, threshold, &out, expect_commitment.as_deref()).await,
        Command::Custodian(_) | Command::Init { .. } | Command::Unseal { .. } | Command::Operator(_) => Err(
            Failure::Usage("custody commands need no credential and are run before this".into()),
        ),
    }
}
