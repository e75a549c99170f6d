//! Policy modules (ABI v1) made for a test: each decides by substrings of
//! the context JSON (which the enclave writes compactly, `"name":"value"`).
//! The first rule whose needles all occur decides; when none matches, the
//! module allows. Written as WAT and assembled with `wat`, so a test can
//! name what only it knows (another module's SHA-256, say).

use serde_json::json;
use sha2::{Digest, Sha256};

/// One rule: when every needle occurs in the context, allow or deny with `reason`.
pub struct Rule<'a> {
    pub needles: &'a [&'a str],
    pub allow: bool,
    pub reason: &'a str,
}

/// A rule that allows when every needle occurs.
pub fn allow_if<'a>(needles: &'a [&'a str], reason: &'a str) -> Rule<'a> {
    Rule {
        needles,
        allow: true,
        reason,
    }
}

/// A rule that denies when every needle occurs.
pub fn deny_if<'a>(needles: &'a [&'a str], reason: &'a str) -> Rule<'a> {
    Rule {
        needles,
        allow: false,
        reason,
    }
}

/// Where the context is written (up to 64 KiB, the ABI's limit).
const CONTEXT_AT: u32 = 65536;

/// The module's bytes.
pub fn rule_policy(rules: &[Rule<'_>], default_reason: &str) -> Vec<u8> {
    let mut data = String::new();
    let mut next: u32 = 1024;
    let mut place = |bytes: &[u8], data: &mut String| -> (u32, u32) {
        let at = next;
        let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("  (data (i32.const {at}) \"{escaped}\")\n"));
        let len = u32::try_from(bytes.len()).expect("small");
        next += len + 16;
        assert!(next < CONTEXT_AT, "the rules fit below the context");
        (at, len)
    };
    let decision = |allow: bool, reason: &str| json!({ "allow": allow, "reason": reason }).to_string();
    let packed = |(at, len): (u32, u32)| (u64::from(at) << 32) | u64::from(len);
    let mut body = String::new();
    for rule in rules {
        let mut condition = String::from("(i32.const 1)");
        for needle in rule.needles {
            let (at, len) = place(needle.as_bytes(), &mut data);
            condition = format!(
                "(i32.and {condition} (call $has (local.get $ptr) (local.get $len) (i32.const {at}) (i32.const {len})))"
            );
        }
        let answer = packed(place(decision(rule.allow, rule.reason).as_bytes(), &mut data));
        body.push_str(&format!("    (if {condition} (then (return (i64.const {answer}))))\n"));
    }
    let default = packed(place(decision(true, default_reason).as_bytes(), &mut data));
    let wat = format!(
        r#"(module
  (memory (export "memory") 3)
{data}
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 65536)) (then (return (i32.const -1))))
    (i32.const {CONTEXT_AT}))
  ;; 1 when the needle [$n, $n + $nlen) occurs in [$ptr, $ptr + $len).
  (func $has (param $ptr i32) (param $len i32) (param $n i32) (param $nlen i32) (result i32)
    (local $i i32) (local $j i32)
    (if (i32.lt_u (local.get $len) (local.get $nlen)) (then (return (i32.const 0))))
    (block $not_found
      (loop $outer
        (br_if $not_found (i32.gt_u (local.get $i) (i32.sub (local.get $len) (local.get $nlen))))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (if (i32.eq (local.get $j) (local.get $nlen)) (then (return (i32.const 1))))
            (br_if $mismatch
              (i32.ne
                (i32.load8_u (i32.add (i32.add (local.get $ptr) (local.get $i)) (local.get $j)))
                (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
{body}    (i64.const {default}))
)"#
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("the rule policy does not assemble: {e}\n{wat}"))
}

/// A module's identity: the SHA-256 of its bytes, lowercase hex.
pub fn sha256_hex(module: &[u8]) -> String {
    hex::encode(Sha256::digest(module))
}
