//! Enclave configuration: raw command-line arguments ([`Args`]) are validated
//! into an [`EnclaveConfig`] before anything starts.

pub mod custody;
pub mod join;

use std::path::PathBuf;

use zeroize::Zeroizing;

pub use custody::{CustodyArgs, CustodyCredential, CustodyKind, KmsCustody};
pub use join::{JoinArgs, JoinConfig};

/// Where the enclave runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain Linux: Unix socket, mock NSM, dev-wrapped root key. Not for production.
    Mock,
    /// AWS Nitro Enclave: vsock, real NSM.
    Nitro,
}

/// Raw arguments of the enclave process (`keyward-enclave` or `keyward enclave`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// mock (plain Linux, for development and tests) or nitro (AWS Nitro Enclave).
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Unix socket to listen on (mock mode).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// vsock port to listen on (nitro mode).
    #[arg(long, value_name = "PORT", default_value_t = 5000)]
    pub vsock_port: u32,
    /// Mock mode: the Unix socket for client streams (each a client's TLS
    /// connection forwarded by the host). Default: `enclave-tls.sock` next
    /// to `--socket`.
    #[arg(long, value_name = "PATH")]
    pub tls_socket: Option<PathBuf>,
    /// Nitro mode: the vsock port for client streams.
    #[arg(long, value_name = "PORT", default_value_t = 5001)]
    pub tls_vsock_port: u32,
    /// A name the TLS serving certificate is issued for (repeatable): a DNS
    /// name or an IP address. Default: `localhost` and `127.0.0.1`.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// Client streams served at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_client_streams: usize,
    /// Memory the enclave may use, in MiB: sizes the policy sandbox pool,
    /// the compiled-module cache, request bodies in flight and client streams
    /// so that together they fit with headroom (`budget` module). Default: in
    /// nitro mode the enclave's memory (`MemTotal`), otherwise 1024. A budget
    /// that cannot hold them refuses to start.
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<u64>,
    /// AWS region this deployment answers for (SigV4 scope and ARNs).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Mock mode: the bootstrap tenant (an AWS account id in ARNs).
    #[arg(long, default_value = "111122223333")]
    pub dev_tenant: String,
    /// Mock mode only: shift the enclave's clock by this many seconds (tests
    /// of deletion windows and rotation periods; clients must sign with the
    /// same shifted time).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, allow_negative_numbers = true)]
    pub mock_clock_offset: i64,
    /// Requests per second each tenant (and the operator) may make; the
    /// bucket holds two seconds' worth. Over it: ThrottlingException.
    #[arg(long, value_name = "RPS", default_value_t = 10_000)]
    pub tenant_rate_limit: u32,
    /// Mock mode: directory for the mock attestation PKI
    /// (`mock-attestation/root.crt.pem`, `root.key.pem`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Mock mode: a PCR value of this enclave's mock NSM, `INDEX=HEX` (repeatable).
    #[arg(long = "mock-pcr", value_name = "INDEX=HEX")]
    pub mock_pcrs: Vec<String>,
    /// Accept recipients whose attestation documents have all-zero (debug-mode) PCRs.
    #[arg(long)]
    pub allow_debug_attestation: bool,
    /// Exit when standard input closes (set by a supervising parent so the
    /// enclave never outlives it).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
    /// How the root is kept (`--custody shamir|kms` and the KMS flags).
    #[command(flatten)]
    pub custody: CustodyArgs,
    /// Cluster join at start (`--join-peer`, `--join-ca`).
    #[command(flatten)]
    pub join: JoinArgs,
}

/// Environment variables carrying the mock-mode bootstrap credential.
pub const ENV_DEV_ACCESS_KEY_ID: &str = "KEYWARD_DEV_ACCESS_KEY_ID";
pub const ENV_DEV_SECRET_ACCESS_KEY: &str = "KEYWARD_DEV_SECRET_ACCESS_KEY";
/// Environment variables carrying the mock-mode operator credential.
pub const ENV_DEV_OPERATOR_ACCESS_KEY_ID: &str = "KEYWARD_DEV_OPERATOR_ACCESS_KEY_ID";
pub const ENV_DEV_OPERATOR_SECRET_ACCESS_KEY: &str = "KEYWARD_DEV_OPERATOR_SECRET_ACCESS_KEY";

#[derive(Debug, Clone)]
pub enum Listen {
    Unix(PathBuf),
    Vsock { port: u32 },
}

/// The client-stream socket next to the host-link socket `link`.
pub fn default_tls_socket(link: &std::path::Path) -> PathBuf {
    link.with_file_name("enclave-tls.sock")
}

/// The bootstrap tenant's credential in mock mode.
pub struct DevCredential {
    pub tenant: String,
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
}

impl std::fmt::Debug for DevCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCredential")
            .field("tenant", &self.tenant)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Validated configuration.
#[derive(Debug)]
pub struct EnclaveConfig {
    pub mode: Mode,
    pub listen: Listen,
    /// Where client streams (TLS) arrive.
    pub tls_listen: Listen,
    /// The names the enclave-CA serving certificate is issued for.
    pub tls_names: Vec<crate::tls::TlsName>,
    /// Client streams served at once (`--max-client-streams`, lowered to
    /// what the memory budget holds).
    pub max_client_streams: usize,
    /// What `--memory-budget` sizes.
    pub budget: crate::budget::Budget,
    pub region: String,
    pub dev_credential: Option<DevCredential>,
    /// Seconds added to the wall clock (mock mode only; 0 in nitro mode).
    pub clock_offset: i64,
    /// Per-tenant request rate (requests per second, at least 1).
    pub tenant_rate_limit: u32,
    /// Mock mode: where the mock attestation PKI lives.
    pub data_dir: Option<PathBuf>,
    /// Mock mode: PCR index → value for the mock NSM.
    pub mock_pcrs: std::collections::BTreeMap<u8, Vec<u8>>,
    pub allow_debug_attestation: bool,
    /// Mock mode: the operator's credential (`KEYWARD_DEV_OPERATOR_*`).
    pub dev_operator: Option<DevCredential>,
    pub exit_on_stdin_close: bool,
    /// `--custody kms`: the key service holding the root (`None`: Shamir).
    pub custody_kms: Option<std::sync::Arc<KmsCustody>>,
    /// `--join-peer`: the Ready peers to join from while sealed (`None`: none).
    pub join: Option<std::sync::Arc<JoinConfig>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("--socket is required in mock mode")]
    MissingSocket,
    #[error("--socket is only valid in mock mode (nitro mode listens on vsock)")]
    SocketInNitroMode,
    #[error("invalid region {0:?}")]
    Region(String),
    #[error("invalid tenant id {0:?}: expected 12 digits, like an AWS account id")]
    Tenant(String),
    #[error("dev access key ids must be 16-128 letters and digits")]
    AccessKeyId,
    #[error("dev secret access keys must be 16-128 printable characters without spaces")]
    SecretAccessKey,
    #[error("{0} is only valid in mock mode")]
    MockOnly(&'static str),
    #[error("--mock-pcr: {0}")]
    MockPcr(String),
    #[error("--mock-clock-offset is only valid in mock mode")]
    ClockOffsetInNitroMode,
    #[error("--mock-clock-offset must be within ±100 years")]
    ClockOffsetRange,
    #[error("{0} is set but {1} is not")]
    HalfCredential(&'static str, &'static str),
    #[error("--tls-name: {0}")]
    TlsName(String),
    #[error("--tls-socket is only valid in mock mode")]
    TlsSocketInNitroMode,
    #[error("--tls-socket must differ from --socket")]
    TlsSocketIsLinkSocket,
    #[error("--max-client-streams must be at least 1")]
    MaxClientStreams,
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
    #[error("--memory-budget not given and the enclave's memory is unknown (/proc/meminfo: {0})")]
    MemTotal(String),
    #[error(transparent)]
    Custody(#[from] custody::CustodyConfigError),
    #[error(transparent)]
    Join(#[from] join::JoinConfigError),
}

/// Checks a tenant id: 12 decimal digits.
pub fn valid_tenant_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an access key id: 16–128 ASCII letters and digits.
pub fn valid_access_key_id(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_secret(secret: &str) -> bool {
    (16..=128).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// A credential from a pair of environment variables: both or neither.
fn credential_from_env(
    env: &impl Fn(&str) -> Option<String>,
    id_var: &'static str,
    secret_var: &'static str,
    tenant: &str,
) -> Result<Option<DevCredential>, ConfigError> {
    match (env(id_var), env(secret_var).map(Zeroizing::new)) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::HalfCredential(id_var, secret_var)),
        (None, Some(_)) => Err(ConfigError::HalfCredential(secret_var, id_var)),
        (Some(access_key_id), Some(secret_access_key)) => {
            if !valid_access_key_id(&access_key_id) {
                return Err(ConfigError::AccessKeyId);
            }
            if !valid_secret(&secret_access_key) {
                return Err(ConfigError::SecretAccessKey);
            }
            Ok(Some(DevCredential {
                tenant: tenant.to_owned(),
                access_key_id,
                secret_access_key,
            }))
        }
    }
}

impl Args {
    /// Validates the arguments; `env` reads an environment variable.
    pub fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<EnclaveConfig, ConfigError> {
        if self.region.is_empty()
            || self.region.len() > 32
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::Region(self.region));
        }
        let (listen, tls_listen) = match (self.mode, self.socket) {
            (Mode::Mock, Some(path)) => {
                let tls = self.tls_socket.unwrap_or_else(|| default_tls_socket(&path));
                if tls == path {
                    return Err(ConfigError::TlsSocketIsLinkSocket);
                }
                (Listen::Unix(path), Listen::Unix(tls))
            }
            (Mode::Mock, None) => return Err(ConfigError::MissingSocket),
            (Mode::Nitro, Some(_)) => return Err(ConfigError::SocketInNitroMode),
            (Mode::Nitro, None) => {
                if self.tls_socket.is_some() {
                    return Err(ConfigError::TlsSocketInNitroMode);
                }
                (
                    Listen::Vsock { port: self.vsock_port },
                    Listen::Vsock {
                        port: self.tls_vsock_port,
                    },
                )
            }
        };
        let tls_names = if self.tls_names.is_empty() {
            crate::tls::TlsName::dev_defaults()
        } else {
            self.tls_names
                .iter()
                .map(|name| crate::tls::TlsName::parse(name).map_err(|e| ConfigError::TlsName(e.to_string())))
                .collect::<Result<_, _>>()?
        };
        if self.max_client_streams == 0 {
            return Err(ConfigError::MaxClientStreams);
        }
        let budget_mib = match (self.memory_budget, self.mode) {
            (Some(mib), _) => mib,
            (None, Mode::Mock) => crate::budget::DEFAULT_BUDGET_MIB,
            (None, Mode::Nitro) => std::fs::read_to_string("/proc/meminfo")
                .map_err(|e| ConfigError::MemTotal(e.to_string()))
                .and_then(|text| {
                    crate::budget::mem_total_mib(&text).ok_or_else(|| ConfigError::MemTotal("no MemTotal".into()))
                })?,
        };
        let budget = crate::budget::Budget::size(budget_mib, crate::tls::serve::MAX_BODY, self.max_client_streams)?;
        if self.mode == Mode::Nitro && !self.mock_pcrs.is_empty() {
            return Err(ConfigError::MockOnly("--mock-pcr"));
        }
        let mut mock_pcrs = std::collections::BTreeMap::new();
        for arg in &self.mock_pcrs {
            let (index, value) = crate::attestation::mock::parse_pcr_arg(arg).map_err(ConfigError::MockPcr)?;
            mock_pcrs.insert(index, value);
        }
        if self.mode == Mode::Nitro && self.mock_clock_offset != 0 {
            return Err(ConfigError::ClockOffsetInNitroMode);
        }
        if self.mock_clock_offset.unsigned_abs() > 100 * 366 * 86_400 {
            return Err(ConfigError::ClockOffsetRange);
        }
        let (dev_credential, dev_operator) = match self.mode {
            Mode::Nitro => (None, None),
            Mode::Mock => {
                if !valid_tenant_id(&self.dev_tenant) {
                    return Err(ConfigError::Tenant(self.dev_tenant));
                }
                let tenant =
                    credential_from_env(&env, ENV_DEV_ACCESS_KEY_ID, ENV_DEV_SECRET_ACCESS_KEY, &self.dev_tenant)?;
                let operator = credential_from_env(
                    &env,
                    ENV_DEV_OPERATOR_ACCESS_KEY_ID,
                    ENV_DEV_OPERATOR_SECRET_ACCESS_KEY,
                    crate::auth::OPERATOR,
                )?;
                (tenant, operator)
            }
        };
        let custody_kms = self.custody.validate(&env)?.map(std::sync::Arc::new);
        let join = self.join.validate()?.map(std::sync::Arc::new);
        Ok(EnclaveConfig {
            mode: self.mode,
            listen,
            tls_listen,
            tls_names,
            max_client_streams: budget.client_streams,
            budget,
            region: self.region,
            dev_credential,
            clock_offset: self.mock_clock_offset,
            tenant_rate_limit: self.tenant_rate_limit.max(1),
            data_dir: self.data_dir,
            mock_pcrs,
            allow_debug_attestation: self.allow_debug_attestation,
            dev_operator,
            exit_on_stdin_close: self.exit_on_stdin_close,
            custody_kms,
            join,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: Mode, socket: Option<&str>) -> Args {
        Args {
            mode,
            socket: socket.map(PathBuf::from),
            vsock_port: 5000,
            tls_socket: None,
            tls_vsock_port: 5001,
            tls_names: Vec::new(),
            max_client_streams: 4096,
            memory_budget: None,
            region: "us-east-1".into(),
            dev_tenant: "111122223333".into(),
            mock_clock_offset: 0,
            tenant_rate_limit: 10_000,
            data_dir: None,
            mock_pcrs: Vec::new(),
            allow_debug_attestation: false,
            exit_on_stdin_close: false,
            custody: Default::default(),
            join: Default::default(),
        }
    }

    #[test]
    fn modes_and_listeners() {
        assert!(matches!(
            args(Mode::Mock, Some("/tmp/s")).validate(|_| None).map(|c| c.listen),
            Ok(Listen::Unix(_))
        ));
        assert!(matches!(
            args(Mode::Mock, None).validate(|_| None),
            Err(ConfigError::MissingSocket)
        ));
        assert!(matches!(
            args(Mode::Nitro, None).validate(|_| None).map(|c| c.listen),
            Ok(Listen::Vsock { port: 5000 })
        ));
        assert!(matches!(
            args(Mode::Nitro, Some("/tmp/s")).validate(|_| None),
            Err(ConfigError::SocketInNitroMode)
        ));
    }

    #[test]
    fn tls_listener_and_names() {
        let config = args(Mode::Mock, Some("/tmp/d/enclave.sock"))
            .validate(|_| None)
            .expect("valid");
        assert!(
            matches!(config.tls_listen, Listen::Unix(ref p) if p == std::path::Path::new("/tmp/d/enclave-tls.sock"))
        );
        assert_eq!(config.tls_names, crate::tls::TlsName::dev_defaults());
        let nitro = args(Mode::Nitro, None).validate(|_| None).expect("valid");
        assert!(matches!(nitro.tls_listen, Listen::Vsock { port: 5001 }));
        let mut named = args(Mode::Mock, Some("/tmp/s"));
        named.tls_names = vec!["kms.example.com".into(), "10.0.0.1".into()];
        assert_eq!(named.validate(|_| None).expect("valid").tls_names.len(), 2);
        let mut bad = args(Mode::Mock, Some("/tmp/s"));
        bad.tls_names = vec!["*.example.com".into()];
        assert!(matches!(bad.validate(|_| None), Err(ConfigError::TlsName(_))));
        let mut same = args(Mode::Mock, Some("/tmp/s"));
        same.tls_socket = Some(PathBuf::from("/tmp/s"));
        assert!(matches!(
            same.validate(|_| None),
            Err(ConfigError::TlsSocketIsLinkSocket)
        ));
    }

    #[test]
    fn the_memory_budget_sizes_the_limits_or_refuses() {
        let config = args(Mode::Mock, Some("/tmp/s")).validate(|_| None).expect("valid");
        assert_eq!(
            config.budget,
            crate::budget::Budget::size(1024, crate::tls::serve::MAX_BODY, 4096).expect("fits")
        );
        assert_eq!(config.max_client_streams, config.budget.client_streams);
        let mut small = args(Mode::Mock, Some("/tmp/s"));
        small.memory_budget = Some(200);
        let e = small.validate(|_| None).expect_err("200 MiB cannot start");
        assert!(matches!(e, ConfigError::Budget(_)));
        assert!(e.to_string().contains("--memory-budget 200 MiB cannot hold"), "{e}");
        let nitro = args(Mode::Nitro, None).validate(|_| None).expect("valid");
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let mib = crate::budget::mem_total_mib(&meminfo).expect("MemTotal");
        assert_eq!(nitro.budget.total_bytes, mib * 1024 * 1024);
    }

    #[test]
    fn clock_offset_is_mock_only() {
        let mut nitro = args(Mode::Nitro, None);
        nitro.mock_clock_offset = 60;
        assert!(matches!(
            nitro.validate(|_| None),
            Err(ConfigError::ClockOffsetInNitroMode)
        ));
        let mut mock = args(Mode::Mock, Some("/tmp/s"));
        mock.mock_clock_offset = -86_400;
        assert_eq!(mock.validate(|_| None).expect("valid").clock_offset, -86_400);
    }

    #[test]
    fn dev_credentials_come_from_the_environment_in_mock_mode_only() {
        let env = |k: &str| match k {
            ENV_DEV_ACCESS_KEY_ID => Some("AKIAEXAMPLE12345".to_string()),
            ENV_DEV_SECRET_ACCESS_KEY => Some("s".repeat(40)),
            _ => None,
        };
        let cfg = args(Mode::Mock, Some("/tmp/s")).validate(env).expect("valid");
        let cred = cfg.dev_credential.expect("credential");
        assert_eq!(cred.access_key_id, "AKIAEXAMPLE12345");
        assert!(!format!("{cred:?}").contains("ssss"));
        assert!(
            args(Mode::Nitro, None)
                .validate(env)
                .expect("valid")
                .dev_credential
                .is_none()
        );
        let half = |k: &str| (k == ENV_DEV_ACCESS_KEY_ID).then(|| "AKIAEXAMPLE12345".to_string());
        assert!(matches!(
            args(Mode::Mock, Some("/tmp/s")).validate(half),
            Err(ConfigError::HalfCredential(..))
        ));
        let short = |k: &str| {
            Some(if k == ENV_DEV_ACCESS_KEY_ID {
                "AK".to_string()
            } else {
                "s".repeat(40)
            })
        };
        assert!(matches!(
            args(Mode::Mock, Some("/tmp/s")).validate(short),
            Err(ConfigError::AccessKeyId)
        ));
    }
}
