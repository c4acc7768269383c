//! Arbitrary strings as resume tokens (they come back from clients): never a panic;
//! whatever decodes re-encodes to the same positions.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::token::run(data));
