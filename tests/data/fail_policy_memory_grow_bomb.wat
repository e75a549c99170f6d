;; Hostile: keyward_evaluate grows memory one page at a time, touching every
;; new page, until growth fails; it then spins until it is stopped. The
;; sandbox caps linear memory at 16 MiB and fails the decision when the module
;; asks for more.
(module
  (memory (export "memory") 1)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (i32.const 1024))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (local $old i32)
    (block $failed
      (loop $grow
        (local.set $old (memory.grow (i32.const 1)))
        (br_if $failed (i32.eq (local.get $old) (i32.const -1)))
        ;; dirty the new page so it is really backed by memory
        (i32.store8 (i32.mul (local.get $old) (i32.const 65536)) (i32.const 0xff))
        (br $grow)))
    (loop $spin
      (br $spin))
    (i64.const 0))
)
