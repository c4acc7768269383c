//! The hub against a model store ([`super::tests_model`]), under random interleavings:
//! subscriptions (keys, tagged and untagged prefixes, fresh or resumed from an earlier
//! token with the state the client kept, alone or all at once so that resumes share their
//! joins), unsubscribes, connections closing, puts,
//! deletes and publishes (some landing while a watch starts), snapshots paged with
//! `more` while writes land, partial delivery of the stores' frames, links dropped and
//! kept down across operations, and logs trimmed or recreated (a new epoch) while a
//! link is down, so that groups come back through `reset` and a fresh snapshot.
//!
//! Whatever happens, every live subscription must:
//! - start from a snapshot equal to the model's values at the snapshot's token, or from
//!   `resumed` with exactly the token the client sent;
//! - then receive, per partition, exactly the log entries matching its target after its
//!   start (in order, none twice, none missing), each equal to the model's entry;
//! - so that its replica (snapshot plus changes) ends equal to the model's values;
//! - and fail only when it must: a `sub` while a store of its target is down (which
//!   must fail), or a join still pending on a link that dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use wire::client::{ChangeOp, Entry, ErrorCode, Request, Response, Target, decode_token};
use wire::link::{LinkLimits, LinkMessage, decode_frame};
use wire::partition::{partition_of, prefix_partition};

use super::tests_model::{Kind, Model, PARTITIONS, map, matches};
use super::{ConnRef, Hub, Out, SubRef};

const KEYS: [&str; 6] = ["a", "b", "{t}x", "{t}y", "p/1", "p/2"];
/// (target, prefix)
const TARGETS: [(&str, bool); 5] = [
    ("a", false),
    ("{t}x", false),
    ("p/", true),
    ("{t}", true),
    ("b", false),
];
const CONNS: u32 = 3;

/// A client's copy of its target's values: key → (value, version).
type Replica = BTreeMap<String, (Vec<u8>, u64)>;

/// A position as a client reads it from a token: partition → (epoch, seq).
type Positions = HashMap<u32, (u64, u64)>;

/// One change as a subscription received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    partition: u32,
    seq: u64,
    key: String,
    op: ChangeOp<'static>,
}

/// What one client subscription has seen.
#[derive(Debug, Default)]
struct View {
    target: (String, bool),
    /// The positions its `sub` asked to resume from, and the replica that went with them.
    sent: Option<(Positions, Replica)>,
    /// Start seq per partition (from the completed snapshot or the resume).
    start: Option<HashMap<u32, u64>>,
    /// Each change received since the start.
    got: Vec<Got>,
    /// Snapshot entries received since the last complete snapshot.
    snap: Replica,
    /// The client's copy of the values, and the token it is consistent with.
    replica: Replica,
    last_token: Option<String>,
    /// Resume joins its `sub` opened: (watch id, store).
    joins: Vec<(u64, usize)>,
    /// An `unavailable` error is allowed (a join was pending on a link that dropped).
    may_fail: bool,
    /// An `unavailable` error must come at once (a store of its target was down).
    must_fail: bool,
    gone: bool,
}

impl View {
    fn parts(&self) -> Vec<u32> {
        let (t, prefix) = &self.target;
        target_parts(t, *prefix)
    }
}

fn target_parts(t: &str, prefix: bool) -> Vec<u32> {
    if prefix {
        match prefix_partition(t.as_bytes(), PARTITIONS) {
            Some(p) => vec![p],
            None => (0..PARTITIONS).collect(),
        }
    } else {
        vec![partition_of(t.as_bytes(), PARTITIONS)]
    }
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
    /// The connection closes (its subscriptions end; it comes back as a new one).
    Close(u32),
    /// The connection closes and comes back at once, resuming every subscription it
    /// had with its last token (a client's reconnect).
    Reconnect(u32),
    /// Every connection but the first closes (the first keeps their groups), a put to
    /// each of the first `missed` keys lands, then each comes back resuming what it had
    /// (a balancer failing over): those at one position share their joins.
    Storm {
        missed: usize,
    },
    /// A write; `hold`: its dispatch lands later (with `Release`).
    Write {
        key: usize,
        kind: Kind,
        hold: bool,
    },
    Release,
    Pump {
        store: usize,
        n: usize,
    },
    /// The link drops and comes back at once.
    Bounce(usize),
    /// The link drops and stays down until `LinkUp`.
    LinkDown(usize),
    LinkUp(usize),
    /// The store trims its logs to the last `keep` entries per partition.
    Trim {
        store: usize,
        keep: u64,
    },
    /// The store lost its logs (only while its link is down: a restarted store).
    NewEpoch {
        store: usize,
        epoch: u64,
    },
}

fn put(key: usize) -> Op {
    Op::Write {
        key,
        kind: Kind::Put,
        hold: false,
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![3 => Just(Kind::Put), 1 => Just(Kind::Delete), 1 => Just(Kind::Publish)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CONNS, 0..TARGETS.len(), any::<bool>())
            .prop_map(|(conn, target, resume)| Op::Sub { conn, target, resume }),
        2 => (0..CONNS, 0..TARGETS.len()).prop_map(|(conn, target)| Op::Unsub { conn, target }),
        1 => (0..CONNS).prop_map(Op::Close),
        1 => (0..CONNS).prop_map(Op::Reconnect),
        1 => (0..4usize).prop_map(|missed| Op::Storm { missed }),
        5 => (0..KEYS.len(), kind(), prop::bool::weighted(0.25))
            .prop_map(|(key, kind, hold)| Op::Write { key, kind, hold }),
        1 => Just(Op::Release),
        5 => (0..2usize, 1..6usize).prop_map(|(store, n)| Op::Pump { store, n }),
        1 => (0..2usize).prop_map(Op::Bounce),
        1 => (0..2usize).prop_map(Op::LinkDown),
        4 => (0..2usize).prop_map(Op::LinkUp),
        1 => (0..2usize, 0..16u64).prop_map(|(store, keep)| Op::Trim { store, keep }),
        1 => (0..2usize, any::<u64>()).prop_map(|(store, epoch)| Op::NewEpoch { store, epoch }),
    ]
}

struct Sim {
    hub: Hub,
    model: Model,
    views: HashMap<(ConnRef, u64), View>,
    /// Each connection's current generation (a closed one comes back as the next).
    gens: HashMap<u32, u32>,
    /// Last token seen per (conn, target), with the replica it goes with, for resuming.
    tokens: HashMap<(u32, usize), (String, Replica)>,
    /// Join watches whose answer (`resumed`, or a snapshot's last part) the hub has had.
    answered: HashSet<u64>,
}

impl Sim {
    fn new(page: usize) -> Self {
        let mut hub = Hub::new(Arc::new(map()));
        hub.link_up(0);
        hub.link_up(1);
        Self {
            hub,
            model: Model::new(page),
            views: HashMap::new(),
            gens: HashMap::new(),
            tokens: HashMap::new(),
            answered: HashSet::new(),
        }
    }

    fn conn(&self, conn: u32) -> ConnRef {
        (conn, self.gens.get(&conn).copied().unwrap_or(1))
    }

    /// Move the hub's frames to the model and its client messages to the views.
    fn sync(&mut self) {
        // As the worker does: what the hub queues for a link that is down waits there
        // until the link is up again (the hub clears it when the link drops).
        for s in 0..2 {
            if self.hub.is_up(s) {
                let out = std::mem::take(&mut self.hub.link_out[s]);
                self.model.receive(s, &out);
            }
        }
        for o in std::mem::take(&mut self.hub.out) {
            // Odd connections subscribe in `latest` mode: their changes, and only
            // theirs, come as `Latest`, and their subscriptions' ends as `Ended`.
            let (conn, id, r) = match &o {
                Out::Msg(c, r) => (*c, r.id().unwrap_or(0), r.clone()),
                Out::Change(c, id, d) => {
                    assert_eq!(c.0 % 2, 0, "a stream change for a latest subscription");
                    (*c, *id, d.response(*id).into_owned())
                }
                Out::Latest(c, id, d) => {
                    assert_eq!(c.0 % 2, 1, "a latest change for a stream subscription");
                    (*c, *id, d.response(*id).into_owned())
                }
                Out::Inbox(_) => panic!("no inbox subscription in these tests"),
                Out::Presence(..) => panic!("no presence subscription in these tests"),
                Out::Ended(c, id) => {
                    assert_eq!(c.0 % 2, 1, "the end of a stream subscription announced");
                    // Nothing may follow it for the subscription.
                    if let Some(v) = self.views.get_mut(&(*c, *id)) {
                        v.gone = true;
                    }
                    continue;
                }
            };
            let Some(v) = self.views.get_mut(&(conn, id)) else {
                // Only the answer to an `unsub` goes to no subscription.
                assert!(
                    matches!(r, Response::Ok { .. } | Response::Error { .. }),
                    "{r:?} for {conn:?}/{id}, which is not subscribed"
                );
                continue;
            };
            assert!(!v.gone, "message after the end of {conn:?}/{id}: {r:?}");
            on_response(&self.model, v, r, (conn, id));
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Sub {
                conn,
                target,
                resume,
            } => self.subscribe(conn, target, resume),
            Op::Unsub { conn, target } => {
                let key = (self.conn(conn), target as u64);
                if let Some(v) = self.views.remove(&key) {
                    self.keep_token(conn, target, v);
                }
                self.hub.request(key.0, Request::Unsub { id: key.1 }, "");
                // Its answer (ok or error) has no view to go to.
            }
            Op::Close(conn) => {
                self.close(conn);
            }
            Op::Reconnect(conn) => {
                for target in self.close(conn) {
                    self.subscribe(conn, target, true);
                }
            }
            Op::Storm { missed } => {
                let had: Vec<(u32, Vec<usize>)> = (1..CONNS).map(|c| (c, self.close(c))).collect();
                for key in KEYS.iter().take(missed) {
                    self.model.write(key, Kind::Put, false);
                }
                for (conn, targets) in had {
                    for target in targets {
                        self.subscribe(conn, target, true);
                    }
                }
            }
            Op::Write { key, kind, hold } => self.model.write(KEYS[key], kind, hold),
            Op::Release => self.model.release(),
            Op::Pump { store, n } => self.pump(store, n),
            Op::Bounce(s) => {
                self.link_down(s);
                self.link_up(s);
            }
            Op::LinkDown(s) => self.link_down(s),
            Op::LinkUp(s) => self.link_up(s),
            Op::Trim { store, keep } => self.model.trim(store, keep),
            Op::NewEpoch { store, epoch } => {
                if !self.hub.is_up(store) {
                    self.model.new_epoch(store, epoch);
                }
            }
        }
        self.sync();
    }

    fn subscribe(&mut self, conn: u32, target: usize, resume: bool) {
        let c = self.conn(conn);
        let id = target as u64;
        if self.views.get(&(c, id)).is_some_and(|v| !v.gone) {
            return;
        }
        let (t, prefix) = TARGETS[target];
        let sent = if resume {
            self.tokens.get(&(conn, target)).cloned()
        } else {
            None
        };
        let parts = target_parts(t, prefix);
        let must_fail = parts
            .iter()
            .any(|&p| !self.hub.is_up(self.model.map.owner_index(p).unwrap()));
        let mut view = View {
            target: (t.to_owned(), prefix),
            must_fail,
            ..View::default()
        };
        if let Some((token, replica)) = &sent {
            let mut at = positions(token);
            at.retain(|p, _| parts.contains(p));
            view.sent = Some((at, replica.clone()));
        }
        self.views.insert((c, id), view);
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
                from: sent.map(|(token, _)| token.into()),
                mode: if conn % 2 == 1 {
                    wire::client::SubMode::Latest
                } else {
                    wire::client::SubMode::Stream
                },
                durable: None,
            },
            "",
        );
        // The resume joins it started through, its own or shared.
        let joins = resume_joins_of(&self.hub, SubRef { conn: c, id });
        let v = self.views.get_mut(&(c, id)).unwrap();
        v.joins = joins;
        self.sync();
        if must_fail {
            let v = &self.views[&(c, id)];
            assert!(
                v.gone,
                "{t}: a sub while its store is down must fail at once"
            );
        }
        if let Some(v) = self.views.get_mut(&(c, id)) {
            v.must_fail = false;
        }
    }

    /// Close connection `conn`; returns the targets it was subscribed to.
    fn close(&mut self, conn: u32) -> Vec<usize> {
        let c = self.conn(conn);
        self.hub.conn_closed(c);
        let mut had = Vec::new();
        for target in 0..TARGETS.len() {
            if let Some(v) = self.views.remove(&(c, target as u64)) {
                if !v.gone {
                    had.push(target);
                }
                self.keep_token(conn, target, v);
            }
        }
        *self.gens.entry(conn).or_insert(1) += 1;
        had
    }

    fn keep_token(&mut self, conn: u32, target: usize, v: View) {
        if let Some(t) = v.last_token {
            self.tokens.insert((conn, target), (t, v.replica));
        }
    }

    fn pump(&mut self, store: usize, n: usize) {
        for _ in 0..n {
            let Some(f) = self.model.inbox[store].pop_front() else {
                break;
            };
            let (frame, _) = decode_frame(&f, &LinkLimits::default()).unwrap().unwrap();
            match frame.message {
                LinkMessage::Pong(p) => self.hub.on_pong(p.nonce()),
                LinkMessage::Resumed(r) => {
                    self.answered.insert(r.watch_id());
                    self.hub.on_frame(&frame);
                }
                LinkMessage::Snapshot(s) => {
                    if !s.more() {
                        self.answered.insert(s.watch_id());
                    }
                    self.hub.on_frame(&frame);
                }
                _ => self.hub.on_frame(&frame),
            }
            self.sync();
        }
    }

    fn link_down(&mut self, s: usize) {
        if !self.hub.is_up(s) {
            return;
        }
        // A subscription may fail only if it was still joining through this link.
        let parts = self.model.owned(s);
        for v in self.views.values_mut() {
            let pending = if v.start.is_none() {
                v.parts().iter().any(|p| parts.contains(p))
            } else {
                v.joins
                    .iter()
                    .any(|(wid, js)| *js == s && !self.answered.contains(wid))
            };
            v.may_fail |= pending;
        }
        self.hub.link_down(s);
        self.model.link_lost(s);
        self.sync();
        // Those failures come at once; after it, nothing may fail.
        for v in self.views.values_mut() {
            v.may_fail = false;
        }
    }

    fn link_up(&mut self, s: usize) {
        if self.hub.is_up(s) {
            return;
        }
        self.hub.link_up(s);
        self.sync();
    }

    /// Bring every link up and deliver everything in flight.
    fn settle(&mut self) {
        for s in 0..2 {
            self.link_up(s);
        }
        self.model.release();
        self.sync();
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
            self.model.watch_count(),
            "the hub's watches and the stores' differ"
        );
        let live = self.views.values().filter(|v| !v.gone).count();
        assert_eq!(self.hub.subscriptions(), live, "the hub's subscriptions");
        for ((conn, id), v) in &self.views {
            if v.gone {
                continue;
            }
            self.check_view(*conn, *id, v);
        }
    }

    fn check_view(&self, conn: ConnRef, id: u64, v: &View) {
        let start = v
            .start
            .as_ref()
            .unwrap_or_else(|| panic!("{conn:?}/{id} never started"));
        let (t, prefix) = &v.target;
        let mut expected: Vec<Got> = Vec::new();
        for (&p, &from) in start {
            let part = self.model.part(p);
            for (i, e) in part.log.iter().enumerate() {
                let seq = i as u64 + 1;
                if seq > from && matches(&e.key, t, *prefix) {
                    expected.push(Got {
                        partition: p,
                        seq,
                        key: e.key.clone(),
                        op: change_op(e.kind, &e.value, e.version(seq)),
                    });
                }
            }
        }
        let mut got = v.got.clone();
        // Order matters within a partition only.
        for p in 0..PARTITIONS {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|x| x.partition == p)
                .map(|x| x.seq)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{t}: partition {p} out of order or twice: {seqs:?}"
            );
        }
        got.sort_by_key(|g| (g.partition, g.seq));
        expected.sort_by_key(|g| (g.partition, g.seq));
        assert_eq!(got, expected, "{conn:?}/{id} on {t}");
        // Snapshot (or the state it resumed with) plus changes: the model's values now.
        let mut now = Replica::new();
        for p in v.parts() {
            now.extend(
                self.model
                    .state_at(p, self.model.part(p).last(), t, *prefix),
            );
        }
        assert_eq!(v.replica, now, "{conn:?}/{id} on {t}: replica");
    }
}

/// One response for subscription view `v`.
fn on_response(model: &Model, v: &mut View, r: Response<'static>, who: (ConnRef, u64)) {
    let t = v.target.0.clone();
    match r {
        Response::Snapshot {
            entries,
            token,
            more,
            ..
        } => on_snapshot(model, v, who, entries, token, more),
        Response::Resumed { token, .. } => {
            // The hub resumes from exactly what the client sent.
            let (sent, replica) = v
                .sent
                .clone()
                .unwrap_or_else(|| panic!("{t}: resumed without a token sent"));
            assert_eq!(positions(&token), sent, "{who:?} on {t}: resumed token");
            assert!(v.start.is_none(), "{t}: resumed twice");
            v.start = Some(sent.iter().map(|(&p, &(_, s))| (p, s)).collect());
            v.replica = replica;
            v.got.clear();
            v.last_token = Some(token.into_owned());
        }
        Response::Reset { .. } => {
            v.start = None;
            v.got.clear();
            v.snap.clear();
        }
        Response::Change { key, op, token, .. } => on_change(model, v, key, op, token),
        Response::Error { code, .. } => {
            assert!(
                v.must_fail || v.may_fail,
                "{who:?} on {t}: an established subscription failed: {code:?}"
            );
            assert_eq!(code, ErrorCode::Unavailable, "{t}");
            v.gone = true;
        }
        Response::Ok { .. } => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// A snapshot part for view `v`: checked against the model once complete.
fn on_snapshot(
    model: &Model,
    v: &mut View,
    who: (ConnRef, u64),
    entries: Vec<Entry<'static>>,
    token: Option<Cow<'static, str>>,
    more: bool,
) {
    let (t, pre) = v.target.clone();
    // A subscription that started is told `reset` before a fresh snapshot.
    assert!(
        v.start.is_none(),
        "{who:?} on {t}: a snapshot without a reset"
    );
    for e in entries {
        assert!(
            matches(&e.key, &t, pre),
            "{}: in the snapshot of {t}",
            e.key
        );
        let old = v
            .snap
            .insert(e.key.into_owned(), (e.value.into_owned(), e.version));
        assert!(old.is_none(), "{t}: a key twice in one snapshot");
    }
    if more {
        return;
    }
    let token = token.expect("the last snapshot part has a token");
    let at = positions(&token);
    // A complete snapshot: a real position for every partition of the target,
    // and exactly the model's values there.
    let parts = v.parts();
    assert_eq!(
        at.keys().copied().collect::<HashSet<_>>(),
        parts.iter().copied().collect::<HashSet<_>>(),
        "{t}: snapshot token {at:?}"
    );
    let mut want = Replica::new();
    for (&p, &(epoch, seq)) in &at {
        let part = model.part(p);
        assert!(
            part.epochs.contains(&epoch),
            "{t}: epoch {epoch} in a snapshot token of partition {p}"
        );
        assert!(seq <= part.last(), "{t}: snapshot past the log");
        want.extend(model.state_at(p, seq, &t, pre));
    }
    let got = std::mem::take(&mut v.snap);
    assert_eq!(got, want, "{who:?} on {t}: snapshot at {at:?}");
    v.replica = got;
    v.start = Some(at.iter().map(|(&p, &(_, s))| (p, s)).collect());
    v.got.clear();
    v.last_token = Some(token.into_owned());
}

/// A change for view `v`: the model's log entry at its position, applied to the replica.
fn on_change(
    model: &Model,
    v: &mut View,
    key: Cow<'static, str>,
    op: ChangeOp<'static>,
    token: Cow<'static, str>,
) {
    let (t, pre) = v.target.clone();
    assert!(matches(&key, &t, pre), "{key} delivered to {t}");
    assert!(
        v.start.is_some(),
        "{t}: a change before its snapshot or resume"
    );
    let p = partition_of(key.as_bytes(), PARTITIONS);
    let (epoch, seq) = positions(&token)[&p];
    let e = model
        .part(p)
        .log
        .get(seq as usize - 1)
        .unwrap_or_else(|| panic!("{t}: change at {p}/{seq}, past the log"));
    assert_eq!(
        (&*key, &op, epoch),
        (
            &*e.key,
            &change_op(e.kind, &e.value, e.version(seq)),
            e.epoch
        ),
        "{t}: change {p}/{seq}"
    );
    match &op {
        ChangeOp::Put { value, version } => {
            v.replica
                .insert(key.to_string(), (value.to_vec(), *version));
        }
        ChangeOp::Delete { .. } => {
            v.replica.remove(&*key);
        }
        ChangeOp::Publish { .. } => {}
    }
    v.got.push(Got {
        partition: p,
        seq,
        key: key.into_owned(),
        op: op.into_owned(),
    });
    v.last_token = Some(token.into_owned());
}

fn change_op(kind: Kind, value: &[u8], version: u64) -> ChangeOp<'static> {
    match kind {
        Kind::Put => ChangeOp::Put {
            value: value.to_vec().into(),
            version,
        },
        Kind::Delete => ChangeOp::Delete { version },
        Kind::Publish => ChangeOp::Publish {
            value: value.to_vec().into(),
        },
    }
}

/// The resume joins subscription `sub` is starting through, its own or one it rides on:
/// (watch id, store).
fn resume_joins_of(hub: &Hub, sub: SubRef) -> Vec<(u64, usize)> {
    let Some(g) = hub.groups.group_of(sub).and_then(|gid| hub.groups.get(gid)) else {
        return Vec::new();
    };
    let wids = g
        .find(sub)
        .and_then(|i| g.members.get(i))
        .and_then(|m| m.own.as_ref())
        .map(|own| own.joins.clone())
        .unwrap_or_default();
    wids.into_iter()
        .filter_map(|wid| {
            let w = hub.groups.watch(wid)?;
            w.from.is_some().then_some((wid.get(), w.store))
        })
        .collect()
}

fn positions(token: &str) -> Positions {
    decode_token(token)
        .unwrap()
        .into_iter()
        .map(|p| (p.partition, (p.epoch, p.seq)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_subscription_gets_each_matching_change_once_in_order(
        page in 1..4usize,
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let mut sim = Sim::new(page);
        for op in &ops {
            sim.apply(op);
        }
        sim.settle();
        sim.check();
        // Whatever is left subscribed: one more write to every key reaches it.
        for k in 0..KEYS.len() {
            sim.apply(&put(k));
        }
        sim.settle();
        sim.check();
    }
}

#[test]
fn one_watch_serves_many_subscribers() {
    let mut sim = Sim::new(2);
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
    sim.apply(&put(0));
    sim.settle();
    sim.check();
    assert!(sim.views.values().all(|v| v.got.len() == 1));
}

#[test]
fn a_connection_cannot_pile_up_requests_without_bound() {
    let mut sim = Sim::new(2);
    let conn = (9, 1);
    let n = super::MAX_INFLIGHT_PER_CONN as u64 + 6;
    for id in 0..n {
        sim.hub.request(
            conn,
            Request::Get {
                id,
                key: "a".into(),
            },
            "",
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
        "",
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
        "",
    );
    assert!(sim.hub.out.is_empty());
}

#[test]
fn a_large_group_keeps_finding_its_members_as_they_come_and_go() {
    // Past `INDEX_FROM` members a group looks members up by index: every swap-remove
    // must keep it right, or changes go to the wrong subscription or none.
    let mut sim = Sim::new(2);
    for conn in 0..120 {
        sim.apply(&Op::Sub {
            conn,
            target: conn as usize % 2,
            resume: false,
        });
        if conn % 7 == 0 {
            sim.apply(&put(conn as usize % 3));
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
            sim.apply(&put(0));
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
    sim.apply(&put(0));
    sim.apply(&put(2));
    sim.settle();
    sim.check();
    let live = sim.views.values().filter(|v| !v.gone).count();
    assert_eq!(sim.hub.subscriptions(), live);
    assert!(live > 40, "{live}");
}

#[test]
fn a_multi_partition_reset_while_another_store_is_down_still_starts_over() {
    // The group of an untagged prefix spans both stores. Store 0's log is recreated
    // while both links are down; when store 0 is back its group watch gets `reset`, so
    // the member starts over with a fresh snapshot of every partition, store 1's
    // included, which is still down.
    let mut sim = Sim::new(2);
    sim.apply(&put(4));
    sim.apply(&Op::Sub {
        conn: 0,
        target: 2,
        resume: false,
    });
    sim.settle();
    sim.check();
    sim.apply(&Op::LinkDown(0));
    sim.apply(&Op::LinkDown(1));
    sim.apply(&put(4));
    sim.apply(&put(5));
    sim.apply(&Op::NewEpoch { store: 0, epoch: 7 });
    sim.apply(&Op::LinkUp(0));
    sim.apply(&Op::Pump { store: 0, n: 100 });
    sim.apply(&Op::LinkUp(1));
    sim.settle();
    sim.check();
    assert!(sim.views.values().all(|v| !v.gone));
}

/// Connections `conns` subscribe to target `t`, settle, then close (their tokens kept);
/// `missed` writes to its key land while they are away.
fn subscribed_then_away(sim: &mut Sim, conns: &[u32], t: usize, missed: usize) {
    for &conn in conns {
        sim.apply(&Op::Sub {
            conn,
            target: t,
            resume: false,
        });
    }
    sim.apply(&put(0));
    sim.settle();
    sim.check();
    for &conn in conns {
        sim.apply(&Op::Close(conn));
    }
    for _ in 0..missed {
        sim.apply(&put(0));
    }
}

/// `conn` resumes target `t` with its last token (the store is not pumped).
fn resume(sim: &mut Sim, conn: u32, t: usize) {
    sim.apply(&Op::Sub {
        conn,
        target: t,
        resume: true,
    });
}

#[test]
fn resumes_from_one_position_share_one_join() {
    let mut sim = Sim::new(2);
    subscribed_then_away(&mut sim, &[0, 1, 2], 0, 3);
    assert_eq!(sim.model.watch_count(), 0);
    for conn in 0..3 {
        resume(&mut sim, conn, 0);
    }
    // One watch went to the store for the three; the others ride on it.
    assert_eq!(sim.model.watch_count(), 1);
    assert_eq!(sim.hub.stats.joins_shared, 2);
    sim.settle();
    sim.check();
    // Each got `resumed` with its own token, then exactly the three it missed.
    for conn in 0..3 {
        let v = &sim.views[&(sim.conn(conn), 0)];
        assert!(v.start.is_some() && !v.gone, "{conn}: {v:?}");
        assert_eq!(v.got.len(), 3, "{conn}: {:?}", v.got);
    }
    sim.apply(&put(0));
    sim.settle();
    sim.check();
    assert_eq!(sim.hub.watches(), 1);
}

#[test]
fn a_shared_join_retired_brings_each_rider_what_it_missed() {
    // Connection 3 keeps the group and its watch: the shared join is retired once
    // answered, and the changes it catches up with reach every member on it.
    let mut sim = Sim::new(2);
    sim.apply(&Op::Sub {
        conn: 3,
        target: 0,
        resume: false,
    });
    // Connection 3 has the two changes the others missed before they come back: those
    // reach the two only through their join.
    subscribed_then_away(&mut sim, &[0, 2], 0, 2);
    sim.settle();
    for conn in [0, 2] {
        resume(&mut sim, conn, 0);
    }
    assert_eq!(sim.hub.stats.joins_shared, 1);
    sim.settle();
    sim.check();
    for conn in [0, 2] {
        assert_eq!(sim.views[&(sim.conn(conn), 0)].got.len(), 2, "{conn}");
    }
    assert_eq!(sim.hub.watches(), 1);
}

#[test]
fn a_join_that_has_heard_from_its_store_takes_no_riders() {
    let mut sim = Sim::new(2);
    subscribed_then_away(&mut sim, &[0, 2], 0, 2);
    let store = sim
        .model
        .map
        .owner_index(partition_of(b"a", PARTITIONS))
        .unwrap();
    resume(&mut sim, 0, 0);
    // The store answers the join in part: `resumed` is in, the changes are not.
    sim.apply(&Op::Pump { store, n: 1 });
    assert!(sim.views[&(sim.conn(0), 0)].start.is_some());
    resume(&mut sim, 2, 0);
    assert_eq!(sim.hub.stats.joins_shared, 0);
    sim.settle();
    sim.check();
    for conn in [0, 2] {
        assert_eq!(sim.views[&(sim.conn(conn), 0)].got.len(), 2, "{conn}");
    }
}

#[test]
fn a_shared_join_outlives_the_members_that_leave_it() {
    // The first member (whose id the join's role holds) and then a rider leave while
    // the join is on its way: the one left still gets everything it missed.
    let mut sim = Sim::new(2);
    subscribed_then_away(&mut sim, &[0, 1, 2], 0, 2);
    for conn in 0..3 {
        resume(&mut sim, conn, 0);
    }
    sim.apply(&Op::Close(0));
    sim.apply(&Op::Unsub { conn: 1, target: 0 });
    sim.settle();
    sim.check();
    let v = &sim.views[&(sim.conn(2), 0)];
    assert!(v.start.is_some() && !v.gone);
    assert_eq!(v.got.len(), 2);
    // And once all are gone, so is the watch.
    sim.apply(&Op::Close(2));
    sim.settle();
    assert_eq!(sim.hub.watches(), 0);
}
