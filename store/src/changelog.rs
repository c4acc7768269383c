//! The partitions a store owns and their change logs. Writes flow in through
//! [`ChangeLog::prepare`], many at a time: each is checked (limits, conditional
//! versions), given the next seq of its partition, and turned into records (current
//! value, log entry, per-key index entry, last-seq counter) of **one** engine batch.
//! The caller commits the batch (one fsync when `sync`), possibly on another thread,
//! and reports the outcome with [`ChangeLog::committed`] or [`ChangeLog::abort`]; only
//! then does the committed position advance. A second batch may be prepared while the
//! first is being committed (its seqs follow the first's), which is how the core keeps
//! the engine busy. [`ChangeLog::apply`] does all three in one call.
//!
//! Reads (`get`, `snapshot`, `resume`) each run against one engine snapshot and also
//! read the partition's last-seq counter in it, so the position they report is exactly
//! the state they read, even while a batch is landing.
//!
//! A position `(partition, epoch, seq)` means "every change of the partition up to
//! `seq` in this epoch". It can be resumed when its epoch is the partition's and the
//! log still holds every entry after it; otherwise the answer is a reset.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::{Engine, EngineError, Read, WriteBatch};
use crate::keys;
use crate::records::{self, ChangeKind, Current};

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

/// Visit every pair in `[start, end)`, reading `SCAN_PAGE` at a time.
fn scan_all(
    engine: &dyn Read,
    mut start: Vec<u8>,
    end: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
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
    results: Vec<Result<Change, WriteError>>,
    e: &Arc<EngineError>,
) -> Vec<Result<Change, WriteError>> {
    results
        .into_iter()
        .map(|r| r.and_then(|_| Err(WriteError::Engine(Arc::clone(e)))))
        .collect()
}

fn check_limits(w: &Write) -> Result<(), WriteError> {
    let key = w.key().len();
    if key > MAX_KEY_BYTES {
        return Err(WriteError::TooLarge {
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
        return Err(WriteError::TooLarge {
            what: "value",
            len: value,
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// A key and its current value, as a snapshot returns them.
pub type Entry = (Vec<u8>, Current);

/// `Ok` when a write's `if_version` holds for a key whose put/delete chain ends at
/// `head` (`exists`: with a value). A deleted or absent key has version 0.
fn check_version(want: Option<u64>, head: u64, exists: bool) -> Result<(), WriteError> {
    let current = if exists { head } else { 0 };
    match want {
        Some(want) if want != current => Err(WriteError::Conflict { current }),
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

/// A write request.
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
    },
    /// Delete a key, optionally only if the current version matches.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The version the key must have.
        if_version: Option<u64>,
    },
    /// Append a log-only message.
    Publish {
        /// The key.
        key: Vec<u8>,
        /// The message.
        value: Vec<u8>,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } | Self::Publish { key, .. } => key,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// `if_version` did not match (client's fault, answered `conflict`).
    #[error("version conflict: current version is {current}")]
    Conflict {
        /// The key's current version (0: absent).
        current: u64,
    },
    /// The key's partition is not owned by this store (answered `wrong_partition`).
    #[error("partition {0} is not served by this store")]
    WrongPartition(u32),
    /// The key or value is over the store's limits (answered `too_large`).
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The engine failed: nothing in the batch was written (store's fault).
    #[error(transparent)]
    Engine(#[from] Arc<EngineError>),
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
    /// One result per write, in order; accepted writes hold the change they make.
    pub results: Vec<Result<Change, WriteError>>,
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

    /// Number of writes accepted into the batch.
    pub fn accepted(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
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
    ) -> Result<Self, EngineError> {
        let mut parts = HashMap::with_capacity(owned.len());
        let mut init = WriteBatch::default();
        for &p in owned {
            let epoch = engine
                .get(&keys::epoch(p))?
                .map(|b| records::decode_u64(&b))
                .transpose()?;
            // The counter is only written at creation and by trims; the log's last
            // entry says how far writes went since.
            let last = engine
                .get(&keys::last_seq(p))?
                .map(|b| records::decode_u64(&b))
                .transpose()?
                .map(|m| m.max(logged_upto(&*engine, p).unwrap_or(0)));
            let first = engine
                .get(&keys::first_seq(p))?
                .map(|b| records::decode_u64(&b))
                .transpose()?;
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
        Ok(Self {
            engine,
            partitions,
            parts,
            heads: HeadCache {
                by_partition: HashMap::new(),
                len: 0,
                capacity: DEFAULT_HEAD_CACHE,
            },
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
    ) -> Vec<Result<Change, WriteError>> {
        let prepared = self.prepare(writes, now_ms);
        self.commit_here(prepared, sync)
    }

    /// Commit `prepared` on this thread and record the outcome.
    pub fn commit_here(
        &mut self,
        prepared: Prepared,
        sync: bool,
    ) -> Vec<Result<Change, WriteError>> {
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
                fail_all(results, &Arc::new(e))
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
        let mut results: Vec<Result<Change, WriteError>> = Vec::with_capacity(writes.len());
        let mut last_seqs: HashMap<u32, u64> = HashMap::new();
        for w in writes {
            let key = w.key();
            if let Err(e) = check_limits(w) {
                results.push(Err(e));
                continue;
            }
            let p = self.partition_of(key);
            let Some(state) = self.parts.get(&p).copied() else {
                results.push(Err(WriteError::WrongPartition(p)));
                continue;
            };
            let seq = last_seqs.get(&p).copied().unwrap_or(state.assigned) + 1;
            // The head of the chain this write extends; a conditional write checks
            // the key's version against it.
            let head = match w {
                Write::Put { if_version, .. } | Write::Delete { if_version, .. } => self
                    .version_head(p, key)
                    .map_err(|e| WriteError::Engine(Arc::new(e)))
                    .and_then(|(head, exists)| {
                        check_version(*if_version, head, exists).map(|()| head)
                    }),
                Write::Publish { .. } => self
                    .publish_head(p, key)
                    .map_err(|e| WriteError::Engine(Arc::new(e))),
            };
            let prev = match head {
                Ok(h) => h,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
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
            last_seqs.insert(p, seq);
            batch.put(
                keys::log(p, seq),
                records::encode_entry(kind, key, value.as_deref(), now_ms, prev),
            );
            results.push(Ok(Change {
                position: Position {
                    partition: p,
                    epoch: state.epoch,
                    seq,
                },
                key: key.to_vec(),
                kind,
                value,
                version,
            }));
        }
        for (&p, &seq) in &last_seqs {
            if let Some(s) = self.parts.get_mut(&p) {
                s.assigned = seq;
            }
        }
        let parts = &self.parts;
        self.heads
            .shrink(|p| parts.get(&p).map_or(0, |s| s.last_seq));
        Prepared {
            batch,
            results,
            last_seqs: last_seqs.into_iter().collect(),
            trimmed: Vec::new(),
        }
    }

    /// The head of `key`'s put/delete chain and whether it has a value, as prepared
    /// batches leave it (read from the engine when not known).
    fn version_head(&mut self, p: u32, key: &[u8]) -> Result<(u64, bool), EngineError> {
        if let Some(h) = self.heads.get(p, key).and_then(|h| h.version) {
            return Ok(h);
        }
        let stored = self
            .engine
            .get(&keys::value(p, key))?
            .map(|b| records::decode_current(&b))
            .transpose()?;
        let h = stored.map_or((0, false), |s| (s.version, s.value.is_some()));
        self.heads.set_version(p, key, h.0, h.1);
        Ok(h)
    }

    /// The head of `key`'s publish chain, as prepared batches leave it.
    fn publish_head(&mut self, p: u32, key: &[u8]) -> Result<u64, EngineError> {
        if let Some(h) = self.heads.get(p, key).and_then(|h| h.publish) {
            return Ok(h);
        }
        let h = self
            .engine
            .get(&keys::publish_head(p, key))?
            .map(|b| records::decode_u64(&b))
            .transpose()?
            .unwrap_or(0);
        self.heads.set_publish(p, key, h);
        Ok(h)
    }

    /// The partition's last committed seq as `r` sees it: its last log entry, or the
    /// counter (written at creation and by trims) if that is higher.
    fn seq_in(r: &dyn Read, p: u32) -> Result<u64, EngineError> {
        let counter = r
            .get(&keys::last_seq(p))?
            .map(|b| records::decode_u64(&b))
            .transpose()?
            .unwrap_or(0);
        Ok(counter.max(logged_upto(r, p)?))
    }

    /// The current value of `key`, if its partition is owned here, and the position it
    /// was read at.
    pub fn get(&self, key: &[u8]) -> Result<(Option<Current>, Position), WriteError> {
        let p = self.partition_of(key);
        let state = self.parts.get(&p).ok_or(WriteError::WrongPartition(p))?;
        let read = self.engine.snapshot_read(|r| {
            let seq = Self::seq_in(r, p)?;
            let cur = r
                .get(&keys::value(p, key))?
                .map(|b| records::decode_current(&b))
                .transpose()?
                .and_then(records::Stored::live);
            Ok::<_, EngineError>((cur, seq))
        });
        let (cur, seq) = read.map_err(Arc::new)?;
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
    ) -> Result<(Vec<Entry>, Position), EngineError> {
        let state = self
            .parts
            .get(&p)
            .ok_or_else(|| EngineError(format!("partition {p} is not owned here")))?;
        let (start, end) = match target {
            Target::Key(k) => {
                let start = keys::value(p, k);
                let mut end = start.clone();
                end.push(0);
                (start, end)
            }
            Target::Prefix(prefix) => keys::value_prefix_range(p, prefix),
        };
        self.engine.snapshot_read(|r| {
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
            Ok((out, at))
        })
    }

    /// The changes of `target` after `from`, if `from` can still be resumed. The cost
    /// is proportional to what is returned (plus, for a prefix, one seek per key under
    /// it), not to the partition's log length nor to the keys' older history.
    pub fn resume(&self, from: Position, target: Target<'_>) -> Result<Resume, WriteError> {
        self.engine
            .snapshot_read(|r| self.resume_in(r, from, target))
    }

    fn resume_in(
        &self,
        r: &dyn Read,
        from: Position,
        target: Target<'_>,
    ) -> Result<Resume, WriteError> {
        let p = from.partition;
        let state = self.parts.get(&p).ok_or(WriteError::WrongPartition(p))?;
        let now = Position {
            partition: p,
            epoch: state.epoch,
            seq: Self::seq_in(r, p).map_err(Arc::new)?,
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
        // The heads of every chain the target covers: one key's two, or those of
        // every key under the prefix (tombstones included: a delete is a change).
        let mut heads: Vec<u64> = Vec::new();
        let e = |e: EngineError| WriteError::Engine(Arc::new(e));
        match target {
            Target::Key(k) => {
                if let Some(b) = r.get(&keys::value(p, k)).map_err(e)? {
                    heads.push(records::decode_current(&b).map_err(e)?.version);
                }
                if let Some(b) = r.get(&keys::publish_head(p, k)).map_err(e)? {
                    heads.push(records::decode_u64(&b).map_err(e)?);
                }
            }
            Target::Prefix(prefix) => {
                let (vs, ve) = keys::value_prefix_range(p, prefix);
                scan_all(r, vs, &ve, |_, v| {
                    heads.push(records::decode_current(v)?.version);
                    Ok(())
                })
                .map_err(e)?;
                let (hs, he) = keys::publish_prefix_range(p, prefix);
                scan_all(r, hs, &he, |_, v| {
                    heads.push(records::decode_u64(v)?);
                    Ok(())
                })
                .map_err(e)?;
            }
        }
        // Walk each chain back to `from`: every entry read is one returned, and the
        // entry at or before `from` is never read (its successor's `prev` says so).
        let mut changes = Vec::new();
        for mut seq in heads {
            while seq > from.seq {
                let Some(bytes) = r.get(&keys::log(p, seq)).map_err(e)? else {
                    // Trimmed while this read began: the caller must reset.
                    return Ok(Resume::Reset {
                        reason: "position is older than the retained log",
                        now,
                    });
                };
                let entry = records::decode_entry(&bytes).map_err(e)?;
                let prev = entry.prev;
                if seq <= now.seq {
                    changes.push(Change::logged(
                        Position {
                            partition: p,
                            epoch: state.epoch,
                            seq,
                        },
                        entry,
                    ));
                }
                if prev >= seq {
                    return Err(e(EngineError(format!(
                        "corrupt log: entry {seq} of partition {p} points forward to {prev}"
                    ))));
                }
                seq = prev;
            }
        }
        changes.sort_unstable_by_key(|c| c.position.seq);
        Ok(Resume::Changes { changes, upto: now })
    }

    /// Up to `limit` log entries of partition `p` after `after`, in seq order: the raw
    /// log, for replication-style readers and for comparing against the index.
    pub fn log_after(&self, p: u32, after: u64, limit: usize) -> Result<Vec<Change>, EngineError> {
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
    ) -> Result<u64, EngineError> {
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
    ) -> Result<bool, EngineError> {
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
    ) -> Result<(), EngineError> {
        if self.heads.uncommitted(p, key, committed) {
            return Ok(());
        }
        let (record, last) = if kind == ChangeKind::Delete {
            let k = keys::value(p, key);
            let stored = self
                .engine
                .get(&k)?
                .map(|b| records::decode_current(&b))
                .transpose()?;
            let tombstone = stored.is_some_and(|s| s.value.is_none() && s.version == seq);
            (k, tombstone)
        } else {
            let k = keys::publish_head(p, key);
            let head = self
                .engine
                .get(&k)?
                .map(|b| records::decode_u64(&b))
                .transpose()?;
            (k, head == Some(seq))
        };
        if last {
            prepared.batch.delete(record);
            self.heads.remove(p, key);
        }
        Ok(())
    }
}
