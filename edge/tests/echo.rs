//! Integration tests against the real `edge` binary: HTTP endpoints, the `/echo`
//! WebSocket (text, binary, fragmented, ping, close handshake), size limits (1009),
//! capacity (503 with Retry-After), the handshake deadline (slowloris), heartbeats,
//! and the SIGTERM drain (healthz 503, close 1001, clean exit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;
use common::Edge;
use common::ws::{Msg, Ws};
use wire::frame::{CloseCode, Opcode, encode_client_frame};

#[test]
fn http_endpoints_and_echo_round_trips() {
    echo_round_trips("poll");
}

#[test]
fn echo_round_trips_with_multishot_receive() {
    echo_round_trips("multishot");
}

fn echo_round_trips(mode: &str) {
    let edge = Edge::start(&["--recv-mode", mode]);
    let (head, body) = edge.http("/healthz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    assert!(edge.http("/nope").0.starts_with("HTTP/1.1 404"));

    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    ws.send(true, Opcode::Text, "héllo".as_bytes());
    assert_eq!(ws.recv(), Msg::Text("héllo".into()));
    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    ws.send(true, Opcode::Binary, &big);
    assert_eq!(ws.recv(), Msg::Binary(big.clone()));
    // A fragmented message with a ping in between: the pong comes first, then the
    // whole message.
    ws.send(false, Opcode::Text, b"frag");
    ws.send(true, Opcode::Ping, b"p1");
    ws.send(false, Opcode::Continuation, b"men");
    ws.send(true, Opcode::Continuation, b"ted");
    assert_eq!(ws.recv(), Msg::Pong(b"p1".to_vec()));
    assert_eq!(ws.recv(), Msg::Text("fragmented".into()));
    // Many small messages in one write come back in order.
    let mut burst = Vec::new();
    for i in 0..500 {
        encode_client_frame(
            &mut burst,
            true,
            Opcode::Text,
            format!("m{i}").as_bytes(),
            [9, 9, 9, 9],
        );
    }
    ws.s.write_all(&burst).unwrap();
    for i in 0..500 {
        assert_eq!(ws.recv(), Msg::Text(format!("m{i}")));
    }
    // Close handshake: the code is echoed, then the server closes the socket.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    ws.send(true, Opcode::Close, &payload);
    assert_eq!(ws.recv(), Msg::Close(Some(1000)));
    assert_eq!(ws.recv(), Msg::Eof);

    let (_, metrics) = edge.http("/metrics");
    let sum = |name: &str| common::metric_sum(&metrics, name);
    assert_eq!(sum("ringline_edge_messages_in_total"), 503);
    assert_eq!(sum("ringline_edge_handshakes_total"), 1);
    assert!(metrics.contains("code=\"1000\"} 1"), "{metrics}");
}

#[test]
fn protocol_errors_and_limits_close_with_the_right_code() {
    let edge = Edge::start(&["--max-message", "1000"]);
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    ws.send(true, Opcode::Binary, &[0u8; 1001]);
    assert_eq!(ws.recv(), Msg::Close(Some(CloseCode::TOO_BIG.0)));
    assert_eq!(ws.recv(), Msg::Eof);
    // Invalid UTF-8 in a text message: 1007.
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    ws.send(true, Opcode::Text, &[0xC3, 0x28]);
    assert_eq!(ws.recv(), Msg::Close(Some(1007)));
    // An unmasked frame: 1002; and the edge keeps serving.
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    ws.s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(ws.recv(), Msg::Close(Some(1002)));
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    ws.send(true, Opcode::Text, b"still here");
    assert_eq!(ws.recv(), Msg::Text("still here".into()));
}

#[test]
fn a_full_worker_answers_503_and_slow_handshakes_are_dropped() {
    let edge = Edge::start(&[
        "--max-connections",
        "1",
        "--workers",
        "1",
        "--handshake-timeout-secs",
        "1",
    ]);
    let _first = Ws::connect(edge.addr, "/echo").unwrap();
    let refused = Ws::connect(edge.addr, "/echo").err().expect("refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 5"), "{refused}");
    // A connection that never finishes its head is closed within a few seconds.
    let mut slow = TcpStream::connect(edge.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 16];
    assert!(matches!(slow.read(&mut b), Ok(0) | Err(_)));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "dropped after {:?}",
        t.elapsed()
    );
}

#[test]
fn heartbeats_ping_and_silence_is_closed() {
    let edge = Edge::start(&["--heartbeat-secs", "1"]);
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    assert_eq!(ws.recv(), Msg::Ping(Vec::new()));
    // Not answering: after two silent intervals the edge closes with 1001.
    loop {
        match ws.recv() {
            Msg::Ping(_) => continue,
            other => {
                assert_eq!(other, Msg::Close(Some(1001)));
                break;
            }
        }
    }
}

#[test]
fn sigterm_drains_with_1001_and_exits() {
    let mut edge = Edge::start(&["--drain-secs", "6"]);
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    edge.sigterm();
    // During the notice, /healthz says 503 and the socket still works.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (head, _) = edge.http("/healthz");
        if head.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(Instant::now() < deadline, "healthz never turned 503");
        std::thread::sleep(Duration::from_millis(100));
    }
    ws.send(true, Opcode::Text, b"x");
    assert_eq!(ws.recv(), Msg::Text("x".into()));
    assert_eq!(ws.recv(), Msg::Close(Some(1001)));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = edge.child.try_wait().unwrap() {
            assert!(status.success(), "edge exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let edge = Edge::start(&[
        "--workers",
        "1",
        "--max-message",
        "65536",
        "--max-outbound",
        "1048576",
    ]);
    let mut ws = Ws::connect(edge.addr, "/echo").unwrap();
    // Send far more than kernel buffers and the 1 MiB outbound bound can hold, never
    // reading: the edge must give up on this client, not buffer without bound.
    let mut frame = Vec::new();
    encode_client_frame(
        &mut frame,
        true,
        Opcode::Binary,
        &[7u8; 65536],
        [1, 2, 3, 4],
    );
    ws.s.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sent = 0usize;
    while sent < 64 << 20 {
        if ws.s.write_all(&frame).is_err() {
            break;
        }
        sent += frame.len();
    }
    // What arrives: echoes, then close 4008 (the queued echoes are dropped).
    let code = loop {
        match ws.recv() {
            Msg::Binary(_) => continue,
            Msg::Close(code) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::SLOW_CONSUMER.0));
    let (_, metrics) = edge.http("/metrics");
    assert!(metrics.contains("code=\"4008\"} 1"), "{metrics}");
}
