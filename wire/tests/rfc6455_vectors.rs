//! The examples of RFC 6455 §5.7 and the §1.3 accept key, byte for byte.

mod common;
use common::{Got, feed};
use wire::frame::encode::encode_frame_parts;
use wire::frame::{Decoder, Limits, Opcode, SharedFrame, encode_client_frame, encode_frame};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[test]
fn single_frame_unmasked_hello() {
    let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Text, b"Hello");
    assert_eq!(out, wire);
    assert_eq!(SharedFrame::text("Hello").as_bytes(), wire);
    let got = feed(&mut Decoder::client(Limits::default()), &wire, &[]).unwrap();
    assert_eq!(got, [Got::Text("Hello".into())]);
}

#[test]
fn single_frame_masked_hello() {
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut out = Vec::new();
    encode_client_frame(&mut out, true, Opcode::Text, b"Hello", KEY);
    assert_eq!(out, wire);
    let got = feed(&mut Decoder::server(Limits::default()), &wire, &[]).unwrap();
    assert_eq!(got, [Got::Text("Hello".into())]);
}

#[test]
fn fragmented_unmasked_hel_lo() {
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_frame_parts(&mut out, false, Opcode::Text, b"Hel");
    encode_frame_parts(&mut out, true, Opcode::Continuation, b"lo");
    assert_eq!(out, wire);
    for cut in 0..=wire.len() {
        let got = feed(&mut Decoder::client(Limits::default()), &wire, &[cut]).unwrap();
        assert_eq!(got, [Got::Text("Hello".into())], "cut {cut}");
    }
}

#[test]
fn unmasked_ping_and_masked_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Ping, b"Hello");
    assert_eq!(out, ping);
    assert_eq!(
        feed(&mut Decoder::client(Limits::default()), &ping, &[]).unwrap(),
        [Got::Ping(b"Hello".to_vec())]
    );

    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut out = Vec::new();
    encode_client_frame(&mut out, true, Opcode::Pong, b"Hello", KEY);
    assert_eq!(out, pong);
    assert_eq!(
        feed(&mut Decoder::server(Limits::default()), &pong, &[]).unwrap(),
        [Got::Pong(b"Hello".to_vec())]
    );
}

#[test]
fn binary_256_bytes_uses_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Binary, &payload);
    assert_eq!(&out[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(out.len(), 4 + 256);
    let got = feed(&mut Decoder::client(Limits::default()), &out, &[1, 3, 100]).unwrap();
    assert_eq!(got, [Got::Binary(payload)]);
}

#[test]
fn binary_64k_uses_64_bit_length() {
    let payload = vec![0xAB; 65536];
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Binary, &payload);
    assert_eq!(&out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(out.len(), 10 + 65536);
    assert_eq!(SharedFrame::binary(&payload).as_bytes(), out);
    let got = feed(
        &mut Decoder::client(Limits::default()),
        &out,
        &[5, 9, 30_000],
    )
    .unwrap();
    assert_eq!(got, [Got::Binary(payload)]);
}

#[test]
fn accept_key_from_section_1_3() {
    assert_eq!(
        wire::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}
