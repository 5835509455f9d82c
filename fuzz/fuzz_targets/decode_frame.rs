#![no_main]
//! The frame decoder must never panic, with or without a cluster key.
use libfuzzer_sys::fuzz_target;
use quilt::core::protocol::decode_frame;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data, None, 1 << 20);
    let _ = decode_frame(data, Some(b"key"), 1 << 20);
});
