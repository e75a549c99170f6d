//! `keyward-enclave`: the enclave process. Parses and validates its
//! configuration, starts logging, and runs [`keyward_enclave::run`].
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(name = "keyward-enclave", version, about = "The Keyward enclave (trusted core).")]
struct Cli {
    #[command(flatten)]
    args: keyward_enclave::Args,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match cli.args.validate(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keyward-enclave: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-enclave: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keyward_enclave::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "enclave failed");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
