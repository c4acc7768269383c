//! The hostile-client campaign, against the real `edge` (one worker, auth required) and
//! `store`: each attack runs while a witness on the same worker follows a key written
//! 50 times a second, and after each one the witness must have every change, in
//! order, without a gap, and the edge's resident memory must be back within 5% of its
//! baseline. The baseline is the most the edge held after any attack of two warm-up
//! rounds that ran each one: the allocator keeps what a burst freed for reuse (up to
//! about 0.4 MiB after the 100,000-frame flood, reached after a flood or two and
//! reused by the next), and an attack that leaked, or grew a table for good, would
//! push past it. The one thing
//! allowed to stay beyond is what the receive-buffer ring grew by
//! (`ringline_edge_receive_buffer_bytes`: it grows under a flood, up to 8 MiB per
//! worker, and never shrinks, because a buffer the kernel holds cannot be taken back);
//! the test reads it and says how much it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::client::{Client, Event, change};
use common::store::Cluster;
use common::ws::{Msg, Ws};
use wire::client::{ErrorCode, Request, Response, Target};
use wire::frame::{Opcode, encode_client_frame};

const SECRET: &str = "the hostile campaign's secret, 32 bytes or more";

fn token(
    sub: &str,
    read: &[&str],
    write: &[&str],
    exp_in: i64,
    aud: &str,
    kid: Option<&str>,
) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = serde_json::json!({
        "sub": sub, "exp": now + exp_in, "iat": now, "aud": aud,
        "rl": { "read": read, "write": write, "publish": write },
    });
    let h = jsonwebtoken::Header {
        kid: kid.map(str::to_owned),
        ..jsonwebtoken::Header::default()
    };
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

fn good(sub: &str) -> String {
    token(
        sub,
        &["user/{sub}/*", "w/*"],
        &["user/{sub}/*", "w/*"],
        600,
        "ringline",
        None,
    )
}

/// The edge's resident memory, in bytes.
/// A writer putting 1, 2, 3... to `w/k` 50 times a second, and a witness following it.
struct Witness {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
    follower: Client,
    seen: u64,
}

impl Witness {
    fn start(c: &Cluster) -> Self {
        let mut follower = Client::json_with_token(c.edge.addr, &good("witness")).unwrap();
        follower.sub(1, "w/k", None);
        assert!(matches!(follower.recv(), Response::Snapshot { .. }));
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut w = Client::json_with_token(c.edge.addr, &good("writer")).unwrap();
        let (s, n) = (Arc::clone(&stop), Arc::clone(&written));
        let writer = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let r = w.put(i, "w/k", &i.to_string());
                assert!(matches!(r, Response::Ok { .. }), "{r:?}");
                n.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            written,
            writer: Some(writer),
            follower,
            seen: 0,
        }
    }

    /// Every change written so far arrived, in order, none missing.
    fn check(&mut self, case: &str) {
        let target = self.written.load(Ordering::Relaxed);
        while self.seen < target {
            let r = self.follower.recv();
            let (value, version, _) = change(&r);
            self.seen += 1;
            assert_eq!(value, self.seen.to_string(), "{case}: a gap");
            assert_eq!(version, self.seen, "{case}: a gap");
        }
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// One attack, against the edge at the address.
type Attack = fn(std::net::SocketAddr);

/// The upgrade request for `/ws` with `extra` header lines.
fn upgrade(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The status line of the answer to `request`.
fn answer(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while !out.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A `/ws` connection with a good token, as raw frames.
fn raw_ws(addr: std::net::SocketAddr, sub: &str) -> Ws {
    let auth = format!("Authorization: Bearer {}\r\n", good(sub));
    Ws::connect_headers(addr, "/ws", Some("ringline.v1.json"), &auth).unwrap()
}

fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.recv() {
            Msg::Close(code) => return code,
            Msg::Eof => return None,
            _ => {}
        }
    }
}

fn slowloris(addr: std::net::SocketAddr) {
    let socks: Vec<TcpStream> = (0..1000)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(socks.len() >= 990, "{} connected", socks.len());
    // Dropped by the 2 s handshake deadline.
    for mut s in socks {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
}

fn header_floods(addr: std::net::SocketAddr) {
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert!(answer(addr, upgrade(&many).as_bytes()).starts_with("HTTP/1.1 431"));
    let huge = format!("X-Big: {}\r\n", "a".repeat(16 * 1024));
    assert!(answer(addr, upgrade(&huge).as_bytes()).starts_with("HTTP/1.1 431"));
}

fn pipelined_tiny_frames(addr: std::net::SocketAddr) {
    let mut ws = raw_ws(addr, "piper");
    let mut burst = Vec::new();
    for i in 0..100_000u64 {
        let text = format!(r#"{{"op":"get","id":{i},"key":"user/piper/k"}}"#);
        encode_client_frame(
            &mut burst,
            true,
            Opcode::Text,
            text.as_bytes(),
            [1, 2, 3, 4],
        );
    }
    // Written from another thread: the edge answers while it reads.
    let mut w = ws.s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&burst);
    });
    assert_eq!(close_code(&mut ws), Some(1008), "over the message rate");
    drop(ws);
    let _ = t.join();
}

fn bad_frames(addr: std::net::SocketAddr) {
    // A 2^63 length: too big.
    let mut ws = raw_ws(addr, "big");
    let mut f = vec![0x82, 0xFF];
    f.extend_from_slice(&(1u64 << 63).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    ws.s.write_all(&f).unwrap();
    assert!(matches!(close_code(&mut ws), Some(1009 | 1002)));
    // A fragmented control frame (ping without FIN).
    let mut ws = raw_ws(addr, "frag");
    let mut f = Vec::new();
    encode_client_frame(&mut f, false, Opcode::Ping, b"x", [1, 2, 3, 4]);
    ws.s.write_all(&f).unwrap();
    assert_eq!(close_code(&mut ws), Some(1002));
    // Unmasked (a server's frame from a client).
    let mut ws = raw_ws(addr, "unmasked");
    ws.s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(close_code(&mut ws), Some(1002));
}

fn invalid_utf8_at_every_split(addr: std::net::SocketAddr) {
    // `é` then a lone continuation byte: invalid from its 3rd byte on.
    let msg: &[u8] = b"{\"op\":\"get\",\"id\":1,\"key\":\"\xc3\xa9\x80\"}";
    for cut in 1..msg.len() {
        let mut ws = raw_ws(addr, "utf8");
        let mut f = Vec::new();
        encode_client_frame(&mut f, false, Opcode::Text, &msg[..cut], [1, 2, 3, 4]);
        encode_client_frame(
            &mut f,
            true,
            Opcode::Continuation,
            &msg[cut..],
            [5, 6, 7, 8],
        );
        ws.s.write_all(&f).unwrap();
        assert_eq!(close_code(&mut ws), Some(1007), "cut at {cut}");
    }
}

fn floods(addr: std::net::SocketAddr) {
    // Subscriptions past the quota (3 here).
    let mut s = Client::json_with_token(addr, &good("subber")).unwrap();
    for id in 1..=5 {
        s.sub(id, &format!("user/subber/{id}"), None);
    }
    let mut refused = 0;
    for _ in 1..=5 {
        if let Response::Error { code, .. } = s.recv() {
            assert_eq!(code, ErrorCode::TooManySubscriptions);
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    // Publishes past the rate: refused, then closed.
    let mut p = Client::json_with_token(addr, &good("publisher")).unwrap();
    let code = 'flood: loop {
        for id in 0..50 {
            p.send(&Request::Pub {
                id,
                key: "user/publisher/chat".into(),
                value: Cow::Borrowed(b"1"),
                msg_id: None,
                echo: true,
            });
        }
        for _ in 0..50 {
            match p.next() {
                Event::Msg(_) => {}
                Event::Close(code) => break 'flood code,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(code, Some(1008));
}

fn bad_tokens(addr: std::net::SocketAddr) {
    let forged = {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({"sub": "x", "exp": now + 600, "aud": "ringline"});
        let key =
            jsonwebtoken::EncodingKey::from_secret(b"not the edge's secret, but 32 bytes long")
                .unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let none = {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            b(r#"{"alg":"none"}"#),
            b(r#"{"sub":"x","exp":9999999999,"aud":"ringline"}"#)
        )
    };
    let cases: [(String, &[&str]); 6] = [
        ("not.a.token".into(), &["malformed token"]),
        (
            token("x", &["*"], &["*"], -600, "ringline", None),
            &["token expired"],
        ),
        (forged, &["bad signature"]),
        // `none` is no algorithm the library knows: refused as it parses the header.
        (none, &["malformed token", "algorithm not allowed"]),
        (
            token("x", &["*"], &["*"], 600, "ringline", Some("k9")),
            &["unknown key"],
        ),
        (
            token("x", &["*"], &["*"], 600, "another", None),
            &["wrong audience"],
        ),
    ];
    for (t, reasons) in cases {
        let line = format!("Authorization: Bearer {t}\r\n");
        let head = Ws::connect_headers(addr, "/ws", None, &line)
            .err()
            .expect("refused");
        assert!(head.starts_with("HTTP/1.1 401"), "{reasons:?}: {head}");
        assert!(
            reasons.iter().any(|r| head.contains(r)),
            "{reasons:?}: {head}"
        );
    }
    // No token at all: nothing but `auth` is taken, and the connection is closed
    // when the authentication timeout (1 s here) passes.
    let mut none = Client::json(addr);
    let r = none.call(&Request::Get {
        id: 1,
        key: "w/k".into(),
    });
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{r:?}"
    );
    loop {
        match none.next() {
            Event::Close(code) => {
                assert_eq!(code, Some(4408));
                break;
            }
            Event::Msg(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

fn escalation(addr: std::net::SocketAddr) {
    let mut c = Client::json_with_token(addr, &good("bob")).unwrap();
    let keys = [
        "user/bob%2f../alice/x",
        "user/bob/../alice/x",
        "user/alice/x",
        "user/bob",
        "user/bo",
        "User/bob/x",
        "user/\u{0062}ob\u{200b}/x",
        "user/ｂob/x",
    ];
    let mut denied = 0;
    for (i, key) in keys.iter().enumerate() {
        let r = c.call(&Request::Put {
            id: i as u64,
            key: (*key).into(),
            value: Cow::Borrowed(b"1"),
            if_version: None,
            msg_id: None,
        });
        match r {
            Response::Error {
                code: ErrorCode::Forbidden,
                ..
            } => denied += 1,
            // Granted only what is literally under user/bob/.
            Response::Ok { .. } => assert!(key.starts_with("user/bob/"), "{key}"),
            r => panic!("{key}: {r:?}"),
        }
    }
    assert!(denied >= 6, "{denied}");
    for prefix in ["user/", "user/b", "user/bo", "user/bob"] {
        c.send(&Request::Sub {
            id: 100,
            target: Target::Prefix(prefix.into()),
            from: None,
            mode: wire::client::SubMode::Stream,
            durable: None,
        });
        let r = c.recv();
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{prefix}: {r:?}"
        );
    }
}

fn narrowing_refresh(addr: std::net::SocketAddr) {
    let mut c = Client::json_with_token(addr, &good("carol")).unwrap();
    c.sub(1, "w/k", None);
    assert!(matches!(c.recv(), Response::Snapshot { .. }));
    let narrow = token("carol", &["user/{sub}/*"], &[], 600, "ringline", None);
    c.send(&Request::Auth {
        id: 2,
        token: narrow.into(),
    });
    // Changes of w/k may still arrive before the answer; then the sub ends.
    let mut ended = false;
    while !ended {
        match c.recv() {
            Response::Change { id: 1, .. } | Response::Ok { id: 2, .. } => {}
            Response::Error {
                id: Some(1),
                code: ErrorCode::Forbidden,
                ..
            } => ended = true,
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn hostile_clients_leave_the_others_served_and_the_memory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let c = Cluster::start_with(&[
        "--workers",
        "1",
        "--auth",
        "required",
        "--auth-secret-file",
        secret.to_str().unwrap(),
        "--auth-audience",
        "ringline",
        "--handshake-timeout-secs",
        "2",
        "--max-subscriptions",
        "3",
        "--rate-limit-grace-secs",
        "1",
        "--auth-timeout-secs",
        "1",
    ]);
    let addr = c.edge.addr;
    let pid = c.edge.child.id();
    let mut witness = Witness::start(&c);
    let cases: [(&str, Attack); 9] = [
        ("slowloris", slowloris),
        ("header floods", header_floods),
        ("100,000 pipelined frames", pipelined_tiny_frames),
        ("bad frames", bad_frames),
        ("invalid UTF-8 at every split", invalid_utf8_at_every_split),
        ("subscription and publish floods", floods),
        ("bad tokens", bad_tokens),
        ("escalation", escalation),
        ("narrowing refresh", narrowing_refresh),
    ];
    // Warm-up: every attack twice; the baseline is the most the edge held after one.
    let mut baseline = 0;
    for (name, case) in cases.iter().chain(&cases) {
        case(addr);
        witness.check(name);
        std::thread::sleep(Duration::from_millis(500));
        baseline = baseline.max(common::rss(pid));
    }
    let buffers = || c.edge.metric("ringline_edge_receive_buffer_bytes");
    let buffers0 = buffers();
    // What the allocator may keep of a burst's partly used pages: 12 rounds of the
    // pipelined attack alone took the edge's anonymous memory from 2,360 to 3,028 KiB,
    // flat after the seventh, so up to 1 MiB (or 5%, if more) is not a leak; a leak
    // of 11 bytes per pipelined frame is past it.
    let slack = (baseline / 20).max(1 << 20);
    for (name, case) in &cases {
        case(addr);
        witness.check(name);
        let start = Instant::now();
        loop {
            let grown = buffers().saturating_sub(buffers0);
            let now = common::rss(pid);
            if now <= baseline + slack + grown {
                eprintln!(
                    "[hostile] {name}: ok, resident {} KiB (baseline {} KiB, receive buffers grown by {} KiB)",
                    now / 1024,
                    baseline / 1024,
                    grown / 1024
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}: resident memory {} KiB, baseline {} KiB, receive buffers grown by {} KiB",
                now / 1024,
                baseline / 1024,
                grown / 1024
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    witness.check("the end");
}
