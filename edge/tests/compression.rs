//! `permessage-deflate` end to end, against the real edge with compression on: a change
//! is compressed once per worker for all its compressed subscribers (the figures in
//! `/metrics` say so) and reaches each of them whole, next to a subscriber that did not
//! ask for compression; a zip bomb is closed with 1009 before its memory is spent, and
//! the edge's memory returns to where it was; data that does not inflate closes with
//! 1007, RSV1 on a continuation with 1002, and without compression agreed RSV1 is 1002.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use wire::frame::Opcode;
use wire::frame::deflate::Deflater;

mod common;
use common::Edge;
use common::client::Client;
use common::store::Cluster;
use common::ws::{Msg, Ws};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A JSON value of about 1 KiB, like a dashboard's row.
fn value_1k(n: u32) -> String {
    let rows: Vec<String> = (0..16)
        .map(|i| format!(r#"{{"sensor":"temperature-{i}","value":{n}.{i},"unit":"celsius"}}"#))
        .collect();
    format!(r#"{{"n":{n},"rows":[{}]}}"#, rows.join(","))
}

/// Wait for the next tick's figures, then read `name` summed over workers.
fn settled(edge: &Edge, name: &str) -> u64 {
    std::thread::sleep(Duration::from_millis(1100));
    edge.metric(name)
}

fn json_of(m: Msg) -> serde_json::Value {
    match m {
        Msg::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_change_is_compressed_once_for_every_subscriber_and_reaches_each_whole() {
    let c = Cluster::start_with(&["--workers", "1", "--compression", "true"]);
    let key = "fan/{k}/row";
    let sub = format!(r#"{{"op":"sub","id":7,"key":"{key}"}}"#);
    let mut subs: Vec<Ws> = (0..20)
        .map(|_| Ws::connect_headers(c.edge.addr, "/ws", Some("ringline.v1.json"), OFFER).unwrap())
        .collect();
    let mut plain = Ws::connect_with(c.edge.addr, "/ws", Some("ringline.v1.json")).unwrap();
    assert!(plain.extensions.is_none());
    // One that limits our window to 9 bits: compressed for it alone.
    let narrow_offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n";
    let mut narrow =
        Ws::connect_headers(c.edge.addr, "/ws", Some("ringline.v1.json"), narrow_offer).unwrap();
    assert!(
        narrow
            .extensions
            .as_deref()
            .unwrap()
            .ends_with("server_max_window_bits=9")
    );
    for ws in subs.iter_mut().chain([&mut plain, &mut narrow]) {
        ws.send(true, Opcode::Text, sub.as_bytes());
        assert_eq!(json_of(ws.recv())["op"], "snapshot");
    }
    assert!(
        subs[0]
            .extensions
            .as_deref()
            .unwrap()
            .starts_with("permessage-deflate")
    );
    let runs = || settled(&c.edge, "ringline_edge_compressions_total");
    let sent = || c.edge.metric("ringline_edge_compressed_out_total");
    let (runs0, sent0) = (runs(), sent());
    let mut w = Client::json(c.edge.addr);
    let value = value_1k(1);
    w.put(1, key, &value);
    let want: serde_json::Value = serde_json::from_str(&value).unwrap();
    for ws in subs.iter_mut().chain([&mut plain, &mut narrow]) {
        let before = ws.compressed;
        let m = json_of(ws.recv());
        assert_eq!(
            (&m["op"], &m["id"], &m["value"]),
            (&"change".into(), &7.into(), &want)
        );
        let compressed = ws.extensions.is_some();
        assert_eq!(ws.compressed - before, u64::from(compressed));
    }
    assert_eq!(
        runs() - runs0,
        2,
        "one compression for 20 subscribers, one for the narrow window"
    );
    assert_eq!(sent() - sent0, 21);
}

/// The edge's resident memory, in bytes.
fn rss(edge: &Edge) -> u64 {
    common::rss(edge.child.id())
}

/// One compressed message of `bomb` on a new `/echo` connection: closed with 1009.
fn detonate(edge: &Edge, bomb: &[u8]) {
    let mut ws = Ws::connect_headers(edge.addr, "/echo", None, OFFER).unwrap();
    ws.send_deflated(Opcode::Binary, bomb);
    loop {
        match ws.recv() {
            Msg::Close(code) => return assert_eq!(code, Some(1009)),
            Msg::Eof => panic!("no close frame"),
            _ => {}
        }
    }
}

#[test]
fn a_zip_bomb_closes_with_1009_and_the_memory_returns() {
    let limit = 256 * 1024;
    let edge = Edge::start(&[
        "--workers",
        "1",
        "--compression",
        "true",
        "--max-message",
        &limit.to_string(),
    ]);
    // 1 MiB of zeros: about 1 KiB deflated, four times the message limit inflated.
    let mut bomb = Vec::new();
    Deflater::new(9).deflate_end(&vec![0u8; 1 << 20], &mut bomb);
    assert!(bomb.len() <= 1100, "{} bytes", bomb.len());
    // Just under the limit inflated is a message like any other, echoed compressed.
    let mut ws = Ws::connect_headers(edge.addr, "/echo", None, OFFER).unwrap();
    let big = vec![b'a'; limit];
    ws.send_compressed(Opcode::Text, &big);
    assert_eq!(ws.recv(), Msg::Text(String::from_utf8(big).unwrap()));
    assert_eq!(ws.compressed, 1);
    // Warm-up, then the baseline: the most the edge holds after a bomb.
    let mut baseline = 0;
    for _ in 0..3 {
        detonate(&edge, &bomb);
        std::thread::sleep(Duration::from_millis(300));
        baseline = baseline.max(rss(&edge));
    }
    for _ in 0..50 {
        detonate(&edge, &bomb);
    }
    // The connection from before is still served.
    ws.send_compressed(Opcode::Text, b"still here, still here, still here");
    assert_eq!(
        ws.recv(),
        Msg::Text("still here, still here, still here".into())
    );
    let start = Instant::now();
    loop {
        let now = rss(&edge);
        // Fifty bombs inflated in full would be 50 MiB; one message's worth is allowed.
        if now <= baseline + limit as u64 {
            eprintln!(
                "[bomb] resident {} KiB, baseline {} KiB",
                now / 1024,
                baseline / 1024
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "resident {} KiB, baseline {} KiB",
            now / 1024,
            baseline / 1024
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        settled(&edge, "ringline_edge_compressed_in_total"),
        2 + 3 + 50
    );
}

/// What `/echo` closes with after `frames`, sent as they are, on a connection that
/// offered compression (`offer`) or not.
fn closed_with(edge: &Edge, offer: bool, frames: &[u8]) -> Option<u16> {
    let headers = if offer { OFFER } else { "" };
    let mut ws = Ws::connect_headers(edge.addr, "/echo", None, headers).unwrap();
    std::io::Write::write_all(&mut ws.s, frames).unwrap();
    loop {
        match ws.recv() {
            Msg::Close(code) => return code,
            Msg::Eof => return None,
            _ => {}
        }
    }
}

#[test]
fn bad_compressed_messages_close_with_their_codes() {
    use wire::frame::{encode_client_frame, encode_compressed_client_frame};
    let edge = Edge::start(&["--workers", "1", "--compression", "true"]);
    let key = [1, 2, 3, 4];
    // Not deflate data: 1007.
    let mut f = Vec::new();
    encode_compressed_client_frame(&mut f, Opcode::Binary, &[0xff; 8], key);
    assert_eq!(closed_with(&edge, true, &f), Some(1007));
    // Text that inflates to invalid UTF-8: 1007.
    let mut z = Vec::new();
    Deflater::new(6).deflate_end(&[0xc3, 0x28], &mut z);
    let mut f = Vec::new();
    encode_compressed_client_frame(&mut f, Opcode::Text, &z, key);
    assert_eq!(closed_with(&edge, true, &f), Some(1007));
    // RSV1 on a continuation: 1002.
    let mut f = Vec::new();
    encode_client_frame(&mut f, false, Opcode::Text, b"a", key);
    let at = f.len();
    encode_client_frame(&mut f, true, Opcode::Continuation, b"b", key);
    f[at] |= 0x40;
    assert_eq!(closed_with(&edge, true, &f), Some(1002));
    // RSV1 where compression was not agreed: 1002.
    let mut f = Vec::new();
    encode_compressed_client_frame(&mut f, Opcode::Text, &z, key);
    assert_eq!(closed_with(&edge, false, &f), Some(1002));
}
