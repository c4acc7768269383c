//! Property test through the core thread (no network): random puts, deletes and
//! publishes, watches (fresh or resumed from an earlier position) and unwatches from
//! several fake links. Every watch must start, in each partition it covers and before
//! any change reaches it there: a complete snapshot (its pages all but the last with
//! `more`, its entries exactly the model's current values at the snapshot's position),
//! or `resumed` (only with a position, and in the position's partition), or `reset`
//! followed by such a snapshot (only when the position cannot be resumed). Every watch
//! starts (each link's requests are handled in order, so even a watch unwatched later
//! is started first). After its start it must receive, for each partition it covers,
//! every matching change after its starting point exactly once and in order (key,
//! kind, value and version as written), up to its unwatch, and nothing else.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use store::changelog::{ChangeLog, Position, Retention, Write};
use store::core::{CoreConfig, CoreMsg, Intake, Outbox, Req, Taken, spawn};
use store::engine::memory::MemoryEngine;
use wire::link::{ChangeKind, LinkLimits, LinkMessage, WatchId, decode_frame};

const PARTITIONS: u32 = 4;
const EPOCH: u64 = 5;
const KEYS: &[&str] = &["a", "ab", "b", "{t}1", "{t}2", "c"];
const PREFIXES: &[&str] = &["", "a", "{t}", "c"];
/// Request ids of writes start here (watch request ids are the watch ids, from 1).
const WRITE_IDS: u64 = 1 << 32;

#[derive(Debug, Clone)]
enum Op {
    /// (key index, 0 put / 1 delete / 2 publish, value)
    Write(usize, u8, u8),
    Watch {
        link: u64,
        prefix: bool,
        target: usize,
        resume: Option<usize>,
    },
    Unwatch {
        link: u64,
        nth: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS.len(), prop_oneof![3 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], any::<u8>())
            .prop_map(|(k, kind, v)| Op::Write(k, kind, v)),
        2 => (0u64..3, any::<bool>(), any::<usize>(), proptest::option::of(any::<usize>()))
            .prop_map(|(link, prefix, target, resume)| Op::Watch { link, prefix, target, resume }),
        1 => (0u64..3, any::<usize>()).prop_map(|(link, nth)| Op::Unwatch { link, nth }),
    ]
}

/// A write as the model sees it: partition, seq, key, kind, value.
#[derive(Debug, Clone)]
struct Logged {
    p: u32,
    seq: u64,
    key: String,
    kind: ChangeKind,
    value: Option<Vec<u8>>,
}

impl Logged {
    /// The version a change of this write carries (0 for a publish).
    fn version(&self) -> u64 {
        if self.kind == ChangeKind::Publish {
            0
        } else {
            self.seq
        }
    }
}

/// A watch as the model sees it.
struct ModelWatch {
    link: u64,
    id: u64,
    target: String,
    prefix: bool,
    /// The position it resumes from, if any.
    from: Option<Position>,
    /// Number of writes sent before its unwatch.
    removed_at: Option<usize>,
}

impl ModelWatch {
    fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&self.target)
        } else {
            key == self.target
        }
    }

    /// How it must start in each partition it covers. A position in a partition the
    /// target does not live in is reset to a snapshot in the right one; on link 0 (which
    /// sent every write, in order, before this watch) a position of an earlier write is
    /// always resumable; on another link it may be ahead of what is committed yet.
    fn expected(&self) -> Vec<(u32, Expect)> {
        let home = if self.prefix {
            store::partition::prefix_partition(self.target.as_bytes(), PARTITIONS)
        } else {
            Some(store::partition::partition_of(
                self.target.as_bytes(),
                PARTITIONS,
            ))
        };
        match (self.from, home) {
            (Some(pos), Some(h)) if pos.partition != h => vec![(h, Expect::ResetThenSnapshot)],
            (Some(pos), _) if self.link == 0 => vec![(pos.partition, Expect::Resumed)],
            (Some(pos), _) => vec![(pos.partition, Expect::ResumedOrReset)],
            (None, Some(h)) => vec![(h, Expect::Snapshot)],
            (None, None) => (0..PARTITIONS).map(|p| (p, Expect::Snapshot)).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Snapshot,
    Resumed,
    ResetThenSnapshot,
    ResumedOrReset,
}

/// Where a watch stands in one partition, from the frames its link received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// `reset`: a snapshot must follow before anything else.
    Reset,
    /// Snapshot pages with `more` so far: the entries and the position they carry.
    Paging {
        after_reset: bool,
        entries: Vec<(String, Vec<u8>, u64)>,
        seq: u64,
    },
    /// A complete snapshot at `seq`.
    Snapshot {
        after_reset: bool,
        entries: Vec<(String, Vec<u8>, u64)>,
        seq: u64,
    },
    /// `resumed`: changes follow from the watch's own position.
    Resumed { seq: u64 },
}

impl Start {
    fn seq(&self) -> Option<u64> {
        match self {
            Start::Snapshot { seq, .. } | Start::Resumed { seq } => Some(*seq),
            Start::Reset | Start::Paging { .. } => None,
        }
    }
}

/// Fail the case with a message.
macro_rules! fail {
    ($($t:tt)*) => {
        return Err(TestCaseError::fail(format!($($t)*)))
    };
}

/// A change as a watch received it: seq, key, kind, value, version.
type Got = (u64, String, ChangeKind, Option<Vec<u8>>, u64);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn each_watch_starts_then_gets_exactly_its_changes(ops in proptest::collection::vec(op(), 1..40)) {
        let engine = Arc::new(MemoryEngine::new());
        let owned: Vec<u32> = (0..PARTITIONS).collect();
        let log = ChangeLog::open(engine, PARTITIONS, &owned, || EPOCH).unwrap();
        let cfg = CoreConfig { store_id: "t".into(), map_version: 1, sync: false, retention: Retention::default(), max_drain: 64, max_link_queue_bytes: 1 << 30, ..CoreConfig::default() };
        let (core, handle) = spawn(log, cfg).unwrap();
        let mut rxs = BTreeMap::new();
        // Each request takes a share of its link's intake, as a link's reader does.
        let intakes: Vec<Arc<Intake>> = (0..3).map(|_| Arc::default()).collect();
        for link in 0..3u64 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let intake = Arc::clone(&intakes[link as usize]);
            let outbox = Outbox { tx, queued: Arc::new(AtomicUsize::new(0)), close: Arc::new(tokio::sync::Notify::new()), intake };
            core.send(CoreMsg::Open { link, outbox }).unwrap();
            rxs.insert(link, rx);
        }
        // Writes in commit order. Seqs are known in advance: unconditional writes
        // always succeed, each partition counts from 1, and all come from link 0, whose
        // requests take effect in order. Watches come from any link, so a resume
        // position may be ahead of what is committed when the watch starts (it then
        // gets a reset and a snapshot).
        let mut writes: Vec<Logged> = Vec::new();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        let mut watches: Vec<ModelWatch> = Vec::new();
        let mut next_id = 1u64;
        for op in ops {
            match op {
                Op::Write(k, kind, v) => {
                    let key = KEYS[k];
                    let p = store::partition::partition_of(key.as_bytes(), PARTITIONS);
                    let seq = last.entry(p).or_insert(0);
                    *seq += 1;
                    let bytes = key.as_bytes().to_vec();
                    let (w, kind, value) = match kind {
                        0 => (Write::Put { key: bytes, value: vec![v], if_version: None, msg_id: None }, ChangeKind::Put, Some(vec![v])),
                        1 => (Write::Delete { key: bytes, if_version: None, msg_id: None }, ChangeKind::Delete, None),
                        _ => (Write::Publish { key: bytes, value: vec![v], msg_id: None }, ChangeKind::Publish, Some(vec![v])),
                    };
                    let request_id = WRITE_IDS + writes.len() as u64;
                    writes.push(Logged { p, seq: *seq, key: key.to_owned(), kind, value });
                    core.send(CoreMsg::Request { taken: intakes[0].take(8), link: 0, request_id, req: Req::Write(w) }).unwrap();
                }
                Op::Watch { link, prefix, target, resume } => {
                    let target = if prefix { PREFIXES[target % PREFIXES.len()] } else { KEYS[target % KEYS.len()] }.to_owned();
                    // Resume from the position right after an earlier write, if any.
                    let from = resume.and_then(|i| (!writes.is_empty()).then(|| {
                        let w = &writes[i % writes.len()];
                        Position { partition: w.p, epoch: EPOCH, seq: w.seq }
                    }));
                    let id = next_id;
                    next_id += 1;
                    core.send(CoreMsg::Request { taken: intakes[link as usize].take(8), link, request_id: id, req: Req::Watch { watch_id: WatchId::from_raw(id), target: target.clone(), prefix, from } }).unwrap();
                    watches.push(ModelWatch { link, id, target, prefix, from, removed_at: None });
                }
                Op::Unwatch { link, nth } => {
                    let live: Vec<usize> = (0..watches.len()).filter(|&i| watches[i].link == link && watches[i].removed_at.is_none()).collect();
                    if let Some(&i) = live.get(nth % live.len().max(1)) {
                        watches[i].removed_at = Some(writes.len());
                        core.send(CoreMsg::Request { taken: intakes[link as usize].take(8), link, request_id: 0, req: Req::Unwatch(WatchId::from_raw(watches[i].id)) }).unwrap();
                    }
                }
            }
        }
        core.send(CoreMsg::Shutdown).unwrap();
        handle.join().unwrap().unwrap();
        // The core answered every request, and gave every share back.
        for (link, intake) in intakes.iter().enumerate() {
            prop_assert_eq!(intake.requests(), 0, "link {} still holds shares", link);
            prop_assert!(!intake.full());
        }

        // Replay each link's frames in order: every watch's start per partition, then
        // its changes, which must all come after that start.
        let mut starts: BTreeMap<(u64, u64, u32), Start> = BTreeMap::new();
        let mut got: BTreeMap<(u64, u64, u32), Vec<Got>> = BTreeMap::new();
        let mut replies = 0usize;
        for (link, mut rx) in rxs {
            let mut bytes = Vec::new();
            while let Ok(b) = rx.try_recv() { bytes.extend_from_slice(&b); }
            let mut at = 0;
            while let Some((f, used)) = decode_frame(&bytes[at..], &LinkLimits::default()).unwrap() {
                at += used;
                let watch = |id: u64| watches.iter().find(|w| w.link == link && w.id == id);
                match f.message {
                    LinkMessage::Snapshot(s) => {
                        let key = (link, s.watch_id(), s.partition());
                        prop_assert!(watch(s.watch_id()).is_some(), "snapshot for unknown watch {:?}", key);
                        prop_assert_eq!(f.request_id, s.watch_id(), "snapshot answers its watch request");
                        let pos = s.position().unwrap();
                        prop_assert_eq!((pos.partition(), pos.epoch()), (s.partition(), EPOCH));
                        let page: Vec<(String, Vec<u8>, u64)> = s.entries().iter().flatten()
                            .map(|e| (e.key().to_owned(), e.value().map(|v| v.bytes().to_vec()).unwrap_or_default(), e.version()))
                            .collect();
                        let (after_reset, mut entries) = match starts.remove(&key) {
                            None => (false, Vec::new()),
                            Some(Start::Reset) => (true, Vec::new()),
                            Some(Start::Paging { after_reset, entries, seq }) => {
                                prop_assert_eq!(seq, pos.seq(), "{:?}: snapshot pages at different positions", key);
                                (after_reset, entries)
                            }
                            Some(other) => { fail!("{:?}: snapshot after the watch had started ({:?})", key, other) }
                        };
                        entries.extend(page);
                        let st = if s.more() {
                            Start::Paging { after_reset, entries, seq: pos.seq() }
                        } else {
                            Start::Snapshot { after_reset, entries, seq: pos.seq() }
                        };
                        starts.insert(key, st);
                    }
                    LinkMessage::Resumed(r) => {
                        let key = (link, r.watch_id(), r.partition());
                        let Some(w) = watch(r.watch_id()) else { fail!("resumed for unknown watch {:?}", key) };
                        prop_assert_eq!(f.request_id, r.watch_id(), "resumed answers its watch request");
                        let Some(from) = w.from else { fail!("{:?}: resumed without a position", key) };
                        prop_assert_eq!(from.partition, r.partition(), "{:?}: resumed in another partition than its position's", key);
                        prop_assert!(!starts.contains_key(&key), "{:?}: resumed after {:?}", key, starts.get(&key));
                        starts.insert(key, Start::Resumed { seq: from.seq });
                    }
                    LinkMessage::Reset(r) => {
                        let key = (link, r.watch_id(), r.partition());
                        let Some(w) = watch(r.watch_id()) else { fail!("reset for unknown watch {:?}", key) };
                        prop_assert_eq!(f.request_id, r.watch_id(), "reset answers its watch request");
                        prop_assert!(w.from.is_some(), "{:?}: reset without a position", key);
                        prop_assert_eq!(r.epoch(), EPOCH);
                        prop_assert!(!starts.contains_key(&key), "{:?}: reset after {:?}", key, starts.get(&key));
                        starts.insert(key, Start::Reset);
                    }
                    LinkMessage::Changes(cs) => {
                        for c in cs.changes().iter().flatten() {
                            let p = c.position().unwrap();
                            prop_assert_eq!(p.epoch(), EPOCH);
                            for id in c.watch_ids().iter().flatten() {
                                let key = (link, id, p.partition());
                                let started = starts.get(&key).and_then(Start::seq);
                                prop_assert!(started.is_some(), "{:?}: change {} of {:?} before the watch started ({:?})", key, p.seq(), c.key(), starts.get(&key));
                                got.entry(key).or_default().push((p.seq(), c.key().to_owned(), c.kind(), c.value().map(|v| v.bytes().to_vec()), c.version()));
                            }
                        }
                    }
                    LinkMessage::WriteReply(r) => {
                        // Every write is acknowledged at the position the model gave it.
                        prop_assert_eq!(link, 0);
                        let i = usize::try_from(f.request_id - WRITE_IDS).unwrap();
                        let w = &writes[i];
                        let p = r.position().unwrap();
                        prop_assert_eq!((p.partition(), p.epoch(), p.seq(), r.version()), (w.p, EPOCH, w.seq, w.version()));
                        replies += 1;
                    }
                    LinkMessage::Error(e) => fail!("link {} got an error: {:?} {:?}", link, e.code(), e.message()),
                    other => fail!("link {} got an unexpected {:?}", link, other.kind()),
                }
            }
            prop_assert_eq!(at, bytes.len());
        }
        prop_assert_eq!(replies, writes.len(), "every write is acknowledged");
        for w in &watches {
            let expected = w.expected();
            for p in 0..PARTITIONS {
                let key = (w.link, w.id, p);
                let what = format!("watch {} of link {} on {:?} (prefix {}, from {:?}) partition {}", w.id, w.link, w.target, w.prefix, w.from, p);
                let Some(&(_, expect)) = expected.iter().find(|(ep, _)| *ep == p) else {
                    // Not covering this partition: nothing there at all.
                    prop_assert!(!starts.contains_key(&key), "{}: started in a partition it does not cover", what);
                    prop_assert!(!got.contains_key(&key), "{}: changes from a partition it does not cover", what);
                    continue;
                };
                let Some(st) = starts.remove(&key) else {
                    fail!("{}: never started (no snapshot, resumed or reset)", what);
                };
                let start = match (&st, expect) {
                    (Start::Snapshot { after_reset: false, entries, seq }, Expect::Snapshot)
                    | (Start::Snapshot { after_reset: true, entries, seq }, Expect::ResetThenSnapshot | Expect::ResumedOrReset) => {
                        // Exactly the model's current values at the snapshot's position.
                        let mut model: BTreeMap<&str, (Vec<u8>, u64)> = BTreeMap::new();
                        for x in writes.iter().filter(|x| x.p == p && x.seq <= *seq && w.matches(&x.key)) {
                            match x.kind {
                                ChangeKind::Put => { model.insert(&x.key, (x.value.clone().unwrap(), x.seq)); }
                                ChangeKind::Delete => { model.remove(x.key.as_str()); }
                                _ => {}
                            }
                        }
                        let want: Vec<(String, Vec<u8>, u64)> = model.into_iter().map(|(k, (v, s))| (k.to_owned(), v, s)).collect();
                        prop_assert_eq!(entries, &want, "{}: snapshot at {}", what, seq);
                        *seq
                    }
                    (Start::Resumed { seq }, Expect::Resumed | Expect::ResumedOrReset) => *seq,
                    (st, expect) => {
                        fail!("{}: started as {:?}, expected {:?}", what, st, expect);
                    }
                };
                let wanted = |upto: usize| -> Vec<Got> {
                    writes[..upto].iter()
                        .filter(|x| x.p == p && x.seq > start && w.matches(&x.key))
                        .map(|x| (x.seq, x.key.clone(), x.kind, x.value.clone(), x.version())).collect()
                };
                let have = got.remove(&key).unwrap_or_default();
                let what = format!("{what} from {start}");
                if w.removed_at.is_none() {
                    prop_assert_eq!(have, wanted(writes.len()), "{}", what);
                } else {
                    // An unwatch takes effect after the writes its own link sent before
                    // it (all writes come from link 0); writes from other links may or
                    // may not land first. Either way: a gap-free run from the start.
                    let all = wanted(writes.len());
                    prop_assert!(have.len() <= all.len() && have[..] == all[..have.len()], "{}: {:?} is not a prefix of {:?}", what, have, all);
                    if w.link == 0 {
                        let must = wanted(w.removed_at.unwrap());
                        prop_assert!(have.len() >= must.len(), "{}: {:?} misses some of {:?}", what, have, must);
                    }
                }
            }
        }
        prop_assert!(starts.is_empty(), "starts of unknown watches: {:?}", starts);
        prop_assert!(got.is_empty(), "changes for unknown watches: {:?}", got);
    }
}

/// A reconnect storm's shape: several watches resume one key from the same position.
/// The first reads the log; the others take its read while the partition has not moved
/// (`resumes_shared`), and each gets exactly the changes after the position; once a
/// change is committed after that read, the next such watch reads again and gets it too.
#[test]
fn watches_resuming_from_one_position_share_a_read_until_the_partition_moves() {
    use std::sync::atomic::Ordering;
    let engine = Arc::new(MemoryEngine::new());
    let owned: Vec<u32> = (0..PARTITIONS).collect();
    let log = ChangeLog::open(engine, PARTITIONS, &owned, || EPOCH).unwrap();
    let cfg = CoreConfig {
        store_id: "t".into(),
        sync: false,
        max_link_queue_bytes: 1 << 30,
        ..CoreConfig::default()
    };
    let metrics = Arc::clone(&cfg.metrics);
    let (core, handle) = spawn(log, cfg).unwrap();
    let mut rxs = Vec::new();
    for link in 0..2u64 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            close: Arc::new(tokio::sync::Notify::new()),
            intake: Arc::default(),
        };
        core.send(CoreMsg::Open { link, outbox }).unwrap();
        rxs.push(rx);
    }
    let p = store::partition::partition_of(b"a", PARTITIONS);
    // Frames of link `i` until `n` of the kind `want` picks have arrived.
    let mut frames = |i: usize, n: usize, want: &dyn Fn(&LinkMessage<'_>) -> Option<Vec<u64>>| {
        let mut bytes = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            bytes.extend_from_slice(&rxs[i].blocking_recv().unwrap());
            let mut at = 0;
            out.clear();
            while let Some((f, used)) = decode_frame(&bytes[at..], &LinkLimits::default()).unwrap()
            {
                at += used;
                out.extend(want(&f.message));
            }
        }
        out
    };
    let put = |n: u64, v: u8| CoreMsg::Request {
        taken: Taken::NONE,
        link: 0,
        request_id: WRITE_IDS + n,
        req: Req::Write(Write::Put {
            key: b"a".to_vec(),
            value: vec![v],
            if_version: None,
            msg_id: None,
        }),
    };
    for n in 0..3 {
        core.send(put(n, n as u8)).unwrap();
    }
    let replies = |m: &LinkMessage<'_>| matches!(m, LinkMessage::WriteReply(_)).then(Vec::new);
    frames(0, 3, &replies);
    let from = Position {
        partition: p,
        epoch: EPOCH,
        seq: 1,
    };
    let watch = |id: u64| CoreMsg::Request {
        taken: Taken::NONE,
        link: 1,
        request_id: id,
        req: Req::Watch {
            watch_id: WatchId::from_raw(id),
            target: "a".into(),
            prefix: false,
            from: Some(from),
        },
    };
    let seqs = |m: &LinkMessage<'_>| match m {
        LinkMessage::Changes(cs) => Some(
            cs.changes()
                .iter()
                .flatten()
                .map(|c| c.position().unwrap().seq())
                .collect(),
        ),
        _ => None,
    };
    for id in 1..=3 {
        core.send(watch(id)).unwrap();
    }
    let got = frames(1, 3, &seqs);
    assert_eq!(
        got,
        vec![vec![2, 3]; 3],
        "each resumed watch gets the changes after its position"
    );
    assert_eq!(
        metrics.resumes_shared.load(Ordering::Relaxed),
        2,
        "two of three took the first one's read"
    );
    core.send(put(3, 9)).unwrap();
    frames(0, 1, &replies);
    core.send(watch(4)).unwrap();
    let got = frames(1, 1, &|m| match m {
        LinkMessage::Changes(cs)
            if cs
                .changes()
                .iter()
                .flatten()
                .any(|c| c.watch_ids().iter().flatten().any(|w| w == 4)) =>
        {
            seqs(m)
        }
        _ => None,
    });
    assert_eq!(
        got,
        vec![vec![2, 3, 4]],
        "the partition moved: read again, the new change included"
    );
    assert_eq!(metrics.resumes_shared.load(Ordering::Relaxed), 2);
    core.send(CoreMsg::Shutdown).unwrap();
    handle.join().unwrap().unwrap();
}
