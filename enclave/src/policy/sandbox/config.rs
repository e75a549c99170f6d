//! The wasmtime engine configuration of the sandbox: code generation,
//! metering, the wasm features it accepts, and the pooling allocator whose
//! slot reset the isolation argument rests on (`sandbox` module docs,
//! "Isolation").

use wasmtime::{
    Config, Enabled, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy, WasmFeatures,
};

use super::{MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS, MAX_WASM_STACK};

/// How a freed slot's memory and table are reset: `Enabled::No`, the blind
/// reset, which does not depend on the kernel's dirty-page reports (see
/// "Isolation"). Tests also run the isolation probes with the
/// `PAGEMAP_SCAN` reset (`Enabled::Auto`), which Keyward does not ship.
pub(super) const PAGEMAP_SCAN: Enabled = Enabled::No;

/// Bytes at the start of a freed instance's linear memory that the pool
/// rewrites in place (copied back from the module's image, or zeroed) instead
/// of giving them back to the kernel with `madvise`; everything past them is
/// `madvise`d. With the blind reset (no `PAGEMAP_SCAN`) these bytes are
/// rewritten whether or not the decision touched them, so this is a trade:
/// a copy of up to this much per decision against page faults on the next
/// decision for what was `madvise`d and is touched again. 128 KiB covers a
/// small module's whole memory (the allow-all WAT module has two pages) and
/// the low part of a Rust policy's (its 64 KiB stack and its data; the
/// heap above is `madvise`d). The cost in memory is at most this much
/// resident per warm slot (32 MiB for a full pool). Measurements:
/// `BENCHMARKS.md`.
pub(super) const MEMORY_KEEP_RESIDENT: usize = 128 * 1024;
/// The same for a freed instance's table (its used part only): 16 KiB is 2,048
/// function references, more than the table of any module seen so far (a
/// Rust policy's is a few dozen), so resetting it is one short `memset`
/// instead of an `madvise` and a page fault on the next decision.
pub(super) const TABLE_KEEP_RESIDENT: usize = 16 * 1024;

/// The engine configuration; `pool_slots` selects the pooling allocator,
/// `pagemap_scan` its reset (production: [`PAGEMAP_SCAN`]).
pub(super) fn config(pool_slots: Option<u32>, pagemap_scan: Enabled) -> Config {
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
            // Off in production: the reset rewrites or `madvise`s every
            // accessible byte without asking the kernel which pages were
            // written, so wasmtime#14357 (written pages that are not present
            // skipped by the scan) cannot apply.
            .pagemap_scan(pagemap_scan);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
