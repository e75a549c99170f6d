//! The enclave's custody state: **Sealed** (no root: every API request
//! answers HTTP 503, the proxy's `/healthz` says `sealed`) until genesis or
//! an unseal makes it **Ready**. Transitions are methods; an impossible one
//! is an error and changes nothing. A restart is always Sealed again.

use super::record::{BootRecord, CustodyMethod};
use super::{CustodyError, deployment_hex};

/// The HTTP status the API answers while sealed.
pub const SEALED_STATUS: u16 = 503;
/// The AWS-shaped error type answered while sealed (AWS SDKs retry 503s).
pub const SEALED_ERROR_TYPE: &str = "ServiceUnavailableException";
/// What `/healthz` reports in each state.
pub const HEALTH_SEALED: &str = "sealed";
pub const HEALTH_READY: &str = "ok";

/// Why the enclave is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedReason {
    /// No boot record: a new deployment waits for `kmsctl init`.
    AwaitingGenesis,
    /// Shamir custody: waiting for custodians' shares.
    AwaitingShares {
        deployment: String,
        received: usize,
        threshold: usize,
    },
    /// KMS custody: the custody key service has not (yet) released the root.
    AwaitingCustodyService {
        deployment: String,
        problem: Option<String>,
    },
    /// The boot record cannot be read: nothing can unseal it.
    InvalidBootRecord(String),
    /// The store cannot be used as it is (no boot record over sealed
    /// records, or a data directory of an older format): neither genesis
    /// nor an unseal can start; the message says what to do.
    Unusable(String),
}

/// Sealed or Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustodyState {
    Sealed {
        reason: SealedReason,
        /// The last refusal (a wrong share, a replayed message, …), shown
        /// in the 503 message until the next accepted step.
        last_refusal: Option<String>,
    },
    Ready {
        deployment: String,
    },
}

/// What the API answers to a request while sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedResponse {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

/// A transition that does not apply to the current state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot {action}: the enclave is {state}")]
pub struct StateError {
    pub action: &'static str,
    pub state: String,
}

impl CustodyState {
    /// The state at start, from reading the boot record: none → awaiting
    /// genesis; Shamir → awaiting shares; KMS → awaiting the custody
    /// service; unreadable → sealed for good (until restored).
    pub fn at_start(record: Result<Option<&BootRecord>, &CustodyError>) -> CustodyState {
        let reason = match record {
            Ok(None) => SealedReason::AwaitingGenesis,
            Ok(Some(record)) => {
                let deployment = deployment_hex(&record.deployment_id);
                match &record.custody {
                    CustodyMethod::Shamir { threshold, .. } => SealedReason::AwaitingShares {
                        deployment,
                        received: 0,
                        threshold: usize::from(*threshold),
                    },
                    CustodyMethod::Kms { .. } => SealedReason::AwaitingCustodyService {
                        deployment,
                        problem: None,
                    },
                }
            }
            Err(e) => SealedReason::InvalidBootRecord(e.to_string()),
        };
        CustodyState::Sealed {
            reason,
            last_refusal: None,
        }
    }

    /// Sealed for good (until the store is repaired): `problem` says why
    /// and what to do. Genesis is refused in this state.
    pub fn unusable(problem: String) -> CustodyState {
        CustodyState::Sealed {
            reason: SealedReason::Unusable(problem),
            last_refusal: None,
        }
    }

    /// Waiting for genesis (no boot record, an empty store).
    pub fn awaits_genesis(&self) -> bool {
        matches!(
            self,
            CustodyState::Sealed {
                reason: SealedReason::AwaitingGenesis,
                ..
            }
        )
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, CustodyState::Ready { .. })
    }

    /// `/healthz`: `sealed` or `ok`.
    pub fn health(&self) -> &'static str {
        if self.is_ready() { HEALTH_READY } else { HEALTH_SEALED }
    }

    /// Genesis wrote `record` and holds its root: Ready. Only from
    /// awaiting genesis (an existing deployment is never re-created).
    pub fn genesis_complete(&mut self, record: &BootRecord) -> Result<(), StateError> {
        match self {
            CustodyState::Sealed {
                reason: SealedReason::AwaitingGenesis,
                ..
            } => {
                *self = CustodyState::Ready {
                    deployment: deployment_hex(&record.deployment_id),
                };
                Ok(())
            }
            _ => Err(self.refuse("complete genesis")),
        }
    }

    /// A share was accepted: `received` of `threshold`.
    pub fn share_accepted(&mut self, received_now: usize, threshold_now: usize) -> Result<(), StateError> {
        match self {
            CustodyState::Sealed {
                reason: SealedReason::AwaitingShares {
                    received, threshold, ..
                },
                last_refusal,
            } => {
                *received = received_now;
                *threshold = threshold_now;
                *last_refusal = None;
                Ok(())
            }
            _ => Err(self.refuse("accept a share")),
        }
    }

    /// A custody step was refused: still Sealed, with the reason shown.
    /// After a refusal that spent the session's shares (a root that did
    /// not match), `received` starts again from `received_now`.
    pub fn refused(&mut self, error: &CustodyError, received_now: usize) {
        if let CustodyState::Sealed { reason, last_refusal } = self {
            if let SealedReason::AwaitingShares { received, .. } = reason {
                *received = received_now;
            }
            *last_refusal = Some(error.to_string());
        }
    }

    /// The KMS custody service failed (unreachable, or refused by its key
    /// policy): still Sealed, saying so.
    pub fn custody_service_failed(&mut self, problem: String) -> Result<(), StateError> {
        match self {
            CustodyState::Sealed {
                reason: SealedReason::AwaitingCustodyService { problem: p, .. },
                ..
            } => {
                *p = Some(problem);
                Ok(())
            }
            _ => Err(self.refuse("record a custody service failure")),
        }
    }

    /// An unseal (shares or KMS) produced the root of `record`, checked
    /// against its commitment: Ready.
    pub fn unsealed(&mut self, record: &BootRecord) -> Result<(), StateError> {
        let deployment_now = deployment_hex(&record.deployment_id);
        match self {
            CustodyState::Sealed {
                reason:
                    SealedReason::AwaitingShares { deployment, .. }
                    | SealedReason::AwaitingCustodyService { deployment, .. },
                ..
            } if *deployment == deployment_now => {
                *self = CustodyState::Ready {
                    deployment: deployment_now,
                };
                Ok(())
            }
            _ => Err(self.refuse("unseal")),
        }
    }

    /// What the API answers while sealed; `None` when Ready.
    pub fn sealed_response(&self) -> Option<SealedResponse> {
        let CustodyState::Sealed { reason, last_refusal } = self else {
            return None;
        };
        let mut message = match reason {
            SealedReason::AwaitingGenesis => {
                "Keyward is sealed: this deployment has not been initialised. An operator \
                 creates it with `kmsctl init --custodian NAME.pub ... --threshold M --operator-key OPERATOR.pub` \
                 (docs/custody.md)."
                    .to_owned()
            }
            SealedReason::AwaitingShares {
                deployment,
                received,
                threshold,
            } => format!(
                "Keyward is sealed: deployment {deployment} waits for its custodians ({received} of {threshold} \
                 shares received). Each custodian runs `kmsctl unseal --share FILE --key KEY --expected-pcr 0=HEX` \
                 (docs/custody.md)."
            ),
            SealedReason::AwaitingCustodyService { deployment, problem } => match problem {
                None => format!(
                    "Keyward is sealed: deployment {deployment} is getting its root from its custody key service."
                ),
                Some(problem) => format!(
                    "Keyward is sealed: deployment {deployment} could not get its root from its custody key \
                     service: {problem}. Check the custody key's policy (PCR0) and the endpoint (docs/custody.md)."
                ),
            },
            SealedReason::InvalidBootRecord(problem) => format!(
                "Keyward is sealed: its boot record cannot be read ({problem}). Restore the data directory from a \
                 backup (docs/custody.md)."
            ),
            SealedReason::Unusable(problem) => format!("Keyward is sealed: {problem}"),
        };
        if let Some(refusal) = last_refusal {
            message.push_str(" Last refusal: ");
            message.push_str(refusal);
        }
        Some(SealedResponse {
            status: SEALED_STATUS,
            error_type: SEALED_ERROR_TYPE,
            message,
        })
    }

    fn refuse(&self, action: &'static str) -> StateError {
        let state = match self {
            CustodyState::Ready { deployment } => format!("ready (deployment {deployment})"),
            CustodyState::Sealed { reason, .. } => match reason {
                SealedReason::AwaitingGenesis => "sealed, awaiting genesis".into(),
                SealedReason::AwaitingShares { deployment, .. } => {
                    format!("sealed, awaiting the shares of deployment {deployment}")
                }
                SealedReason::AwaitingCustodyService { deployment, .. } => {
                    format!("sealed, awaiting the custody service of deployment {deployment}")
                }
                SealedReason::InvalidBootRecord(_) => "sealed with an invalid boot record".into(),
                SealedReason::Unusable(_) => "sealed with a store it cannot use".into(),
            },
        };
        StateError { action, state }
    }
}
