//! The policy sandbox: compiles customer key policies (WebAssembly core
//! modules, ABI v1) once at upload and evaluates them on every key operation,
//! failing closed. Stock wasmtime from crates.io, no patches.
//!
//! Modules: `upload` (section and export checks), `config` (the engine and
//! its pooling allocator), `instance` (one instance for one decision),
//! `decision` (the decision document and the sandbox's denials), `slots`
//! (concurrency and the epoch ticker).
//!
//! # ABI v1
//! A policy is a core module with **no imports** and **no start function**
//! that exports:
//! * `memory`: its (only, non-shared, 32-bit) linear memory;
//! * `keyward_alloc(len: i32) -> i32`: a buffer of `len` bytes for the context;
//! * `keyward_evaluate(ptr: i32, len: i32) -> i64`: the decision, as a pointer
//!   (high 32 bits) and length (low 32 bits) into `memory`;
//! * `keyward_policy_abi_v1: () -> ()`: the ABI marker (never called).
//!
//! The input is the request context as UTF-8 JSON (at most
//! [`MAX_CONTEXT_BYTES`]); the output is UTF-8 JSON
//! `{"allow": bool, "reason": "…"}` (at most [`MAX_DECISION_BYTES`]; `reason`
//! may be omitted; no other field is accepted; a field given twice is
//! malformed). Anything else denies, with a reason naming the failure: a trap,
//! running out of fuel, the wall-clock (epoch) deadline, the memory limit, an
//! out-of-bounds pointer or length, a malformed decision.
//!
//! # Isolation
//! **Guarantee: every decision observes only the module's initial state and
//! its own context.** Nothing a policy writes (memory, globals, tables, its
//! memory size) survives into the next decision, for the same request or any
//! other, whether the decision ended normally or was stopped half-way (trap,
//! fuel, deadline, memory limit).
//!
//! How: **every decision runs in a new instance in a new [`Store`]** (from
//! the module's [`InstancePre`]), and the store is dropped when the decision
//! ends, however it ended. Nothing reaches an instance's state but through
//! its store, so globals, tables, the instance's context and its memory size
//! are new for every decision. What outlives a decision is wasmtime's
//! pooling allocator's **slot**: the address space of one instance's linear
//! memory and table, kept warm with the last module's memory image mapped
//! and handed to a later instance (of the same module, preferably). Stock
//! wasmtime 48 resets a slot when the store that held it is dropped
//! (`MemoryImageSlot::clear_and_remain_ready`, then `instantiate` for the next
//! instance). Keyward ships `pagemap_scan(Enabled::Auto)` (`config.rs`):
//! * **linear memory, kernel with `PAGEMAP_SCAN` (Linux 6.7+)**: the reset
//!   asks the kernel (`PAGEMAP_SCAN` on `/proc/self/pagemap`,
//!   `sys/unix/pagemap.rs::reset_with_pagemap`) for every page of the
//!   memory's accessible part (its size when the store was dropped, grown
//!   pages included) whose entry is a **private page**: not the shared zero
//!   page, not a page of the image's file mapping, and present **or
//!   swapped** (a migration entry is a swap-type entry). Those are rewritten
//!   from the module's image (data segments, zeros around them) up to
//!   `MEMORY_KEEP_RESIDENT` bytes, and any beyond that budget are
//!   `madvise(MADV_DONTNEED)`d. The pages it skips are, by their entries,
//!   still the pristine copy-on-write mapping of the image, or zeros, or
//!   never touched: a decision cannot change a byte without the kernel giving
//!   that page a private copy, which the scan reports. If the scan fails, the
//!   rest is reset blindly (below);
//! * **linear memory, older kernel**: the blind reset
//!   (`pagemap_disabled::reset_with_pagemap`): the first
//!   `MEMORY_KEEP_RESIDENT` bytes of the accessible part are rewritten
//!   unconditionally from the image, and everything past them is
//!   `madvise(MADV_DONTNEED)`d, which drops the slot's private pages so that
//!   the next access sees the pristine mapping. It asks the kernel nothing;
//! * in both: memory a decision grew is made inaccessible again (`mprotect`)
//!   when the next instance's initial size is set up; a slot whose image is
//!   another module's has that image replaced by zeros first
//!   (`remove_image`). If the reset fails, the slot is not kept (wasmtime
//!   deallocates it);
//! * **tables**: `TABLE_KEEP_RESIDENT` bytes rewritten, the rest
//!   `madvise`d, then instantiation writes the element segments;
//! * **globals** and the instance's context: written by instantiation.
//!
//! So a decision sees exactly what a brand-new instance would.
//! **wasmtime#14357** (the scan skipped written pages that were not present:
//! swapped out, or migrating, which let the next instance in the slot read
//! them) cannot apply: 48.0.11, the version Cargo.lock pins, selects pages
//! present *or* swapped, and resumes a scan whose output buffer filled up
//! (checked in its source; `docs/upstream-wasmtime.md`); and a Nitro
//! enclave has no swap. What the scan rests on beyond the blind reset is the
//! kernel's page-table walk, and the kernel is already the enclave's: it is
//! part of the measured image (PCR0) and enforces every other boundary the
//! enclave relies on. One kernel feature could mislead the scan: KSM with
//! `use_zero_pages` turns an all-zero private page into the shared zero page,
//! which the scan skips; it applies only to memory marked mergeable
//! (`MADV_MERGEABLE`, `PR_SET_MEMORY_MERGE`), which neither wasmtime nor
//! Keyward marks, and what it could leave behind is zeros where the image
//! had data (a wrong initial state, not another decision's data). The
//! isolation probes run with this setting and with the blind reset forced.
//!
//! Per-store state (fuel, the epoch deadline, the limiter's flags) is new
//! with each store. A decision's context is gone from memory when its slot is
//! reset, i.e. as soon as the decision ends.
//!
//! The isolation probe tests (`tests.rs`) check all of it:
//! `policy_isolation_probe` (a call counter in a global, its data segment, a
//! grown page, its memory size and a table slot it sets),
//! `policy_isolation_probe_reset` (counters in non-exported and exported
//! globals, a moved stack pointer, its data segment and 32 scattered pages
//! over 256 KiB, so both the rewritten part and the `madvise`d part; the
//! byte after a short context that a longer earlier one wrote; its memory
//! size; plus decisions that grow memory or trap in between) and
//! `policy_isolation_probe_no_data` (memory that starts as zeros, a v128
//! global) allow only when they see 1 everywhere: sequentially, after traps
//! and out-of-fuel, concurrently, in slots the pool provably recycled, with
//! the production setting and with the blind reset forced; and each probe
//! denies when run twice in one instance, so they do notice leaked state.
//!
//! Not used, and why:
//! * reusing an instance across decisions (reset in place): stock wasmtime
//!   has no API to reset an instance (non-exported globals, like a Rust
//!   module's stack pointer, are out of an embedder's reach, by design);
//!   Keyward carried a patched wasmtime for it and retired it (a fork of a
//!   sandbox cannot take upstream's security fixes the day they ship). The
//!   proposal for upstream: `docs/upstream-wasmtime.md`;
//! * the blind reset everywhere (what Keyward shipped first): it asks the
//!   kernel nothing, but rewrites 128 KiB on every decision whatever the
//!   module touched, which cost ~20 % of a policy Decrypt's throughput
//!   (`BENCHMARKS.md`); it remains the fallback on older kernels;
//! * memory protection keys: they let the pool pack slots without guard
//!   regions; they reset nothing, and are experimental in wasmtime 48.
//!
//! Per decision the sandbox bounds:
//! * instructions: [`FUEL_PER_DECISION`] units of fuel (about one per wasm
//!   instruction; see the constant);
//! * wall-clock time: an epoch deadline of `EPOCH_DEADLINE_TICKS` ticks of
//!   `EPOCH_TICK` (a background thread ticks the engine's epoch), a backstop
//!   for when fuel alone would take too long (e.g. a loaded machine);
//! * memory: [`MAX_MEMORY_BYTES`] of linear memory (growing past it traps),
//!   one memory, one table of at most `MAX_TABLE_ELEMENTS` elements;
//! * stack: `MAX_WASM_STACK` bytes of wasm stack (deeper recursion traps).
//!   Evaluations run on the caller's thread, so the caller's thread needs
//!   comfortably more stack than this (Rust and tokio threads have 2 MiB);
//! * concurrency: at most the pool's slots (`--memory-budget` sizes them,
//!   `PolicyEngine::with_slots`; at most `MAX_CONCURRENT_EVALUATIONS`) exist at
//!   once; further callers wait up to `SLOT_WAIT` for one to finish, then deny.
//!
//! The engine has wasm threads and shared memory, memory64, multi-memory and
//! custom page sizes off; NaNs are canonicalised and relaxed SIMD is
//! deterministic, so a decision depends only on the module and the context.
//!
//! Instances come from wasmtime's pooling allocator (slots reserved once, at
//! start-up). If the pool cannot be reserved, the engine falls back to on-demand
//! allocation (logged as a warning): every instance then gets new memory from
//! the kernel, and the same per-store limits apply.
//!
//! # Cost
//! See `BENCHMARKS.md` (policy section) for the measured figures and the
//! commands: a decision of a trivial module is a few microseconds, most of
//! it creating and dropping the store and instance and the slot reset; a
//! module built with the `keyward-policy` SDK adds its own work (reading the
//! context: ~20,000 units of fuel on a typical one). Compiling a small module
//! at upload takes a few milliseconds.
//!
//! Callers on async threads use [`PolicyEngine::evaluate_inline`] first: the
//! decision within [`INLINE_FUEL`] and one epoch tick, without waiting for a
//! slot, and only if that is not enough [`PolicyEngine::evaluate`] where
//! blocking is acceptable (the enclave: `policy::scheduler`, which also runs
//! every compilation, fairly between tenants).

mod config;
mod decision;
mod instance;
mod slots;
mod upload;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
#[cfg(doc)]
use wasmtime::Store;
use wasmtime::{Enabled, Engine, InstancePre, Linker, Module, ModuleExport};

use decision::Failure;
use instance::{Live, StoreState};
use slots::{EpochTicker, Slots};

/// Largest module accepted at upload.
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
/// Largest linear memory of an instance (initial size and growth).
pub const MAX_MEMORY_BYTES: usize = 16 * 1024 * 1024;
/// Fuel for one decision (`keyward_alloc` and `keyward_evaluate` together).
///
/// Wasmtime charges about one unit per wasm instruction (control-flow markers
/// such as `block`, `loop`, `end` and `nop` are free), so this is roughly twenty
/// million instructions: a few milliseconds of Cranelift code. Measured: the
/// SDK's context reader needs ~4.6 M for the largest valid context (3,906 tiny
/// encryption-context entries and 50 maximal tags), so 20 M leaves headroom;
/// it is a hard bound on a policy that never returns.
pub const FUEL_PER_DECISION: u64 = 20_000_000;
/// Fuel for a decision tried on the caller's own (async) thread by
/// [`PolicyEngine::evaluate_inline`]: a real policy needs a few thousand to a
/// few tens of thousands; a module that needs more is run again from the
/// start, off the async threads, with the full [`FUEL_PER_DECISION`]. About
/// a millisecond at most.
pub const INLINE_FUEL: u64 = 200_000;
/// Largest request context handed to a policy.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;
/// Largest decision read back from a policy.
pub const MAX_DECISION_BYTES: usize = 4096;

/// How often the background thread advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Epoch ticks a decision may run for: 90–100 ms of wall-clock time.
const EPOCH_DEADLINE_TICKS: u64 = 10;
/// Wasm stack available to a decision.
const MAX_WASM_STACK: usize = 256 * 1024;
/// Instances that may exist at once (the size of the pool).
const MAX_CONCURRENT_EVALUATIONS: u32 = 256;
/// Elements of a policy's table (function pointers of indirect calls).
const MAX_TABLE_ELEMENTS: usize = 10_000;
/// How long an evaluation waits for a free instance slot before it denies.
const SLOT_WAIT: Duration = Duration::from_secs(1);
const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// Why a module was refused at upload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy module is larger than {MAX_MODULE_BYTES} bytes")]
    TooLarge,
    #[error("policy module is not a valid WebAssembly core module: {0}")]
    Invalid(String),
    #[error("policy module imports something; policies may import nothing")]
    Imports,
    #[error("policy module has a start function; policies may not have one")]
    StartFunction,
    #[error("policy module uses shared memory (threads); policies may not")]
    SharedMemory,
    #[error("policy module does not export `{0}` (ABI v1)")]
    MissingExport(&'static str),
    #[error("policy module export `{0}` has the wrong type (ABI v1)")]
    BadExportType(&'static str),
    #[error("policy engine error: {0}")]
    Engine(String),
}

/// A policy's answer (or the sandbox's denial when the policy failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub reason: String,
}

impl Decision {
    fn deny(reason: String) -> Self {
        Decision { allow: false, reason }
    }
}

/// Per-decision limits of an engine (tests shrink or stretch them).
#[derive(Debug, Clone, Copy)]
struct Limits {
    fuel: u64,
    deadline_ticks: u64,
    slots: u32,
}

impl Limits {
    const PRODUCTION: Limits = Limits {
        fuel: FUEL_PER_DECISION,
        deadline_ticks: EPOCH_DEADLINE_TICKS,
        slots: MAX_CONCURRENT_EVALUATIONS,
    };
}

/// Compiles and evaluates policies; one per enclave. `Send + Sync`.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<StoreState>,
    limits: Limits,
    pooling: bool,
    slots: Arc<Slots>,
    /// Modules compiled since start (upload, a cache miss, `TestPolicy`).
    compilations: std::sync::atomic::AtomicU64,
    _ticker: EpochTicker,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("pooling", &self.pooling)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A validated, compiled policy module. Cheap to clone.
#[derive(Clone)]
pub struct CompiledPolicy {
    inner: Arc<CompiledInner>,
}

struct CompiledInner {
    pre: InstancePre<StoreState>,
    memory: ModuleExport,
    alloc: ModuleExport,
    evaluate: ModuleExport,
    sha256: [u8; 32],
}

impl fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

impl CompiledPolicy {
    /// SHA-256 of the module bytes as uploaded.
    pub fn sha256(&self) -> [u8; 32] {
        self.inner.sha256
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.inner.sha256)
    }
}

impl PolicyEngine {
    pub fn new() -> Result<Self, PolicyError> {
        Self::build(Limits::PRODUCTION, config::PAGEMAP_SCAN)
    }

    /// The production engine with a pool of `slots` instances (at least 1,
    /// at most `MAX_CONCURRENT_EVALUATIONS`), as `--memory-budget` sizes it.
    pub fn with_slots(slots: u32) -> Result<Self, PolicyError> {
        let limits = Limits {
            slots: slots.clamp(1, MAX_CONCURRENT_EVALUATIONS),
            ..Limits::PRODUCTION
        };
        Self::build(limits, config::PAGEMAP_SCAN)
    }

    /// Instances that may exist at once (the pool's slots).
    pub fn slots(&self) -> u32 {
        self.limits.slots
    }

    /// The production engine with other limits (tests shrink or stretch them).
    #[cfg(test)]
    fn with_limits(limits: Limits) -> Result<Self, PolicyError> {
        Self::build(limits, config::PAGEMAP_SCAN)
    }

    /// `pagemap_scan`: how the pool resets a freed slot (production:
    /// `config::PAGEMAP_SCAN`; tests also try the kernel's dirty-page scan).
    fn build(limits: Limits, pagemap_scan: Enabled) -> Result<Self, PolicyError> {
        let (engine, pooling) = match Engine::new(&config::config(Some(limits.slots), pagemap_scan)) {
            Ok(engine) => (engine, true),
            Err(pool_error) => {
                tracing::warn!(
                    error = %error_text(&pool_error),
                    "policy sandbox: pooling allocator unavailable; falling back to on-demand allocation"
                );
                let engine = Engine::new(&config::config(None, pagemap_scan))
                    .map_err(|e| PolicyError::Engine(error_text(&e)))?;
                (engine, false)
            }
        };
        let ticker = EpochTicker::start(&engine)?;
        Ok(PolicyEngine {
            linker: Linker::new(&engine),
            engine,
            limits,
            pooling,
            slots: Arc::new(Slots::new(limits.slots)),
            compilations: Default::default(),
            _ticker: ticker,
        })
    }

    /// Upload-time validation and compilation (off the request path).
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        if wasm.len() > MAX_MODULE_BYTES {
            return Err(PolicyError::TooLarge);
        }
        // Structural checks first, so that these get their own errors rather
        // than a generic validation failure.
        upload::scan_sections(wasm)?;
        self.compilations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let module = Module::new(&self.engine, wasm).map_err(|e| PolicyError::Invalid(error_text(&e)))?;
        if module.imports().len() != 0 {
            return Err(PolicyError::Imports);
        }
        upload::check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| PolicyError::Engine(error_text(&e)))?;
        let index = |name: &'static str| module.get_export_index(name).ok_or(PolicyError::MissingExport(name));
        Ok(CompiledPolicy {
            inner: Arc::new(CompiledInner {
                memory: index("memory")?,
                alloc: index("keyward_alloc")?,
                evaluate: index("keyward_evaluate")?,
                pre,
                sha256: Sha256::digest(wasm).into(),
            }),
        })
    }

    /// Modules this engine compiled (or tried to) since it started: what a
    /// cache miss costs, observable by tests and operators.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Evaluates `policy` on `context_json`. Never fails: every failure is a
    /// deny with a reason naming it.
    ///
    /// Runs the policy on the calling thread: CPU-bound for at most the fuel or
    /// the epoch deadline (~100 ms), after waiting at most `SLOT_WAIT` (1 s)
    /// when every instance slot is taken. Async callers should use
    /// `spawn_blocking` (or accept the bounded block).
    pub fn evaluate(&self, policy: &CompiledPolicy, context_json: &[u8]) -> Decision {
        self.evaluate_metered(policy, context_json).0
    }

    /// [`Self::evaluate`], also returning the fuel the decision used (0 when
    /// the module did not run): what `policies/ABI.md` §5 reports, and what
    /// policy authors budget against.
    pub fn evaluate_metered(&self, policy: &CompiledPolicy, context_json: &[u8]) -> (Decision, u64) {
        let mut fuel_used = 0;
        let decision = match self.run(policy, context_json, self.limits, SLOT_WAIT, &mut fuel_used) {
            Ok(decision) => decision,
            Err(failure) => {
                let reason = failure.to_string();
                tracing::debug!(policy = %policy.sha256_hex(), %reason, "policy denied by the sandbox");
                Decision::deny(reason)
            }
        };
        (decision, fuel_used)
    }

    /// [`Self::evaluate`] within a small budget, for a caller that must not
    /// block for long (an async worker thread): at most [`INLINE_FUEL`] fuel
    /// and one epoch tick, and no waiting for a free slot. `None` when that
    /// was not enough — the module wanted more fuel or time, or every slot
    /// was taken: the caller then runs [`Self::evaluate`] where blocking is
    /// fine, and gets exactly the decision it would have got first. Running a
    /// decision again from the start is sound because every decision is a
    /// new instance on the same context (see "Isolation"); nothing of the
    /// abandoned attempt is visible.
    ///
    /// Denials that more budget cannot change (a trap, the memory limit, a
    /// malformed decision) are final here.
    pub fn evaluate_inline(&self, policy: &CompiledPolicy, context_json: &[u8]) -> Option<Decision> {
        self.evaluate_inline_metered(policy, context_json).0
    }

    /// [`Self::evaluate_inline`], also returning the fuel it used (what the
    /// scheduler charges the tenant, whether or not it decided).
    pub fn evaluate_inline_metered(&self, policy: &CompiledPolicy, context_json: &[u8]) -> (Option<Decision>, u64) {
        let limits = Limits {
            fuel: INLINE_FUEL.min(self.limits.fuel),
            deadline_ticks: 1,
            ..self.limits
        };
        let mut fuel_used = 0;
        let decision = match self.run(policy, context_json, limits, Duration::ZERO, &mut fuel_used) {
            Ok(decision) => Some(decision),
            Err(Failure::OutOfFuel(_) | Failure::Deadline(_) | Failure::Busy) => None,
            Err(failure) => {
                let reason = failure.to_string();
                tracing::debug!(policy = %policy.sha256_hex(), %reason, "policy denied by the sandbox");
                Some(Decision::deny(reason))
            }
        };
        (decision, fuel_used)
    }

    /// One decision in a new instance, which is dropped (and its slot reset
    /// by the pool) before this returns.
    fn run(
        &self,
        policy: &CompiledPolicy,
        context: &[u8],
        limits: Limits,
        slot_wait: Duration,
        fuel_used: &mut u64,
    ) -> Result<Decision, Failure> {
        if context.len() > MAX_CONTEXT_BYTES {
            return Err(Failure::ContextTooLarge);
        }
        if std::str::from_utf8(context).is_err() {
            return Err(Failure::ContextNotUtf8);
        }
        let context_len = i32::try_from(context.len()).map_err(|_| Failure::ContextTooLarge)?;
        let inner = &policy.inner;
        if !Engine::same(inner.pre.module().engine(), &self.engine) {
            return Err(Failure::ForeignPolicy);
        }
        let mut live = self.instantiate(inner, limits, slot_wait)?;
        live.decide(context, context_len, limits, fuel_used)
    }

    /// A new instance of `inner` in a new store, in a free slot (waiting up
    /// to `slot_wait` for one).
    fn instantiate(&self, inner: &CompiledInner, limits: Limits, slot_wait: Duration) -> Result<Live, Failure> {
        let slot = Slots::acquire(&self.slots, slot_wait).ok_or(Failure::Busy)?;
        Live::new(&self.engine, inner, limits, slot)
    }
}

/// `error` with its causes, on one line.
fn error_text(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}
