;; Hostile: a memory of 512 pages (32 MiB, over the 16 MiB limit) with a data
;; segment placed past the 16 MiB mark. Rejected when uploaded.
(module
  (memory (export "memory") 512)
  (data (i32.const 0x1000000) "past the sixteen mebibyte limit")
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 0))
)
