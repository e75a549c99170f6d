//! The policy SDK's request-context reader (`keyward_policy::Context::from_json`,
//! the hand-written JSON parser every policy module runs) on hostile bytes.
//!
//! Proves: it never panics; whatever it accepts is JSON (serde_json's
//! grammar agrees);
//! and a context it reads survives `to_json` -> `from_json` unchanged.
#![no_main]

use keyward_policy::Context;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(context) = Context::from_json(data) {
        // Grammar only: `IgnoredAny` does not convert numbers, so valid JSON
        // such as `1E999` (out of f64 range, refused as a `Value`) passes.
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
            "from_json accepted text that is not JSON"
        );
        let again = Context::from_json(context.to_json().as_bytes()).expect("re-reads its own JSON");
        assert_eq!(again, context);
    }
});
