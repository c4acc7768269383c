//! Arbitrary bytes through the flatbuffers client codec (requests and responses):
//! never a panic (the verifier runs before any field is read); whatever decodes
//! re-encodes to an equal value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::client::fb;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = fb::decode_request(data) {
        let mut out = Vec::new();
        fb::encode_request(&req, &mut out);
        assert_eq!(fb::decode_request(&out).as_ref(), Ok(&req));
    }
    if let Ok(resp) = fb::decode_response(data) {
        let mut out = Vec::new();
        fb::encode_response(&resp, &mut out);
        assert_eq!(fb::decode_response(&out).as_ref(), Ok(&resp));
    }
});
