;; Keyward policy ABI v1: a valid policy that allows every request.
;; The context is written at 4096 (a fresh instance per decision, so a fixed
;; buffer is enough); the decision lives in a data segment at 0.
(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"allow-all policy\"}")

  (func (export "keyward_policy_abi_v1"))

  ;; Returns 4096, or -1 (which the host rejects) when the context cannot fit.
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 126976))
      (then (return (i32.const -1))))
    (i32.const 4096))

  ;; (ptr << 32) | len of the decision.
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.const 0) (i64.const 32))
      (i64.const 42)))
)
