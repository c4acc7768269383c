//! Scenarios of the product's promise, with real binaries and real HAProxy: two
//! stores, two edges, HAProxy in front (`common::cluster`). Connect to any edge, watch
//! any key, survive an edge's crash or drain, miss nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::client::{Client, Event, change};
use common::cluster::{LocalCluster, key_of, store_of};
use wire::client::{ChangeOp, ErrorCode, Request, Response};

#[test]
fn every_key_of_either_store_works_from_either_edge() {
    let c = LocalCluster::start(&[]);
    let keys: Vec<String> = (0..8).map(|i| key_of(i % 2, "route/", i / 2)).collect();
    assert!(keys.iter().any(|k| store_of(k) == 0) && keys.iter().any(|k| store_of(k) == 1));
    for (watch, write) in [(0, 1), (1, 0)] {
        let mut a = Client::json(c.edges[watch].addr);
        let mut b = Client::json(c.edges[write].addr);
        for (i, k) in keys.iter().enumerate() {
            a.sub(i as u64, k, None);
            assert!(matches!(a.recv(), Response::Snapshot { .. }));
        }
        for (i, k) in keys.iter().enumerate() {
            let value = format!("{}", 100 * watch + i);
            assert!(matches!(b.put(i as u64, k, &value), Response::Ok { .. }));
            let r = a.recv();
            let Response::Change { id, key, .. } = &r else {
                panic!("{r:?}")
            };
            assert_eq!((*id, key.as_ref()), (i as u64, k.as_str()));
            assert_eq!(change(&r).0, value);
        }
    }
}

#[test]
fn five_hundred_watchers_of_one_key_are_one_watch_per_edge_worker() {
    let c = LocalCluster::start(&[]);
    let key = key_of(1, "hot/", 0);
    let watches_before = c.store_metric(1, "ringline_store_watches");
    let mut clients: Vec<Client> = (0..500).map(|_| Client::json(c.edges[0].addr)).collect();
    for cl in &mut clients {
        cl.sub(1, &key, None);
        assert!(matches!(cl.recv(), Response::Snapshot { .. }));
    }
    // Joins are retired once answered; what stays is one watch per worker (2).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = c.store_metric(1, "ringline_store_watches") - watches_before;
        if w <= 2 {
            assert!(w >= 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{w} watches on the store for one key"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut w = Client::json(c.edges[1].addr);
    assert!(matches!(w.put(1, &key, "42"), Response::Ok { .. }));
    for cl in &mut clients {
        assert_eq!(change(&cl.recv()).0, "42");
    }
}

/// How a follower's connection may end in a scenario; any other end fails the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// Never: every edge stays up.
    Never,
    /// Without a close frame (EOF or reset): its edge was SIGKILLed.
    Abruptly,
    /// With close 1001 (going away): its edge drained.
    GoingAway,
}

/// A subscription's state on the follower's current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// Sent, not answered yet.
    Pending,
    /// Answered with its snapshot or `resumed`: its changes may flow.
    Live,
}

/// A client that follows `keys` through HAProxy, reconnecting with its last tokens
/// whenever its connection ends as the scenario allows (`ends`), and records every
/// value it receives per key.
struct Follower {
    front: SocketAddr,
    keys: Vec<String>,
    ends: Ends,
    subs: Vec<Sub>,
    /// Per key: the value its first snapshot held, if any.
    start: HashMap<String, Option<u64>>,
    /// Per key: every value received, in order.
    seen: HashMap<String, Vec<u64>>,
    tokens: HashMap<String, String>,
    reconnects: u32,
    /// Reconnects of every follower, for the writer to see.
    moved: Arc<AtomicUsize>,
    /// Followers holding every key's snapshot, for the writer to wait for.
    ready: Arc<AtomicUsize>,
}

/// The request id of the follower's liveness probe (a `get`).
const PROBE: u64 = 999;

impl Follower {
    /// Subscribe to key `i`, from its last token if any.
    fn sub(&mut self, cl: &mut Client, i: usize) {
        let k = &self.keys[i];
        cl.sub(i as u64, k, self.tokens.get(k).map(String::as_str));
        self.subs[i] = Sub::Pending;
    }

    fn connect(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(mut cl) = Client::try_json(self.front) {
                cl.ws
                    .s
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                for i in 0..self.keys.len() {
                    self.sub(&mut cl, i);
                }
                return cl;
            }
            assert!(Instant::now() < deadline, "no connection through HAProxy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The key of subscription `id`.
    fn key(&self, id: u64) -> String {
        self.keys
            .get(id as usize)
            .unwrap_or_else(|| panic!("a message for subscription {id}, never made"))
            .clone()
    }

    /// Run until `done` says the writer finished and every key reached `last`.
    fn run(mut self, last: Arc<Mutex<HashMap<String, u64>>>, done: Arc<AtomicBool>) -> Self {
        // Silence past this with the probe unanswered is a hung connection.
        const PROBE_LIMIT: Duration = Duration::from_secs(10);
        let mut cl = self.connect();
        let mut probe: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match cl.next() {
                Event::Msg(r) => {
                    if matches!(
                        r,
                        Response::Value { id: PROBE, .. }
                            | Response::Error {
                                id: Some(PROBE),
                                ..
                            }
                    ) {
                        // The probe's answer (a value, or unavailable): the connection lives.
                        probe = None;
                    } else {
                        self.on_message(&mut cl, r);
                    }
                }
                Event::Silent => {
                    if done.load(Ordering::Relaxed) && self.caught_up(&last.lock().unwrap()) {
                        return self;
                    }
                    // Silent for a moment: is it still there?
                    match probe {
                        Some(at) => assert!(
                            at.elapsed() < PROBE_LIMIT,
                            "a connection silent for {:?} with its probe unanswered",
                            at.elapsed()
                        ),
                        None => {
                            probe = Some(Instant::now());
                            cl.send(&Request::Get {
                                id: PROBE,
                                key: "probe".into(),
                            });
                        }
                    }
                }
                end @ (Event::Close(_) | Event::Ended) => {
                    assert!(
                        matches!(
                            (self.ends, &end),
                            (Ends::Abruptly, Event::Ended)
                                | (Ends::GoingAway, Event::Close(Some(1001)))
                        ),
                        "the connection ended with {end:?}; this scenario allows {:?}",
                        self.ends
                    );
                    self.reconnects += 1;
                    self.moved.fetch_add(1, Ordering::Relaxed);
                    probe = None;
                    cl = self.connect();
                }
            }
            assert!(Instant::now() < deadline, "follower never caught up");
        }
    }

    fn on_message(&mut self, cl: &mut Client, r: Response<'static>) {
        match r {
            Response::Snapshot {
                id,
                entries,
                token,
                more,
            } => {
                let k = self.key(id);
                // A subscription from a token resumes or resets (the latter fails
                // below): a snapshot comes only for the first one.
                assert!(
                    self.subs[id as usize] == Sub::Pending && !self.tokens.contains_key(&k),
                    "{k}: a snapshot for a subscription that is {:?} (token {:?})",
                    self.subs[id as usize],
                    self.tokens.get(&k)
                );
                let v = entries
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| std::str::from_utf8(&e.value).unwrap().parse().unwrap());
                let start = self.start.entry(k.clone()).or_default();
                if v.is_some() {
                    *start = v;
                }
                if !more {
                    let t = token.unwrap_or_else(|| panic!("{k}: a last snapshot without token"));
                    self.tokens.insert(k, t.into_owned());
                    self.subs[id as usize] = Sub::Live;
                    if self.subs.iter().all(|s| *s == Sub::Live) {
                        self.ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Response::Resumed { id, token } => {
                let k = self.key(id);
                assert!(
                    self.subs[id as usize] == Sub::Pending && self.tokens.contains_key(&k),
                    "{k}: resumed, on a subscription that is {:?} (token {:?})",
                    self.subs[id as usize],
                    self.tokens.get(&k)
                );
                self.subs[id as usize] = Sub::Live;
                self.tokens.insert(k, token.into_owned());
            }
            Response::Change { id, key, op, token } => {
                let k = self.key(id);
                assert_eq!(key, k, "a change of another key on subscription {id}");
                assert_eq!(
                    self.subs[id as usize],
                    Sub::Live,
                    "{k}: a change before its subscription's snapshot or resumed"
                );
                let value = match op {
                    ChangeOp::Put { value, .. } | ChangeOp::Publish { value } => value,
                    ChangeOp::Delete { .. } => panic!("{k}: no deletes here"),
                };
                let v: u64 = std::str::from_utf8(&value).unwrap().parse().unwrap();
                self.seen.entry(k.clone()).or_default().push(v);
                self.tokens.insert(k, token.into_owned());
            }
            // A subscription refused while its store was away (when made, or while it
            // was starting when the link dropped): ask again shortly. An established
            // one is never failed: the edge resumes it when the link is back.
            Response::Error {
                id: Some(id),
                code: wire::client::ErrorCode::Unavailable,
                ..
            } if self.subs.get(id as usize) == Some(&Sub::Pending) => {
                std::thread::sleep(Duration::from_millis(100));
                self.sub(cl, id as usize);
            }
            Response::Error { id: Some(id), .. }
                if self.subs.get(id as usize) == Some(&Sub::Live) =>
            {
                panic!(
                    "{}: an established subscription failed: {r:?}",
                    self.keys[id as usize]
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn caught_up(&self, last: &HashMap<String, u64>) -> bool {
        last.iter()
            .all(|(k, &v)| v == 0 || self.seen.get(k).and_then(|s| s.last()) == Some(&v))
    }

    /// Every value from the first written, each once, in order (checked by
    /// sequence): each follower held an empty snapshot of every key before the first
    /// write, so nothing may be missing at the start either.
    fn check(&self, last: &HashMap<String, u64>) {
        for (k, &end) in last {
            assert_eq!(
                self.start.get(k),
                Some(&None),
                "{k}: the snapshot, taken before any write, holds a value"
            );
            let seen = self.seen.get(k).map(Vec::as_slice).unwrap_or_default();
            let want: Vec<u64> = (1..=end).collect();
            if let Some(diff) = difference(seen, &want) {
                panic!(
                    "{k}: every change once, in order, from the first: {diff} ({} reconnects)",
                    self.reconnects
                );
            }
        }
    }
}

/// Where `got` parts from `want`, briefly; `None` if they are equal.
fn difference(got: &[u64], want: &[u64]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |v: &[u64]| v[at.saturating_sub(2).min(v.len())..(at + 3).min(v.len())].to_vec();
    Some(format!(
        "{} values for {} written; from #{at} got {:?}, want {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    ))
}

/// Start `n` followers of `keys` through `front`, each on its own thread, and wait
/// until each holds every key's snapshot (so none can miss the first write).
fn spawn_followers(
    n: usize,
    front: SocketAddr,
    keys: &[String],
    ends: Ends,
    last: &Arc<Mutex<HashMap<String, u64>>>,
    done: &Arc<AtomicBool>,
    moved: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Follower>> {
    let ready = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let f = Follower {
                front,
                keys: keys.to_vec(),
                ends,
                subs: vec![Sub::Pending; keys.len()],
                start: HashMap::new(),
                seen: HashMap::new(),
                tokens: HashMap::new(),
                reconnects: 0,
                moved: Arc::clone(moved),
                ready: Arc::clone(&ready),
            };
            let (last, done) = (Arc::clone(last), Arc::clone(done));
            std::thread::spawn(move || f.run(last, done))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < n {
        assert!(
            !handles.iter().any(std::thread::JoinHandle::is_finished),
            "a follower ended before the first write (its panic is above)"
        );
        assert!(
            Instant::now() < deadline,
            "{} of {n} followers got their snapshots",
            ready.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    handles
}

/// Wait for `followers` to catch up and check each (see [`Follower::check`]).
fn join_followers(
    followers: Vec<std::thread::JoinHandle<Follower>>,
    last: &HashMap<String, u64>,
) -> Vec<Follower> {
    let followers: Vec<Follower> = followers
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("a follower failed (its panic is above)"))
        })
        .collect();
    for f in &followers {
        f.check(last);
    }
    followers
}

/// Poll edge `e`'s metric `name` (published once a second) until `ok` holds it.
fn wait_metric(e: &common::Edge, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = e.metric(name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// At least 5,000 sequenced puts and publishes to keys of both stores while `disrupt` hits
/// edge 0 (ending its connections as `ends` says); followers through HAProxy, each
/// holding every key's snapshot before the first write, must each end with every
/// change exactly once, from the first.
fn survive(c: &LocalCluster, ends: Ends, disrupt: fn(&LocalCluster)) -> Vec<Follower> {
    let keys = vec![
        key_of(0, "put/", 0),
        key_of(1, "put/", 0),
        key_of(0, "pub/", 0),
        key_of(1, "pub/", 0),
    ];
    let last: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicUsize::new(0));
    let followers = spawn_followers(40, c.front, &keys, ends, &last, &done, &moved);
    // Followers went through HAProxy to both edges.
    wait_metric(&c.edges[0], "ringline_edge_subscriptions", |n| n > 0);
    // The writer talks to edge 1 directly: it survives edge 0's end.
    let mut w = Client::json(c.edges[1].addr);
    let mut counters: HashMap<String, u64> = HashMap::new();
    // At least 5,000 writes, and on until a follower has had to move (a drain closes
    // its connections over seconds; the writes alone may be done sooner).
    let mut disrupted: Option<Instant> = None;
    for n in 0u64.. {
        if n == 2000 {
            disrupt(c);
            disrupted = Some(Instant::now());
        }
        if n >= 5000
            && (moved.load(Ordering::Relaxed) > 0
                || disrupted.is_some_and(|t| t.elapsed() > Duration::from_secs(30)))
        {
            break;
        }
        let k = &keys[(n % 4) as usize];
        let v = counters.entry(k.clone()).or_default();
        *v += 1;
        let value = v.to_string();
        let r = loop {
            let r = if k.starts_with("put/") {
                w.put(n, k, &value)
            } else {
                w.call(&Request::Pub {
                    id: n,
                    key: k.as_str().into(),
                    value: Cow::Owned(value.clone().into_bytes()),
                    msg_id: None,
                    echo: true,
                })
            };
            // Over the connection's message rate (1,000/s past a burst of 2,000): the
            // write was refused, not applied; slow down and send it again, as a client
            // must.
            match r {
                Response::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => std::thread::sleep(Duration::from_millis(20)),
                r => break r,
            }
        };
        assert!(matches!(r, Response::Ok { .. }), "write {n}: {r:?}");
    }
    *last.lock().unwrap() = counters.clone();
    done.store(true, Ordering::Relaxed);
    let followers = join_followers(followers, &counters);
    assert!(
        followers.iter().any(|f| f.reconnects > 0),
        "no follower had to move: the disruption did not happen"
    );
    followers
}

#[test]
fn an_edge_killed_mid_stream_loses_nothing_for_its_clients() {
    let c = LocalCluster::start(&[]);
    let followers = survive(&c, Ends::Abruptly, |c| c.edges[0].signal("KILL"));
    let moved = followers.iter().filter(|f| f.reconnects > 0).count();
    eprintln!(
        "edge SIGKILL: {moved} of {} followers moved to the other edge",
        followers.len()
    );
}

#[test]
fn an_edge_drained_mid_stream_loses_nothing_for_its_clients() {
    let mut c = LocalCluster::start(&[]);
    let t = Instant::now();
    let followers = survive(&c, Ends::GoingAway, |c| c.edges[0].sigterm());
    let moved = followers.iter().filter(|f| f.reconnects > 0).count();
    eprintln!(
        "edge SIGTERM: {moved} of {} followers moved to the other edge",
        followers.len()
    );
    // The drained edge exits by itself within its drain timeout (6 s here).
    loop {
        if let Some(status) = c.edges[0].child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the drained edge never exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_token_older_than_retention_gets_reset_and_a_fresh_snapshot() {
    let c = LocalCluster::start(&["--retention-entries", "50", "--retention-secs", "0"]);
    let key = key_of(0, "old/", 0);
    let mut w = Client::json(c.front);
    let Response::Ok {
        token: Some(first), ..
    } = w.put(1, &key, "1")
    else {
        panic!("put")
    };
    // Many more writes in the key's partition than the log keeps (the store trims
    // once a partition's log passes a 1,000-entry chunk), pipelined.
    for batch in (2..=1500u64).collect::<Vec<_>>().chunks(500) {
        for &v in batch {
            w.send(&Request::Put {
                id: v,
                key: key.as_str().into(),
                value: Cow::Owned(v.to_string().into_bytes()),
                if_version: None,
                msg_id: None,
            });
        }
        for _ in batch {
            let r = w.recv();
            assert!(matches!(r, Response::Ok { .. }), "{r:?}");
        }
    }
    // The store trims in the background: wait until position 1 is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.store_metric(0, "ringline_store_log_trimmed_seq") == 0 {
        assert!(Instant::now() < deadline, "the log was never trimmed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut a = Client::json(c.front);
    a.sub(1, &key, Some(&first));
    let r = a.recv();
    assert!(matches!(r, Response::Reset { id: 1, .. }), "{r:?}");
    let r = a.recv();
    let Response::Snapshot {
        entries,
        more: false,
        token: Some(_),
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(&entries[0].value[..], b"1500");
    // And it is live from there.
    assert!(matches!(w.put(1501, &key, "1501"), Response::Ok { .. }));
    assert_eq!(change(&a.recv()).0, "1501");
}

#[test]
fn a_store_killed_mid_stream_fails_fast_and_loses_no_acknowledged_write() {
    let mut c = LocalCluster::start(&[]);
    let keys = vec![key_of(0, "safe/", 0), key_of(1, "crash/", 0)];
    let last: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    // The edges stay up: no follower's connection may end.
    let followers = spawn_followers(
        20,
        c.front,
        &keys,
        Ends::Never,
        &last,
        &done,
        &Arc::default(),
    );
    // The writer: conditional puts (if_version), so that a write whose outcome is
    // unknown (its store died with it in flight) can be retried without landing twice.
    let mut w = Client::json(c.edges[1].addr);
    let mut version: HashMap<String, u64> = HashMap::new();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let (mut refused, mut slowest) = (0u32, Duration::ZERO);
    let mut killed_at: Option<Instant> = None;
    let mut restarted = false;
    for n in 0..3000u64 {
        if n == 1000 {
            c.stores[1].kill();
            killed_at = Some(Instant::now());
        }
        if !restarted && killed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(1500)) {
            c.stores[1].restart();
            restarted = true;
        }
        let k = &keys[(n % 2) as usize];
        let seq = acked.get(k).copied().unwrap_or(0) + 1;
        let expected = version.get(k).copied().unwrap_or(0);
        let t = Instant::now();
        let r = w.call(&Request::Put {
            id: n,
            key: k.as_str().into(),
            value: Cow::Owned(seq.to_string().into_bytes()),
            if_version: Some(expected),
            msg_id: None,
        });
        match r {
            Response::Ok {
                version: Some(v), ..
            } => {
                version.insert(k.clone(), v);
                acked.insert(k.clone(), seq);
            }
            Response::Error {
                code: wire::client::ErrorCode::Unavailable,
                ..
            } => {
                assert_eq!(store_of(k), 1, "store 1's key failed: {r:?}");
                refused += 1;
                slowest = slowest.max(t.elapsed());
            }
            Response::Error {
                code: wire::client::ErrorCode::Conflict,
                version: Some(cur),
                ..
            } => {
                // An earlier attempt of this very write landed after all.
                assert_eq!(cur, expected + 1, "{k}");
                version.insert(k.clone(), cur);
                acked.insert(k.clone(), seq);
            }
            other => panic!("write {n}: {other:?}"),
        }
        if killed_at.is_some() {
            // Paced from the kill on, so that the restart and the relink happen
            // mid-stream.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(restarted, "the stream ended before the restart");
    assert!(refused > 0, "the store's death was never seen");
    assert!(
        slowest < Duration::from_secs(1),
        "unavailable took {slowest:?}"
    );
    // Writes to the restarted store go through again before the end.
    let k2 = &keys[1];
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.get(k2).copied().unwrap_or(0) < 1000 {
        assert!(
            Instant::now() < deadline,
            "the restarted store never came back"
        );
        let seq = acked.get(k2).copied().unwrap_or(0) + 1;
        let expected = version.get(k2).copied().unwrap_or(0);
        match w.call(&Request::Put {
            id: 0,
            key: k2.as_str().into(),
            value: Cow::Owned(seq.to_string().into_bytes()),
            if_version: Some(expected),
            msg_id: None,
        }) {
            Response::Ok {
                version: Some(v), ..
            } => {
                version.insert(k2.clone(), v);
                acked.insert(k2.clone(), seq);
            }
            Response::Error {
                code: wire::client::ErrorCode::Conflict,
                version: Some(cur),
                ..
            } => {
                version.insert(k2.clone(), cur);
                acked.insert(k2.clone(), seq);
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    *last.lock().unwrap() = acked.clone();
    done.store(true, Ordering::Relaxed);
    join_followers(followers, &acked);
    eprintln!("store SIGKILL: {refused} writes refused as unavailable, slowest answer {slowest:?}");
}

#[test]
fn bad_peers_are_closed_or_refused_while_the_others_keep_receiving() {
    // One worker: every bad peer shares it with the good subscriber.
    let c = common::store::Cluster::start_with(&[
        "--workers",
        "1",
        "--max-message",
        "65536",
        "--handshake-timeout-secs",
        "2",
    ]);
    let edge = &c.edge;
    let mut good = Client::json(edge.addr);
    good.sub(1, "calm", None);
    assert!(matches!(good.recv(), Response::Snapshot { .. }));
    let mut w = Client::json(edge.addr);
    let mut n = 0u64;
    let mut still_fine = |good: &mut Client, w: &mut Client| {
        n += 1;
        assert!(matches!(
            w.put(n, "calm", &n.to_string()),
            Response::Ok { .. }
        ));
        assert_eq!(change(&good.recv()).0, n.to_string());
    };
    use std::io::{Read, Write};
    // Garbage instead of a request: 400, closed.
    let mut g = std::net::TcpStream::connect(edge.addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    g.write_all(b"\x00\xff\xfe garbage \r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = g.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    still_fine(&mut good, &mut w);
    // A handshake that never ends: dropped at the deadline.
    let mut h = std::net::TcpStream::connect(edge.addr).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    h.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    assert!(matches!(h.read(&mut buf), Ok(0) | Err(_)));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "held {:?}",
        t.elapsed()
    );
    still_fine(&mut good, &mut w);
    // An oversized message: 1009.
    let mut big = Client::json(edge.addr);
    big.ws
        .send(true, wire::frame::Opcode::Text, &vec![b' '; 100_000]);
    assert_eq!(big.ws.recv(), common::ws::Msg::Close(Some(1009)));
    still_fine(&mut good, &mut w);
    // A frame breaking the protocol (reserved opcode): 1002.
    let mut bad = Client::json(edge.addr);
    bad.ws.s.write_all(&[0x83, 0x80, 1, 2, 3, 4]).unwrap();
    assert_eq!(bad.ws.recv(), common::ws::Msg::Close(Some(1002)));
    still_fine(&mut good, &mut w);
    // A flood of subscriptions: past the per-connection limit, refused one by one.
    let mut flood = Client::json(edge.addr);
    // The per-connection limit (1,000 by default) and some more.
    let total = 1000 + 100;
    for i in 0..total {
        flood.sub(i, &format!("flood/{i}"), None);
    }
    let mut refused = 0;
    for _ in 0..total {
        if let Response::Error { code, .. } = flood.recv() {
            assert_eq!(code, wire::client::ErrorCode::TooManySubscriptions);
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        total - 1000,
        "subscriptions past 1,000 are refused"
    );
    still_fine(&mut good, &mut w);
}

#[test]
fn the_shipped_nginx_config_proxies_websockets_to_both_edges() {
    let c = LocalCluster::start(&[]);
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
        .expect("nginx is missing: run scripts/interop-setup.sh (make test does)");
    let port = common::cluster::free_port();
    // The shipped file, pointed at the test's edges and port, inside a minimal main
    // config that runs in the foreground with everything under the test's folder.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/nginx/ringline.conf"),
    )
    .unwrap();
    let mut edges = c.edges.iter().map(|e| e.addr.to_string());
    let site: String = shipped
        .lines()
        .map(|l| match l.trim() {
            t if t.starts_with("server 10.0.0.") => {
                format!(
                    "    server {} max_fails=2 fail_timeout=5s;\n",
                    edges.next().unwrap()
                )
            }
            "listen 8080;" => format!("    listen 127.0.0.1:{port};\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let prefix = c.dir.path().join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    std::fs::write(prefix.join("ringline.conf"), site).unwrap();
    std::fs::write(
        prefix.join("nginx.conf"),
        "daemon off;\nmaster_process off;\npid nginx.pid;\nerror_log logs/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path tmp;\n  proxy_temp_path tmp;\n  include ringline.conf;\n}\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .args(["-c", "nginx.conf"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(front).is_err() {
        assert!(Instant::now() < deadline, "nginx never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Through nginx: subscribe, write from a second connection, receive; keys of
    // both stores, on connections spread over both edges.
    for k in [key_of(0, "ngx/", 0), key_of(1, "ngx/", 0)] {
        let mut a = Client::json(front);
        let mut b = Client::json(front);
        a.sub(1, &k, None);
        assert!(matches!(a.recv(), Response::Snapshot { .. }));
        assert!(matches!(b.put(2, &k, "7"), Response::Ok { .. }));
        assert_eq!(change(&a.recv()).0, "7");
    }
    let spread: Vec<u64> = c
        .edges
        .iter()
        .map(|e| e.metric("ringline_edge_handshakes_total"))
        .collect();
    assert!(
        spread.iter().all(|&n| n > 0),
        "least_conn used both edges: {spread:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The instant `edge`'s every worker link is up (each `ringline_edge_link_state` 2),
/// polled every few milliseconds until `deadline`.
fn links_up_at(edge: SocketAddr, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        let body = common::http_get(edge, "/metrics").1;
        let states: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("ringline_edge_link_state{"))
            .collect();
        if !states.is_empty() && states.iter().all(|l| l.ends_with(" 2")) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    None
}

#[test]
fn after_a_store_restarts_every_worker_of_every_edge_relinks_within_250_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = common::store::Store::start(&dir.path().join("store"), "127.0.0.1:0");
    let map = store.cluster_file(dir.path());
    let m = map.to_str().unwrap();
    let edges: Vec<common::Edge> = (0..2)
        .map(|_| common::Edge::start(&["--cluster", m, "--workers", "2"]))
        .collect();
    for e in &edges {
        e.wait_links_up();
    }
    for round in 0..2 {
        store.kill();
        for e in &edges {
            wait_metric(e, "ringline_edge_link_state", |v| v < 4);
        }
        // A one-second outage: long enough for every link to back off as far as it goes.
        std::thread::sleep(Duration::from_secs(1));
        // The first instant the store's listener accepts, seen by a prober connecting
        // every 2 ms; and the first instant each edge has every link up again.
        let addr = store.addr;
        let deadline = Instant::now() + Duration::from_secs(30);
        let prober = std::thread::spawn(move || {
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let pollers: Vec<_> = edges
            .iter()
            .map(|e| {
                let a = e.addr;
                std::thread::spawn(move || links_up_at(a, deadline))
            })
            .collect();
        store.restart();
        let accepting = prober.join().unwrap().expect("the store never accepted");
        for (i, p) in pollers.into_iter().enumerate() {
            let up = p.join().unwrap().expect("links never came back");
            let took = up.saturating_duration_since(accepting);
            eprintln!("round {round}: edge {i} linked {took:?} after the store accepted");
            assert!(
                took <= Duration::from_millis(250),
                "edge {i}: every worker linked {took:?} after the store's listener accepted"
            );
        }
        // From then on writes to its keys succeed, from connections on every worker.
        for (i, e) in edges.iter().enumerate() {
            for c in 0..8 {
                let mut w = Client::json(e.addr);
                let r = w.call(&Request::Put {
                    id: 1,
                    key: format!("relink/{round}/{i}/{c}").into(),
                    value: Cow::Borrowed(b"v"),
                    if_version: None,
                    msg_id: None,
                });
                assert!(
                    matches!(
                        r,
                        Response::Ok {
                            version: Some(_),
                            ..
                        }
                    ),
                    "edge {i}, connection {c}: {r:?}"
                );
            }
        }
    }
}

/// `tuning/haproxy/haproxy-tls.cfg` as shipped: HAProxy terminates TLS (a test CA's
/// certificate) and sends each connection's client address to the edges in a PROXY v2
/// header. Clients subscribe and write through it; and each edge, allowing one
/// connection per address, admits three clients from three addresses (it sees them,
/// not HAProxy) and refuses a third connection from one of them with 429.
#[test]
fn through_haproxy_terminating_tls_clients_work_and_are_limited_by_their_own_address() {
    use common::tls::{TestCa, connect_from};
    use common::ws::{Msg, Ws};
    use wire::frame::Opcode;
    let ca = TestCa::new();
    let pem = ca.leaf(&["localhost"], "front").combined();
    let c = LocalCluster::start_tls(
        &[],
        &["--max-connections-per-ip", "1", "--limit-loopback", "true"],
        &pem,
    );
    let open = |last: u8| {
        let from = std::net::IpAddr::from([127, 0, 0, last]);
        let s = connect_from(&ca, from, c.front, "localhost").unwrap();
        Ws::upgrade(s, "/ws", Some("ringline.v1.json"), "")
    };
    let text = |ws: &mut Ws<common::tls::TlsStream>| match ws.recv() {
        Msg::Text(t) => t,
        other => panic!("{other:?}"),
    };
    // Three addresses: three connections, whatever edge each lands on (without the
    // PROXY header all three would come from HAProxy's one address, and with one
    // connection per address per edge only two could be admitted).
    let mut clients: Vec<_> = [3, 4, 5].map(|i| open(i).unwrap()).into_iter().collect();
    let key = key_of(0, "tls/", 0);
    clients[0].send(
        true,
        Opcode::Text,
        format!(r#"{{"op":"sub","id":1,"key":"{key}"}}"#).as_bytes(),
    );
    assert!(text(&mut clients[0]).contains("snapshot"));
    clients[1].send(
        true,
        Opcode::Text,
        format!(r#"{{"op":"put","id":2,"key":"{key}","value":"through TLS"}}"#).as_bytes(),
    );
    assert!(text(&mut clients[1]).contains(r#""op":"ok""#));
    let change = text(&mut clients[0]);
    assert!(change.contains("through TLS"), "{change}");
    // 127.0.0.3 again: its second connection lands on the edge it is not on yet (or is
    // refused), its third finds it on both.
    // (Each admitted one is held open: closing it would free its place.)
    let extra: Vec<_> = (0..2).map(|_| open(3)).collect();
    let refused: Vec<&String> = extra.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !refused.is_empty(),
        "a third connection from one address was admitted"
    );
    assert!(
        refused.iter().all(|h| h.starts_with("HTTP/1.1 429")),
        "{refused:?}"
    );
    let over: u64 = c
        .edges
        .iter()
        .map(|e| e.metric("ringline_edge_rejected_rate_total"))
        .sum();
    assert_eq!(over, refused.len() as u64);
}

/// A write with `msg_id`, as a client retrying after an unknown outcome sends it.
fn once<'a>(id: u64, key: &'a str, value: &'a str, msg_id: &'a str) -> Request<'a> {
    Request::Put {
        id,
        key: key.into(),
        value: Cow::Borrowed(value.as_bytes()),
        if_version: None,
        msg_id: Some(msg_id.into()),
    }
}

/// `(version, token)` of a write's answer.
fn written(r: &Response<'_>) -> (u64, String) {
    match r {
        Response::Ok {
            version: Some(v),
            token: Some(t),
            ..
        } => (*v, t.to_string()),
        other => panic!("expected a write's ok, got {other:?}"),
    }
}

/// Call `req` through `c` until the key's store answers (it may be restarting).
fn call_until_served(c: &mut Client, req: &Request<'_>) -> Response<'static> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.call(req) {
            Response::Error {
                code: wire::client::ErrorCode::Unavailable,
                ..
            } if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            r => return r,
        }
    }
}

#[test]
fn a_write_repeated_with_its_msg_id_lands_once_through_either_edge_and_across_a_restart() {
    let mut c = LocalCluster::start(&[]);
    for s in 0..2 {
        let key = key_of(s, "once/", 0);
        let mut watcher = Client::json(c.edges[0].addr);
        watcher.sub(1, &key, None);
        assert!(matches!(watcher.recv(), Response::Snapshot { .. }));
        let mut a = Client::json(c.edges[0].addr);
        let mut b = Client::json(c.edges[1].addr);
        let first = written(&a.call(&once(1, &key, "1", "retry-1")));
        // Again through the same edge, then through the other: the first outcome.
        assert_eq!(written(&a.call(&once(2, &key, "1", "retry-1"))), first);
        assert_eq!(written(&b.call(&once(3, &key, "1", "retry-1"))), first);
        // The same id asking for another value is refused, not answered as done.
        let r = b.call(&once(4, &key, "2", "retry-1"));
        assert!(
            matches!(&r, Response::Error { code: wire::client::ErrorCode::BadRequest, message, .. } if message.contains("msg_id")),
            "{r:?}"
        );
        assert_eq!(c.store_metric(s, "ringline_store_dedup_repeats_total"), 3);
        // Another id writes.
        let second = written(&b.call(&once(5, &key, "2", "retry-2")));
        assert!(second.0 > first.0);
        // The key's store is killed and restarted within the window: still remembered.
        c.stores[s].kill();
        c.stores[s].restart();
        let again = written(&call_until_served(&mut b, &once(6, &key, "1", "retry-1")));
        assert_eq!(again, first, "across the restart");
        let through_a = call_until_served(&mut a, &once(7, &key, "2", "retry-2"));
        assert_eq!(written(&through_a), second);
        // The watcher saw each write once: "1", then "2", then the end marker.
        let end = written(&a.call(&once(8, &key, "end", "retry-3")));
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("end") {
            let r = watcher.recv();
            if let Response::Change { .. } = r {
                seen.push(change(&r).0);
            }
        }
        assert_eq!(seen, ["1", "2", "end"], "store {s}");
        assert!(end.0 > second.0);
    }
}

/// A durable subscription to `key` named `name`, resuming from `from` if given.
fn durable_sub<'a>(id: u64, key: &'a str, name: &'a str, from: Option<&'a str>) -> Request<'a> {
    Request::Sub {
        id,
        target: wire::client::Target::Key(key.into()),
        from: from.map(Cow::Borrowed),
        mode: wire::client::SubMode::Stream,
        durable: Some(name.into()),
    }
}

/// The next `n` put changes of `c`: (value, token).
fn next_changes(c: &mut Client, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let (value, _, token) = change(&c.recv());
            (value, token)
        })
        .collect()
}

#[test]
fn a_durable_subscriber_that_lost_its_token_resumes_after_its_ack_on_the_other_edge() {
    let c = LocalCluster::start(&[]);
    for s in 0..2 {
        let key = key_of(s, "durable/", 0);
        let mut w = Client::json(c.edges[0].addr);
        // Before the subscription: part of its snapshot, not of its changes.
        assert!(matches!(w.put(0, &key, "0"), Response::Ok { .. }));
        let mut a = Client::json(c.edges[0].addr);
        a.send(&durable_sub(1, &key, "inbox-reader", None));
        assert!(matches!(a.recv(), Response::Snapshot { .. }));
        for v in 1..=5 {
            assert!(matches!(
                w.put(v, &key, &v.to_string()),
                Response::Ok { .. }
            ));
        }
        let got = next_changes(&mut a, 5);
        // It processed up to "3" and says so; an older ack afterwards changes nothing.
        let ack = |c: &mut Client, token: &str| {
            c.call(&Request::Ack {
                id: 1,
                token: token.into(),
            })
        };
        assert!(matches!(ack(&mut a, &got[2].1), Response::Ok { id: 1, .. }));
        assert!(matches!(ack(&mut a, &got[0].1), Response::Ok { id: 1, .. }));
        // An ack for a subscription that is not durable is refused.
        let r = a.call(&Request::Ack {
            id: 9,
            token: got[2].1.as_str().into(),
        });
        assert!(
            matches!(
                r,
                Response::Error {
                    code: wire::client::ErrorCode::BadRequest,
                    ..
                }
            ),
            "{r:?}"
        );
        // Its device is lost, token and all; more changes come meanwhile.
        drop(a);
        for v in 6..=7 {
            assert!(matches!(
                w.put(v, &key, &v.to_string()),
                Response::Ok { .. }
            ));
        }
        // A new device, through the other edge, with the same name and no token:
        // exactly the changes after the ack, then live ones.
        let mut b = Client::json(c.edges[1].addr);
        b.send(&durable_sub(1, &key, "inbox-reader", None));
        assert!(matches!(b.recv(), Response::Resumed { .. }));
        let values: Vec<String> = next_changes(&mut b, 4)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(values, ["4", "5", "6", "7"], "store {s}");
        assert!(matches!(w.put(8, &key, "8"), Response::Ok { .. }));
        assert_eq!(next_changes(&mut b, 1)[0].0, "8");
        // Another name starts from a snapshot; the record itself is not for clients.
        let mut d = Client::json(c.edges[1].addr);
        d.send(&durable_sub(1, &key, "another", None));
        assert!(matches!(d.recv(), Response::Snapshot { .. }));
        let r = d.call(&Request::Get {
            id: 2,
            key: "@durable/0:".into(),
        });
        assert!(
            matches!(
                r,
                Response::Error {
                    code: wire::client::ErrorCode::Forbidden,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}

/// The HS256 secret of the sending test (test-only).
const SEND_SECRET: &str = "a test secret for sending, thirty-two bytes or more";

/// An HS256 token for `sub` granting `publish` patterns (and reading everything).
fn sender_token(sub: &str, publish: &[&str]) -> String {
    let rl = serde_json::json!({ "read": ["*"], "write": [], "publish": publish });
    common::hs256_token(sub, rl, 600, SEND_SECRET)
}

/// `(id, key, value)` of the next change `c` receives.
fn next_publish(c: &mut Client) -> (u64, String, String) {
    match c.recv() {
        Response::Change {
            id,
            key,
            op: ChangeOp::Publish { value },
            ..
        } => (
            id,
            key.to_string(),
            String::from_utf8(value.to_vec()).unwrap(),
        ),
        other => panic!("expected a publish, got {other:?}"),
    }
}

fn publish<'a>(id: u64, key: &'a str, value: &'a str) -> Request<'a> {
    Request::Pub {
        id,
        key: key.into(),
        value: Cow::Borrowed(value.as_bytes()),
        msg_id: None,
        echo: true,
    }
}

#[test]
fn a_users_inbox_reaches_every_connection_of_theirs_and_a_broadcast_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SEND_SECRET).unwrap();
    let s = secret.to_str().unwrap();
    let c = LocalCluster::start_with(&[], &["--auth", "required", "--auth-secret-file", s]);
    let (alice, bob) = (sender_token("alice", &[]), sender_token("bob", &[]));
    let service = sender_token("notifier", &["@user/*", "@all"]);
    let on = |edge: usize, token: &str| Client::json_with_token(c.edges[edge].addr, token).unwrap();
    // Alice on three devices over both edges; Bob on each edge; and enough other
    // connections that every worker of both edges holds some.
    let mut alices = vec![on(0, &alice), on(0, &alice), on(1, &alice)];
    let mut bobs = vec![on(0, &bob), on(1, &bob)];
    let mut others: Vec<Client> = (0..8).map(|i| on(i % 2, &service)).collect();
    let mut sender = on(1, &service);
    // Bob may not write to Alice's inbox; the service may.
    let r = bobs[0].call(&publish(1, "@user/alice", "from bob"));
    assert!(
        matches!(
            r,
            Response::Error {
                code: wire::client::ErrorCode::Forbidden,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(matches!(
        sender.call(&publish(2, "@user/alice", "hi alice")),
        Response::Ok { .. }
    ));
    let mut inbox_token = String::new();
    for a in &mut alices {
        let r = a.recv();
        let Response::Change {
            id: 0,
            key,
            op: ChangeOp::Publish { value },
            token,
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            (key.as_ref(), &value[..]),
            ("@user/alice", &b"hi alice"[..])
        );
        inbox_token = token.to_string();
    }
    // Exactly once across a reconnect: a device that was away subscribes to its inbox
    // with its last token and gets what it missed, once, under its own id.
    drop(alices.pop());
    let away = publish(4, "@user/alice", "while away");
    assert!(matches!(sender.call(&away), Response::Ok { .. }));
    for a in &mut alices {
        assert_eq!(next_publish(a).2, "while away");
    }
    let mut back = on(1, &alice);
    back.send(&Request::Sub {
        id: 5,
        target: wire::client::Target::Key("@user/alice".into()),
        from: Some(inbox_token.as_str().into()),
        mode: wire::client::SubMode::Stream,
        durable: None,
    });
    assert!(matches!(back.recv(), Response::Resumed { id: 5, .. }));
    let missed = next_publish(&mut back);
    assert_eq!(missed, (5, "@user/alice".into(), "while away".into()));
    alices.push(back);
    // A broadcast reaches every connection of every worker of both edges (the sender's
    // own too), and is the next thing Bob sees: he had nothing of Alice's.
    assert!(matches!(
        sender.call(&publish(3, "@all", "to everyone")),
        Response::Ok { .. }
    ));
    let everyone = alices
        .iter_mut()
        .chain(&mut bobs)
        .chain(&mut others)
        .chain(std::iter::once(&mut sender));
    let mut reached = 0;
    for conn in everyone {
        assert_eq!(next_publish(conn), (0, "@all".into(), "to everyone".into()));
        reached += 1;
    }
    assert_eq!(reached, 14);
    // The device that subscribed by hand gets its inbox there only (not also as 0).
    let last = publish(6, "@user/alice", "last");
    assert!(matches!(sender.call(&last), Response::Ok { .. }));
    let ids: Vec<u64> = alices.iter_mut().map(|a| next_publish(a).0).collect();
    assert_eq!(ids, [0, 0, 5]);
    for e in &c.edges {
        let body = e.http("/metrics").1;
        let per_worker: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("ringline_edge_connections{"))
            .collect();
        assert!(
            per_worker.len() >= 2 && per_worker.iter().all(|l| !l.ends_with(" 0")),
            "every worker holds connections: {per_worker:?}"
        );
    }
}

/// A measurement, not a bar: publish → inbox delivery on the other edge, one message at
/// a time (the figure goes to BENCHMARKS.md; nothing here is timed to pass or fail).
#[test]
fn inbox_delivery_latency_to_a_connection_on_the_other_edge() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SEND_SECRET).unwrap();
    let s = secret.to_str().unwrap();
    let c = LocalCluster::start_with(&[], &["--auth", "required", "--auth-secret-file", s]);
    let on = |edge: usize, token: &str| Client::json_with_token(c.edges[edge].addr, token).unwrap();
    let mut alice = on(0, &sender_token("alice", &[]));
    let mut sender = on(1, &sender_token("notifier", &["@user/*"]));
    let mut took: Vec<Duration> = Vec::new();
    for n in 0..500u64 {
        let t = Instant::now();
        sender.send(&publish(n, "@user/alice", "ping"));
        assert_eq!(next_publish(&mut alice).2, "ping");
        took.push(t.elapsed());
        assert!(matches!(sender.recv(), Response::Ok { .. }));
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    eprintln!(
        "inbox, publish on edge 2 -> delivery on edge 1, 500 one at a time: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        took[took.len() - 1]
    );
}
