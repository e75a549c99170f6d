//! `kmsctl`: administer a Keyward KMS from the command line — tenants,
//! access keys, the audit log (listing and verification), and key policy
//! modules (WebAssembly, `policies/ABI.md`).
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
//! Exit codes: 0 success, 1 service or verification failure, 2 usage error.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Parser, Subcommand};
use keyward_sdk::audit::{self, AuditError, AuditRecord};
use keyward_sdk::{Client, Error, Role};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(
    name = "kmsctl",
    version,
    about = "Administer a Keyward KMS: tenants, access keys, the audit log and key policy modules.",
    after_help = "Credentials are read from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.\n\
                  Exit codes: 0 success, 1 service error, invalid audit chain or unexpected policy decision, \
                  2 usage error."
)]
struct Cli {
    /// Keyward endpoint.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_ENDPOINT",
        default_value = "http://127.0.0.1:7800"
    )]
    endpoint: String,
    /// SigV4 signing region.
    #[arg(long, global = true, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Subcommand)]
enum KeyCommand {
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
enum TenantCommand {
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
enum AccessKeyCommand {
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
enum AuditCommand {
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
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
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
enum Expectation {
    Allow,
    Deny,
}

/// Why kmsctl stops with a non-zero code.
enum Failure {
    /// Exit 2.
    Usage(String),
    /// Exit 1.
    Service(Error),
    /// Exit 1.
    Invalid(AuditError),
    /// Exit 1: a policy answer other than expected, or a response that does
    /// not match what was sent.
    Mismatch(String),
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
        Err(Failure::Mismatch(message)) => {
            eprintln!("kmsctl: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let credential = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Failure::Usage(format!("{name} is not set (credentials come from the environment)")))
    };
    let access_key_id = credential("AWS_ACCESS_KEY_ID")?;
    let secret = keyward_sdk::Secret::new(credential("AWS_SECRET_ACCESS_KEY")?);
    let client = Client::new(&cli.endpoint, &cli.region, &access_key_id, secret.expose()).map_err(|e| match e {
        Error::InvalidEndpoint { .. } | Error::Request(_) => Failure::Usage(e.to_string()),
        other => Failure::Service(other),
    })?;
    drop(secret);

    // Read a pinned key before any network call, so a bad file is a usage error.
    let pinned_key = match &cli.command {
        Command::Audit(AuditCommand::Verify { public_key: Some(path) }) => {
            let bytes = std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            let der =
                audit::public_key_spki_der(&bytes).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            Some(der)
        }
        _ => None,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Service(Error::Transport(format!("starting the runtime: {e}"))))?;
    runtime.block_on(execute(&client, cli.command, pinned_key))
}

async fn execute(client: &Client, command: Command, pinned_key: Option<Vec<u8>>) -> Result<(), Failure> {
    match command {
        Command::Tenant(TenantCommand::Create { id }) => {
            let created = client.create_tenant(&id).await?;
            println!("TenantId        {}", created.tenant_id);
            println!("AccessKeyId     {}", created.access_key_id);
            println!("SecretAccessKey {}", created.secret_access_key.expose());
            eprintln!("The secret access key is shown only this once: store it now.");
        }
        Command::Tenant(TenantCommand::List) => {
            for t in client.list_tenants().await? {
                let state = if t.enabled { "enabled" } else { "disabled" };
                println!("{}\t{state}\t{}", clean(&t.tenant_id), epoch_seconds(t.creation_date));
            }
        }
        Command::Tenant(TenantCommand::Disable { id }) => {
            client.disable_tenant(&id).await?;
            println!("tenant {id} disabled");
        }
        Command::Tenant(TenantCommand::Enable { id }) => {
            client.enable_tenant(&id).await?;
            println!("tenant {id} enabled");
        }
        Command::AccessKey(AccessKeyCommand::Create { role }) => {
            let created = client.create_access_key(role).await?;
            println!("AccessKeyId     {}", created.access_key_id);
            println!("SecretAccessKey {}", created.secret_access_key.expose());
            println!("Role            {}", created.role);
            eprintln!("The secret access key is shown only this once: store it now.");
        }
        Command::AccessKey(AccessKeyCommand::List) => {
            for k in client.list_access_keys().await? {
                println!(
                    "{}\t{}\t{}",
                    clean(&k.access_key_id),
                    clean(&k.roles.join(",")),
                    epoch_seconds(k.creation_date)
                );
            }
        }
        Command::AccessKey(AccessKeyCommand::Delete { id }) => {
            client.delete_access_key(&id).await?;
            println!("access key {id} deleted");
        }
        Command::Audit(AuditCommand::List { start, end }) => {
            for record in client.audit_records(start, end).await? {
                println!("{}", record_line(&record));
            }
        }
        Command::Audit(AuditCommand::Verify { .. }) => {
            let chain = client.fetch_audit_chain().await?;
            let key = match pinned_key {
                Some(pinned) => {
                    if pinned != chain.audit_public_key {
                        eprintln!("note: the service reports an AuditPublicKey other than --public-key");
                    }
                    pinned
                }
                None => {
                    eprintln!(
                        "note: no --public-key given: verifying against the AuditPublicKey in the service's \
                         response, which the host relays; pin the key with --public-key to also detect a host \
                         that replaces key and chain together"
                    );
                    chain.audit_public_key.clone()
                }
            };
            let verified = chain.verify_with(&key).map_err(Failure::Invalid)?;
            println!(
                "audit chain OK: {} {} records, head {}",
                clean(&verified.chain),
                verified.records,
                verified.head_hash
            );
        }
        Command::Policy(command) => policy(client, command).await?,
        Command::Key(KeyCommand::Import {
            key_id,
            file,
            expected_pcrs,
            attestation_root,
            valid_to,
        }) => {
            import_key(
                client,
                &key_id,
                &file,
                &expected_pcrs,
                attestation_root.as_deref(),
                valid_to.as_deref(),
            )
            .await?
        }
    }
    Ok(())
}

// --- BYOK ---

async fn import_key(
    client: &Client,
    key_id: &str,
    file: &std::path::Path,
    expected_pcrs: &[String],
    attestation_root: Option<&std::path::Path>,
    valid_to: Option<&str>,
) -> Result<(), Failure> {
    use keyward_sdk::attestation::TrustAnchor;
    use keyward_sdk::import::Expiry;
    let usage = |what: String| Failure::Usage(what);
    let material = zeroize::Zeroizing::new(std::fs::read(file).map_err(|e| usage(format!("{}: {e}", file.display())))?);
    let mut pcrs = std::collections::BTreeMap::new();
    for pcr in expected_pcrs {
        let (index, value) = pcr
            .split_once('=')
            .ok_or_else(|| usage(format!("--expected-pcr {pcr}: expected INDEX=HEX")))?;
        let index: u8 = index
            .parse()
            .map_err(|_| usage(format!("--expected-pcr {pcr}: the index is not a number")))?;
        let value = hex::decode(value).map_err(|_| usage(format!("--expected-pcr {pcr}: the value is not hex")))?;
        pcrs.insert(index, value);
    }
    let anchor = match attestation_root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
            TrustAnchor::from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))?
        }
        None => TrustAnchor::aws_nitro_root().map_err(|e| usage(format!("the AWS Nitro root: {e}")))?,
    };
    let expiry = match valid_to {
        None => Expiry::Never,
        Some(text) => {
            let at = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|e| usage(format!("--valid-to {text}: not RFC 3339: {e}")))?;
            Expiry::At(at.unix_timestamp())
        }
    };
    let arn = client
        .import_key(key_id, &material, anchor, &pcrs, expiry)
        .await
        .map_err(|e| match e {
            keyward_sdk::import::ImportError::Client(e) => Failure::Service(e),
            other => Failure::Mismatch(other.to_string()),
        })?;
    println!("key material imported into {arn} (wrapping key attested by the enclave)");
    Ok(())
}

// --- policy modules ---

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TestPolicyResponse {
    allow: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    module_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModuleResponse {
    #[serde(default)]
    key_id: Option<String>,
    module_sha256: String,
    /// Base64 (GetKeyPolicyModule only).
    #[serde(default)]
    module: Option<String>,
}

/// A policy module read from disk, with its SHA-256 (lowercase hex).
struct ModuleFile {
    base64: String,
    sha256: String,
}

/// Reads `path`; a missing or empty file is a usage error.
fn read_module(path: &std::path::Path) -> Result<ModuleFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(Failure::Usage(format!("{}: empty file", path.display())));
    }
    Ok(ModuleFile {
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        sha256: hex::encode(Sha256::digest(&bytes)),
    })
}

/// The service's ModuleSha256 must be that of the module sent: the response
/// crosses the untrusted host.
fn check_sha256(sent: &ModuleFile, reported: &str) -> Result<(), Failure> {
    if reported.eq_ignore_ascii_case(&sent.sha256) {
        Ok(())
    } else {
        Err(Failure::Mismatch(format!(
            "the service reports ModuleSha256 {} but the module's SHA-256 is {}",
            clean(reported),
            sent.sha256
        )))
    }
}

async fn policy(client: &Client, command: PolicyCommand) -> Result<(), Failure> {
    match command {
        PolicyCommand::Test {
            module,
            context,
            expect,
        } => {
            // Both files are read before any network call: a bad file is a usage error.
            let wasm = read_module(&module)?;
            let text =
                std::fs::read_to_string(&context).map_err(|e| Failure::Usage(format!("{}: {e}", context.display())))?;
            let context_json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Failure::Usage(format!("{}: not JSON: {e}", context.display())))?;
            if !context_json.is_object() {
                return Err(Failure::Usage(format!("{}: not a JSON object", context.display())));
            }
            let body = json!({ "Module": wasm.base64, "Context": context_json });
            let decision: TestPolicyResponse = client.call("Keyward.TestPolicy", &body).await?;
            println!("Allow           {}", decision.allow);
            println!("Reason          {}", clean(&decision.reason));
            if let Some(sha) = &decision.module_sha256 {
                println!("ModuleSha256    {}", clean(sha));
                check_sha256(&wasm, sha)?;
            }
            if let Some(expected) = expect
                && (expected == Expectation::Allow) != decision.allow
            {
                let (want, got) = if decision.allow {
                    ("deny", "allow")
                } else {
                    ("allow", "deny")
                };
                return Err(Failure::Mismatch(format!("expected {want}, the policy answered {got}")));
            }
        }
        PolicyCommand::Put { key_id, module } => {
            let wasm = read_module(&module)?;
            let body = json!({ "KeyId": key_id, "Module": wasm.base64 });
            let put: ModuleResponse = client.call("Keyward.PutKeyPolicyModule", &body).await?;
            if let Some(key) = &put.key_id {
                println!("KeyId           {}", clean(key));
            }
            println!("ModuleSha256    {}", clean(&put.module_sha256));
            check_sha256(&wasm, &put.module_sha256)?;
        }
        PolicyCommand::Get { key_id, output } => {
            let got: ModuleResponse = client
                .call("Keyward.GetKeyPolicyModule", &json!({ "KeyId": key_id }))
                .await?;
            if let Some(key) = &got.key_id {
                println!("KeyId           {}", clean(key));
            }
            println!("ModuleSha256    {}", clean(&got.module_sha256));
            if let Some(path) = output {
                let bytes = got
                    .module
                    .as_deref()
                    .map(|m| base64::engine::general_purpose::STANDARD.decode(m))
                    .transpose()
                    .map_err(|e| {
                        Failure::Service(Error::Decode {
                            operation: "Keyward.GetKeyPolicyModule".to_owned(),
                            reason: format!("Module is not base64: {e}"),
                        })
                    })?
                    .ok_or_else(|| {
                        Failure::Service(Error::Decode {
                            operation: "Keyward.GetKeyPolicyModule".to_owned(),
                            reason: "the response has no Module".to_owned(),
                        })
                    })?;
                let sha = hex::encode(Sha256::digest(&bytes));
                if !got.module_sha256.eq_ignore_ascii_case(&sha) {
                    return Err(Failure::Mismatch(format!(
                        "the module received has SHA-256 {sha}, not the ModuleSha256 reported; not saved"
                    )));
                }
                std::fs::write(&path, &bytes).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                eprintln!("module saved to {}", path.display());
            }
        }
        PolicyCommand::Delete { key_id } => {
            let _: serde_json::Value = client
                .call("Keyward.DeleteKeyPolicyModule", &json!({ "KeyId": key_id }))
                .await?;
            println!("policy module of key {key_id} deleted");
        }
        PolicyCommand::PutTenant { module } => {
            let wasm = read_module(&module)?;
            let put: ModuleResponse = client
                .call("Keyward.PutTenantPolicyModule", &json!({ "Module": wasm.base64 }))
                .await?;
            println!("ModuleSha256    {}", clean(&put.module_sha256));
            check_sha256(&wasm, &put.module_sha256)?;
        }
        PolicyCommand::DeleteTenant => {
            let _: serde_json::Value = client.call("Keyward.DeleteTenantPolicyModule", &json!({})).await?;
            println!("tenant default policy module deleted");
        }
    }
    Ok(())
}

/// One tab-separated line: sequence, time, chain, decision, operation,
/// access key, role, key ARN, policy module, reason (`-` when empty).
fn record_line(r: &AuditRecord) -> String {
    if r.corrupt {
        return format!("{}\tCORRUPT", r.sequence);
    }
    fn field(s: &str) -> Cow<'_, str> {
        if s.is_empty() { Cow::Borrowed("-") } else { clean(s) }
    }
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        r.sequence,
        epoch_millis(r.time),
        field(&r.chain),
        field(&r.decision),
        field(&r.operation),
        field(&r.access_key_id),
        field(&r.role),
        field(&r.key_arn),
        field(&r.policy_module),
        field(&r.reason),
    )
}

/// `s` with control characters (tabs, newlines, terminal escapes) escaped:
/// what the service returns passed through the untrusted host.
fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

fn rfc3339(nanos: i128) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

fn epoch_millis(ms: u64) -> String {
    rfc3339(i128::from(ms) * 1_000_000).unwrap_or_else(|| ms.to_string())
}

fn epoch_seconds(seconds: f64) -> String {
    let nanos = (seconds * 1e9).round();
    if nanos.is_finite() && nanos.abs() < 1e30 {
        rfc3339(nanos as i128).unwrap_or_else(|| seconds.to_string())
    } else {
        seconds.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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

    #[test]
    fn module_files_are_read_and_hashed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.wasm");
        std::fs::write(&path, b"\0asm\x01\0\0\0")?;
        let Ok(module) = read_module(&path) else {
            panic!("readable module");
        };
        assert_eq!(module.base64, "AGFzbQEAAAA=");
        assert_eq!(
            module.sha256,
            "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476"
        );
        assert!(check_sha256(&module, &module.sha256.to_uppercase()).is_ok());
        assert!(matches!(check_sha256(&module, "00"), Err(Failure::Mismatch(_))));
        std::fs::write(&path, b"")?;
        assert!(matches!(read_module(&path), Err(Failure::Usage(_))));
        assert!(matches!(
            read_module(&dir.path().join("missing.wasm")),
            Err(Failure::Usage(_))
        ));
        Ok(())
    }

    #[test]
    fn lines_escape_what_the_host_could_inject() {
        let record = AuditRecord {
            sequence: 3,
            time: 1_700_000_000_123,
            chain: "t".to_owned(),
            decision: "Deny".to_owned(),
            operation: "TrentService.Encrypt".to_owned(),
            reason: "AccessDeniedException: a\tb\n\u{1b}[31mred".to_owned(),
            ..AuditRecord::default()
        };
        let line = record_line(&record);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert_eq!(line.matches('\t').count(), 9, "{line}");
        assert!(
            line.starts_with("3\t2023-11-14T22:13:20.123Z\tt\tDeny\tTrentService.Encrypt\t-\t"),
            "{line}"
        );
        let corrupt = AuditRecord {
            sequence: 4,
            corrupt: true,
            ..AuditRecord::default()
        };
        assert_eq!(record_line(&corrupt), "4\tCORRUPT");
    }

    #[test]
    fn dates() {
        assert_eq!(epoch_seconds(1_700_000_000.0), "2023-11-14T22:13:20Z");
        assert_eq!(epoch_seconds(f64::NAN), "NaN");
    }
}
