//! Boot: obtain the root key, then make sure the bootstrap tenant exists.
//!
//! * **Mock mode** keeps the root key in the host store wrapped by a fixed,
//!   published dev-only key ([`MOCK_WRAPPING_CONTEXT`]); anyone with the data
//!   dir can unwrap it. That is what mock mode is for, and it says so loudly.
//! * **Nitro mode** generates the root key from the NSM and keeps it in memory
//!   only, until the attested unseal capability lands: nothing it seals
//!   survives a restart, and it never accepts a mock-wrapped root key.
//!
//! An existing root-key record that does not unwrap is fatal: the enclave never
//! replaces it, because that would silently orphan every record sealed under it.

use keyward_wire::{StoreOp, StoreResult};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::credentials::{self, CredentialRecord, Role};
use crate::config::{DevCredential, Mode};
use crate::keys::aead::{self, NONCE_LEN, TAG_LEN};
use crate::keys::hierarchy::Hierarchy;
use crate::keystore::tenants;
use crate::nsm::Nsm;
use crate::seal::Sealer;
use crate::secret::Key256;
use crate::store::index::GLOBAL;
use crate::store::{Index, Records, StoreError, StoreTransport};

/// Store namespace for boot records (not sealed by the sealing key: they hold it).
pub const BOOT_NAMESPACE: &str = "boot";
const ROOT_KEY_RECORD: &str = "root-key";
const DEV_CREDENTIAL_POINTER: &str = "dev-credential";
const DEV_OPERATOR_POINTER: &str = "dev-operator-credential";

/// The dev-only wrapping key is SHA-256 of this public string. It protects
/// nothing against anyone who reads this source; it only keeps the mock root
/// key from sitting in the data dir as raw bytes.
pub const MOCK_WRAPPING_CONTEXT: &[u8] = b"keyward/v1/mock-mode-root-key-wrapping/NOT-SECRET/DEV-ONLY";
const MOCK_AAD: &[u8] = b"keyward/v1/root-key/mock";
const MOCK_RECORD_VERSION: u8 = 0x4d; // 'M'

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored root key does not unwrap; refusing to replace it (data dir from another build or tampered)")]
    RootKeyForged,
    #[error("the NSM failed: {0}")]
    Nsm(#[from] crate::nsm::NsmError),
    #[error("the new root key could not be wrapped")]
    RootKeyWrap,
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

pub async fn boot(
    mode: Mode,
    nsm: &dyn Nsm,
    transport: &dyn StoreTransport,
    dev: Option<&DevCredential>,
    operator: Option<&DevCredential>,
    now: i64,
) -> Result<Keyring, BootError> {
    let keyring = match mode {
        Mode::Mock => mock_root_key(nsm, transport, 2).await?,
        Mode::Nitro => {
            tracing::warn!(
                "nitro mode: root key is ephemeral until attested unseal is configured; records do not survive a restart"
            );
            let mut bytes = [0u8; 32];
            nsm.fill_random(&mut bytes)?;
            let keyring = Keyring::new(Key256::from_bytes(bytes));
            // Nothing of an earlier boot opens under this root: the index
            // starts again over whatever root record is there.
            let key = crate::store::index::root_key(GLOBAL);
            let version = match transport
                .call(StoreOp::GetVersioned {
                    namespace: crate::store::index::NAMESPACE.into(),
                    key: key.clone(),
                })
                .await?
            {
                StoreResult::Versioned { version, .. } => version,
                other => return Err(StoreError::Protocol(format!("index root read answered {other:?}")).into()),
            };
            let (key, value) = crate::store::genesis(&keyring.sealer, GLOBAL, version + 1)?;
            let put = StoreOp::CasPut {
                namespace: crate::store::index::NAMESPACE.into(),
                key,
                expected: keyward_wire::Expected::Version(version),
                value,
            };
            match transport.call(put).await? {
                StoreResult::Committed(_) => {}
                other => return Err(StoreError::Protocol(format!("index root write answered {other:?}")).into()),
            }
            keyring
        }
    };
    let records = keyring.records(transport);
    // The global index root must exist; with it known, every later read is
    // checked against it (a hidden root is an omission from now on).
    records.check_genesis().await?;
    if let Some(dev) = dev {
        ensure_dev_credential(
            &records,
            nsm,
            dev,
            vec![Role::KeyAdmin, Role::KeyUser],
            DEV_CREDENTIAL_POINTER,
            now,
        )
        .await?;
    }
    if let Some(operator) = operator {
        ensure_dev_credential(&records, nsm, operator, vec![Role::Operator], DEV_OPERATOR_POINTER, now).await?;
    }
    Ok(keyring)
}

/// The dev-only wrapping key: SHA-256 of [`MOCK_WRAPPING_CONTEXT`].
fn mock_wrapping_key() -> Key256 {
    Key256::from_bytes(Sha256::digest(MOCK_WRAPPING_CONTEXT).into())
}

/// The mock root key from the store, created when there is none. Nodes of a
/// cluster booting at once race to create it: the write must find no record
/// (compare-and-swap), and the loser reads the winner's (`tries` bounds that).
///
/// The root key is created in one atomic batch with the genesis root of the
/// authenticated index (epoch 1), so a store with a root key always has an
/// index root: a missing one is an omission, refused at boot.
async fn mock_root_key(nsm: &dyn Nsm, transport: &dyn StoreTransport, tries: u32) -> Result<Keyring, BootError> {
    let get = StoreOp::Get {
        namespace: BOOT_NAMESPACE.into(),
        key: ROOT_KEY_RECORD.into(),
    };
    match transport.call(get).await? {
        StoreResult::Value(Some(wrapped)) => {
            let (version, rest) = wrapped.split_first().ok_or(BootError::RootKeyForged)?;
            if *version != MOCK_RECORD_VERSION || rest.len() != NONCE_LEN + 32 + TAG_LEN {
                return Err(BootError::RootKeyForged);
            }
            let (nonce, ct) = rest.split_at(NONCE_LEN);
            let plain = aead::open(&mock_wrapping_key(), nonce, MOCK_AAD, ct).map_err(|_| BootError::RootKeyForged)?;
            let root = Key256::from_slice(&plain).ok_or(BootError::RootKeyForged);
            let mut plain = plain;
            zeroize::Zeroize::zeroize(&mut plain);
            tracing::warn!(
                "MOCK MODE: root key unwrapped with the public dev-only key; this deployment protects nothing"
            );
            root.map(Keyring::new)
        }
        StoreResult::Value(None) => {
            let mut bytes = [0u8; 32];
            nsm.fill_random(&mut bytes)?;
            let root = Key256::from_bytes(bytes);
            let mut nonce = [0u8; NONCE_LEN];
            nsm.fill_random(&mut nonce)?;
            let ct = aead::seal(&mock_wrapping_key(), &nonce, MOCK_AAD, root.expose())
                .map_err(|_| BootError::RootKeyWrap)?;
            let mut record = vec![MOCK_RECORD_VERSION];
            record.extend_from_slice(&nonce);
            record.extend_from_slice(&ct);
            let keyring = Keyring::new(root);
            let (genesis_key, genesis) = crate::store::genesis(&keyring.sealer, GLOBAL, 1)?;
            let put = StoreOp::Batch {
                writes: vec![
                    keyward_wire::StoreWrite::Put {
                        namespace: BOOT_NAMESPACE.into(),
                        key: ROOT_KEY_RECORD.into(),
                        expected: keyward_wire::Expected::Absent,
                        value: record,
                    },
                    keyward_wire::StoreWrite::Put {
                        namespace: crate::store::index::NAMESPACE.into(),
                        key: genesis_key,
                        expected: keyward_wire::Expected::Version(0),
                        value: genesis,
                    },
                ],
            };
            match transport.call(put).await? {
                StoreResult::Committed(_) => {}
                StoreResult::Conflict { .. } if tries > 1 => {
                    tracing::info!("another node created the root key first; using it");
                    return Box::pin(mock_root_key(nsm, transport, tries - 1)).await;
                }
                StoreResult::Error(e) => return Err(StoreError::Host(e).into()),
                other => return Err(StoreError::Protocol(format!("root key write answered {other:?}")).into()),
            }
            tracing::warn!("MOCK MODE: created a new root key, stored wrapped by the public dev-only key");
            Ok(keyring)
        }
        StoreResult::Error(e) => Err(StoreError::Host(e).into()),
        other => Err(StoreError::Protocol(format!("root key read answered {other:?}")).into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsm::MockNsm;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn mock_root_key_persists_and_is_never_replaced_when_forged() {
        let store = MemoryStore::new();
        let first = boot(Mode::Mock, &MockNsm, &*store, None, None, 0).await.expect("boots");
        let again = boot(Mode::Mock, &MockNsm, &*store, None, None, 0)
            .await
            .expect("boots again");
        assert!(*first.hierarchy.sealing_key() == *again.hierarchy.sealing_key());
        // The root key is not stored in the clear.
        let root = *first.hierarchy.root_for_tests().expose();
        assert!(store.all_values().iter().all(|v| !v.windows(32).any(|w| w == root)));
        // A tampered root-key record is fatal, not replaced.
        let mut wrapped = store.all_values().remove(0);
        let last = wrapped.len() - 1;
        wrapped[last] ^= 1;
        let put = StoreOp::Put {
            namespace: BOOT_NAMESPACE.into(),
            key: ROOT_KEY_RECORD.into(),
            value: wrapped,
        };
        store.call(put).await.expect("put");
        assert!(matches!(
            boot(Mode::Mock, &MockNsm, &*store, None, None, 0).await,
            Err(BootError::RootKeyForged)
        ));
    }

    /// A node that looked before another node created the root key: its
    /// creation must not replace the other's (both would then seal under
    /// different keys); it takes the one that is there.
    #[tokio::test]
    async fn a_node_that_lost_the_race_to_create_the_root_key_uses_the_winners() {
        struct LateReader {
            store: std::sync::Arc<MemoryStore>,
            hidden: std::sync::atomic::AtomicBool,
        }
        impl StoreTransport for LateReader {
            fn call(&self, op: StoreOp) -> crate::store::StoreFuture<'_> {
                if matches!(&op, StoreOp::Get { namespace, .. } if namespace == BOOT_NAMESPACE)
                    && !self.hidden.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    return Box::pin(async { Ok(StoreResult::Value(None)) });
                }
                self.store.call(op)
            }
        }
        let store = MemoryStore::new();
        let winner = boot(Mode::Mock, &MockNsm, &*store, None, None, 0).await.expect("boots");
        let late = LateReader {
            store: std::sync::Arc::clone(&store),
            hidden: Default::default(),
        };
        let loser = boot(Mode::Mock, &MockNsm, &late, None, None, 0).await.expect("boots");
        assert!(*winner.hierarchy.sealing_key() == *loser.hierarchy.sealing_key());
        assert_eq!(store.raw(BOOT_NAMESPACE, ROOT_KEY_RECORD).0, 1, "written once");
    }

    #[tokio::test]
    async fn nitro_mode_never_reads_the_mock_root_key() {
        let store = MemoryStore::new();
        let mock = boot(Mode::Mock, &MockNsm, &*store, None, None, 0).await.expect("boots");
        let nitro = boot(Mode::Nitro, &MockNsm, &*store, None, None, 0)
            .await
            .expect("boots");
        assert!(*mock.hierarchy.sealing_key() != *nitro.hierarchy.sealing_key());
    }
}
