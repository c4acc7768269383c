//! Writes the seed corpora of the link and client fuzz targets from the real encoders:
//! `cargo run --release -p wire --example fuzz_seeds -- fuzz/seeds`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use wire::client::{fb, json};
use wire::link::{ChangeKind, ChangeRef, EntryRef, ErrorCode, LinkEncoder, Position};

const REQUESTS: &[&str] = &[
    r#"{"op":"sub","id":1,"key":"room/{42}/title"}"#,
    r#"{"op":"sub","id":2,"prefix":"room/{42}/"}"#,
    r#"{"op":"sub","id":3,"key":"k","from":"AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA"}"#,
    r#"{"op":"unsub","id":1}"#,
    r#"{"op":"get","id":4,"key":"k"}"#,
    r#"{"op":"put","id":5,"key":"k","value":{"a":[1,2,{"b":null}]},"if_version":7}"#,
    r#"{"op":"del","id":6,"key":"k"}"#,
    r#"{"op":"pub","id":7,"key":"room/{42}/chat","value":"h\u00e9llo \ud83d\ude00"}"#,
    r#"{"op":"put","id":8,"key":"order/{7}","value":"paid","msg_id":"0c6f-1"}"#,
    r#"{"op":"sub","id":9,"prefix":"prices/{eu}/","mode":"latest"}"#,
    r#"{"op":"sub","id":10,"key":"user/{42}/inbox","durable":"phone"}"#,
    r#"{"op":"ack","id":10,"token":"AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA"}"#,
];

const RESPONSES: &[&str] = &[
    r#"{"op":"snapshot","id":1,"entries":[{"key":"k","value":{"x":1},"version":17}],"token":"t1","more":true}"#,
    r#"{"op":"change","id":1,"key":"k","value":[1,2],"version":18,"token":"t2"}"#,
    r#"{"op":"change","id":1,"key":"k","deleted":true,"version":19,"token":"t3"}"#,
    r#"{"op":"change","id":1,"key":"k","value":"m","pub":true,"token":"t4"}"#,
    r#"{"op":"resumed","id":3,"token":"t5"}"#,
    r#"{"op":"reset","id":3,"reason":"position no longer in the log"}"#,
    r#"{"op":"value","id":4,"key":"k","value":null}"#,
    r#"{"op":"ok","id":5,"version":18,"token":"t6"}"#,
    r#"{"op":"error","id":5,"code":"conflict","message":"version is 9","version":9}"#,
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let root = Path::new(&root);
    let mut out = Vec::new();
    for (i, text) in REQUESTS.iter().enumerate() {
        write(
            &root.join("client_json"),
            &format!("req{i}"),
            text.as_bytes(),
        );
        let req = json::decode_request(text.as_bytes()).expect(text);
        out.clear();
        fb::encode_request(&req, &mut out);
        write(&root.join("client_fb"), &format!("req{i}"), &out);
    }
    for (i, text) in RESPONSES.iter().enumerate() {
        write(
            &root.join("client_json"),
            &format!("resp{i}"),
            text.as_bytes(),
        );
        let resp = json::decode_response(text.as_bytes()).expect(text);
        out.clear();
        fb::encode_response(&resp, &mut out);
        write(&root.join("client_fb"), &format!("resp{i}"), &out);
    }
    link_frames(&root.join("link_frame"));
    println!("seeds written under {}", root.display());
}

/// One seed per link frame kind (and a few variants), from the real encoder.
fn link_frames(link: &Path) {
    let mut enc = LinkEncoder::default();
    let pos = Position::new(7, 0xDEAD_BEEF, 42);
    let mut frame = |name: &str, f: &mut dyn FnMut(&mut LinkEncoder, &mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut enc, &mut out);
        write(link, name, &out);
    };
    frame("hello", &mut |e, o| {
        e.hello(
            o,
            1,
            "edge-a",
            0,
            3,
            Some(&wire::link::auth::Nonce([5; 32])),
        )
        .unwrap()
    });
    frame("auth_challenge", &mut |e, o| {
        e.auth_challenge(
            o,
            1,
            &wire::link::auth::Nonce([6; 32]),
            &wire::link::auth::Proof([7; 32]),
        )
        .unwrap()
    });
    frame("auth_proof", &mut |e, o| {
        e.auth_proof(o, 1, &wire::link::auth::Proof([8; 32]))
            .unwrap()
    });
    frame("put", &mut |e, o| {
        e.put(o, 2, "room/{42}/title", b"\"hi\"", Some(4), None)
            .unwrap()
    });
    frame("publish_msg_id", &mut |e, o| {
        let msg = wire::link::MsgIdRef {
            scope: "alice",
            id: "0c6f-1",
        };
        e.publish(o, 5, "room/{42}/chat", b"\"hi\"", Some(msg))
            .unwrap()
    });
    frame("watch", &mut |e, o| {
        e.watch(o, 3, 9, "room/", true, Some(pos)).unwrap()
    });
    frame("error", &mut |e, o| {
        e.error(o, 4, ErrorCode::Conflict, "version is 9", 3, 9)
            .unwrap()
    });
    frame("snapshot", &mut |e, o| {
        let entries = [
            EntryRef {
                key: "a",
                value: b"1",
                version: 1,
            },
            EntryRef {
                key: "b",
                value: b"2",
                version: 2,
            },
        ];
        e.snapshot(o, 5, 9, 7, &entries, pos, false).unwrap()
    });
    frame("changes", &mut |e, o| {
        let ids = [9u64, 10];
        let changes = [
            ChangeRef {
                watch_ids: &ids,
                position: pos,
                key: "a",
                kind: ChangeKind::Put,
                value: Some(b"3"),
                version: 43,
            },
            ChangeRef {
                watch_ids: &ids[..1],
                position: pos,
                key: "b",
                kind: ChangeKind::Delete,
                value: None,
                version: 44,
            },
        ];
        e.changes(o, 6, &changes).unwrap()
    });
}
