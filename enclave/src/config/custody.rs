//! `--custody kms`: the flags of custody by an AWS-KMS-compatible key
//! service, validated into a [`KmsCustody`] (docs/custody.md).

use std::path::PathBuf;

use zeroize::Zeroizing;

/// How the root is kept between starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CustodyKind {
    /// M-of-N custodians (`kmsctl init`, `kmsctl unseal`).
    #[default]
    Shamir,
    /// An AWS-KMS-compatible key service (`--custody-key`, `--custody-endpoint`).
    Kms,
}

/// The custody flags of the enclave.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CustodyArgs {
    /// How the root is kept: `shamir` (custodians) or `kms` (an
    /// AWS-KMS-compatible key service releasing it to this enclave only).
    #[arg(long, value_enum, default_value = "shamir")]
    pub custody: CustodyKind,
    /// `--custody kms`: the custody key's ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
    #[arg(long, value_name = "ARN")]
    pub custody_key: Option<String>,
    /// `--custody kms`: the key service's endpoint, `https://HOST[:PORT]`.
    /// The host connects to it for the enclave; TLS ends in the enclave.
    #[arg(long, value_name = "URL")]
    pub custody_endpoint: Option<String>,
    /// `--custody kms`: PEM file of the CA certificates the endpoint's TLS
    /// certificate must chain to (pinned: no system roots).
    #[arg(long, value_name = "PEM")]
    pub custody_ca: Option<PathBuf>,
    /// `--custody kms`: where the credential that signs the custody calls
    /// comes from. `env`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// optionally `AWS_SESSION_TOKEN` of the enclave's environment.
    #[arg(long, value_name = "SOURCE", default_value = "env")]
    pub custody_credentials: String,
}

/// The credential that signs the custody calls. The secret is wiped on
/// drop and never printed. It authenticates the enclave to the service; it
/// does not protect the root (the service's Recipient condition does).
pub struct CustodyCredential {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for CustodyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodyCredential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Validated `--custody kms` configuration.
#[derive(Debug)]
pub struct KmsCustody {
    pub key_arn: String,
    /// From the key ARN: the SigV4 region.
    pub region: String,
    /// `https://HOST[:PORT]`.
    pub endpoint: String,
    /// The pinned CA bundle (PEM).
    pub ca_pem: Vec<u8>,
    pub credential: std::sync::Arc<CustodyCredential>,
}

/// Why the custody flags are refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyConfigError {
    #[error("--custody kms needs {0}")]
    Missing(&'static str),
    #[error("{0} is only valid with --custody kms")]
    KmsOnly(&'static str),
    #[error("--custody-key must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), got {0:?}")]
    KeyArn(String),
    #[error("--custody-endpoint must be https://HOST[:PORT], got {0:?}")]
    Endpoint(String),
    #[error("--custody-ca {0}: {1}")]
    Ca(PathBuf, String),
    #[error("--custody-credentials {0:?} is not a known source (env)")]
    Source(String),
    #[error("--custody-credentials env: {0}")]
    Credential(String),
}

/// The region of a KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`).
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("kms"), Some(region), Some(_), Some(resource))
            if !region.is_empty() && resource.starts_with("key/") =>
        {
            Some(region)
        }
        _ => None,
    }
}

impl CustodyArgs {
    /// `None` for Shamir custody; the KMS custody otherwise. `env` reads
    /// the enclave's environment.
    pub fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Option<KmsCustody>, CustodyConfigError> {
        if self.custody == CustodyKind::Shamir {
            for (given, flag) in [
                (self.custody_key.is_some(), "--custody-key"),
                (self.custody_endpoint.is_some(), "--custody-endpoint"),
                (self.custody_ca.is_some(), "--custody-ca"),
            ] {
                if given {
                    return Err(CustodyConfigError::KmsOnly(flag));
                }
            }
            return Ok(None);
        }
        let key_arn = self
            .custody_key
            .ok_or(CustodyConfigError::Missing("--custody-key ARN"))?;
        let region = region_of_arn(&key_arn)
            .ok_or_else(|| CustodyConfigError::KeyArn(key_arn.clone()))?
            .to_owned();
        let endpoint = self
            .custody_endpoint
            .ok_or(CustodyConfigError::Missing("--custody-endpoint URL"))?;
        let authority = endpoint.strip_prefix("https://").map(|a| a.trim_end_matches('/'));
        if !authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', '@', ' '])) {
            return Err(CustodyConfigError::Endpoint(endpoint));
        }
        let ca_path = self.custody_ca.ok_or(CustodyConfigError::Missing("--custody-ca PEM"))?;
        let ca_pem = std::fs::read(&ca_path).map_err(|e| CustodyConfigError::Ca(ca_path.clone(), e.to_string()))?;
        if !String::from_utf8_lossy(&ca_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(CustodyConfigError::Ca(ca_path, "no PEM CERTIFICATE in it".into()));
        }
        if self.custody_credentials != "env" {
            return Err(CustodyConfigError::Source(self.custody_credentials));
        }
        let access_key_id =
            env("AWS_ACCESS_KEY_ID").ok_or(CustodyConfigError::Credential("AWS_ACCESS_KEY_ID is not set".into()))?;
        let secret_access_key = Zeroizing::new(env("AWS_SECRET_ACCESS_KEY").ok_or(CustodyConfigError::Credential(
            "AWS_SECRET_ACCESS_KEY is not set".into(),
        ))?);
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err(CustodyConfigError::Credential(
                "an empty access key id or secret".into(),
            ));
        }
        Ok(Some(KmsCustody {
            key_arn,
            region,
            endpoint,
            ca_pem,
            credential: std::sync::Arc::new(CustodyCredential {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_key_arn() {
        assert_eq!(
            region_of_arn("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
            Some("eu-west-1")
        );
        assert_eq!(region_of_arn("arn:aws-cn:kms:cn-north-1:1:key/x"), Some("cn-north-1"));
        assert_eq!(region_of_arn("1234abcd-12ab-34cd"), None);
        assert_eq!(region_of_arn("arn:aws:kms:eu-west-1:1:alias/x"), None);
        assert_eq!(region_of_arn("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn kms_custody_needs_its_flags_and_a_credential() {
        let ca = std::env::temp_dir().join(format!("keyward-custody-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n").expect("write");
        let args = CustodyArgs {
            custody: CustodyKind::Kms,
            custody_key: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            custody_endpoint: Some("https://kms.us-east-1.amazonaws.com".into()),
            custody_ca: Some(ca.clone()),
            custody_credentials: "env".into(),
        };
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIAEXAMPLEEXAMPLE".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret-secret-secret".to_string()),
            _ => None,
        };
        let kms = args.clone().validate(&env).expect("valid").expect("kms");
        assert_eq!(kms.region, "us-east-1");
        assert!(!format!("{kms:?}").contains("secret-secret"));
        assert!(matches!(
            args.clone().validate(&|_: &str| None),
            Err(CustodyConfigError::Credential(_))
        ));
        let mut no_key = args.clone();
        no_key.custody_key = None;
        assert!(matches!(no_key.validate(&env), Err(CustodyConfigError::Missing(_))));
        let mut plain = args.clone();
        plain.custody_endpoint = Some("http://kms.example".into());
        assert!(matches!(plain.validate(&env), Err(CustodyConfigError::Endpoint(_))));
        let mut source = args.clone();
        source.custody_credentials = "imds".into();
        assert!(matches!(source.validate(&env), Err(CustodyConfigError::Source(_))));
        let shamir_with_key = CustodyArgs {
            custody: CustodyKind::Shamir,
            custody_key: Some("arn:aws:kms:us-east-1:1:key/k".into()),
            ..CustodyArgs::default()
        };
        assert!(matches!(
            shamir_with_key.validate(&env),
            Err(CustodyConfigError::KmsOnly(_))
        ));
        assert!(CustodyArgs::default().validate(&env).expect("valid").is_none());
        std::fs::remove_file(&ca).expect("remove");
    }
}
