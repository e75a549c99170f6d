//! The policy sandbox: compiles customer key policies (WebAssembly core
//! modules, ABI v1) once at upload and evaluates them on every key operation,
//! failing closed.
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
//! How: a decision runs either in a **new instance in a new [`Store`]**
//! (from the module's [`InstancePre`]) or in an instance of **the same
//! compiled module, reset in place** after the decision before it. Which one:
//! * an instance is reset and kept (in `IdleInstances`, at most
//!   `IDLE_INSTANCES` of them, matched by the compiled policy's id, so never
//!   lent to another module, nor to a replaced one) only when its decision's
//!   calls **returned normally**. A trap, running out of fuel or time, the
//!   memory limit, any failure: the store is dropped, as before. So the
//!   denials of hostile modules never reach the reset path;
//! * only modules whose code cannot change what the reset does not restore
//!   are reset: at upload, `reuse::code_is_resettable` refuses any
//!   `table.set`, `table.grow`, `table.fill`, `table.copy`, `table.init`,
//!   `elem.drop`, `memory.init` or `data.drop`; the other modules get a new
//!   instance every time (the first `policy_isolation_probe` does);
//! * the reset is `wasmtime::Instance::keyward_reset`, added by Keyward's
//!   wasmtime patch (`vendor/wasmtime/KEYWARD-PATCH.md`), which itself
//!   refuses (the store is then dropped) unless every piece of state wasm can
//!   change is one it restores: no startup function ran (all initialisation
//!   is static), no passive segments, memories and tables at their initial
//!   sizes (so a decision that grew its memory is dropped), every mutable
//!   global with a constant initializer. It then restores
//!   - **linear memory**: the pages written since instantiation (or the last
//!     reset) are found with the kernel's `PAGEMAP_SCAN` and copied back from
//!     the module's image or zeroed, up to `MEMORY_KEEP_RESIDENT` bytes of
//!     them, the rest `madvise(MADV_DONTNEED)`d back to the pristine
//!     copy-on-write mapping — the very code that resets a pooled slot
//!     (below), with the same swapped-page fix;
//!   - **globals**: every defined global, to its constant initializer
//!     (non-exported ones too, like a Rust module's stack pointer);
//!   - **tables**: nothing to do: the code cannot change them, and lazily
//!     initialised function references always get the same value;
//! * per-store state (fuel, the epoch deadline, the limiter's flags) is set
//!   afresh for every decision.
//!
//! An assumption both resets share with upstream wasmtime: a page wasm wrote
//! never turns back into the kernel's shared zero page behind its back. KSM
//! with `use_zero_pages=1` on memory marked mergeable would do that, and a
//! zeroed page inside the data image would then be skipped by the scan (one
//! bit per page of leak). Nothing in Keyward marks memory mergeable, and a
//! Nitro enclave's kernel runs no KSM; a mock-mode host must not enable it
//! for the enclave process.
//!
//! The reset runs right after the decision, before the instance is kept, so
//! a decision's context does not stay in memory while the instance waits.
//!
//! When a store is dropped, the pooling allocator keeps its *slot* warm and
//! hands the module back a slot it used before (its memory image stays
//! mapped), after resetting it the same way:
//! * linear memory: written pages found with `PAGEMAP_SCAN` (Linux 6.7+) and
//!   rewritten from the module's initial image (zeros and data segments), up
//!   to `MEMORY_KEEP_RESIDENT` bytes of them; everything past that point is
//!   returned with `madvise(MADV_DONTNEED)`, which restores the pristine
//!   copy-on-write mapping of the image or zero pages; memory a decision grew
//!   is made inaccessible again. A written page that is not resident at that
//!   moment (swapped out, or being migrated by the kernel) counts as written:
//!   wasmtime 48 skipped such pages, which would leak a decision's memory
//!   into a later one (bytecodealliance/wasmtime#14357), so Keyward builds a
//!   wasmtime patched for exactly that. Without `PAGEMAP_SCAN` (older
//!   kernels) the first `MEMORY_KEEP_RESIDENT` bytes are rewritten blindly
//!   and the rest `madvise`d (both resets);
//! * tables: the used part is zeroed (`TABLE_KEEP_RESIDENT` bytes by
//!   `memset`, the rest `madvise`d), then instantiation writes the module's
//!   element segments;
//! * globals and the instance's context: initialised by instantiation.
//!
//! So a decision sees exactly what a brand-new instance would. The isolation
//! probe tests check it: `policy_isolation_probe` (a module counting its
//! calls in a global, its data segment, a grown page, its memory size and a
//! table slot, never reused) and `policy_isolation_probe_reset` (reused:
//! counters in non-exported and exported globals, a moved stack pointer, its
//! data segment and 32 scattered pages, the byte after a short context that
//! a longer earlier one wrote, its memory size; plus decisions that grow
//! memory or trap in between) see 1 every time: sequentially, after traps
//! and out-of-fuel, concurrently, and without `PAGEMAP_SCAN`;
//! `policy_isolation_probe_no_data` does the same for a module whose memory
//! starts as zeros, with a v128 global. The tests fail if the reset skips
//! memory, globals or the grown-memory check.
//!
//! Not used, and why:
//! * resetting memory without the kernel's dirty-page information: copying
//!   all of it per decision (192 KiB for an SDK module, more once it grows)
//!   costs more than a new instance;
//! * memory protection keys: not available on the enclave's CPUs.
//!
//! [`PolicyEngine::without_reuse`] builds an engine that never resets (every
//! decision a new instance); the benchmarks compare the two.
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
//! * concurrency: at most `MAX_CONCURRENT_EVALUATIONS` instances exist at
//!   once; further callers wait up to `SLOT_WAIT` for one to finish, then deny.
//!
//! The engine has wasm threads and shared memory, memory64, multi-memory and
//! custom page sizes off; NaNs are canonicalised and relaxed SIMD is
//! deterministic, so a decision depends only on the module and the context.
//!
//! Instances come from wasmtime's pooling allocator (slots reserved once, at
//! start-up). If the pool cannot be reserved, the engine falls back to on-demand
//! allocation (logged as a warning); the same per-store limits apply.
//!
//! # Cost
//! See `BENCHMARKS.md` (policy section) for the measured figures and the
//! commands: a decision costs about 2–2.5 µs for a trivial module in a
//! reset instance (the calls, then the `PAGEMAP_SCAN` reset; ~5.5 µs with a
//! new instance, most of it creating and dropping the store and instance);
//! a module built with the `keyward-policy` SDK adds its own work (reading
//! the context: ~20,000 units of fuel on a typical one). Compiling a small
//! module at upload takes a few milliseconds.
//!
//! Callers on async threads use [`PolicyEngine::evaluate_inline`] first: the
//! decision within [`INLINE_FUEL`] and one epoch tick, without waiting for a
//! slot, and only if that is not enough [`PolicyEngine::evaluate`] where
//! blocking is acceptable.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Enabled, Engine, Extern, ExternType, FuncType, Instance, InstanceAllocationStrategy, InstancePre, Linker,
    Memory, Module, ModuleExport, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store, Strategy, Trap, TypedFunc,
    ValType, WasmFeatures,
};

use super::reuse::{IdleInstances, code_is_resettable};

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
/// While waiting for a slot, how often an evaluation looks for an idle
/// instance to take it from.
const SLOT_WAIT_SLICE: Duration = Duration::from_millis(10);
/// Reset instances kept for their policy's next decision (each holds one of
/// the `MAX_CONCURRENT_EVALUATIONS` slots, which an evaluation that finds no
/// free slot takes back, oldest first).
const IDLE_INSTANCES: usize = 32;

/// Most bytes of a freed instance's memory that the pool resets in place
/// (copied back from the image) instead of giving them back to the kernel
/// with `madvise`: with `PAGEMAP_SCAN`, only pages the decision wrote, up to
/// this much; without it, blindly the first this-many bytes. Keeping them
/// resident avoids page faults on the next decision (measured ~4.5 µs per
/// decision instead of ~10–14 µs with nothing kept). The cost is at most this
/// much resident memory per warm slot (32 MiB for a full pool).
const MEMORY_KEEP_RESIDENT: usize = 128 * 1024;
/// The same for a freed instance's table (its used part only): 16 KiB is 2,048
/// function references, more than the table of any module seen so far (a
/// Rust policy's is a few dozen), so resetting it is one short `memset`
/// instead of an `madvise` and a page fault on the next decision.
const TABLE_KEEP_RESIDENT: usize = 16 * 1024;

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
    /// Declared before `slots`: idle instances hold slots.
    idle: IdleInstances<Warm>,
    slots: Arc<Slots>,
    /// Ids for compiled policies (what idle instances are matched by).
    next_policy_id: AtomicU64,
    /// Decisions that ran in a reset instance rather than a new one.
    reused: AtomicU64,
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
    /// Unique within the engine that compiled it.
    id: u64,
    /// Whether an instance may be reset and reused: the module's code passed
    /// [`code_is_resettable`] and wasmtime has not refused a reset of it.
    reusable: AtomicBool,
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
        Self::with_limits(Limits::PRODUCTION, true)
    }

    /// An engine that runs every decision in a new instance, never a reset
    /// one (see "Isolation"): what the enclave did before instances were
    /// reused, kept to measure the difference and to compare behaviour.
    pub fn without_reuse() -> Result<Self, PolicyError> {
        Self::with_limits(Limits::PRODUCTION, false)
    }

    fn with_limits(limits: Limits, reuse: bool) -> Result<Self, PolicyError> {
        Self::build(limits, reuse, Enabled::Auto)
    }

    /// `pagemap_scan`: whether resets use the kernel's dirty-page scan
    /// (`Auto`: when the kernel has it; tests also try `No`).
    fn build(limits: Limits, reuse: bool, pagemap_scan: Enabled) -> Result<Self, PolicyError> {
        let (engine, pooling) = match Engine::new(&config(Some(limits.slots), pagemap_scan)) {
            Ok(engine) => (engine, true),
            Err(pool_error) => {
                tracing::warn!(
                    error = %error_text(&pool_error),
                    "policy sandbox: pooling allocator unavailable; falling back to on-demand allocation"
                );
                let engine =
                    Engine::new(&config(None, pagemap_scan)).map_err(|e| PolicyError::Engine(error_text(&e)))?;
                (engine, false)
            }
        };
        let ticker = EpochTicker::start(&engine)?;
        Ok(PolicyEngine {
            linker: Linker::new(&engine),
            engine,
            limits,
            pooling,
            idle: IdleInstances::new(if pooling && reuse { IDLE_INSTANCES } else { 0 }),
            slots: Arc::new(Slots::new(limits.slots)),
            next_policy_id: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            _ticker: ticker,
        })
    }

    /// Upload-time validation and compilation (off the request path).
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledPolicy, PolicyError> {
        if wasm.len() > MAX_MODULE_BYTES {
            return Err(PolicyError::TooLarge);
        }
        // Structural checks first, so that these get their own errors rather
        // than a generic validation failure (shared memory does not even
        // validate with threads off).
        scan_sections(wasm)?;
        let module = Module::new(&self.engine, wasm).map_err(|e| PolicyError::Invalid(error_text(&e)))?;
        if module.imports().len() != 0 {
            return Err(PolicyError::Imports);
        }
        check_exports(&module)?;
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
                id: self.next_policy_id.fetch_add(1, Ordering::Relaxed),
                reusable: AtomicBool::new(self.idle.capacity() > 0 && code_is_resettable(wasm)),
            }),
        })
    }

    /// How many decisions so far ran in an instance reset after an earlier
    /// decision rather than in a new one (see "Isolation").
    pub fn decisions_in_reused_instances(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Drops every instance kept for reuse (their slots become free).
    #[cfg(test)]
    fn drop_idle_instances(&self) {
        self.idle.clear();
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
    /// fresh or reset instance on the same context (see "Isolation"); nothing of the
    /// abandoned attempt is visible.
    ///
    /// Denials that more budget cannot change (a trap, the memory limit, a
    /// malformed decision) are final here.
    pub fn evaluate_inline(&self, policy: &CompiledPolicy, context_json: &[u8]) -> Option<Decision> {
        let limits = Limits {
            fuel: INLINE_FUEL.min(self.limits.fuel),
            deadline_ticks: 1,
            ..self.limits
        };
        match self.run(policy, context_json, limits, Duration::ZERO, &mut 0) {
            Ok(decision) => Some(decision),
            Err(Failure::OutOfFuel(_) | Failure::Deadline(_) | Failure::Busy) => None,
            Err(failure) => {
                let reason = failure.to_string();
                tracing::debug!(policy = %policy.sha256_hex(), %reason, "policy denied by the sandbox");
                Some(Decision::deny(reason))
            }
        }
    }

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

        let reuse = inner.reusable.load(Ordering::Relaxed);
        let mut warm = match reuse.then(|| self.idle.take(inner.id)).flatten() {
            Some(warm) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                warm
            }
            None => self.instantiate(inner, limits, slot_wait)?,
        };
        let result = warm.decide(context, context_len, limits, fuel_used);
        // Only an instance whose calls returned normally is reset and kept;
        // one that trapped, ran out of fuel or time, or failed in any way
        // (the denials of hostile modules) is dropped, and the pool resets
        // its slot.
        if reuse && result.is_ok() {
            match warm.instance.keyward_reset(&mut warm.store) {
                Ok(true) => {
                    self.idle.put(inner.id, warm);
                    // A caller waiting for a slot gets one (this, or an
                    // older idle instance's): a kept instance does not
                    // release its slot by itself.
                    if self.slots.has_waiters() {
                        self.idle.evict_oldest();
                    }
                }
                Ok(false) => {
                    // Grown memory (this instance only), or a module wasmtime
                    // cannot reset (e.g. one that needs a startup function):
                    // a grown memory is not worth remembering, but a module
                    // that never resets is, so that it stops trying.
                    if !warm.grew(inner) {
                        inner.reusable.store(false, Ordering::Relaxed);
                        tracing::debug!(policy = %policy.sha256_hex(), "policy instances cannot be reset; not reusing them");
                    }
                }
                Err(e) => {
                    tracing::warn!(policy = %policy.sha256_hex(), error = %error_text(&e), "policy instance reset failed; dropped");
                }
            }
        }
        result
    }

    /// A new instance of `inner` in a new store, in a free slot (taking one
    /// back from an idle instance when none is free, else waiting up to
    /// `slot_wait`).
    fn instantiate(&self, inner: &CompiledInner, limits: Limits, slot_wait: Duration) -> Result<Warm, Failure> {
        let deadline = Instant::now() + slot_wait;
        let slot = loop {
            if let Some(slot) = Slots::acquire(&self.slots, Duration::ZERO) {
                break slot;
            }
            if self.idle.evict_oldest() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::Busy);
            }
            // In slices: an instance kept for reuse after the eviction
            // above holds a slot that only another eviction frees (`run`
            // evicts when it sees a waiter, but this caller may start
            // waiting just after that check).
            if let Some(slot) = Slots::acquire(&self.slots, (deadline - now).min(SLOT_WAIT_SLICE)) {
                break slot;
            }
        };
        let mut store = Store::new(&self.engine, StoreState::default());
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        let instance = inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| Failure::Instantiate(Failure::classify(&e, store.data(), limits).to_string()))?;
        let memory = match instance.get_module_export(&mut store, &inner.memory) {
            Some(Extern::Memory(memory)) => memory,
            _ => return Err(Failure::Engine("export `memory` not found".into())),
        };
        let alloc = instance
            .get_module_export(&mut store, &inner.alloc)
            .and_then(Extern::into_func)
            .ok_or_else(|| Failure::Engine("export `keyward_alloc` not found".into()))?
            .typed::<i32, i32>(&store)
            .map_err(|e| Failure::Engine(error_text(&e)))?;
        let evaluate = instance
            .get_module_export(&mut store, &inner.evaluate)
            .and_then(Extern::into_func)
            .ok_or_else(|| Failure::Engine("export `keyward_evaluate` not found".into()))?
            .typed::<(i32, i32), i64>(&store)
            .map_err(|e| Failure::Engine(error_text(&e)))?;
        Ok(Warm {
            store,
            instance,
            memory,
            alloc,
            evaluate,
            _slot: slot,
        })
    }
}

/// A live instance of a policy, with its store and slot: new, or reset after
/// an earlier decision.
struct Warm {
    /// Declared before `_slot`: the slot is released only after the store
    /// (and its instance) is gone.
    store: Store<StoreState>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    evaluate: TypedFunc<(i32, i32), i64>,
    _slot: SlotGuard,
}

impl Warm {
    /// One decision: the per-decision limits, then `keyward_alloc`, the
    /// context, `keyward_evaluate`, and the decision read back.
    fn decide(
        &mut self,
        context: &[u8],
        context_len: i32,
        limits: Limits,
        fuel_used: &mut u64,
    ) -> Result<Decision, Failure> {
        let store = &mut self.store;
        *store.data_mut() = StoreState::default();
        store
            .set_fuel(limits.fuel)
            .map_err(|e| Failure::Engine(error_text(&e)))?;
        store.set_epoch_deadline(limits.deadline_ticks);
        let failed = |store: &Store<StoreState>, e: wasmtime::Error| Failure::classify(&e, store.data(), limits);

        let fuel = limits.fuel;
        let used = |store: &Store<StoreState>| fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let ptr = self.alloc.call(&mut *store, context_len).map_err(|e| {
            *fuel_used = used(store);
            failed(store, e)
        })?;
        // The guest's i32 is an unsigned address.
        let ptr_addr = ptr as u32 as usize;
        self.memory
            .write(&mut *store, ptr_addr, context)
            .map_err(|_| Failure::AllocOutOfBounds {
                ptr: ptr as u32,
                len: context.len(),
            })?;

        let packed = self.evaluate.call(&mut *store, (ptr, context_len));
        *fuel_used = used(store);
        let packed = packed.map_err(|e| failed(store, e))? as u64;
        let out_ptr = (packed >> 32) as u32;
        let out_len = (packed & 0xffff_ffff) as u32;
        if out_len as usize > MAX_DECISION_BYTES {
            return Err(Failure::DecisionTooLarge(out_len));
        }
        let start = out_ptr as usize;
        let bytes = start
            .checked_add(out_len as usize)
            .and_then(|end| self.memory.data(&*store).get(start..end))
            .ok_or(Failure::DecisionOutOfBounds {
                ptr: out_ptr,
                len: out_len,
            })?;
        parse_decision(bytes)
    }

    /// Whether the decision grew the instance's memory past the module's
    /// initial size (which a reset cannot undo).
    fn grew(&self, inner: &CompiledInner) -> bool {
        let initial = inner.pre.module().exports().find_map(|export| match export.ty() {
            ExternType::Memory(ty) if export.name() == "memory" => Some(ty.minimum()),
            _ => None,
        });
        initial.is_none_or(|pages| self.memory.size(&self.store) != pages)
    }
}

/// The engine configuration; `pool_slots` selects the pooling allocator.
fn config(pool_slots: Option<u32>, pagemap_scan: Enabled) -> Config {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .wasm_backtrace_max_frames(None)
        .shared_memory(false)
        .wasm_features(
            WasmFeatures::THREADS
                | WasmFeatures::SHARED_EVERYTHING_THREADS
                | WasmFeatures::MEMORY64
                | WasmFeatures::MULTI_MEMORY
                | WasmFeatures::CUSTOM_PAGE_SIZES
                | WasmFeatures::STACK_SWITCHING
                | WasmFeatures::EXCEPTIONS
                | WasmFeatures::LEGACY_EXCEPTIONS
                | WasmFeatures::GC
                | WasmFeatures::COMPONENT_MODEL,
            false,
        );
    if let Some(slots) = pool_slots {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(MAX_MEMORY_BYTES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // Reset only the pages a decision wrote (Linux 6.7+ PAGEMAP_SCAN;
            // otherwise the blind reset). Safe only with the patched wasmtime
            // in vendor/wasmtime, which also resets written pages that are
            // swapped out or migrating (bytecodealliance/wasmtime#14357).
            .pagemap_scan(pagemap_scan);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
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

// ---------------------------------------------------------------------------
// Upload-time checks

/// Walks the module's top-level sections (without validating them; wasmtime
/// validates the whole module next) for imports, a start function and shared
/// memories.
fn scan_sections(wasm: &[u8]) -> Result<(), PolicyError> {
    const IMPORT: u8 = 2;
    const MEMORY: u8 = 5;
    const START: u8 = 8;
    let body = match wasm {
        [0, b'a', b's', b'm', 1, 0, 0, 0, body @ ..] => body,
        [0, b'a', b's', b'm', ..] => {
            return Err(PolicyError::Invalid(
                "not a core module (components are not policies)".into(),
            ));
        }
        _ => return Err(PolicyError::Invalid("not a WebAssembly binary".into())),
    };
    let malformed = |what: &str| PolicyError::Invalid(format!("malformed {what}"));
    let mut sections = Reader::new(body);
    while !sections.is_empty() {
        let id = sections.byte().ok_or_else(|| malformed("section header"))?;
        let size = sections.u32().ok_or_else(|| malformed("section header"))?;
        let payload = sections.take(size as usize).ok_or_else(|| malformed("section size"))?;
        match id {
            IMPORT => {
                let count = Reader::new(payload).u32().ok_or_else(|| malformed("import section"))?;
                if count != 0 {
                    return Err(PolicyError::Imports);
                }
            }
            START => return Err(PolicyError::StartFunction),
            MEMORY => {
                let mut memories = Reader::new(payload);
                let count = memories.u32().ok_or_else(|| malformed("memory section"))?;
                for _ in 0..count {
                    // limits flags: 0x01 maximum, 0x02 shared, 0x04 memory64, 0x08 page size
                    let flags = memories.byte().ok_or_else(|| malformed("memory section"))?;
                    if flags & 0x02 != 0 {
                        return Err(PolicyError::SharedMemory);
                    }
                    let fields = 1 + usize::from(flags & 0x01 != 0) + usize::from(flags & 0x08 != 0);
                    for _ in 0..fields {
                        memories.u64().ok_or_else(|| malformed("memory section"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A cursor over bytes for the section scan.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    /// An unsigned LEB128 of at most 64 bits.
    fn u64(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// An unsigned LEB128 of at most 32 bits.
    fn u32(&mut self) -> Option<u32> {
        let mut value = 0u32;
        for shift in (0..32).step_by(7) {
            let byte = self.byte()?;
            value |= u32::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

/// The ABI v1 exports, with their types. The marker first: a module without it
/// is not a v1 policy at all.
fn check_exports(module: &Module) -> Result<(), PolicyError> {
    check_func(module, "keyward_policy_abi_v1", &[], &[])?;
    match module.get_export("memory") {
        None => return Err(PolicyError::MissingExport("memory")),
        Some(ExternType::Memory(memory)) => {
            if memory.is_shared() {
                return Err(PolicyError::SharedMemory);
            }
            if memory.is_64() || memory.page_size() != WASM_PAGE_BYTES {
                return Err(PolicyError::BadExportType("memory"));
            }
            let minimum = memory.minimum().saturating_mul(memory.page_size());
            if minimum > MAX_MEMORY_BYTES as u64 {
                return Err(PolicyError::Invalid(format!(
                    "memory minimum of {minimum} bytes exceeds the limit of {MAX_MEMORY_BYTES} bytes"
                )));
            }
        }
        Some(_) => return Err(PolicyError::BadExportType("memory")),
    }
    check_func(module, "keyward_alloc", &[Kind::I32], &[Kind::I32])?;
    check_func(module, "keyward_evaluate", &[Kind::I32, Kind::I32], &[Kind::I64])?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    I32,
    I64,
    Other,
}

fn kind(ty: ValType) -> Kind {
    match ty {
        ValType::I32 => Kind::I32,
        ValType::I64 => Kind::I64,
        _ => Kind::Other,
    }
}

fn check_func(module: &Module, name: &'static str, params: &[Kind], results: &[Kind]) -> Result<(), PolicyError> {
    let func: FuncType = match module.get_export(name) {
        None => return Err(PolicyError::MissingExport(name)),
        Some(ExternType::Func(func)) => func,
        Some(_) => return Err(PolicyError::BadExportType(name)),
    };
    let found_params: Vec<Kind> = func.params().map(kind).collect();
    let found_results: Vec<Kind> = func.results().map(kind).collect();
    if found_params != params || found_results != results {
        return Err(PolicyError::BadExportType(name));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Evaluation

/// Why a decision was denied by the sandbox rather than by the policy.
#[derive(Debug)]
enum Failure {
    ContextTooLarge,
    ContextNotUtf8,
    ForeignPolicy,
    Busy,
    Instantiate(String),
    OutOfFuel(u64),
    Deadline(u64),
    MemoryLimit,
    TableLimit,
    Trap(Trap),
    AllocOutOfBounds { ptr: u32, len: usize },
    DecisionTooLarge(u32),
    DecisionOutOfBounds { ptr: u32, len: u32 },
    Malformed(String),
    Engine(String),
}

impl Failure {
    fn classify(error: &wasmtime::Error, state: &StoreState, limits: Limits) -> Failure {
        if state.limiter.memory_limit_hit {
            return Failure::MemoryLimit;
        }
        if state.limiter.table_limit_hit {
            return Failure::TableLimit;
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel(limits.fuel),
            Some(Trap::Interrupt) => Failure::Deadline(limits.deadline_ticks),
            Some(trap) => Failure::Trap(*trap),
            None => Failure::Engine(error_text(error)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ContextTooLarge => write!(f, "policy context is larger than {MAX_CONTEXT_BYTES} bytes"),
            Failure::ContextNotUtf8 => write!(f, "policy context is not UTF-8"),
            Failure::ForeignPolicy => write!(f, "policy module was compiled by another policy engine"),
            Failure::Busy => write!(f, "policy sandbox busy: no instance slot became free in {SLOT_WAIT:?}"),
            Failure::Instantiate(why) => write!(f, "policy instantiation failed: {why}"),
            Failure::OutOfFuel(fuel) => write!(f, "policy ran out of fuel ({fuel} units)"),
            Failure::Deadline(ticks) => write!(
                f,
                "policy exceeded its epoch deadline (wall-clock limit of {:?})",
                EPOCH_TICK.saturating_mul(u32::try_from(*ticks).unwrap_or(u32::MAX))
            ),
            Failure::MemoryLimit => write!(f, "policy exceeded the memory limit of {MAX_MEMORY_BYTES} bytes"),
            Failure::TableLimit => write!(f, "policy exceeded the table limit of {MAX_TABLE_ELEMENTS} elements"),
            Failure::Trap(Trap::StackOverflow) => write!(f, "policy trapped: call stack exhausted (stack overflow)"),
            Failure::Trap(Trap::MemoryOutOfBounds) => write!(f, "policy trapped: out of bounds memory access"),
            Failure::Trap(Trap::UnreachableCodeReached) => write!(f, "policy trapped: unreachable executed"),
            Failure::Trap(trap) => write!(f, "policy trapped: {trap}"),
            Failure::AllocOutOfBounds { ptr, len } => write!(
                f,
                "policy keyward_alloc returned an out of bounds buffer ({len} bytes at {ptr:#x})"
            ),
            Failure::DecisionTooLarge(len) => {
                write!(f, "policy decision is {len} bytes, more than {MAX_DECISION_BYTES}")
            }
            Failure::DecisionOutOfBounds { ptr, len } => {
                write!(f, "policy decision is out of bounds ({len} bytes at {ptr:#x})")
            }
            Failure::Malformed(why) => write!(f, "policy decision is malformed: {why}"),
            Failure::Engine(why) => write!(f, "policy sandbox error: {why}"),
        }
    }
}

/// The ABI v1 decision document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    allow: bool,
    #[serde(default)]
    reason: String,
}

fn parse_decision(bytes: &[u8]) -> Result<Decision, Failure> {
    // serde also reads structs from arrays (`[true, "…"]`); only an object is a decision.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Failure::Malformed("not a JSON object".into()));
    }
    let raw: RawDecision = serde_json::from_slice(bytes).map_err(|e| Failure::Malformed(e.to_string()))?;
    Ok(Decision {
        allow: raw.allow,
        reason: raw.reason,
    })
}

/// What a store carries: its resource limiter.
#[derive(Default)]
struct StoreState {
    limiter: Limiter,
}

/// Caps memory and tables per instance; growth past a cap traps (and is
/// remembered, to name the failure).
#[derive(Default)]
struct Limiter {
    memory_limit_hit: bool,
    table_limit_hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_MEMORY_BYTES {
            self.memory_limit_hit = true;
            wasmtime::bail!("policy memory limit of {MAX_MEMORY_BYTES} bytes exceeded");
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.table_limit_hit = true;
            wasmtime::bail!("policy table limit of {MAX_TABLE_ELEMENTS} elements exceeded");
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A counting semaphore over the instance slots.
struct Slots {
    state: Mutex<SlotCount>,
    freed: Condvar,
}

struct SlotCount {
    free: u32,
    /// Callers waiting in [`Slots::acquire`]: a release wakes one only when
    /// there is one (a `Condvar` notification is a futex system call even
    /// with nobody waiting, on every decision).
    waiting: u32,
}

struct SlotGuard(Arc<Slots>);

impl Slots {
    fn new(count: u32) -> Self {
        Slots {
            state: Mutex::new(SlotCount {
                free: count,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotCount> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_waiters(&self) -> bool {
        self.lock().waiting > 0
    }

    fn acquire(slots: &Arc<Self>, wait: Duration) -> Option<SlotGuard> {
        let mut state = slots.lock();
        if state.free == 0 {
            let deadline = Instant::now() + wait;
            state.waiting += 1;
            while state.free == 0 {
                let now = Instant::now();
                if now >= deadline {
                    state.waiting -= 1;
                    return None;
                }
                state = slots
                    .freed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.waiting -= 1;
        }
        state.free -= 1;
        Some(SlotGuard(Arc::clone(slots)))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.free += 1;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.0.freed.notify_one();
        }
    }
}

/// The thread that advances the engine's epoch every `EPOCH_TICK`; it stops
/// when the engine is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Result<Self, PolicyError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("keyward-policy-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PolicyError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    macro_rules! wat_file {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/",
                $name,
                ".wat"
            ))
        };
    }

    const ALLOW_ALL: &str = wat_file!("policy_allow_all");
    const ALLOW_DECRYPT_ONLY: &str = wat_file!("policy_allow_decrypt_only");
    const ALLOW_AFTER_LONG_LOOP: &str = wat_file!("policy_allow_after_long_loop");
    const ISOLATION_PROBE: &str = wat_file!("policy_isolation_probe");
    const ISOLATION_PROBE_RESET: &str = wat_file!("policy_isolation_probe_reset");
    const ISOLATION_PROBE_NO_DATA: &str = wat_file!("policy_isolation_probe_no_data");
    const ALLOW_AFTER_VERY_LONG_LOOP: &str = wat_file!("policy_allow_after_very_long_loop");
    const INFINITE_LOOP: &str = wat_file!("fail_policy_infinite_loop");
    const MEMORY_GROW_BOMB: &str = wat_file!("fail_policy_memory_grow_bomb");
    const DEEP_RECURSION: &str = wat_file!("fail_policy_deep_recursion");
    const HUGE_DATA_SEGMENT: &str = wat_file!("fail_policy_huge_data_segment");
    const DATA_SEGMENT_OUT_OF_BOUNDS: &str = wat_file!("fail_policy_data_segment_out_of_bounds");
    const UNREACHABLE: &str = wat_file!("fail_policy_unreachable");
    const OUT_OF_BOUNDS_RESULT: &str = wat_file!("fail_policy_out_of_bounds_result");
    const NON_JSON_RESULT: &str = wat_file!("fail_policy_non_json_result");
    const ALLOW_NOT_BOOL: &str = wat_file!("fail_policy_allow_not_bool");
    const IMPORTS: &str = wat_file!("fail_policy_imports");
    const START_FUNCTION: &str = wat_file!("fail_policy_start_function");
    const MISSING_MARKER: &str = wat_file!("fail_policy_missing_marker");
    const SHARED_MEMORY: &str = wat_file!("fail_policy_shared_memory");
    const BAD_EXPORT_TYPE: &str = wat_file!("fail_policy_bad_export_type");

    /// Production limits but a relaxed wall-clock deadline (5 s): on a loaded
    /// test machine (the concurrency test runs 1000 spinning threads) a
    /// preempted evaluation would otherwise be denied by the deadline instead of
    /// the failure under test. The deadline itself is tested on its own engine.
    const RELAXED: Limits = Limits {
        deadline_ticks: 500,
        ..Limits::PRODUCTION
    };

    /// One engine shared by the tests, as in the enclave.
    fn engine() -> &'static PolicyEngine {
        static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
        ENGINE.get_or_init(|| PolicyEngine::with_limits(RELAXED, true).expect("policy engine"))
    }

    fn wasm(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).expect("test module parses")
    }

    fn compile(wat: &str) -> CompiledPolicy {
        engine().compile(&wasm(wat)).expect("test module compiles")
    }

    fn compile_err(wat: &str) -> PolicyError {
        match engine().compile(&wasm(wat)) {
            Ok(_) => panic!("module unexpectedly accepted"),
            Err(e) => e,
        }
    }

    fn context(action: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": 1,
            "principal": { "tenant": "t1", "access_key_id": "AKIAEXAMPLE", "roles": ["user"] },
            "action": action,
            "resource": { "key_id": "1234abcd-12ab-34cd-56ef-1234567890ab", "key_state": "Enabled" },
        }))
        .expect("context serialises")
    }

    /// Evaluates and checks the outcome is a deny naming `expected`; returns the reason.
    fn assert_denied(engine: &PolicyEngine, policy: &CompiledPolicy, expected: &str) -> String {
        let started = Instant::now();
        let decision = engine.evaluate(policy, &context("kms:Decrypt"));
        let elapsed = started.elapsed();
        assert!(!decision.allow, "expected a deny, got {decision:?}");
        assert!(
            decision.reason.contains(expected),
            "reason {:?} does not name {expected:?}",
            decision.reason
        );
        // Bounded: generous enough never to flake, far below "forever".
        assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
        decision.reason
    }

    #[test]
    fn engine_and_policy_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PolicyEngine>();
        send_sync::<CompiledPolicy>();
    }

    #[test]
    fn allow_all_allows() {
        let policy = compile(ALLOW_ALL);
        for action in ["kms:Decrypt", "kms:Encrypt", "kms:ScheduleKeyDeletion"] {
            let decision = engine().evaluate(&policy, &context(action));
            assert_eq!(
                decision,
                Decision {
                    allow: true,
                    reason: "allow-all policy".into()
                }
            );
        }
    }

    #[test]
    fn allow_decrypt_only_allows_only_decrypt() {
        let policy = compile(ALLOW_DECRYPT_ONLY);
        let decision = engine().evaluate(&policy, &context("kms:Decrypt"));
        assert_eq!(
            decision,
            Decision {
                allow: true,
                reason: "action is kms:Decrypt".into()
            }
        );
        for action in ["kms:Encrypt", "kms:DecryptX", "kms:GenerateDataKey", "", "kms:decrypt"] {
            let decision = engine().evaluate(&policy, &context(action));
            assert_eq!(
                decision,
                Decision {
                    allow: false,
                    reason: "only kms:Decrypt is allowed".into()
                },
                "action {action:?}"
            );
        }
        // The needle at the very end of the context, and a context shorter than it.
        assert!(engine().evaluate(&policy, br#"{"action":"kms:Decrypt""#).allow);
        assert!(!engine().evaluate(&policy, b"{}").allow);
        assert!(!engine().evaluate(&policy, b"").allow);
    }

    #[test]
    fn decisions_are_independent() {
        // Same policy, alternating inputs: no state carries over.
        let policy = compile(ALLOW_DECRYPT_ONLY);
        for i in 0..50 {
            let action = if i % 2 == 0 { "kms:Decrypt" } else { "kms:Encrypt" };
            assert_eq!(engine().evaluate(&policy, &context(action)).allow, i % 2 == 0);
        }
    }

    #[test]
    fn sha256_is_of_the_module_bytes() {
        let bytes = wasm(ALLOW_ALL);
        let policy = engine().compile(&bytes).expect("compiles");
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(policy.sha256(), expected);
        assert_eq!(policy.sha256_hex(), hex::encode(expected));
        assert_eq!(policy.clone().sha256(), expected);
    }

    #[test]
    fn infinite_loop_runs_out_of_fuel() {
        let policy = compile(INFINITE_LOOP);
        assert_denied(engine(), &policy, "fuel");
    }

    #[test]
    fn infinite_loop_hits_the_epoch_deadline_when_fuel_is_plentiful() {
        let engine = PolicyEngine::with_limits(
            Limits {
                fuel: u64::MAX / 2,
                deadline_ticks: 5,
                slots: 4,
            },
            true,
        )
        .expect("engine");
        let policy = engine.compile(&wasm(INFINITE_LOOP)).expect("compiles");
        assert_denied(&engine, &policy, "epoch deadline");
        // The engine still works afterwards.
        let allow_all = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
        assert!(engine.evaluate(&allow_all, &context("kms:Decrypt")).allow);
    }

    #[test]
    fn memory_grow_bomb_hits_the_memory_limit() {
        let policy = compile(MEMORY_GROW_BOMB);
        assert_denied(engine(), &policy, "memory limit");
    }

    #[test]
    fn deep_recursion_overflows_the_stack() {
        let policy = compile(DEEP_RECURSION);
        assert_denied(engine(), &policy, "stack overflow");
    }

    #[test]
    fn unreachable_traps() {
        let policy = compile(UNREACHABLE);
        let reason = assert_denied(engine(), &policy, "trapped");
        assert!(reason.contains("unreachable"), "{reason}");
    }

    #[test]
    fn out_of_bounds_result_denies() {
        let policy = compile(OUT_OF_BOUNDS_RESULT);
        assert_denied(engine(), &policy, "out of bounds");
    }

    #[test]
    fn non_json_result_is_malformed() {
        let policy = compile(NON_JSON_RESULT);
        assert_denied(engine(), &policy, "malformed");
    }

    #[test]
    fn allow_that_is_not_a_bool_is_malformed() {
        let policy = compile(ALLOW_NOT_BOOL);
        assert_denied(engine(), &policy, "malformed");
    }

    /// `evaluate_inline` until it decides: an epoch tick (every 10 ms) that
    /// falls inside a decision also defers it, whatever the module, so a
    /// module that decides within the budget is given a few tries.
    fn inline_decision(engine: &PolicyEngine, policy: &CompiledPolicy, ctx: &[u8]) -> Option<Decision> {
        (0..5).find_map(|_| engine.evaluate_inline(policy, ctx))
    }

    #[test]
    fn inline_evaluation_decides_what_fits_its_budget_and_defers_the_rest() {
        let engine = engine();
        let ctx = context("kms:Decrypt");
        let allow_all = compile(ALLOW_ALL);
        assert_eq!(
            inline_decision(engine, &allow_all, &ctx),
            Some(engine.evaluate(&allow_all, &ctx))
        );
        // Final denials need no second run.
        let trap = inline_decision(engine, &compile(UNREACHABLE), &ctx).expect("a trap is final");
        assert!(!trap.allow && trap.reason.contains("unreachable"), "{trap:?}");
        // (On a loaded machine the one-tick deadline may stop the bomb first:
        // deferred, not allowed.)
        if let Some(bomb) = inline_decision(engine, &compile(MEMORY_GROW_BOMB), &ctx) {
            assert!(!bomb.allow && bomb.reason.contains("memory limit"), "{bomb:?}");
        }
        // More fuel than the inline budget: deferred, then allowed with the
        // full budget (a heavy but legitimate module is not denied).
        let heavy = compile(ALLOW_AFTER_LONG_LOOP);
        assert_eq!(engine.evaluate_inline(&heavy, &ctx), None);
        let (decision, fuel) = engine.evaluate_metered(&heavy, &ctx);
        assert!(decision.allow, "{decision:?}");
        assert!(fuel > INLINE_FUEL && fuel < FUEL_PER_DECISION, "{fuel}");
        // A module that never returns is deferred too, and the full run denies.
        let looping = compile(INFINITE_LOOP);
        assert_eq!(engine.evaluate_inline(&looping, &ctx), None);
        assert_denied(engine, &looping, "fuel");
    }

    /// The probe allows only when its global, its memory (initial and grown),
    /// its memory size and its table are as instantiation left them.
    fn assert_fresh(engine: &PolicyEngine, probe: &CompiledPolicy) {
        let decision = engine.evaluate(probe, &context("kms:Decrypt"));
        assert!(decision.allow, "{decision:?}");
        assert!(decision.reason.starts_with("first call"), "{decision:?}");
    }

    #[test]
    fn no_state_survives_from_one_decision_to_the_next() {
        // An engine of its own with a few slots, so that the same slots (and
        // their memory images) are reused decision after decision.
        let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }, true).expect("engine");
        let probe = engine.compile(&wasm(ISOLATION_PROBE)).expect("compiles");
        for _ in 0..200 {
            assert_fresh(&engine, &probe);
        }
        // Interleaved with other modules in the same slots.
        let allow_all = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
        for _ in 0..50 {
            assert_fresh(&engine, &probe);
            assert!(engine.evaluate(&allow_all, &context("kms:Decrypt")).allow);
        }
        // This probe sets a table slot, which a reset does not restore: its
        // instances are never reused (the allow-all module's are).
        let reused = engine.decisions_in_reused_instances();
        for _ in 0..10 {
            assert_fresh(&engine, &probe);
        }
        assert_eq!(engine.decisions_in_reused_instances(), reused);
    }

    /// The reset probe's contexts: a long one, a short one (whose next byte
    /// the long one wrote), one that grows memory, one that traps.
    const LONG: &[u8] = &[b'x'; 3000];
    const SHORT: &[u8] = b"abc";
    const GROWS: &[u8] = b"ab";
    const TRAPS: &[u8] = b"a";

    fn assert_first_call(engine: &PolicyEngine, probe: &CompiledPolicy, context: &[u8]) {
        let decision = engine.evaluate(probe, context);
        assert!(decision.allow, "{} bytes: {decision:?}", context.len());
        assert!(decision.reason.starts_with("first call"), "{decision:?}");
    }

    /// Fifty rounds of the reset probe's contexts (with an allow-all
    /// decision in between); then at least 150 of them must have run in a
    /// reset instance: per round LONG after the allow-all decision (from the
    /// second round), SHORT after LONG, GROWS after SHORT and LONG after
    /// TRAPS; SHORT after GROWS and TRAPS after SHORT did not (grown or
    /// trapped instances are dropped).
    fn reset_probe_rounds(engine: &PolicyEngine) {
        let probe = engine.compile(&wasm(ISOLATION_PROBE_RESET)).expect("compiles");
        let allow_all = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
        let reused = engine.decisions_in_reused_instances();
        for _ in 0..50 {
            assert_first_call(engine, &probe, LONG);
            assert_first_call(engine, &probe, SHORT);
            assert_first_call(engine, &probe, GROWS);
            assert_first_call(engine, &probe, SHORT);
            let trapped = engine.evaluate(&probe, TRAPS);
            assert!(!trapped.allow && trapped.reason.contains("unreachable"), "{trapped:?}");
            assert_first_call(engine, &probe, LONG);
            assert!(engine.evaluate(&allow_all, &context("kms:Decrypt")).allow);
        }
        let reused = engine.decisions_in_reused_instances() - reused;
        assert!(reused >= 50 * 3, "only {reused} decisions reused an instance");
    }

    #[test]
    fn reset_instances_keep_nothing_from_earlier_decisions() {
        let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }, true).expect("engine");
        reset_probe_rounds(&engine);
    }

    #[test]
    fn reset_instances_keep_nothing_without_the_dirty_page_scan() {
        // Older kernels: the reset rewrites the first keep-resident bytes
        // blindly and gives the rest back to the kernel.
        let engine = PolicyEngine::build(Limits { slots: 2, ..RELAXED }, true, Enabled::No).expect("engine");
        reset_probe_rounds(&engine);
    }

    #[test]
    fn reset_instances_of_modules_without_data_start_from_zeros() {
        let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }, true).expect("engine");
        let probe = engine.compile(&wasm(ISOLATION_PROBE_NO_DATA)).expect("compiles");
        for context in [LONG, SHORT, SHORT, LONG, LONG, SHORT].repeat(10) {
            let decision = engine.evaluate(&probe, context);
            assert!(decision.allow, "{} bytes: {decision:?}", context.len());
        }
        assert!(engine.decisions_in_reused_instances() >= 59);
    }

    #[test]
    fn a_caller_waiting_for_a_slot_gets_the_one_a_kept_instance_holds() {
        // One slot. A slow decision holds it; another caller starts waiting
        // for it; when the slow decision's instance is kept for reuse, the
        // waiting caller must still get the slot (not be denied as busy a
        // second later).
        let engine = &PolicyEngine::with_limits(Limits { slots: 1, ..RELAXED }, true).expect("engine");
        let slow = &engine.compile(&wasm(ALLOW_AFTER_VERY_LONG_LOOP)).expect("compiles");
        let other = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
        std::thread::scope(|scope| {
            let running = scope.spawn(move || engine.evaluate(slow, &context("kms:Decrypt")));
            while engine.slots.lock().free > 0 && !running.is_finished() {
                std::thread::yield_now();
            }
            let started = Instant::now();
            let decision = engine.evaluate(&other, &context("kms:Decrypt"));
            assert!(decision.allow, "{decision:?}");
            assert!(started.elapsed() < SLOT_WAIT, "waited {:?}", started.elapsed());
            let slow_decision = running.join().expect("slow decision");
            assert!(slow_decision.allow, "{slow_decision:?}");
        });
        assert!(engine.evaluate(slow, &context("kms:Decrypt")).allow);
    }

    #[test]
    fn concurrent_reset_instances_keep_nothing_from_earlier_decisions() {
        let engine = &PolicyEngine::with_limits(Limits { slots: 8, ..RELAXED }, true).expect("engine");
        let probe = &engine.compile(&wasm(ISOLATION_PROBE_RESET)).expect("compiles");
        std::thread::scope(|scope| {
            for thread in 0..8 {
                scope.spawn(move || {
                    for i in 0..100 {
                        let context = [LONG, SHORT, GROWS][(thread + i) % 3];
                        assert_first_call(engine, probe, context);
                    }
                });
            }
        });
        assert!(engine.decisions_in_reused_instances() > 0);
    }

    #[test]
    fn idle_instances_give_their_slots_to_other_policies() {
        // Two slots, both held by idle instances of two policies: a third
        // policy evaluated without waiting takes one back instead of being
        // told the sandbox is busy.
        let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }, true).expect("engine");
        let policies: Vec<_> = (0..3)
            .map(|_| engine.compile(&wasm(ALLOW_ALL)).expect("compiles"))
            .collect();
        for policy in &policies {
            assert!(engine.evaluate(policy, &context("kms:Decrypt")).allow);
        }
        for policy in policies.iter().rev() {
            let decision = engine.evaluate_inline(policy, &context("kms:Decrypt"));
            assert!(decision.is_some_and(|d| d.allow));
        }
        engine.drop_idle_instances();
        assert!(
            engine
                .evaluate_inline(&policies[0], &context("kms:Decrypt"))
                .is_some_and(|d| d.allow)
        );
    }

    #[test]
    fn an_engine_without_reuse_never_reuses() {
        let engine = PolicyEngine::without_reuse().expect("engine");
        let probe = engine.compile(&wasm(ISOLATION_PROBE_RESET)).expect("compiles");
        for context in [LONG, SHORT, LONG, SHORT] {
            assert_first_call(&engine, &probe, context);
        }
        assert_eq!(engine.decisions_in_reused_instances(), 0);
    }

    #[test]
    fn a_trapped_decision_leaves_no_state_behind() {
        let engine = PolicyEngine::with_limits(Limits { slots: 1, ..RELAXED }, true).expect("engine");
        let probe = engine.compile(&wasm(ISOLATION_PROBE)).expect("compiles");
        for _ in 0..50 {
            // A one-byte context: the probe changes all its state, then traps.
            let trapped = engine.evaluate(&probe, b"1");
            assert!(!trapped.allow && trapped.reason.contains("unreachable"), "{trapped:?}");
            assert_fresh(&engine, &probe);
        }
        // Out of fuel half-way, too.
        let looping = engine.compile(&wasm(INFINITE_LOOP)).expect("compiles");
        assert_denied(&engine, &looping, "fuel");
        assert_fresh(&engine, &probe);
    }

    #[test]
    fn concurrent_decisions_are_independent() {
        // A slot per thread (no waiting, so no "busy" on a loaded machine);
        // slots still pass from thread to thread.
        let engine = &PolicyEngine::with_limits(Limits { slots: 8, ..RELAXED }, true).expect("engine");
        let probe = &engine.compile(&wasm(ISOLATION_PROBE)).expect("compiles");
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(move || {
                    for _ in 0..100 {
                        assert_fresh(engine, probe);
                    }
                });
            }
        });
    }

    #[test]
    fn decision_documents_are_strict() {
        let ok = |json: &str| parse_decision(json.as_bytes()).ok();
        assert_eq!(
            ok(r#"{"allow":true,"reason":"r"}"#),
            Some(Decision {
                allow: true,
                reason: "r".into()
            })
        );
        assert_eq!(
            ok(r#" {"reason":"", "allow":false} "#),
            Some(Decision {
                allow: false,
                reason: String::new()
            })
        );
        assert_eq!(
            ok(r#"{"allow":false}"#),
            Some(Decision {
                allow: false,
                reason: String::new()
            })
        );
        for bad in [
            r#"{"allow":false,"allow":true}"#,
            r#"{"allow":"true"}"#,
            r#"{"allow":1}"#,
            r#"{"allow":null}"#,
            r#"{"reason":"no allow"}"#,
            r#"{"allow":true,"reason":7}"#,
            r#"{"allow":true,"extra":1}"#,
            r#"{"allow":true}x"#,
            "{\"allow\":true}\0",
            r#"[true]"#,
            "",
        ] {
            assert!(ok(bad).is_none(), "accepted {bad:?}");
        }
        assert!(parse_decision(b"{\"allow\":true,\"reason\":\"\xff\"}").is_err());
    }

    #[test]
    fn huge_memory_is_rejected_at_upload() {
        match compile_err(HUGE_DATA_SEGMENT) {
            // Refused by the pool's limits (or, with on-demand allocation, by `check_exports`).
            PolicyError::Invalid(why) => assert!(why.contains("minimum"), "{why}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn data_segment_out_of_bounds_fails_instantiation() {
        let policy = compile(DATA_SEGMENT_OUT_OF_BOUNDS);
        assert_denied(engine(), &policy, "instantiation failed");
    }

    #[test]
    fn imports_are_rejected_at_upload() {
        assert!(matches!(compile_err(IMPORTS), PolicyError::Imports));
    }

    #[test]
    fn start_function_is_rejected_at_upload() {
        assert!(matches!(compile_err(START_FUNCTION), PolicyError::StartFunction));
    }

    #[test]
    fn shared_memory_is_rejected_at_upload() {
        assert!(matches!(compile_err(SHARED_MEMORY), PolicyError::SharedMemory));
    }

    #[test]
    fn missing_marker_is_rejected_at_upload() {
        assert!(matches!(
            compile_err(MISSING_MARKER),
            PolicyError::MissingExport("keyward_policy_abi_v1")
        ));
    }

    #[test]
    fn wrong_export_types_are_rejected_at_upload() {
        assert!(matches!(
            compile_err(BAD_EXPORT_TYPE),
            PolicyError::BadExportType("keyward_evaluate")
        ));
        let no_memory = r#"(module
            (func (export "keyward_policy_abi_v1"))
            (func (export "keyward_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#;
        assert!(matches!(compile_err(no_memory), PolicyError::MissingExport("memory")));
        let marker_is_global = r#"(module
            (memory (export "memory") 1)
            (global (export "keyward_policy_abi_v1") i32 (i32.const 1))
            (func (export "keyward_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#;
        assert!(matches!(
            compile_err(marker_is_global),
            PolicyError::BadExportType("keyward_policy_abi_v1")
        ));
        let marker_takes_args = r#"(module
            (memory (export "memory") 1)
            (func (export "keyward_policy_abi_v1") (param i32))
            (func (export "keyward_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#;
        assert!(matches!(
            compile_err(marker_takes_args),
            PolicyError::BadExportType("keyward_policy_abi_v1")
        ));
        let alloc_i64 = r#"(module
            (memory (export "memory") 1)
            (func (export "keyward_policy_abi_v1"))
            (func (export "keyward_alloc") (param i64) (result i32) (i32.const 0))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#;
        assert!(matches!(
            compile_err(alloc_i64),
            PolicyError::BadExportType("keyward_alloc")
        ));
    }

    #[test]
    fn garbage_and_oversized_uploads_are_rejected() {
        for bytes in [
            &b""[..],
            b"\0asm",
            b"\0asm\x01\0\0\0\x01",
            b"not wasm at all",
            b"\0asm\x0d\0\x01\0",
        ] {
            assert!(
                matches!(engine().compile(bytes), Err(PolicyError::Invalid(_))),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            engine().compile(&vec![0u8; MAX_MODULE_BYTES + 1]),
            Err(PolicyError::TooLarge)
        ));
        // Text format is not accepted (only binary modules).
        assert!(matches!(
            engine().compile(ALLOW_ALL.as_bytes()),
            Err(PolicyError::Invalid(_))
        ));
    }

    #[test]
    fn oversized_or_non_utf8_context_denies_without_running() {
        let policy = compile(ALLOW_ALL);
        let big = vec![b' '; MAX_CONTEXT_BYTES + 1];
        let decision = engine().evaluate(&policy, &big);
        assert!(
            !decision.allow && decision.reason.contains("larger than"),
            "{decision:?}"
        );
        let decision = engine().evaluate(&policy, b"{\"a\":\"\xff\"}");
        assert!(!decision.allow && decision.reason.contains("UTF-8"), "{decision:?}");
        // The largest allowed context still works.
        let mut max = vec![b' '; MAX_CONTEXT_BYTES];
        max[0] = b'{';
        max[MAX_CONTEXT_BYTES - 1] = b'}';
        assert!(engine().evaluate(&policy, &max).allow);
    }

    #[test]
    fn policy_from_another_engine_denies() {
        let other = PolicyEngine::with_limits(
            Limits {
                slots: 2,
                ..Limits::PRODUCTION
            },
            true,
        )
        .expect("engine");
        let foreign = other.compile(&wasm(ALLOW_ALL)).expect("compiles");
        let decision = engine().evaluate(&foreign, &context("kms:Decrypt"));
        assert!(
            !decision.allow && decision.reason.contains("another policy engine"),
            "{decision:?}"
        );
        assert!(other.evaluate(&foreign, &context("kms:Decrypt")).allow);
    }

    #[test]
    fn alloc_returning_garbage_denies() {
        let bad_alloc = r#"(module
            (memory (export "memory") 1)
            (func (export "keyward_policy_abi_v1"))
            (func (export "keyward_alloc") (param i32) (result i32) (i32.const -8))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#;
        let policy = compile(bad_alloc);
        assert_denied(engine(), &policy, "out of bounds");
        let oversized_decision = r#"(module
            (memory (export "memory") 1)
            (func (export "keyward_policy_abi_v1"))
            (func (export "keyward_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "keyward_evaluate") (param i32 i32) (result i64) (i64.const 4097)))"#;
        let policy = compile(oversized_decision);
        assert_denied(engine(), &policy, "more than 4096");
    }

    #[test]
    fn concurrent_infinite_loops_all_deny_and_the_engine_recovers() {
        const EVALUATIONS: usize = 1000;
        // Production limits, on an engine of its own.
        let engine = &PolicyEngine::new().expect("engine");
        let looping = engine.compile(&wasm(INFINITE_LOOP)).expect("compiles");
        let started = Instant::now();
        let reasons: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..EVALUATIONS)
                .map(|_| {
                    let looping = looping.clone();
                    scope.spawn(move || engine.evaluate(&looping, &context("kms:Decrypt")))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    let decision = h.join().expect("evaluation thread");
                    assert!(!decision.allow, "{decision:?}");
                    decision.reason
                })
                .collect()
        });
        let fuel = reasons.iter().filter(|r| r.contains("fuel")).count();
        let deadline = reasons.iter().filter(|r| r.contains("epoch deadline")).count();
        let busy = reasons.iter().filter(|r| r.contains("busy")).count();
        println!(
            "{EVALUATIONS} concurrent infinite loops in {:?}: {fuel} out of fuel, {deadline} past the deadline, \
             {busy} busy",
            started.elapsed()
        );
        assert_eq!(fuel + deadline + busy, EVALUATIONS, "unexpected reasons: {reasons:?}");
        // A normal policy still evaluates correctly afterwards.
        let policy = engine.compile(&wasm(ALLOW_DECRYPT_ONLY)).expect("compiles");
        assert!(engine.evaluate(&policy, &context("kms:Decrypt")).allow);
        assert!(!engine.evaluate(&policy, &context("kms:Encrypt")).allow);
    }

    /// Resident set size of this process, in bytes (Linux).
    fn rss_bytes() -> Option<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn memory_bombs_do_not_grow_memory_without_bound() {
        // A dedicated engine, so that pool metrics are this test's alone.
        let engine = PolicyEngine::with_limits(Limits { slots: 4, ..RELAXED }, true).expect("engine");
        println!("{engine:?}");
        let bomb = engine.compile(&wasm(MEMORY_GROW_BOMB)).expect("compiles");
        let before = rss_bytes();
        for _ in 0..200 {
            assert_denied(&engine, &bomb, "memory limit");
        }
        let after = rss_bytes();
        if let (Some(before), Some(after)) = (before, after) {
            // Each bomb dirties 16 MiB: 3.2 GB if nothing were reclaimed.
            println!("RSS before {before} bytes, after 200 memory bombs {after} bytes");
            assert!(after.saturating_sub(before) < 512 * 1024 * 1024, "{before} -> {after}");
        }
        if let Some(metrics) = engine.engine.pooling_allocator_metrics() {
            assert_eq!(metrics.memories(), 0, "a memory slot is still in use");
            assert_eq!(metrics.core_instances(), 0, "an instance slot is still in use");
            assert!(metrics.unused_warm_memories() <= 4);
            // Only the kept-resident prefix of each warm slot stays in memory.
            assert!(metrics.unused_memory_bytes_resident() <= 4 * MEMORY_KEEP_RESIDENT);
            println!(
                "after 200 memory bombs: {} warm memory slots, {} bytes resident in them",
                metrics.unused_warm_memories(),
                metrics.unused_memory_bytes_resident()
            );
        }
        let allow_all = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
        assert!(engine.evaluate(&allow_all, &context("kms:Decrypt")).allow);
    }

    /// Best per-call time of `f` over a few batches (the minimum is robust to
    /// a busy machine).
    fn per_call(mut f: impl FnMut()) -> Duration {
        const ROUNDS: u32 = 5_000;
        for _ in 0..ROUNDS / 5 {
            f();
        }
        (0..7)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..ROUNDS {
                    f();
                }
                started.elapsed() / ROUNDS
            })
            .min()
            .unwrap_or_default()
    }

    /// `cargo test -p keyward-enclave --lib policy::sandbox::tests::measure -- --ignored --nocapture`
    /// (add `--release` for release numbers).
    #[test]
    #[ignore = "measurement; prints the per-decision cost"]
    fn measure_per_decision_cost() {
        let engine = engine();
        let context = context("kms:Decrypt");
        let allow_all = compile(ALLOW_ALL);
        let decrypt_only = compile(ALLOW_DECRYPT_ONLY);
        let new_store = || {
            let mut store = Store::new(&engine.engine, StoreState::default());
            store.limiter(|state| &mut state.limiter);
            store.set_fuel(FUEL_PER_DECISION).expect("fuel");
            store.set_epoch_deadline(EPOCH_DEADLINE_TICKS);
            store
        };
        let store = per_call(|| {
            std::hint::black_box(new_store());
        });
        let instantiate = per_call(|| {
            let mut store = new_store();
            std::hint::black_box(allow_all.inner.pre.instantiate(&mut store).expect("instantiates"));
        });
        let write_context = per_call(|| {
            let mut store = new_store();
            let instance = allow_all.inner.pre.instantiate(&mut store).expect("instantiates");
            let memory = instance.get_memory(&mut store, "memory").expect("memory");
            memory.write(&mut store, 4096, &context).expect("write");
        });
        let decision = br#"{"allow":true,"reason":"allow-all policy"}"#;
        let parse = per_call(|| {
            std::hint::black_box(parse_decision(decision).expect("parses"));
        });
        let full_allow_all = per_call(|| {
            std::hint::black_box(engine.evaluate(&allow_all, &context));
        });
        let full_decrypt_only = per_call(|| {
            std::hint::black_box(engine.evaluate(&decrypt_only, &context));
        });
        println!(
            "per decision ({} context bytes), best of 7 batches of 5000:",
            context.len()
        );
        println!("  new store (limiter, fuel, deadline) + drop: {store:?}");
        println!("  + instantiate (pooling slot) + drop:        {instantiate:?}");
        println!("  + write the context into memory:            {write_context:?}");
        println!("  parse the decision JSON alone:              {parse:?}");
        println!("  evaluate, allow_all (end to end):           {full_allow_all:?}");
        println!("  evaluate, allow_decrypt_only (end to end):  {full_decrypt_only:?}");

        let bytes = wasm(ALLOW_ALL);
        let started = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(engine.compile(&bytes).expect("compiles"));
        }
        println!("compile allow_all: {:?}", started.elapsed() / 20);
    }
}
