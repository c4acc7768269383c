//! The hub against a model store, under random interleavings: subscriptions (keys,
//! tagged and untagged prefixes, fresh or resumed from an earlier token), unsubscribes,
//! writes, partial delivery of the stores' frames, and links dropped and re-established.
//! Whatever happens, every live subscription must receive, per partition, exactly the
//! log entries matching its target after its starting position: in order, none twice,
//! none missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use wire::client::{Request, Response, Target, decode_token};
use wire::cluster::ClusterMap;
use wire::link::{
    ChangeKind, ChangeRef, EntryRef, LinkEncoder, LinkLimits, LinkMessage, Position, decode_frame,
};
use wire::partition::{partition_of, prefix_partition};

use super::{ConnRef, Hub, Out};

const PARTITIONS: u32 = 8;
const EPOCH: u64 = 1;
const KEYS: [&str; 6] = ["a", "b", "{t}x", "{t}y", "p/1", "p/2"];
/// (target, prefix)
const TARGETS: [(&str, bool); 5] = [
    ("a", false),
    ("{t}x", false),
    ("p/", true),
    ("{t}", true),
    ("b", false),
];

fn map() -> ClusterMap {
    ClusterMap::from_toml(
        r#"
version = 1
partitions = 8
[[store]]
id = "s1"
addr = "127.0.0.1:1"
partitions = ["0-3"]
[[store]]
id = "s2"
addr = "127.0.0.1:2"
partitions = ["4-7"]
"#,
    )
    .unwrap()
}

fn matches(key: &str, target: &str, prefix: bool) -> bool {
    if prefix {
        key.starts_with(target)
    } else {
        key == target
    }
}

/// A watch as the model store keeps it: (target, prefix, bound partition).
type ModelWatch = (String, bool, Option<u32>);

/// Every store of the map in one model: the log per partition, and each link's
/// watches and frames in flight to the hub.
struct Model {
    map: ClusterMap,
    /// Per partition: (key, seq) of each write, seq = index + 1.
    log: Vec<Vec<String>>,
    /// Per store: watch id → (target, prefix, bound partition).
    watches: Vec<HashMap<u64, ModelWatch>>,
    /// Per store: frames sent to the hub, not yet delivered.
    inbox: Vec<VecDeque<Vec<u8>>>,
    /// Writes committed to the log but not yet dispatched to watches (a batch landing
    /// while a watch starts: the real store's snapshots and resumes read them, and its
    /// dispatch then skips the watches that already read past them).
    held: Vec<(String, u32, u64)>,
    /// (watch, partition) → the seq its snapshot or resume read up to.
    read: HashMap<(u64, u32), u64>,
    enc: LinkEncoder,
}

impl Model {
    fn new() -> Self {
        Self {
            map: map(),
            log: vec![Vec::new(); PARTITIONS as usize],
            watches: vec![HashMap::new(); 2],
            inbox: vec![VecDeque::new(); 2],
            held: Vec::new(),
            read: HashMap::new(),
            enc: LinkEncoder::new(&LinkLimits::default()),
        }
    }

    fn last(&self, p: u32) -> u64 {
        self.log[p as usize].len() as u64
    }

    fn frame(&mut self, s: usize, f: impl FnOnce(&mut LinkEncoder, &mut Vec<u8>)) {
        let mut out = Vec::new();
        f(&mut self.enc, &mut out);
        self.inbox[s].push_back(out);
    }

    fn snapshot(&mut self, s: usize, wid: u64, p: u32, target: &str, prefix: bool) {
        let keys: BTreeMap<String, u64> = self.log[p as usize]
            .iter()
            .enumerate()
            .filter(|(_, k)| matches(k, target, prefix))
            .map(|(i, k)| (k.clone(), i as u64 + 1))
            .collect();
        let at = Position::new(p, EPOCH, self.last(p));
        self.read.insert((wid, p), self.last(p));
        let entries: Vec<EntryRef<'_>> = keys
            .iter()
            .map(|(k, v)| EntryRef {
                key: k,
                value: b"1",
                version: *v,
            })
            .collect();
        let mut out = Vec::new();
        self.enc
            .snapshot(&mut out, wid, wid, p, &entries, at, false)
            .unwrap();
        self.inbox[s].push_back(out);
    }

    /// What the hub sent store `s`.
    fn receive(&mut self, s: usize, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            let (frame, used) = decode_frame(&bytes[at..], &LinkLimits::default())
                .unwrap()
                .unwrap();
            at += used;
            match frame.message {
                LinkMessage::Watch(w) => {
                    let (wid, target, prefix) = (w.watch_id(), w.key().to_owned(), w.prefix());
                    let home = if prefix {
                        prefix_partition(target.as_bytes(), PARTITIONS)
                    } else {
                        Some(partition_of(target.as_bytes(), PARTITIONS))
                    };
                    match w.from().copied() {
                        Some(from) => {
                            let p = from.partition();
                            assert_eq!(self.map.owner_index(p), Some(s));
                            if from.epoch() == EPOCH && from.seq() <= self.last(p) {
                                self.frame(s, |e, o| {
                                    e.resumed(o, wid, wid, p).unwrap();
                                });
                                self.read.insert((wid, p), self.last(p));
                                let ids = [wid];
                                let log = self.log[p as usize].clone();
                                for (i, k) in log.iter().enumerate().skip(from.seq() as usize) {
                                    if matches(k, &target, prefix) {
                                        let c = ChangeRef {
                                            watch_ids: &ids,
                                            position: Position::new(p, EPOCH, i as u64 + 1),
                                            key: k,
                                            kind: ChangeKind::Put,
                                            value: Some(b"1"),
                                            version: i as u64 + 1,
                                        };
                                        self.frame(s, |e, o| e.changes(o, wid, &[c]).unwrap());
                                    }
                                }
                            } else {
                                self.frame(s, |e, o| {
                                    e.reset(o, wid, wid, p, EPOCH, "gone").unwrap();
                                });
                                self.snapshot(s, wid, p, &target, prefix);
                            }
                            self.watches[s].insert(wid, (target, prefix, Some(p)));
                        }
                        None => {
                            let parts: Vec<u32> = match home {
                                Some(p) => vec![p],
                                None => (0..PARTITIONS)
                                    .filter(|&p| self.map.owner_index(p) == Some(s))
                                    .collect(),
                            };
                            for &p in &parts {
                                self.snapshot(s, wid, p, &target, prefix);
                            }
                            self.watches[s].insert(wid, (target, prefix, home));
                        }
                    }
                }
                LinkMessage::Unwatch(u) => {
                    self.watches[s].remove(&u.watch_id());
                }
                LinkMessage::Ping(p) => {
                    let nonce = p.nonce();
                    self.frame(s, |e, o| e.pong(o, frame.request_id, nonce).unwrap());
                }
                other => panic!("unexpected {:?}", other.kind()),
            }
        }
    }

    /// Commit a write; dispatch it now unless `hold` (or earlier writes are held).
    fn write(&mut self, key: &str, hold: bool) {
        let p = partition_of(key.as_bytes(), PARTITIONS);
        self.log[p as usize].push(key.to_owned());
        let seq = self.last(p);
        if hold || !self.held.is_empty() {
            self.held.push((key.to_owned(), p, seq));
        } else {
            self.dispatch(key, p, seq);
        }
    }

    /// Dispatch the held writes, in order.
    fn release(&mut self) {
        for (key, p, seq) in std::mem::take(&mut self.held) {
            self.dispatch(&key, p, seq);
        }
    }

    fn dispatch(&mut self, key: &str, p: u32, seq: u64) {
        let s = self.map.owner_index(p).unwrap();
        let read = &self.read;
        let mut ids: Vec<u64> = self.watches[s]
            .iter()
            .filter(|(_, (t, pre, bound))| matches(key, t, *pre) && bound.is_none_or(|b| b == p))
            .map(|(&w, _)| w)
            .filter(|w| read.get(&(*w, p)).is_none_or(|&r| r < seq))
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return;
        }
        let c = ChangeRef {
            watch_ids: &ids,
            position: Position::new(p, EPOCH, seq),
            key,
            kind: ChangeKind::Put,
            value: Some(b"1"),
            version: seq,
        };
        let mut out = Vec::new();
        self.enc.changes(&mut out, 0, &[c]).unwrap();
        self.inbox[s].push_back(out);
    }
}

/// What one client subscription has seen.
#[derive(Debug, Default)]
struct View {
    target: (String, bool),
    /// Start position per partition (from the completed snapshot or the resume).
    start: Option<HashMap<u32, u64>>,
    /// (partition, seq) of each change received since the start.
    got: Vec<(u32, u64)>,
    last_token: Option<String>,
    gone: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Sub {
        conn: u32,
        target: usize,
        resume: bool,
    },
    Unsub {
        conn: u32,
        target: usize,
    },
    Write(usize),
    /// A write whose dispatch lands later (with `Release`).
    WriteHeld(usize),
    Release,
    Pump {
        store: usize,
        n: usize,
    },
    Bounce(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4u32, 0..TARGETS.len(), any::<bool>())
            .prop_map(|(conn, target, resume)| Op::Sub { conn, target, resume }),
        1 => (0..4u32, 0..TARGETS.len()).prop_map(|(conn, target)| Op::Unsub { conn, target }),
        3 => (0..KEYS.len()).prop_map(Op::Write),
        1 => (0..KEYS.len()).prop_map(Op::WriteHeld),
        1 => Just(Op::Release),
        3 => (0..2usize, 1..6usize).prop_map(|(store, n)| Op::Pump { store, n }),
        1 => (0..2usize).prop_map(Op::Bounce),
    ]
}

struct Sim {
    hub: Hub,
    model: Model,
    views: HashMap<(ConnRef, u64), View>,
    /// Last token seen per (conn, target), for resuming.
    tokens: HashMap<(u32, usize), String>,
    next_id: u64,
}

impl Sim {
    fn new() -> Self {
        let mut hub = Hub::new(Arc::new(map()));
        hub.link_up(0);
        hub.link_up(1);
        Self {
            hub,
            model: Model::new(),
            views: HashMap::new(),
            tokens: HashMap::new(),
            next_id: 1,
        }
    }

    /// Move the hub's frames to the model and its client messages to the views.
    fn sync(&mut self) {
        for s in 0..2 {
            let out = std::mem::take(&mut self.hub.link_out[s]);
            if self.hub.is_up(s) {
                self.model.receive(s, &out);
            }
        }
        for o in std::mem::take(&mut self.hub.out) {
            let (conn, id, r) = match &o {
                Out::Msg(c, r) => (*c, r.id().unwrap_or(0), r.clone()),
                Out::Change(c, id, d) => (*c, *id, d.response(*id).into_owned()),
            };
            let Some(v) = self.views.get_mut(&(conn, id)) else {
                continue;
            };
            assert!(!v.gone, "message after the end of {conn:?}/{id}: {r:?}");
            match r {
                Response::Snapshot { token, more, .. } => {
                    if !more {
                        let t = token.expect("the last snapshot part has a token");
                        // A complete snapshot: a real position for every partition.
                        let all = decode_token(&t).unwrap();
                        assert!(
                            all.iter().all(|p| p.epoch == EPOCH),
                            "placeholder in {all:?}"
                        );
                        let (tt, pre) = &v.target;
                        let parts = if *pre {
                            prefix_partition(tt.as_bytes(), PARTITIONS)
                                .map_or(PARTITIONS as usize, |_| 1)
                        } else {
                            1
                        };
                        assert_eq!(all.len(), parts, "{tt}: snapshot token {all:?}");
                        v.start = Some(positions(&t));
                        v.got.clear();
                        v.last_token = Some(t.into_owned());
                    }
                }
                Response::Resumed { token, .. } => {
                    v.start = Some(positions(&token));
                    v.last_token = Some(token.into_owned());
                }
                Response::Reset { .. } => {
                    v.start = None;
                    v.got.clear();
                }
                Response::Change { key, token, .. } => {
                    let (t, pre) = &v.target;
                    assert!(matches(&key, t, *pre), "{key} delivered to {t}");
                    let p = partition_of(key.as_bytes(), PARTITIONS);
                    let seq = positions(&token)[&p];
                    assert!(
                        v.start.is_some(),
                        "{t}: a change before its snapshot or resume"
                    );
                    v.got.push((p, seq));
                    v.last_token = Some(token.into_owned());
                }
                Response::Error { .. } => v.gone = true,
                Response::Ok { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Sub {
                conn,
                target,
                resume,
            } => {
                let c = (conn, 1);
                let id = target as u64;
                if self.views.get(&(c, id)).is_some_and(|v| !v.gone) {
                    return;
                }
                let (t, prefix) = TARGETS[target];
                let from = if resume {
                    self.tokens.get(&(conn, target)).cloned()
                } else {
                    None
                };
                self.views.insert(
                    (c, id),
                    View {
                        target: (t.to_owned(), prefix),
                        ..View::default()
                    },
                );
                let target = if prefix {
                    Target::Prefix(t.into())
                } else {
                    Target::Key(t.into())
                };
                self.hub.request(
                    c,
                    Request::Sub {
                        id,
                        target,
                        from: from.map(Into::into),
                    },
                );
            }
            Op::Unsub { conn, target } => {
                let key = ((conn, 1), target as u64);
                if let Some(v) = self.views.remove(&key)
                    && let Some(t) = v.last_token
                {
                    self.tokens.insert((conn, target), t);
                }
                self.hub.request(key.0, Request::Unsub { id: key.1 });
                // Its answer (ok or error) has no view to go to.
            }
            Op::Write(k) => self.model.write(KEYS[k], false),
            Op::WriteHeld(k) => self.model.write(KEYS[k], true),
            Op::Release => self.model.release(),
            Op::Pump { store, n } => {
                for _ in 0..n {
                    let Some(f) = self.model.inbox[store].pop_front() else {
                        break;
                    };
                    let (frame, _) = decode_frame(&f, &LinkLimits::default()).unwrap().unwrap();
                    match frame.message {
                        LinkMessage::Pong(p) => self.hub.on_pong(p.nonce()),
                        _ => self.hub.on_frame(&frame),
                    }
                    self.sync();
                }
            }
            Op::Bounce(s) => {
                self.hub.link_down(s);
                self.model.inbox[s].clear();
                self.model.watches[s].clear();
                self.sync();
                self.hub.link_up(s);
            }
        }
        self.next_id += 1;
        self.sync();
    }

    /// Deliver everything in flight.
    fn settle(&mut self) {
        self.model.release();
        for _ in 0..1000 {
            if self.model.inbox.iter().all(VecDeque::is_empty) {
                return;
            }
            for s in 0..2 {
                self.apply(&Op::Pump { store: s, n: 100 });
            }
        }
        panic!("never settled");
    }

    fn check(&self) {
        // Settled: every watch the hub keeps (its groups' own and joins) is one the
        // stores hold, and no retired join is left waiting.
        assert_eq!(
            self.hub.watches(),
            self.model.watches.iter().map(HashMap::len).sum::<usize>(),
            "the hub's watches and the stores' differ"
        );
        for ((conn, id), v) in &self.views {
            if v.gone {
                continue;
            }
            let start = v
                .start
                .as_ref()
                .unwrap_or_else(|| panic!("{conn:?}/{id} never started"));
            let (t, prefix) = &v.target;
            let mut expected: Vec<(u32, u64)> = Vec::new();
            for (&p, &from) in start {
                for (i, k) in self.model.log[p as usize].iter().enumerate() {
                    let seq = i as u64 + 1;
                    if seq > from && matches(k, t, *prefix) {
                        expected.push((p, seq));
                    }
                }
            }
            let mut got = v.got.clone();
            // Order matters within a partition only.
            for p in 0..PARTITIONS {
                let seqs: Vec<u64> = got.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "{t}: partition {p} out of order or twice: {seqs:?}"
                );
            }
            got.sort_unstable();
            expected.sort_unstable();
            assert_eq!(got, expected, "{conn:?}/{id} on {t}");
        }
    }
}

fn positions(token: &str) -> HashMap<u32, u64> {
    decode_token(token)
        .unwrap()
        .into_iter()
        .map(|p| (p.partition, p.seq))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_subscription_gets_each_matching_change_once_in_order(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.apply(op);
        }
        sim.settle();
        sim.check();
        // Whatever is left subscribed: one more write to every key reaches it.
        for k in 0..KEYS.len() {
            sim.apply(&Op::Write(k));
        }
        sim.settle();
        sim.check();
    }
}

#[test]
fn one_watch_serves_many_subscribers() {
    let mut sim = Sim::new();
    for conn in 0..4 {
        sim.apply(&Op::Sub {
            conn,
            target: 0,
            resume: false,
        });
        sim.settle();
    }
    assert_eq!(sim.hub.subscriptions(), 4);
    // Joins are retired once answered: one group watch remains.
    assert_eq!(sim.hub.watches(), 1);
    sim.apply(&Op::Write(0));
    sim.settle();
    sim.check();
    assert!(sim.views.values().all(|v| v.got.len() == 1));
}

#[test]
fn a_connection_cannot_pile_up_requests_without_bound() {
    let mut sim = Sim::new();
    let conn = (9, 1);
    let n = super::MAX_INFLIGHT_PER_CONN as u64 + 6;
    for id in 0..n {
        sim.hub.request(
            conn,
            Request::Get {
                id,
                key: "a".into(),
            },
        );
    }
    let refused = std::mem::take(&mut sim.hub.out)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                Out::Msg(
                    _,
                    Response::Error {
                        code: wire::client::ErrorCode::Overloaded,
                        ..
                    }
                )
            )
        })
        .count();
    assert_eq!(refused, 6);
    // Another connection is not affected.
    sim.hub.request(
        (10, 1),
        Request::Get {
            id: 1,
            key: "a".into(),
        },
    );
    assert!(sim.hub.out.is_empty());
    // A dropped link answers what waited, and the connection may ask again.
    sim.hub.link_down(0);
    sim.hub.link_down(1);
    let answered = std::mem::take(&mut sim.hub.out).len();
    assert_eq!(answered, super::MAX_INFLIGHT_PER_CONN as usize + 1);
    sim.hub.link_up(0);
    sim.hub.link_up(1);
    sim.hub.request(
        conn,
        Request::Get {
            id: 0,
            key: "a".into(),
        },
    );
    assert!(sim.hub.out.is_empty());
}

#[test]
fn a_large_group_keeps_finding_its_members_as_they_come_and_go() {
    // Past `INDEX_FROM` members a group looks members up by index: every swap-remove
    // must keep it right, or changes go to the wrong subscription or none.
    let mut sim = Sim::new();
    for conn in 0..120 {
        sim.apply(&Op::Sub {
            conn,
            target: conn as usize % 2,
            resume: false,
        });
        if conn % 7 == 0 {
            sim.apply(&Op::Write(conn as usize % 3));
        }
    }
    sim.settle();
    sim.check();
    for conn in (0..120).filter(|c| c % 3 != 1) {
        sim.apply(&Op::Unsub {
            conn,
            target: conn as usize % 2,
        });
        if conn % 5 == 0 {
            sim.apply(&Op::Write(0));
            sim.apply(&Op::Pump { store: 1, n: 3 });
        }
    }
    for conn in (0..120).filter(|c| c % 6 == 0) {
        sim.apply(&Op::Sub {
            conn,
            target: conn as usize % 2,
            resume: true,
        });
    }
    sim.apply(&Op::Write(0));
    sim.apply(&Op::Write(2));
    sim.settle();
    sim.check();
    let live = sim.views.values().filter(|v| !v.gone).count();
    assert_eq!(sim.hub.subscriptions(), live);
    assert!(live > 40, "{live}");
}
