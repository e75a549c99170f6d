//! `keyward-proxy`: the host proxy on its own, in front of an enclave that
//! runs elsewhere (a Nitro Enclave over vsock, or a mock-mode enclave's
//! Unix socket). `keyward dev` runs the same code in one command.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(name = "keyward-proxy", version, about = "The Keyward host proxy (untrusted).")]
struct Cli {
    #[command(flatten)]
    args: keyward_proxy::cli::Args,
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
    let config = match cli.args.validate() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keyward-proxy: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-proxy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keyward_proxy::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
