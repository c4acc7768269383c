//! Arbitrary request bytes, fed whole and cut in two: never a panic; a complete parse
//! consumes no more than it was given; the verdict does not depend on the cut.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::handshake::run(data));
