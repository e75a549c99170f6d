//! The host <-> enclave frame codec on hostile bytes.
//!
//! Proves: `keyward_wire::decode` never panics, nor allocates past
//! libFuzzer's malloc limit, on any body; a frame it accepts re-encodes and decodes to
//! itself; and `read_frame`, reading a stream of length-prefixed frames (as
//! the enclave's connection loop does), never panics and stops at the first
//! bad frame.
#![no_main]

use keyward_wire::{Frame, WireError, decode, encode, read_frame};
use libfuzzer_sys::fuzz_target;

static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
    std::sync::LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"));

fuzz_target!(|data: &[u8]| {
    // One frame body.
    if let Ok(frame) = decode(data) {
        roundtrips(&frame);
    }

    // The same bytes as a stream of length-prefixed frames.
    RUNTIME.block_on(async {
        let mut reader: &[u8] = data;
        loop {
            match read_frame(&mut reader).await {
                Ok(frame) => roundtrips(&frame),
                Err(WireError::Closed | WireError::TooLarge(_) | WireError::Malformed(_) | WireError::Io(_)) => break,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
    });
});

fn roundtrips(frame: &Frame) {
    // A frame decoded from at most MAX_FRAME_LEN bytes may still re-encode
    // larger (e.g. definite for indefinite lengths): only then may encoding fail.
    match encode(frame) {
        Ok(bytes) => assert_eq!(&decode(&bytes[4..]).expect("re-decodes"), frame),
        Err(WireError::TooLarge(_)) => {}
        Err(e) => panic!("a decoded frame does not encode: {e}"),
    }
}
