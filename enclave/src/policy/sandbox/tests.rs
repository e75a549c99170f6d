//! The sandbox's unit tests: limits and denials, upload checks, and the
//! isolation probes.

use std::sync::OnceLock;
use std::time::Instant;

use wasmtime::{Enabled, Store};

use super::config::{MEMORY_KEEP_RESIDENT, PAGEMAP_SCAN};
use super::decision::parse_decision;
use super::*;

macro_rules! wat_file {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/", $name, ".wat"))
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
    ENGINE.get_or_init(|| PolicyEngine::with_limits(RELAXED).expect("policy engine"))
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
    let engine = PolicyEngine::with_limits(Limits {
        fuel: u64::MAX / 2,
        deadline_ticks: 5,
        slots: 4,
    })
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

/// Asserts that `engine`'s decisions ran in slots of the pooling allocator
/// that were recycled (reset by wasmtime and handed to a later instance),
/// which is what the isolation tests are about: with on-demand allocation
/// every instance would get new memory from the kernel, and the tests would
/// prove nothing about the pool's reset. Call after more decisions than the
/// engine has slots.
fn assert_slots_recycled(engine: &PolicyEngine) {
    assert!(engine.pooling, "no pooling allocator: the slot reset was not exercised");
    let metrics = engine
        .engine
        .pooling_allocator_metrics()
        .expect("pooling allocator metrics");
    assert_eq!(metrics.core_instances(), 0, "an instance outlived its decision");
    assert_eq!(metrics.memories(), 0, "a memory slot is still in use");
    assert!(
        metrics.unused_warm_memories() > 0,
        "no warm memory slot: slots were not recycled"
    );
}

#[test]
fn no_state_survives_from_one_decision_to_the_next() {
    // An engine of its own with a few slots, so that the same slots (and
    // their memory images) are reused decision after decision.
    let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }).expect("engine");
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
    assert_slots_recycled(&engine);
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

/// Fifty rounds of the reset probe's contexts (with an allow-all decision
/// in between), each decision in a new instance in one of two recycled
/// slots: LONG then SHORT (the byte after SHORT was LONG's), GROWS (a grown
/// page, then SHORT in the same slot), TRAPS (everything changed, then a
/// trap).
fn reset_probe_rounds(engine: &PolicyEngine) {
    let probe = engine.compile(&wasm(ISOLATION_PROBE_RESET)).expect("compiles");
    let allow_all = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
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
    assert_slots_recycled(engine);
}

#[test]
fn recycled_slots_keep_nothing_from_earlier_decisions() {
    // The production reset: the `PAGEMAP_SCAN` reset where the kernel has it
    // (Linux 6.7+), the blind reset elsewhere.
    assert!(matches!(PAGEMAP_SCAN, Enabled::Auto));
    println!(
        "PAGEMAP_SCAN available: {}",
        wasmtime::PoolingAllocationConfig::is_pagemap_scan_available()
    );
    let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }).expect("engine");
    reset_probe_rounds(&engine);
}

#[test]
fn recycled_slots_keep_nothing_with_the_blind_reset() {
    // What production falls back to on a kernel without `PAGEMAP_SCAN`:
    // the first `MEMORY_KEEP_RESIDENT` bytes rewritten, the rest `madvise`d,
    // forced here so that it is tested on every kernel.
    let engine = PolicyEngine::build(Limits { slots: 2, ..RELAXED }, Enabled::No).expect("engine");
    reset_probe_rounds(&engine);
}

#[test]
fn recycled_slots_of_modules_without_data_start_from_zeros() {
    let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }).expect("engine");
    let probe = engine.compile(&wasm(ISOLATION_PROBE_NO_DATA)).expect("compiles");
    for context in [LONG, SHORT, SHORT, LONG, LONG, SHORT].repeat(10) {
        let decision = engine.evaluate(&probe, context);
        assert!(decision.allow, "{} bytes: {decision:?}", context.len());
    }
    assert_slots_recycled(&engine);
}

/// The probes can fail: two decisions in one instance (what the sandbox
/// never does) leave state that each probe notices and denies. So the tests
/// above, which see every probe allow, show that no state crossed.
#[test]
fn the_probes_notice_state_left_by_an_earlier_decision() {
    let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }).expect("engine");
    let decrypt = context("kms:Decrypt");
    for (name, wat, first, second) in [
        ("policy_isolation_probe", ISOLATION_PROBE, &decrypt[..], &decrypt[..]),
        ("policy_isolation_probe_reset", ISOLATION_PROBE_RESET, LONG, SHORT),
        ("policy_isolation_probe_no_data", ISOLATION_PROBE_NO_DATA, LONG, SHORT),
    ] {
        let probe = engine.compile(&wasm(wat)).expect("compiles");
        let mut live = engine
            .instantiate(&probe.inner, RELAXED, SLOT_WAIT)
            .expect("an instance");
        let mut decide = |context: &[u8]| {
            let len = i32::try_from(context.len()).expect("short context");
            live.decide(context, len, RELAXED, &mut 0)
        };
        match decide(first) {
            Ok(decision) if decision.allow => {}
            other => panic!("{name}: first decision {other:?}"),
        }
        // The probes deny a leak with a reason saying so, or (the one without
        // data) with an out-of-bounds decision.
        match decide(second) {
            Ok(decision) => assert!(
                !decision.allow && decision.reason.contains("leaked"),
                "{name}: the probe missed leaked state: {decision:?}"
            ),
            Err(Failure::DecisionOutOfBounds { .. }) => {}
            Err(other) => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_caller_waiting_for_a_slot_gets_it_when_the_decision_ends() {
    // One slot. A slow decision holds it; another caller starts waiting for
    // it and must get it when the slow decision ends (not be denied as busy
    // a second later).
    let engine = &PolicyEngine::with_limits(Limits { slots: 1, ..RELAXED }).expect("engine");
    let slow = &engine.compile(&wasm(ALLOW_AFTER_VERY_LONG_LOOP)).expect("compiles");
    let other = engine.compile(&wasm(ALLOW_ALL)).expect("compiles");
    std::thread::scope(|scope| {
        let running = scope.spawn(move || engine.evaluate(slow, &context("kms:Decrypt")));
        while engine.slots.free() > 0 && !running.is_finished() {
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
fn concurrent_decisions_in_recycled_slots_keep_nothing_from_earlier_ones() {
    let engine = &PolicyEngine::with_limits(Limits { slots: 8, ..RELAXED }).expect("engine");
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
    assert_slots_recycled(engine);
}

#[test]
fn every_decision_gives_its_slot_back() {
    // Two slots, three policies, one after the other without waiting: each
    // decision's instance is gone (its slot free) when it returns, so
    // none is told the sandbox is busy.
    let engine = PolicyEngine::with_limits(Limits { slots: 2, ..RELAXED }).expect("engine");
    let policies: Vec<_> = (0..3)
        .map(|_| engine.compile(&wasm(ALLOW_ALL)).expect("compiles"))
        .collect();
    for policy in policies.iter().chain(policies.iter().rev()) {
        let decision = engine.evaluate_inline(policy, &context("kms:Decrypt"));
        assert!(decision.is_some_and(|d| d.allow));
        assert_eq!(engine.slots.free(), 2);
    }
    assert_slots_recycled(&engine);
}

#[test]
fn a_trapped_decision_leaves_no_state_behind() {
    let engine = PolicyEngine::with_limits(Limits { slots: 1, ..RELAXED }).expect("engine");
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
    let engine = &PolicyEngine::with_limits(Limits { slots: 8, ..RELAXED }).expect("engine");
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
    let other = PolicyEngine::with_limits(Limits {
        slots: 2,
        ..Limits::PRODUCTION
    })
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
    let engine = PolicyEngine::with_limits(Limits { slots: 4, ..RELAXED }).expect("engine");
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
