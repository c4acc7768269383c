//! Channels for applications (issue 17), against the real `edge` and `store` binaries:
//! latest-value subscriptions (`"mode":"latest"`) for readers slower than their stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::client::{Client, Event};
use common::store::Cluster;
use wire::client::{ChangeOp, Request, Response, SubMode, Target};

/// Keys of the stream, all in one partition (one hash tag).
const KEYS: u64 = 100;
/// Writes per second, and for how long.
const RATE: u64 = 5_000;
const SECONDS: u64 = 4;
/// The slow reader's pace, in bytes per second: a tenth of what the stream carries
/// (about 110 bytes per change at 5,000 changes/s).
const READ_RATE: f64 = 55_000.0;

fn key(k: u64) -> String {
    format!("px/{{h}}/k{k:03}")
}

/// Fix `c`'s receive buffer (at 128 KiB; the kernel's autotuning would grow it to
/// megabytes), so that the edge's queue soon holds what it has not read. (Smaller than
/// loopback's 64 KiB segments, the window would open only on delayed acks, and even
/// reading as fast as it can the client would get a few dozen KB/s.)
fn small_receive_buffer(c: &Client) {
    socket2::SockRef::from(&c.ws.s)
        .set_recv_buffer_size(128 << 10)
        .unwrap();
}

/// Write `RATE` puts a second for `SECONDS` over the `KEYS` keys, pipelined 50 at a
/// time; the value of write `n` is `base + n`. Returns the last value of each key.
fn write_stream(addr: std::net::SocketAddr, base: u64, done: &AtomicBool) -> HashMap<String, u64> {
    let mut w = Client::json(addr);
    let mut last = HashMap::new();
    let start = Instant::now();
    let total = RATE * SECONDS;
    let mut n = 0;
    while n < total {
        for _ in 0..50 {
            let k = key(n % KEYS);
            w.send(&Request::Put {
                id: n,
                key: k.as_str().into(),
                value: Cow::Owned((base + n).to_string().into_bytes()),
                if_version: None,
                msg_id: None,
            });
            last.insert(k, base + n);
            n += 1;
        }
        for _ in 0..50 {
            assert!(matches!(w.recv(), Response::Ok { .. }));
        }
        let due = start + Duration::from_micros(n * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    done.store(true, Ordering::Release);
    last
}

/// The value of a put change, as the number written.
fn number(op: &ChangeOp<'_>) -> u64 {
    match op {
        ChangeOp::Put { value, .. } => std::str::from_utf8(value).unwrap().parse().unwrap(),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// What a slow reader of the stream saw.
#[derive(Debug)]
struct Outcome {
    /// Changes received, and their bytes (as the edge encodes them).
    received: u64,
    bytes: u64,
    /// From the last write until every key was at its last value.
    converged_after: Duration,
    /// The edge's queue depth at its fullest (sampled every 50 ms; the gauge is
    /// published once a second).
    peak_queued: u64,
    conflated: u64,
}

/// Sample the edge's queue depth at `edge` until `done`, keeping the peak.
fn sample_queued(
    edge: std::net::SocketAddr,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::Acquire) {
            let body = common::http_get(edge, "/metrics").1;
            peak = peak.max(common::metric_sum(&body, "ringline_edge_queued_bytes"));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

/// A subscriber in `mode` of every stream key reads at a tenth of the stream's pace
/// while it runs, then as fast as it comes, until every key is at its last value.
/// Each key's values must only go forward; the connection must stay open.
fn slow_reader(c: &Cluster, mode: SubMode, base: u64) -> Outcome {
    let addr = c.edge.addr;
    let mut r = Client::json(addr);
    small_receive_buffer(&r);
    r.send(&Request::Sub {
        id: 1,
        target: Target::Prefix("px/{h}/".into()),
        from: None,
        mode,
        durable: None,
    });
    assert!(matches!(r.recv(), Response::Snapshot { more: false, .. }));
    let conflated_before = c.edge.metric("ringline_edge_conflated_total");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_queued(addr, Arc::clone(&done));
    let written = Arc::new(Mutex::new(HashMap::new()));
    let writer = {
        let (done, written) = (Arc::clone(&done), Arc::clone(&written));
        std::thread::spawn(move || *written.lock().unwrap() = write_stream(addr, base, &done))
    };
    let start = Instant::now();
    let (mut received, mut bytes) = (0u64, 0u64);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut ended_at: Option<Instant> = None;
    let mut encoded = Vec::new();
    loop {
        if ended_at.is_none() && done.load(Ordering::Acquire) {
            ended_at = Some(Instant::now());
        }
        if let Some(t) = ended_at {
            let want = written.lock().unwrap();
            if !want.is_empty() && *want == seen {
                break;
            }
            let behind = want.iter().filter(|(k, v)| seen.get(*k) != Some(v)).count();
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{mode:?}: {behind} keys never converged ({received} received, e.g. {:?} against {:?})",
                want.iter().next(),
                want.iter().next().and_then(|(k, _)| seen.get(k))
            );
        } else {
            let due = start + Duration::from_secs_f64(bytes as f64 / READ_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let msg = match r.next() {
            Event::Msg(m) => m,
            Event::Silent => continue,
            other => panic!("the slow reader was cut off: {other:?}"),
        };
        encoded.clear();
        wire::client::json::encode_response(&msg, &mut encoded);
        bytes += encoded.len() as u64;
        received += 1;
        let Response::Change { key, op, .. } = msg else {
            panic!("{msg:?}")
        };
        let n = number(&op);
        let before = seen.insert(key.to_string(), n);
        assert!(
            before.is_none_or(|b| b < n),
            "{key} went back from {before:?} to {n}"
        );
    }
    writer.join().unwrap();
    let converged_after = ended_at.map(|t| t.elapsed()).unwrap_or_default();
    Outcome {
        received,
        bytes,
        converged_after,
        peak_queued: sampler.join().unwrap(),
        conflated: c.edge.metric("ringline_edge_conflated_total") - conflated_before,
    }
}

#[test]
fn a_latest_subscriber_reading_ten_times_slower_converges_with_bounded_memory() {
    // One writer connection carries the whole stream: above the default message rate.
    let c = Cluster::start_with(&["--messages-per-sec", "20000", "--messages-burst", "20000"]);
    let latest = slow_reader(&c, SubMode::Latest, 0);
    let stream = slow_reader(&c, SubMode::Stream, 1_000_000);
    let total = RATE * SECONDS;
    eprintln!("slow reader (a tenth of the pace) of {total} writes over {KEYS} keys:");
    eprintln!(
        "| mode | changes received | bytes received | last value of every key after the last write | edge queue at its peak | conflated |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|");
    for (name, o) in [("latest", &latest), ("stream", &stream)] {
        eprintln!(
            "| {name} | {} | {} | {:.2} s | {} B | {} |",
            o.received,
            o.bytes,
            o.converged_after.as_secs_f64(),
            o.peak_queued,
            o.conflated
        );
    }
    assert_eq!(
        stream.received, total,
        "the stream subscriber gets every change"
    );
    assert_eq!(stream.conflated, 0);
    assert!(latest.conflated > 0, "the reader was never behind");
    assert!(latest.received < total / 2, "most changes were conflated");
    // Bounded: the queue stays within latest_above (64 KiB) plus one release of at most
    // one change per key.
    assert!(latest.peak_queued < (64 << 10) + KEYS * 200, "{latest:?}");
    // Nothing stays held once the reader has caught up (the gauge is published each
    // tick).
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.edge.metric("ringline_edge_latest_held") != 0 {
        assert!(Instant::now() < deadline, "changes still held");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Put 400 values of 4 KB, each to a new key under `nk/{h}/`, pipelined 50 at a time.
fn put_new_keys(addr: std::net::SocketAddr) {
    let mut w = Client::json(addr);
    let value = format!("\"{}\"", "x".repeat(4000));
    for batch in 0..8u64 {
        for i in 0..50 {
            let n = batch * 50 + i;
            w.send(&Request::Put {
                id: n,
                key: format!("nk/{{h}}/k{n}").into(),
                value: Cow::Borrowed(value.as_bytes()),
                if_version: None,
                msg_id: None,
            });
        }
        for _ in 0..50 {
            assert!(matches!(w.recv(), Response::Ok { .. }));
        }
    }
}

#[test]
fn a_latest_subscriber_of_ever_new_keys_that_never_reads_is_a_slow_consumer_after_all() {
    // What it follows no longer fits once held changes and the queue pass max_outbound.
    let c = Cluster::start_with(&["--max-message", "65536", "--max-outbound", "262144"]);
    let mut r = Client::json(c.edge.addr);
    small_receive_buffer(&r);
    r.send(&Request::Sub {
        id: 1,
        target: Target::Prefix("nk/{h}/".into()),
        from: None,
        mode: SubMode::Latest,
        durable: None,
    });
    assert!(matches!(r.recv(), Response::Snapshot { more: false, .. }));
    put_new_keys(c.edge.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match r.next() {
            Event::Msg(_) | Event::Silent => assert!(Instant::now() < deadline, "never closed"),
            Event::Close(code) => {
                assert_eq!(code, Some(4008));
                break;
            }
            Event::Ended => panic!("ended without a close frame"),
        }
    }
    assert_eq!(
        c.edge
            .metric("ringline_edge_close_frames_sent_total{code=\"4008\"}"),
        1
    );
}

#[test]
fn a_publish_with_echo_false_skips_only_the_publishing_connection() {
    let c = Cluster::start();
    let room = "room/{7}/chat";
    let mut a = Client::json(c.edge.addr);
    let mut b = Client::json(c.edge.addr);
    for x in [&mut a, &mut b] {
        x.sub(1, room, None);
        assert!(matches!(x.recv(), Response::Snapshot { .. }));
    }
    let say = |id, text: &'static str, echo| Request::Pub {
        id,
        key: room.into(),
        value: Cow::Borrowed(text.as_bytes()),
        msg_id: None,
        echo,
    };
    let said = |r: Response<'_>| match r {
        Response::Change {
            op: ChangeOp::Publish { value },
            ..
        } => String::from_utf8(value.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        a.call(&say(2, "\"quiet\"", false)),
        Response::Ok { .. }
    ));
    assert_eq!(said(b.recv()), "\"quiet\"");
    assert!(matches!(
        a.call(&say(3, "\"loud\"", true)),
        Response::Ok { .. }
    ));
    // A's next message is its own second publish: the first never came back to it.
    assert_eq!(said(a.recv()), "\"loud\"");
    assert_eq!(said(b.recv()), "\"loud\"");
}

#[test]
fn over_wss_too_a_latest_subscriber_of_ever_new_keys_that_never_reads_is_a_slow_consumer() {
    // The same bound through the TLS record layer (frames are sealed into records
    // before they are sent; a backlog builds behind the send in flight).
    use common::tls::{TestCa, TlsEdge};
    use common::ws::{Msg, Ws};
    use wire::frame::Opcode;
    let dir = tempfile::tempdir().unwrap();
    let store = common::store::Store::start(&dir.path().join("store"), "127.0.0.1:0");
    let map = store.cluster_file(dir.path());
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], "edge");
    let limits = ["--max-message", "65536", "--max-outbound", "262144"];
    let mut flags = vec!["--cluster", map.to_str().unwrap()];
    flags.extend_from_slice(&limits);
    let edge = TlsEdge::start(&[&leaf], &flags);
    let deadline = Instant::now() + Duration::from_secs(20);
    while edge.metric("ringline_edge_link_state") != 4 {
        assert!(Instant::now() < deadline, "links not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = ca.connect(edge.tls, "localhost").unwrap();
    socket2::SockRef::from(&s.sock)
        .set_recv_buffer_size(128 << 10)
        .unwrap();
    let mut r = Ws::upgrade(s, "/ws", Some("ringline.v1.json"), "").unwrap();
    let sub = r#"{"op":"sub","id":1,"prefix":"nk/{h}/","mode":"latest"}"#;
    r.send(true, Opcode::Text, sub.as_bytes());
    assert!(matches!(r.recv(), Msg::Text(t) if t.contains(r#""op":"snapshot""#)));
    put_new_keys(edge.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match r.recv() {
            Msg::Close(code) => {
                assert_eq!(code, Some(4008));
                break;
            }
            Msg::Eof => panic!("ended without a close frame"),
            _ => assert!(Instant::now() < deadline, "never closed"),
        }
    }
}
