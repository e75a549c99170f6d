//! The custody formats a sealed enclave reads from the host, and a
//! custodian's `kmsctl` reads from the service or its state file, on
//! hostile bytes: unseal messages (format 1 and 2, the latter carrying a
//! checkpoint) and checkpoints, plain and signed (issue 19 item 3).
//!
//! Proves: no reader panics or allocates past libFuzzer's limit; an
//! accepted unseal message re-encodes and decodes to itself and states a
//! readable freshness (its checkpoint, if any, names the message's
//! deployment); an accepted checkpoint's encoding is exactly its input
//! (canonical) and it covers itself.
#![no_main]

use keyward_custody::checkpoint::{Checkpoint, SignedCheckpoint};
use keyward_custody::unseal::UnsealMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = UnsealMessage::from_bytes(data) {
        let bytes = message.to_bytes().expect("an accepted message encodes");
        assert_eq!(UnsealMessage::from_bytes(&bytes).expect("re-decodes"), message);
        let freshness = message.freshness().expect("an accepted message's checkpoint reads");
        if let Some(checkpoint) = freshness.checkpoint {
            assert_eq!(checkpoint.deployment_id, message.deployment_id);
        }
    }
    if let Ok(checkpoint) = Checkpoint::from_bytes(data) {
        assert_eq!(checkpoint.to_bytes().expect("encodes"), data, "not canonical");
        assert!(checkpoint.covers(&checkpoint));
        assert!(checkpoint.lags(&checkpoint).is_empty());
    }
    if let Ok(signed) = SignedCheckpoint::from_bytes(data) {
        let _ = Checkpoint::from_bytes(&signed.checkpoint);
        let _ = signed.verify(&[], &[0; 16]);
    }
});
