//! Arbitrary bytes as a balancer's PROXY protocol header (see `ringline_fuzz::proxy`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::proxy::run(data));
