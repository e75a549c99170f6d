//! Write Keyward key policies in Rust.
//!
//! A policy is a function from the request [`Context`] to a [`Decision`];
//! [`export!`] turns it into a WebAssembly module that implements
//! Keyward policy ABI v1 (`policies/ABI.md` in the Keyward repository: a
//! core module with no imports) when built for `wasm32-unknown-unknown`:
//!
//! ```
//! use keyward_policy::{Context, Decision};
//!
//! pub fn decide(ctx: &Context) -> Decision {
//!     if ctx.action_is("kms:Decrypt") && ctx.principal.attestation.is_none() {
//!         return Decision::deny("Decrypt requires an attested caller");
//!     }
//!     Decision::allow("ok")
//! }
//!
//! keyward_policy::export!(decide);
//! ```
//!
//! The crate (`crate-type = ["cdylib"]`) builds with
//! `cargo build --target wasm32-unknown-unknown --release`. On other targets
//! the macro only checks the function's type, so `cargo test` exercises the
//! same `decide` natively; [`evaluate_json`] runs it exactly as the module
//! does, from the JSON the host sends to the decision it gets back.
//!
//! The module traps (and the host denies) if the policy panics.

#[cfg(any(all(target_arch = "wasm32", feature = "bump-allocator"), test))]
mod bump;
mod context;
mod decision;
mod json;

/// In the module, allocation is a pointer bump (see `src/bump.rs`; feature
/// `bump-allocator`, on by default).
#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
#[global_allocator]
static ALLOCATOR: bump::Bump = bump::Bump::new();

pub use context::{
    Attestation, CONTEXT_VERSION, Context, ContextError, Environment, PolicyUpdate, Principal, Request, Resource,
};
pub use decision::{Decision, MAX_REASON_BYTES};
pub use json::JsonError;

/// What the module answers to the request context `json`: the context
/// parsed, then `policy` — or a deny when `json` is not a v1 context.
pub fn evaluate_json(policy: impl FnOnce(&Context) -> Decision, json: &[u8]) -> Decision {
    evaluate_json_then(policy, json, drop)
}

/// [`evaluate_json`], handing the parsed context to `dispose` afterwards.
fn evaluate_json_then(
    policy: impl FnOnce(&Context) -> Decision,
    json: &[u8],
    dispose: impl FnOnce(Context),
) -> Decision {
    match Context::from_json(json) {
        Ok(context) => {
            let decision = policy(&context);
            dispose(context);
            decision
        }
        Err(e) => Decision::deny(format!(
            "keyward-policy: the request context is not a valid v1 context: {e}"
        )),
    }
}

/// Exports a policy function `fn(&Context) -> Decision` as the ABI v1
/// entry points of the module: `keyward_alloc`, `keyward_evaluate` and the
/// marker `keyward_policy_abi_v1` (`memory` is exported by the toolchain).
///
/// ```
/// # use keyward_policy::{Context, Decision};
/// fn my_policy(_ctx: &Context) -> Decision {
///     Decision::allow("anything goes")
/// }
/// keyward_policy::export!(my_policy);
/// ```
///
/// Use it once per module (the exports have fixed names). On targets other
/// than wasm32 it exports nothing and only checks the function's type.
#[macro_export]
macro_rules! export {
    ($policy:path) => {
        const _: fn(&$crate::Context) -> $crate::Decision = $policy;

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            /// ABI v1: a buffer of `len` bytes for the request context.
            #[unsafe(no_mangle)]
            pub extern "C" fn keyward_alloc(len: i32) -> i32 {
                $crate::__private::wasm_alloc(len)
            }

            /// ABI v1: decides on the context at `ptr`; returns the
            /// decision's pointer (high 32 bits) and length (low 32 bits).
            #[unsafe(no_mangle)]
            pub extern "C" fn keyward_evaluate(ptr: i32, len: i32) -> i64 {
                $crate::__private::wasm_evaluate(ptr, len, $policy)
            }

            /// ABI v1 marker.
            #[unsafe(no_mangle)]
            pub extern "C" fn keyward_policy_abi_v1() {}
        };
    };
}

/// The module side of the ABI, for [`export!`]. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use crate::{Context, Decision, evaluate_json_then};

    /// The context buffer handed out by `keyward_alloc` and the decision
    /// handed back by `keyward_evaluate`: owned here, so they stay valid
    /// until the next call, and replaced (freed) by it.
    struct Buffers {
        input: Vec<u8>,
        output: Vec<u8>,
    }

    thread_local! {
        static BUFFERS: RefCell<Buffers> = const {
            RefCell::new(Buffers {
                input: Vec::new(),
                output: Vec::new(),
            })
        };
    }

    /// A zeroed buffer of `len` bytes for the host to write the context
    /// into; frees the previous call's buffers.
    pub fn alloc(len: usize) -> *mut u8 {
        BUFFERS.with_borrow_mut(|b| {
            b.output = Vec::new();
            b.input = vec![0; len];
            b.input.as_mut_ptr()
        })
    }

    /// Decides on the `len` bytes at `ptr`, which must lie in the buffer
    /// [`alloc`] returned last; returns the encoded decision, valid until
    /// the next call.
    pub fn evaluate(ptr: *const u8, len: usize, policy: impl FnOnce(&Context) -> Decision) -> (*const u8, usize) {
        let input = BUFFERS.with_borrow_mut(|b| std::mem::take(&mut b.input));
        let decision = if std::ptr::eq(ptr, input.as_ptr()) && len <= input.len() {
            // In the module the context is not freed: the instance is dropped
            // after one decision (ABI v1), and freeing thousands of strings
            // one by one would only spend fuel.
            evaluate_json_then(policy, &input[..len], |context| {
                if cfg!(target_arch = "wasm32") {
                    std::mem::forget(context);
                }
            })
        } else {
            Decision::deny("keyward-policy: keyward_evaluate was not given the buffer from keyward_alloc")
        };
        drop(input);
        BUFFERS.with_borrow_mut(|b| {
            b.output = decision.to_json().into_bytes();
            (b.output.as_ptr(), b.output.len())
        })
    }

    /// `keyward_alloc` (32-bit addresses); 0 for a negative length.
    #[cfg(target_arch = "wasm32")]
    pub fn wasm_alloc(len: i32) -> i32 {
        match usize::try_from(len) {
            Ok(len) => alloc(len) as usize as i32,
            Err(_) => 0,
        }
    }

    /// `keyward_evaluate` (32-bit addresses): pointer << 32 | length.
    #[cfg(target_arch = "wasm32")]
    pub fn wasm_evaluate(ptr: i32, len: i32, policy: impl FnOnce(&Context) -> Decision) -> i64 {
        let (out, out_len) = match usize::try_from(len) {
            Ok(len) => evaluate(ptr as u32 as usize as *const u8, len, policy),
            Err(_) => evaluate(std::ptr::null(), 0, policy),
        };
        (((out as usize as u64) << 32) | out_len as u64) as i64
    }
}

#[cfg(test)]
mod tests;
