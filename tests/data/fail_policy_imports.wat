;; Hostile: imports a host function. Policies may import nothing.
(module
  (import "env" "exfiltrate" (func $exfiltrate (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"\"}")
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (call $exfiltrate (local.get $ptr) (local.get $len))
    (i64.const 26))
)
