;; Hostile: the decision pointer (0xFFFF0000) lies far outside the 2-page memory.
(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.const 0xFFFF0000) (i64.const 32))
      (i64.const 100)))
)
