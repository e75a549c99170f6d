//! `keyward`: `keyward dev` starts a complete mock-mode Keyward (enclave child
//! process + host proxy); `keyward enclave` is the enclave process itself.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Keyward: a confidential-computing KMS with the AWS KMS API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mock-mode Keyward for development: enclave child process + proxy.
    Dev {
        /// Address of the AWS KMS JSON endpoint, HTTPS with TLS ending in
        /// the enclave (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7800")]
        listen: SocketAddr,
        /// Address of the proxy's admin listener (`/healthz`, `/metrics`;
        /// plain HTTP, host only).
        #[arg(long, default_value = "127.0.0.1:7801")]
        admin_listen: SocketAddr,
        /// A name the TLS certificate is issued for (repeatable): a DNS name
        /// or an IP address. Default: `localhost` and `127.0.0.1`.
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
        /// Directory for the sealed-record store and the enclave socket.
        #[arg(long, default_value = "./keyward-data")]
        data_dir: PathBuf,
        /// The sealed-record store: a directory for the embedded engine, or
        /// `postgres://USER@HOST:PORT/DB` (nodes started with the same URL
        /// share their keys). Default: `<DATA_DIR>/store`.
        #[arg(long, value_name = "PATH|URL")]
        store: Option<String>,
        /// AWS region the endpoint answers for.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The bootstrap tenant (the AWS account id in ARNs).
        #[arg(long, default_value = "111122223333")]
        tenant: String,
        /// Shift the enclave's clock by this many seconds (for trying out
        /// deletion windows and rotation; clients must sign with shifted time).
        #[arg(long, value_name = "SECONDS", default_value_t = 0, allow_negative_numbers = true)]
        mock_clock_offset: i64,
        /// Requests per second each tenant (and the operator) may make.
        #[arg(long, value_name = "RPS", default_value_t = 10_000)]
        tenant_rate_limit: u32,
        /// Memory the enclave may use, in MiB (passed to the enclave; it sizes
        /// the sandbox pool, module cache, bodies in flight and client streams).
        #[arg(long, value_name = "MIB")]
        memory_budget: Option<u64>,
        /// A PCR value of the mock NSM, `INDEX=HEX` (repeatable).
        #[arg(long = "mock-pcr", value_name = "INDEX=HEX")]
        mock_pcrs: Vec<String>,
        /// The dev custodian's directory: its key (created on first start,
        /// mode 0600) and share package, with which every start unseals the
        /// enclave. Default: `<DATA_DIR>/dev-custodian`. A node started on
        /// another node's `--store` (a cluster) needs that node's
        /// directory. Development only: whoever reads it can unseal.
        #[arg(long, value_name = "DIR")]
        dev_custodian_dir: Option<PathBuf>,
        // Custody of the root by an AWS-KMS-compatible key service instead
        // of the dev custodian (`--custody kms --custody-key ARN
        // --custody-endpoint URL --custody-ca PEM`, credential from
        // `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`): passed to the
        // enclave, and the endpoint to the proxy (docs/custody.md).
        #[command(flatten)]
        custody: keyward_enclave::config::CustodyArgs,
        /// Unseal even if the store is older than the dev custodian's
        /// checkpoint (a rollback of the data dir): audited by the enclave.
        /// Without it such a store stays sealed (docs/custody.md).
        #[arg(long)]
        accept_store_rollback: bool,
    },
    /// Run the enclave process (started by `keyward dev`; rarely run by hand).
    Enclave(keyward_enclave::Args),
    /// Run the host proxy alone, in front of an enclave started separately.
    Proxy(keyward_proxy::cli::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Dev {
            listen,
            admin_listen,
            tls_names,
            data_dir,
            store,
            region,
            tenant,
            mock_clock_offset,
            tenant_rate_limit,
            memory_budget,
            mock_pcrs,
            dev_custodian_dir,
            custody,
            accept_store_rollback,
        } => runtime.block_on(keyward::dev::run(keyward::dev::DevOptions {
            listen,
            admin_listen,
            tls_names,
            data_dir,
            store: store.as_deref().map(keyward_proxy::StoreLocation::parse),
            region,
            tenant,
            mock_clock_offset,
            tenant_rate_limit,
            memory_budget,
            mock_pcrs,
            dev_custodian_dir,
            custody,
            accept_store_rollback,
        })),
        Command::Proxy(args) => match args.validate() {
            Ok(config) => runtime.block_on(keyward_proxy::run(config)).map_err(Into::into),
            Err(e) => {
                eprintln!("keyward proxy: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        Command::Enclave(args) => match args.validate(|name| std::env::var(name).ok()) {
            Ok(config) => runtime.block_on(keyward_enclave::run(config)).map_err(Into::into),
            Err(e) => {
                eprintln!("keyward enclave: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
