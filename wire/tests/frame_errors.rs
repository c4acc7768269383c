//! Each protocol violation is reported with the right error and close code, and
//! fails as early as the bytes allow.
#![allow(clippy::unwrap_used)]

mod common;
use common::{Got, feed};
use wire::frame::{
    CloseCode, Decoder, Incoming, Limits, Opcode, ProtocolError, encode_client_frame,
    encode_compressed_client_frame,
};

const K: [u8; 4] = [1, 2, 3, 4];

fn client(frames: &[(bool, Opcode, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (fin, op, p) in frames {
        encode_client_frame(&mut out, *fin, *op, p, K);
    }
    out
}

fn err_of(stream: &[u8], limits: Limits) -> ProtocolError {
    feed(&mut Decoder::server(limits), stream, &[]).unwrap_err()
}

#[test]
fn sequencing_fails_on_the_first_byte() {
    let mut d = Decoder::server(Limits::default());
    assert_eq!(
        d.decode(&mut [0x80]),
        Err(ProtocolError::UnexpectedContinuation)
    );
    let mut d = Decoder::server(Limits::default());
    let mut first = client(&[(false, Opcode::Text, b"a")]);
    assert_eq!(d.decode(&mut first).unwrap().unwrap().0, Incoming::Fragment);
    assert_eq!(
        d.decode(&mut [0x82]),
        Err(ProtocolError::ExpectedContinuation)
    );
}

#[test]
fn sequencing_errors() {
    let e = err_of(
        &client(&[(true, Opcode::Continuation, b"x")]),
        Limits::default(),
    );
    assert_eq!(e, ProtocolError::UnexpectedContinuation);
    let e = err_of(
        &client(&[(false, Opcode::Text, b"a"), (true, Opcode::Binary, b"b")]),
        Limits::default(),
    );
    assert_eq!(e, ProtocolError::ExpectedContinuation);
    assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn control_frames_between_fragments() {
    let s = client(&[
        (false, Opcode::Text, b"fra"),
        (true, Opcode::Ping, b"p"),
        (false, Opcode::Continuation, b"gme"),
        (true, Opcode::Pong, b""),
        (true, Opcode::Continuation, b"nted"),
    ]);
    for cut in 0..=s.len() {
        let got = feed(&mut Decoder::server(Limits::default()), &s, &[cut]).unwrap();
        assert_eq!(
            got,
            [
                Got::Ping(b"p".to_vec()),
                Got::Pong(vec![]),
                Got::Text("fragmented".into())
            ]
        );
    }
}

#[test]
fn limits_fail_on_the_header_before_the_payload_arrives() {
    let limits = Limits {
        max_frame: 100,
        max_message: 150,
    };
    let s = client(&[(true, Opcode::Binary, &[0; 101])]);
    // Only the header is present: the frame is already refused.
    let mut d = Decoder::server(limits);
    let mut head = s[..8].to_vec();
    assert_eq!(
        d.decode(&mut head),
        Err(ProtocolError::FrameTooLarge { len: 101, max: 100 })
    );
    assert_eq!(
        ProtocolError::FrameTooLarge { len: 101, max: 100 }.close_code(),
        CloseCode::TOO_BIG
    );

    let s = client(&[
        (false, Opcode::Binary, &[0; 100]),
        (true, Opcode::Continuation, &[0; 51]),
    ]);
    let e = err_of(&s, limits);
    assert_eq!(e, ProtocolError::MessageTooLarge { len: 151, max: 150 });
    assert_eq!(e.close_code().0, 1009);
}

#[test]
fn invalid_utf8_fails_fast_across_fragments() {
    // "κόσμε" then an invalid continuation, then more frames that never arrive.
    let s = client(&[
        (false, Opcode::Text, "κόσμε".as_bytes()),
        (false, Opcode::Continuation, b"\xf4\x90\x80\x80"),
    ]);
    let e = err_of(&s, Limits::default());
    assert_eq!(e, ProtocolError::InvalidUtf8);
    assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn invalid_utf8_fails_fast_inside_one_partial_frame() {
    // One text frame of 20 bytes whose 3rd byte makes it invalid; only 8 bytes of
    // payload have arrived.
    let mut payload = b"ab\xffcdefghijklmnopqr".to_vec();
    payload.truncate(20);
    let s = client(&[(true, Opcode::Text, &payload)]);
    let mut d = Decoder::server(Limits::default());
    let mut partial = s[..6 + 2].to_vec(); // header + 2 valid bytes
    assert_eq!(d.decode(&mut partial), Ok(None));
    let mut partial = s[..6 + 8].to_vec();
    assert_eq!(d.decode(&mut partial), Err(ProtocolError::InvalidUtf8));
}

#[test]
fn valid_text_split_everywhere_decodes() {
    let text = "Ringline – ☃ – 𝄞 – done";
    let s = client(&[(true, Opcode::Text, text.as_bytes())]);
    for cut in 0..=s.len() {
        for cut2 in cut..=s.len() {
            let got = feed(&mut Decoder::server(Limits::default()), &s, &[cut, cut2]).unwrap();
            assert_eq!(got, [Got::Text(text.into())]);
        }
    }
}

#[test]
fn close_frames_are_validated() {
    let e = err_of(
        &client(&[(true, Opcode::Close, b"\x03")]),
        Limits::default(),
    );
    assert_eq!(e, ProtocolError::CloseTooShort);
    let e = err_of(
        &client(&[(true, Opcode::Close, b"\x03\xed")]),
        Limits::default(),
    ); // 1005
    assert_eq!(e, ProtocolError::InvalidCloseCode(1005));
    let e = err_of(
        &client(&[(true, Opcode::Close, b"\x03\xe8\xff")]),
        Limits::default(),
    );
    assert_eq!(e, ProtocolError::InvalidCloseReason);
    assert_eq!(e.close_code().0, 1007);
    let got = feed(
        &mut Decoder::server(Limits::default()),
        &client(&[(true, Opcode::Close, b"\x0f\xa0bye")]),
        &[],
    )
    .unwrap();
    assert_eq!(got, [Got::Close(Some((4000, "bye".into())))]);
}

#[test]
fn nothing_is_decoded_after_close() {
    let s = client(&[(true, Opcode::Close, b""), (true, Opcode::Text, b"late")]);
    let mut d = Decoder::server(Limits::default());
    let mut buf = s.clone();
    let (item, used) = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(item, Incoming::Close(None));
    assert!(d.is_closed());
    // What follows a close is consumed and dropped, never buffered.
    let rest = buf.len() - used;
    assert_eq!(
        d.decode(&mut buf[used..]),
        Ok(Some((Incoming::AfterClose, rest)))
    );
    assert_eq!(d.decode(&mut []), Ok(None));
}

#[test]
fn every_error_maps_to_a_close_code_an_endpoint_may_send() {
    let all = [
        ProtocolError::UnmaskedFrame,
        ProtocolError::MaskedFrame,
        ProtocolError::ReservedBits(1),
        ProtocolError::ReservedOpcode(3),
        ProtocolError::ControlFrameTooLong(126),
        ProtocolError::FragmentedControlFrame,
        ProtocolError::LengthTopBit,
        ProtocolError::NonMinimalLength(3),
        ProtocolError::UnexpectedContinuation,
        ProtocolError::ExpectedContinuation,
        ProtocolError::FrameTooLarge { len: 2, max: 1 },
        ProtocolError::MessageTooLarge { len: 2, max: 1 },
        ProtocolError::InvalidUtf8,
        ProtocolError::CloseTooShort,
        ProtocolError::InvalidCloseCode(1005),
        ProtocolError::InvalidCloseReason,
    ];
    for e in all {
        let c = e.close_code();
        assert!(c.is_sendable(), "{e}: {c:?}");
        assert!(matches!(c.0, 1002 | 1007 | 1009), "{e}: {c:?}");
    }
}

/// The messages `d` decodes from `stream` cut at `cuts`, compressed ones inflated:
/// (text, bytes, was compressed).
fn messages_of(
    d: &mut Decoder,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<(bool, Vec<u8>, bool)>, ProtocolError> {
    use wire::frame::deflate::{Inflater, inflate_message};
    let mut inflater = Inflater::default();
    let mut out = Vec::new();
    for got in feed(d, stream, cuts)? {
        match got {
            Got::Text(t) => out.push((true, t.into_bytes(), false)),
            Got::Binary(b) => out.push((false, b, false)),
            Got::Compressed(text, z) => {
                let mut m = Vec::new();
                inflate_message(&mut inflater, text, &z, 1 << 20, &mut m)?;
                out.push((text, m, true));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn deflated(data: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    wire::frame::deflate::Deflater::new(6).deflate_end(data, &mut z);
    z
}

fn with_deflate() -> Decoder {
    let mut d = Decoder::server(Limits::default());
    d.enable_deflate();
    d
}

#[test]
fn compressed_messages_whole_or_fragmented_interleave_with_plain_ones() {
    let hello = "héllo, héllo, héllo".as_bytes();
    let z = deflated(hello);
    let mut stream = Vec::new();
    // Whole, compressed text.
    encode_compressed_client_frame(&mut stream, Opcode::Text, &z, K);
    // Plain text.
    encode_client_frame(&mut stream, true, Opcode::Text, b"plain", K);
    // Compressed text in three fragments (RSV1 on the first only): the deflated bytes
    // are not UTF-8, and are not checked until inflated. A ping between.
    let (a, rest) = z.split_at(3);
    let (b, c) = rest.split_at(2);
    let at = stream.len();
    encode_client_frame(&mut stream, false, Opcode::Text, a, K);
    stream[at] |= 0x40;
    encode_client_frame(&mut stream, false, Opcode::Continuation, b, K);
    encode_client_frame(&mut stream, true, Opcode::Ping, b"", K);
    encode_client_frame(&mut stream, true, Opcode::Continuation, c, K);
    // Compressed binary.
    encode_compressed_client_frame(&mut stream, Opcode::Binary, &deflated(&[0, 1, 2]), K);
    let want = vec![
        (true, hello.to_vec(), true),
        (true, b"plain".to_vec(), false),
        (true, hello.to_vec(), true),
        (false, vec![0, 1, 2], true),
    ];
    assert_eq!(
        messages_of(&mut with_deflate(), &stream, &[]).unwrap(),
        want
    );
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        messages_of(&mut with_deflate(), &stream, &every_byte).unwrap(),
        want
    );
    // Without the extension, RSV1 is a protocol error.
    let err = messages_of(&mut Decoder::server(Limits::default()), &stream, &[]).unwrap_err();
    assert_eq!(err, ProtocolError::ReservedBits(4));
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn compressed_text_that_inflates_to_bad_utf8_and_rsv1_on_a_continuation_fail() {
    let mut stream = Vec::new();
    encode_compressed_client_frame(&mut stream, Opcode::Text, &deflated(&[0xc3, 0x28]), K);
    let err = messages_of(&mut with_deflate(), &stream, &[]).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    let mut stream = client(&[(false, Opcode::Text, b"a")]);
    let at = stream.len();
    encode_client_frame(&mut stream, true, Opcode::Continuation, b"b", K);
    stream[at] |= 0x40;
    let err = messages_of(&mut with_deflate(), &stream, &[]).unwrap_err();
    assert_eq!(err, ProtocolError::MisplacedCompressedBit);
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
}
