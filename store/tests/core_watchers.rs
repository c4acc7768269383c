//! Property test through the core thread (no network): random writes, watches (fresh
//! or resumed from an earlier position) and unwatches from several fake links. Every
//! watch must receive, for each partition it covers, every matching change after its
//! starting point (its snapshot's position, or the position it resumed from) exactly
//! once and in order, up to its unwatch, and nothing else.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use store::changelog::{ChangeLog, Position, Retention, Write};
use store::core::{CoreConfig, CoreMsg, Outbox, Req, spawn};
use store::engine::memory::MemoryEngine;
use wire::link::{LinkLimits, LinkMessage, decode_frame};

const PARTITIONS: u32 = 4;
const KEYS: &[&str] = &["a", "ab", "b", "{t}1", "{t}2", "c"];
const PREFIXES: &[&str] = &["", "a", "{t}", "c"];

#[derive(Debug, Clone)]
enum Op {
    Write(usize, u8),
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
        5 => (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| Op::Write(k, v)),
        2 => (0u64..3, any::<bool>(), any::<usize>(), proptest::option::of(any::<usize>()))
            .prop_map(|(link, prefix, target, resume)| Op::Watch { link, prefix, target, resume }),
        1 => (0u64..3, any::<usize>()).prop_map(|(link, nth)| Op::Unwatch { link, nth }),
    ]
}

/// A watch as the model sees it.
struct ModelWatch {
    link: u64,
    id: u64,
    target: String,
    prefix: bool,
    /// Index into `writes` of the first write it may see, per partition start seq.
    from: Option<Position>,
    registered_at: usize,
    removed_at: Option<usize>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn each_watch_gets_exactly_its_changes(ops in proptest::collection::vec(op(), 1..40)) {
        let engine = Arc::new(MemoryEngine::new());
        let owned: Vec<u32> = (0..PARTITIONS).collect();
        let log = ChangeLog::open(engine, PARTITIONS, &owned, || 5).unwrap();
        let cfg = CoreConfig { store_id: "t".into(), map_version: 1, sync: false, retention: Retention::default(), max_drain: 64, max_link_queue_bytes: 1 << 30, ..CoreConfig::default() };
        let (core, handle) = spawn(log, cfg).unwrap();
        let mut rxs = BTreeMap::new();
        for link in 0..3u64 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let outbox = Outbox { tx, queued: Arc::new(AtomicUsize::new(0)), close: Arc::new(tokio::sync::Notify::new()) };
            core.send(CoreMsg::Open { link, outbox }).unwrap();
            rxs.insert(link, rx);
        }
        // Writes in commit order: (partition, seq, key). Seqs are known in advance:
        // unconditional writes always succeed, each partition counts from 1, and all
        // come from link 0, whose requests take effect in order. Watches come from any
        // link, so a resume position may be ahead of what is committed when the watch
        // starts (it then gets a reset and a snapshot, which the check follows).
        let mut writes: Vec<(u32, u64, String)> = Vec::new();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        let mut watches: Vec<ModelWatch> = Vec::new();
        let mut next_id = 1u64;
        for op in ops {
            match op {
                Op::Write(k, v) => {
                    let key = KEYS[k];
                    let p = store::partition::partition_of(key.as_bytes(), PARTITIONS);
                    let seq = last.entry(p).or_insert(0);
                    *seq += 1;
                    writes.push((p, *seq, key.to_owned()));
                    let w = Write::Put { key: key.as_bytes().to_vec(), value: vec![v], if_version: None };
                    core.send(CoreMsg::Request { link: 0, request_id: 0, req: Req::Write(w) }).unwrap();
                }
                Op::Watch { link, prefix, target, resume } => {
                    let target = if prefix { PREFIXES[target % PREFIXES.len()] } else { KEYS[target % KEYS.len()] }.to_owned();
                    // Resume from the position right after an earlier write, if any.
                    let from = resume.and_then(|i| (!writes.is_empty()).then(|| {
                        let (p, seq, _) = &writes[i % writes.len()];
                        Position { partition: *p, epoch: 5, seq: *seq }
                    }));
                    let id = next_id;
                    next_id += 1;
                    core.send(CoreMsg::Request { link, request_id: id, req: Req::Watch { watch_id: id, target: target.clone(), prefix, from } }).unwrap();
                    watches.push(ModelWatch { link, id, target, prefix, from, registered_at: writes.len(), removed_at: None });
                }
                Op::Unwatch { link, nth } => {
                    let live: Vec<usize> = (0..watches.len()).filter(|&i| watches[i].link == link && watches[i].removed_at.is_none()).collect();
                    if let Some(&i) = live.get(nth % live.len().max(1)) {
                        watches[i].removed_at = Some(writes.len());
                        core.send(CoreMsg::Request { link, request_id: 0, req: Req::Unwatch(watches[i].id) }).unwrap();
                    }
                }
            }
        }
        core.send(CoreMsg::Shutdown).unwrap();
        handle.join().unwrap().unwrap();

        // What each watch received: per partition, its start and the change seqs.
        let mut starts: BTreeMap<(u64, u64, u32), u64> = BTreeMap::new();
        let mut got: BTreeMap<(u64, u64, u32), Vec<(u64, String)>> = BTreeMap::new();
        for (link, mut rx) in rxs {
            let mut bytes = Vec::new();
            while let Ok(b) = rx.try_recv() { bytes.extend_from_slice(&b); }
            let mut at = 0;
            while let Some((f, used)) = decode_frame(&bytes[at..], &LinkLimits::default()).unwrap() {
                at += used;
                match f.message {
                    LinkMessage::Snapshot(s) => { starts.insert((link, s.watch_id(), s.partition()), s.position().unwrap().seq()); }
                    LinkMessage::Resumed(r) => {
                        let w = watches.iter().find(|w| w.link == link && w.id == r.watch_id()).unwrap();
                        starts.insert((link, r.watch_id(), r.partition()), w.from.unwrap().seq);
                    }
                    LinkMessage::Changes(cs) => {
                        for c in cs.changes().iter().flatten() {
                            for id in c.watch_ids().iter().flatten() {
                                let p = c.position().unwrap();
                                got.entry((link, id, p.partition())).or_default().push((p.seq(), c.key().to_owned()));
                            }
                        }
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(at, bytes.len());
        }
        for w in &watches {
            let matches = |k: &str| if w.prefix { k.starts_with(&w.target) } else { k == w.target };
            let end = w.removed_at.unwrap_or(writes.len());
            for p in 0..PARTITIONS {
                let Some(&start) = starts.get(&(w.link, w.id, p)) else {
                    // Not covering this partition: it must have received nothing there.
                    prop_assert!(got.get(&(w.link, w.id, p)).is_none_or(Vec::is_empty));
                    continue;
                };
                let wanted = |upto: usize| -> Vec<(u64, String)> {
                    writes[..upto].iter()
                        .filter(|(wp, seq, k)| *wp == p && *seq > start && matches(k))
                        .map(|(_, seq, k)| (*seq, k.clone())).collect()
                };
                let have = got.remove(&(w.link, w.id, p)).unwrap_or_default();
                let what = format!("watch {} on {:?} (prefix {}) partition {} from {}", w.id, w.target, w.prefix, p, start);
                if w.removed_at.is_none() {
                    prop_assert_eq!(have, wanted(writes.len()), "{}", what);
                } else {
                    // An unwatch takes effect after the writes its own link sent before
                    // it (all writes come from link 0); writes from other links may or
                    // may not land first. Either way: a gap-free run from the start.
                    let all = wanted(writes.len());
                    prop_assert!(have.len() <= all.len() && have[..] == all[..have.len()], "{}: {:?} is not a prefix of {:?}", what, have, all);
                    if w.link == 0 {
                        let must = wanted(end);
                        prop_assert!(have.len() >= must.len(), "{}: {:?} misses some of {:?}", what, have, must);
                    }
                }
            }
            let _ = w.registered_at;
        }
    }
}
