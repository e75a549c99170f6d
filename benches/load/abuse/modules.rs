//! Hostile policy modules for the neighbour scenario: a policy whose
//! `keyward_evaluate` loops forever (stopped by its fuel), with extra function
//! code to compile and a custom section padding it to a given size; distinct
//! per `n`, so that none is a cached copy of another. (The same shape as
//! `tests/integration/fairness.rs`'s.)

use anyhow::Context as _;

pub(crate) fn looping_module(n: usize, code_bytes: usize, total: usize) -> anyhow::Result<Vec<u8>> {
    let per_function = 600;
    let mut wat = String::from(
        r#"(module
  (memory (export "memory") 2)
  (func (export "keyward_policy_abi_v1"))
  (func (export "keyward_alloc") (param $len i32) (result i32) (i32.const 4096))
  (func (export "keyward_evaluate") (param $ptr i32) (param $len i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0))
"#,
    );
    let mut left = code_bytes / 7;
    while left > 0 {
        let here = left.min(per_function);
        wat.push_str("  (func (param i32) (result i32)\n");
        for _ in 0..here {
            wat.push_str("    local.get 0 i32.const 7 i32.add local.set 0\n");
        }
        wat.push_str("    local.get 0)\n");
        left -= here;
    }
    wat.push_str(")\n");
    let mut wasm = wat::parse_str(&wat).context("the generated module")?;
    let name = format!("pad-{n}");
    // A custom section: id 0, its size (5-byte LEB128), the name, the payload.
    let header = 1 + 5 + 1 + name.len();
    let payload = total.saturating_sub(wasm.len() + header);
    let mut size = u32::try_from(1 + name.len() + payload).context("module too big")?;
    wasm.push(0);
    for i in 0..5 {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        wasm.push(if i < 4 { byte | 0x80 } else { byte });
    }
    wasm.push(u8::try_from(name.len()).context("name too long")?);
    wasm.extend_from_slice(name.as_bytes());
    wasm.extend(std::iter::repeat_n(0u8, payload));
    Ok(wasm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_have_the_size_asked_for_and_differ() -> anyhow::Result<()> {
        let big = looping_module(1, 64 * 1024, 1024 * 1024)?;
        assert_eq!(big.len(), 1024 * 1024);
        let (a, b) = (looping_module(1, 1024, 8192)?, looping_module(2, 1024, 8192)?);
        assert_ne!(a, b);
        assert_eq!(a.len(), 8192);
        Ok(())
    }
}
