//! The partitions a store owns and their change logs. Writes flow in through
//! [`ChangeLog::prepare`], many at a time: each is checked (limits, partition served
//! here, conditional version), given the next seq of its partition, and turned into two
//! records of **one** engine batch: its log entry, which points at the previous change
//! of its key's chain, and the chain's new head (the key's value, or tombstone, for a
//! put or delete; its publish head for a publish). The heads of recently written keys
//! are kept in memory, so a write rarely reads. The caller commits the batch (one fsync
//! when `sync`), possibly on another thread, and reports the outcome with
//! [`ChangeLog::committed`] or [`ChangeLog::abort`]; only then does the committed
//! position advance. A second batch may be prepared while the first is being committed
//! (its seqs follow the first's), which is how the core keeps the engine busy.
//! [`ChangeLog::apply`] does all three in one call. [`ChangeLog::prepare_trim`] adds the
//! removal of a partition's oldest entries to a batch the same way.
//!
//! A write with a msg_id is also remembered in its batch ([`crate::dedup`]); a repeat
//! of a remembered write is not logged again but answered with the first's outcome
//! ([`Written::Repeat`]), and each batch sweeps out remembered writes past their window.
//!
//! Reads (`get`, `snapshot`, `resume`) each run against one engine snapshot and take
//! the partition's position in it (its last log entry, or the last-seq counter written
//! at creation and by trims when that is higher), so the position they report is
//! exactly the state they read, even while a batch is landing. A resume walks the
//! target's chains back from their heads: it reads what it returns. A failure says who
//! is at fault ([`StoreError`]).
//!
//! A position `(partition, epoch, seq)` means "every change of the partition up to
//! `seq` in this epoch". It can be resumed when its epoch is the partition's and the
//! log still holds every entry after it; otherwise the answer is a reset.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dedup::{self, Dedup, DedupLimits, DedupStats, MsgId};
use crate::engine::{Engine, EngineError, Read, WriteBatch};
use crate::error::{Corrupt, Failure, Refused, StoreError};
use crate::keys;
use crate::records::{self, ChangeKind, Current, Remembered};

/// A point in one partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// Its epoch.
    pub epoch: u64,
    /// The last seq included.
    pub seq: u64,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where it sits in its partition's log (its seq is `position.seq`).
    pub position: Position,
    /// The key.
    pub key: Vec<u8>,
    /// What it did.
    pub kind: ChangeKind,
    /// The value put or published.
    pub value: Option<Vec<u8>>,
    /// The key's version after the change (its seq) for put and delete; 0 for publish.
    pub version: u64,
}

impl Change {
    /// The change a log entry at `position` records.
    fn logged(position: Position, e: records::LogEntry) -> Self {
        let version = if e.kind == ChangeKind::Publish {
            0
        } else {
            position.seq
        };
        Self {
            position,
            key: e.key,
            kind: e.kind,
            value: e.value,
            version,
        }
    }
}

/// The seq of partition `p`'s last log entry (0: none).
fn logged_upto(r: &dyn Read, p: u32) -> Result<u64, EngineError> {
    let (start, end) = keys::log_range(p);
    Ok(r.last(&start, &end)?
        .map_or(0, |(k, _)| keys::seq_of_log(&k)))
}

/// The record at `key` decoded by `decode` (`None`: absent), as `r` sees it.
fn read_record<T>(
    r: &dyn Read,
    key: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, Corrupt>,
) -> Result<Option<T>, Failure> {
    Ok(r.get(key)?.map(|b| decode(&b)).transpose()?)
}

/// Visit every pair in `[start, end)`, reading `SCAN_PAGE` at a time.
pub(crate) fn scan_all(
    engine: &dyn Read,
    mut start: Vec<u8>,
    end: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    loop {
        let page = engine.scan(&start, end, SCAN_PAGE)?;
        for (k, v) in &page {
            visit(k, v)?;
        }
        match page.last() {
            Some((k, _)) if page.len() == SCAN_PAGE => {
                start = k.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Every accepted write in `results` failed with `e` (its batch was not committed).
pub fn fail_all(
    results: Vec<Result<Written, StoreError>>,
    e: &Failure,
) -> Vec<Result<Written, StoreError>> {
    results
        .into_iter()
        .map(|r| r.and_then(|_| Err(StoreError::Failed(e.clone()))))
        .collect()
}

fn check_limits(w: &Write) -> Result<(), Refused> {
    let key = w.key().len();
    if key > MAX_KEY_BYTES {
        return Err(Refused::TooLarge {
            what: "key",
            len: key,
            max: MAX_KEY_BYTES,
        });
    }
    let value = match w {
        Write::Put { value, .. } | Write::Publish { value, .. } => value.len(),
        Write::Delete { .. } => 0,
    };
    if value > MAX_VALUE_BYTES {
        return Err(Refused::TooLarge {
            what: "value",
            len: value,
            max: MAX_VALUE_BYTES,
        });
    }
    if let Some(m) = w.msg_id() {
        for (what, len, max) in [
            ("msg_id", m.id.len(), dedup::MAX_MSG_ID_BYTES),
            ("msg_id scope", m.scope.len(), dedup::MAX_SCOPE_BYTES),
        ] {
            if len > max {
                return Err(Refused::TooLarge { what, len, max });
            }
        }
    }
    Ok(())
}

/// The heads of every chain `target` covers in partition `p`: one key's two, or those
/// of every key under the prefix (tombstones included: a delete is a change).
fn chain_heads(r: &dyn Read, p: u32, target: Target<'_>) -> Result<Vec<u64>, Failure> {
    let mut heads: Vec<u64> = Vec::new();
    match target {
        Target::Key(k) => {
            let value = read_record(r, &keys::value(p, k), records::decode_current)?;
            heads.extend(value.map(|s| s.version));
            heads.extend(read_record(
                r,
                &keys::publish_head(p, k),
                records::decode_u64,
            )?);
        }
        Target::Prefix(prefix) => {
            let (vs, ve) = keys::value_prefix_range(p, prefix);
            scan_all(r, vs, &ve, |_, v| {
                heads.push(records::decode_current(v)?.version);
                Ok(())
            })?;
            let (hs, he) = keys::publish_prefix_range(p, prefix);
            scan_all(r, hs, &he, |_, v| {
                heads.push(records::decode_u64(v)?);
                Ok(())
            })?;
        }
    }
    Ok(heads)
}

/// The changes on the chains starting at `heads` after seq `after`, up to `now`
/// (unordered). Each chain is walked back to `after`: every entry read is one returned,
/// and the entry at or before `after` is never read (its successor's `prev` says so).
/// `None` when an entry is missing (trimmed since `now` was read).
fn walk_chains(
    r: &dyn Read,
    heads: Vec<u64>,
    after: u64,
    now: Position,
) -> Result<Option<Vec<Change>>, Failure> {
    let p = now.partition;
    let mut changes = Vec::new();
    for mut seq in heads {
        while seq > after {
            let Some(bytes) = r.get(&keys::log(p, seq))? else {
                return Ok(None);
            };
            let entry = records::decode_entry(&bytes)?;
            let prev = entry.prev;
            if seq <= now.seq {
                changes.push(Change::logged(Position { seq, ..now }, entry));
            }
            if prev >= seq {
                return Err(Corrupt::new(
                    "log",
                    format!("entry {seq} of partition {p} points forward to {prev}"),
                )
                .into());
            }
            seq = prev;
        }
    }
    Ok(Some(changes))
}

/// A key and its current value, as a snapshot returns them.
pub type Entry = (Vec<u8>, Current);

/// `Ok` when a write's `if_version` holds for a key whose put/delete chain ends at
/// `head` (`exists`: with a value). A deleted or absent key has version 0.
fn check_version(want: Option<u64>, head: u64, exists: bool) -> Result<(), Refused> {
    let current = if exists { head } else { 0 };
    match want {
        Some(want) if want != current => Err(Refused::Conflict { current }),
        _ => Ok(()),
    }
}

/// A key's chain heads, as the batches prepared so far leave them.
#[derive(Debug, Clone, Copy, Default)]
struct Heads {
    /// The last put or delete (0: none) and whether the key has a value, if known.
    version: Option<(u64, bool)>,
    /// The last publish (0: none), if known.
    publish: Option<u64>,
}

impl Heads {
    fn max(&self) -> u64 {
        self.version
            .map_or(0, |v| v.0)
            .max(self.publish.unwrap_or(0))
    }
}

/// Chain heads of recently written keys, so that a write extends its key's chain
/// without reading the engine. Heads of batches not yet committed are always kept (the
/// engine does not have them yet); the rest are dropped when the cache is full.
#[derive(Debug)]
struct HeadCache {
    by_partition: HashMap<u32, HashMap<Vec<u8>, Heads>>,
    len: usize,
    capacity: usize,
}

impl HeadCache {
    fn get(&self, p: u32, key: &[u8]) -> Option<Heads> {
        self.by_partition.get(&p)?.get(key).copied()
    }

    fn update(&mut self, p: u32, key: &[u8], f: impl FnOnce(&mut Heads)) {
        let map = self.by_partition.entry(p).or_default();
        match map.get_mut(key) {
            Some(h) => f(h),
            None => {
                let mut h = Heads::default();
                f(&mut h);
                map.insert(key.to_vec(), h);
                self.len += 1;
            }
        }
    }

    fn set_version(&mut self, p: u32, key: &[u8], head: u64, exists: bool) {
        self.update(p, key, |h| h.version = Some((head, exists)));
    }

    fn set_publish(&mut self, p: u32, key: &[u8], head: u64) {
        self.update(p, key, |h| h.publish = Some(head));
    }

    fn remove(&mut self, p: u32, key: &[u8]) {
        if let Some(map) = self.by_partition.get_mut(&p)
            && map.remove(key).is_some()
        {
            self.len -= 1;
        }
    }

    /// Whether `key` has a change in a batch not yet committed (`committed`: the
    /// partition's committed seq).
    fn uncommitted(&self, p: u32, key: &[u8], committed: u64) -> bool {
        self.get(p, key).is_some_and(|h| h.max() > committed)
    }

    /// Over capacity: keep only heads not yet committed.
    fn shrink(&mut self, committed: impl Fn(u32) -> u64) {
        if self.len <= self.capacity {
            return;
        }
        let mut len = 0;
        for (&p, map) in &mut self.by_partition {
            let upto = committed(p);
            map.retain(|_, h| h.max() > upto);
            len += map.len();
        }
        self.len = len;
    }

    fn clear(&mut self) {
        self.by_partition.clear();
        self.len = 0;
    }
}

/// Keys whose chain heads are kept in memory by default.
pub const DEFAULT_HEAD_CACHE: usize = 1 << 20;

/// A write request. One with a `msg_id` is idempotent (see [`crate::dedup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set a value, optionally only if the current version matches (0: must not exist).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The version the key must have.
        if_version: Option<u64>,
        /// Its idempotency id.
        msg_id: Option<MsgId>,
    },
    /// Delete a key, optionally only if the current version matches.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The version the key must have.
        if_version: Option<u64>,
        /// Its idempotency id.
        msg_id: Option<MsgId>,
    },
    /// Append a log-only message.
    Publish {
        /// The key.
        key: Vec<u8>,
        /// The message.
        value: Vec<u8>,
        /// Its idempotency id.
        msg_id: Option<MsgId>,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } | Self::Publish { key, .. } => key,
        }
    }

    /// Its idempotency id, if any.
    pub fn msg_id(&self) -> Option<&MsgId> {
        match self {
            Self::Put { msg_id, .. }
            | Self::Delete { msg_id, .. }
            | Self::Publish { msg_id, .. } => msg_id.as_ref(),
        }
    }
}

/// What an accepted write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// It was logged: this change.
    New(Change),
    /// It repeats a write remembered by its msg_id: nothing was written again, and it is
    /// answered with the first write's outcome.
    Repeat(Repeat),
}

/// The outcome of the first of a repeated write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// Where the first write sits in its partition's log.
    pub position: Position,
    /// The key's version after it (0 for a publish).
    pub version: u64,
}

impl Written {
    /// Where the write (or its first) sits in its partition's log.
    pub fn position(&self) -> Position {
        match self {
            Self::New(c) => c.position,
            Self::Repeat(r) => r.position,
        }
    }

    /// The key's version after the write (or its first; 0 for a publish).
    pub fn version(&self) -> u64 {
        match self {
            Self::New(c) => c.version,
            Self::Repeat(r) => r.version,
        }
    }

    /// The change, if it was logged now.
    pub fn change(self) -> Option<Change> {
        match self {
            Self::New(c) => Some(c),
            Self::Repeat(_) => None,
        }
    }
}

/// The longest key the store accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// The largest value the store accepts, in bytes. With the key and framing it stays far
/// below the link's 16 MiB frame limit, so any change fits in one frame.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// A batch built by [`ChangeLog::prepare`], to be committed by the caller.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The engine batch: every record of every accepted write, plus trimming.
    pub batch: WriteBatch,
    /// One result per write, in order: what each accepted write did.
    pub results: Vec<Result<Written, StoreError>>,
    /// The last seq given out per partition by this batch.
    pub last_seqs: Vec<(u32, u64)>,
    /// The new first retained seq of partitions this batch trims.
    pub trimmed: Vec<(u32, u64)>,
}

impl Prepared {
    /// Append `later`, prepared after `self` and not yet committed, so that both are
    /// committed as one batch.
    pub fn merge(&mut self, later: Prepared) {
        self.batch.ops.extend(later.batch.ops);
        self.results.extend(later.results);
        for (p, seq) in later.last_seqs {
            match self.last_seqs.iter_mut().find(|(q, _)| *q == p) {
                Some(entry) => entry.1 = entry.1.max(seq),
                None => self.last_seqs.push((p, seq)),
            }
        }
        self.trimmed.extend(later.trimmed);
    }

    /// Number of writes logged by the batch (repeats not counted).
    pub fn accepted(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Ok(Written::New(_))))
            .count()
    }
}

/// What a resume produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The position is in the retained log: these are the matching changes after it,
    /// in seq order, up to `upto` (the partition's last seq when read).
    Changes {
        /// The changes.
        changes: Vec<Change>,
        /// The position the caller is now at.
        upto: Position,
    },
    /// The position cannot be resumed (other epoch, trimmed, or in the future).
    Reset {
        /// Why, for the client.
        reason: &'static str,
        /// The partition's current position (a fresh snapshot is consistent with it).
        now: Position,
    },
}

/// What a watch or resume selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One key.
    Key(&'a [u8]),
    /// Every key starting with the prefix.
    Prefix(&'a [u8]),
}

impl Target<'_> {
    /// Whether `key` is selected.
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Target::Key(k) => *k == key,
            Target::Prefix(p) => key.starts_with(p),
        }
    }
}

/// How much log each partition keeps: at least `min_entries` entries and at least
/// `min_age_ms` of history; older entries beyond both are trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries always kept.
    pub min_entries: u64,
    /// History always kept, in ms.
    pub min_age_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            min_entries: 1_000_000,
            min_age_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    epoch: u64,
    /// Last seq committed (0: none yet).
    last_seq: u64,
    /// Last seq given to a prepared batch (`>= last_seq`).
    assigned: u64,
    /// First seq still in the log (`last_seq + 1` when the log is empty).
    first_seq: u64,
}

/// The owned partitions of one store.
#[derive(Debug)]
pub struct ChangeLog<E: Engine> {
    engine: Arc<E>,
    partitions: u32,
    parts: HashMap<u32, PartState>,
    heads: HeadCache,
    dedup: Dedup,
}

/// Run states (`keys::run_state`).
const RUN_CLEAN: &[u8] = b"clean";
const RUN_SYNC: &[u8] = b"sync";
const RUN_ASYNC: &[u8] = b"async";

/// Page size for engine scans.
const SCAN_PAGE: usize = 1024;

impl<E: Engine> ChangeLog<E> {
    /// Open the partitions in `owned` (of `partitions` in all), creating missing ones
    /// with a fresh epoch from `new_epoch`. A partition whose log is missing but whose
    /// values exist (the log was lost) also gets a fresh epoch, so no old position is
    /// ever replayed against it.
    pub fn open(
        engine: Arc<E>,
        partitions: u32,
        owned: &[u32],
        mut new_epoch: impl FnMut() -> u64,
    ) -> Result<Self, Failure> {
        let mut parts = HashMap::with_capacity(owned.len());
        let mut init = WriteBatch::default();
        for &p in owned {
            let epoch = read_record(&*engine, &keys::epoch(p), records::decode_u64)?;
            // The counter is only written at creation and by trims; the log's last
            // entry says how far writes went since.
            let last = read_record(&*engine, &keys::last_seq(p), records::decode_u64)?
                .map(|m| m.max(logged_upto(&*engine, p).unwrap_or(0)));
            let first = read_record(&*engine, &keys::first_seq(p), records::decode_u64)?;
            let state = match (epoch, last, first) {
                (Some(epoch), Some(last_seq), Some(first_seq)) => PartState {
                    epoch,
                    last_seq,
                    assigned: last_seq,
                    first_seq,
                },
                (Some(epoch), Some(last_seq), None) => PartState {
                    epoch,
                    last_seq,
                    assigned: last_seq,
                    first_seq: 1,
                },
                _ => {
                    // New, or its log bookkeeping is gone: start a new epoch. Existing
                    // values keep their versions; seqs continue above the highest
                    // version still present so versions never go backwards.
                    let epoch = new_epoch();
                    let (vs, ve) = keys::value_prefix_range(p, b"");
                    let mut floor = logged_upto(&*engine, p)?;
                    scan_all(&*engine, vs, &ve, |_, v| {
                        floor = floor.max(records::decode_current(v)?.version);
                        Ok(())
                    })?;
                    let (hs, he) = keys::publish_prefix_range(p, b"");
                    scan_all(&*engine, hs, &he, |_, v| {
                        floor = floor.max(records::decode_u64(v)?);
                        Ok(())
                    })?;
                    init.put(keys::epoch(p), records::encode_u64(epoch));
                    init.put(keys::last_seq(p), records::encode_u64(floor));
                    init.put(keys::first_seq(p), records::encode_u64(floor + 1));
                    PartState {
                        epoch,
                        last_seq: floor,
                        assigned: floor,
                        first_seq: floor + 1,
                    }
                }
            };
            parts.insert(p, state);
        }
        if !init.is_empty() {
            engine.write(init, true)?;
        }
        let dedup = Dedup::load(&*engine, owned)?;
        Ok(Self {
            engine,
            partitions,
            parts,
            heads: HeadCache {
                by_partition: HashMap::new(),
                len: 0,
                capacity: DEFAULT_HEAD_CACHE,
            },
            dedup,
        })
    }

    /// Record that the store is now running, with or without fsync. If the previous run
    /// ran with `sync = false` and did not stop cleanly, writes it acknowledged may have
    /// been lost with the machine and their seqs would be handed out again: every owned
    /// partition then gets a new epoch, so no position from before is ever replayed
    /// against different data. Returns whether epochs were renewed.
    pub fn begin_run(
        &mut self,
        sync: bool,
        mut new_epoch: impl FnMut() -> u64,
    ) -> Result<bool, EngineError> {
        let previous = self.engine.get(&keys::run_state())?;
        let renew = previous.as_deref() == Some(RUN_ASYNC);
        let mut batch = WriteBatch::default();
        let mut epochs = Vec::new();
        if renew {
            for &p in self.parts.keys() {
                let epoch = new_epoch();
                batch.put(keys::epoch(p), records::encode_u64(epoch));
                epochs.push((p, epoch));
            }
        }
        batch.put(
            keys::run_state(),
            if sync { RUN_SYNC } else { RUN_ASYNC }.to_vec(),
        );
        self.engine.write(batch, true)?;
        for (p, epoch) in epochs {
            if let Some(s) = self.parts.get_mut(&p) {
                s.epoch = epoch;
            }
        }
        Ok(renew)
    }

    /// Record a clean stop (durably, with everything written before it).
    pub fn end_run(&mut self) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put(keys::run_state(), RUN_CLEAN.to_vec());
        self.engine.write(batch, true)
    }

    /// The engine, shared (the core's committer writes through it).
    pub fn engine(&self) -> Arc<E> {
        Arc::clone(&self.engine)
    }

    /// The number of partitions in the cluster.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition owning `key`.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        crate::partition::partition_of(key, self.partitions)
    }

    /// The partitions this store owns.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.keys().copied()
    }

    /// The latest position of partition `p`, if owned.
    pub fn position(&self, p: u32) -> Option<Position> {
        self.parts.get(&p).map(|s| Position {
            partition: p,
            epoch: s.epoch,
            seq: s.last_seq,
        })
    }

    /// The first retained seq of partition `p`, if owned.
    pub fn first_seq(&self, p: u32) -> Option<u64> {
        self.parts.get(&p).map(|s| s.first_seq)
    }

    /// Apply `writes` in order as one atomic, optionally durable, batch: prepare,
    /// commit on this thread, and record the outcome. Each write gets its own result;
    /// refused writes do not stop the others. On an engine failure every accepted
    /// write fails with it and nothing changes.
    pub fn apply(
        &mut self,
        writes: &[Write],
        now_ms: u64,
        sync: bool,
    ) -> Vec<Result<Written, StoreError>> {
        let prepared = self.prepare(writes, now_ms);
        self.commit_here(prepared, sync)
    }

    /// Commit `prepared` on this thread and record the outcome.
    pub fn commit_here(
        &mut self,
        prepared: Prepared,
        sync: bool,
    ) -> Vec<Result<Written, StoreError>> {
        let Prepared {
            batch,
            results,
            last_seqs,
            trimmed,
        } = prepared;
        if batch.is_empty() {
            return results;
        }
        match self.engine.write(batch, sync) {
            Ok(()) => {
                self.committed(&last_seqs, &trimmed);
                results
            }
            Err(e) => {
                self.abort();
                fail_all(results, &Failure::Engine(e))
            }
        }
    }

    /// Record that a prepared batch with these seqs and trims is committed.
    pub fn committed(&mut self, last_seqs: &[(u32, u64)], trimmed: &[(u32, u64)]) {
        for &(p, seq) in last_seqs {
            if let Some(s) = self.parts.get_mut(&p) {
                s.last_seq = s.last_seq.max(seq);
            }
        }
        for &(p, first) in trimmed {
            if let Some(s) = self.parts.get_mut(&p) {
                s.first_seq = s.first_seq.max(first);
            }
        }
    }

    /// Forget every prepared batch not yet reported committed (one failed, so the
    /// ones prepared after it must not be committed either): the next batch takes
    /// seqs from the committed position again, so the log stays gap-free.
    pub fn abort(&mut self) {
        for s in self.parts.values_mut() {
            s.assigned = s.last_seq;
        }
        self.heads.clear();
        let parts = &self.parts;
        self.dedup
            .abort(|p| parts.get(&p).map_or(0, |s| s.last_seq));
    }

    /// How long and how many writes with a msg_id are remembered.
    pub fn set_dedup_limits(&mut self, limits: DedupLimits) {
        self.dedup.set_limits(limits);
    }

    /// What happened to remembered writes so far.
    pub fn dedup_stats(&self) -> DedupStats {
        self.dedup.stats()
    }

    /// Keep chain heads of at most about `keys` keys in memory (plus those of batches
    /// not yet committed); a write to a key not kept reads its heads from the engine.
    pub fn set_head_cache(&mut self, keys: usize) {
        self.heads.capacity = keys;
    }

    /// Build one batch from `writes`, in order, giving each accepted write the next seq
    /// of its partition after every batch already prepared. The caller must commit
    /// batches in the order they were prepared. A conditional write reads the key's
    /// committed version, so it must only be prepared when no earlier batch is still
    /// uncommitted (the core holds such writes back).
    pub fn prepare(&mut self, writes: &[Write], now_ms: u64) -> Prepared {
        let mut batch = WriteBatch::default();
        let mut results: Vec<Result<Written, StoreError>> = Vec::with_capacity(writes.len());
        let mut last_seqs: HashMap<u32, u64> = HashMap::new();
        for w in writes {
            results.push(self.prepare_one(w, now_ms, &mut batch, &mut last_seqs));
        }
        for (&p, &seq) in &last_seqs {
            if let Some(s) = self.parts.get_mut(&p) {
                s.assigned = seq;
            }
        }
        let parts = &self.parts;
        let committed = |p| parts.get(&p).map_or(0, |s| s.last_seq);
        self.heads.shrink(committed);
        self.dedup.sweep(now_ms, committed, &mut batch);
        Prepared {
            batch,
            results,
            last_seqs: last_seqs.into_iter().collect(),
            trimmed: Vec::new(),
        }
    }

    /// Check `w` and add its records to `batch` under the next seq of its partition
    /// (`last_seqs`: the last seq this batch gave out per partition, updated).
    fn prepare_one(
        &mut self,
        w: &Write,
        now_ms: u64,
        batch: &mut WriteBatch,
        last_seqs: &mut HashMap<u32, u64>,
    ) -> Result<Written, StoreError> {
        check_limits(w)?;
        let key = w.key();
        let p = self.partition_of(key);
        let state = self
            .parts
            .get(&p)
            .copied()
            .ok_or(StoreError::WrongPartition(p))?;
        let remember = w.msg_id().map(|m| {
            let k = keys::remembered(p, key, &m.scope, &m.id);
            (k, dedup::fingerprint(w))
        });
        if let Some((k, fingerprint)) = &remember
            && let Some(first) = self.dedup.lookup(p, k, now_ms)
        {
            return self.repeat(p, state, k, *fingerprint, first, batch);
        }
        let seq = last_seqs.get(&p).copied().unwrap_or(state.assigned) + 1;
        let prev = self.chain_head(p, w)?;
        let position = Position {
            partition: p,
            epoch: state.epoch,
            seq,
        };
        let c = self.extend_chain(batch, position, w);
        last_seqs.insert(p, seq);
        batch.put(
            keys::log(p, seq),
            records::encode_entry(c.kind, key, c.value.as_deref(), now_ms, prev),
        );
        if let Some((k, fingerprint)) = remember {
            let rec = Remembered {
                epoch: state.epoch,
                seq,
                version: c.version,
                time_ms: now_ms,
                fingerprint,
            };
            batch.put(k.clone(), records::encode_remembered(&rec));
            self.dedup.insert(p, k, rec);
        }
        Ok(Written::New(c))
    }

    /// A write whose msg_id was remembered under storage key `k` with `first`: refused
    /// if it asks for something else (`fingerprint`), else answered with the first's
    /// outcome. If the first is not committed yet, its record is written again so that
    /// this batch cannot be answered before the first's.
    fn repeat(
        &mut self,
        p: u32,
        state: PartState,
        k: &[u8],
        fingerprint: u64,
        first: Remembered,
        batch: &mut WriteBatch,
    ) -> Result<Written, StoreError> {
        let same = first.fingerprint == fingerprint;
        self.dedup.count_repeat(same);
        if !same {
            return Err(Refused::MsgIdReused.into());
        }
        if first.seq > state.last_seq {
            batch.put(k.to_vec(), records::encode_remembered(&first));
        }
        Ok(Written::Repeat(Repeat {
            position: dedup::position_of(p, &first),
            version: first.version,
        }))
    }

    /// The head of the chain `w` extends (its log entry's `prev`); a conditional write
    /// is checked against the key's version there.
    fn chain_head(&mut self, p: u32, w: &Write) -> Result<u64, StoreError> {
        match w {
            Write::Put { if_version, .. } | Write::Delete { if_version, .. } => {
                let (head, exists) = self.version_head(p, w.key())?;
                check_version(*if_version, head, exists)?;
                Ok(head)
            }
            Write::Publish { .. } => Ok(self.publish_head(p, w.key())?),
        }
    }

    /// Add to `batch` the record that now heads `w`'s chain at `at` (the key's value
    /// or tombstone, or its publish head), remember it, and return the change.
    fn extend_chain(&mut self, batch: &mut WriteBatch, at: Position, w: &Write) -> Change {
        let (p, seq, key) = (at.partition, at.seq, w.key());
        let (kind, value, version) = match w {
            Write::Put { value, .. } => {
                batch.put(
                    keys::value(p, key),
                    records::encode_current(seq, Some(value)),
                );
                self.heads.set_version(p, key, seq, true);
                (ChangeKind::Put, Some(value.clone()), seq)
            }
            Write::Delete { .. } => {
                // A tombstone keeps the head of the key's chain.
                batch.put(keys::value(p, key), records::encode_current(seq, None));
                self.heads.set_version(p, key, seq, false);
                (ChangeKind::Delete, None, seq)
            }
            Write::Publish { value, .. } => {
                batch.put(keys::publish_head(p, key), records::encode_u64(seq));
                self.heads.set_publish(p, key, seq);
                (ChangeKind::Publish, Some(value.clone()), 0)
            }
        };
        Change {
            position: at,
            key: key.to_vec(),
            kind,
            value,
            version,
        }
    }

    /// The head of `key`'s put/delete chain and whether it has a value, as prepared
    /// batches leave it (read from the engine when not known).
    fn version_head(&mut self, p: u32, key: &[u8]) -> Result<(u64, bool), Failure> {
        if let Some(h) = self.heads.get(p, key).and_then(|h| h.version) {
            return Ok(h);
        }
        let stored = read_record(&*self.engine, &keys::value(p, key), records::decode_current)?;
        let h = stored.map_or((0, false), |s| (s.version, s.value.is_some()));
        self.heads.set_version(p, key, h.0, h.1);
        Ok(h)
    }

    /// The head of `key`'s publish chain, as prepared batches leave it.
    fn publish_head(&mut self, p: u32, key: &[u8]) -> Result<u64, Failure> {
        if let Some(h) = self.heads.get(p, key).and_then(|h| h.publish) {
            return Ok(h);
        }
        let h = read_record(
            &*self.engine,
            &keys::publish_head(p, key),
            records::decode_u64,
        )?
        .unwrap_or(0);
        self.heads.set_publish(p, key, h);
        Ok(h)
    }

    /// The partition's last committed seq as `r` sees it: its last log entry, or the
    /// counter (written at creation and by trims) if that is higher.
    fn seq_in(r: &dyn Read, p: u32) -> Result<u64, Failure> {
        let counter = read_record(r, &keys::last_seq(p), records::decode_u64)?.unwrap_or(0);
        Ok(counter.max(logged_upto(r, p)?))
    }

    /// The current value of `key`, if its partition is owned here, and the position it
    /// was read at.
    pub fn get(&self, key: &[u8]) -> Result<(Option<Current>, Position), StoreError> {
        let p = self.partition_of(key);
        let state = self.parts.get(&p).ok_or(StoreError::WrongPartition(p))?;
        let (cur, seq) = self.engine.snapshot_read(|r| {
            let seq = Self::seq_in(r, p)?;
            let cur = read_record(r, &keys::value(p, key), records::decode_current)?
                .and_then(records::Stored::live);
            Ok::<_, Failure>((cur, seq))
        })?;
        Ok((
            cur,
            Position {
                partition: p,
                epoch: state.epoch,
                seq,
            },
        ))
    }

    /// Every current key/value of partition `p` matching `target`, in key order, and
    /// the position they were read at.
    pub fn snapshot(
        &self,
        p: u32,
        target: Target<'_>,
    ) -> Result<(Vec<Entry>, Position), StoreError> {
        let state = self.parts.get(&p).ok_or(StoreError::WrongPartition(p))?;
        let (start, end) = match target {
            Target::Key(k) => {
                let start = keys::value(p, k);
                let mut end = start.clone();
                end.push(0);
                (start, end)
            }
            Target::Prefix(prefix) => keys::value_prefix_range(p, prefix),
        };
        let read = self.engine.snapshot_read(|r| {
            let seq = Self::seq_in(r, p)?;
            let mut out = Vec::new();
            scan_all(r, start, &end, |k, v| {
                // Tombstones of deleted keys are not part of a snapshot.
                if let Some(c) = records::decode_current(v)?.live() {
                    out.push((keys::user_key(k).to_vec(), c));
                }
                Ok(())
            })?;
            let at = Position {
                partition: p,
                epoch: state.epoch,
                seq,
            };
            Ok::<_, Failure>((out, at))
        });
        Ok(read?)
    }

    /// Partition `p`'s presence owner records: (member key, owner).
    pub fn owners(&self, p: u32) -> Result<Vec<crate::engine::Pair>, StoreError> {
        let (start, end) = keys::owner_range(p);
        let read = self.engine.snapshot_read(|r| {
            let mut out = Vec::new();
            scan_all(r, start, &end, |k, v| {
                out.push((keys::user_key(k).to_vec(), v.to_vec()));
                Ok(())
            })?;
            Ok::<_, Failure>(out)
        });
        Ok(read?)
    }

    /// Up to `limit` live keys under `prefix` in key order, after the key `after` when
    /// given, read on the partition that owns `prefix` (one with a hash tag, such as a
    /// presence channel's); and whether more may follow.
    pub fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let p = self.partition_of(prefix);
        if !self.parts.contains_key(&p) {
            return Err(StoreError::WrongPartition(p));
        }
        let (mut start, end) = keys::value_prefix_range(p, prefix);
        if let Some(after) = after {
            let mut from = keys::value(p, after);
            from.push(0);
            start = start.max(from);
        }
        let read = self.engine.snapshot_read(|r| {
            let mut out = Vec::new();
            loop {
                let batch = r.scan(&start, &end, limit.saturating_add(1).min(SCAN_PAGE))?;
                let full = batch.len() == limit.saturating_add(1).min(SCAN_PAGE);
                for (k, v) in &batch {
                    if out.len() == limit {
                        return Ok::<_, Failure>((out, true));
                    }
                    // Tombstones of deleted keys are skipped.
                    if let Some(c) = records::decode_current(v)?.live() {
                        out.push((keys::user_key(k).to_vec(), c));
                    }
                }
                match batch.last() {
                    Some((k, _)) if full => {
                        start = k.clone();
                        start.push(0);
                    }
                    _ => return Ok((out, false)),
                }
            }
        });
        Ok(read?)
    }

    /// The changes of `target` after `from`, if `from` can still be resumed. The cost
    /// is proportional to what is returned (plus, for a prefix, one seek per key under
    /// it), not to the partition's log length nor to the keys' older history.
    pub fn resume(&self, from: Position, target: Target<'_>) -> Result<Resume, StoreError> {
        self.engine
            .snapshot_read(|r| self.resume_in(r, from, target))
    }

    fn resume_in(
        &self,
        r: &dyn Read,
        from: Position,
        target: Target<'_>,
    ) -> Result<Resume, StoreError> {
        let p = from.partition;
        let state = self.parts.get(&p).ok_or(StoreError::WrongPartition(p))?;
        let now = Position {
            partition: p,
            epoch: state.epoch,
            seq: Self::seq_in(r, p)?,
        };
        let reason = if from.epoch != state.epoch {
            Some("the partition's log was recreated (new epoch)")
        } else if from.seq > now.seq {
            Some("position is ahead of the log")
        } else if from.seq + 1 < state.first_seq {
            Some("position is older than the retained log")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Ok(Resume::Reset { reason, now });
        }
        let heads = chain_heads(r, p, target)?;
        let Some(mut changes) = walk_chains(r, heads, from.seq, now)? else {
            // An entry was trimmed while this read began: the caller must reset.
            return Ok(Resume::Reset {
                reason: "position is older than the retained log",
                now,
            });
        };
        changes.sort_unstable_by_key(|c| c.position.seq);
        Ok(Resume::Changes { changes, upto: now })
    }

    /// Up to `limit` log entries of partition `p` after `after`, in seq order: the raw
    /// log, for replication-style readers and for checking resumes against it.
    pub fn log_after(&self, p: u32, after: u64, limit: usize) -> Result<Vec<Change>, Failure> {
        let Some(state) = self.parts.get(&p) else {
            return Ok(Vec::new());
        };
        let start = keys::log(p, after.saturating_add(1).max(state.first_seq));
        let end = keys::log(p, state.last_seq.saturating_add(1));
        let mut out = Vec::new();
        for (k, v) in self.engine.scan(&start, &end, limit)? {
            let seq = keys::seq_of_log(&k);
            let e = records::decode_entry(&v)?;
            out.push(Change::logged(
                Position {
                    partition: p,
                    epoch: state.epoch,
                    seq,
                },
                e,
            ));
        }
        Ok(out)
    }

    /// Trim partition `p` by at most `max_entries` entries, keeping what `retention`
    /// requires, on this thread. Returns how many entries were removed.
    pub fn trim(
        &mut self,
        p: u32,
        retention: Retention,
        now_ms: u64,
        max_entries: usize,
    ) -> Result<u64, Failure> {
        let before = self.first_seq(p).unwrap_or(0);
        let mut prepared = Prepared::default();
        self.prepare_trim(p, retention, now_ms, max_entries, &mut prepared)?;
        if prepared.trimmed.is_empty() {
            return Ok(0);
        }
        let Prepared { batch, trimmed, .. } = prepared;
        self.engine.write(batch, false)?;
        self.committed(&[], &trimmed);
        Ok(self.first_seq(p).unwrap_or(0) - before)
    }

    /// Add to `prepared` the removal of at most `max_entries` of partition `p`'s oldest
    /// entries, keeping what `retention` requires; true if more could go right away. Only old entries are read, so this
    /// can run while a batch of new writes is being committed. Cheap to call often:
    /// each call removes a bounded number, so writes are never held up behind a long
    /// trim.
    pub fn prepare_trim(
        &mut self,
        p: u32,
        retention: Retention,
        now_ms: u64,
        max_entries: usize,
        prepared: &mut Prepared,
    ) -> Result<bool, Failure> {
        let Some(state) = self.parts.get(&p).copied() else {
            return Ok(false);
        };
        let held = state.last_seq + 1 - state.first_seq;
        let over = held.saturating_sub(retention.min_entries);
        let removable = over.min(max_entries as u64);
        if removable == 0 {
            return Ok(false);
        }
        let page = self.engine.scan(
            &keys::log(p, state.first_seq),
            &keys::log(p, state.first_seq + removable),
            removable as usize,
        )?;
        let mut next_first = state.first_seq;
        for (k, v) in &page {
            let seq = keys::seq_of_log(k);
            let e = records::decode_entry(v)?;
            if now_ms.saturating_sub(e.time_ms) < retention.min_age_ms {
                break;
            }
            prepared.batch.delete(k.clone());
            next_first = seq + 1;
            if e.kind != ChangeKind::Put {
                self.collect_head(p, &e.key, seq, e.kind, state.last_seq, prepared)?;
            }
        }
        if next_first > state.first_seq {
            let batch = &mut prepared.batch;
            batch.put(keys::first_seq(p), records::encode_u64(next_first));
            // The log may now be empty: the counter keeps the partition's position.
            batch.put(keys::last_seq(p), records::encode_u64(state.last_seq));
            prepared.trimmed.push((p, next_first));
        }
        // More is due now if a whole chunk went and the log is still over its count.
        let removed = next_first - state.first_seq;
        Ok(removed == max_entries as u64 && over > removed)
    }

    /// The change at `seq` of `key` leaves the log. If it was the last of its chain and
    /// left nothing behind (a delete's tombstone, a publish head), that record goes
    /// too. A key with a change in a batch not yet committed is left alone: its record
    /// is being rewritten.
    fn collect_head(
        &mut self,
        p: u32,
        key: &[u8],
        seq: u64,
        kind: ChangeKind,
        committed: u64,
        prepared: &mut Prepared,
    ) -> Result<(), Failure> {
        if self.heads.uncommitted(p, key, committed) {
            return Ok(());
        }
        let (record, last) = if kind == ChangeKind::Delete {
            let k = keys::value(p, key);
            let stored = read_record(&*self.engine, &k, records::decode_current)?;
            let tombstone = stored.is_some_and(|s| s.value.is_none() && s.version == seq);
            (k, tombstone)
        } else {
            let k = keys::publish_head(p, key);
            let head = read_record(&*self.engine, &k, records::decode_u64)?;
            (k, head == Some(seq))
        };
        if last {
            prepared.batch.delete(record);
            self.heads.remove(p, key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::error::Fault;

    /// A read says who is at fault: the edge for a partition served elsewhere, the
    /// store for a record it cannot decode; never a write error.
    #[test]
    fn a_failed_read_blames_the_edge_or_the_store() {
        let engine = Arc::new(MemoryEngine::new());
        let key = b"room/{1}/title";
        let p = crate::partition::partition_of(key, 8);
        let mut log = ChangeLog::open(Arc::clone(&engine), 8, &[p], || 1).unwrap();
        let put = Write::Put {
            key: key.to_vec(),
            value: b"v".to_vec(),
            if_version: None,
            msg_id: None,
        };
        let at = log.apply(&[put], 1, true).remove(0).unwrap().position();
        let foreign = (0..)
            .map(|i| format!("k/{i}"))
            .find(|k| crate::partition::partition_of(k.as_bytes(), 8) != p)
            .unwrap();
        let e = log.get(foreign.as_bytes()).unwrap_err();
        assert!(matches!(e, StoreError::WrongPartition(q) if q != p), "{e}");
        assert_eq!(e.fault(), Fault::Edge);

        let mut damage = WriteBatch::default();
        damage.put(keys::value(p, key), b"not a record".to_vec());
        engine.write(damage, true).unwrap();
        let corrupt_value = |e: &StoreError| {
            matches!(
                e,
                StoreError::Failed(Failure::Corrupt(Corrupt {
                    what: "value record",
                    ..
                }))
            )
        };
        let e = log.get(key).unwrap_err();
        assert!(corrupt_value(&e), "get: {e}");
        assert_eq!(e.fault(), Fault::Store);
        let e = log.snapshot(p, Target::Key(key)).unwrap_err();
        assert!(corrupt_value(&e), "snapshot: {e}");
        let before = Position { seq: 0, ..at };
        let e = log.resume(before, Target::Key(key)).unwrap_err();
        assert!(corrupt_value(&e), "resume: {e}");
    }

    /// A write whose batch fails is forgotten with it: the retry writes (under the seq
    /// given out again), instead of being answered with an outcome that never was.
    #[test]
    fn a_failed_batch_forgets_its_msg_ids() {
        let engine = Arc::new(MemoryEngine::new());
        let mut log = ChangeLog::open(engine, 1, &[0], || 1).unwrap();
        let put = Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            if_version: None,
            msg_id: Some(MsgId {
                scope: b"alice".to_vec(),
                id: b"m".to_vec(),
            }),
        };
        let failed = log.prepare(std::slice::from_ref(&put), 1);
        assert!(matches!(failed.results[..], [Ok(Written::New(_))]));
        // A repeat prepared on top of it is a repeat, until the first batch fails.
        let repeat = log.prepare(std::slice::from_ref(&put), 1);
        assert!(matches!(repeat.results[..], [Ok(Written::Repeat(_))]));
        log.abort();
        assert_eq!(log.dedup_stats().entries, 0);
        let retry = log.apply(std::slice::from_ref(&put), 2, true);
        let Ok(Written::New(c)) = &retry[0] else {
            panic!("{retry:?}")
        };
        assert_eq!(c.position.seq, 1);
        let again = log.apply(std::slice::from_ref(&put), 3, true);
        let want = Written::Repeat(Repeat {
            position: c.position,
            version: 1,
        });
        assert_eq!(again[0].as_ref().ok(), Some(&want));
    }
}
