//! Arbitrary strings as resume tokens (they come back from clients): never a panic;
//! whatever decodes re-encodes to the same positions.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::client::{decode_token, encode_token};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(positions) = decode_token(text) {
        let again = encode_token(&positions);
        assert_eq!(decode_token(&again).as_ref(), Ok(&positions));
    }
});
