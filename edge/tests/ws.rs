//! The client protocol on `/ws` against the real `edge` and `store` binaries: reads and
//! writes, subscriptions (snapshot, changes, resume exactly once, prefixes), grouping of
//! many subscribers into one internal watch, both encodings, bad input, a store killed
//! with SIGKILL under live subscriptions, a store refused for its partition count, a
//! silent (SIGSTOPped) store's link dropped by the keep-alive and back after SIGCONT,
//! and a subscriber that stops reading closed with 4008 while the others carry on.
//! (Authentication and permissions are in `auth.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Edge;
use common::client::{Client, change};
use common::store::{Cluster, Store};
use common::ws::{Msg, Ws};
use wire::client::{ChangeOp, ErrorCode, Request, Response, Target};
use wire::frame::Opcode;

#[test]
fn reads_writes_and_a_subscription_in_json() {
    let c = Cluster::start();
    let mut a = Client::json(c.edge.addr);
    // A missing key reads as null.
    let r = a.call(&Request::Get {
        id: 1,
        key: "greeting".into(),
    });
    assert!(
        matches!(
            r,
            Response::Value {
                id: 1,
                value: None,
                ..
            }
        ),
        "{r:?}"
    );
    // Subscribe: an empty snapshot with a token.
    a.sub(2, "greeting", None);
    let Response::Snapshot {
        id: 2,
        entries,
        token: Some(_),
        more: false,
    } = a.recv()
    else {
        panic!("expected a snapshot")
    };
    assert!(entries.is_empty());
    // A put is answered, then delivered to the subscription.
    let ok = a.put(3, "greeting", r#"{"hello":"world"}"#);
    let Response::Ok {
        id: 3,
        version: Some(1),
        token: Some(_),
    } = ok
    else {
        panic!("expected ok, got {ok:?}")
    };
    let (value, version, _) = change(&a.recv());
    assert_eq!((value.as_str(), version), (r#"{"hello":"world"}"#, 1));
    // Conditional writes: a stale if_version is a conflict naming the current version.
    let r = a.call(&Request::Put {
        id: 4,
        key: "greeting".into(),
        value: Cow::Borrowed(b"2"),
        if_version: Some(7),
        msg_id: None,
    });
    assert!(
        matches!(
            r,
            Response::Error {
                id: Some(4),
                code: ErrorCode::Conflict,
                version: Some(1),
                ..
            }
        ),
        "{r:?}"
    );
    // get sees the value; del and pub are delivered too.
    let r = a.call(&Request::Get {
        id: 5,
        key: "greeting".into(),
    });
    assert!(
        matches!(
            r,
            Response::Value {
                id: 5,
                version: 1,
                value: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    assert!(matches!(
        a.call(&Request::Del {
            id: 6,
            key: "greeting".into(),
            if_version: None,
            msg_id: None
        }),
        Response::Ok { id: 6, .. }
    ));
    let r = a.recv();
    assert!(
        matches!(
            r,
            Response::Change {
                id: 2,
                op: ChangeOp::Delete { version: 2 },
                ..
            }
        ),
        "{r:?}"
    );
    let r = a.call(&Request::Pub {
        id: 7,
        key: "greeting".into(),
        value: Cow::Borrowed(b"\"hi\""),
        msg_id: None,
        echo: true,
    });
    assert!(
        matches!(
            r,
            Response::Ok {
                id: 7,
                version: None,
                token: Some(_)
            }
        ),
        "{r:?}"
    );
    let r = a.recv();
    assert!(
        matches!(
            r,
            Response::Change {
                id: 2,
                op: ChangeOp::Publish { .. },
                ..
            }
        ),
        "{r:?}"
    );
    // Unsubscribed: no more changes (the next message is the put's answer only).
    assert!(matches!(
        a.call(&Request::Unsub { id: 2 }),
        Response::Ok { id: 2, .. }
    ));
    assert!(matches!(
        a.put(8, "greeting", "3"),
        Response::Ok { id: 8, .. }
    ));
    let r = a.call(&Request::Get {
        id: 9,
        key: "greeting".into(),
    });
    assert!(matches!(r, Response::Value { id: 9, .. }), "{r:?}");
}

#[test]
fn bad_input_gets_bad_request_and_wrong_frame_types_close_1003() {
    let c = Cluster::start();
    let mut a = Client::json(c.edge.addr);
    for text in [
        r#"{"op":"frobnicate","id":1}"#,
        "{not json",
        r#"{"op":"get","id":2}"#,
    ] {
        a.ws.send(true, Opcode::Text, text.as_bytes());
        let r = a.recv();
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{text}: {r:?}"
        );
    }
    // The connection still works.
    assert!(matches!(a.put(3, "k", "1"), Response::Ok { id: 3, .. }));
    // A binary frame on a JSON connection is a protocol error: close 1003.
    a.ws.send(true, Opcode::Binary, b"\x00\x01");
    assert_eq!(a.ws.recv(), Msg::Close(Some(1003)));
    // And the reverse.
    let mut b = Client::fb(c.edge.addr);
    b.ws.send(true, Opcode::Text, b"{}");
    assert_eq!(b.ws.recv(), Msg::Close(Some(1003)));
    // An unknown subprotocol offered alone is refused at the handshake.
    let e = Ws::connect_with(c.edge.addr, "/ws", Some("mqtt"))
        .err()
        .unwrap();
    assert!(e.starts_with("HTTP/1.1 400"), "{e}");
}

#[test]
fn binary_form_subscribes_and_writes() {
    let c = Cluster::start();
    let mut b = Client::fb(c.edge.addr);
    let mut j = Client::json(c.edge.addr);
    b.sub(1, "bin", None);
    assert!(matches!(b.recv(), Response::Snapshot { id: 1, .. }));
    j.sub(1, "bin", None);
    assert!(matches!(j.recv(), Response::Snapshot { id: 1, .. }));
    // Bytes that are not JSON, written in the binary form...
    let r = b.call(&Request::Put {
        id: 2,
        key: "bin".into(),
        value: Cow::Borrowed(&[0xff, 0x00, 0x10]),
        if_version: None,
        msg_id: None,
    });
    assert!(
        matches!(
            r,
            Response::Ok {
                id: 2,
                version: Some(1),
                ..
            }
        ),
        "{r:?}"
    );
    // ...arrive intact in the binary form, and as {"b64":...} (decoded back by the
    // JSON decoder) in the JSON form.
    for client in [&mut b, &mut j] {
        let r = client.recv();
        let Response::Change {
            id: 1,
            op: ChangeOp::Put { value, version: 1 },
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(&value[..], &[0xff, 0x00, 0x10]);
    }
    // A large value: the encoded-once message goes out partly by reference.
    let big: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let mut b2 = Client::fb(c.edge.addr);
    b2.sub(77, "bin", None);
    assert!(matches!(b2.recv(), Response::Snapshot { id: 77, .. }));
    let r = b.call(&Request::Put {
        id: 3,
        key: "bin".into(),
        value: Cow::Borrowed(&big),
        if_version: None,
        msg_id: None,
    });
    assert!(matches!(r, Response::Ok { id: 3, .. }), "{r:?}");
    for (client, id) in [(&mut b, 1), (&mut b2, 77), (&mut j, 1)] {
        let r = client.recv();
        let Response::Change {
            id: got,
            op: ChangeOp::Put { value, version: 2 },
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(got, id);
        assert_eq!(&value[..], &big[..]);
    }
}

#[test]
fn many_subscribers_share_one_watch_and_the_same_token() {
    // The workers' own watches on `@all` aside, to count the subscribers' alone.
    let c = Cluster::start_with(&["--broadcast", "false"]);
    let n = 60;
    let mut clients: Vec<Client> = (0..n).map(|_| Client::json(c.edge.addr)).collect();
    for (i, cl) in clients.iter_mut().enumerate() {
        cl.sub(i as u64, "shared", None);
        assert!(matches!(cl.recv(), Response::Snapshot { .. }));
    }
    // One internal watch per worker at most, however many subscribers (the figures
    // are published once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.edge.metric("ringline_edge_subscriptions") != n as u64 {
        assert!(Instant::now() < deadline, "subscriptions never reached {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let watches = c.edge.metric("ringline_edge_watches");
    assert!((1..=2).contains(&watches), "watches = {watches}");
    let mut writer = Client::json(c.edge.addr);
    for v in 1..=5u64 {
        assert!(matches!(
            writer.put(v, "shared", &v.to_string()),
            Response::Ok { .. }
        ));
    }
    let mut tokens = Vec::new();
    for cl in &mut clients {
        let mut last = String::new();
        for v in 1..=5u64 {
            let (value, version, token) = change(&cl.recv());
            assert_eq!((value, version), (v.to_string(), v));
            last = token;
        }
        tokens.push(last);
    }
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        1,
        "every subscriber ends at the same position"
    );
    assert!(c.edge.metric("ringline_edge_deliveries_total") >= 5 * n as u64);
    // The last one out removes the watches.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.edge.metric("ringline_edge_watches") != 0 {
        assert!(Instant::now() < deadline, "watches left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn resuming_with_a_token_delivers_each_missed_change_exactly_once() {
    let c = Cluster::start();
    let mut writer = Client::json(c.edge.addr);
    // A subscriber that stays, so the group's watch lives on while the other is away.
    let mut stay = Client::json(c.edge.addr);
    stay.sub(1, "doc", None);
    assert!(matches!(stay.recv(), Response::Snapshot { .. }));
    let mut a = Client::json(c.edge.addr);
    a.sub(1, "doc", None);
    assert!(matches!(a.recv(), Response::Snapshot { .. }));
    for v in 1..=3u64 {
        writer.put(v, "doc", &v.to_string());
    }
    let mut token = String::new();
    for v in 1..=3u64 {
        let (value, _, t) = change(&a.recv());
        assert_eq!(value, v.to_string());
        token = t;
    }
    drop(a);
    for v in 4..=10u64 {
        writer.put(v, "doc", &v.to_string());
    }
    // Back, on a new connection: resumed, then exactly 4..=10, then live changes.
    let mut a = Client::json(c.edge.addr);
    a.sub(7, "doc", Some(&token));
    let r = a.recv();
    assert!(matches!(r, Response::Resumed { id: 7, .. }), "{r:?}");
    for v in 4..=10u64 {
        let (value, version, _) = change(&a.recv());
        assert_eq!((value, version), (v.to_string(), v));
    }
    writer.put(11, "doc", "11");
    let (value, _, last) = change(&a.recv());
    assert_eq!(value, "11");
    // Resuming at the very end yields no change until the next write.
    let mut b = Client::json(c.edge.addr);
    b.sub(1, "doc", Some(&last));
    assert!(matches!(b.recv(), Response::Resumed { .. }));
    writer.put(12, "doc", "12");
    assert_eq!(change(&b.recv()).0, "12");
    // A token of another key's partition: reset, then a fresh snapshot.
    let mut other = Client::json(c.edge.addr);
    other.sub(1, "elsewhere/{zz}", Some(&last));
    let r = other.recv();
    assert!(matches!(r, Response::Reset { id: 1, .. }), "{r:?}");
    assert!(matches!(
        other.recv(),
        Response::Snapshot {
            id: 1,
            more: false,
            ..
        }
    ));
}

#[test]
fn prefix_subscriptions_span_partitions_and_resume() {
    let c = Cluster::start();
    let mut writer = Client::json(c.edge.addr);
    writer.put(1, "room/a", "1");
    writer.put(2, "room/b", "2");
    writer.put(3, "other", "0");
    let mut a = Client::json(c.edge.addr);
    a.send(&Request::Sub {
        id: 1,
        target: Target::Prefix("room/".into()),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    // The snapshot may come in parts; all entries under the prefix, nothing else.
    let mut keys = Vec::new();
    let token = loop {
        match a.recv() {
            Response::Snapshot {
                entries,
                token,
                more,
                ..
            } => {
                keys.extend(entries.into_iter().map(|e| e.key.into_owned()));
                if !more {
                    break token.unwrap().into_owned();
                }
            }
            other => panic!("{other:?}"),
        }
    };
    keys.sort();
    assert_eq!(keys, ["room/a", "room/b"]);
    writer.put(4, "room/c", "3");
    writer.put(5, "other", "1");
    let r = a.recv();
    assert!(
        matches!(&r, Response::Change { key, .. } if key == "room/c"),
        "{r:?}"
    );
    drop(a);
    writer.put(6, "room/d", "4");
    writer.put(7, "room/a", "5");
    // Resumed from the snapshot's token: room/c, room/d and room/a's update, each once.
    let mut a = Client::json(c.edge.addr);
    a.send(&Request::Sub {
        id: 2,
        target: Target::Prefix("room/".into()),
        from: Some(Cow::Borrowed(&token)),
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    assert!(matches!(a.recv(), Response::Resumed { id: 2, .. }));
    let mut got = Vec::new();
    for _ in 0..3 {
        match a.recv() {
            Response::Change { key, .. } => got.push(key.into_owned()),
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ["room/a", "room/c", "room/d"]);
    writer.put(8, "room/e", "6");
    let r = a.recv();
    assert!(
        matches!(&r, Response::Change { key, .. } if key == "room/e"),
        "{r:?}"
    );
}

#[test]
fn a_killed_store_makes_requests_unavailable_then_subscriptions_resume() {
    let mut c = Cluster::start();
    let mut a = Client::json(c.edge.addr);
    a.sub(1, "k", None);
    assert!(matches!(a.recv(), Response::Snapshot { .. }));
    let mut writer = Client::json(c.edge.addr);
    for v in 1..=3u64 {
        assert!(matches!(
            writer.put(v, "k", &v.to_string()),
            Response::Ok { .. }
        ));
    }
    for v in 1..=3u64 {
        assert_eq!(change(&a.recv()).0, v.to_string());
    }
    c.store.kill();
    // Within a moment the link is seen down; requests then fail fast.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 100;
    loop {
        id += 1;
        let t = Instant::now();
        let r = writer.call(&Request::Get {
            id,
            key: "k".into(),
        });
        if let Response::Error {
            code: ErrorCode::Unavailable,
            ..
        } = r
        {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "unavailable took {:?}",
                t.elapsed()
            );
            break;
        }
        assert!(Instant::now() < deadline, "never unavailable: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new subscription is refused while the store is away.
    writer.sub(50, "k", None);
    let r = writer.recv();
    assert!(
        matches!(
            r,
            Response::Error {
                id: Some(50),
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{r:?}"
    );
    c.store.restart();
    c.edge.wait_links_up();
    // The old subscription carries on from where it was: the next write arrives, once.
    for v in 4..=5u64 {
        assert!(matches!(
            writer.put(v, "k", &v.to_string()),
            Response::Ok { .. }
        ));
    }
    for v in 4..=5u64 {
        let (value, version, _) = change(&a.recv());
        assert_eq!((value, version), (v.to_string(), v));
    }
}

/// The map of two stores, each owning half of 8 partitions, at `a` and `b`.
fn two_store_map(a: &str, b: &str) -> String {
    format!(
        "version = 1\npartitions = 8\n[[store]]\nid = \"s1\"\naddr = \"{a}\"\npartitions = [\"0-3\"]\n[[store]]\nid = \"s2\"\naddr = \"{b}\"\npartitions = [\"4-7\"]\n"
    )
}

#[test]
fn with_one_of_two_stores_down_the_other_partitions_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    // The stores read only their partitions from the map; the edge's copy carries the
    // addresses they actually bound.
    let placeholder = dir.path().join("stores.toml");
    std::fs::write(&placeholder, two_store_map("127.0.0.1:1", "127.0.0.1:2")).unwrap();
    let p = placeholder.to_str().unwrap();
    let s1 = Store::start_in(
        &dir.path().join("s1"),
        "127.0.0.1:0",
        &["--store-id", "s1", "--cluster", p],
    );
    let mut s2 = Store::start_in(
        &dir.path().join("s2"),
        "127.0.0.1:0",
        &["--store-id", "s2", "--cluster", p],
    );
    let map = dir.path().join("edge.toml");
    std::fs::write(
        &map,
        two_store_map(&s1.addr.to_string(), &s2.addr.to_string()),
    )
    .unwrap();
    let edge = Edge::start(&["--cluster", map.to_str().unwrap()]);
    edge.wait_links_up();
    // A key of each store.
    let key_of = |store: u32| {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|k| (wire::partition::partition_of(k.as_bytes(), 8) >= 4) == (store == 2))
            .unwrap()
    };
    let (k1, k2) = (key_of(1), key_of(2));
    let mut a = Client::json(edge.addr);
    a.sub(1, &k1, None);
    assert!(matches!(a.recv(), Response::Snapshot { id: 1, .. }));
    assert!(matches!(a.put(2, &k1, "1"), Response::Ok { .. }));
    assert_eq!(change(&a.recv()).0, "1");
    s2.kill();
    // k2's store is gone: unavailable, promptly...
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 10;
    loop {
        id += 1;
        match a.put(id, &k2, "x") {
            Response::Error {
                code: ErrorCode::Unavailable,
                ..
            } => break,
            other => {
                assert!(Instant::now() < deadline, "never unavailable: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // ...while k1's store serves reads, writes and the live subscription as before.
    assert!(matches!(a.put(100, &k1, "2"), Response::Ok { id: 100, .. }));
    assert_eq!(change(&a.recv()).0, "2");
    let r = a.call(&Request::Get {
        id: 101,
        key: k1.as_str().into(),
    });
    assert!(
        matches!(
            r,
            Response::Value {
                id: 101,
                version: 2,
                ..
            }
        ),
        "{r:?}"
    );
    // An untagged prefix spans both stores: refused while one is away.
    a.send(&Request::Sub {
        id: 102,
        target: Target::Prefix("key".into()),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    let r = a.recv();
    assert!(
        matches!(
            r,
            Response::Error {
                id: Some(102),
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn a_large_snapshot_comes_in_parts_of_at_most_64_kib() {
    let c = Cluster::start();
    let mut w = Client::json(c.edge.addr);
    let value = format!("\"{}\"", "v".repeat(4000));
    for i in 0..40u64 {
        assert!(matches!(
            w.put(i, &format!("big/{{t}}/{i:02}"), &value),
            Response::Ok { .. }
        ));
    }
    let mut a = Client::json(c.edge.addr);
    a.send(&Request::Sub {
        id: 1,
        target: Target::Prefix("big/{t}/".into()),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    let (mut parts, mut keys) = (0, Vec::new());
    loop {
        let Response::Snapshot {
            entries,
            more,
            token,
            ..
        } = a.recv()
        else {
            panic!("expected snapshot parts")
        };
        parts += 1;
        let bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        assert!(bytes <= 64 * 1024, "a part of {bytes} B");
        keys.extend(entries.into_iter().map(|e| e.key.into_owned()));
        assert_eq!(token.is_some(), !more, "only the last part has the token");
        if !more {
            break;
        }
    }
    assert!(parts >= 3, "{parts} parts");
    let want: Vec<String> = (0..40).map(|i| format!("big/{{t}}/{i:02}")).collect();
    assert_eq!(keys, want);
}

/// The lines an edge logged so far, kept as they come.
#[derive(Clone)]
struct EdgeLog(Arc<Mutex<Vec<String>>>);

impl EdgeLog {
    /// Wait up to `within` for a line that `pick` accepts, and return it.
    fn wait_for(&self, within: Duration, pick: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.0.lock().unwrap().iter().find(|l| pick(l)) {
                return Some(line.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn any(&self, pick: impl Fn(&str) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(|l| pick(l))
    }
}

/// [`Edge::start`] keeping the edge's log, to assert what it did and why.
fn logged_edge(extra: &[&str]) -> (Edge, EdgeLog) {
    let log = EdgeLog(Arc::default());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge"));
    cmd.args(["--listen", "127.0.0.1:0", "--pin", "false"])
        .args(if extra.contains(&"--workers") {
            &[][..]
        } else {
            &["--workers", "2"][..]
        })
        .args(extra);
    let (child, addr) =
        common::spawn_logged(&mut cmd, "edge listening", "EDGE_LOG", Some(log.0.clone()));
    (Edge { child, addr }, log)
}

/// The state `/metrics` shows for the edge's links, summed (one worker, one store:
/// 0 down, 1 connecting, 2 up).
fn link_state(edge: &Edge) -> u64 {
    edge.metric("ringline_edge_link_state")
}

fn is_unavailable(r: &Response<'_>) -> bool {
    matches!(
        r,
        Response::Error {
            code: ErrorCode::Unavailable,
            ..
        }
    )
}

#[test]
fn a_store_with_another_partition_count_is_refused_and_its_keys_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // The store runs on its embedded default map (256 partitions); the edge's map says
    // 16.
    let store = Store::start(&dir.path().join("store"), "127.0.0.1:0");
    let map = dir.path().join("cluster.toml");
    let addr = store.addr.to_string();
    std::fs::write(
        &map,
        wire::cluster::even_split_toml(1, 16, &[("store-1", &addr)]),
    )
    .unwrap();
    let (edge, log) = logged_edge(&["--cluster", map.to_str().unwrap(), "--workers", "1"]);
    // The refusal itself: the store answered the hello, and the edge turned the link
    // down for its partition count (not a link still connecting, nor one accepted).
    let seen = log.wait_for(Duration::from_secs(20), |l| {
        l.contains("store link up") || l.contains("store has 256 partitions")
    });
    let seen = seen.expect("the edge neither refused nor accepted the store within 20 s");
    assert!(
        seen.contains("the edge's cluster map 16"),
        "the edge did not refuse the store: {seen}"
    );
    assert_ne!(link_state(&edge), 2, "the link is up");
    // Its keys answer promptly (never a hang): unavailable, as for a store that is
    // down; a subscription is refused, not left waiting.
    let mut c = Client::json(edge.addr);
    for id in 1..=3 {
        let t = Instant::now();
        let r = c.call(&Request::Get {
            id,
            key: "k".into(),
        });
        assert!(is_unavailable(&r), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    c.sub(9, "k", None);
    let r = c.recv();
    assert!(
        is_unavailable(&r),
        "a subscription must be refused, not left waiting: {r:?}"
    );
    // Never accepted, on any attempt so far.
    assert_ne!(link_state(&edge), 2, "the link is up");
    assert!(
        !log.any(|l| l.contains("store link up")),
        "the link came up"
    );
}

#[test]
fn a_silent_store_link_is_dropped_after_15_s_then_comes_back_and_subscriptions_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(&dir.path().join("store"), "127.0.0.1:0");
    let map = store.cluster_file(dir.path());
    // One worker: one link, whose state /metrics shows alone.
    let (edge, log) = logged_edge(&["--cluster", map.to_str().unwrap(), "--workers", "1"]);
    edge.wait_links_up();
    let mut a = Client::json(edge.addr);
    a.sub(1, "alive", None);
    assert!(matches!(a.recv(), Response::Snapshot { id: 1, .. }));
    let mut w = Client::json(edge.addr);
    assert!(matches!(w.put(1, "alive", "1"), Response::Ok { .. }));
    let (value, version, _) = change(&a.recv());
    assert_eq!((value.as_str(), version), ("1", 1));
    // A last answer from the store, then it freezes: SIGSTOP keeps its sockets open
    // (the kernel even accepts new connections) but it says nothing more.
    let r = w.call(&Request::Get {
        id: 2,
        key: "alive".into(),
    });
    assert!(matches!(r, Response::Value { id: 2, .. }), "{r:?}");
    let t = Instant::now();
    store.signal("STOP");
    // The link stays up through the silence, then the keep-alive drops it 15 s after
    // the last byte received. A request sent into the silence is answered
    // `unavailable` when the link goes.
    let mut in_flight = false;
    let dropped = loop {
        if link_state(&edge) != 2 {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the link is still up 30 s after the store went silent"
        );
        if !in_flight && t.elapsed() > Duration::from_secs(8) {
            w.send(&Request::Get {
                id: 3,
                key: "alive".into(),
            });
            in_flight = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        dropped >= Duration::from_secs(13) && dropped < Duration::from_secs(20),
        "the silent link was dropped {dropped:?} after the store's last answer (15 s)"
    );
    let why = log.wait_for(Duration::from_secs(5), |l| l.contains("store link down"));
    assert!(
        why.as_deref().is_some_and(|l| l.contains("silent")),
        "{why:?}"
    );
    assert!(in_flight);
    let r = w.recv();
    assert!(
        matches!(&r, Response::Error { id: Some(3), .. }) && is_unavailable(&r),
        "the request in flight: {r:?}"
    );
    // Its keys now answer unavailable at once; a new subscription is refused.
    let t = Instant::now();
    let r = w.call(&Request::Get {
        id: 4,
        key: "alive".into(),
    });
    assert!(is_unavailable(&r), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    w.sub(5, "alive", None);
    let r = w.recv();
    assert!(is_unavailable(&r), "{r:?}");
    // The store wakes up: the link comes back (backoff of at most 8 s, then a hello),
    // and the subscription resumes where it was: the next writes arrive, each once,
    // with nothing before them.
    store.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while link_state(&edge) != 2 {
        assert!(
            Instant::now() < deadline,
            "the link did not come back within 30 s of SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for v in 2..=3u64 {
        assert!(matches!(
            w.put(10 + v, "alive", &v.to_string()),
            Response::Ok { .. }
        ));
    }
    for v in 2..=3u64 {
        let (value, version, _) = change(&a.recv());
        assert_eq!((value, version), (v.to_string(), v));
    }
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_with_4008_and_the_others_keep_receiving() {
    // One worker: both subscribers ride the same group watch.
    let c = Cluster::start_with(&[
        "--workers",
        "1",
        "--max-message",
        "131072",
        "--max-outbound",
        "1048576",
    ]);
    let key = "hot";
    let mut fast = Client::json(c.edge.addr);
    let mut slow = Client::json(c.edge.addr);
    for s in [&mut fast, &mut slow] {
        s.sub(1, key, None);
        assert!(matches!(s.recv(), Response::Snapshot { id: 1, .. }));
    }
    let mut w = Client::json(c.edge.addr);
    let value = format!("\"{}\"", "x".repeat(32 * 1024));
    let slow_consumer = "ringline_edge_close_frames_sent_total{code=\"4008\"}";
    // Write 32 KiB changes, 4 at a time, while `fast` reads every one and `slow` reads
    // nothing, until the edge gives up on `slow` (its queue passed 1 MiB once the
    // kernel buffers were full). 32 MiB without that is a failure.
    let mut version = 0u64;
    let write = |w: &mut Client, fast: &mut Client, version: &mut u64| {
        for i in 1..=4 {
            w.send(&Request::Put {
                id: *version + i,
                key: key.into(),
                value: Cow::Borrowed(value.as_bytes()),
                if_version: None,
                msg_id: None,
            });
        }
        for _ in 0..4 {
            let r = w.recv();
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        }
        for _ in 0..4 {
            *version += 1;
            let (got, v, _) = change(&fast.recv());
            assert_eq!((got.len(), v), (value.len(), *version));
        }
    };
    while c.edge.metric(slow_consumer) == 0 {
        assert!(
            version < 1024,
            "no close 4008 after {version} changes of 32 KiB to a subscriber that reads none"
        );
        write(&mut w, &mut fast, &mut version);
    }
    // `slow` reads at last: changes in order (the ones the kernel and the edge had
    // taken), then close 4008, well before the last change.
    let mut got = 0u64;
    let code = loop {
        match slow.ws.recv() {
            Msg::Text(t) => {
                got += 1;
                let r = wire::client::json::decode_response(t.as_bytes()).unwrap();
                assert_eq!(change(&r).1, got);
            }
            Msg::Close(code) => break code,
            Msg::Ping(_) => {}
            other => panic!("after {got} changes: {other:?}"),
        }
    };
    assert_eq!(code, Some(4008), "after {got} changes");
    assert!(got < version, "{got} of {version} changes");
    // The others carry on: every change still reaches `fast`, in order.
    for _ in 0..2 {
        write(&mut w, &mut fast, &mut version);
    }
    assert_eq!(c.edge.metric(slow_consumer), 1);
}
