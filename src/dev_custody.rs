//! The dev custodian of `keyward dev`: mock mode runs the same custody
//! ceremony as a nitro deployment (docs/custody.md), with one custodian
//! whose key sits next to the data.
//!
//! * **First start** (no share yet): a custodian key is generated into
//!   `<dir>/custodian.key` (0600) and `custodian.pub`, `Keyward.InitCustody`
//!   runs a 1-of-1 Shamir genesis with it (the operator credential comes
//!   from the environment, as before), and the share package is kept as
//!   `<dir>/custodian.share`.
//! * **Every later start of the enclave** (the launcher's and each restart
//!   of a crashed enclave): `keyward_sdk::custody::unseal_with_share` — the
//!   very path of `kmsctl unseal` — verifies the enclave's unseal document
//!   against the mock attestation root (`<data-dir>/mock-attestation/`) and
//!   the expected mock PCRs, then sends the share sealed to the attested
//!   session key.
//!
//! * **Freshness** (issue 19 item 3): the custodian remembers the newest
//!   signed checkpoint (the store's index epochs) in `<dir>/checkpoint`,
//!   never in the store. `keyward dev` records one after each genesis and
//!   unseal, every second while running and on a graceful stop; each unseal
//!   sends it, and an enclave whose store is older stays sealed
//!   ([`Outcome::StaleStore`]) unless `--accept-store-rollback` was given.
//!
//! `<dir>` is `<data-dir>/dev-custodian` unless `--dev-custodian-dir` says
//! otherwise. A node of a cluster (same `--store`) without a share of its
//! own needs none: it joins from a Ready peer (`dev_cluster`); pointing it
//! at the first node's directory still works.
//!
//! Anyone who can read `<dir>` can unseal the deployment: this protects
//! nothing, and the launcher says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use keyward_proxy::link::EnclaveLink;
use keyward_sdk::attestation::TrustAnchor;
use keyward_sdk::custody::{
    CustodyError, CustodyKey, Freshness, InitCustodyRequest, Recorded, deployment_hex, fetch_and_record_checkpoint,
    read_checkpoint, read_share_package, share_package_pem, unseal_with_share_fresh_at, write_new_file,
    write_public_pem,
};
use keyward_sdk::{Client, TlsOptions};

/// The custodian's key, public key and share package in its directory.
pub const KEY_FILE: &str = "custodian.key";
pub const PUBLIC_KEY_FILE: &str = "custodian.pub";
pub const SHARE_FILE: &str = "custodian.share";
/// The newest signed checkpoint this custodian saw (`KEYWARD CHECKPOINT` PEM).
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// What the enclave's refusal of an older store says (its 503 message).
const STALE_STORE: &str = "older than its custodian last saw";
/// Default directory name under the data dir.
pub const DEFAULT_DIR: &str = "dev-custodian";

/// How long a status or an unseal call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a not-yet-reachable enclave is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// What brought the enclave to Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new deployment (1-of-1 genesis).
    Genesis,
    /// The dev custodian's share unsealed it.
    Unsealed,
    /// It was Ready already (nothing sent).
    AlreadyReady,
    /// A Ready peer of the cluster released the root to it (no share
    /// here; `dev_cluster`).
    Joined,
    /// The enclave refused the share's unseal: its store is older than this
    /// custodian's checkpoint. It stays sealed; the message says which scope.
    StaleStore(String),
}

/// A finished ceremony: what it did, and the CA of the in-memory TLS
/// identity the sealed enclave served (`None` if it was Ready already).
pub struct Ready {
    pub outcome: Outcome,
    pub sealed_ca_pem: Option<String>,
}

/// The dev custodian of one `keyward dev` node.
pub struct DevCustodian {
    dir: PathBuf,
    /// `<data-dir>/mock-attestation/root.crt.pem`: this node's mock root.
    attestation_root: PathBuf,
    expected_pcrs: BTreeMap<u8, Vec<u8>>,
    /// The enclave clock's shift (`--mock-clock-offset`): its documents are
    /// dated by it.
    clock_offset: i64,
    /// `--accept-store-rollback`: unseal even a store older than the
    /// checkpoint (the enclave audits it). For the first unseal of the run
    /// only: a restart of a crashed enclave later in the run never accepts
    /// a rollback.
    accept_store_rollback: std::sync::atomic::AtomicBool,
}

impl DevCustodian {
    /// `dir` (default `<data_dir>/dev-custodian`); the expected PCRs are the
    /// mock NSM's defaults with `mock_pcrs` (`INDEX=HEX`) applied.
    pub fn new(
        dir: Option<PathBuf>,
        data_dir: &Path,
        mock_pcrs: &[String],
        clock_offset: i64,
        accept_store_rollback: bool,
    ) -> anyhow::Result<DevCustodian> {
        let mut expected_pcrs = keyward_enclave::attestation::mock::default_pcrs();
        for arg in mock_pcrs {
            let (index, value) = keyward_enclave::attestation::mock::parse_pcr_arg(arg)
                .map_err(|e| anyhow::anyhow!("--mock-pcr: {e}"))?;
            expected_pcrs.insert(index, value);
        }
        Ok(DevCustodian {
            dir: dir.unwrap_or_else(|| data_dir.join(DEFAULT_DIR)),
            attestation_root: data_dir.join("mock-attestation").join("root.crt.pem"),
            expected_pcrs,
            clock_offset,
            accept_store_rollback: std::sync::atomic::AtomicBool::new(accept_store_rollback),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this custodian holds a share (it unseals; else genesis, or
    /// cluster join on a store that already holds a deployment).
    pub fn has_share(&self) -> bool {
        self.dir.join(SHARE_FILE).exists()
    }

    /// Records the Ready enclave's signed checkpoint in `<dir>/checkpoint`
    /// if it is not older than the one there (`allow_older`: right after an
    /// unseal that accepted a rollback). `Ok(None)`: no share yet.
    pub async fn record_checkpoint(
        &self,
        client: &Client,
        allow_older: bool,
    ) -> Result<Option<Recorded>, CustodyError> {
        let share = self.dir.join(SHARE_FILE);
        if !share.exists() {
            return Ok(None);
        }
        let package = read_share_package(&share)?;
        fetch_and_record_checkpoint(client, &package, &self.dir.join(CHECKPOINT_FILE), allow_older)
            .await
            .map(Some)
    }

    /// Makes a freshly started (sealed) enclave Ready: genesis when this
    /// custodian has no share yet, else unseal with it. An enclave not
    /// reachable yet is tried again until `timeout`; a refusal is final.
    pub async fn make_ready(&self, link: &EnclaveLink, endpoint: &str, timeout: Duration) -> anyhow::Result<Ready> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.attempt(link, endpoint).await {
                Ok(outcome) => return Ok(outcome),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e.context(format!("the enclave was not reachable within {timeout:?}")));
                    }
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
        }
    }

    async fn attempt(&self, link: &EnclaveLink, endpoint: &str) -> Result<Ready, Attempt> {
        // The sealed enclave serves an in-memory TLS identity; its CA comes
        // over the host link. (Trusting it proves nothing: what protects the
        // share is the attested session key it is sealed to.)
        let status = link
            .status(CALL_TIMEOUT)
            .await
            .map_err(|e| Attempt::Retry(anyhow::anyhow!("the enclave's status: {e}")))?;
        if status.health == "ok" {
            return Ok(Ready {
                outcome: Outcome::AlreadyReady,
                sealed_ca_pem: None,
            });
        }
        if status.ca_certificate_pem.is_empty() {
            return Err(Attempt::Retry(anyhow::anyhow!(
                "the enclave serves no TLS identity yet"
            )));
        }
        let client = Client::unauthenticated(endpoint)
            .and_then(|c| {
                c.with_tls(TlsOptions::default().with_ca_bundle(status.ca_certificate_pem.clone().into_bytes()))
            })
            .map(|c| c.with_timeout(CALL_TIMEOUT))
            .map_err(|e| Attempt::Fatal(anyhow::anyhow!("a client for {endpoint}: {e}")))?;
        let outcome = if self.has_share() {
            self.unseal(&client).await?
        } else {
            self.genesis(&client).await?
        };
        Ok(Ready {
            outcome,
            sealed_ca_pem: Some(status.ca_certificate_pem),
        })
    }

    async fn genesis(&self, client: &Client) -> Result<Outcome, Attempt> {
        let fatal = Attempt::Fatal;
        create_private_dir(&self.dir).map_err(fatal)?;
        let key_path = self.dir.join(KEY_FILE);
        let key = if key_path.exists() {
            CustodyKey::read_private_pem(&key_path).map_err(|e| fatal(e.into()))?
        } else {
            let key = CustodyKey::generate();
            key.write_private_pem(&key_path).map_err(|e| fatal(e.into()))?;
            key
        };
        write_public_pem(&key.public_key(), &self.dir.join(PUBLIC_KEY_FILE)).map_err(|e| fatal(e.into()))?;
        let request = InitCustodyRequest {
            threshold: 1,
            custodians: vec![key.public_key()],
            operator_key: None,
        };
        let output = client.init_custody(&request).await.map_err(|e| match e {
            keyward_sdk::Error::Transport(_) | keyward_sdk::Error::Timeout(_) => Attempt::Retry(e.into()),
            other => Attempt::Fatal(anyhow::anyhow!(
                "genesis (Keyward.InitCustody) was refused: {other}. If another node created this store's \
                 deployment meanwhile, start this node again: it joins the cluster from a Ready peer (or give it \
                 --dev-custodian-dir pointing at the dev-custodian directory of the node that created it)"
            )),
        })?;
        let package = output
            .share_packages
            .first()
            .ok_or_else(|| fatal(anyhow::anyhow!("genesis returned no share package")))?;
        let share_path = self.dir.join(SHARE_FILE);
        let pem = share_package_pem(package).map_err(|e| fatal(e.into()))?;
        write_new_file(&share_path, &pem).map_err(|e| fatal(e.into()))?;
        println!(
            "dev custody: genesis of deployment {} (1-of-1, custodian key {})",
            deployment_hex(&output.deployment_id),
            key_path.display()
        );
        Ok(Outcome::Genesis)
    }

    async fn unseal(&self, client: &Client) -> Result<Outcome, Attempt> {
        let fatal = Attempt::Fatal;
        let package = read_share_package(&self.dir.join(SHARE_FILE)).map_err(|e| fatal(e.into()))?;
        let key = CustodyKey::read_private_pem(&self.dir.join(KEY_FILE)).map_err(|e| fatal(e.into()))?;
        let pem = std::fs::read_to_string(&self.attestation_root)
            .with_context(|| format!("reading the mock attestation root {}", self.attestation_root.display()))
            .map_err(fatal)?;
        let anchor = TrustAnchor::from_pem(&pem)
            .map_err(|e| fatal(anyhow::anyhow!("{}: {e}", self.attestation_root.display())))?;
        let checkpoint = read_checkpoint(&self.dir.join(CHECKPOINT_FILE), &package).map_err(|e| fatal(e.into()))?;
        let freshness = Freshness {
            checkpoint,
            accept_store_rollback: self.accept_store_rollback.load(std::sync::atomic::Ordering::Acquire),
        };
        let unsealed = unseal_with_share_fresh_at(
            client,
            &package,
            &key,
            &self.expected_pcrs,
            anchor,
            &freshness,
            self.enclave_now(),
        )
        .await;
        if let Err(CustodyError::Service(keyward_sdk::Error::Service {
            message, status: 503, ..
        })) = &unsealed
            && message.contains(STALE_STORE)
        {
            return Ok(Outcome::StaleStore(message.clone()));
        }
        let progress = unsealed.map_err(|e| match e {
            CustodyError::Service(keyward_sdk::Error::Transport(_) | keyward_sdk::Error::Timeout(_)) => {
                Attempt::Retry(e.into())
            }
            other => Attempt::Fatal(anyhow::anyhow!(
                "unsealing deployment {} with the dev custodian's share ({}): {other}",
                deployment_hex(&package.deployment_id),
                self.dir.display()
            )),
        })?;
        if !progress.is_ready() {
            return Err(fatal(anyhow::anyhow!(
                "the enclave is still sealed after the dev custodian's share ({} of {} shares): \
                 a deployment that is not the dev custodian's 1-of-1",
                progress.received,
                progress.threshold
            )));
        }
        self.accept_store_rollback
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(Outcome::Unsealed)
    }

    /// The enclave's clock: the real time shifted by `--mock-clock-offset`.
    fn enclave_now(&self) -> SystemTime {
        let now = SystemTime::now();
        let shift = Duration::from_secs(self.clock_offset.unsigned_abs());
        let shifted = if self.clock_offset >= 0 {
            now.checked_add(shift)
        } else {
            now.checked_sub(shift)
        };
        shifted.unwrap_or(now)
    }

    /// The loud warning, printed at every start.
    pub fn warning(&self) -> String {
        format!(
            "WARNING: the dev custodian key {} sits next to the data: anyone who can read it can unseal this \
             deployment. `keyward dev` is for development only; a real deployment's custodians keep their keys \
             offline (docs/custody.md).",
            self.dir.join(KEY_FILE).display()
        )
    }
}

/// Why an attempt failed: worth another try (the enclave is not reachable
/// yet), or not.
enum Attempt {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Who makes a started enclave Ready in `keyward dev`: the dev custodian
/// (Shamir 1-of-1), or the custody key service (`--custody kms`,
/// [`crate::dev_kms`]).
pub enum Custody {
    Dev(std::sync::Arc<DevCustodian>),
    KeyService(crate::dev_kms::KeyServiceCustody),
}

impl Custody {
    /// See [`DevCustodian::make_ready`] and
    /// [`crate::dev_kms::KeyServiceCustody::make_ready`].
    pub async fn make_ready(&self, link: &EnclaveLink, endpoint: &str, timeout: Duration) -> anyhow::Result<Ready> {
        match self {
            Custody::Dev(custodian) => custodian.make_ready(link, endpoint, timeout).await,
            Custody::KeyService(service) => service.make_ready(link, endpoint, timeout).await,
        }
    }

    /// What keeps the root, printed (and logged) at every start: the dev
    /// custodian's loud warning, or the key service.
    pub fn notice(&self) -> String {
        match self {
            Custody::Dev(custodian) => custodian.warning(),
            Custody::KeyService(service) => service.notice(),
        }
    }

    pub fn log_notice(&self) {
        match self {
            Custody::Dev(custodian) => tracing::warn!("{}", custodian.warning()),
            Custody::KeyService(service) => tracing::info!("{}", service.notice()),
        }
    }
}
