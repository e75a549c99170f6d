;; Hostile: unbounded recursion; exhausts the bounded wasm stack.
(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 4096))
  (func $down (param $depth i64) (result i64)
    (i64.add
      (call $down (i64.add (local.get $depth) (i64.const 1)))
      (i64.const 1)))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (call $down (i64.const 0)))
)
