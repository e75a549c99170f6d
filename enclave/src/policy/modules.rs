//! Policy modules at rest and in memory: the module bytes are stored sealed
//! under `policy/<tenant>/<sha256>`; compiled modules are cached by tenant
//! and SHA-256, least recently used out, bounded per tenant.
//! Nothing precompiled is ever read back from the host: after a restart a
//! module is compiled again from its sealed bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::sandbox::{CompiledPolicy, PolicyError};
use crate::store::{Records, StoreError};

pub const NAMESPACE: &str = "policy";

pub fn record_key(tenant: &str, sha256_hex: &str) -> String {
    format!("{tenant}/{sha256_hex}")
}

#[derive(Serialize, Deserialize)]
pub struct ModuleRecord {
    #[serde(with = "serde_bytes")]
    pub wasm: Vec<u8>,
}

/// Compiled modules by tenant and SHA-256 (hex), least recently used first
/// out. Bounded per tenant ([`CacheLimits::per_tenant`]) and in total
/// ([`CacheLimits::total`]): a tenant at its share evicts only its own least
/// recently used module, and when the whole cache is full the victim is the
/// least recently used module of the tenant holding the most. So one tenant
/// uploading any number of modules never evicts another tenant's, as long as
/// the other holds no more than it does. Keyed by tenant too, so a tenant
/// cannot learn from the cache's timing which modules another uses.
pub struct ModuleCache {
    limits: CacheLimits,
    state: Mutex<CacheState>,
}

/// How many compiled modules the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub total: usize,
    pub per_tenant: usize,
}

impl CacheLimits {
    /// The default: 256 modules, 16 per tenant.
    pub const DEFAULT: CacheLimits = CacheLimits {
        total: 256,
        per_tenant: 16,
    };
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<(String, String), (CompiledPolicy, u64)>,
    per_tenant: HashMap<String, usize>,
    /// Use counter: the last use of each entry, for LRU.
    clock: u64,
}

impl Default for ModuleCache {
    fn default() -> Self {
        Self::new(CacheLimits::DEFAULT)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("policy module {0} is not stored")]
    Missing(String),
    #[error(transparent)]
    Scheduler(#[from] super::scheduler::SchedulerError),
}

impl ModuleCache {
    pub fn new(limits: CacheLimits) -> Self {
        ModuleCache {
            limits,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Stores (sealed) and caches a module the caller compiled from `wasm`.
    pub async fn put(
        &self,
        records: &Records<'_>,
        tenant: &str,
        wasm: Vec<u8>,
        compiled: CompiledPolicy,
    ) -> Result<(), ModuleError> {
        let sha = compiled.sha256_hex();
        records
            .put(NAMESPACE, &record_key(tenant, &sha), &ModuleRecord { wasm })
            .await?;
        self.insert(tenant, sha, compiled);
        Ok(())
    }

    /// The compiled module `sha256_hex` of `tenant`; on a cache miss, its
    /// sealed bytes compiled by `compile` (the caller's scheduler).
    pub async fn get<F>(
        &self,
        records: &Records<'_>,
        tenant: &str,
        sha256_hex: &str,
        compile: F,
    ) -> Result<CompiledPolicy, ModuleError>
    where
        F: AsyncFnOnce(Vec<u8>) -> Result<CompiledPolicy, ModuleError>,
    {
        if let Some(found) = self.lookup(tenant, sha256_hex) {
            return Ok(found);
        }
        let record: ModuleRecord = records
            .get(NAMESPACE, &record_key(tenant, sha256_hex))
            .await?
            .ok_or_else(|| ModuleError::Missing(sha256_hex.to_owned()))?;
        let compiled = compile(record.wasm).await?;
        if compiled.sha256_hex() != sha256_hex {
            return Err(ModuleError::Missing(sha256_hex.to_owned()));
        }
        self.insert(tenant, sha256_hex.to_owned(), compiled.clone());
        Ok(compiled)
    }

    /// The stored bytes of a module (for `Keyward.GetKeyPolicyModule`).
    pub async fn bytes(records: &Records<'_>, tenant: &str, sha256_hex: &str) -> Result<Vec<u8>, ModuleError> {
        let record: ModuleRecord = records
            .get(NAMESPACE, &record_key(tenant, sha256_hex))
            .await?
            .ok_or_else(|| ModuleError::Missing(sha256_hex.to_owned()))?;
        Ok(record.wasm)
    }

    /// Compiled modules held for `tenant` now.
    pub fn cached_for(&self, tenant: &str) -> usize {
        self.lock().per_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn lookup(&self, tenant: &str, sha: &str) -> Option<CompiledPolicy> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let (compiled, used) = state.entries.get_mut(&(tenant.to_owned(), sha.to_owned()))?;
        *used = now;
        Some(compiled.clone())
    }

    fn insert(&self, tenant: &str, sha: String, compiled: CompiledPolicy) {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let key = (tenant.to_owned(), sha);
        if let Some(entry) = state.entries.get_mut(&key) {
            *entry = (compiled, now);
            return;
        }
        if self.limits.per_tenant == 0 || self.limits.total == 0 {
            return;
        }
        let held = state.per_tenant.get(tenant).copied().unwrap_or(0);
        if held >= self.limits.per_tenant {
            state.evict_lru_of(tenant);
        } else if state.entries.len() >= self.limits.total {
            // The tenant holding the most (ties: the one whose least recently
            // used module is the oldest) gives one up.
            let victim = state
                .per_tenant
                .iter()
                .max_by_key(|(t, n)| (**n, std::cmp::Reverse(state.oldest_of(t))))
                .map(|(t, _)| t.clone());
            if let Some(victim) = victim {
                state.evict_lru_of(&victim);
            }
        }
        state.entries.insert(key, (compiled, now));
        *state.per_tenant.entry(tenant.to_owned()).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CacheState {
    /// The last use of `tenant`'s least recently used module.
    fn oldest_of(&self, tenant: &str) -> u64 {
        self.entries
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, (_, used))| *used)
            .min()
            .unwrap_or(u64::MAX)
    }

    fn evict_lru_of(&mut self, tenant: &str) {
        let lru = self
            .entries
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .min_by_key(|(_, (_, used))| *used)
            .map(|(key, _)| key.clone());
        if let Some(key) = lru {
            self.entries.remove(&key);
            if let Some(n) = self.per_tenant.get_mut(tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_tenant.remove(tenant);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompiledPolicy {
        let engine = crate::policy::sandbox::PolicyEngine::new().expect("policy engine");
        let wat = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/policy_allow_all.wat"
        ));
        engine.compile(&wat::parse_str(wat).expect("parses")).expect("compiles")
    }

    #[test]
    fn a_tenant_evicts_only_its_own_least_recently_used() {
        let cache = ModuleCache::new(CacheLimits {
            total: 8,
            per_tenant: 3,
        });
        let p = policy();
        cache.insert("victim", "v1".into(), p.clone());
        cache.insert("victim", "v2".into(), p.clone());
        for n in 0..1000 {
            cache.insert("flooder", format!("f{n}"), p.clone());
            if n == 500 {
                assert!(cache.lookup("victim", "v1").is_some());
            }
        }
        assert_eq!(cache.cached_for("flooder"), 3);
        assert_eq!(cache.cached_for("victim"), 2);
        assert!(cache.lookup("victim", "v1").is_some() && cache.lookup("victim", "v2").is_some());
        // Its own most recent three, least recently used out.
        assert!(cache.lookup("flooder", "f999").is_some() && cache.lookup("flooder", "f997").is_some());
        assert!(cache.lookup("flooder", "f996").is_none());
        // Keyed by tenant: another tenant's entry is not found under the same hash.
        assert!(cache.lookup("flooder", "v1").is_none());
    }

    #[test]
    fn a_full_cache_takes_from_the_tenant_holding_the_most() {
        let cache = ModuleCache::new(CacheLimits {
            total: 4,
            per_tenant: 3,
        });
        let p = policy();
        for n in 0..3 {
            cache.insert("big", format!("b{n}"), p.clone());
        }
        cache.insert("small", "s0".into(), p.clone());
        // Full: a newcomer's module evicts the big tenant's LRU, not the small one's.
        cache.insert("new", "n0".into(), p.clone());
        assert_eq!(
            (
                cache.cached_for("big"),
                cache.cached_for("small"),
                cache.cached_for("new")
            ),
            (2, 1, 1)
        );
        assert!(cache.lookup("big", "b0").is_none(), "its least recently used went");
        // A lookup refreshes: b1 used, so b2 goes next.
        assert!(cache.lookup("big", "b1").is_some());
        cache.insert("new", "n1".into(), p.clone());
        assert!(cache.lookup("big", "b2").is_none() && cache.lookup("big", "b1").is_some());
        assert_eq!(cache.lock().entries.len(), 4);
    }
}
