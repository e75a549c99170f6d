//! The command line: global options ([`Cli`]) and one subcommand enum per command group.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use keyward_sdk::Role;

#[derive(Parser)]
#[command(
    name = "kmsctl",
    version,
    about = "Administer a Keyward KMS: root-key custody (genesis, unseal), tenants, access keys, the audit log and \
             key policy modules.",
    after_help = "Credentials are read from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (not needed by `custodian`, \
                  `init`, `unseal` and `operator`).\n\
                  Exit codes: 0 success, 1 service error, invalid audit chain or unexpected policy decision, \
                  2 usage error."
)]
pub(crate) struct Cli {
    /// Keyward endpoint (HTTPS: TLS ends inside the enclave).
    #[arg(
        long,
        global = true,
        env = "KEYWARD_ENDPOINT",
        default_value = "https://127.0.0.1:7800"
    )]
    pub(crate) endpoint: String,
    /// PEM CA certificates to trust instead of the system's roots (the
    /// deployment's enclave CA: `<data-dir>/tls/ca.pem` in dev). Also read
    /// from AWS_CA_BUNDLE, as the aws CLI does.
    #[arg(long, global = true, env = "AWS_CA_BUNDLE", value_name = "PEM")]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// Before anything else, verify the enclave's attestation: PCR0 must be
    /// this value (96 hex digits), and the TLS connection must end at the
    /// key the document attests. An endpoint that fails gets no other
    /// request (exit 1); every request after it is pinned to that key.
    #[arg(long, global = true, value_name = "HEX")]
    pub(crate) attest_pcr0: Option<String>,
    /// The attestation root certificate (PEM) for --attest-pcr0. Default: the
    /// AWS Nitro Enclaves root. A mock-mode Keyward's is
    /// `<data-dir>/mock-attestation/root.crt.pem`.
    #[arg(long, global = true, value_name = "PEM")]
    pub(crate) attest_root: Option<PathBuf>,
    /// SigV4 signing region.
    #[arg(long, global = true, env = "AWS_REGION", default_value = "us-east-1")]
    pub(crate) region: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Custodian keys (offline; docs/custody.md).
    #[command(subcommand)]
    Custodian(CustodianCommand),
    /// Genesis of a new deployment (the service must be sealed, awaiting
    /// genesis): the enclave creates the root key, splits it M-of-N and
    /// seals each share to its custodian's key; writes
    /// DIR/custodian-<i>.share (and DIR/operator.credential). With
    /// --key-service (an enclave started with --custody kms) the custody
    /// key service generates the root instead and there are no shares.
    /// Writes DIR/root-commitment.pem either way. Nothing written is secret
    /// without the custodians' (operator's) private keys.
    Init {
        /// A custodian's public key file (X25519, PEM); repeat for each,
        /// in order: the first is custodian 1.
        #[arg(
            long = "custodian",
            value_name = "FILE.pub",
            required_unless_present = "key_service",
            conflicts_with = "key_service"
        )]
        custodians: Vec<PathBuf>,
        /// M: how many custodians' shares an unseal needs.
        #[arg(
            long,
            value_name = "M",
            required_unless_present = "key_service",
            conflicts_with = "key_service"
        )]
        threshold: Option<u8>,
        /// Genesis of an enclave whose root a custody key service keeps
        /// (`--custody kms`): no custodians, no threshold; the enclave has
        /// the key service generate the root and release it to it alone.
        /// Refused by an enclave under Shamir custody.
        #[arg(long)]
        key_service: bool,
        /// The operator's public key file (X25519, PEM): the operator's
        /// first credential is sealed to it (required in nitro mode).
        #[arg(long, value_name = "FILE.pub")]
        operator_key: Option<PathBuf>,
        /// Directory for the share packages, the operator credential and
        /// the root commitment (created if missing; existing files are
        /// never overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A custodian's unseal step: verifies the sealed enclave's attestation
    /// (root, --expected-pcr, a fresh nonce, the session binding) and only
    /// then sends the share, sealed to the attested session key. Prints
    /// how many shares the enclave holds and its state.
    Unseal {
        /// The custodian's share package (custodian-<i>.share).
        #[arg(long, value_name = "FILE")]
        share: PathBuf,
        /// The custodian's private key (X25519, PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A PCR the enclave must have, INDEX=HEX (repeat for more; at least one).
        #[arg(long = "expected-pcr", value_name = "INDEX=HEX", required = true)]
        expected_pcrs: Vec<String>,
        /// The attestation root certificate (PEM). Default: the AWS Nitro
        /// Enclaves root. A mock-mode Keyward's is
        /// `<data-dir>/mock-attestation/root.crt.pem`.
        #[arg(long, value_name = "FILE")]
        attestation_root: Option<PathBuf>,
        /// This custodian's checkpoint file (`kmsctl custodian checkpoint
        /// --state`): the newest signed checkpoint it saw is sent with the
        /// share, and the enclave stays sealed if its store is older. Once
        /// Ready, the new checkpoint is recorded in it.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Accept a store older than the checkpoint (a rollback): the
        /// enclave becomes Ready anyway and audits it. Deliberate only.
        #[arg(long)]
        accept_store_rollback: bool,
    },
    /// The operator's side of genesis (offline).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Tenants (operator credentials).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Access keys of the caller's tenant (KeyAdmin credentials).
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
    /// The caller's audit chain (the operator's chain for the operator).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Key policy modules: WebAssembly, ABI v1 (policies/ABI.md).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Keys: import your own key material (BYOK).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The enclave's TLS certificate, operator-CA path (operator credentials).
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Write a backup of the whole store to one file (operator credentials,
    /// a Ready service): the sealed records and the enclave's signed manifest.
    Backup {
        /// The backup file to create (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup into an empty store (no service, no credentials:
    /// run it before starting Keyward on the store). Verifies the manifest's
    /// signature and every record first; a backup that was altered, truncated
    /// or mixed with another is refused naming the first bad record.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup file (`kmsctl backup --out`).
    pub(crate) file: PathBuf,
    /// The data dir to restore into: the embedded store `<DIR>/store`.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    pub(crate) data_dir: Option<PathBuf>,
    /// The store to restore into: `postgres://…` or the embedded store's directory.
    #[arg(long, value_name = "URL|PATH")]
    pub(crate) store: Option<String>,
    /// Refuse the backup unless its root commitment is this audit public key
    /// (PEM or DER SubjectPublicKeyInfo, as pinned for `audit verify`).
    #[arg(long, value_name = "FILE")]
    pub(crate) expect_commitment: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum CustodianCommand {
    /// Generate an X25519 key pair: NAME.key (private, mode 0600, never
    /// overwritten; keep it offline) and NAME.pub (for `kmsctl init
    /// --custodian`). Also used for the operator's key (--operator-key).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
    },
    /// Replace the custodians of a Ready deployment (operator credentials):
    /// the enclave splits its root anew M-of-N for these custodians and
    /// writes DIR/custodian-<i>.share; the old shares no longer unseal it.
    /// M old shares still rebuild the root offline: docs/custody.md,
    /// "Replacing a custodian by re-sharing".
    Reshare {
        /// A new custodian's public key file (X25519, PEM); repeat for
        /// each, in order: the first is custodian 1.
        #[arg(long = "custodian", value_name = "FILE.pub", required = true)]
        custodians: Vec<PathBuf>,
        /// M: how many of the new custodians' shares an unseal needs.
        #[arg(long, value_name = "M")]
        threshold: u8,
        /// Directory for the new share packages (created if missing;
        /// existing files are never overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The deployment's root commitment (the audit public key, PEM or
        /// DER, e.g. genesis's root-commitment.pem): the answer must carry it.
        #[arg(long, value_name = "FILE")]
        expect_commitment: Option<PathBuf>,
    },
    /// Record what the (Ready) service's store is now: its signed
    /// checkpoint (index epochs), verified against the share package's root
    /// commitment, kept in --state if it is not older than the one there.
    /// Run it regularly; `kmsctl unseal --state` sends it back at unseal.
    Checkpoint {
        /// The custodian's share package (names the deployment and the root
        /// commitment the checkpoint must be signed by).
        #[arg(long, value_name = "FILE")]
        share: PathBuf,
        /// The custodian's checkpoint file (created if missing).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Record an older checkpoint too (after a deliberately accepted rollback).
        #[arg(long)]
        accept_store_rollback: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum OperatorCommand {
    /// Open the operator credential genesis sealed to the operator's key;
    /// prints `export AWS_ACCESS_KEY_ID=…` and `export
    /// AWS_SECRET_ACCESS_KEY=…` lines for the operator's environment.
    Credential {
        /// The operator credential package (operator.credential).
        #[arg(long, value_name = "FILE")]
        package: PathBuf,
        /// The operator's private key (X25519, PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum TlsCommand {
    /// Print a PKCS#10 certificate signing request (PEM) for the enclave's
    /// TLS key, for the operator's CA to sign.
    Csr,
    /// Install a certificate chain (PEM, leaf first) for the enclave's TLS
    /// key; new connections get it at once.
    Import {
        /// The chain, PEM, leaf first.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Import key material into a key created with Origin EXTERNAL (KeyAdmin):
    /// fetch import parameters, verify the enclave's attestation of the
    /// wrapping key against --expected-pcr, wrap (RSAES_OAEP_SHA_256,
    /// RSA_4096), import. Nothing is sent unless the attestation verifies.
    Import {
        /// Key id, key ARN, alias name or alias ARN.
        key_id: String,
        /// The key material: a file of 32 raw bytes (e.g. `openssl rand -out FILE 32`).
        file: PathBuf,
        /// A PCR the enclave must have, INDEX=HEX (repeat for more; at least one).
        #[arg(long = "expected-pcr", value_name = "INDEX=HEX", required = true)]
        expected_pcrs: Vec<String>,
        /// The attestation root certificate (PEM). Default: the AWS Nitro
        /// Enclaves root. A mock-mode Keyward's is
        /// `<data-dir>/mock-attestation/root.crt.pem`.
        #[arg(long, value_name = "FILE")]
        attestation_root: Option<PathBuf>,
        /// When the material expires (RFC 3339, at most 365 days ahead).
        /// Default: it does not expire.
        #[arg(long, value_name = "RFC3339")]
        valid_to: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant; prints its first (KeyAdmin) access key, secret included, once.
    Create { id: String },
    /// List all tenants: id, enabled/disabled, creation date.
    List,
    /// Disable a tenant: its requests are refused until enabled again.
    Disable { id: String },
    /// Enable a disabled tenant.
    Enable { id: String },
}

#[derive(Subcommand)]
pub(crate) enum AccessKeyCommand {
    /// Create an access key; prints the secret, once.
    Create {
        /// KeyAdmin or KeyUser.
        #[arg(long)]
        role: Role,
    },
    /// List the tenant's access keys: id, roles, creation date.
    List,
    /// Delete an access key.
    Delete { id: String },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// List audit records, one line each (unverified).
    List {
        /// Only records from this time on (seconds since the epoch).
        #[arg(long, value_name = "EPOCH")]
        start: Option<u64>,
        /// Only records up to this time (seconds since the epoch).
        #[arg(long, value_name = "EPOCH")]
        end: Option<u64>,
    },
    /// Fetch the whole chain and verify every record, link and the signed head.
    Verify {
        /// The enclave's audit public key (SPKI, DER or PEM). Without it the
        /// AuditPublicKey of the response is used, which the host could replace.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Remember the verified head of each chain in FILE (a local file,
        /// created if absent) and fail on a head older than, or forked from,
        /// the one remembered: a rolled-back store. Without it a rollback to
        /// an older signed head cannot be seen.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Run a module on a request context in the enclave's sandbox and print
    /// the decision; nothing is attached.
    Test {
        /// The policy module (.wasm).
        module: PathBuf,
        /// The request context: a JSON object (ABI v1).
        context: PathBuf,
        /// Exit 1 unless the decision is this one.
        #[arg(long, value_name = "allow|deny")]
        expect: Option<Expectation>,
    },
    /// Attach a module to a key, replacing any (KeyAdmin); prints its ModuleSha256.
    Put {
        /// Key id, key ARN, alias name or alias ARN.
        key_id: String,
        /// The policy module (.wasm).
        module: PathBuf,
    },
    /// Show the ModuleSha256 of a key's module.
    Get {
        key_id: String,
        /// Also save the module to FILE.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Detach a key's module (KeyAdmin).
    Delete { key_id: String },
    /// Make a module the tenant's default, evaluated before each key's own
    /// module (KeyAdmin); prints its ModuleSha256.
    PutTenant {
        /// The policy module (.wasm).
        module: PathBuf,
    },
    /// Remove the tenant's default module (KeyAdmin).
    DeleteTenant,
}

/// The decision `kmsctl policy test --expect` requires.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Expectation {
    Allow,
    Deny,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::Parser as _;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "kmsctl",
            "--endpoint",
            "http://h:1",
            "access-key",
            "create",
            "--role",
            "KeyUser",
        ])?;
        assert_eq!(cli.endpoint, "http://h:1");
        assert!(matches!(
            cli.command,
            Command::AccessKey(AccessKeyCommand::Create { role: Role::KeyUser })
        ));
        let cli = Cli::try_parse_from(["kmsctl", "audit", "list", "--start", "10", "--region", "eu-west-1"])?;
        assert_eq!(cli.region, "eu-west-1");
        assert!(matches!(
            cli.command,
            Command::Audit(AuditCommand::List {
                start: Some(10),
                end: None
            })
        ));
        assert!(Cli::try_parse_from(["kmsctl", "access-key", "create", "--role", "Operator"]).is_err());
        assert!(Cli::try_parse_from(["kmsctl", "tenant", "create"]).is_err());
        Ok(())
    }

    #[test]
    fn custody_subcommands_parse() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["kmsctl", "custodian", "keygen", "--out", "alice"])?;
        assert!(
            matches!(cli.command, Command::Custodian(CustodianCommand::Keygen { ref out }) if out.as_os_str() == "alice")
        );
        let cli = Cli::try_parse_from([
            "kmsctl",
            "init",
            "--custodian",
            "a.pub",
            "--custodian",
            "b.pub",
            "--threshold",
            "2",
            "--out",
            "d",
        ])?;
        assert!(
            matches!(cli.command, Command::Init { ref custodians, threshold: Some(2), key_service: false, operator_key: None, .. } if custodians.len() == 2)
        );
        let cli = Cli::try_parse_from([
            "kmsctl",
            "custodian",
            "reshare",
            "--custodian",
            "a.pub",
            "--custodian",
            "d.pub",
            "--threshold",
            "2",
            "--out",
            "new",
        ])?;
        assert!(matches!(
            cli.command,
            Command::Custodian(CustodianCommand::Reshare { ref custodians, threshold: 2, expect_commitment: None, .. })
                if custodians.len() == 2
        ));
        let cli = Cli::try_parse_from([
            "kmsctl",
            "unseal",
            "--share",
            "s",
            "--key",
            "k",
            "--expected-pcr",
            "0=aa",
            "--expected-pcr",
            "1=bb",
        ])?;
        assert!(
            matches!(cli.command, Command::Unseal { ref expected_pcrs, attestation_root: None, state: None, accept_store_rollback: false, .. } if expected_pcrs.len() == 2)
        );
        let cli = Cli::try_parse_from([
            "kmsctl",
            "unseal",
            "--share",
            "s",
            "--key",
            "k",
            "--expected-pcr",
            "0=aa",
            "--state",
            "alice.checkpoint",
            "--accept-store-rollback",
        ])?;
        assert!(
            matches!(cli.command, Command::Unseal { state: Some(ref state), accept_store_rollback: true, .. } if state.as_os_str() == "alice.checkpoint")
        );
        let cli = Cli::try_parse_from([
            "kmsctl",
            "custodian",
            "checkpoint",
            "--share",
            "s",
            "--state",
            "alice.checkpoint",
        ])?;
        assert!(matches!(
            cli.command,
            Command::Custodian(CustodianCommand::Checkpoint {
                accept_store_rollback: false,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["kmsctl", "custodian", "checkpoint", "--share", "s"]).is_err());
        let cli = Cli::try_parse_from(["kmsctl", "operator", "credential", "--package", "p", "--key", "k"])?;
        assert!(matches!(
            cli.command,
            Command::Operator(OperatorCommand::Credential { .. })
        ));
        assert!(Cli::try_parse_from(["kmsctl", "init", "--threshold", "1", "--out", "d"]).is_err());
        assert!(Cli::try_parse_from(["kmsctl", "init", "--custodian", "a.pub", "--out", "d"]).is_err());
        assert!(
            Cli::try_parse_from([
                "kmsctl",
                "init",
                "--custodian",
                "a.pub",
                "--threshold",
                "0x",
                "--out",
                "d"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["kmsctl", "unseal", "--share", "s", "--key", "k"]).is_err());
        Ok(())
    }

    #[test]
    fn init_parses_a_key_service_genesis_and_refuses_mixing_it_with_custodians() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "kmsctl",
            "init",
            "--key-service",
            "--operator-key",
            "operator.pub",
            "--out",
            "genesis",
        ])?;
        assert!(matches!(
            cli.command,
            Command::Init { ref custodians, threshold: None, key_service: true, operator_key: Some(ref op), ref out }
                if custodians.is_empty() && op.as_os_str() == "operator.pub" && out.as_os_str() == "genesis"
        ));
        // Without an operator key too (mock mode; a nitro enclave refuses it).
        let cli = Cli::try_parse_from(["kmsctl", "init", "--key-service", "--out", "d"])?;
        assert!(matches!(
            cli.command,
            Command::Init {
                key_service: true,
                operator_key: None,
                ..
            }
        ));
        // Custodians or a threshold with --key-service: a usage error, never a silent choice.
        for mixed in [
            &["kmsctl", "init", "--key-service", "--custodian", "a.pub", "--out", "d"][..],
            &["kmsctl", "init", "--key-service", "--threshold", "1", "--out", "d"][..],
            &[
                "kmsctl",
                "init",
                "--key-service",
                "--custodian",
                "a.pub",
                "--threshold",
                "1",
                "--out",
                "d",
            ][..],
        ] {
            let e = match Cli::try_parse_from(mixed) {
                Err(e) => e,
                Ok(_) => panic!("{mixed:?} parsed"),
            };
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{mixed:?}: {e}");
        }
        // Neither custodians nor --key-service: which genesis is meant is not guessed.
        let e = match Cli::try_parse_from(["kmsctl", "init", "--operator-key", "op.pub", "--out", "d"]) {
            Err(e) => e,
            Ok(_) => panic!("init without custodians or --key-service parsed"),
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
        // --out is still required.
        assert!(Cli::try_parse_from(["kmsctl", "init", "--key-service"]).is_err());
        Ok(())
    }

    #[test]
    fn policy_subcommands_parse() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["kmsctl", "policy", "test", "p.wasm", "ctx.json", "--expect", "deny"])?;
        assert!(matches!(
            cli.command,
            Command::Policy(PolicyCommand::Test {
                expect: Some(Expectation::Deny),
                ..
            })
        ));
        let cli = Cli::try_parse_from(["kmsctl", "policy", "put", "alias/app", "p.wasm"])?;
        assert!(matches!(cli.command, Command::Policy(PolicyCommand::Put { ref key_id, .. }) if key_id == "alias/app"));
        let cli = Cli::try_parse_from(["kmsctl", "policy", "get", "k", "--output", "out.wasm"])?;
        assert!(matches!(
            cli.command,
            Command::Policy(PolicyCommand::Get { output: Some(_), .. })
        ));
        let cli = Cli::try_parse_from(["kmsctl", "policy", "put-tenant", "p.wasm"])?;
        assert!(matches!(cli.command, Command::Policy(PolicyCommand::PutTenant { .. })));
        let cli = Cli::try_parse_from(["kmsctl", "policy", "delete-tenant"])?;
        assert!(matches!(cli.command, Command::Policy(PolicyCommand::DeleteTenant)));
        let cli = Cli::try_parse_from(["kmsctl", "policy", "delete", "k"])?;
        assert!(matches!(cli.command, Command::Policy(PolicyCommand::Delete { .. })));
        assert!(Cli::try_parse_from(["kmsctl", "policy", "test", "p.wasm"]).is_err());
        assert!(Cli::try_parse_from(["kmsctl", "policy", "test", "p.wasm", "c.json", "--expect", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["kmsctl", "policy", "put", "k"]).is_err());
        Ok(())
    }
}
