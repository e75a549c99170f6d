;; Keyward policy ABI v1: an isolation probe with no data segment, so its
;; memory starts as zeros and a reset must zero what a decision wrote rather
;; than copy an image back, and with a v128 global.
;;
;; It writes its answer with stores. It answers {"allow":true} only when all
;; of these were still in their initial state: the v128 global, a counter in
;; each of its two pages, and the byte just after this decision's context
;; (which a longer earlier context wrote); otherwise it returns an
;; out-of-bounds decision, which the sandbox denies.
(module
  (memory (export "memory") 2)
  (global $v (mut v128) (v128.const i64x2 0 0))

  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $fresh i32)
    (local.set $fresh (i32.const 1))
    (if (v128.any_true (global.get $v)) (then (local.set $fresh (i32.const 0))))
    (global.set $v (v128.const i64x2 1 1))
    (if (i32.load (i32.const 1000)) (then (local.set $fresh (i32.const 0))))
    (i32.store (i32.const 1000) (i32.const 1))
    (if (i32.load (i32.const 70000)) (then (local.set $fresh (i32.const 0))))
    (i32.store (i32.const 70000) (i32.const 1))
    (if (i32.load8_u (i32.add (local.get $ptr) (local.get $len)))
      (then (local.set $fresh (i32.const 0))))
    ;; {"allow":true} at 0: '{"allow"' ':tru' 'e}'
    (i64.store (i32.const 0) (i64.const 0x22776F6C6C61227B))
    (i32.store (i32.const 8) (i32.const 0x7572743A))
    (i32.store16 (i32.const 12) (i32.const 0x7D65))
    (if (result i64) (local.get $fresh)
      (then (i64.const 14))
      (else (i64.or (i64.shl (i64.const 0xFFFF0000) (i64.const 32)) (i64.const 14))))))
