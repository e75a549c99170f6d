//! The request context: one value per request, created by `api::handle`
//! after authentication and passed down by reference to the request layer
//! and the keystore domain. It replaces ambient state (task-locals): whatever
//! an operation needs (who asks, for which tenant, when, the store, the
//! keyring, the policy facts) is in it, and whatever an operation reports
//! back for the audit record and the metrics goes into its [`Notes`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::context::{ContextDigest, digest};
use crate::audit::record::Attested;
use crate::auth::Principal;
use crate::bootstrap::Keyring;
use crate::error::KmsError;
use crate::keys::context::EncryptionContext;
use crate::keys::hierarchy::TenantGeneration;
use crate::policy::context::RequestFacts;
use crate::secret::Key256;
use crate::service::Enclave;
use crate::store::Records;

/// Everything an operation needs, for one request.
pub struct Ctx<'a> {
    pub enclave: &'a Enclave,
    pub keyring: &'a Keyring,
    pub records: Records<'a>,
    /// The authenticated caller (its tenant is `principal.tenant`).
    pub principal: Principal,
    /// The request's time: every check of the request uses this one instant.
    pub now: OffsetDateTime,
    /// What the request did, for its audit record (see [`Notes`]).
    pub notes: Notes,
    /// What policy modules see of the request (ABI v1 `request`, `action`).
    pub facts: Mutex<RequestFacts>,
    /// The generation of the principal's tenant, from its sealed record:
    /// set by `api::handle` (which reads that record), or on first use by
    /// `keystore::keys::tenant_generation`. Every tenant key is derived with it.
    tenant_generation: OnceLock<TenantGeneration>,
}

impl<'a> Ctx<'a> {
    /// A context for `principal` at `now`, with empty notes and no policy
    /// facts (an empty action; see [`Ctx::with_facts`]).
    pub fn new(
        enclave: &'a Enclave,
        keyring: &'a Keyring,
        records: Records<'a>,
        principal: Principal,
        now: OffsetDateTime,
    ) -> Self {
        Ctx {
            enclave,
            keyring,
            records,
            principal,
            now,
            notes: Notes::default(),
            facts: Mutex::new(RequestFacts::default()),
            tenant_generation: OnceLock::new(),
        }
    }

    /// This context with the generation of the principal's tenant.
    #[must_use]
    pub fn with_tenant_generation(self, generation: TenantGeneration) -> Self {
        let _ = self.tenant_generation.set(generation);
        self
    }

    /// The generation of the principal's tenant, when known.
    pub fn tenant_generation(&self) -> Option<TenantGeneration> {
        self.tenant_generation.get().copied()
    }

    /// Remembers the generation of the principal's tenant (the first one set stays).
    pub fn set_tenant_generation(&self, generation: TenantGeneration) {
        let _ = self.tenant_generation.set(generation);
    }

    /// The key-encryption key of `tenant`, which must be the principal's
    /// tenant with its generation known (keys are only ever opened by their
    /// own tenant); never derived without the generation.
    pub fn tenant_kek(&self, tenant: &str) -> Result<Arc<Key256>, KmsError> {
        let generation = self.own_generation(tenant)?;
        Ok(self.keyring.hierarchy.tenant_kek(tenant, &generation))
    }

    /// The HMAC key of `tenant`'s imported-material fingerprints, as [`Ctx::tenant_kek`].
    pub fn material_fingerprint_key(&self, tenant: &str) -> Result<Key256, KmsError> {
        let generation = self.own_generation(tenant)?;
        Ok(self.keyring.hierarchy.material_fingerprint_key(tenant, &generation))
    }

    fn own_generation(&self, tenant: &str) -> Result<TenantGeneration, KmsError> {
        match self.tenant_generation() {
            Some(generation) if tenant == self.principal.tenant => Ok(generation),
            _ => {
                tracing::error!(tenant = %tenant, "a tenant key was asked for without the tenant's generation");
                Err(KmsError::InternalDetail(format!(
                    "The generation of tenant {tenant} is not known to this request; none of its keys is opened."
                )))
            }
        }
    }

    /// The principal's tenant's audit-context key, when its generation is known.
    fn audit_context_key(&self) -> Option<Key256> {
        let generation = self.tenant_generation();
        if generation.is_none() {
            tracing::error!(tenant = %self.principal.tenant, "encryption context not noted: tenant generation unknown");
        }
        generation.map(|g| self.keyring.hierarchy.audit_context_key(&self.principal.tenant, &g))
    }

    /// This context with the request's policy facts.
    #[must_use]
    pub fn with_facts(self, facts: RequestFacts) -> Self {
        Ctx {
            facts: Mutex::new(facts),
            ..self
        }
    }

    pub fn region(&self) -> &str {
        &self.enclave.config.region
    }

    /// Notes the operation's encryption context for the audit record (keys,
    /// and a keyed hash under the tenant's audit-context key; never the values).
    pub fn note_encryption_context(&self, context: &EncryptionContext) {
        if let Some(key) = self.audit_context_key() {
            self.notes.encryption_context(digest(&key, context));
        }
    }

    /// Notes ReEncrypt's source encryption context, as [`Ctx::note_encryption_context`].
    pub fn note_source_encryption_context(&self, context: &EncryptionContext) {
        if let Some(key) = self.audit_context_key() {
            self.notes.source_encryption_context(digest(&key, context));
        }
    }

    /// The request's policy facts (held briefly; never across an `.await`).
    pub fn facts(&self) -> MutexGuard<'_, RequestFacts> {
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a request reports back up while it runs: the key it acted on, the
/// policy module that decided, what a success should say in its audit
/// `Reason`, the verified recipient and the PCRs policies check, the
/// encryption context's digest, and the time spent in policy decisions. Written through `&self`
/// (the context is shared by reference), read once by `api::handle`.
#[derive(Debug, Default)]
pub struct Notes {
    inner: Mutex<AuditNotes>,
}

/// The notes of one request, as `api::handle` puts them in its audit record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditNotes {
    /// ARN of the key the request acted on (the last one noted).
    pub key_arn: String,
    /// SHA-256 hex of the policy module that decided (the last one run).
    pub policy_module: String,
    /// What a successful request did (e.g. a key-material fingerprint).
    pub detail: String,
    /// Microseconds spent in policy enforcement.
    pub policy_micros: u64,
    /// The verified recipient: its document's module id and all its PCRs.
    pub recipient: Option<(String, BTreeMap<u8, Vec<u8>>)>,
    /// PCR indices the attestation policies of the keys acted on check.
    pub checked_pcrs: BTreeSet<u8>,
    /// The operation's encryption context (ReEncrypt: the destination's).
    pub context: Option<ContextDigest>,
    /// ReEncrypt's source encryption context.
    pub source_context: Option<ContextDigest>,
}

impl AuditNotes {
    /// What the audit record says was attested: the recipient's module id,
    /// its PCR0 and every PCR a policy checks (that the document has).
    pub fn attested(&self) -> Attested {
        let Some((module_id, pcrs)) = &self.recipient else {
            return Attested::default();
        };
        let pcrs = std::iter::once(0)
            .chain(self.checked_pcrs.iter().copied())
            .filter_map(|index| pcrs.get(&index).map(|value| (index, hex::encode(value))))
            .collect();
        Attested {
            module_id: module_id.clone(),
            pcrs,
        }
    }
}

impl Notes {
    fn with<T>(&self, f: impl FnOnce(&mut AuditNotes) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Notes the key the request acts on.
    pub fn key(&self, arn: &str) {
        self.with(|n| arn.clone_into(&mut n.key_arn));
    }

    /// Notes the policy module that decided.
    pub fn policy(&self, sha256_hex: &str) {
        self.with(|n| sha256_hex.clone_into(&mut n.policy_module));
    }

    /// Adds time spent in policy enforcement.
    pub fn policy_time(&self, spent: Duration) {
        let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        self.with(|n| n.policy_micros = n.policy_micros.saturating_add(micros));
    }

    /// Notes the verified recipient (module id and PCRs of its document).
    pub fn recipient(&self, module_id: &str, pcrs: &BTreeMap<u8, Vec<u8>>) {
        self.with(|n| n.recipient = Some((module_id.to_owned(), pcrs.clone())));
    }

    /// Notes PCR indices an attestation policy checks.
    pub fn checked_pcrs(&self, indices: impl IntoIterator<Item = u8>) {
        self.with(|n| n.checked_pcrs.extend(indices));
    }

    /// Notes the digest of the operation's encryption context.
    pub fn encryption_context(&self, digest: ContextDigest) {
        self.with(|n| n.context = Some(digest));
    }

    /// Notes the digest of ReEncrypt's source encryption context.
    pub fn source_encryption_context(&self, digest: ContextDigest) {
        self.with(|n| n.source_context = Some(digest));
    }

    /// Notes what a successful request did, for its audit `Reason`. Never pass a secret.
    pub fn detail(&self, detail: &str) {
        self.with(|n| detail.clone_into(&mut n.detail));
    }

    /// The notes so far, leaving them empty.
    pub fn take(&self) -> AuditNotes {
        self.with(std::mem::take)
    }
}
