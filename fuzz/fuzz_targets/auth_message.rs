//! Arbitrary bytes as an `auth` message, a bare token, and a signed token's claims
//! (see `ringline_fuzz::auth_message`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::auth_message::run(data));
