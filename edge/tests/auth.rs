//! Who gets in and what they may touch, against the real `edge` and `store` binaries:
//! tokens on the upgrade (`Authorization: Bearer`, the `token` query parameter where
//! enabled) and in a first `auth` message (both encodings), every op granted or
//! `forbidden`, the authentication timeout (4408), refused tokens (401, or 4401 after an
//! `auth` message), refresh (the grant replaced, subscriptions it no longer allows
//! ended), expiry (4419), the anonymous grant, and the browsers' `Origin` allow-list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::time::{Duration, Instant};

mod common;
use common::client::{Client, Event};
use common::store::Cluster;
use common::ws::Ws;
use wire::client::{ErrorCode, Request, Response, Target};

/// The HS256 secret of the auth tests (test-only).
const AUTH_SECRET: &str = "a test secret of at least thirty-two bytes";

/// An HS256 token for `sub`, granting `read` and `write` patterns, expiring `exp_in`
/// seconds from now (negative: in the past), signed with `secret`.
fn token(sub: &str, read: &[&str], write: &[&str], exp_in: i64, secret: &str) -> String {
    let rl = serde_json::json!({ "read": read, "write": write });
    common::hs256_token(sub, rl, exp_in, secret)
}

#[test]
fn with_auth_required_tokens_are_checked_and_every_op_is_granted_or_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{AUTH_SECRET}\n")).unwrap();
    let c = Cluster::start_with(&[
        "--auth",
        "required",
        "--auth-secret-file",
        secret.to_str().unwrap(),
    ]);
    let addr = c.edge.addr;
    // A malformed token, an expired one, a forged one: 401 with the reason. (No token
    // at all opens the connection pending its `auth` message: see the next test.)
    let expired = token("bob", &["*"], &["*"], -120, AUTH_SECRET);
    let forged = token(
        "bob",
        &["*"],
        &["*"],
        600,
        "another secret, thirty-two bytes or more",
    );
    let refusals = [
        (
            Client::json_with_token(addr, "not.a.token").err(),
            "malformed token",
        ),
        (
            Client::json_with_token(addr, &expired).err(),
            "token expired",
        ),
        (
            Client::json_with_token(addr, &forged).err(),
            "bad signature",
        ),
    ];
    for (head, reason) in refusals {
        let head = head.expect("refused");
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(
            head.contains(&format!("error_description=\"{reason}\"")),
            "{reason}: {head}"
        );
    }
    // A good token: what it grants goes through, the rest is forbidden with the
    // request's id, and the connection stays.
    let good = token(
        "bob",
        &["user/{sub}/*"],
        &["user/{sub}/inbox"],
        600,
        AUTH_SECRET,
    );
    let mut w = Client::json_with_token(addr, &good).unwrap();
    let put = |id: u64, key: &str| Request::Put {
        id,
        key: key.to_owned().into(),
        value: Cow::Borrowed(b"v"),
        if_version: None,
        msg_id: None,
    };
    let r = w.call(&put(1, "user/bob/inbox"));
    assert!(matches!(r, Response::Ok { id: 1, .. }), "{r:?}");
    let forbidden = |r: &Response<'_>, want: u64| matches!(r, Response::Error { id: Some(id), code: ErrorCode::Forbidden, .. } if *id == want);
    let denied: Vec<Request<'_>> = vec![
        put(2, "user/bob/other"),
        put(3, "user/alice/inbox"),
        put(4, "user/bob%2finbox"),
        Request::Get {
            id: 5,
            key: "user/alice/inbox".into(),
        },
        Request::Sub {
            id: 6,
            target: Target::Prefix("user/".into()),
            from: None,
            mode: wire::client::SubMode::Stream,
            durable: None,
        },
        Request::Sub {
            id: 7,
            target: Target::Prefix("user/bo".into()),
            from: None,
            mode: wire::client::SubMode::Stream,
            durable: None,
        },
        Request::Pub {
            id: 8,
            key: "user/bob/inbox".into(),
            value: Cow::Borrowed(b"m"),
            msg_id: None,
            echo: true,
        },
        Request::Del {
            id: 9,
            key: "user/bob/other".into(),
            if_version: None,
            msg_id: None,
        },
    ];
    for req in &denied {
        let r = w.call(req);
        assert!(forbidden(&r, req.id()), "{req:?}: {r:?}");
    }
    let r = w.call(&Request::Get {
        id: 10,
        key: "user/bob/inbox".into(),
    });
    assert!(
        matches!(
            r,
            Response::Value {
                id: 10,
                value: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    w.send(&Request::Sub {
        id: 11,
        target: Target::Prefix("user/bob/".into()),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    assert!(matches!(w.recv(), Response::Snapshot { id: 11, .. }));
    // Counted: every refused handshake and every denied op.
    assert_eq!(
        c.edge.metric("ringline_edge_rejected_unauthorized_total"),
        3
    );
    assert_eq!(c.edge.metric("ringline_edge_denied_total"), 8);
}

#[test]
fn with_auth_off_every_op_goes_through_whatever_the_token() {
    // The default: no token needed (the existing tests run this way); a token given
    // anyway is not looked at.
    let c = Cluster::start();
    let bogus = token(
        "bob",
        &[],
        &[],
        -120,
        "whatever secret, thirty-two bytes long",
    );
    let mut w = Client::json_with_token(c.edge.addr, &bogus).unwrap();
    let r = w.call(&Request::Put {
        id: 1,
        key: "anything".into(),
        value: Cow::Borrowed(b"v"),
        if_version: None,
        msg_id: None,
    });
    assert!(matches!(r, Response::Ok { id: 1, .. }), "{r:?}");
    assert_eq!(c.edge.metric("ringline_edge_denied_total"), 0);
}

#[test]
fn browser_handshakes_from_origins_off_the_allow_list_get_403() {
    let c = Cluster::start_with(&[
        "--allowed-origin",
        "https://app.example.com",
        "--allowed-origin",
        "https://*.example.org",
    ]);
    let addr = c.edge.addr;
    let open = |origin: Option<&str>| {
        let header = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        Ws::connect_headers(addr, "/ws", Some("ringline.v1.json"), &header)
    };
    for o in [
        "https://evil.example.net",
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "https://example.org",
        "null",
    ] {
        let head = open(Some(o)).err().unwrap_or_else(|| panic!("{o} let in"));
        assert!(head.starts_with("HTTP/1.1 403"), "{o}: {head}");
    }
    for o in [
        Some("https://app.example.com"),
        Some("HTTPS://APP.example.com"),
        Some("https://eu.example.org"),
        None, // not a browser
    ] {
        assert!(open(o).is_ok(), "{o:?} refused");
    }
    assert_eq!(c.edge.metric("ringline_edge_rejected_origin_total"), 5);
}

#[test]
fn with_auth_optional_a_connection_without_a_token_gets_the_anonymous_grant() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, AUTH_SECRET).unwrap();
    let c = Cluster::start_with(&[
        "--auth",
        "optional",
        "--auth-secret-file",
        secret.to_str().unwrap(),
        "--anonymous-read",
        "public/*",
    ]);
    let addr = c.edge.addr;
    let get = |id: u64, key: &str| Request::Get {
        id,
        key: key.to_owned().into(),
    };
    let put = |id: u64, key: &str| Request::Put {
        id,
        key: key.to_owned().into(),
        value: Cow::Borrowed(b"v"),
        if_version: None,
        msg_id: None,
    };
    // A token's holder writes a public key; an anonymous client reads it, and is
    // refused everything else.
    let writer = token("ops", &["*"], &["public/*"], 600, AUTH_SECRET);
    let mut w = Client::json_with_token(addr, &writer).unwrap();
    assert!(matches!(
        w.call(&put(1, "public/news")),
        Response::Ok { id: 1, .. }
    ));
    let mut anon = Client::json(addr);
    let r = anon.call(&get(2, "public/news"));
    assert!(
        matches!(
            r,
            Response::Value {
                id: 2,
                value: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    for req in [get(3, "private/x"), put(4, "public/news")] {
        let r = anon.call(&req);
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{req:?}: {r:?}"
        );
    }
    // A bad token is still refused, even though none is required.
    let head = Client::json_with_token(addr, "not.a.token")
        .err()
        .expect("refused");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// A store and an edge with auth on (HS256 with [`AUTH_SECRET`]) and `flags`; the
/// directory holding the secret lives as long as the cluster.
fn auth_cluster(flags: &[&str]) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, AUTH_SECRET).unwrap();
    let mut all = vec!["--auth-secret-file", secret.to_str().unwrap()];
    all.extend_from_slice(flags);
    let c = Cluster::start_with(&all);
    (dir, c)
}

/// Bob's token: his own keys, read and write, for ten minutes.
fn bob_token() -> String {
    token(
        "bob",
        &["user/{sub}/*"],
        &["user/{sub}/*"],
        600,
        AUTH_SECRET,
    )
}

fn auth(id: u64, token: &str) -> Request<'_> {
    Request::Auth {
        id,
        token: token.into(),
    }
}

fn get(id: u64, key: &str) -> Request<'_> {
    Request::Get {
        id,
        key: key.into(),
    }
}

fn is_error(r: &Response<'_>, want_id: u64, want: ErrorCode) -> bool {
    matches!(r, Response::Error { id: Some(id), code, .. } if *id == want_id && *code == want)
}

fn is_ok(r: &Response<'_>, want_id: u64) -> bool {
    matches!(r, Response::Ok { id, .. } if *id == want_id)
}

/// Reads until a close frame; its code and when it came.
fn close_code(c: &mut Client) -> (Option<u16>, Instant) {
    loop {
        match c.next() {
            Event::Close(code) => return (code, Instant::now()),
            Event::Msg(_) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[test]
fn with_auth_required_a_browser_authenticates_with_its_first_message() {
    let (_dir, c) = auth_cluster(&["--auth", "required", "--auth-timeout-secs", "2"]);
    let addr = c.edge.addr;
    let good = bob_token();
    // Upgraded without a token (a browser): nothing but `auth` goes through.
    let mut b = Client::json(addr);
    let r = b.call(&get(1, "user/bob/inbox"));
    assert!(is_error(&r, 1, ErrorCode::Unauthorized), "{r:?}");
    let r = b.call(&auth(2, &good));
    assert!(is_ok(&r, 2), "{r:?}");
    let r = b.put(3, "user/bob/inbox", "1");
    assert!(is_ok(&r, 3), "{r:?}");
    let r = b.put(4, "user/alice/inbox", "1");
    assert!(is_error(&r, 4, ErrorCode::Forbidden), "{r:?}");
    // The same in flatbuffers.
    let mut f = Client::fb(addr);
    let r = f.call(&get(1, "user/bob/inbox"));
    assert!(is_error(&r, 1, ErrorCode::Unauthorized), "{r:?}");
    let r = f.call(&auth(2, &good));
    assert!(is_ok(&r, 2), "{r:?}");
    let r = f.call(&get(3, "user/bob/inbox"));
    assert!(
        matches!(
            r,
            Response::Value {
                id: 3,
                value: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    // A token in the URL is not read unless the config says so: still pending.
    let ws = Ws::connect_with(addr, &format!("/ws?token={good}"), Some("ringline.v1.json"));
    let mut q = Client {
        ws: ws.unwrap(),
        binary: false,
    };
    let r = q.call(&get(1, "user/bob/inbox"));
    assert!(is_error(&r, 1, ErrorCode::Unauthorized), "{r:?}");
    drop(q);
    // A refused token: `unauthorized` with the reason, then close 4401.
    let mut x = Client::json(addr);
    let expired = token("bob", &["*"], &["*"], -120, AUTH_SECRET);
    let r = x.call(&auth(1, &expired));
    assert!(
        matches!(&r, Response::Error { id: Some(1), code: ErrorCode::Unauthorized, message, .. } if message == "token expired"),
        "{r:?}"
    );
    assert_eq!(close_code(&mut x).0, Some(4401));
    // No `auth` in time: close 4408, not before the 2 s timeout.
    let start = Instant::now();
    let mut idle = Client::json(addr);
    let (code, at) = close_code(&mut idle);
    assert_eq!(code, Some(4408));
    let waited = at - start;
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Those that authenticated carry on past their pending deadline.
    let r = b.call(&get(5, "user/bob/inbox"));
    assert!(matches!(r, Response::Value { id: 5, .. }), "{r:?}");
    let r = f.call(&get(4, "user/bob/inbox"));
    assert!(matches!(r, Response::Value { id: 4, .. }), "{r:?}");
    let closes = |code: u16| {
        c.edge.metric(&format!(
            "ringline_edge_close_frames_sent_total{{code=\"{code}\"}}"
        ))
    };
    assert_eq!((closes(4401), closes(4408)), (1, 1));
    assert_eq!(
        c.edge.metric("ringline_edge_rejected_unauthorized_total"),
        1
    );
    // Refused: three ops before `auth`, one past the grant.
    assert_eq!(c.edge.metric("ringline_edge_denied_total"), 4);
}

#[test]
fn the_token_query_parameter_is_read_when_enabled() {
    let (_dir, c) = auth_cluster(&["--auth", "required", "--auth-query-token", "true"]);
    let addr = c.edge.addr;
    let good = bob_token();
    let open = |path: &str| Ws::connect_with(addr, path, Some("ringline.v1.json"));
    let mut q = Client {
        ws: open(&format!("/ws?v=1&token={good}")).unwrap(),
        binary: false,
    };
    let r = q.put(1, "user/bob/x", "1");
    assert!(is_ok(&r, 1), "{r:?}");
    let r = q.put(2, "user/alice/x", "1");
    assert!(is_error(&r, 2, ErrorCode::Forbidden), "{r:?}");
    for bad in [
        "/ws?token=not.a.token",
        &format!("/ws?token={good}&token={good}"),
    ] {
        let head = open(bad).err().expect("refused");
        assert!(head.starts_with("HTTP/1.1 401"), "{bad}: {head}");
    }
}

#[test]
fn a_refresh_replaces_the_grant_and_ends_the_subscriptions_it_no_longer_allows() {
    let (_dir, c) = auth_cluster(&["--auth", "required"]);
    let addr = c.edge.addr;
    let wide = token("bob", &["room/*"], &["room/*"], 600, AUTH_SECRET);
    let mut s = Client::json_with_token(addr, &wide).unwrap();
    s.sub(1, "room/a", None);
    assert!(matches!(s.recv(), Response::Snapshot { id: 1, .. }));
    s.sub(2, "room/b", None);
    assert!(matches!(s.recv(), Response::Snapshot { id: 2, .. }));
    s.send(&Request::Sub {
        id: 3,
        target: Target::Prefix("room/".into()),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    // A prefix's snapshot comes in parts, one per partition at least.
    loop {
        match s.recv() {
            Response::Snapshot { id: 3, more, .. } if !more => break,
            Response::Snapshot { id: 3, .. } => {}
            r => panic!("{r:?}"),
        }
    }
    // Narrowed to room/a: the refresh is answered, then subscriptions 2 and 3 end.
    let narrow = token("bob", &["room/a"], &["room/a"], 600, AUTH_SECRET);
    let r = s.call(&auth(4, &narrow));
    assert!(is_ok(&r, 4), "{r:?}");
    for id in [2, 3] {
        let r = s.recv();
        assert!(is_error(&r, id, ErrorCode::Forbidden), "{r:?}");
    }
    // Another client writes room/b then room/a: only room/a reaches `s`.
    let mut w = Client::json_with_token(addr, &wide).unwrap();
    assert!(is_ok(&w.put(1, "room/b", "\"b\""), 1));
    assert!(is_ok(&w.put(2, "room/a", "\"a\""), 2));
    let r = s.recv();
    assert!(
        matches!(&r, Response::Change { id: 1, key, .. } if key == "room/a"),
        "{r:?}"
    );
    let r = s.put(5, "room/b", "1");
    assert!(is_error(&r, 5, ErrorCode::Forbidden), "{r:?}");
    // A refresh for another subject, or a bad one, is refused; the grant stays.
    let alice = token("alice", &["*"], &["*"], 600, AUTH_SECRET);
    let forged = token(
        "bob",
        &["*"],
        &["*"],
        600,
        "another secret, thirty-two bytes or more",
    );
    for (id, t) in [(6, &alice), (7, &forged)] {
        let r = s.call(&auth(id, t));
        assert!(is_error(&r, id, ErrorCode::Unauthorized), "{r:?}");
    }
    let r = s.call(&get(8, "room/b"));
    assert!(is_error(&r, 8, ErrorCode::Forbidden), "{r:?}");
    let r = s.call(&get(9, "room/a"));
    assert!(matches!(r, Response::Value { id: 9, .. }), "{r:?}");
    assert_eq!(
        c.edge.metric("ringline_edge_rejected_unauthorized_total"),
        2
    );
}

#[test]
fn a_token_that_expires_unrefreshed_closes_with_4419_and_a_refresh_keeps_it_open() {
    let (_dir, c) = auth_cluster(&["--auth", "required", "--auth-skew-secs", "0"]);
    let addr = c.edge.addr;
    let short = token("bob", &["*"], &["*"], 2, AUTH_SECRET);
    let long = token("bob", &["*"], &["*"], 600, AUTH_SECRET);
    let start = Instant::now();
    // Its token on the upgrade, or in a message: both close when it expires.
    let mut header = Client::json_with_token(addr, &short).unwrap();
    let mut message = Client::json(addr);
    assert!(is_ok(&message.call(&auth(1, &short)), 1));
    // Refreshed in time: stays.
    let mut refreshed = Client::json_with_token(addr, &short).unwrap();
    assert!(is_ok(&refreshed.call(&auth(1, &long)), 1));
    for c in [&mut header, &mut message] {
        let (code, at) = close_code(c);
        assert_eq!(code, Some(4419));
        let after = at - start;
        assert!(after >= Duration::from_secs(1), "{after:?}");
        assert!(after < Duration::from_secs(6), "{after:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let r = refreshed.put(2, "k", "1");
    assert!(is_ok(&r, 2), "{r:?}");
    assert_eq!(
        c.edge
            .metric("ringline_edge_close_frames_sent_total{code=\"4419\"}"),
        2
    );
}

/// The public JWKS of one test key (`../src/auth/testdata/`, test-only) under `kid`.
fn jwks_of(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, kid: &str) -> String {
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).unwrap()
}

/// A token for `sub` reading and writing everything, signed with `key` under `kid`.
fn signed(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, kid: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "bob", "exp": now + 600, "iat": now,
        "rl": { "read": ["*"], "write": ["*"] },
    });
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

#[test]
fn the_jwks_is_reloaded_when_it_changes_and_open_connections_stay() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let ec = EncodingKey::from_ec_pem(include_bytes!("../src/auth/testdata/ec.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(include_bytes!("../src/auth/testdata/ed.pem")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, jwks_of(Algorithm::ES256, &ec, "ec-1")).unwrap();
    let c = Cluster::start_with(&[
        "--auth",
        "required",
        "--auth-jwks-file",
        jwks.to_str().unwrap(),
    ]);
    let addr = c.edge.addr;
    let (old, new) = (
        signed(Algorithm::ES256, &ec, "ec-1"),
        signed(Algorithm::EdDSA, &ed, "ed-1"),
    );
    let mut open = Client::json_with_token(addr, &old).unwrap();
    assert!(is_ok(&open.put(1, "k", "1"), 1));
    assert!(Client::json_with_token(addr, &new).is_err());
    // Rotated: the file now holds only the Ed25519 key (written whole, then renamed
    // over, as a deploy would).
    let replace = |text: String| {
        let tmp = dir.path().join("jwks.json.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &jwks).unwrap();
    };
    replace(jwks_of(Algorithm::EdDSA, &ed, "ed-1"));
    let start = Instant::now();
    while Client::json_with_token(addr, &new).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the new key was not taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let head = Client::json_with_token(addr, &old)
        .err()
        .expect("old key refused");
    assert!(head.contains("unknown key"), "{head}");
    // The connection opened with the old key goes on.
    assert!(is_ok(&open.put(2, "k", "2"), 2));
    // A file that does not load leaves the keys as they were.
    replace("{\"keys\": [".into());
    std::thread::sleep(Duration::from_millis(2500));
    let mut after = Client::json_with_token(addr, &new).unwrap();
    assert!(is_ok(&after.put(3, "k", "3"), 3));
}

#[test]
fn msg_ids_are_scoped_by_the_tokens_subject() {
    let (_dir, c) = auth_cluster(&["--auth", "required"]);
    let addr = c.edge.addr;
    let put = |id: u64, value: &'static str| Request::Put {
        id,
        key: "shared/doc".into(),
        value: Cow::Borrowed(value.as_bytes()),
        if_version: None,
        msg_id: Some("m-1".into()),
    };
    let version = |r: Response<'_>| match r {
        Response::Ok {
            version: Some(v), ..
        } => v,
        other => panic!("{other:?}"),
    };
    let alice = token("alice", &["*"], &["shared/*"], 600, AUTH_SECRET);
    let bob = token("bob", &["*"], &["shared/*"], 600, AUTH_SECRET);
    let mut a = Client::json_with_token(addr, &alice).unwrap();
    let first = version(a.call(&put(1, "1")));
    // Alice's retry on a new connection is her first write's answer ...
    let mut a2 = Client::json_with_token(addr, &alice).unwrap();
    assert_eq!(version(a2.call(&put(2, "1"))), first);
    // ... while Bob's id of the same spelling is his own: it writes (even with
    // another value, which would be refused as a reuse within one scope).
    let mut b = Client::json_with_token(addr, &bob).unwrap();
    assert!(version(b.call(&put(3, "2"))) > first);
    assert!(is_error(&a.call(&put(4, "2")), 4, ErrorCode::BadRequest));
}
