;; Hostile: keyward_evaluate never returns (stopped by fuel, or by the epoch
;; deadline when fuel is not the tighter limit).
(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever
      (br $forever))
    (i64.const 0))
)
