;; Keyward policy ABI v1: a valid policy that allows every request after a
;; very long computation: 2,000,000 loop iterations (18,000,000 units
;; of fuel, within a decision's 20,000,000; a few milliseconds). Its code
;; changes no table, so the sandbox keeps its instance for reuse. It holds
;; an instance slot long enough for another caller to start waiting for it.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"allowed after a very long loop\"}")

  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 2000000)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.const 56))
)
