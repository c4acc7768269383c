//! Arbitrary bytes through the flatbuffers client codec (requests and responses):
//! never a panic (the verifier runs before any field is read); whatever decodes
//! re-encodes to an equal value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::client_fb::run(data));
