//! `--join-peer` / `--join-ca`: the Ready peers a sealed enclave asks for
//! the root at start (cluster join, docs/custody.md "Adding a node"),
//! validated into a [`JoinConfig`].

use std::path::PathBuf;

/// The cluster join flags of the enclave.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JoinArgs {
    /// A cluster peer's client address, `HOST:PORT` or `https://HOST:PORT`
    /// (repeatable): while Sealed with a boot record, the enclave asks these
    /// peers in turn for the root (`Keyward.JoinCluster`), backing off
    /// between rounds, until one releases it or custodians unseal it. The
    /// host must allow the same targets (the proxy's `--join-peer`).
    #[arg(long = "join-peer", value_name = "HOST:PORT")]
    pub join_peer: Vec<String>,
    /// PEM file of the CA certificates a peer's TLS certificate must chain
    /// to (pinned: no system roots). Cluster nodes share the deployment's
    /// sealed TLS identity: its `ca.pem`.
    #[arg(long = "join-ca", value_name = "PEM")]
    pub join_ca: Option<PathBuf>,
}

/// Validated cluster join configuration.
#[derive(Debug)]
pub struct JoinConfig {
    /// `https://HOST:PORT`, in the order given.
    pub peers: Vec<String>,
    /// The pinned CA bundle (PEM).
    pub ca_pem: Vec<u8>,
}

/// Why the join flags are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinConfigError {
    #[error("--join-peer needs --join-ca PEM (the deployment's CA, which the peers' TLS certificates chain to)")]
    MissingCa,
    #[error("--join-ca is only valid with --join-peer")]
    CaWithoutPeer,
    #[error("--join-peer must be HOST:PORT or https://HOST:PORT, got {0:?}")]
    Peer(String),
    #[error("--join-ca {0}: {1}")]
    Ca(PathBuf, String),
}

/// `https://HOST:PORT` for a `--join-peer` value (`HOST:PORT` or an
/// `https://` URL with a port or without, 443); `None` if malformed.
pub fn peer_url(value: &str) -> Option<String> {
    let (authority, default_port) = match value.split_once("://") {
        Some(("https", rest)) => (rest.strip_suffix('/').unwrap_or(rest), Some(443)),
        Some(_) => return None,
        None => (value, None),
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ', '[', ']']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()?),
        None => (authority, default_port?),
    };
    if host.is_empty() || rustls::pki_types::ServerName::try_from(host.to_string()).is_err() {
        return None;
    }
    Some(format!("https://{host}:{port}"))
}

impl JoinArgs {
    /// `None` when no peer is given.
    pub fn validate(self) -> Result<Option<JoinConfig>, JoinConfigError> {
        if self.join_peer.is_empty() {
            return match self.join_ca {
                Some(_) => Err(JoinConfigError::CaWithoutPeer),
                None => Ok(None),
            };
        }
        let mut peers = Vec::new();
        for value in &self.join_peer {
            let url = peer_url(value).ok_or_else(|| JoinConfigError::Peer(value.chars().take(200).collect()))?;
            if !peers.contains(&url) {
                peers.push(url);
            }
        }
        let path = self.join_ca.ok_or(JoinConfigError::MissingCa)?;
        let ca_pem = std::fs::read(&path).map_err(|e| JoinConfigError::Ca(path.clone(), e.to_string()))?;
        use rustls::pki_types::pem::PemObject as _;
        let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JoinConfigError::Ca(path.clone(), e.to_string()))?;
        if certificates.is_empty() {
            return Err(JoinConfigError::Ca(path, "no PEM CERTIFICATE in it".into()));
        }
        Ok(Some(JoinConfig { peers, ca_pem }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_host_port_or_https_urls() {
        assert_eq!(peer_url("127.0.0.1:7800").as_deref(), Some("https://127.0.0.1:7800"));
        assert_eq!(peer_url("https://node1:7800/").as_deref(), Some("https://node1:7800"));
        assert_eq!(peer_url("https://node1").as_deref(), Some("https://node1:443"));
        assert_eq!(peer_url("node1"), None);
        assert_eq!(peer_url("http://node1:80"), None);
        assert_eq!(peer_url("node1:http"), None);
        assert_eq!(peer_url("https://u@node1:1"), None);
    }

    #[test]
    fn a_peer_needs_a_pinned_ca_and_a_ca_needs_a_peer() {
        assert!(JoinArgs::default().validate().expect("valid").is_none());
        let peer_only = JoinArgs {
            join_peer: vec!["127.0.0.1:7800".into()],
            join_ca: None,
        };
        assert!(matches!(peer_only.validate(), Err(JoinConfigError::MissingCa)));
        let ca_only = JoinArgs {
            join_peer: Vec::new(),
            join_ca: Some("/nonexistent.pem".into()),
        };
        assert!(matches!(ca_only.validate(), Err(JoinConfigError::CaWithoutPeer)));
        let bad_peer = JoinArgs {
            join_peer: vec!["node1".into()],
            join_ca: Some("/nonexistent.pem".into()),
        };
        assert!(matches!(bad_peer.validate(), Err(JoinConfigError::Peer(_))));
        let missing_ca = JoinArgs {
            join_peer: vec!["127.0.0.1:7800".into()],
            join_ca: Some("/nonexistent/keyward-join-ca.pem".into()),
        };
        assert!(matches!(missing_ca.validate(), Err(JoinConfigError::Ca(..))));
        let not_pem = std::env::temp_dir().join(format!("keyward-join-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&not_pem, "not a certificate").expect("write");
        let garbage = JoinArgs {
            join_peer: vec!["127.0.0.1:7800".into()],
            join_ca: Some(not_pem.clone()),
        };
        assert!(matches!(garbage.validate(), Err(JoinConfigError::Ca(..))));
        std::fs::remove_file(&not_pem).expect("remove");
    }
}
