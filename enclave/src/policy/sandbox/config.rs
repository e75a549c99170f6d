//! The wasmtime engine configuration of the sandbox: code generation,
//! metering, the wasm features it accepts, and the pooling allocator whose
//! slot reset the isolation argument rests on (`sandbox` module docs,
//! "Isolation").

use wasmtime::{
    Config, Enabled, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy, WasmFeatures,
};

use super::{MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS, MAX_WASM_STACK};

/// How a freed slot's memory and table are reset: `Enabled::Auto`, wasmtime's
/// `PAGEMAP_SCAN` reset where the kernel has it (Linux 6.7+), which rewrites
/// only the slot's private pages, and the blind reset elsewhere (see
/// "Isolation" for why both isolate). Tests run the isolation probes with
/// this setting and with the blind reset forced (`Enabled::No`).
pub(super) const PAGEMAP_SCAN: Enabled = Enabled::Auto;

/// Bytes of a freed instance's linear memory that the pool may rewrite in
/// place (copied back from the module's image, or zeroed) instead of giving
/// them back to the kernel with `madvise`. With the `PAGEMAP_SCAN` reset this
/// is a budget for the pages the scan reports (the slot's private pages, the
/// ones a decision wrote); what does not fit is `madvise`d. With the blind
/// reset (kernels without `PAGEMAP_SCAN`) it is the first this-many bytes,
/// rewritten whether or not the decision touched them, and everything past
/// them is `madvise`d. 128 KiB covers a small module's whole memory (the
/// allow-all WAT module has two pages) and what a Rust policy built with the
/// SDK writes in a decision (the top of its 64 KiB stack, its data, the first
/// pages of its bump arena). The cost in memory is at most this much
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
            // Production: `Auto` (see `PAGEMAP_SCAN` and "Isolation"; the
            // scan in 48.0.11 selects private pages present *or* swapped, the
            // fix of wasmtime#14357).
            .pagemap_scan(pagemap_scan);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
