//! Arbitrary text through the JSON client codec (requests and responses): never a
//! panic; whatever decodes re-encodes (JSON, and flatbuffers) to an equal value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::client::{fb, json};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = json::decode_request(data) {
        let mut out = Vec::new();
        json::encode_request(&req, &mut out);
        assert_eq!(json::decode_request(&out).as_ref(), Ok(&req), "json re-encode: {}", String::from_utf8_lossy(&out));
        out.clear();
        fb::encode_request(&req, &mut out);
        assert_eq!(fb::decode_request(&out).as_ref(), Ok(&req), "fb encode");
    }
    if let Ok(resp) = json::decode_response(data) {
        let mut out = Vec::new();
        json::encode_response(&resp, &mut out);
        assert_eq!(json::decode_response(&out).as_ref(), Ok(&resp), "json re-encode: {}", String::from_utf8_lossy(&out));
    }
});
