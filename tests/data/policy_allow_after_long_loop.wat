;; Keyward policy ABI v1: a valid policy that allows every request after a
;; long computation: 100,000 loop iterations (about 500,000 units of fuel),
;; more than the sandbox's inline budget (INLINE_FUEL) and far less than a
;; decision's full fuel. It proves that a legitimate heavy module is run again
;; with the full budget and allowed, not denied for using more than the
;; inline attempt had.
(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"allowed after a long loop\"}")

  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 126976))
      (then (return (i32.const -1))))
    (i32.const 4096))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 100000)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or
      (i64.shl (i64.const 0) (i64.const 32))
      (i64.const 51)))
)
