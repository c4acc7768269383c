//! Arbitrary subjects and permission patterns through the grant compiler (see
//! `ringline_fuzz::patterns`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::patterns::run(data));
