//! `keyward-load soak`'s command line: [`SoakRawArgs`] as clap parses it, [`SoakArgs`] checked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

// (No doc comment: clap would print it in `--help`.)
#[derive(clap::Args, Debug)]
pub(crate) struct SoakRawArgs {
    /// Seconds of load (the final check comes after).
    #[arg(long, default_value_t = 180.0)]
    duration: f64,
    /// Seconds between two SIGKILLs of the enclave process (0: never).
    #[arg(long, default_value_t = 30.0)]
    kill_every: f64,
    /// Seconds between two restarts of the store (0: never). The embedded
    /// store: the `keyward dev` process (the proxy, which owns it) is
    /// SIGKILLed and started again on the same data dir; with
    /// --store-restart-command, that command is run instead.
    #[arg(long, default_value_t = 75.0)]
    store_restart_every: f64,
    /// A shell command that restarts the store (e.g. a PostgreSQL server the
    /// harness controls: `bash .ci/postgres.sh stop-server DIR && bash
    /// .ci/postgres.sh start-server DIR`), run with `sh -c` while the load goes on.
    #[arg(long)]
    store_restart_command: Option<String>,
    /// The store `keyward dev` uses (`--store`): a directory, or
    /// `postgres://USER@HOST:PORT/DB`. Default: the data dir's embedded store.
    #[arg(long, value_name = "PATH|URL")]
    store: Option<String>,
    /// Tenants driving load: the dev tenant plus this many minus one created
    /// through the operator.
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Connections per tenant (one request in flight on each).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Requests per second over all tenants (0: as fast as they are answered).
    /// Paced, so that the set of acknowledged writes the final check reads
    /// back stays proportionate to the duration.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds between two samples of the processes' RSS (`/proc`).
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// Seconds per line of the timeline (requests, errors, p99, RSS).
    #[arg(long, default_value_t = 30.0)]
    report_every: f64,
    /// The `keyward` executable (default: next to this one).
    #[arg(long)]
    keyward_bin: Option<PathBuf>,
    /// The enclave's --memory-budget in MiB (passed to `keyward dev`).
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Keep the temporary data dir and logs (printed at the end).
    #[arg(long)]
    keep: bool,
}

/// The soak's command line, checked.
#[derive(Debug)]
pub(crate) struct SoakArgs {
    pub(crate) duration: Duration,
    pub(crate) kill_every: Option<Duration>,
    pub(crate) store_restart_every: Option<Duration>,
    pub(crate) store_restart_command: Option<String>,
    pub(crate) store: Option<String>,
    pub(crate) tenants: usize,
    pub(crate) concurrency: usize,
    /// Requests per second over all tenants; `None`: unpaced.
    pub(crate) rate: Option<f64>,
    pub(crate) sample_every: Duration,
    pub(crate) report_every: Duration,
    pub(crate) keyward_bin: Option<PathBuf>,
    pub(crate) memory_budget: Option<u64>,
    pub(crate) region: String,
    pub(crate) keep: bool,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) => Ok(d),
        Err(_) => bail!("{flag} must be a number of seconds, 0 or more"),
    }
}

/// `None` for 0 (never).
fn every(flag: &str, value: f64) -> anyhow::Result<Option<Duration>> {
    let d = seconds(flag, value)?;
    Ok((!d.is_zero()).then_some(d))
}

impl SoakRawArgs {
    pub(crate) fn validate(self) -> anyhow::Result<SoakArgs> {
        if !(1..=50).contains(&self.tenants) {
            bail!("--tenants must be 1-50");
        }
        if !(1..=256).contains(&self.concurrency) {
            bail!("--concurrency must be 1-256");
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            bail!("--rate must be a number of requests per second, 0 or more");
        }
        let sample_every = seconds("--sample-every", self.sample_every)?;
        let report_every = seconds("--report-every", self.report_every)?;
        if sample_every < Duration::from_millis(100) || report_every < Duration::from_secs(1) {
            bail!("--sample-every must be at least 0.1 s and --report-every at least 1 s");
        }
        if self.store_restart_command.is_some() && self.store.is_none() {
            bail!("--store-restart-command restarts the store given with --store");
        }
        Ok(SoakArgs {
            duration: seconds("--duration", self.duration)?,
            kill_every: every("--kill-every", self.kill_every)?,
            store_restart_every: every("--store-restart-every", self.store_restart_every)?,
            store_restart_command: self.store_restart_command,
            store: self.store,
            tenants: self.tenants,
            concurrency: self.concurrency,
            rate: (self.rate > 0.0).then_some(self.rate),
            sample_every,
            report_every,
            keyward_bin: self.keyward_bin,
            memory_budget: self.memory_budget,
            region: self.region,
            keep: self.keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        soak: SoakRawArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<SoakArgs> {
        Cli::try_parse_from(std::iter::once("soak").chain(args.iter().copied()))?
            .soak
            .validate()
    }

    #[test]
    fn zero_means_never_and_bad_numbers_are_refused() -> anyhow::Result<()> {
        let args = parse(&["--kill-every", "0", "--store-restart-every", "0", "--rate", "0"])?;
        assert_eq!(
            (args.kill_every, args.store_restart_every, args.rate),
            (None, None, None)
        );
        let defaults = parse(&[])?;
        assert_eq!(defaults.kill_every, Some(Duration::from_secs(30)));
        assert_eq!(defaults.duration, Duration::from_secs(180));
        for bad in [
            &["--duration", "-1"][..],
            &["--kill-every", "NaN"],
            &["--rate", "-5"],
            &["--tenants", "0"],
            &["--concurrency", "0"],
            &["--sample-every", "0"],
            &["--store-restart-command", "true"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        Ok(())
    }
}
