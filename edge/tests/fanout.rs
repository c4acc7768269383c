//! A fan-out larger than one loop round's sends, against the real edge and store: every
//! subscriber gets every change, in order, while the worker sends to at most 1,024
//! connections a round (`/metrics` counts rounds that left some for the next), and
//! changes queued for a connection before its next send share that send (a change
//! batch: fewer sends carrying changes than change frames). A subscriber speaking
//! `ringline.v2.json` gets the same changes in the compact form, plain or compressed,
//! next to one speaking v1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::time::Duration;

use wire::client::json::decode_response;
use wire::client::{ChangeOp, Request, Response};
use wire::frame::Opcode;

mod common;
use common::client::{Client, change};
use common::store::Cluster;
use common::ws::{Msg, Ws};

/// More than one round's sends (1,024).
const SUBSCRIBERS: usize = 1_100;
/// Changes written back to back, without waiting for their answers.
const CHANGES: u64 = 100;

#[test]
fn a_fan_out_past_one_round_reaches_everyone_in_order_and_changes_share_sends() {
    let c = Cluster::start_with(&["--workers", "1"]);
    let key = "fan/{one}/key";
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut s = Client::json(c.edge.addr);
            s.sub(1, key, None);
            s
        })
        .collect();
    for s in &mut subs {
        s.recv(); // the (empty) snapshot
    }
    let frames0 = c.edge.metric("ringline_edge_change_frames_total");
    let mut w = Client::json(c.edge.addr);
    for n in 1..=CHANGES {
        let value = n.to_string();
        w.send(&Request::Put {
            id: n,
            key: key.into(),
            value: Cow::Borrowed(value.as_bytes()),
            if_version: None,
            msg_id: None,
        });
    }
    for _ in 1..=CHANGES {
        w.recv();
    }
    for (i, s) in subs.iter_mut().enumerate() {
        for n in 1..=CHANGES {
            let (value, _, _) = change(&s.recv());
            assert_eq!(value, n.to_string(), "subscriber {i}: changes in order");
        }
    }
    // The figures are published by each round's flush; read them after one more tick.
    std::thread::sleep(Duration::from_millis(100));
    let frames = c.edge.metric("ringline_edge_change_frames_total") - frames0;
    let sends = c.edge.metric("ringline_edge_change_sends_total");
    let limited = c.edge.metric("ringline_edge_rounds_send_limited_total");
    assert_eq!(
        frames,
        SUBSCRIBERS as u64 * CHANGES,
        "every change frame counted"
    );
    assert!(
        sends < frames,
        "changes that met before a send share it: {sends} sends for {frames} frames"
    );
    assert!(
        sends >= SUBSCRIBERS as u64,
        "each subscriber had at least one send: {sends}"
    );
    assert!(
        limited >= 1,
        "a round sends to at most 1,024 connections: {limited} rounds left some for the next"
    );
}

/// A message decoded (either form).
fn decoded(t: &str) -> Response<'_> {
    decode_response(t.as_bytes()).unwrap()
}

/// The next message's text.
fn text(ws: &mut Ws) -> String {
    match ws.recv() {
        Msg::Text(t) => t,
        other => panic!("{other:?}"),
    }
}

/// A subscriber of `key` speaking `protocol` (and offering `permessage-deflate` when
/// `deflate`), past its snapshot.
fn subscriber(c: &Cluster, protocol: &str, deflate: bool, key: &str) -> Ws {
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let mut ws = Ws::connect_headers(c.edge.addr, "/ws", Some(protocol), offer).unwrap();
    assert_eq!(ws.extensions.is_some(), deflate);
    let sub = format!(r#"{{"op":"sub","id":3,"key":"{key}"}}"#);
    ws.send(true, Opcode::Text, sub.as_bytes());
    assert!(text(&mut ws).starts_with(r#"{"op":"snapshot","id":3,"#));
    ws
}

#[test]
fn a_compact_subscriber_gets_the_same_change_in_fewer_bytes_next_to_a_v1_one() {
    let c = Cluster::start_with(&[
        "--workers",
        "1",
        "--compression",
        "true",
        "--compression-min-bytes",
        "32",
    ]);
    let key = "fan/{two}/key";
    let mut subs: Vec<_> = [
        ("ringline.v1.json", false),
        ("ringline.v2.json", false),
        ("ringline.v2.json", true),
        ("ringline.v1.json", true),
    ]
    .into_iter()
    .map(|(p, z)| subscriber(&c, p, z, key))
    .collect();
    let mut w = Client::json(c.edge.addr);
    let value = r#"{"temperature":21.5,"unit":"celsius","sensor":"hall-3"}"#;
    w.put(1, key, value);
    w.send(&Request::Del {
        id: 2,
        key: key.into(),
        if_version: None,
        msg_id: None,
    });
    let texts: Vec<[String; 2]> = subs.iter_mut().map(|ws| [text(ws), text(ws)]).collect();
    for [put, del] in &texts {
        let (v, _, _) = change(&decoded(put));
        assert_eq!(v, value);
        assert!(
            matches!(
                decoded(del),
                Response::Change {
                    op: ChangeOp::Delete { .. },
                    ..
                }
            ),
            "{del}"
        );
    }
    // The same changes, plain and compressed, in each form.
    assert_eq!(texts[0], texts[3]);
    assert_eq!(texts[1], texts[2]);
    let [v1, v2] = [&texts[0][0], &texts[1][0]];
    assert!(v1.starts_with(r#"{"op":"change","id":3,"key":"#), "{v1}");
    assert!(v2.starts_with(r#"{"c":3,"k":"#), "{v2}");
    assert_eq!(decoded(v1), decoded(v2));
    assert!(
        v2.len() + 25 <= v1.len(),
        "{} against {}",
        v2.len(),
        v1.len()
    );
    assert!(texts[1][1].contains(r#""d":true"#), "{}", texts[1][1]);
}
