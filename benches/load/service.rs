//! `--spawn`: a `keyward dev` on a temporary data dir with fresh random credentials, its endpoint
//! (HTTPS trusting the `<data-dir>/tls/ca.pem` it wrote; plain HTTP with `--plain-http`, for old
//! builds), its proxy and enclave pids (read from its output) for the CPU and memory figures, and
//! its restart.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        let signer = |region: &str| Signer {
            access_key_id: format!("AKIA{}", random_id(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            secret: random_id(40, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
            region: region.to_owned(),
        };
        let (tenant, operator) = (signer(&args.region), signer(&args.region));
        let (child, url, enclave_pid, _) = start_dev(args, &data_dir, &tenant, &operator)?;
        let endpoint = endpoint_of(&url, &data_dir, args)?;
        Ok(Service {
            _dir: dir,
            data_dir,
            proxy_pid: child.id(),
            child,
            endpoint,
            signer: tenant,
            operator,
            enclave_pid,
        })
    }

    pub(crate) fn mock_attestation_dir(&self) -> PathBuf {
        self.data_dir.join("mock-attestation")
    }

    pub(crate) async fn restart(&mut self, args: &Args) -> anyhow::Result<Duration> {
        terminate(&mut self.child);
        let (child, url, enclave_pid, elapsed) = start_dev(args, &self.data_dir, &self.signer, &self.operator)?;
        self.proxy_pid = child.id();
        self.child = child;
        self.endpoint = endpoint_of(&url, &self.data_dir, args)?;
        self.enclave_pid = enclave_pid;
        Ok(elapsed)
    }

    pub(crate) fn stop(mut self) {
        terminate(&mut self.child);
    }
}

/// The started service's endpoint: HTTPS trusting the CA certificate it
/// wrote to `<data-dir>/tls/ca.pem`, or plain HTTP with `--plain-http`.
fn endpoint_of(url: &str, data_dir: &Path, args: &Args) -> anyhow::Result<Endpoint> {
    if args.plain_http {
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

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Starts `keyward dev` and waits for its ready line: (child, url, enclave
/// pid, time from start to ready).
fn start_dev(
    args: &Args,
    data_dir: &Path,
    tenant: &Signer,
    operator: &Signer,
) -> anyhow::Result<(Child, String, u32, Duration)> {
    let exe = match &args.keyward_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the current executable")?
            .join("keyward"),
    };
    let stderr = std::fs::File::create(
        data_dir
            .parent()
            .context("data dir without parent")?
            .join("keyward.stderr.log"),
    )?;
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args(["dev", "--listen", "127.0.0.1:0", "--tenant-rate-limit", "4000000000"])
        // The admin listener (`/healthz`, `/metrics`) on a free port too; builds
        // from before it existed (`--plain-http`) do not know the flag.
        .args(if args.plain_http {
            &[][..]
        } else {
            &["--admin-listen", "127.0.0.1:0"][..]
        })
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--region")
        .arg(&args.region)
        .env("KEYWARD_DEV_ACCESS_KEY_ID", &tenant.access_key_id)
        .env("KEYWARD_DEV_SECRET_ACCESS_KEY", &tenant.secret)
        .env("KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID", &operator.access_key_id)
        .env("KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY", &operator.secret)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut enclave_pid = 0;
    let url = loop {
        let Some(line) = lines.next() else {
            bail!("keyward dev exited before it was ready (see its stderr log)");
        };
        let line = line?;
        if let Some(rest) = line.split(ENCLAVE_MARKER).nth(1) {
            enclave_pid = rest.trim().parse().unwrap_or(0);
        }
        if let Some(rest) = line.split(READY_MARKER).nth(1) {
            break rest.trim().trim_end_matches('/').to_owned();
        }
    };
    let elapsed = started.elapsed();
    // Keep draining its standard output.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, url, enclave_pid, elapsed))
}
