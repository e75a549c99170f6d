//! `--spawn`: a `keyward dev` on a temporary data dir with fresh random credentials, its endpoint
//! (HTTPS trusting the `<data-dir>/tls/ca.pem` it wrote; plain HTTP with `--plain-http`, for old
//! builds), its proxy and enclave pids (read from its output) for the CPU and memory figures, and
//! its restart.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::args::Args;
use crate::client::{Endpoint, Signer};

const READY_MARKER: &str = "Keyward is ready at ";
const ENCLAVE_MARKER: &str = "enclave process started: pid ";

/// A `keyward dev` started on a temporary data dir.
pub(crate) struct Service {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    child: Child,
    pub(crate) endpoint: Endpoint,
    pub(crate) signer: Signer,
    operator: Signer,
    pub(crate) proxy_pid: u32,
    pub(crate) enclave_pid: u32,
}

/// How to start `keyward dev`: the executable, the region, plain HTTP (old
/// builds only) and extra arguments.
#[derive(Clone)]
pub(crate) struct Launch {
    pub(crate) exe: PathBuf,
    pub(crate) region: String,
    pub(crate) plain_http: bool,
    /// `--listen` (default `127.0.0.1:0`, a free port).
    pub(crate) listen: String,
    /// More arguments of `keyward dev`.
    pub(crate) extra: Vec<String>,
}

impl Launch {
    /// `keyward_bin`, or the `keyward` next to this executable.
    pub(crate) fn new(keyward_bin: Option<&Path>, region: &str) -> anyhow::Result<Launch> {
        let exe = match keyward_bin {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory of the current executable")?
                .join("keyward"),
        };
        Ok(Launch {
            exe,
            region: region.to_owned(),
            plain_http: false,
            listen: "127.0.0.1:0".into(),
            extra: Vec::new(),
        })
    }

    fn of(args: &Args) -> anyhow::Result<Launch> {
        let mut launch = Launch::new(args.keyward_bin.as_deref(), &args.region)?;
        launch.plain_http = args.plain_http;
        Ok(launch)
    }
}

/// A started `keyward dev`: its process (the proxy), its URL, the pid of its
/// current enclave process (updated from its output whenever it starts one)
/// and the time it took to be ready.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) enclave_pid: Arc<AtomicU32>,
    pub(crate) elapsed: Duration,
}

/// A fresh random credential (the dev tenant's or the operator's).
pub(crate) fn random_signer(region: &str) -> Signer {
    Signer {
        access_key_id: format!("AKIA{}", random_id(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        secret: random_id(40, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
        region: region.to_owned(),
    }
}

fn random_id(n: usize, alphabet: &[u8]) -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

impl Service {
    pub(crate) async fn spawn(args: &Args) -> anyhow::Result<Service> {
        let dir = tempfile::Builder::new().prefix("keyward-load-").tempdir()?;
        let data_dir = dir.path().join("data");
        let (tenant, operator) = (random_signer(&args.region), random_signer(&args.region));
        let started = start_dev(&Launch::of(args)?, &data_dir, &tenant, &operator)?;
        let endpoint = endpoint_of(&started.url, &data_dir, args.plain_http)?;
        Ok(Service {
            _dir: dir,
            data_dir,
            proxy_pid: started.child.id(),
            enclave_pid: started.enclave_pid.load(Ordering::Relaxed),
            child: started.child,
            endpoint,
            signer: tenant,
            operator,
        })
    }

    pub(crate) fn mock_attestation_dir(&self) -> PathBuf {
        self.data_dir.join("mock-attestation")
    }

    pub(crate) async fn restart(&mut self, args: &Args) -> anyhow::Result<Duration> {
        terminate(&mut self.child);
        let started = start_dev(&Launch::of(args)?, &self.data_dir, &self.signer, &self.operator)?;
        self.proxy_pid = started.child.id();
        self.child = started.child;
        self.endpoint = endpoint_of(&started.url, &self.data_dir, args.plain_http)?;
        self.enclave_pid = started.enclave_pid.load(Ordering::Relaxed);
        Ok(started.elapsed)
    }

    pub(crate) fn stop(mut self) {
        terminate(&mut self.child);
    }
}

/// The started service's endpoint: HTTPS trusting the CA certificate it
/// wrote to `<data-dir>/tls/ca.pem`, or plain HTTP with `--plain-http`.
pub(crate) fn endpoint_of(url: &str, data_dir: &Path, plain_http: bool) -> anyhow::Result<Endpoint> {
    if plain_http {
        return Endpoint::new(url, true, None);
    }
    let path = data_dir.join("tls").join("ca.pem");
    let ca_pem = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (a keyward that serves plain HTTP is benchmarked with --plain-http)",
            path.display()
        )
    })?;
    Endpoint::new(url, false, Some(&ca_pem))
}

pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Starts `keyward dev` and waits for its ready line. Its stderr goes to
/// `<data-dir>/../keyward.stderr.log` (appended to, across restarts).
pub(crate) fn start_dev(
    launch: &Launch,
    data_dir: &Path,
    tenant: &Signer,
    operator: &Signer,
) -> anyhow::Result<Started> {
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(
        data_dir
            .parent()
            .context("data dir without parent")?
            .join("keyward.stderr.log"),
    )?;
    let started = Instant::now();
    let mut child = Command::new(&launch.exe)
        .args(["dev", "--listen", &launch.listen, "--tenant-rate-limit", "4000000000"])
        // The admin listener (`/healthz`, `/metrics`) on a free port too; builds
        // from before it existed (`--plain-http`) do not know the flag.
        .args(if launch.plain_http {
            &[][..]
        } else {
            &["--admin-listen", "127.0.0.1:0"][..]
        })
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--region")
        .arg(&launch.region)
        .args(&launch.extra)
        .env("KEYWARD_DEV_ACCESS_KEY_ID", &tenant.access_key_id)
        .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &tenant.secret)
        .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
        .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", launch.exe.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let enclave_pid = Arc::new(AtomicU32::new(0));
    let url = loop {
        let Some(line) = lines.next() else {
            let _ = child.wait();
            bail!("keyward dev exited before it was ready (see its stderr log)");
        };
        let line = line?;
        if let Some(pid) = parse_enclave_pid(&line) {
            enclave_pid.store(pid, Ordering::Relaxed);
        }
        if let Some(rest) = line.split(READY_MARKER).nth(1) {
            break rest.trim().trim_end_matches('/').to_owned();
        }
    };
    let elapsed = started.elapsed();
    // Keep draining its standard output, noting every enclave it starts.
    let pids = Arc::clone(&enclave_pid);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(pid) = parse_enclave_pid(&line) {
                pids.store(pid, Ordering::Relaxed);
            }
        }
    });
    Ok(Started {
        child,
        url,
        enclave_pid,
        elapsed,
    })
}

fn parse_enclave_pid(line: &str) -> Option<u32> {
    line.split(ENCLAVE_MARKER).nth(1)?.trim().parse().ok()
}
