//! Presence across a real cluster (two stores, two edges, HAProxy; auth on): joins and
//! leaves reach presence subscribers on every edge, batched, with tokens that resume
//! exactly; pages and counts; grants; an edge killed with SIGKILL (its members leave
//! after the store's grace period, not before); a store killed and restarted (rebuilt
//! from the edges without spurious events).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use common::client::Client;
use common::cluster::{LocalCluster, store_of};
use wire::client::{ErrorCode, Member, Request, Response, SubMode, Target};

const SECRET: &str = "a test secret of at least thirty-two bytes";

/// A token for `sub` granting presence on `presence` patterns (and nothing else).
fn token(sub: &str, presence: &[&str]) -> String {
    token_with(sub, &serde_json::json!({ "presence": presence }))
}

/// A token for `sub` with the `rl` claim `rl`.
fn token_with(sub: &str, rl: &serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": sub, "exp": now + 600, "iat": now, "rl": rl });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// The cluster with auth required; `store_flags` to both stores.
fn cluster(store_flags: &[&str]) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let flags = [
        "--auth",
        "required",
        "--auth-secret-file",
        secret.to_str().unwrap(),
    ];
    let c = LocalCluster::start_with(store_flags, &flags);
    (dir, c)
}

/// `user`'s connection to `addr`, allowed presence in `room/*`.
fn connect(addr: std::net::SocketAddr, user: &str) -> Client {
    let c = Client::json_with_token(addr, &token(user, &["room/*"])).unwrap();
    c.ws.s
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c
}

fn join(c: &mut Client, id: u64, channel: &str, meta: &str) -> Response<'static> {
    join_as(c, id, channel, meta, None)
}

/// A join as `device` (`None`: as this connection).
fn join_as(
    c: &mut Client,
    id: u64,
    channel: &str,
    meta: &str,
    device: Option<&str>,
) -> Response<'static> {
    c.call(&Request::Join {
        id,
        channel: channel.into(),
        meta: Cow::Owned(meta.as_bytes().to_vec()),
        device: device.map(|d| Cow::Owned(d.to_owned())),
    })
}

fn subscribe(c: &mut Client, id: u64, channel: &str, from: Option<&str>) {
    c.send(&Request::Sub {
        id,
        target: Target::Presence(channel.into()),
        from: from.map(|f| Cow::Owned(f.to_owned())),
        mode: SubMode::Stream,
        durable: None,
    });
}

/// One event as a test reads it: ("joined"/"left", user, meta).
type Ev = (&'static str, Option<String>, Option<String>);

/// What subscription `id` of `c` receives within `wait`: its events in order, the
/// number of `presence` messages they came in, and the last token.
fn events(
    c: &mut Client,
    id: u64,
    want: usize,
    wait: Duration,
) -> (Vec<Ev>, usize, Option<String>) {
    let deadline = Instant::now() + wait;
    let (mut got, mut messages, mut token) = (Vec::new(), 0, None);
    while got.len() < want && Instant::now() < deadline {
        let Some(r) = c.try_recv() else { continue };
        if let Response::Presence {
            id: i,
            events,
            token: t,
        } = r
        {
            assert_eq!(i, id);
            messages += 1;
            token = Some(t.into_owned());
            for e in events {
                let meta = e
                    .joined
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(m).into_owned());
                let kind = if e.joined.is_some() { "joined" } else { "left" };
                got.push((kind, e.user.map(Cow::into_owned), meta));
            }
        }
    }
    (got, messages, token)
}

/// The members list a subscription starts with: (members, token).
fn snapshot(c: &mut Client, id: u64) -> (Vec<Member<'static>>, String) {
    let mut all = Vec::new();
    loop {
        match c.recv() {
            Response::Members {
                id: i,
                members,
                token,
                more,
                ..
            } if i == id => {
                all.extend(members);
                if !more {
                    return (all, token.expect("the last page has a token").into_owned());
                }
            }
            other => panic!("expected members, got {other:?}"),
        }
    }
}

fn users(members: &[Member<'_>]) -> Vec<(Option<String>, usize)> {
    members
        .iter()
        .map(|m| (m.user.as_deref().map(str::to_owned), m.metas.len()))
        .collect()
}

fn ok(r: &Response<'_>) -> bool {
    matches!(r, Response::Ok { .. })
}

#[test]
fn joins_and_leaves_reach_subscribers_on_every_edge_batched_and_resumable() {
    let (_dir, c) = cluster(&[]);
    let (e0, e1) = (c.edges[0].addr, c.edges[1].addr);
    let room = "room/{7}";
    let mut watcher = connect(e0, "wendy");
    subscribe(&mut watcher, 1, room, None);
    let (members, _) = snapshot(&mut watcher, 1);
    assert!(members.is_empty());

    // Alice twice (phone on one edge, laptop on the other), Bob once.
    let mut phone = connect(e0, "alice");
    let mut laptop = connect(e1, "alice");
    let mut bob = connect(e1, "bob");
    assert!(ok(&join(&mut phone, 1, room, r#"{"on":"phone"}"#)));
    assert!(ok(&join(&mut laptop, 1, room, r#"{"on":"laptop"}"#)));
    assert!(ok(&join(&mut bob, 1, room, "null")));
    let (got, messages, _) = events(&mut watcher, 1, 3, Duration::from_secs(5));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|(k, _, _)| *k == "joined"));
    assert!(
        messages < 3,
        "three joins within 100 ms came in {messages} messages"
    );

    // Listing, grouped by user; the count alone.
    let mut reader = connect(e1, "carol");
    let r = reader.call(&Request::Presence {
        id: 5,
        channel: room.into(),
        cursor: None,
        count_only: false,
    });
    let Response::Members {
        members,
        total,
        cursor,
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(total, Some(3));
    assert_eq!(cursor, None);
    // One group per user (in the store's key order, not alphabetical).
    let mut grouped = users(&members);
    grouped.sort();
    assert_eq!(
        grouped,
        [(Some("alice".into()), 2), (Some("bob".into()), 1)]
    );
    let r = reader.call(&Request::Presence {
        id: 6,
        channel: room.into(),
        cursor: None,
        count_only: true,
    });
    assert!(
        matches!(&r, Response::Members { total: Some(3), members, .. } if members.is_empty()),
        "{r:?}"
    );

    // Joining again changes the meta (one event); a close leaves.
    assert!(ok(&join(&mut bob, 2, room, r#"{"away":true}"#)));
    let (got, _, _) = events(&mut watcher, 1, 1, Duration::from_secs(5));
    assert_eq!(
        got,
        [(
            "joined",
            Some("bob".into()),
            Some(r#"{"away":true}"#.into())
        )]
    );
    drop(laptop);
    let (got, _, token) = events(&mut watcher, 1, 1, Duration::from_secs(5));
    assert_eq!(got, [("left", Some("alice".into()), None)]);

    // The watcher goes away; meanwhile Bob leaves and Dave joins; from its token it
    // gets exactly those two, in order.
    drop(watcher);
    assert!(ok(&bob.call(&Request::Leave {
        id: 3,
        channel: room.into()
    })));
    let mut dave = connect(e0, "dave");
    assert!(ok(&join(&mut dave, 1, room, "1")));
    let mut back = connect(e1, "wendy");
    subscribe(&mut back, 9, room, token.as_deref());
    assert!(matches!(back.recv(), Response::Resumed { id: 9, .. }));
    let (got, _, _) = events(&mut back, 9, 3, Duration::from_secs(2));
    assert_eq!(
        got,
        [
            ("left", Some("bob".into()), None),
            ("joined", Some("dave".into()), Some("1".into()))
        ]
    );
}

#[test]
fn presence_needs_its_grant_and_member_keys_are_out_of_reach() {
    let (_dir, c) = cluster(&[]);
    let e0 = c.edges[0].addr;
    let mut eve = connect(e0, "eve");
    for req in [
        Request::Join {
            id: 1,
            channel: "lobby".into(),
            meta: Cow::Borrowed(b"null"),
            device: None,
        },
        Request::Presence {
            id: 2,
            channel: "lobby".into(),
            cursor: None,
            count_only: true,
        },
    ] {
        let r = eve.call(&req);
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::Forbidden,
                    ..
                }
            ),
            "{r:?}"
        );
    }
    subscribe(&mut eve, 3, "lobby", None);
    assert!(matches!(
        eve.recv(),
        Response::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));

    // A refresh of the token keeps what it still grants (a presence subscription is
    // granted as presence, not as reading its records), and leaves what it does not.
    subscribe(&mut eve, 4, "room/{5}", None);
    snapshot(&mut eve, 4);
    assert!(ok(&join(&mut eve, 5, "room/{5}", "1")));
    assert!(ok(&join(&mut eve, 6, "room/{6}", "1")));
    let narrower = token_with("eve", &serde_json::json!({ "presence": ["room/{5}"] }));
    eve.send(&Request::Auth {
        id: 7,
        token: narrower.as_str().into(),
    });
    // Eve's own join may come first, as an event of her subscription.
    let mut r = eve.recv();
    while matches!(r, Response::Presence { .. }) {
        r = eve.recv();
    }
    assert!(ok(&r), "{r:?}");
    let count = |c: &mut Client, id, channel: &str| {
        c.call(&Request::Presence {
            id,
            channel: channel.into(),
            cursor: None,
            count_only: true,
        })
    };
    let mut other = connect(e0, "otto");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        count(&mut other, 8, "room/{6}"),
        Response::Members { total: Some(0), .. }
    ) {
        assert!(Instant::now() < deadline, "eve stays in room/{{6}}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = count(&mut other, 9, "room/{5}");
    assert!(
        matches!(r, Response::Members { total: Some(1), .. }),
        "{r:?}"
    );
    assert!(ok(&join(&mut other, 10, "room/{5}", "2")));
    // Her own join (batched, it may come after the refresh's answer), then Otto's.
    let (got, _, _) = events(&mut eve, 4, 2, Duration::from_secs(3));
    assert_eq!(
        got.last(),
        Some(&("joined", Some("otto".into()), Some("2".into()))),
        "eve's subscription stays: {got:?}"
    );

    // At most 100 channels per connection.
    let mut busy = connect(e0, "bea");
    for i in 0..100 {
        assert!(ok(&join(&mut busy, 100 + i, &format!("room/{i}"), "1")));
    }
    let r = join(&mut busy, 300, "room/x", "1");
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::TooManySubscriptions,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(
        ok(&join(&mut busy, 301, "room/7", "2")),
        "joining again is not one more"
    );
    // Nobody reaches the members' keys themselves, whatever their grant.
    let all = token_with(
        "mallory",
        &serde_json::json!({ "read": ["*"], "write": ["*"], "presence": ["*"] }),
    );
    let mut m = Client::json_with_token(e0, &all).unwrap();
    let key = wire::presence::channel_prefix("room/{7}");
    let r = m.call(&Request::Get {
        id: 4,
        key: key.as_str().into(),
    });
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{r:?}"
    );
    let r = m.call(&Request::Put {
        id: 5,
        key: format!("{key}0:4:x/0/1.1").into(),
        value: Cow::Borrowed(b"1"),
        if_version: None,
        msg_id: None,
    });
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn a_killed_edges_members_leave_after_the_grace_unless_they_reconnect_and_a_restarted_store_is_rebuilt()
 {
    let (_dir, mut c) = cluster(&["--presence-grace-secs", "3"]);
    let (e0, e1) = (c.edges[0].addr, c.edges[1].addr);
    let room = "room/{9}";
    let owner = store_of(room);
    let mut watcher = connect(e0, "wendy");
    subscribe(&mut watcher, 1, room, None);
    snapshot(&mut watcher, 1);
    let mut stays = connect(e0, "ann");
    let mut goes = connect(e0, "gus");
    let mut fay = connect(e1, "fay");
    let mut hal = connect(e1, "hal");
    assert!(ok(&join(&mut stays, 1, room, "1")));
    assert!(ok(&join(&mut goes, 1, room, "2")));
    assert!(ok(&join_as(&mut fay, 1, room, "3", Some("laptop"))));
    assert!(ok(&join(&mut hal, 1, room, "4")));
    assert_eq!(
        events(&mut watcher, 1, 4, Duration::from_secs(5)).0.len(),
        4
    );

    // The channel's store is killed; Gus leaves while it is down; it comes back.
    c.stores[owner].kill();
    drop(goes);
    std::thread::sleep(Duration::from_millis(300));
    c.stores[owner].restart();
    let back = Instant::now();
    let (got, _, _) = events(&mut watcher, 1, 1, Duration::from_secs(5));
    let rebuilt = back.elapsed();
    assert_eq!(got, [("left", Some("gus".into()), None)], "only Gus leaves");
    assert!(rebuilt < Duration::from_secs(2), "rebuilt in {rebuilt:?}");
    // Nothing else comes: the members that stayed made no events.
    let (more, _, _) = events(&mut watcher, 1, 1, Duration::from_millis(1500));
    assert!(more.is_empty(), "{more:?}");

    // Edge 1 is killed. Fay's laptop reconnects through edge 0 within the grace period:
    // nobody sees her leave or join. Hal does not: he leaves after the grace period,
    // not before.
    c.edges[1].signal("KILL");
    let killed = Instant::now();
    drop((fay, hal));
    std::thread::sleep(Duration::from_millis(500));
    let mut fay = connect(e0, "fay");
    assert!(ok(&join_as(&mut fay, 1, room, "3", Some("laptop"))));
    let (got, _, _) = events(&mut watcher, 1, 1, Duration::from_secs(8));
    let after = killed.elapsed();
    assert_eq!(got, [("left", Some("hal".into()), None)]);
    assert!(
        after >= Duration::from_secs(3) && after < Duration::from_secs(6),
        "Hal left {after:?} after his edge died (grace 3 s)"
    );
    let (more, _, _) = events(&mut watcher, 1, 1, Duration::from_secs(2));
    assert!(more.is_empty(), "{more:?}");
    // Gus (stale: not announced after the restart) and Hal (expired).
    assert_eq!(
        c.store_metric(owner, "ringline_store_presence_removed_total"),
        2
    );
    let r = stays.call(&Request::Presence {
        id: 7,
        channel: room.into(),
        cursor: None,
        count_only: false,
    });
    let Response::Members { members, total, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(total, Some(2));
    let mut listed: Vec<(Option<String>, String)> = members
        .iter()
        .flat_map(|m| {
            m.metas
                .iter()
                .map(|x| (m.user.as_deref().map(str::to_owned), x.conn.to_string()))
        })
        .collect();
    listed.sort();
    assert_eq!(listed[1], (Some("fay".into()), "laptop".into()));
}

#[test]
fn a_token_older_than_the_retained_log_gets_a_reset_and_the_current_list() {
    let (_dir, c) = cluster(&["--retention-entries", "1", "--retention-secs", "0"]);
    let e0 = c.edges[0].addr;
    let room = "room/{old}";
    let mut watcher = connect(e0, "wendy");
    subscribe(&mut watcher, 1, room, None);
    let (_, token) = snapshot(&mut watcher, 1);
    drop(watcher);
    // While it is away: three join, one leaves; the store trims its log meanwhile.
    let mut ann = connect(e0, "ann");
    let mut bob = connect(e0, "bob");
    let mut cy = connect(e0, "cy");
    for cl in [&mut ann, &mut bob, &mut cy] {
        assert!(ok(&join(cl, 1, room, "1")));
    }
    drop(bob);
    std::thread::sleep(Duration::from_millis(2500));
    let mut back = connect(e0, "wendy");
    subscribe(&mut back, 2, room, Some(&token));
    let first = back.recv();
    assert!(matches!(first, Response::Reset { id: 2, .. }), "{first:?}");
    let (members, _) = snapshot(&mut back, 2);
    let mut users: Vec<_> = members.iter().filter_map(|m| m.user.as_deref()).collect();
    users.sort_unstable();
    assert_eq!(users, ["ann", "cy"], "a fresh list: the members now");
}
