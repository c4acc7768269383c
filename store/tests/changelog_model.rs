//! Property test: random sequences of put / delete / publish (conditional or not, some
//! with a msg_id), trims, restarts, snapshots and resumes against a plain model of what
//! a partitioned log must do. Checked: every write's outcome and version, every resume's
//! changes (order, no gap, no duplicate) and that a reset happens exactly when the
//! position is outside the retained log or from another epoch; a write repeating a
//! remembered msg_id is answered with the first's outcome and logs nothing (or is
//! refused if it asks for something else), until its window passes or it is evicted
//! as the oldest past the bound, across restarts. Runs with chain-head caches from
//! none to the default, so heads come from memory and from the engine alike.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use store::changelog::{ChangeLog, Position, Repeat, Resume, Retention, Target, Write, Written};
use store::dedup::{DedupLimits, MsgId};
use store::engine::Read as _;
use store::engine::memory::MemoryEngine;
use store::error::{Refused, StoreError};
use store::records::ChangeKind;

const PARTITIONS: u32 = 4;
const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"{t}1", b"{t}2", b"x\0y", b"x"];
const PREFIXES: &[&[u8]] = &[b"", b"a", b"ab", b"{t}", b"x", b"x\0"];
/// Remembered writes: a window of 25 ops (each op advances the clock by 10 ms), and at
/// most 3 per partition.
const DEDUP: DedupLimits = DedupLimits {
    window_ms: 250,
    max_entries: 3 * PARTITIONS as usize,
};

/// One write of a batch: kind, key, if_version hint, value, msg_id (scope and id).
type Item = (u8, usize, Option<u8>, u8, Option<u8>);

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<Item>),
    Trim(u8, u64),
    Restart,
    Resume(usize, bool, usize), // (position index, prefix?, key/prefix index)
}

fn op() -> impl Strategy<Value = Op> {
    let item = (
        0u8..3,
        0..KEYS.len(),
        proptest::option::of(0u8..4),
        0u8..3,
        proptest::option::of(0u8..4),
    );
    prop_oneof![
        6 => proptest::collection::vec(item, 1..6).prop_map(Op::Batch),
        1 => (0u8..4, 0u64..4).prop_map(|(p, keep)| Op::Trim(p, keep)),
        1 => Just(Op::Restart),
        4 => (any::<usize>(), any::<bool>(), any::<usize>()).prop_map(|(i, pre, k)| Op::Resume(i, pre, k)),
    ]
}

#[derive(Debug, Clone)]
struct Logged {
    seq: u64,
    key: Vec<u8>,
    kind: ChangeKind,
    value: Option<Vec<u8>>,
}

/// What the model remembers of a write with a msg_id.
#[derive(Debug, Clone)]
struct Remembered {
    /// Key, scope, id.
    at: (Vec<u8>, Vec<u8>, Vec<u8>),
    /// What it asked for.
    asked: Write,
    outcome: Repeat,
    time: u64,
}

#[derive(Default)]
struct Model {
    /// partition → its log (all entries ever, with the first retained seq tracked apart)
    logs: BTreeMap<u32, Vec<Logged>>,
    first: BTreeMap<u32, u64>,
    current: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    /// partition → remembered writes, oldest first.
    remembered: BTreeMap<u32, Vec<Remembered>>,
}

impl Model {
    fn last(&self, p: u32) -> u64 {
        self.logs
            .get(&p)
            .and_then(|l| l.last())
            .map_or(0, |e| e.seq)
    }
    fn version(&self, key: &[u8]) -> u64 {
        self.current.get(key).map_or(0, |c| c.0)
    }
    fn remembered(
        &self,
        p: u32,
        at: &(Vec<u8>, Vec<u8>, Vec<u8>),
        now: u64,
    ) -> Option<&Remembered> {
        self.remembered
            .get(&p)?
            .iter()
            .find(|r| &r.at == at && now - r.time < DEDUP.window_ms)
    }
    fn remember(&mut self, p: u32, r: Remembered) {
        let list = self.remembered.entry(p).or_default();
        list.retain(|o| o.at != r.at);
        list.push(r);
    }
    /// The sweep at the end of a batch: from the oldest, entries past their window or
    /// over the bound go, stopping at one that stays or that this batch wrote.
    fn sweep(&mut self, now: u64, before: &BTreeMap<u32, u64>) {
        let share = DEDUP.max_entries / PARTITIONS as usize;
        for (p, list) in &mut self.remembered {
            while let Some(r) = list.first() {
                let expired = now - r.time >= DEDUP.window_ms;
                if r.outcome.position.seq > before[p] || !(expired || list.len() > share) {
                    break;
                }
                list.remove(0);
            }
        }
    }
    fn held(&self) -> u64 {
        self.remembered.values().map(|l| l.len() as u64).sum()
    }
}

/// The write an item asks for (`model` supplies the version a hint refers to).
fn write_of(&(kind, k, hint, v, msg): &Item, model: &Model) -> Write {
    let key = KEYS[k].to_vec();
    // hint 0: the right version, 1: absent (0), 2/3: something else
    let if_version = hint.map(|h| match h {
        0 => model.version(&key),
        1 => 0,
        _ => 999,
    });
    let msg_id = msg.map(|m| MsgId {
        scope: vec![b's', m % 2],
        id: vec![b'm', m / 2],
    });
    match kind {
        0 => Write::Put {
            key,
            value: vec![v],
            if_version,
            msg_id,
        },
        1 => Write::Delete {
            key,
            if_version,
            msg_id,
        },
        _ => Write::Publish {
            key,
            value: vec![v],
            msg_id,
        },
    }
}

/// Whether two writes ask for the same thing (msg_ids aside).
fn same_ask(a: &Write, b: &Write) -> bool {
    match (a, b) {
        (
            Write::Put {
                value: v,
                if_version: i,
                ..
            },
            Write::Put {
                value: w,
                if_version: j,
                ..
            },
        ) => v == w && i == j,
        (Write::Delete { if_version: i, .. }, Write::Delete { if_version: j, .. }) => i == j,
        (Write::Publish { value: v, .. }, Write::Publish { value: w, .. }) => v == w,
        _ => false,
    }
}

/// Check one batch's results against the model, updating it; returns the positions of
/// the changes logged.
fn check_batch(
    writes: &[Write],
    results: Vec<Result<Written, StoreError>>,
    log: &ChangeLog<MemoryEngine>,
    model: &mut Model,
    epochs: &BTreeMap<u32, u64>,
    now: u64,
) -> Result<Vec<Position>, TestCaseError> {
    prop_assert_eq!(results.len(), writes.len());
    let before: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, model.last(p))).collect();
    let mut logged = Vec::new();
    for (w, r) in writes.iter().zip(results) {
        let key = w.key().to_vec();
        let p = log.partition_of(&key);
        let at = w
            .msg_id()
            .map(|m| (key.clone(), m.scope.clone(), m.id.clone()));
        if let Some(first) = at.as_ref().and_then(|at| model.remembered(p, at, now)) {
            if same_ask(&first.asked, w) {
                prop_assert_eq!(r.unwrap(), Written::Repeat(first.outcome));
            } else {
                prop_assert!(
                    matches!(r, Err(StoreError::Refused(Refused::MsgIdReused))),
                    "expected msg_id reused, got {:?}",
                    r
                );
            }
            continue;
        }
        let current = model.version(&key);
        let want = match w {
            Write::Put { if_version, .. } | Write::Delete { if_version, .. } => *if_version,
            Write::Publish { .. } => None,
        };
        if let Some(want) = want
            && want != current
        {
            match r {
                Err(StoreError::Refused(Refused::Conflict { current: c })) => {
                    prop_assert_eq!(c, current)
                }
                other => prop_assert!(false, "expected conflict, got {:?}", other),
            }
            continue;
        }
        let Written::New(c) = r.unwrap() else {
            return Err(TestCaseError::fail("a repeat where none was remembered"));
        };
        let seq = model.last(p) + 1;
        prop_assert_eq!(
            c.position,
            Position {
                partition: p,
                epoch: epochs[&p],
                seq
            }
        );
        let (kind, value) = match w {
            Write::Put { value, .. } => {
                model.current.insert(key.clone(), (seq, value.clone()));
                (ChangeKind::Put, Some(value.clone()))
            }
            Write::Delete { .. } => {
                model.current.remove(&key);
                (ChangeKind::Delete, None)
            }
            Write::Publish { value, .. } => (ChangeKind::Publish, Some(value.clone())),
        };
        prop_assert_eq!(c.kind, kind);
        prop_assert_eq!(c.version, if kind == ChangeKind::Publish { 0 } else { seq });
        if let Some(at) = at {
            let outcome = Repeat {
                position: c.position,
                version: c.version,
            };
            model.remember(
                p,
                Remembered {
                    at,
                    asked: w.clone(),
                    outcome,
                    time: now,
                },
            );
        }
        model.logs.entry(p).or_default().push(Logged {
            seq,
            key,
            kind,
            value,
        });
        logged.push(c.position);
    }
    model.sweep(now, &before);
    prop_assert_eq!(log.dedup_stats().entries, model.held());
    Ok(logged)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changelog_matches_model(ops in proptest::collection::vec(op(), 1..40), cache in prop_oneof![Just(0usize), 1usize..4, Just(store::changelog::DEFAULT_HEAD_CACHE)]) {
        let engine = Arc::new(MemoryEngine::new());
        let owned: Vec<u32> = (0..PARTITIONS).collect();
        let mut next_epoch = 100u64;
        let mut log = ChangeLog::open(Arc::clone(&engine), PARTITIONS, &owned, || { next_epoch += 1; next_epoch }).unwrap();
        // A tiny cache of chain heads makes most writes read them back from the engine.
        log.set_head_cache(cache);
        log.set_dedup_limits(DEDUP);
        let epochs: BTreeMap<u32, u64> = owned.iter().map(|&p| (p, log.position(p).unwrap().epoch)).collect();
        let mut model = Model::default();
        let mut positions: Vec<Position> = owned.iter().map(|&p| log.position(p).unwrap()).collect();
        let mut now = 1_000u64;

        for op in ops {
            now += 10;
            match op {
                Op::Batch(items) => {
                    let writes: Vec<Write> = items.iter().map(|item| write_of(item, &model)).collect();
                    // The model decides each outcome in order, as the log must.
                    let results = log.apply(&writes, now, true);
                    positions.extend(check_batch(&writes, results, &log, &mut model, &epochs, now)?);
                }
                Op::Trim(p, keep) => {
                    let removed = log.trim(u32::from(p), Retention { min_entries: keep, min_age_ms: 0 }, now, 2).unwrap();
                    let last = model.last(u32::from(p));
                    let first = model.first.entry(u32::from(p)).or_insert(1);
                    let held = (last + 1).saturating_sub(*first);
                    prop_assert_eq!(removed, held.saturating_sub(keep).min(2));
                    *first += removed;
                }
                Op::Restart => {
                    log = ChangeLog::open(Arc::clone(&engine), PARTITIONS, &owned, || unreachable!("no new epoch on restart")).unwrap();
                    log.set_head_cache(cache);
                    log.set_dedup_limits(DEDUP);
                    for &p in &owned {
                        prop_assert_eq!(log.position(p).unwrap(), Position { partition: p, epoch: epochs[&p], seq: model.last(p) });
                    }
                    prop_assert_eq!(log.dedup_stats().entries, model.held(), "every remembered write is loaded");
                }
                Op::Resume(i, prefix, k) => {
                    let from = positions[i % positions.len()];
                    let target = if prefix { Target::Prefix(PREFIXES[k % PREFIXES.len()]) } else { Target::Key(KEYS[k % KEYS.len()]) };
                    let p = from.partition;
                    let first = model.first.get(&p).copied().unwrap_or(1);
                    match log.resume(from, target).unwrap() {
                        Resume::Reset { now, .. } => {
                            prop_assert!(from.seq + 1 < first, "reset although {} is retained (first {})", from.seq, first);
                            prop_assert_eq!(now.seq, model.last(p));
                        }
                        Resume::Changes { changes, upto } => {
                            prop_assert!(from.seq + 1 >= first, "resumed {} although the log starts at {}", from.seq, first);
                            prop_assert_eq!(upto.seq, model.last(p));
                            let want: Vec<_> = model.logs.get(&p).into_iter().flatten()
                                .filter(|e| e.seq > from.seq && target.matches(&e.key))
                                .map(|e| (e.seq, e.key.clone(), e.kind, e.value.clone())).collect();
                            let got: Vec<_> = changes.into_iter().map(|c| (c.position.seq, c.key, c.kind, c.value)).collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                    // The raw log after the position is the model's retained log after it.
                    if from.seq + 1 >= first {
                        let raw: Vec<_> = log.log_after(p, from.seq, usize::MAX).unwrap().into_iter().map(|c| (c.position.seq, c.key)).collect();
                        let want: Vec<_> = model.logs.get(&p).into_iter().flatten().filter(|e| e.seq > from.seq).map(|e| (e.seq, e.key.clone())).collect();
                        prop_assert_eq!(raw, want);
                    }
                    // Snapshots equal the model's current values.
                    let snap: Vec<_> = log.snapshot(p, target).unwrap().0.into_iter().map(|(k, c)| (k, c.version, c.value)).collect();
                    let want: Vec<_> = model.current.iter()
                        .filter(|(k, _)| target.matches(k) && log.partition_of(k) == p)
                        .map(|(k, (v, val))| (k.clone(), *v, val.clone())).collect();
                    prop_assert_eq!(snap, want);
                }
            }
        }
    }
}

#[test]
fn other_epoch_and_future_positions_reset() {
    let engine = Arc::new(MemoryEngine::new());
    let mut log = ChangeLog::open(engine, 1, &[0], || 7).unwrap();
    log.apply(
        &[Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            if_version: None,
            msg_id: None,
        }],
        1,
        true,
    );
    let now = log.position(0).unwrap();
    let other = Position { epoch: 8, ..now };
    assert!(matches!(
        log.resume(other, Target::Key(b"k")).unwrap(),
        Resume::Reset { .. }
    ));
    let future = Position {
        seq: now.seq + 1,
        ..now
    };
    assert!(matches!(
        log.resume(future, Target::Key(b"k")).unwrap(),
        Resume::Reset { .. }
    ));
    let here = log.resume(now, Target::Key(b"k")).unwrap();
    assert_eq!(
        here,
        Resume::Changes {
            changes: vec![],
            upto: now
        }
    );
}

#[test]
fn a_lost_log_gets_a_new_epoch_and_versions_never_go_back() {
    use store::engine::{Engine, WriteBatch};
    let engine = Arc::new(MemoryEngine::new());
    let mut log = ChangeLog::open(Arc::clone(&engine), 1, &[0], || 1).unwrap();
    for i in 0..5u8 {
        log.apply(
            &[Write::Put {
                key: vec![b'k', i],
                value: vec![i],
                if_version: None,
                msg_id: None,
            }],
            1,
            true,
        );
    }
    // Lose the log's bookkeeping (as if its files were gone).
    let mut b = WriteBatch::default();
    b.delete(store::keys::epoch(0));
    b.delete(store::keys::last_seq(0));
    b.delete(store::keys::first_seq(0));
    engine.write(b, true).unwrap();
    let log = ChangeLog::open(engine, 1, &[0], || 2).unwrap();
    let pos = log.position(0).unwrap();
    assert_eq!(pos.epoch, 2);
    assert_eq!(
        pos.seq, 5,
        "seqs continue above the highest surviving version"
    );
    let old = Position {
        partition: 0,
        epoch: 1,
        seq: 3,
    };
    assert!(matches!(
        log.resume(old, Target::Prefix(b"")).unwrap(),
        Resume::Reset { .. }
    ));
}

#[test]
fn an_unclean_stop_under_sync_false_renews_epochs_and_nothing_else_does() {
    let engine = Arc::new(MemoryEngine::new());
    let epoch_of = |log: &ChangeLog<MemoryEngine>| log.position(0).unwrap().epoch;
    let mut n = 10;
    let mut next = move || {
        n += 1;
        n
    };
    // First run, sync = false, stops cleanly: same epoch afterwards.
    let mut log = ChangeLog::open(Arc::clone(&engine), 1, &[0], &mut next).unwrap();
    assert!(!log.begin_run(false, &mut next).unwrap());
    let first = epoch_of(&log);
    log.end_run().unwrap();
    let mut log = ChangeLog::open(Arc::clone(&engine), 1, &[0], &mut next).unwrap();
    assert!(!log.begin_run(false, &mut next).unwrap());
    assert_eq!(epoch_of(&log), first);
    // This run (sync = false) is killed: the next one renews the epoch.
    log.apply(
        &[Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            if_version: None,
            msg_id: None,
        }],
        1,
        false,
    );
    drop(log);
    let mut log = ChangeLog::open(Arc::clone(&engine), 1, &[0], &mut next).unwrap();
    assert!(log.begin_run(true, &mut next).unwrap());
    let renewed = epoch_of(&log);
    assert_ne!(renewed, first);
    assert_eq!(log.position(0).unwrap().seq, 1, "seqs continue");
    // A killed sync = true run renews nothing.
    drop(log);
    let mut log = ChangeLog::open(engine, 1, &[0], &mut next).unwrap();
    assert!(!log.begin_run(true, &mut next).unwrap());
    assert_eq!(epoch_of(&log), renewed);
}

/// A trim that removes a key's old delete must not remove the key's record when a
/// write to the key is prepared but not yet committed (here: in the same batch).
#[test]
fn trimming_a_delete_keeps_a_value_written_since() {
    let engine = Arc::new(MemoryEngine::new());
    let mut log = ChangeLog::open(Arc::clone(&engine), 1, &[0], || 7).unwrap();
    log.apply(
        &[Write::Delete {
            key: b"k".to_vec(),
            if_version: None,
            msg_id: None,
        }],
        1,
        true,
    )
    .into_iter()
    .for_each(|r| assert_eq!(r.unwrap().position().seq, 1));
    let mut prepared = log.prepare(
        &[Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            if_version: Some(0),
            msg_id: None,
        }],
        2,
    );
    let everything = Retention {
        min_entries: 0,
        min_age_ms: 0,
    };
    log.prepare_trim(0, everything, 3, 10, &mut prepared)
        .unwrap();
    assert_eq!(prepared.trimmed, [(0, 2)]);
    let results = log.commit_here(prepared, true);
    assert_eq!(results[0].as_ref().unwrap().version(), 2);
    let (cur, at) = log.get(b"k").unwrap();
    assert_eq!(cur.map(|c| (c.version, c.value)), Some((2, b"v".to_vec())));
    assert_eq!(at.seq, 2);
    // Once the put is trimmed too, the value stays (it is current); a later delete's
    // tombstone goes once that delete is trimmed, and the key can be created anew.
    assert_eq!(log.trim(0, everything, 4, 10).unwrap(), 1);
    assert_eq!(log.get(b"k").unwrap().0.map(|c| c.version), Some(2));
    log.apply(
        &[Write::Delete {
            key: b"k".to_vec(),
            if_version: Some(2),
            msg_id: None,
        }],
        5,
        true,
    );
    assert_eq!(log.trim(0, everything, 6, 10).unwrap(), 1);
    assert!(
        engine.get(&store::keys::value(0, b"k")).unwrap().is_none(),
        "tombstone collected"
    );
    let r = log.apply(
        &[Write::Put {
            key: b"k".to_vec(),
            value: b"w".to_vec(),
            if_version: Some(0),
            msg_id: None,
        }],
        7,
        true,
    );
    assert_eq!(r[0].as_ref().unwrap().position().seq, 4);
    // The log holds only seq 4: resuming from 3 returns exactly it.
    let from = Position {
        partition: 0,
        epoch: 7,
        seq: 3,
    };
    match log.resume(from, Target::Key(b"k")).unwrap() {
        Resume::Changes { changes, .. } => assert_eq!(
            changes.iter().map(|c| c.position.seq).collect::<Vec<_>>(),
            [4]
        ),
        other => panic!("{other:?}"),
    }
}
