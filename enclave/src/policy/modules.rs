//! Policy modules at rest and in memory: the module bytes are stored sealed
//! under `policy/<tenant>/<sha256>`; compiled modules are cached by SHA-256.
//! Nothing precompiled is ever read back from the host: after a restart a
//! module is compiled again from its sealed bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::sandbox::{CompiledPolicy, PolicyEngine, PolicyError};
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

/// Compiled modules by SHA-256 (hex). Compilation is deterministic in the
/// module bytes, so one cache serves every tenant that uploaded them.
#[derive(Default)]
pub struct ModuleCache {
    compiled: Mutex<HashMap<String, CompiledPolicy>>,
}

/// Most compiled modules kept in memory.
const MAX_CACHED: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("policy module {0} is not stored")]
    Missing(String),
}

impl ModuleCache {
    /// Validates, compiles, stores (sealed) and caches a module; returns it.
    pub async fn put(
        &self,
        engine: &PolicyEngine,
        records: &Records<'_>,
        tenant: &str,
        wasm: Vec<u8>,
    ) -> Result<CompiledPolicy, ModuleError> {
        let compiled = engine.compile(&wasm)?;
        let sha = compiled.sha256_hex();
        records
            .put(NAMESPACE, &record_key(tenant, &sha), &ModuleRecord { wasm })
            .await?;
        self.insert(sha, compiled.clone());
        Ok(compiled)
    }

    /// The compiled module `sha256_hex` of `tenant`, compiling it from its
    /// sealed bytes on a cache miss.
    pub async fn get(
        &self,
        engine: &PolicyEngine,
        records: &Records<'_>,
        tenant: &str,
        sha256_hex: &str,
    ) -> Result<CompiledPolicy, ModuleError> {
        if let Some(found) = self.lock().get(sha256_hex) {
            return Ok(found.clone());
        }
        let record: ModuleRecord = records
            .get(NAMESPACE, &record_key(tenant, sha256_hex))
            .await?
            .ok_or_else(|| ModuleError::Missing(sha256_hex.to_owned()))?;
        let compiled = engine.compile(&record.wasm)?;
        if compiled.sha256_hex() != sha256_hex {
            return Err(ModuleError::Missing(sha256_hex.to_owned()));
        }
        self.insert(sha256_hex.to_owned(), compiled.clone());
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

    fn insert(&self, sha: String, compiled: CompiledPolicy) {
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(sha, compiled);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CompiledPolicy>> {
        self.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
