;; Keyward policy ABI v1: an isolation probe. Like policy_isolation_probe.wat
;; it counts its calls in every kind of state a module has, and allows only
;; when nothing survived from an earlier decision; unlike it, its code changes
;; no table (no `table.set`), so it also suited a reset of the instance in
;; place (which Keyward no longer does: every decision is a new instance in
;; a recycled pool slot, `enclave/src/policy/sandbox/mod.rs`, "Isolation").
;;
;; State it changes on every call and checks on the next:
;; * a non-exported mutable global (a call counter), an exported one, and a
;;   "stack pointer" it moves and leaves moved, as a trapped Rust function
;;   would;
;; * a counter in its data segment, and one at byte 6000 of every 8 KiB of
;;   its four initial wasm pages (32 separate dirty runs, more than the
;;   dirty-page scan returns in one go, and more than the pool keeps
;;   resident, so both the rewritten and the `madvise`d part of the slot's
;;   reset must be right);
;; * the request context itself: the byte just after this decision's context
;;   must be zero, so a longer context from an earlier decision must not
;;   have survived (the confidentiality property, directly);
;; * its memory size (4 pages) and its table (slot 0 set by the element
;;   segment, slot 1 empty; read only).
;; A two-byte context grows the memory and writes the new page, then returns
;; normally (the next instance in the slot must see 4 pages again). A
;; one-byte context traps after changing everything.
(module
  (memory (export "memory") 4)
  (table $t 2 funcref)
  (elem (i32.const 0) $marker)
  (global $calls (mut i32) (i32.const 0))
  (global $exported (export "counter") (mut i64) (i64.const 7))
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 16) "\00\00\00\00")
  (data (i32.const 256) "{\"allow\":true,\"reason\":\"first call: no state from an earlier decision\"}")
  (data (i32.const 512) "{\"allow\":false,\"reason\":\"state leaked from an earlier decision\"}")

  (func $marker)
  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 8192))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $fresh i32)
    (local $i i32)
    (local $at i32)
    (local.set $fresh (i32.const 1))
    ;; 1. globals: a counter, an exported one, a moved stack pointer
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.ne (global.get $calls) (i32.const 1)) (then (local.set $fresh (i32.const 0))))
    (if (i64.ne (global.get $exported) (i64.const 7)) (then (local.set $fresh (i32.const 0))))
    (global.set $exported (i64.add (global.get $exported) (i64.const 1)))
    (if (i32.ne (global.get $sp) (i32.const 65536)) (then (local.set $fresh (i32.const 0))))
    (global.set $sp (i32.sub (global.get $sp) (i32.const 1024)))
    ;; 2. the initial memory: a counter in the data segment
    (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
    (if (i32.ne (i32.load (i32.const 16)) (i32.const 1)) (then (local.set $fresh (i32.const 0))))
    ;; 2b. a counter at byte 6000 of every 8 KiB: odd 4 KiB pages 1..63
    (block $scattered
      (loop $next
        (br_if $scattered (i32.ge_u (local.get $i) (i32.const 32)))
        (local.set $at (i32.add (i32.mul (local.get $i) (i32.const 8192)) (i32.const 6000)))
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))
        (if (i32.ne (i32.load (local.get $at)) (i32.const 1)) (then (local.set $fresh (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; 3. the byte after this context: zero unless an earlier, longer
    ;; context survived
    (if (i32.ne (i32.load8_u (i32.add (local.get $ptr) (local.get $len))) (i32.const 0))
      (then (local.set $fresh (i32.const 0))))
    ;; 4. the memory size and the table (read only)
    (if (i32.ne (memory.size) (i32.const 4)) (then (local.set $fresh (i32.const 0))))
    (if (ref.is_null (table.get $t (i32.const 0))) (then (local.set $fresh (i32.const 0))))
    (if (i32.eqz (ref.is_null (table.get $t (i32.const 1)))) (then (local.set $fresh (i32.const 0))))
    ;; a two-byte context: grow the memory and write the new page
    (if (i32.eq (local.get $len) (i32.const 2))
      (then
        (drop (memory.grow (i32.const 1)))
        (i32.store (i32.const 262160) (i32.const 1))))
    ;; a one-byte context: trap after changing all of it
    (if (i32.eq (local.get $len) (i32.const 1)) (then (unreachable)))
    ;; (ptr << 32) | len of one of the two decisions
    (if (result i64) (local.get $fresh)
      (then (i64.or (i64.shl (i64.const 256) (i64.const 32)) (i64.const 71)))
      (else (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 64))))))
