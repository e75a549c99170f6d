//! The policy SDK's request-context reader (`keyward_policy::Context::from_json`,
//! the hand-written JSON parser every policy module runs) on hostile bytes.
//!
//! Proves: it never panics; whatever it accepts is JSON (serde_json agrees);
//! and a context it reads survives `to_json` -> `from_json` unchanged.
#![no_main]

use keyward_policy::Context;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(context) = Context::from_json(data) {
        assert!(
            serde_json::from_slice::<serde_json::Value>(data).is_ok(),
            "from_json accepted text that is not JSON"
        );
        let again = Context::from_json(context.to_json().as_bytes()).expect("re-reads its own JSON");
        assert_eq!(again, context);
    }
});
