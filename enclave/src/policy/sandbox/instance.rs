//! One live policy instance, in its own store and pool slot, for exactly one
//! decision: made by [`Live::new`], used by [`Live::decide`], then dropped.

use wasmtime::{Extern, Memory, ResourceLimiter, Store, TypedFunc};

use super::decision::{Failure, parse_decision};
use super::slots::SlotGuard;
use super::{CompiledInner, Decision, Limits, MAX_DECISION_BYTES, MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS, error_text};

/// A new instance of a policy, with its store and slot.
pub(super) struct Live {
    /// Declared before `_slot`: the slot is released only after the store
    /// (and its instance) is gone.
    store: Store<StoreState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    evaluate: TypedFunc<(i32, i32), i64>,
    _slot: SlotGuard,
}

impl Live {
    /// A new instance of `inner` in a new store, in `slot`.
    pub(super) fn new(
        engine: &wasmtime::Engine,
        inner: &CompiledInner,
        limits: Limits,
        slot: SlotGuard,
    ) -> Result<Self, Failure> {
        let mut store = Store::new(engine, StoreState::default());
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
        Ok(Live {
            store,
            memory,
            alloc,
            evaluate,
            _slot: slot,
        })
    }

    /// One decision: the per-decision limits, then `keyward_alloc`, the
    /// context, `keyward_evaluate`, and the decision read back. The sandbox
    /// calls it once per instance; a second call on the same instance sees
    /// what the first left behind (the isolation tests use that to show
    /// that their probes notice leaked state).
    pub(super) fn decide(
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
}

/// What a store carries: its resource limiter.
#[derive(Default)]
pub(super) struct StoreState {
    pub(super) limiter: Limiter,
}

/// Caps memory and tables per instance; growth past a cap traps (and is
/// remembered, to name the failure).
#[derive(Default)]
pub(super) struct Limiter {
    pub(super) memory_limit_hit: bool,
    pub(super) table_limit_hit: bool,
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
