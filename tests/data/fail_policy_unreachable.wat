;; Hostile: keyward_evaluate traps immediately.
(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (unreachable))
)
