//! Start-up: the enclave starts **Sealed** and gets its root key only
//! through its custody (docs/custody.md): *genesis* on the first start of
//! a deployment, an *unseal* (M custodians' shares) on every later start.
//! The same code runs in mock and nitro mode; only the NSM and the
//! attestation root under it differ.
//!
//! * [`read_custody`] reads the boot record (`boot/custody`, raw: it is not
//!   sealed, it is read before any key exists) and gives the state at start.
//!   No record over a store that already holds sealed records is **never**
//!   genesis (that would orphan every record): Sealed, saying the boot
//!   record is missing. A data directory of the older mock format (a root
//!   key wrapped by a public dev-only key, `boot/root-key`) is refused with
//!   a message to start afresh.
//! * [`genesis`] and [`unseal`] are the only ways to a [`Keyring`]; the
//!   caller keeps it once they return one (Ready). A refusal leaves the
//!   state Sealed with the reason, never half-unsealed.

use keyward_wire::{StoreOp, StoreResult};
use serde::{Deserialize, Serialize};

use crate::auth::credentials::{self, CredentialRecord, Role};
use crate::config::DevCredential;
use crate::custody::genesis::ShamirGenesis;
use crate::custody::record::{self, BootRecord, CustodyMethod};
use crate::custody::session::{UnsealProgress, UnsealSession};
use crate::custody::state::CustodyState;
use crate::custody::{CustodyError, deployment_hex};
use crate::keys::hierarchy::Hierarchy;
use crate::keystore::tenants;
use crate::nsm::Nsm;
use crate::seal::Sealer;
use crate::secret::Key256;
use crate::store::index::GLOBAL;
use crate::store::{Index, Records, StoreError, StoreTransport};

/// Store namespace for boot records (not sealed by the sealing key: they
/// hold what comes before it).
pub const BOOT_NAMESPACE: &str = "boot";
/// The root key of the older mock format (wrapped by a public dev-only key).
const OLD_ROOT_KEY_RECORD: &str = "root-key";
const DEV_CREDENTIAL_POINTER: &str = "dev-credential";
const DEV_OPERATOR_POINTER: &str = "dev-operator-credential";

/// Namespaces of sealed records: any entry in one means the store belongs
/// to a deployment, so a missing boot record is never a new deployment.
const SEALED_NAMESPACES: &[&str] = &[
    "key",
    "cred",
    "tenant-cred",
    "tenant",
    "audit",
    "alias",
    "policy",
    "import",
    "tls",
    crate::store::index::NAMESPACE,
];

/// What an enclave over a data directory of the older mock format answers.
pub const OLD_DATA_DIR: &str = "this data directory was made by an older Keyward: its root key is wrapped by the \
     public dev-only key (`boot/root-key`), a format this build no longer reads because it protects nothing. Start \
     afresh with an empty data directory (`keyward dev --data-dir NEW_DIR`; the keys of the old one cannot be \
     carried over), or keep running the older Keyward for it.";

/// What an enclave over sealed records without a boot record answers.
pub const BOOT_RECORD_MISSING: &str = "the boot record is missing (`boot/custody`) but the store already holds \
     sealed records: refusing to start a new deployment over them, which would orphan every record. Restore the \
     boot record (or the whole data directory) from a backup (docs/custody.md).";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the NSM failed: {0}")]
    Nsm(#[from] crate::nsm::NsmError),
    /// No root yet: what the enclave waits for (the 503's message).
    #[error("{0}")]
    Sealed(String),
    /// A custody step refused (a wrong share, bad genesis parameters, …).
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// A custody operation that does not apply to the current state
    /// (genesis of an initialised deployment, an unseal while Ready, …).
    #[error("{0}")]
    NotNow(String),
}

/// Everything keyed by the root: derived keys and the sealer.
pub struct Keyring {
    pub hierarchy: Hierarchy,
    pub sealer: Sealer,
    /// The authenticated index roots this enclave verified (issue 19).
    pub index: Index,
}

impl Keyring {
    pub fn new(root: Key256) -> Self {
        let hierarchy = Hierarchy::new(root);
        let sealer = Sealer::new(hierarchy.sealing_key());
        Keyring {
            hierarchy,
            sealer,
            index: Index::new(),
        }
    }

    /// Records over `transport`, checked against and kept in this keyring's index.
    pub fn records<'a>(&'a self, transport: &'a dyn StoreTransport) -> Records<'a> {
        Records::indexed(transport, &self.sealer, &self.index)
    }
}

#[derive(Serialize, Deserialize)]
struct DevPointer {
    access_key_id: String,
}

/// The enclave's custody at run time: the state, the boot record it read
/// (or wrote at genesis), and the current unseal session of a Shamir
/// custody (its key exists in memory only).
#[derive(Debug)]
pub struct Custody {
    pub state: CustodyState,
    pub record: Option<BootRecord>,
    pub session: Option<UnsealSession>,
}

/// The dev credentials `keyward dev` provisions (mock mode) each time the
/// enclave becomes Ready.
#[derive(Clone, Copy)]
pub struct DevCredentials<'a> {
    pub tenant: Option<&'a DevCredential>,
    pub operator: Option<&'a DevCredential>,
}

/// Reads the boot record through `transport` and gives the custody at
/// start: awaiting genesis (no record, an empty store), awaiting shares
/// (Shamir, with a fresh unseal session), awaiting the custody service
/// (KMS), or sealed for good (unreadable record, missing record over
/// sealed records, old mock format).
pub async fn read_custody(nsm: &dyn Nsm, transport: &dyn StoreTransport) -> Result<Custody, BootError> {
    let custody = match get_raw(transport, record::NAMESPACE, record::RECORD_KEY).await? {
        Some(bytes) => match BootRecord::decode(&bytes) {
            Ok(record) => {
                let state = CustodyState::at_start(Ok(Some(&record)));
                let session = match record.custody {
                    CustodyMethod::Shamir { .. } => Some(UnsealSession::start(&record, nsm)?),
                    CustodyMethod::Kms { .. } => None,
                };
                tracing::info!(
                    deployment = %deployment_hex(&record.deployment_id),
                    custody = record.custody.name(),
                    "sealed: waiting to be unsealed"
                );
                Custody {
                    state,
                    record: Some(record),
                    session,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sealed: the boot record cannot be read");
                Custody {
                    state: CustodyState::at_start(Err(&e)),
                    record: None,
                    session: None,
                }
            }
        },
        None => {
            let state = if get_raw(transport, BOOT_NAMESPACE, OLD_ROOT_KEY_RECORD).await?.is_some() {
                tracing::error!("sealed: a data directory of the older mock format (boot/root-key)");
                CustodyState::unusable(OLD_DATA_DIR.to_owned())
            } else if holds_sealed_records(transport).await? {
                tracing::error!("sealed: no boot record, but the store holds sealed records");
                CustodyState::unusable(BOOT_RECORD_MISSING.to_owned())
            } else {
                tracing::info!("sealed: a new deployment, waiting for genesis (kmsctl init)");
                CustodyState::at_start(Ok(None))
            };
            Custody {
                state,
                record: None,
                session: None,
            }
        }
    };
    Ok(custody)
}

/// What genesis gives: the keyring (the root stays in it) and the answer.
pub struct Genesis {
    pub keyring: Keyring,
    pub answer: GenesisAnswer,
}

/// What genesis answers: nothing secret (the shares and the operator's
/// secret travel only sealed to their holders).
#[derive(Debug)]
pub struct GenesisAnswer {
    pub record: BootRecord,
    pub packages: Vec<keyward_custody::share::SharePackage>,
    pub operator: Option<keyward_custody::operator::OperatorCredentialPackage>,
}

/// Where an unseal stands after an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealAnswer {
    pub received: usize,
    pub threshold: usize,
    pub ready: bool,
}

/// Genesis of a Shamir custody, only while awaiting it: a new root split
/// among the custodians, the boot record stored (compare-and-swap on its
/// absence: of two racing geneses one wins), the operator's first
/// credential stored under the new root, the dev credentials (mock mode).
/// `custody` is Ready afterwards; on any refusal it is unchanged.
pub async fn genesis(
    custody: &mut Custody,
    request: &ShamirGenesis,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Genesis, BootError> {
    may_start_genesis(custody, transport).await?;
    let outcome = crate::custody::genesis::genesis(request, nsm, now).map_err(|e| {
        tracing::warn!(error = %e, "genesis: refused; still awaiting genesis");
        custody.state.refused(&e, 0);
        e
    })?;
    commit_genesis(custody, outcome, nsm, transport, dev, now).await
}

/// Genesis of a KMS custody (`--custody kms`), only while awaiting it: the
/// custody key service generates the root and releases it to this enclave
/// (`custody::kms::genesis`); then as [`genesis`].
pub async fn kms_genesis(
    custody: &mut Custody,
    request: &crate::custody::kms::KmsGenesis,
    service: &dyn crate::custody::kms::KeyService,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Genesis, BootError> {
    may_start_genesis(custody, transport).await?;
    let outcome = crate::custody::kms::genesis(request, service, nsm, now).await?;
    commit_genesis(custody, outcome, nsm, transport, dev, now).await
}

/// Unseal by the custody key service (`--custody kms`): `Decrypt` with a
/// Recipient, the root checked against the commitment, then Ready with
/// this keyring. A refusal or an unreachable service leaves the custody
/// Sealed with the reason (shown in the 503 message) and is logged.
pub async fn kms_unseal(
    custody: &mut Custody,
    service: &dyn crate::custody::kms::KeyService,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Keyring, BootError> {
    let Some(record) = custody.record.as_ref() else {
        return Err(BootError::NotNow(not_unsealing(&custody.state)));
    };
    if !matches!(record.custody, CustodyMethod::Kms { .. }) || custody.state.is_ready() {
        return Err(BootError::NotNow(not_unsealing(&custody.state)));
    }
    let root = match crate::custody::kms::unseal(record, service, nsm).await {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!(error = %e, "unseal by the custody key service failed; still sealed");
            let _ = custody.state.custody_service_failed(e.to_string());
            return Err(e.into());
        }
    };
    let keyring = Keyring::new(root);
    {
        let records = keyring.records(transport);
        if let Err(e) = start_ready(&records, nsm, dev, now).await {
            let _ = custody
                .state
                .custody_service_failed(format!("the root matched but start-up failed: {e}"));
            return Err(e);
        }
    }
    custody
        .state
        .unsealed(record)
        .map_err(|e| BootError::NotNow(e.to_string()))?;
    tracing::info!(deployment = %deployment_hex(&record.deployment_id), "unsealed by the custody key service: ready");
    Ok(keyring)
}

/// Cluster join: Ready peers released `root` (already checked against the
/// boot record's commitment, `custody::join::JoinSession::open`) with
/// their signed checkpoints, merged into `seen` (per scope the highest
/// epoch any of the `peers` reported). The store must not be older than
/// `seen` in any scope, nor hide a tenant's root — the same check as at
/// unseal ([`check_fresh`]), before anything is written. Then Ready with
/// this keyring; a refusal leaves the custody Sealed with the reason
/// ([`CustodyError::StaleJoin`] for an older store).
#[allow(clippy::too_many_arguments)]
pub async fn joined(
    custody: &mut Custody,
    root: Key256,
    seen: &keyward_custody::checkpoint::Checkpoint,
    peers: usize,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Keyring, BootError> {
    let Some(record) = custody.record.as_ref() else {
        return Err(BootError::NotNow(not_unsealing(&custody.state)));
    };
    let keyring = Keyring::new(root);
    let records = keyring.records(transport);
    records.check_genesis().await?;
    let refusal = store_lags(&records, record, Some(seen), "the peers")
        .await?
        .map(|(lags, omission)| CustodyError::StaleJoin { lags, omission, peers });
    if let Some(e) = refusal {
        tracing::error!(error = %e, "cluster join: still sealed");
        let received = custody.session.as_ref().map_or(0, |s| s.progress().0);
        custody.state.refused(&e, received);
        return Err(e.into());
    }
    provision_dev(&records, nsm, dev, now).await?;
    drop(records);
    custody
        .state
        .unsealed(record)
        .map_err(|e| BootError::NotNow(e.to_string()))?;
    custody.session = None;
    tracing::info!(
        deployment = %deployment_hex(&record.deployment_id),
        epoch = keyring.index.epoch(),
        peer_epoch = seen.global,
        peers,
        "joined the cluster: ready"
    );
    Ok(keyring)
}

/// The boot record as stored (`None`: none); an unreadable one is an error.
pub async fn read_boot_record(transport: &dyn StoreTransport) -> Result<Option<BootRecord>, BootError> {
    match get_raw(transport, record::NAMESPACE, record::RECORD_KEY).await? {
        Some(bytes) => Ok(Some(BootRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Refuses genesis unless the custody awaits it over an empty store.
async fn may_start_genesis(custody: &mut Custody, transport: &dyn StoreTransport) -> Result<(), BootError> {
    if !custody.state.awaits_genesis() {
        return Err(BootError::NotNow(match &custody.record {
            Some(record) => format!(
                "this deployment is already initialised (deployment {}); genesis runs once",
                deployment_hex(&record.deployment_id)
            ),
            None => match custody.state.sealed_response() {
                Some(sealed) => format!("genesis is refused: {}", sealed.message),
                None => "this deployment is already initialised; genesis runs once".to_owned(),
            },
        }));
    }
    // The store was empty at start; make sure it still is.
    if holds_sealed_records(transport).await? {
        custody.state = CustodyState::unusable(BOOT_RECORD_MISSING.to_owned());
        return Err(BootError::NotNow(format!("genesis is refused: {BOOT_RECORD_MISSING}")));
    }
    Ok(())
}

/// Stores a genesis outcome (the boot record by compare-and-swap on its
/// absence, the operator's credential, the dev credentials) and makes the
/// custody Ready.
async fn commit_genesis(
    custody: &mut Custody,
    outcome: crate::custody::genesis::GenesisOutcome,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Genesis, BootError> {
    let crate::custody::genesis::GenesisOutcome {
        root,
        record,
        packages,
        operator,
    } = outcome;
    let keyring = Keyring::new(root);
    // The boot record and the genesis root of the authenticated index
    // (epoch 1) in one atomic batch: a store with a boot record always has
    // an index root, so a missing one is an omission, refused at unseal.
    let (index_key, index_root) = crate::store::genesis(&keyring.sealer, GLOBAL, 1)?;
    let put = StoreOp::Batch {
        writes: vec![
            keyward_wire::StoreWrite::Put {
                namespace: record::NAMESPACE.into(),
                key: record::RECORD_KEY.into(),
                expected: keyward_wire::Expected::Absent,
                value: record.encode()?,
            },
            keyward_wire::StoreWrite::Put {
                namespace: crate::store::index::NAMESPACE.into(),
                key: index_key,
                expected: keyward_wire::Expected::Version(0),
                value: index_root,
            },
        ],
    };
    match transport.call(put).await? {
        StoreResult::Committed(_) => {}
        StoreResult::Conflict { .. } => {
            return Err(BootError::NotNow(
                "another node initialised this deployment first; restart this one and unseal it".into(),
            ));
        }
        StoreResult::Error(e) => return Err(StoreError::Host(e).into()),
        other => return Err(StoreError::Protocol(format!("boot record write answered {other:?}")).into()),
    }
    {
        let records = keyring.records(transport);
        records.check_genesis().await?;
        if let Some(grant) = &operator {
            credentials::store_credential(&records, &grant.record(now)).await?;
            tracing::info!(access_key_id = %grant.access_key_id, "genesis: the operator's first credential stored");
        }
        provision_dev(&records, nsm, dev, now).await?;
    }
    custody
        .state
        .genesis_complete(&record)
        .map_err(|e| BootError::NotNow(e.to_string()))?;
    custody.record = Some(record.clone());
    custody.session = None;
    tracing::info!(deployment = %deployment_hex(&record.deployment_id), "genesis complete: ready");
    Ok(Genesis {
        keyring,
        answer: GenesisAnswer {
            record,
            packages,
            operator: operator.map(|grant| grant.package.clone()),
        },
    })
}

/// Where an unseal stands after a message was accepted.
// Built and moved once per accepted unseal message: the size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Unsealed {
    /// Still sealed: `received` of `threshold` shares.
    NeedMore { received: usize, threshold: usize },
    /// The M-th share rebuilt the committed root: Ready with this keyring;
    /// with the lags of a store rollback a custodian accepted (to audit).
    Ready(Box<Keyring>, Option<String>),
}

/// Takes one unseal message of the current session. A refusal is recorded
/// in the state (shown in the 503 message) and logged; the M-th valid share
/// makes the custody Ready, only after the root matched the commitment and
/// the dev credentials (mock mode) are in place.
pub async fn unseal(
    custody: &mut Custody,
    message: &[u8],
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Unsealed, BootError> {
    let (Some(session), Some(record)) = (custody.session.as_mut(), custody.record.as_ref()) else {
        return Err(BootError::NotNow(not_unsealing(&custody.state)));
    };
    let root = match session.accept(message) {
        Ok(UnsealProgress::NeedMore { received, threshold }) => {
            custody
                .state
                .share_accepted(received, threshold)
                .map_err(|e| BootError::NotNow(e.to_string()))?;
            return Ok(Unsealed::NeedMore { received, threshold });
        }
        Ok(UnsealProgress::Unsealed(root)) => root,
        Err(e) => {
            let received = session.progress().0;
            tracing::warn!(error = %e, received, "unseal: a message was refused; still sealed");
            custody.state.refused(&e, received);
            return Err(e.into());
        }
    };
    let claim = session.claim();
    let keyring = Keyring::new(root);
    let provisioned = {
        let records = keyring.records(transport);
        ready_after_unseal(&records, record, &claim, nsm, dev, now).await
    };
    let accepted = match provisioned {
        Ok(accepted) => accepted,
        Err(e) => {
            // The session is spent: a fresh one, so the custodians can retry.
            tracing::error!(error = %e, "unseal: the root matched but start-up failed; still sealed");
            custody.session = Some(UnsealSession::start(record, nsm)?);
            custody.state = CustodyState::at_start(Ok(Some(record)));
            if let BootError::Custody(stale @ CustodyError::StaleStore { .. }) = &e {
                custody.state.refused(stale, 0);
            }
            return Err(e);
        }
    };
    custody
        .state
        .unsealed(record)
        .map_err(|e| BootError::NotNow(e.to_string()))?;
    custody.session = None;
    tracing::info!(deployment = %deployment_hex(&record.deployment_id), "unsealed: ready");
    Ok(Unsealed::Ready(Box::new(keyring), accepted))
}

/// The end of a Shamir unseal, before Ready: the global index root exists,
/// the store is not older than the custodians' checkpoint (issue 19 item
/// 3), then the dev credentials (the first write: never to a refused
/// store). `Some(lags)`: older, and a custodian accepted it.
async fn ready_after_unseal(
    records: &Records<'_>,
    record: &BootRecord,
    claim: &crate::custody::session::Claim,
    nsm: &dyn Nsm,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<Option<String>, BootError> {
    records.check_genesis().await?;
    let accepted = check_fresh(records, record, claim).await?;
    provision_dev(records, nsm, dev, now).await?;
    Ok(accepted)
}

/// Compares the store's index epochs now with the highest checkpoint the
/// custodians sent. `Ok(None)`: not older; `Ok(Some(lags))`: older, and a
/// custodian sent `accept_store_rollback`; otherwise refused
/// ([`CustodyError::StaleStore`]). A tenant the global index holds whose
/// root is missing is refused too (an omission), checkpoint or not.
async fn check_fresh(
    records: &Records<'_>,
    record: &BootRecord,
    claim: &crate::custody::session::Claim,
) -> Result<Option<String>, BootError> {
    let Some((lags, omission)) = store_lags(records, record, claim.seen.as_ref(), "custodian").await? else {
        return Ok(None);
    };
    if claim.accept_store_rollback {
        tracing::warn!(lags = %lags, custodians = ?claim.custodians, "unseal: the store is older than its custodians' checkpoint; a custodian accepted the rollback (audited)");
        return Ok(Some(lags));
    }
    tracing::error!(lags = %lags, custodians = ?claim.custodians, "unseal refused: the store is older than its custodians' checkpoint; still sealed");
    Err(CustodyError::StaleStore { lags, omission }.into())
}

/// Where the store's index epochs now are older than `seen` (what
/// custodians or peers saw, `seen_by` in the text): `None` when not older
/// anywhere; else the lags (each scope, served vs seen) and whether only
/// roots are missing. A tenant the global index holds whose root is
/// missing is a lag too (an omission), `seen` or not.
async fn store_lags(
    records: &Records<'_>,
    record: &BootRecord,
    seen: Option<&keyward_custody::checkpoint::Checkpoint>,
    seen_by: &str,
) -> Result<Option<(String, bool)>, BootError> {
    match records.checkpoint(record.deployment_id).await {
        Ok(served) => {
            let Some(seen) = seen else { return Ok(None) };
            let lags = seen.lags(&served);
            if lags.is_empty() {
                return Ok(None);
            }
            let omission = lags.iter().all(|lag| lag.served == 0);
            let text: Vec<String> = lags.iter().map(|lag| lag.describe(seen_by)).collect();
            Ok(Some((text.join("; "), omission)))
        }
        Err(StoreError::Freshness {
            kind,
            record,
            expected,
            served,
        }) => Ok(Some((
            format!("{record}: expected {expected}, served {served}"),
            kind == crate::store::index::Violation::Omission,
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Why there is no unseal session to take a message or give a document.
pub fn not_unsealing(state: &CustodyState) -> String {
    if state.is_ready() {
        "the service is not sealed".to_owned()
    } else if state.awaits_genesis() {
        "this deployment has not been initialised: there is nothing to unseal (kmsctl init)".to_owned()
    } else {
        match state.sealed_response() {
            Some(sealed) => format!("there is no unseal session: {}", sealed.message),
            None => "there is no unseal session".to_owned(),
        }
    }
}

/// What every unseal (shares, custody key service, cluster join) does
/// before Ready: the global index root must exist (a store with a boot
/// record and without it had it hidden by the host, or is from before the
/// authenticated index: refused, still sealed), then the dev credentials.
async fn start_ready(records: &Records<'_>, nsm: &dyn Nsm, dev: DevCredentials<'_>, now: i64) -> Result<(), BootError> {
    records.check_genesis().await?;
    provision_dev(records, nsm, dev, now).await
}

async fn provision_dev(
    records: &Records<'_>,
    nsm: &dyn Nsm,
    dev: DevCredentials<'_>,
    now: i64,
) -> Result<(), BootError> {
    if let Some(tenant) = dev.tenant {
        ensure_dev_credential(
            records,
            nsm,
            tenant,
            vec![Role::KeyAdmin, Role::KeyUser],
            DEV_CREDENTIAL_POINTER,
            now,
        )
        .await?;
    }
    if let Some(operator) = dev.operator {
        ensure_dev_credential(records, nsm, operator, vec![Role::Operator], DEV_OPERATOR_POINTER, now).await?;
    }
    Ok(())
}

/// A record's bytes as stored, unsealed (boot records only).
async fn get_raw(transport: &dyn StoreTransport, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let get = StoreOp::Get {
        namespace: namespace.into(),
        key: key.into(),
    };
    match transport.call(get).await? {
        StoreResult::Value(value) => Ok(value.map(serde_bytes::ByteBuf::into_vec)),
        StoreResult::Error(e) => Err(StoreError::Host(e)),
        other => Err(StoreError::Protocol(format!("boot record read answered {other:?}"))),
    }
}

/// Whether any namespace of sealed records (or `boot`) has an entry.
async fn holds_sealed_records(transport: &dyn StoreTransport) -> Result<bool, StoreError> {
    for namespace in SEALED_NAMESPACES.iter().chain(&[BOOT_NAMESPACE]) {
        let list = StoreOp::List {
            namespace: (*namespace).into(),
            prefix: String::new(),
            start_after: None,
            limit: 1,
        };
        match transport.call(list).await? {
            StoreResult::Entries(entries) if entries.is_empty() => {}
            StoreResult::Entries(_) => return Ok(true),
            StoreResult::Error(e) => return Err(StoreError::Host(e)),
            other => return Err(StoreError::Protocol(format!("store listing answered {other:?}"))),
        }
    }
    Ok(false)
}

/// Makes `dev` the one dev credential of its kind (`pointer` names the
/// record remembering it), revoking the one a previous start used if it
/// differs. The tenant record is created when missing, of a fresh
/// generation drawn from `nsm`.
async fn ensure_dev_credential(
    records: &Records<'_>,
    nsm: &dyn Nsm,
    dev: &DevCredential,
    roles: Vec<Role>,
    pointer: &str,
    now: i64,
) -> Result<(), BootError> {
    if dev.tenant != crate::auth::OPERATOR && tenants::get(records, &dev.tenant).await?.is_none() {
        let generation = tenants::new_generation(nsm)?;
        tenants::ensure(records, &dev.tenant, now, generation).await?;
    }
    let record = CredentialRecord {
        access_key_id: dev.access_key_id.clone(),
        tenant: dev.tenant.clone(),
        secret_access_key: dev.secret_access_key.as_bytes().to_vec(),
        roles,
        created: now,
    };
    credentials::store_credential(records, &record).await?;
    if let Some(previous) = records.get::<DevPointer>(BOOT_NAMESPACE, pointer).await?
        && previous.access_key_id != dev.access_key_id
    {
        credentials::delete_credential(records, &dev.tenant, &previous.access_key_id).await?;
        tracing::info!(revoked = %previous.access_key_id, "replaced the previous dev credential");
    }
    let pointer_record = DevPointer {
        access_key_id: dev.access_key_id.clone(),
    };
    records.put(BOOT_NAMESPACE, pointer, &pointer_record).await?;
    Ok(())
}
