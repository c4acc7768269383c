//! Arbitrary link bytes: never a panic; `Ok(None)` only for a strict prefix of a
//! possible frame; a decoded frame re-encodes to exactly the bytes it came from.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::link::{LinkLimits, decode_frame, encode_frame, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let limits = LinkLimits { max_frame: 1 << 16, ..LinkLimits::default() };
    match decode_frame(data, &limits) {
        Ok(Some((frame, used))) => {
            assert!(used >= HEADER_LEN && used <= data.len());
            let mut again = Vec::new();
            encode_frame(&mut again, frame.message.kind(), frame.flags, frame.request_id, &data[HEADER_LEN..used], limits.max_frame)
                .expect("a decoded frame fits the limit it was decoded under");
            assert_eq!(again, &data[..used]);
            // Every strict prefix needs more.
            assert!(matches!(decode_frame(&data[..used - 1], &limits), Ok(None)));
        }
        Ok(None) => {}
        Err(_) => {}
    }
});
