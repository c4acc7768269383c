//! The model store behind the hub's property test: every store of the map in one
//! object. Writes (puts, deletes, publishes) go into a per-partition log that is never
//! forgotten by the model (retention only moves the first resumable seq); watches the
//! hub opens are answered as the real store answers them (a paged snapshot, `resumed`
//! plus the missed changes, or `reset` plus a snapshot), and changes are dispatched to
//! the watches that match them. Frames for the hub queue per store until the test pumps
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use wire::cluster::ClusterMap;
use wire::link::{
    ChangeKind, ChangeRef, EntryRef, LinkEncoder, LinkFrame, LinkLimits, LinkMessage, Position,
    decode_frame,
};
use wire::partition::{partition_of, prefix_partition};

pub(super) const PARTITIONS: u32 = 8;
/// Every partition's first epoch.
pub(super) const EPOCH: u64 = 1;

pub(super) fn map() -> ClusterMap {
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

/// Every link frame in `bytes` (all of them whole: the hub only queues whole frames).
pub(super) fn frames(bytes: &[u8]) -> Vec<LinkFrame<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (frame, used) = decode_frame(&bytes[at..], &LinkLimits::default())
            .unwrap()
            .unwrap();
        at += used;
        out.push(frame);
    }
    out
}

pub(super) fn matches(key: &str, target: &str, prefix: bool) -> bool {
    if prefix {
        key.starts_with(target)
    } else {
        key == target
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Put,
    Delete,
    Publish,
}

/// One entry of a partition's log; its seq is its index + 1.
#[derive(Debug, Clone)]
pub(super) struct LogEntry {
    pub key: String,
    pub kind: Kind,
    /// The value written (puts and publishes), unique per entry.
    pub value: Vec<u8>,
    /// The partition's epoch when it was written.
    pub epoch: u64,
}

impl LogEntry {
    /// The key's version after it (0 for a publish, as the store sends it).
    pub fn version(&self, seq: u64) -> u64 {
        if self.kind == Kind::Publish { 0 } else { seq }
    }
}

/// A watch as the model store keeps it.
#[derive(Debug, Clone)]
struct ModelWatch {
    target: String,
    prefix: bool,
    /// The partition it is bound to (a resume, or a tagged target), else every
    /// partition of the store.
    bound: Option<u32>,
}

/// One partition's log and its retention.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub log: Vec<LogEntry>,
    pub epoch: u64,
    /// Every epoch the partition has had.
    pub epochs: Vec<u64>,
    /// The first seq still in the retained log.
    pub first: u64,
}

impl Part {
    pub fn last(&self) -> u64 {
        self.log.len() as u64
    }
}

/// Every store of the map in one model.
pub(super) struct Model {
    pub map: ClusterMap,
    pub parts: Vec<Part>,
    /// Per store: watch id → watch.
    watches: Vec<HashMap<u64, ModelWatch>>,
    /// Per store: frames sent to the hub, not yet delivered.
    pub inbox: Vec<VecDeque<Vec<u8>>>,
    /// Writes committed to the log but not yet dispatched to watches (a batch landing
    /// while a watch starts: the real store's snapshots and resumes read them, and its
    /// dispatch then skips the watches that already read past them): (partition, seq).
    held: Vec<(u32, u64)>,
    /// (watch, partition) → the seq its snapshot or resume read up to.
    read: HashMap<(u64, u32), u64>,
    /// Entries per snapshot frame (the rest follow with `more`).
    pub page: usize,
    enc: LinkEncoder,
}

impl Model {
    pub fn new(page: usize) -> Self {
        Self {
            map: map(),
            parts: vec![
                Part {
                    log: Vec::new(),
                    epoch: EPOCH,
                    epochs: vec![EPOCH],
                    first: 1,
                };
                PARTITIONS as usize
            ],
            watches: vec![HashMap::new(); 2],
            inbox: vec![VecDeque::new(); 2],
            held: Vec::new(),
            read: HashMap::new(),
            page: page.max(1),
            enc: LinkEncoder::new(&LinkLimits::default()),
        }
    }

    pub fn part(&self, p: u32) -> &Part {
        &self.parts[p as usize]
    }

    fn last(&self, p: u32) -> u64 {
        self.part(p).last()
    }

    /// Watches store `s` holds.
    pub fn watch_count(&self) -> usize {
        self.watches.iter().map(HashMap::len).sum()
    }

    /// The partitions store `s` owns.
    pub fn owned(&self, s: usize) -> Vec<u32> {
        (0..PARTITIONS)
            .filter(|&p| self.map.owner_index(p) == Some(s))
            .collect()
    }

    /// The link to store `s` dropped: its watches and the frames in flight are gone.
    pub fn link_lost(&mut self, s: usize) {
        self.inbox[s].clear();
        self.watches[s].clear();
    }

    /// The current values of the keys matching a target in partition `p` as of `seq`:
    /// key → (value, version).
    pub fn state_at(
        &self,
        p: u32,
        seq: u64,
        target: &str,
        prefix: bool,
    ) -> BTreeMap<String, (Vec<u8>, u64)> {
        let mut state = BTreeMap::new();
        for (i, e) in self.part(p).log.iter().enumerate().take(seq as usize) {
            if !matches(&e.key, target, prefix) {
                continue;
            }
            match e.kind {
                Kind::Put => {
                    state.insert(e.key.clone(), (e.value.clone(), i as u64 + 1));
                }
                Kind::Delete => {
                    state.remove(&e.key);
                }
                Kind::Publish => {}
            }
        }
        state
    }

    fn push(&mut self, s: usize, f: impl FnOnce(&mut LinkEncoder, &mut Vec<u8>)) {
        let mut out = Vec::new();
        f(&mut self.enc, &mut out);
        self.inbox[s].push_back(out);
    }

    /// A snapshot of partition `p` for watch `wid`, in pages of `self.page` entries.
    fn snapshot(&mut self, s: usize, wid: u64, p: u32, target: &str, prefix: bool) {
        let last = self.last(p);
        let state = self.state_at(p, last, target, prefix);
        let at = Position::new(p, self.part(p).epoch, last);
        self.read.insert((wid, p), last);
        let entries: Vec<EntryRef<'_>> = state
            .iter()
            .map(|(k, (v, version))| EntryRef {
                key: k,
                value: v,
                version: *version,
            })
            .collect();
        let pages: Vec<&[EntryRef<'_>]> = if entries.is_empty() {
            vec![&[]]
        } else {
            entries.chunks(self.page).collect()
        };
        let n = pages.len();
        let mut frames = Vec::new();
        for (i, page) in pages.into_iter().enumerate() {
            let mut out = Vec::new();
            self.enc
                .snapshot(&mut out, wid, wid, p, page, at, i + 1 < n)
                .unwrap();
            frames.push(out);
        }
        self.inbox[s].extend(frames);
    }

    fn change_frame(&mut self, ids: &[u64], p: u32, seq: u64) -> Vec<u8> {
        let e = self.part(p).log[seq as usize - 1].clone();
        let c = ChangeRef {
            watch_ids: ids,
            position: Position::new(p, e.epoch, seq),
            key: &e.key,
            kind: match e.kind {
                Kind::Put => ChangeKind::Put,
                Kind::Delete => ChangeKind::Delete,
                Kind::Publish => ChangeKind::Publish,
            },
            value: (e.kind != Kind::Delete).then_some(&e.value[..]),
            version: e.version(seq),
        };
        let mut out = Vec::new();
        self.enc.changes(&mut out, 0, &[c]).unwrap();
        out
    }

    /// A watch from `from`: `resumed` and the changes after it, or `reset` and a
    /// snapshot when the position is of another epoch, trimmed or ahead of the log.
    fn resume(&mut self, s: usize, wid: u64, from: Position, target: &str, prefix: bool) {
        let p = from.partition();
        assert_eq!(
            self.map.owner_index(p),
            Some(s),
            "resume sent to the wrong store"
        );
        let part = self.part(p);
        let ok =
            from.epoch() == part.epoch && from.seq() <= part.last() && from.seq() + 1 >= part.first;
        if ok {
            self.push(s, |e, o| e.resumed(o, wid, wid, p).unwrap());
            self.read.insert((wid, p), self.last(p));
            for seq in from.seq() + 1..=self.last(p) {
                if matches(&self.part(p).log[seq as usize - 1].key, target, prefix) {
                    let f = self.change_frame(&[wid], p, seq);
                    self.inbox[s].push_back(f);
                }
            }
        } else {
            let epoch = part.epoch;
            self.push(s, |e, o| e.reset(o, wid, wid, p, epoch, "gone").unwrap());
            self.snapshot(s, wid, p, target, prefix);
        }
    }

    /// What the hub sent store `s`.
    pub fn receive(&mut self, s: usize, bytes: &[u8]) {
        for frame in frames(bytes) {
            match frame.message {
                LinkMessage::Watch(w) => {
                    let (wid, target, prefix) = (w.watch_id(), w.key().to_owned(), w.prefix());
                    let home = if prefix {
                        prefix_partition(target.as_bytes(), PARTITIONS)
                    } else {
                        Some(partition_of(target.as_bytes(), PARTITIONS))
                    };
                    let bound = match w.from().copied() {
                        Some(from) => {
                            self.resume(s, wid, from, &target, prefix);
                            Some(from.partition())
                        }
                        None => {
                            let parts = match home {
                                Some(p) => vec![p],
                                None => self.owned(s),
                            };
                            for p in parts {
                                self.snapshot(s, wid, p, &target, prefix);
                            }
                            home
                        }
                    };
                    let old = self.watches[s].insert(
                        wid,
                        ModelWatch {
                            target,
                            prefix,
                            bound,
                        },
                    );
                    assert!(old.is_none(), "watch id {wid} reused on store {s}");
                }
                LinkMessage::Unwatch(u) => {
                    self.watches[s].remove(&u.watch_id());
                }
                LinkMessage::Ping(p) => {
                    let nonce = p.nonce();
                    self.push(s, |e, o| e.pong(o, frame.request_id, nonce).unwrap());
                }
                // Every link's return announces the worker's presence members: none
                // here (these tests join nothing).
                LinkMessage::PresenceSync(p) => {
                    assert!(p.last() && p.entries().is_none_or(|e| e.is_empty()));
                }
                other => panic!("unexpected {:?}", other.kind()),
            }
        }
    }

    /// Commit a write; dispatch it now unless `hold` (or earlier writes are held).
    pub fn write(&mut self, key: &str, kind: Kind, hold: bool) {
        let p = partition_of(key.as_bytes(), PARTITIONS);
        let part = &mut self.parts[p as usize];
        let seq = part.last() + 1;
        part.log.push(LogEntry {
            key: key.to_owned(),
            kind,
            value: format!("v{p}.{seq}").into_bytes(),
            epoch: part.epoch,
        });
        if hold || !self.held.is_empty() {
            self.held.push((p, seq));
        } else {
            self.dispatch(p, seq);
        }
    }

    /// Dispatch the held writes, in order.
    pub fn release(&mut self) {
        for (p, seq) in std::mem::take(&mut self.held) {
            self.dispatch(p, seq);
        }
    }

    /// Keep only the last `keep` entries of every partition of store `s` resumable.
    pub fn trim(&mut self, s: usize, keep: u64) {
        for p in self.owned(s) {
            let part = &mut self.parts[p as usize];
            part.first = part.first.max((part.last() + 1).saturating_sub(keep));
        }
    }

    /// Store `s` lost its logs: a new epoch for each of its partitions, nothing before
    /// it resumable, values kept.
    pub fn new_epoch(&mut self, s: usize, epoch: u64) {
        for p in self.owned(s) {
            let part = &mut self.parts[p as usize];
            let mut epoch = epoch.wrapping_add(u64::from(p)).max(2);
            while part.epochs.contains(&epoch) {
                epoch = epoch.wrapping_add(1).max(2);
            }
            part.epoch = epoch;
            part.epochs.push(epoch);
            part.first = part.last() + 1;
        }
    }

    fn dispatch(&mut self, p: u32, seq: u64) {
        let s = self.map.owner_index(p).unwrap();
        let key = self.part(p).log[seq as usize - 1].key.clone();
        let read = &self.read;
        let mut ids: Vec<u64> = self.watches[s]
            .iter()
            .filter(|(_, w)| matches(&key, &w.target, w.prefix) && w.bound.is_none_or(|b| b == p))
            .map(|(&w, _)| w)
            .filter(|w| read.get(&(*w, p)).is_none_or(|&r| r < seq))
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return;
        }
        let f = self.change_frame(&ids, p, seq);
        self.inbox[s].push_back(f);
    }
}
