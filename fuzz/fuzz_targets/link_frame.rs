//! Arbitrary link bytes: never a panic; `Ok(None)` only for a strict prefix of a
//! possible frame; a decoded frame re-encodes to exactly the bytes it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::link_frame::run(data));
