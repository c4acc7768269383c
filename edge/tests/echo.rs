//! Integration tests against the real `edge` binary: HTTP endpoints, the `/echo`
//! WebSocket (text, binary, fragmented, ping, close handshake), size limits (1009),
//! capacity (503 with Retry-After), the handshake deadline (slowloris), heartbeats (a
//! connection answering pings stays, a silent one is closed), the SIGTERM drain
//! (healthz 503, close 1001, clean exit; the forced exit at `drain_secs`), and the
//! slow-consumer close 4008.
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
fn interleaved_connections_get_every_byte_back_with_multishot_receive() {
    interleaved_echoes("multishot");
}

#[test]
fn interleaved_connections_get_every_byte_back_with_poll_receive() {
    interleaved_echoes("poll");
}

/// 24 connections on one worker at once, each sending 40 messages of 1 B to 100 KB in
/// groups of four before reading their echoes: receives of many connections follow each
/// other in shared receive buffers, messages cross buffer ends, and the worker runs out
/// of buffers and grows; every echo must come back whole and in order.
fn interleaved_echoes(mode: &str) {
    let edge = Edge::start(&["--recv-mode", mode, "--workers", "1"]);
    let addr = edge.addr;
    let clients: Vec<_> = (0..24u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = Ws::connect(addr, "/echo").unwrap();
                let mut seed = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for group in 0..10u64 {
                    let msgs: Vec<Vec<u8>> = (0..4u64)
                        .map(|i| {
                            let len = 1 + (next() % 100_000) as usize;
                            let tag = (c * 64 + group * 4 + i) as u8;
                            (0..len).map(|b| (b as u8).wrapping_add(tag)).collect()
                        })
                        .collect();
                    let mut burst = Vec::new();
                    for m in &msgs {
                        encode_client_frame(&mut burst, true, Opcode::Binary, m, [7, 1, 3, 5]);
                    }
                    ws.s.write_all(&burst).unwrap();
                    for m in msgs {
                        assert_eq!(ws.recv(), Msg::Binary(m), "connection {c}, group {group}");
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (_, metrics) = edge.http("/metrics");
    assert_eq!(
        common::metric_sum(&metrics, "ringline_edge_messages_in_total"),
        24 * 40
    );
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

/// A handshake deadline is never shorter than configured: connections opened at eight
/// moments spread over the edge's one-second tick are each dropped no sooner than the
/// configured second after they connected (and at most a tick late, with slack for a
/// loaded host).
#[test]
fn handshake_deadlines_never_fire_early() {
    let edge = Edge::start(&["--handshake-timeout-secs", "1", "--workers", "1"]);
    let mut waiters = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(edge.addr).unwrap();
        let opened = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
        waiters.push(std::thread::spawn(move || {
            let mut b = [0u8; 16];
            let r = s.read(&mut b);
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
            opened.elapsed()
        }));
        // Spread the openings over the tick.
        std::thread::sleep(Duration::from_millis(125));
    }
    for (i, w) in waiters.into_iter().enumerate() {
        let after = w.join().unwrap();
        assert!(
            after >= Duration::from_secs(1),
            "connection {i} dropped after {after:?}, before its 1 s deadline"
        );
        assert!(
            after < Duration::from_millis(3500),
            "connection {i} dropped after {after:?}"
        );
    }
}

#[test]
fn heartbeats_ping_and_silence_is_closed() {
    let edge = Edge::start(&["--heartbeat-secs", "1"]);
    let t0 = Instant::now();
    let mut silent = Ws::connect(edge.addr, "/echo").unwrap();
    let mut answering = Ws::connect(edge.addr, "/echo").unwrap();
    // One connection answers every ping with its pong: it must stay open for several
    // intervals (5 pings, at least 4 s), well past the two that close a silent one.
    let pinged = std::thread::spawn(move || {
        let mut pings = 0;
        while pings < 5 {
            match answering.recv() {
                Msg::Ping(p) => {
                    pings += 1;
                    answering.send(true, Opcode::Pong, &p);
                }
                other => panic!(
                    "the connection answering pings got {other:?} after {pings} pings, {:?} in",
                    t0.elapsed()
                ),
            }
        }
        let open_for = t0.elapsed();
        // Still served: an echo comes back (pings before it are answered).
        answering.send(true, Opcode::Text, b"still here");
        loop {
            match answering.recv() {
                Msg::Ping(p) => answering.send(true, Opcode::Pong, &p),
                other => {
                    assert_eq!(other, Msg::Text("still here".into()), "after {open_for:?}");
                    break;
                }
            }
        }
        open_for
    });
    // The silent one is pinged, then closed with 1001 after two silent intervals.
    assert_eq!(silent.recv(), Msg::Ping(Vec::new()));
    let closed = loop {
        match silent.recv() {
            Msg::Ping(_) => continue,
            other => {
                assert_eq!(other, Msg::Close(Some(1001)));
                break t0.elapsed();
            }
        }
    };
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(8),
        "the silent connection was closed after {closed:?} (two 1 s intervals)"
    );
    let open_for = pinged.join().expect("the answering connection was closed");
    assert!(
        open_for >= Duration::from_secs(4),
        "5 pings in {open_for:?} at a 1 s heartbeat"
    );
    // Only the silent one was closed.
    assert_eq!(
        edge.metric("ringline_edge_close_frames_sent_total{code=\"1001\"}"),
        1
    );
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
fn a_drain_that_cannot_finish_exits_at_drain_secs() {
    let drain = Duration::from_secs(3);
    let mut edge = Edge::start(&[
        "--drain-secs",
        "3",
        "--workers",
        "1",
        "--max-outbound",
        "268435456",
    ]);
    // A client that never reads: its echoes pile up in the edge (far below the 4008
    // bound), so the close 1001 of the drain queues behind them and never goes out.
    let mut stuck = Ws::connect(edge.addr, "/echo").unwrap();
    let frame = binary_64k();
    stuck
        .s
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..256 {
        stuck.s.write_all(&frame).unwrap();
    }
    // The edge has read it all and holds megabytes it cannot send (published once a
    // tick).
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.metric("ringline_edge_queued_bytes") < 4 << 20 {
        assert!(Instant::now() < deadline, "the backlog never built up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    edge.sigterm();
    // The connection would hold the drain far longer (its close frame is abandoned
    // only 5 s after it was queued, itself 2 s into the drain): the edge exits at
    // drain_secs anyway, not earlier and not much later.
    let status = loop {
        if let Some(status) = edge.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < drain + Duration::from_secs(15),
            "the edge still runs {:?} after SIGTERM (drain_secs 3)",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    eprintln!("the edge exited {took:?} after SIGTERM");
    assert!(status.success(), "edge exited with {status}");
    assert!(
        took >= drain && took < drain + Duration::from_millis(2500),
        "exited {took:?} after SIGTERM, drain_secs 3"
    );
    drop(stuck);
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
    let frame = binary_64k();
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

/// One masked 64 KiB binary frame, for the tests that flood a client's echoes.
fn binary_64k() -> Vec<u8> {
    let mut frame = Vec::new();
    encode_client_frame(
        &mut frame,
        true,
        Opcode::Binary,
        &[7u8; 65536],
        [1, 2, 3, 4],
    );
    frame
}

#[test]
fn auth_off_beyond_loopback_refuses_to_start_unless_asked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--listen", "0.0.0.0:0", "--workers", "1", "--pin", "false"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with every key open");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-anonymous"), "{err}");
    // Asked for explicitly, it starts (and still warns).
    let (mut child, _) = common::spawn_listening(
        std::process::Command::new(env!("CARGO_BIN_EXE_edge")).args([
            "--listen",
            "0.0.0.0:0",
            "--workers",
            "1",
            "--pin",
            "false",
            "--allow-anonymous",
        ]),
        "edge listening",
        "EDGE_LOG",
    );
    let _ = child.kill();
    let _ = child.wait();
}
