//! Arbitrary bytes as HTTP API requests: never a panic; heads are found whole; each
//! maps to hub requests or to a 4xx refusal, and every answer is a valid response.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::api_request::run(data));
