//! The command line. [`RawArgs`] is what clap parses; [`Args`] is the validated form the rest of
//! the tool runs on (operations resolved and de-duplicated, counts, sizes and durations checked),
//! so that no later step meets an argument it cannot use. [`Op`] lists the operations it drives.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

use crate::stats::Measured;

// The command line as given. (No doc comment: clap would print it in `--help`.)
#[derive(Parser, Debug)]
#[command(
    name = "keyward-load",
    about = "Load generator for Keyward / AWS-KMS-compatible endpoints, with a TLS echo baseline.",
    args_conflicts_with_subcommands = true
)]
struct RawArgs {
    #[command(subcommand)]
    command: Option<Scenario>,
    /// The endpoint to drive (e.g. https://127.0.0.1:7800); several,
    /// comma-separated, are the nodes of one cluster: the setup runs on the
    /// first, the connections are spread over all of them.
    #[arg(long, value_delimiter = ',', conflicts_with = "spawn")]
    endpoint: Vec<String>,
    /// The CA certificates (PEM) to trust for --endpoint, instead of any
    /// system root (default: the file named by AWS_CA_BUNDLE). With --spawn,
    /// the service's `<data-dir>/tls/ca.pem` is used.
    #[arg(long, conflicts_with_all = ["spawn", "plain_http"])]
    ca_bundle: Option<PathBuf>,
    /// BENCHMARK OF OLD BUILDS ONLY: drive a service that serves plain HTTP
    /// (an http:// endpoint, or --spawn of a `keyward` built before TLS moved
    /// into the enclave) and compare with the former plain-HTTP axum echo.
    /// Keyward itself has no plain-HTTP path.
    #[arg(long)]
    plain_http: bool,
    /// Start `keyward dev` on a temporary data dir and drive it.
    #[arg(long)]
    spawn: bool,
    /// Run only the axum echo baseline (no service).
    #[arg(long, conflicts_with_all = ["endpoint", "spawn"])]
    baseline: bool,
    /// Skip the baseline runs (no ratio is printed).
    #[arg(long)]
    no_baseline: bool,
    /// The `keyward` executable for --spawn (default: next to this one).
    #[arg(long)]
    keyward_bin: Option<PathBuf>,
    /// Operations, comma-separated: generate-data-key, encrypt, decrypt,
    /// decrypt-policy, recipient-decrypt, create-key, mixed (generate-data-key
    /// on half the connections, decrypt on the other half), or all (the first
    /// five).
    #[arg(long, value_delimiter = ',', default_value = "generate-data-key")]
    op: Vec<String>,
    /// Connections (one request in flight on each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    concurrency: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts, per run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Plaintext bytes for encrypt / decrypt (1-4096).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Region to sign for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Before the runs, create this many extra keys (to measure memory and
    /// start-up with a large key set).
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// With --spawn: after the runs, restart the service on the same data dir
    /// and report the time from start to ready.
    #[arg(long)]
    restart: bool,
    /// The enclave's `<data-dir>/mock-attestation` for recipient-decrypt
    /// against --endpoint (with --spawn it is known).
    #[arg(long)]
    mock_attestation_dir: Option<PathBuf>,
    /// decrypt-policy: attach this policy module (.wasm) to its key instead
    /// of the allow-all WAT module (`tests/data/policy_allow_all.wat`). Every
    /// Decrypt then carries the encryption context `{"tenant": <the caller's
    /// tenant>}`, with and without the policy, which is what the
    /// `context-tenant` example requires.
    #[arg(long)]
    policy_module: Option<PathBuf>,
    /// Extra pids whose peak RSS (VmHWM) and CPU time per request to
    /// report, for --endpoint: PID or LABEL=PID (the CPU times of pids with
    /// the same label are added up).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<String>,
    /// As --pid, counting each process with all its descendants (e.g. the
    /// PostgreSQL postmaster and its backends).
    #[arg(long, value_delimiter = ',')]
    pid_tree: Vec<String>,
    /// Instead of load runs: measure N times how long after a DisableKey on
    /// the first --endpoint (once acknowledged) a Decrypt on the second is
    /// refused, the second decrypting back to back before and after.
    #[arg(long, value_name = "N", requires = "endpoint")]
    invalidation: Option<usize>,
    /// Run the whole sequence (every operation at every concurrency) this
    /// many times, interleaved, and report the median of the
    /// decrypt-policy / decrypt ratios: drift of a shared machine then hits
    /// both operations alike.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

// The scenarios that are not a benchmark run. (No doc comment: clap would print it.)
#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// A soak: mixed load from several tenants while the enclave is killed
    /// (SIGKILL) every --kill-every seconds and the store restarted every
    /// --store-restart-every seconds; at the end every acknowledged CreateKey
    /// and Encrypt is checked. Exits non-zero if one was lost.
    Soak(crate::soak::args::SoakRawArgs),
    /// Abuse scenarios (issue 21): a tenant's Decrypt latency idle and under
    /// an unauthenticated flood or a noisy neighbour, as p99 ratios.
    Abuse(crate::abuse::args::AbuseRawArgs),
}

/// What to run: a benchmark (the default), a soak or an abuse scenario.
pub(crate) enum Invocation {
    Bench(Args),
    Soak(crate::soak::args::SoakArgs),
    Abuse(crate::abuse::args::AbuseArgs),
}

/// The command line of a benchmark run, validated.
#[derive(Debug)]
pub(crate) struct Args {
    /// The endpoints to drive (e.g. https://127.0.0.1:7800): the nodes of one
    /// cluster.
    pub(crate) endpoint: Vec<String>,
    /// The CA certificates (PEM) to trust for --endpoint (--ca-bundle, else
    /// the file AWS_CA_BUNDLE names).
    pub(crate) ca_bundle: Option<PathBuf>,
    /// Plain HTTP for the service and the baseline: the "before" benchmark of
    /// builds that served plain HTTP, only.
    pub(crate) plain_http: bool,
    /// Start `keyward dev` on a temporary data dir and drive it.
    pub(crate) spawn: bool,
    /// Run only the axum echo baseline (no service).
    pub(crate) baseline: bool,
    /// Skip the baseline runs (no ratio is printed).
    pub(crate) no_baseline: bool,
    /// The `keyward` executable for --spawn (default: next to this one).
    pub(crate) keyward_bin: Option<PathBuf>,
    /// Operations to run, each once, in the order first given (`all` expanded).
    pub(crate) ops: Vec<Op>,
    /// Connections (one request in flight on each), comma-separated.
    pub(crate) concurrency: Vec<usize>,
    /// Measured seconds per run.
    pub(crate) duration: f64,
    /// Seconds of load before measuring starts, per run.
    pub(crate) warmup: f64,
    /// Plaintext bytes for encrypt / decrypt (1-4096).
    pub(crate) size: usize,
    /// Region to sign for.
    pub(crate) region: String,
    /// Before the runs, create this many extra keys (to measure memory and
    /// start-up with a large key set).
    pub(crate) keys: usize,
    /// With --spawn: after the runs, restart the service on the same data dir
    /// and report the time from start to ready.
    pub(crate) restart: bool,
    /// The enclave's `<data-dir>/mock-attestation` for recipient-decrypt
    /// against --endpoint (with --spawn it is known).
    pub(crate) mock_attestation_dir: Option<PathBuf>,
    /// decrypt-policy: attach this policy module (.wasm) to its key instead
    /// of the allow-all WAT module (`tests/data/policy_allow_all.wat`). Every
    /// Decrypt then carries the encryption context `{"tenant": <the caller's
    /// tenant>}`, with and without the policy, which is what the
    /// `context-tenant` example requires.
    pub(crate) policy_module: Option<PathBuf>,
    /// Extra processes whose peak RSS (VmHWM) and CPU time per request to
    /// report, for --endpoint.
    pub(crate) pid: Vec<Measured>,
    /// --invalidation N: the number of samples.
    pub(crate) invalidation: Option<usize>,
    /// Run the whole sequence (every operation at every concurrency) this
    /// many times, interleaved, and report the median of the
    /// decrypt-policy / decrypt ratios: drift of a shared machine then hits
    /// both operations alike.
    pub(crate) rounds: usize,
}

impl Invocation {
    /// Parses the process's arguments (clap prints usage and exits on a syntax error) and
    /// validates them.
    pub(crate) fn from_env() -> anyhow::Result<Invocation> {
        let mut raw = RawArgs::parse();
        Ok(match raw.command.take() {
            Some(Scenario::Soak(soak)) => Invocation::Soak(soak.validate()?),
            Some(Scenario::Abuse(abuse)) => Invocation::Abuse(abuse.validate()?),
            None => Invocation::Bench(Args::try_from(raw)?),
        })
    }
}

impl TryFrom<RawArgs> for Args {
    type Error = anyhow::Error;

    fn try_from(raw: RawArgs) -> anyhow::Result<Args> {
        let mut ops = Vec::new();
        for s in &raw.op {
            for op in Op::parse(s)? {
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
        }
        if raw.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if raw.concurrency.contains(&0) {
            bail!("--concurrency must be at least 1");
        }
        if !(1..=4096).contains(&raw.size) {
            bail!("--size must be 1-4096");
        }
        if raw.invalidation.is_some_and(|n| n == 0 || raw.endpoint.len() < 2) {
            bail!("--invalidation N needs N >= 1 and two endpoints (--endpoint WRITER,READER)");
        }
        for (flag, seconds) in [("--duration", raw.duration), ("--warmup", raw.warmup)] {
            if Duration::try_from_secs_f64(seconds).is_err() {
                bail!("{flag} must be a number of seconds, 0 or more");
            }
        }
        let RawArgs {
            command: _,
            endpoint,
            ca_bundle,
            plain_http,
            spawn,
            baseline,
            no_baseline,
            keyward_bin,
            op: _,
            concurrency,
            duration,
            warmup,
            size,
            region,
            keys,
            restart,
            mock_attestation_dir,
            policy_module,
            pid,
            pid_tree,
            invalidation,
            rounds,
        } = raw;
        let pid = (pid.iter().map(|p| Measured::parse(p, false)))
            .chain(pid_tree.iter().map(|p| Measured::parse(p, true)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ca_bundle = match (ca_bundle, plain_http || spawn) {
            (Some(path), _) => Some(path),
            (None, false) => std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from),
            (None, true) => None,
        };
        Ok(Args {
            endpoint,
            ca_bundle,
            plain_http,
            spawn,
            baseline,
            no_baseline,
            keyward_bin,
            ops,
            concurrency,
            duration,
            warmup,
            size,
            region,
            keys,
            restart,
            mock_attestation_dir,
            policy_module,
            pid,
            invalidation,
            rounds,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    GenerateDataKey,
    Encrypt,
    Decrypt,
    DecryptPolicy,
    RecipientDecrypt,
    CreateKey,
    Mixed,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::GenerateDataKey,
        Op::Encrypt,
        Op::Decrypt,
        Op::DecryptPolicy,
        Op::RecipientDecrypt,
    ];

    fn parse(s: &str) -> anyhow::Result<Vec<Op>> {
        Ok(match s.trim() {
            "all" => Op::ALL.to_vec(),
            "generate-data-key" => vec![Op::GenerateDataKey],
            "encrypt" => vec![Op::Encrypt],
            "decrypt" => vec![Op::Decrypt],
            "decrypt-policy" => vec![Op::DecryptPolicy],
            "recipient-decrypt" => vec![Op::RecipientDecrypt],
            "create-key" => vec![Op::CreateKey],
            "mixed" => vec![Op::Mixed],
            other => bail!("unknown --op {other:?}"),
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::GenerateDataKey => "generate-data-key",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::DecryptPolicy => "decrypt-policy",
            Op::RecipientDecrypt => "recipient-decrypt",
            Op::CreateKey => "create-key",
            Op::Mixed => "mixed",
        }
    }

    /// The single operations a run of this one sends, spread over the
    /// connections.
    pub(crate) fn parts(self) -> Vec<Op> {
        match self {
            Op::Mixed => vec![Op::GenerateDataKey, Op::Decrypt],
            op => vec![op],
        }
    }

    pub(crate) fn target(self) -> &'static str {
        match self {
            Op::GenerateDataKey | Op::Mixed => "TrentService.GenerateDataKey",
            Op::CreateKey => "TrentService.CreateKey",
            Op::Encrypt => "TrentService.Encrypt",
            Op::Decrypt | Op::DecryptPolicy | Op::RecipientDecrypt => "TrentService.Decrypt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        let raw = RawArgs::try_parse_from(std::iter::once("keyward-load").chain(args.iter().copied()))?;
        Args::try_from(raw)
    }

    #[test]
    fn the_ca_bundle_is_for_endpoints_spoken_to_over_tls() -> anyhow::Result<()> {
        let args = parse(&["--endpoint", "https://127.0.0.1:7800", "--ca-bundle", "ca.pem"])?;
        assert_eq!(args.ca_bundle, Some(PathBuf::from("ca.pem")));
        assert!(!args.plain_http);
        // --spawn finds the service's own ca.pem; plain HTTP has none.
        assert!(parse(&["--spawn", "--ca-bundle", "ca.pem"]).is_err());
        assert!(
            parse(&[
                "--endpoint",
                "http://127.0.0.1:7800",
                "--plain-http",
                "--ca-bundle",
                "ca.pem"
            ])
            .is_err()
        );
        let plain = parse(&["--spawn", "--plain-http"])?;
        assert!(plain.plain_http && plain.ca_bundle.is_none());
        Ok(())
    }

    #[test]
    fn a_cluster_is_several_endpoints_and_invalidation_needs_two() -> anyhow::Result<()> {
        let args = parse(&[
            "--endpoint",
            "https://127.0.0.1:17801,https://127.0.0.1:17802",
            "--op",
            "mixed,create-key",
            "--pid",
            "proxy=10,enclave=11,12",
            "--pid-tree",
            "postgres=13",
        ])?;
        assert_eq!(args.endpoint.len(), 2);
        assert_eq!(args.ops, [Op::Mixed, Op::CreateKey]);
        assert_eq!(Op::Mixed.parts(), [Op::GenerateDataKey, Op::Decrypt]);
        let labels: Vec<(&str, u32, bool)> = args.pid.iter().map(|m| (m.label.as_str(), m.pid, m.tree)).collect();
        assert_eq!(
            labels,
            [
                ("proxy", 10, false),
                ("enclave", 11, false),
                ("pid 12", 12, false),
                ("postgres", 13, true)
            ]
        );
        assert!(parse(&["--pid", "proxy=x"]).is_err());

        let invalidation = parse(&["--endpoint", "https://a:1,https://b:2", "--invalidation", "100"])?;
        assert_eq!(invalidation.invalidation, Some(100));
        assert!(parse(&["--endpoint", "https://a:1", "--invalidation", "100"]).is_err());
        assert!(parse(&["--endpoint", "https://a:1,https://b:2", "--invalidation", "0"]).is_err());
        assert!(parse(&["--invalidation", "5"]).is_err(), "needs endpoints");
        Ok(())
    }
}
