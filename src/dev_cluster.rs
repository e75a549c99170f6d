//! The dev cluster of `keyward dev`: what the nodes started with one
//! `--store` share through it, host-side, as clear records of the
//! namespace [`NAMESPACE`] (the enclave never reads, indexes or backs them
//! up; the launcher writes them, not the enclave):
//!
//! * `mock-attestation-root`: the mock attestation root (certificate and
//!   key). The first node publishes its own; every later node adopts it
//!   into `<data-dir>/mock-attestation/` before its enclave starts. The
//!   mock root stands for AWS's one global Nitro root: each node's enclave
//!   still issues its own intermediate and leaf under it, and a peer
//!   verifies a joiner's document with the same code as in nitro mode.
//! * `node/<endpoint>`: each Ready node's client endpoint and the
//!   deployment's CA certificate (cluster nodes share the sealed TLS
//!   identity): where a node without a dev-custodian share joins from
//!   (the enclave's `--join-peer` and `--join-ca`).
//!
//! Both are hints the host can change at will: a wrong record makes a join
//! fail, nothing more. What protects the root is the peer's check of the
//! joiner's attestation document and the joiner's check of the root
//! against its boot record's commitment. Mock mode protects nothing
//! anyway: whoever reads the store (or the data dir) has the mock root's
//! key and can forge documents.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use keyward_enclave::attestation::mock::{MOCK_DIR, MockPki, ROOT_CERT_FILE, ROOT_KEY_FILE};
use keyward_proxy::{Store, StoreLocation};
use keyward_wire::{Expected, StoreOp, StoreResult};
use serde::{Deserialize, Serialize};

/// The host-side namespace of the dev cluster's records.
pub const NAMESPACE: &str = "dev-cluster";
/// The published mock attestation root.
pub const MOCK_ROOT_RECORD: &str = "mock-attestation-root";
/// Prefix of the nodes' endpoint records.
pub const NODE_PREFIX: &str = "node/";
/// The most recently registered peers a joiner asks (older records of
/// nodes long gone are not tried).
pub const MAX_PEERS: usize = 16;
/// Where a joining node keeps the peers' CA (its `--join-ca`).
pub const JOIN_CA_FILE: &str = "join-ca.pem";

/// The mock root as published. Not secret: a mock root protects nothing.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct MockRoot {
    certificate_pem: String,
    key_pem: String,
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `https://HOST:PORT`, as the node reaches itself.
    pub endpoint: String,
    /// The deployment's CA certificate (PEM) the node serves once Ready.
    pub ca_pem: String,
    /// Unix seconds of the registration.
    pub registered: u64,
}

/// The dev cluster's records in the shared store.
pub struct Registry {
    store: Store,
}

/// What the launcher does with the store's deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// This node's dev custodian: genesis (empty store) or unseal (its share).
    Custodian,
    /// No share here and a deployment in the store: join from these peers.
    Join(Vec<Peer>),
}

impl Registry {
    /// Opens the store at `location` (its own connection, besides the proxy's).
    pub async fn open(location: &StoreLocation) -> anyhow::Result<Registry> {
        let store = Store::open(location, None).await?;
        // As the proxy does: nothing is written into a store of the older
        // sealed-record format.
        store.refuse_old_records(location).await?;
        Ok(Registry { store })
    }

    async fn call(&self, op: StoreOp) -> anyhow::Result<StoreResult> {
        match self.store.call(op).await {
            StoreResult::Error(e) => anyhow::bail!("the store failed: {e}"),
            result => Ok(result),
        }
    }

    async fn get(&self, namespace: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let op = StoreOp::Get {
            namespace: namespace.into(),
            key: key.into(),
        };
        match self.call(op).await? {
            StoreResult::Value(value) => Ok(value.map(|v| v.into_vec())),
            other => anyhow::bail!("the store answered a read with {other:?}"),
        }
    }

    /// Whether the store holds a deployment (a boot record).
    pub async fn has_deployment(&self) -> anyhow::Result<bool> {
        use keyward_enclave::custody::record::{NAMESPACE as BOOT, RECORD_KEY};
        Ok(self.get(BOOT, RECORD_KEY).await?.is_some())
    }

    /// Gives this node the cluster's mock attestation root: publishes this
    /// data dir's (created if missing) when none is published, else adopts
    /// the published one into `<data_dir>/mock-attestation/`. Call before
    /// the enclave starts. `true` when the data dir's root was replaced.
    pub async fn share_mock_root(&self, data_dir: &Path) -> anyhow::Result<bool> {
        MockPki::load_or_create(data_dir).context("the mock attestation root")?;
        let dir = data_dir.join(MOCK_DIR);
        let local = MockRoot {
            certificate_pem: read(&dir.join(ROOT_CERT_FILE))?,
            key_pem: read(&dir.join(ROOT_KEY_FILE))?,
        };
        let publish = StoreOp::CasPut {
            namespace: NAMESPACE.into(),
            key: MOCK_ROOT_RECORD.into(),
            expected: Expected::Absent,
            value: serde_json::to_vec(&local)?,
        };
        match self.call(publish).await? {
            StoreResult::Committed(_) => {
                tracing::info!("dev cluster: published this node's mock attestation root in the store");
                return Ok(false);
            }
            StoreResult::Conflict { .. } => {}
            other => anyhow::bail!("the store answered a write with {other:?}"),
        }
        let bytes = self
            .get(NAMESPACE, MOCK_ROOT_RECORD)
            .await?
            .context("the published mock attestation root vanished")?;
        let published: MockRoot =
            serde_json::from_slice(&bytes).context("the store's mock attestation root record does not parse")?;
        if published == local {
            return Ok(false);
        }
        install_root(&dir, &published)?;
        println!(
            "dev cluster: adopted the cluster's mock attestation root from the store into {}",
            dir.display()
        );
        Ok(true)
    }

    /// The registered nodes other than `own` (`https://HOST:PORT`), most
    /// recent first, at most [`MAX_PEERS`].
    pub async fn peers(&self, own: Option<&str>) -> anyhow::Result<Vec<Peer>> {
        let op = StoreOp::List {
            namespace: NAMESPACE.into(),
            prefix: NODE_PREFIX.into(),
            start_after: None,
            limit: 1024,
        };
        let entries = match self.call(op).await? {
            StoreResult::Entries(entries) => entries,
            other => anyhow::bail!("the store answered a listing with {other:?}"),
        };
        let mut peers: Vec<Peer> = entries
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_slice::<Peer>(&value).ok())
            .filter(|p| Some(p.endpoint.as_str()) != own && p.ca_pem.contains("-----BEGIN CERTIFICATE-----"))
            .collect();
        peers.sort_by_key(|p| std::cmp::Reverse(p.registered));
        peers.truncate(MAX_PEERS);
        Ok(peers)
    }

    /// What this node does: its own custodian (in `custodian_dir`) when it
    /// has a share or the store has no deployment yet, else join from the
    /// registered peers; refused when there is none to join from.
    pub async fn plan(&self, has_share: bool, custodian_dir: &Path, own: Option<&str>) -> anyhow::Result<Plan> {
        if has_share || !self.has_deployment().await? {
            return Ok(Plan::Custodian);
        }
        let peers = self.peers(own).await?;
        if peers.is_empty() {
            anyhow::bail!(
                "this store already holds a deployment, this node has no dev custodian share ({}), and no Ready \
                 node of the cluster is registered in the store to join from: start a node that can unseal it \
                 first (the one that created it), or start this one with --dev-custodian-dir pointing at the \
                 dev-custodian directory of the node that created it",
                custodian_dir.display()
            );
        }
        Ok(Plan::Join(peers))
    }

    /// Registers this Ready node: `endpoint` and the CA it serves.
    pub async fn register(&self, endpoint: &str, ca_pem: &str) -> anyhow::Result<()> {
        let peer = Peer {
            endpoint: endpoint.to_owned(),
            ca_pem: ca_pem.to_owned(),
            registered: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        let op = StoreOp::Put {
            namespace: NAMESPACE.into(),
            key: format!("{NODE_PREFIX}{endpoint}"),
            value: serde_json::to_vec(&peer)?,
        };
        self.call(op).await.map(|_| ())
    }

    /// Removes this node's record (on a clean stop).
    pub async fn deregister(&self, endpoint: &str) {
        let op = StoreOp::Delete {
            namespace: NAMESPACE.into(),
            key: format!("{NODE_PREFIX}{endpoint}"),
        };
        if let Err(e) = self.call(op).await {
            tracing::warn!(error = %format!("{e:#}"), "dev cluster: could not remove this node's record");
        }
    }
}

/// The enclave's `--join-peer`/`--join-ca` flags and the proxy's outbound
/// targets for `plan` (none unless it joins).
pub fn join_flags(data_dir: &Path, plan: &Plan) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let Plan::Join(peers) = plan else {
        return Ok((Vec::new(), Vec::new()));
    };
    let ca = write_join_ca(data_dir, peers)?;
    let mut args = vec![format!("--join-ca={}", ca.display())];
    let mut targets = Vec::new();
    for peer in peers {
        args.push(format!("--join-peer={}", peer.endpoint));
        if let Some(target) = keyward_proxy::outbound::target_of(&peer.endpoint) {
            targets.push(target);
        }
    }
    Ok((args, targets))
}

/// Waits (without a deadline: a refused node stays sealed, saying why in
/// its 503) until the enclave is Ready by cluster join; the CA of the
/// in-memory TLS identity it served while sealed.
pub async fn wait_joined(link: &keyward_proxy::EnclaveLink) -> crate::dev_custody::Ready {
    const TICK: std::time::Duration = std::time::Duration::from_millis(100);
    let mut sealed_ca_pem = None;
    loop {
        if let Ok(status) = link.status(std::time::Duration::from_secs(10)).await {
            if status.health == "ok" {
                return crate::dev_custody::Ready {
                    outcome: crate::dev_custody::Outcome::Joined,
                    sealed_ca_pem,
                };
            }
            if !status.ca_certificate_pem.is_empty() {
                sealed_ca_pem = Some(status.ca_certificate_pem);
            }
        }
        // Polling the enclave's status, not synchronisation.
        tokio::time::sleep(TICK).await;
    }
}

/// Writes the peers' CA certificates (deduplicated) to
/// `<data_dir>/join-ca.pem`: the enclave's `--join-ca`.
pub fn write_join_ca(data_dir: &Path, peers: &[Peer]) -> anyhow::Result<PathBuf> {
    let mut bundle = String::new();
    for peer in peers {
        if !bundle.contains(peer.ca_pem.trim()) {
            bundle.push_str(peer.ca_pem.trim());
            bundle.push('\n');
        }
    }
    let path = data_dir.join(JOIN_CA_FILE);
    replace_file(&path, bundle.as_bytes(), 0o644)?;
    Ok(path)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Replaces the mock root in `dir` by `root`, checked first (the key must
/// match the certificate) in a scratch directory.
fn install_root(dir: &Path, root: &MockRoot) -> anyhow::Result<()> {
    let scratch = dir.join("adopting");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    replace_file(&scratch.join(ROOT_KEY_FILE), root.key_pem.as_bytes(), 0o600)?;
    replace_file(&scratch.join(ROOT_CERT_FILE), root.certificate_pem.as_bytes(), 0o644)?;
    MockPki::from_root_files(&scratch).context("the store's mock attestation root is unusable")?;
    for file in [ROOT_KEY_FILE, ROOT_CERT_FILE] {
        std::fs::rename(scratch.join(file), dir.join(file))
            .with_context(|| format!("installing {}", dir.join(file).display()))?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Writes `bytes` to `path` whole (a sibling file renamed over it).
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("keyward-dev-cluster-")
            .tempdir()
            .expect("temp dir")
    }

    #[tokio::test]
    async fn the_first_node_publishes_its_mock_root_and_later_nodes_adopt_it() {
        let dir = temp();
        let store = StoreLocation::Embedded(dir.path().join("store"));
        let registry = Registry::open(&store).await.expect("store");
        let (first, second) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir_all(&second).expect("dir");
        assert!(!registry.share_mock_root(&first).await.expect("publish"));
        // The second data dir had a root of its own: replaced.
        MockPki::load_or_create(&second).expect("own root");
        let cert = |d: &Path| std::fs::read(d.join(MOCK_DIR).join(ROOT_CERT_FILE)).expect("cert");
        assert_ne!(cert(&first), cert(&second));
        assert!(registry.share_mock_root(&second).await.expect("adopt"));
        assert_eq!(cert(&first), cert(&second));
        MockPki::from_root_files(&second.join(MOCK_DIR)).expect("a usable root");
        // Again: nothing to change.
        assert!(!registry.share_mock_root(&second).await.expect("adopt"));
        // None of this is a deployment.
        assert!(!registry.has_deployment().await.expect("read"));
        assert_eq!(
            registry.plan(false, dir.path(), None).await.expect("plan"),
            Plan::Custodian
        );
        // A boot record: a node without a share joins; one with a share unseals.
        let boot = StoreOp::Put {
            namespace: keyward_enclave::custody::record::NAMESPACE.into(),
            key: keyward_enclave::custody::record::RECORD_KEY.into(),
            value: b"a boot record".to_vec(),
        };
        registry.call(boot).await.expect("put");
        let refused = registry.plan(false, dir.path(), None).await.expect_err("no peer");
        assert!(refused.to_string().contains("--dev-custodian-dir"), "{refused}");
        assert_eq!(
            registry.plan(true, dir.path(), None).await.expect("plan"),
            Plan::Custodian
        );
        registry
            .register(
                "https://127.0.0.1:7",
                "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
            )
            .await
            .expect("register");
        let Plan::Join(peers) = registry.plan(false, dir.path(), None).await.expect("plan") else {
            panic!("a node without a share does not join");
        };
        let (args, targets) = join_flags(dir.path(), &Plan::Join(peers)).expect("flags");
        assert!(
            args.contains(&"--join-peer=https://127.0.0.1:7".to_string()),
            "{args:?}"
        );
        assert!(args.iter().any(|a| a.starts_with("--join-ca=")), "{args:?}");
        assert_eq!(targets, ["127.0.0.1:7"]);
    }

    #[tokio::test]
    async fn peers_are_the_registered_nodes_but_this_one_newest_first() {
        let dir = temp();
        let store = StoreLocation::Embedded(dir.path().join("store"));
        let registry = Registry::open(&store).await.expect("store");
        let ca = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        for (i, endpoint) in ["https://127.0.0.1:1", "https://127.0.0.1:2", "https://127.0.0.1:3"]
            .iter()
            .enumerate()
        {
            let peer = Peer {
                endpoint: (*endpoint).into(),
                ca_pem: ca.into(),
                registered: 100 + i as u64,
            };
            let op = StoreOp::Put {
                namespace: NAMESPACE.into(),
                key: format!("{NODE_PREFIX}{endpoint}"),
                value: serde_json::to_vec(&peer).expect("json"),
            };
            registry.call(op).await.expect("put");
        }
        let junk = StoreOp::Put {
            namespace: NAMESPACE.into(),
            key: format!("{NODE_PREFIX}junk"),
            value: b"not json".to_vec(),
        };
        registry.call(junk).await.expect("put");
        let peers = registry.peers(Some("https://127.0.0.1:2")).await.expect("peers");
        let endpoints: Vec<&str> = peers.iter().map(|p| p.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["https://127.0.0.1:3", "https://127.0.0.1:1"]);
        registry.deregister("https://127.0.0.1:3").await;
        registry.register("https://127.0.0.1:4", ca).await.expect("register");
        let peers = registry.peers(None).await.expect("peers");
        assert_eq!(peers.first().map(|p| p.endpoint.as_str()), Some("https://127.0.0.1:4"));
        assert!(peers.iter().all(|p| p.endpoint != "https://127.0.0.1:3"));
        let path = write_join_ca(dir.path(), &peers).expect("join ca");
        let bundle = std::fs::read_to_string(path).expect("read");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1, "{bundle}");
    }
}
