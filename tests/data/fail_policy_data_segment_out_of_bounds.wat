;; Hostile: a one-page memory (no maximum) with a data segment at 16 MiB. Valid
;; WebAssembly, but instantiation fails: every decision denies.
(module
  (memory (export "memory") 1)
  (data (i32.const 0x1000000) "past the end of memory")
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 1024))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 0))
)
