//! Arbitrary client bytes through the frame decoder, delivered in pieces chosen by the
//! input itself: never a panic, `Ok(None)` never consumes or alters the buffer, and the
//! same stream cut differently decodes to the same messages (or the same error).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::frame::run(data));
