//! Admission across workers, against the real `edge` binary: a connection lands on the
//! least-loaded worker with room whichever worker's listener the kernel gave it to, and
//! only when every worker is full is a handshake answered 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

mod common;
use common::ws::Ws;
use common::{Edge, metric_sum};

/// `name{worker="w"}` for each of `workers` workers.
fn per_worker(edge: &Edge, name: &str, workers: usize) -> Vec<u64> {
    let body = edge.http("/metrics").1;
    (0..workers)
        .map(|w| metric_sum(&body, &format!("{name}{{worker=\"{w}\"}}")))
        .collect()
}

#[test]
fn two_workers_of_100_admit_200_and_only_the_201st_gets_503() {
    let edge = Edge::start(&["--workers", "2", "--max-connections", "100"]);
    let held: Vec<Ws> = (0..200)
        .map(|i| Ws::connect(edge.addr, "/echo").unwrap_or_else(|h| panic!("#{i}: {h}")))
        .collect();
    let refused = Ws::connect(edge.addr, "/echo")
        .err()
        .expect("the 201st refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 5"), "{refused}");
    // Plain HTTP is still answered when full (this request counts while it lasts):
    // the held connections are 100 and 100.
    let live = per_worker(&edge, "ringline_edge_connections", 2);
    assert!(live.iter().all(|&n| n >= 100), "{live:?}");
    assert!(live.iter().sum::<u64>() <= 201, "{live:?}");
    assert_eq!(edge.metric("ringline_edge_rejected_full_total"), 1);
    drop(held);
}

/// A connection from `port` on 127.0.3.1 (an address no other test uses, and ports
/// below the ephemeral range), closed with a reset (no TIME_WAIT on either side, so
/// the same address pair can connect again at once).
fn from_port(to: SocketAddr, port: u16) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.set_reuse_address(true).ok()?;
    s.set_linger(Some(Duration::ZERO)).ok()?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .ok()?;
    s.connect(&to.into()).ok()?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(s)
}

/// `GET path` from `port`; the response (connection reset afterwards).
fn get_from(to: SocketAddr, port: u16, path: &str) -> Option<String> {
    let mut s = from_port(to, port)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Accepts per worker's listener, read from `port` (whose own accept is counted too).
fn accepted_from(to: SocketAddr, port: u16) -> Vec<u64> {
    let body = get_from(to, port, "/metrics").expect("metrics");
    (0..2)
        .map(|w| {
            metric_sum(
                &body,
                &format!("ringline_edge_accepted_total{{worker=\"{w}\"}}"),
            )
        })
        .collect()
}

#[test]
fn arrivals_the_kernel_gives_one_worker_are_spread_evenly() {
    let edge = Edge::start(&["--workers", "2", "--max-connections", "1000"]);
    let to = edge.addr;
    // Metrics are read from one fixed port, which the kernel's hash always gives the
    // same listener: take it away from each reading and what is left is the probe's.
    let meter = 21_000;
    let a = accepted_from(to, meter);
    let b = accepted_from(to, meter);
    let meter_worker = (0..2)
        .find(|&w| b[w] > a[w])
        .expect("the meter's own accept");
    // Probe source ports until 200 are known to land on worker 0's listener.
    let mut on_zero = Vec::new();
    let mut last = b;
    for port in 21_001..25_000u16 {
        if on_zero.len() == 200 {
            break;
        }
        if get_from(to, port, "/healthz").is_none() {
            continue;
        }
        let now = accepted_from(to, meter);
        let mut delta: Vec<u64> = (0..2).map(|w| now[w] - last[w]).collect();
        delta[meter_worker] -= 1;
        if delta == [1, 0] {
            on_zero.push(port);
        }
        last = now;
    }
    assert_eq!(on_zero.len(), 200, "ports hashed to worker 0");
    // 200 WebSockets from those ports: all accepted by worker 0, half placed on 1.
    let before = accepted_from(to, meter);
    let mut held = Vec::new();
    for &port in &on_zero {
        let mut s = from_port(to, port).expect("connect");
        write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        held.push(s);
    }
    let after = accepted_from(to, meter);
    let mut took = [after[0] - before[0], after[1] - before[1]];
    took[meter_worker] -= 1;
    assert_eq!(took, [200, 0], "the kernel gave every arrival to worker 0");
    // Each worker holds 100 within 5% (the metrics request counts while it lasts).
    let live = per_worker(&edge, "ringline_edge_connections", 2);
    assert!((200..=201).contains(&live.iter().sum::<u64>()), "{live:?}");
    assert!(live.iter().all(|n| (95..=106).contains(n)), "{live:?}");
    assert!(edge.metric("ringline_edge_handed_over_total") >= 99);
}
