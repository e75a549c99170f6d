//! Reusing a policy's instance for later decisions: which modules may be
//! reset in place, and the cache of reset instances waiting for their next
//! decision. The isolation argument is in `sandbox.rs` ("Isolation").

use std::sync::{Mutex, PoisonError};

use wasmparser::{Operator, Parser, Payload};

/// Whether nothing in the code of `wasm` changes state that a reset in place
/// (`wasmtime::Instance::keyward_reset`, `vendor/wasmtime/KEYWARD-PATCH.md`)
/// does not restore. The reset restores linear memory and globals; it does
/// not restore table contents or whether a segment was dropped, so a module
/// whose code has an instruction that changes those (`table.set`,
/// `table.grow`, `table.fill`, `table.copy`, `table.init`, `elem.drop`,
/// `memory.init`, `data.drop`; and the threads and GC proposals' table and
/// segment instructions, which the sandbox's engine does not even accept) is
/// never reused: each of its decisions gets a fresh instance. (Reading a table, `call_indirect`, `memory.grow`, bulk
/// memory copies and fills are fine: a grown memory is detected and the
/// instance dropped instead of reset.)
///
/// Anything this parser cannot read counts as "changes state" (wasmtime has
/// already validated the module, so that does not happen).
pub(crate) fn code_is_resettable(wasm: &[u8]) -> bool {
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else {
            return false;
        };
        let Payload::CodeSectionEntry(body) = payload else {
            continue;
        };
        let Ok(mut operators) = body.get_operators_reader() else {
            return false;
        };
        while !operators.eof() {
            match operators.read() {
                Ok(
                    Operator::TableSet { .. }
                    | Operator::TableGrow { .. }
                    | Operator::TableFill { .. }
                    | Operator::TableCopy { .. }
                    | Operator::TableInit { .. }
                    | Operator::ElemDrop { .. }
                    | Operator::MemoryInit { .. }
                    | Operator::DataDrop { .. }
                    // Off in the sandbox's engine (threads, GC), refused
                    // here too should that ever change.
                    | Operator::TableAtomicSet { .. }
                    | Operator::TableAtomicRmwXchg { .. }
                    | Operator::TableAtomicRmwCmpxchg { .. }
                    | Operator::ArrayNewData { .. }
                    | Operator::ArrayNewElem { .. }
                    | Operator::ArrayInitData { .. }
                    | Operator::ArrayInitElem { .. },
                )
                | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }
    true
}

/// Reset instances waiting for a decision of their policy, oldest first; at
/// most `capacity` of them (putting one more drops the oldest). An entry is
/// found only by the id of the compiled policy it was instantiated from, so
/// a replaced or deleted module's instances are never used again (they age
/// out).
pub(crate) struct IdleInstances<W> {
    entries: Mutex<Vec<(u64, W)>>,
    capacity: usize,
}

impl<W> IdleInstances<W> {
    pub(crate) fn new(capacity: usize) -> Self {
        IdleInstances {
            entries: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, W)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many instances this keeps at most (0: none, reuse is off).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most recently put instance of `policy`, if any.
    pub(crate) fn take(&self, policy: u64) -> Option<W> {
        let mut entries = self.lock();
        let at = entries.iter().rposition(|(id, _)| *id == policy)?;
        Some(entries.remove(at).1)
    }

    /// Keeps `instance` for the next decision of `policy`. Dropping what no
    /// longer fits (the oldest) happens after the lock is released.
    pub(crate) fn put(&self, policy: u64, instance: W) {
        if self.capacity == 0 {
            return;
        }
        let evicted = {
            let mut entries = self.lock();
            let evicted = (entries.len() >= self.capacity).then(|| entries.remove(0));
            entries.push((policy, instance));
            evicted
        };
        drop(evicted);
    }

    /// Drops the oldest idle instance (to free its slot); false when there
    /// is none.
    pub(crate) fn evict_oldest(&self) -> bool {
        let evicted = {
            let mut entries = self.lock();
            (!entries.is_empty()).then(|| entries.remove(0))
        };
        evicted.is_some()
    }

    /// Drops every idle instance.
    #[cfg(test)]
    pub(crate) fn clear(&self) {
        let evicted = std::mem::take(&mut *self.lock());
        drop(evicted);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resettable(wat: &str) -> bool {
        code_is_resettable(&wat::parse_str(wat).expect("test module"))
    }

    #[test]
    fn code_that_changes_tables_or_segments_is_not_resettable() {
        let base = |body: &str| {
            format!(
                r#"(module (memory 1) (table 2 funcref) (elem $e func $f) (data $d "x")
                    (func $f) (func {body}))"#
            )
        };
        assert!(resettable(&base("(drop (table.get 0 (i32.const 0)))")));
        assert!(resettable(&base("(drop (memory.grow (i32.const 1)))")));
        assert!(resettable(&base(
            "(memory.fill (i32.const 0) (i32.const 1) (i32.const 2))"
        )));
        for changes in [
            "(table.set 0 (i32.const 1) (ref.null func))",
            "(drop (table.grow 0 (ref.null func) (i32.const 1)))",
            "(table.fill 0 (i32.const 0) (ref.null func) (i32.const 1))",
            "(table.copy (i32.const 0) (i32.const 1) (i32.const 1))",
            "(table.init $e (i32.const 0) (i32.const 0) (i32.const 1))",
            "(elem.drop $e)",
            "(memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))",
            "(data.drop $d)",
        ] {
            assert!(!resettable(&base(changes)), "{changes}");
        }
    }

    #[test]
    fn unreadable_code_is_not_resettable() {
        let mut wasm = wat::parse_str("(module (func (nop)))").expect("test module");
        // Cut the function body short.
        wasm.truncate(wasm.len() - 2);
        assert!(!code_is_resettable(&wasm));
    }

    /// The wasmtime patch's `Instance::keyward_reset` refuses while wasm is
    /// on the stack: a host function's `Caller` can reach it mid-call.
    /// (Keyward's policies import nothing; this pins the patch's own
    /// guarantee.)
    #[test]
    fn a_reset_from_inside_a_call_is_refused() {
        use wasmtime::{
            Caller, Config, Engine, Instance, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
            Store,
        };
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(2)
            .total_memories(2)
            .total_tables(2)
            .max_memory_size(1 << 20);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        let wasm = wat::parse_str(
            r#"(module
                (import "host" "reset" (func $reset (result i32)))
                (memory 1)
                (global $g (mut i32) (i32.const 0))
                (func (export "run") (result i32)
                  (global.set $g (i32.const 1))
                  (i32.store (i32.const 0) (i32.const 1))
                  (call $reset))
                (func (export "state") (result i32)
                  (i32.add (global.get $g) (i32.load (i32.const 0)))))"#,
        )
        .expect("test module");
        let module = Module::new(&engine, wasm).expect("module");
        let mut linker = Linker::<Option<Instance>>::new(&engine);
        linker
            .func_wrap("host", "reset", |mut caller: Caller<'_, Option<Instance>>| -> i32 {
                let Some(instance) = *caller.data() else {
                    return -1;
                };
                match instance.keyward_reset(&mut caller) {
                    Ok(true) => 1,
                    Ok(false) => 0,
                    Err(_) => 2,
                }
            })
            .expect("host function");
        let mut store = Store::new(&engine, None);
        let instance = linker.instantiate(&mut store, &module).expect("instance");
        *store.data_mut() = Some(instance);
        let run = instance.get_typed_func::<(), i32>(&mut store, "run").expect("run");
        let state = instance.get_typed_func::<(), i32>(&mut store, "state").expect("state");
        assert_eq!(run.call(&mut store, ()).expect("runs"), 0, "reset inside a call");
        assert_eq!(state.call(&mut store, ()).expect("runs"), 2);
        // Outside a call the same instance resets.
        assert!(instance.keyward_reset(&mut store).expect("resets"));
        assert_eq!(state.call(&mut store, ()).expect("runs"), 0);
    }

    #[test]
    fn idle_instances_are_found_by_policy_newest_first_and_bounded() {
        let idle = IdleInstances::new(3);
        assert_eq!(idle.take(1), None::<&str>);
        idle.put(1, "a");
        idle.put(2, "b");
        idle.put(1, "c");
        assert_eq!(idle.take(1), Some("c"));
        idle.put(1, "c");
        idle.put(3, "d"); // full: "a", the oldest, goes
        assert_eq!(idle.len(), 3);
        assert_eq!(idle.take(1), Some("c"));
        assert_eq!(idle.take(1), None);
        assert!(idle.evict_oldest()); // "b"
        assert_eq!(idle.take(2), None);
        assert_eq!(idle.take(3), Some("d"));
        assert!(!idle.evict_oldest());
        idle.put(4, "e");
        idle.clear();
        assert_eq!(idle.len(), 0);
        let none = IdleInstances::new(0);
        none.put(1, "x");
        assert_eq!(none.take(1), None);
    }
}
