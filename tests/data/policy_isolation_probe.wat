;; Keyward policy ABI v1: an isolation probe. It counts its calls in every
;; kind of state a module has — a mutable global, its initial memory (a data
;; segment), a page it grows its memory by, and a table slot — and allows only
;; when every count is 1 and its memory is at its initial size: that is, when
;; nothing survived from an earlier decision (the host must reset all of it).
;; It also writes a counter into every other 4 KiB page of its four initial
;; wasm pages (32 separate dirty runs, more than the host's dirty-page scan
;; returns in one go, and past the bytes the pool keeps resident), so that a
;; reset which only rewrites written pages must find all of them.
;; On a one-byte context it traps after changing all of that state.
(module
  (memory (export "memory") 4)
  (table $t 2 funcref)
  (elem (i32.const 0) $marker)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 16) "\00\00\00\00")
  (data (i32.const 256) "{\"allow\":true,\"reason\":\"first call: no state from an earlier decision\"}")
  (data (i32.const 512) "{\"allow\":false,\"reason\":\"state leaked from an earlier decision\"}")

  (func $marker)
  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $fresh i32)
    (local $i i32)
    (local $at i32)
    (local.set $fresh (i32.const 1))
    ;; 1. a mutable global
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.ne (global.get $calls) (i32.const 1)) (then (local.set $fresh (i32.const 0))))
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
    ;; 3. the memory size, and a counter in a page grown on every call
    (if (i32.ne (memory.size) (i32.const 4)) (then (local.set $fresh (i32.const 0))))
    (drop (memory.grow (i32.const 1)))
    (i32.store (i32.const 262160) (i32.add (i32.load (i32.const 262160)) (i32.const 1)))
    (if (i32.ne (i32.load (i32.const 262160)) (i32.const 1)) (then (local.set $fresh (i32.const 0))))
    ;; 4. the table: slot 1 starts empty; fill it
    (if (i32.eqz (ref.is_null (table.get $t (i32.const 1)))) (then (local.set $fresh (i32.const 0))))
    (table.set $t (i32.const 1) (ref.func $marker))
    ;; a one-byte context: trap after changing all of it (a trapped
    ;; instance must leave nothing behind either)
    (if (i32.eq (local.get $len) (i32.const 1)) (then (unreachable)))
    ;; (ptr << 32) | len of one of the two decisions
    (if (result i64) (local.get $fresh)
      (then (i64.or (i64.shl (i64.const 256) (i64.const 32)) (i64.const 71)))
      (else (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 64))))))
