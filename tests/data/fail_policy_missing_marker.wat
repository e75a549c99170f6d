;; Hostile: everything but the keyward_policy_abi_v1 marker export.
(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"\"}")
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 26))
)
