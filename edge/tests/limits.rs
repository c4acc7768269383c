//! Rate limits and quotas against the real `edge` and `store` binaries: WebSockets
//! open at once and new per second per source address (429), the source taken from
//! `X-Forwarded-For` only behind a trusted proxy, a connection's message rate
//! (`rate_limited`, then close 1008 while the others carry on), and its subscriptions
//! (`too_many_subscriptions`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

mod common;
use common::Edge;
use common::client::{Client, Event};
use common::store::Cluster;
use common::ws::Ws;
use wire::client::{ErrorCode, Request, Response};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn open(edge: &Edge, from: &str, headers: &str) -> Result<Ws, String> {
    Ws::connect_from(ip(from), edge.addr, "/echo", headers)
}

fn is_429(r: Result<Ws, String>) -> bool {
    match r {
        Err(head) => {
            assert!(head.starts_with("HTTP/1.1 429"), "{head}");
            assert!(head.contains("Retry-After: 1"), "{head}");
            true
        }
        Ok(_) => false,
    }
}

/// Retries `f` for up to 3 s until it holds (a close reaches the edge a moment later).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn connections_open_at_once_are_capped_per_source_address() {
    let edge = Edge::start(&[
        "--limit-loopback",
        "true",
        "--max-connections-per-ip",
        "5",
        "--new-connections-per-ip-burst",
        "100",
    ]);
    let mut held: Vec<Ws> = (0..5)
        .map(|_| open(&edge, "127.0.0.1", "").unwrap())
        .collect();
    assert!(is_429(open(&edge, "127.0.0.1", "")));
    // Another address is its own count.
    let _other = open(&edge, "127.0.0.2", "").unwrap();
    // A close makes room (as soon as the edge has seen it: until then, 429).
    held.pop();
    let mut refused = 1;
    assert!(eventually(|| match open(&edge, "127.0.0.1", "") {
        Ok(ws) => {
            held.push(ws);
            true
        }
        r => {
            assert!(is_429(r));
            refused += 1;
            false
        }
    }));
    assert!(is_429(open(&edge, "127.0.0.1", "")));
    assert_eq!(
        edge.metric("ringline_edge_rejected_rate_total"),
        refused + 1
    );
}

#[test]
fn new_connections_per_second_are_capped_per_source_address() {
    let edge = Edge::start(&[
        "--limit-loopback",
        "true",
        "--max-connections-per-ip",
        "0",
        "--new-connections-per-ip-per-sec",
        "2",
        "--new-connections-per-ip-burst",
        "3",
    ]);
    for _ in 0..3 {
        drop(open(&edge, "127.0.0.3", "").unwrap());
    }
    assert!(is_429(open(&edge, "127.0.0.3", "")));
    // At 2 a second, one more after half a second.
    std::thread::sleep(Duration::from_millis(600));
    assert!(open(&edge, "127.0.0.3", "").is_ok());
    assert!(is_429(open(&edge, "127.0.0.3", "")));
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let edge = Edge::start(&[
        "--limit-loopback",
        "true",
        "--max-connections-per-ip",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let xff = |a: &str| format!("X-Forwarded-For: {a}, 127.0.0.1\r\n");
    let _a: Vec<Ws> = (0..2)
        .map(|_| open(&edge, "127.0.0.1", &xff("203.0.113.7")).unwrap())
        .collect();
    assert!(is_429(open(&edge, "127.0.0.1", &xff("203.0.113.7"))));
    assert!(open(&edge, "127.0.0.1", &xff("203.0.113.8")).is_ok());
    // From an untrusted peer the header is not believed: the peer is counted.
    let _b: Vec<Ws> = (0..2)
        .map(|i| open(&edge, "127.0.0.4", &xff(&format!("198.51.100.{i}"))).unwrap())
        .collect();
    assert!(is_429(open(&edge, "127.0.0.4", &xff("198.51.100.9"))));
}

#[test]
fn a_connection_over_its_message_rate_is_refused_then_closed_and_the_others_carry_on() {
    let c = Cluster::start_with(&[
        "--messages-per-sec",
        "10",
        "--messages-burst",
        "20",
        "--rate-limit-grace-secs",
        "1",
    ]);
    let get = |id: u64| Request::Get {
        id,
        key: "k".into(),
    };
    let mut flood = Client::json(c.edge.addr);
    for id in 0..25 {
        flood.send(&get(id));
    }
    let mut limited = Vec::new();
    for _ in 0..25 {
        match flood.recv() {
            Response::Error {
                id: Some(id),
                code: ErrorCode::RateLimited,
                ..
            } => limited.push(id),
            Response::Value { .. } => {}
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(limited, (20..25).collect::<Vec<_>>());
    // Still over it after the grace: closed with 1008.
    let start = Instant::now();
    let code = 'flooding: loop {
        for id in 100..110 {
            flood.send(&get(id));
        }
        // One answer per message, until the close.
        for _ in 100..110 {
            match flood.next() {
                Event::Msg(_) => {}
                Event::Close(code) => break 'flooding code,
                other => panic!("{other:?}"),
            }
        }
        assert!(start.elapsed() < Duration::from_secs(8), "never closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(1008));
    // Another connection is not touched.
    let mut calm = Client::json(c.edge.addr);
    assert!(matches!(calm.call(&get(1)), Response::Value { id: 1, .. }));
    assert!(c.edge.metric("ringline_edge_rate_limited_total") >= 5);
    assert_eq!(
        c.edge
            .metric("ringline_edge_close_frames_sent_total{code=\"1008\"}"),
        1
    );
}

#[test]
fn subscriptions_past_the_quota_get_too_many_subscriptions() {
    let c = Cluster::start_with(&["--max-subscriptions", "3"]);
    let mut s = Client::json(c.edge.addr);
    for id in 1..=3 {
        s.sub(id, &format!("q/{id}"), None);
        assert!(matches!(s.recv(), Response::Snapshot { .. }));
    }
    s.sub(4, "q/4", None);
    let r = s.recv();
    assert!(
        matches!(
            r,
            Response::Error {
                id: Some(4),
                code: ErrorCode::TooManySubscriptions,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(matches!(
        s.call(&Request::Unsub { id: 2 }),
        Response::Ok { id: 2, .. }
    ));
    s.sub(5, "q/5", None);
    assert!(matches!(s.recv(), Response::Snapshot { id: 5, .. }));
}

/// Upgrade `/echo` from `from` with `prefix` (a PROXY header, or nothing) first; the
/// status line of the answer.
fn upgrade_after(edge: &Edge, from: &str, prefix: &[u8]) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::new(ip(from), 0).into())
        .unwrap();
    s.connect(&edge.addr.into()).unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = prefix.to_vec();
    req.extend_from_slice(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        head.push(b[0]);
    }
    (String::from_utf8_lossy(&head).trim().to_owned(), s)
}

#[test]
fn behind_a_proxy_protocol_balancer_the_client_it_names_is_limited() {
    let edge = Edge::start(&[
        "--limit-loopback",
        "true",
        "--max-connections-per-ip",
        "2",
        "--proxy-protocol-from",
        "127.0.0.1",
    ]);
    let v1 = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n").into_bytes();
    let v2 = |client: [u8; 4]| {
        let mut h = wire::proxy::V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]);
        h.extend_from_slice(&client);
        h.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
        h
    };
    // Two from one client (v1, then v2) are let in; its third is 429.
    let mut held = Vec::new();
    for prefix in [v1("203.0.113.7"), v2([203, 0, 113, 7])] {
        let (status, s) = upgrade_after(&edge, "127.0.0.1", &prefix);
        assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
        held.push(s);
    }
    assert_eq!(
        upgrade_after(&edge, "127.0.0.1", &v1("203.0.113.7")).0,
        "HTTP/1.1 429 Too Many Requests"
    );
    // Another client behind the same balancer has its own count.
    let (status, _other) = upgrade_after(&edge, "127.0.0.1", &v1("203.0.113.8"));
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    // From the balancer without a header, or a broken one: 400.
    assert_eq!(
        upgrade_after(&edge, "127.0.0.1", b"").0,
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        upgrade_after(&edge, "127.0.0.1", b"PROXY TCP4 x y 1 2\r\n").0,
        "HTTP/1.1 400 Bad Request"
    );
    // A peer that is not the balancer is not read for a header: its own address counts.
    let (status, _a) = upgrade_after(&edge, "127.0.0.5", b"");
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(
        upgrade_after(&edge, "127.0.0.5", &v1("198.51.100.1")).0,
        "HTTP/1.1 400 Bad Request"
    );
}
