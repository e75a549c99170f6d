;; Hostile: a start function (code that would run at instantiation, outside
;; any call the host makes). Policies may not have one.
(module
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"allow\":true,\"reason\":\"\"}")
  (func $init
    (loop $forever
      (br $forever)))
  (start $init)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 26))
)
