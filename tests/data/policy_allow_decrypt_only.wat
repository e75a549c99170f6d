;; Keyward policy ABI v1: a valid policy that allows a request only when its
;; context contains "action":"kms:Decrypt" (a naive byte-by-byte substring
;; search; the closing quote keeps "kms:DecryptX" from matching).
(module
  (memory (export "memory") 2)
  ;; needle (22 bytes)
  (data (i32.const 256) "\"action\":\"kms:Decrypt\"")
  ;; allow decision (47 bytes)
  (data (i32.const 512) "{\"allow\":true,\"reason\":\"action is kms:Decrypt\"}")
  ;; deny decision (54 bytes)
  (data (i32.const 768) "{\"allow\":false,\"reason\":\"only kms:Decrypt is allowed\"}")

  (func (export "keyward_policy_abi_v1"))

  (func (export "keyward_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 126976))
      (then (return (i32.const -1))))
    (i32.const 4096))

  ;; 1 when the 22-byte needle at 256 occurs in [ptr, ptr + len), else 0.
  (func $contains_needle (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (local $j i32)
    (if (i32.lt_u (local.get $len) (i32.const 22))
      (then (return (i32.const 0))))
    (local.set $i (i32.const 0))
    (block $not_found
      (loop $outer
        (br_if $not_found
          (i32.gt_u (local.get $i) (i32.sub (local.get $len) (i32.const 22))))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (br_if $mismatch
              (i32.ne
                (i32.load8_u (i32.add (i32.add (local.get $ptr) (local.get $i)) (local.get $j)))
                (i32.load8_u (i32.add (i32.const 256) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (if (i32.eq (local.get $j) (i32.const 22))
              (then (return (i32.const 1))))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))

  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (if (result i64) (call $contains_needle (local.get $ptr) (local.get $len))
      (then
        (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 47)))
      (else
        (i64.or (i64.shl (i64.const 768) (i64.const 32)) (i64.const 54)))))
)
