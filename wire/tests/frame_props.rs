//! Property tests: arbitrary messages, fragmented arbitrarily, with control frames
//! between fragments, masked with arbitrary keys, decode to the same messages however
//! the byte stream is cut.

mod common;
use common::{Got, feed};
use proptest::prelude::*;
use wire::frame::encode::encode_frame_parts;
use wire::frame::{Decoder, Limits, Opcode, encode_client_frame};

#[derive(Debug, Clone)]
enum Msg {
    Text(String, Vec<usize>),
    Binary(Vec<u8>, Vec<usize>),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    let cuts = proptest::collection::vec(0usize..300, 0..4);
    prop_oneof![
        (any::<String>(), cuts.clone()).prop_map(|(s, c)| Msg::Text(s, c)),
        (proptest::collection::vec(any::<u8>(), 0..300), cuts).prop_map(|(b, c)| Msg::Binary(b, c)),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

/// Encode messages as frames; a fragment boundary may fall inside a UTF-8 code point.
fn encode(msgs: &[Msg], masked: Option<[u8; 4]>) -> (Vec<u8>, Vec<Got>) {
    let mut out = Vec::new();
    let mut expect = Vec::new();
    let put = |out: &mut Vec<u8>, fin: bool, op: Opcode, p: &[u8]| match masked {
        Some(k) => encode_client_frame(out, fin, op, p, k),
        None => encode_frame_parts(out, fin, op, p),
    };
    for m in msgs {
        let (op, bytes, cuts) = match m {
            Msg::Ping(p) => {
                put(&mut out, true, Opcode::Ping, p);
                expect.push(Got::Ping(p.clone()));
                continue;
            }
            Msg::Text(s, c) => {
                expect.push(Got::Text(s.clone()));
                (Opcode::Text, s.as_bytes(), c)
            }
            Msg::Binary(b, c) => {
                expect.push(Got::Binary(b.clone()));
                (Opcode::Binary, b.as_slice(), c)
            }
        };
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        bounds.sort_unstable();
        bounds.dedup();
        bounds.retain(|&c| c > 0 && c < bytes.len());
        let mut start = 0;
        let mut first = true;
        for end in bounds.into_iter().chain([bytes.len()]) {
            let fin = end == bytes.len();
            put(
                &mut out,
                fin,
                if first { op } else { Opcode::Continuation },
                &bytes[start..end],
            );
            first = false;
            start = end;
            if !fin {
                // a control frame between fragments
                put(&mut out, true, Opcode::Pong, b"hb");
                expect.insert(expect.len() - 1, Got::Pong(b"hb".to_vec()));
            }
        }
    }
    (out, expect)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_to_server_round_trip_any_cut(
        msgs in proptest::collection::vec(msg(), 0..8),
        key in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(0usize..4000, 0..12),
    ) {
        let (stream, expect) = encode(&msgs, Some(key));
        let got = feed(&mut Decoder::server(Limits::default()), &stream, &cuts).unwrap();
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn server_to_client_round_trip_any_cut(
        msgs in proptest::collection::vec(msg(), 0..8),
        cuts in proptest::collection::vec(0usize..4000, 0..12),
    ) {
        let (stream, expect) = encode(&msgs, None);
        let got = feed(&mut Decoder::client(Limits::default()), &stream, &cuts).unwrap();
        prop_assert_eq!(got, expect);
    }

    /// Byte-at-a-time delivery (every cut point at once) gives the same result.
    #[test]
    fn byte_at_a_time(msgs in proptest::collection::vec(msg(), 0..4), key in any::<[u8; 4]>()) {
        let (stream, expect) = encode(&msgs, Some(key));
        let cuts: Vec<usize> = (0..stream.len()).collect();
        let got = feed(&mut Decoder::server(Limits::default()), &stream, &cuts).unwrap();
        prop_assert_eq!(got, expect);
    }

    /// Arbitrary bytes never panic, and an error or a need-more never consumes.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), cuts in proptest::collection::vec(0usize..200, 0..4)) {
        let _ = feed(&mut Decoder::server(Limits { max_frame: 64, max_message: 128 }), &bytes, &cuts);
    }
}
