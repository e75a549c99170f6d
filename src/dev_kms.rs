//! `keyward dev --custody kms`: the root is kept by an AWS-KMS-compatible
//! key service (AWS KMS, or another Keyward) instead of the dev custodian
//! (docs/custody.md, "Custody by a key service").
//!
//! The launcher passes the custody flags through to its enclave
//! ([`enclave_args`]) and the endpoint to its proxy as the one outbound
//! target ([`outbound_targets`]); the enclave reads the signing credential
//! from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` of the environment it
//! inherits. Then:
//!
//! * **first start** (awaiting genesis): the launcher sends
//!   `Keyward.InitCustody` without custodians; the enclave has the key
//!   service generate the root (`GenerateDataKey` with its Recipient) and is
//!   Ready;
//! * **every later start** (the launcher's, and each restart of a crashed
//!   enclave): the enclave unseals by itself (`Decrypt` with its
//!   Recipient); the launcher only waits for Ready. A refusal or an
//!   unreachable service leaves the enclave Sealed: its 503 message and its
//!   log say why, and it keeps retrying.
//!
//! Nothing of the custody is written under the data dir: the boot record
//! (with the key service's `CiphertextBlob`) is in the store.

use std::time::Duration;

use keyward_enclave::config::{CustodyArgs, CustodyKind, KmsCustody};
use keyward_proxy::link::EnclaveLink;
use keyward_sdk::custody::deployment_hex;
use keyward_sdk::{Client, TlsOptions};

use crate::dev_custody::{Outcome, Ready};

/// How long a status or a genesis call may take (genesis waits for the key service).
const CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// How often the launcher looks again at a sealed enclave.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// The custody flags for the enclave (`--custody kms …`); none for Shamir
/// custody (the dev custodian).
pub fn enclave_args(custody: &CustodyArgs) -> Vec<String> {
    if custody.custody != CustodyKind::Kms {
        return Vec::new();
    }
    let mut args = vec!["--custody=kms".to_string()];
    if let Some(key) = &custody.custody_key {
        args.push(format!("--custody-key={key}"));
    }
    if let Some(endpoint) = &custody.custody_endpoint {
        args.push(format!("--custody-endpoint={endpoint}"));
    }
    if let Some(ca) = &custody.custody_ca {
        let ca = ca.canonicalize().unwrap_or_else(|_| ca.clone());
        args.push(format!("--custody-ca={}", ca.display()));
    }
    args.push(format!("--custody-credentials={}", custody.custody_credentials));
    args
}

/// `host:port` targets the proxy may connect to for the enclave.
pub fn outbound_targets(kms: Option<&KmsCustody>) -> anyhow::Result<Vec<String>> {
    kms.map(|kms| {
        keyward_proxy::outbound::target_of(&kms.endpoint)
            .ok_or_else(|| anyhow::anyhow!("--custody-endpoint {:?} is not https://HOST[:PORT]", kms.endpoint))
    })
    .into_iter()
    .collect()
}

/// The launcher's side of `--custody kms`.
pub struct KeyServiceCustody {
    key_arn: String,
    endpoint: String,
}

impl KeyServiceCustody {
    pub fn new(kms: &KmsCustody) -> KeyServiceCustody {
        KeyServiceCustody {
            key_arn: kms.key_arn.clone(),
            endpoint: kms.endpoint.clone(),
        }
    }

    /// What keeps the root (printed at every start).
    pub fn notice(&self) -> String {
        format!(
            "The root is kept by the custody key service: key {} at {} (released only to an attested enclave).",
            self.key_arn, self.endpoint
        )
    }

    /// Makes a freshly started (sealed) enclave Ready: genesis when it
    /// awaits one, else waits while it unseals itself through the key
    /// service. Still Sealed at `timeout`: the enclave's reason.
    pub async fn make_ready(&self, link: &EnclaveLink, endpoint: &str, timeout: Duration) -> anyhow::Result<Ready> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sealed_ca_pem = None;
        let mut initialised = false;
        let mut last_problem = String::from("the enclave did not answer");
        // The sealed reason is asked for once a second (a TLS connection each time).
        let mut looks = 0u32;
        loop {
            looks = looks.wrapping_add(1);
            match link.status(CALL_TIMEOUT).await {
                Ok(status) if status.health == "ok" => {
                    return Ok(Ready {
                        outcome: if sealed_ca_pem.is_some() {
                            Outcome::Unsealed
                        } else {
                            Outcome::AlreadyReady
                        },
                        sealed_ca_pem,
                    });
                }
                Ok(status) if !status.ca_certificate_pem.is_empty() => {
                    let client = Client::unauthenticated(endpoint)
                        .and_then(|c| {
                            c.with_tls(
                                TlsOptions::default().with_ca_bundle(status.ca_certificate_pem.clone().into_bytes()),
                            )
                        })
                        .map(|c| c.with_timeout(CALL_TIMEOUT))
                        .map_err(|e| anyhow::anyhow!("a client for {endpoint}: {e}"))?;
                    sealed_ca_pem = Some(status.ca_certificate_pem);
                    if !initialised {
                        match self.genesis(&client).await {
                            Ok(Some(ready)) => {
                                return Ok(Ready {
                                    outcome: ready,
                                    sealed_ca_pem,
                                });
                            }
                            Ok(None) => initialised = true,
                            Err(Attempt::Retry(e)) => last_problem = format!("{e:#}"),
                            Err(Attempt::Fatal(e)) => return Err(e),
                        }
                    } else if looks.is_multiple_of(10)
                        && let Some(reason) = sealed_reason(&client).await
                    {
                        last_problem = reason;
                    }
                }
                Ok(_) => last_problem = "the enclave serves no TLS identity yet".into(),
                Err(e) => last_problem = format!("the enclave's status: {e}"),
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the enclave is still sealed after {timeout:?}: {last_problem}");
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// `Keyward.InitCustody` without custodians. `Ok(None)`: the
    /// deployment exists already (the enclave unseals itself).
    async fn genesis(&self, client: &Client) -> Result<Option<Outcome>, Attempt> {
        match client.init_key_service_custody(None).await {
            Ok(output) => {
                println!(
                    "custody key service: genesis of deployment {} (root generated by key {} at {})",
                    deployment_hex(&output.deployment_id),
                    self.key_arn,
                    self.endpoint
                );
                Ok(Some(Outcome::Genesis))
            }
            Err(e @ (keyward_sdk::Error::Transport(_) | keyward_sdk::Error::Timeout(_))) => {
                Err(Attempt::Retry(e.into()))
            }
            Err(keyward_sdk::Error::Service { message, .. }) if message.contains("already initialised") => Ok(None),
            Err(other) => Err(Attempt::Fatal(anyhow::anyhow!(
                "genesis through the custody key service (key {} at {}) failed: {other}",
                self.key_arn,
                self.endpoint
            ))),
        }
    }
}

/// Why a sealed enclave is sealed: the message of its 503.
async fn sealed_reason(client: &Client) -> Option<String> {
    // Every API operation answers a sealed enclave's 503 before authentication.
    match client.list_tenants().await {
        Err(keyward_sdk::Error::Service { message, .. }) => Some(message),
        _ => None,
    }
}

/// Why a genesis attempt failed: worth another try, or not.
enum Attempt {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}
