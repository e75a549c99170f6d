//! `keyward-load abuse`'s command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

/// Which abuse runs against the victim's Decrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// Unauthenticated requests naming the dev tenant's access key id; the
    /// victim is the dev tenant.
    Flood,
    /// Another tenant keeps the policy sandbox busy: Decrypts of keys guarded
    /// by looping modules, and TestPolicy with 1 MiB modules.
    Neighbour,
}

// (No doc comment: clap would print it in `--help`.)
#[derive(clap::Args, Debug)]
pub(crate) struct AbuseRawArgs {
    /// flood or neighbour.
    #[arg(long)]
    scenario: String,
    /// Connections of the victim's Decrypts (one request in flight on each).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Idle and abused windows, alternately, this many times each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each idle window (and of each neighbour window; a flood
    /// window lasts as long as the flood).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// flood: unauthenticated requests per window.
    #[arg(long, default_value_t = 10_000)]
    flood_requests: usize,
    /// flood: connections sending them.
    #[arg(long, default_value_t = 8)]
    flood_connections: usize,
    /// neighbour: keys of the hog, each guarded by its own looping module.
    #[arg(long, default_value_t = 100)]
    looping_modules: usize,
    /// neighbour: connections Decrypting under the looping modules.
    #[arg(long, default_value_t = 24)]
    hog_connections: usize,
    /// neighbour: connections sending TestPolicy with a 1 MiB looping module.
    #[arg(long, default_value_t = 2)]
    test_policy_connections: usize,
    /// The `keyward` executable (default: next to this one).
    #[arg(long)]
    keyward_bin: Option<PathBuf>,
    /// The enclave's --memory-budget in MiB (passed to `keyward dev`).
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

/// `keyward-load abuse`'s command line, checked.
#[derive(Debug)]
pub(crate) struct AbuseArgs {
    pub(crate) scenario: Scenario,
    pub(crate) concurrency: usize,
    pub(crate) rounds: usize,
    pub(crate) duration: Duration,
    pub(crate) flood_requests: usize,
    pub(crate) flood_connections: usize,
    pub(crate) looping_modules: usize,
    pub(crate) hog_connections: usize,
    pub(crate) test_policy_connections: usize,
    pub(crate) keyward_bin: Option<PathBuf>,
    pub(crate) memory_budget: Option<u64>,
    pub(crate) region: String,
}

impl AbuseRawArgs {
    pub(crate) fn validate(self) -> anyhow::Result<AbuseArgs> {
        let scenario = match self.scenario.as_str() {
            "flood" => Scenario::Flood,
            "neighbour" | "neighbor" => Scenario::Neighbour,
            other => bail!("unknown --scenario {other:?} (flood or neighbour)"),
        };
        let Ok(duration) = Duration::try_from_secs_f64(self.duration) else {
            bail!("--duration must be a number of seconds");
        };
        if duration.is_zero() {
            bail!("--duration must be more than 0");
        }
        for (flag, n) in [
            ("--concurrency", self.concurrency),
            ("--rounds", self.rounds),
            ("--flood-requests", self.flood_requests),
            ("--flood-connections", self.flood_connections),
            ("--looping-modules", self.looping_modules),
            ("--hog-connections", self.hog_connections),
        ] {
            if n == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        Ok(AbuseArgs {
            scenario,
            concurrency: self.concurrency,
            rounds: self.rounds,
            duration,
            flood_requests: self.flood_requests,
            flood_connections: self.flood_connections,
            looping_modules: self.looping_modules,
            hog_connections: self.hog_connections,
            test_policy_connections: self.test_policy_connections,
            keyward_bin: self.keyward_bin,
            memory_budget: self.memory_budget,
            region: self.region,
        })
    }
}
