//! Arbitrary request bytes, fed whole and cut in two: never a panic; a complete parse
//! consumes no more than it was given; the verdict does not depend on the cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::handshake::{HandshakeLimits, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits::default();
    let protos = ["ringline.v1.json", "ringline.v1.fb"];
    let whole = parse_request(data, &limits, &protos);
    if let Ok(Some((req, used))) = &whole {
        assert!(*used <= data.len());
        assert_eq!(req.rest.len(), data.len() - used);
        if let Some(ws) = &req.websocket {
            assert_eq!(ws.accept.as_str().len(), 28);
        }
        // Any prefix that ends before the head is complete needs more (or is refused
        // for size), never a different request.
        for cut in [used / 2, used.saturating_sub(1)] {
            if let Ok(Some((_, n))) = parse_request(&data[..cut], &limits, &protos) {
                panic!("prefix of {cut} bytes parsed as a {n}-byte head before the {used}-byte one");
            }
        }
    }
    if let Err(e) = &whole {
        let mut out = Vec::new();
        e.write_response(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 4"));
    }
});
