//! Arbitrary text through the JSON client codec (requests and responses): never a
//! panic; whatever decodes re-encodes (JSON, and flatbuffers) to an equal value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringline_fuzz::client_json::run(data));
