//! Idempotent writes. A write that carries a [`MsgId`] (whom the edge wrote for, and the
//! client's id) is remembered per partition under (key, scope, id), with the outcome it
//! got (its position and version) and a fingerprint of what it asked for. The record
//! (`D`, see [`crate::keys`]) goes into the write's own batch, so it is durable exactly
//! when the write is, and every record is loaded when the store opens.
//!
//! [`Dedup::lookup`] finds a write's earlier twin; the change log answers a repeat with
//! the twin's outcome and writes nothing again, or refuses it when it asks for
//! something else. Entries leave after the window ([`DedupLimits::window_ms`]), swept a
//! bounded number per batch ([`Dedup::sweep`]), or earlier, oldest first, when a
//! partition holds more than its share of [`DedupLimits::max_entries`] (counted as
//! evicted). Entries of batches not yet committed are never swept; when those batches
//! fail they are forgotten ([`Dedup::abort`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use crate::changelog::{Position, Write};
use crate::engine::{Read, WriteBatch};
use crate::error::Failure;
use crate::keys;
use crate::records::{self, Remembered};

/// Longest msg_id the store accepts, in bytes (the client protocol's limit).
pub const MAX_MSG_ID_BYTES: usize = 128;
/// Longest scope (a token's subject) the store accepts, in bytes.
pub const MAX_SCOPE_BYTES: usize = 1024;
/// Entries swept per batch at most, so a sweep never holds up writes for long.
const SWEEP_CHUNK: usize = 4096;

/// A write's idempotency id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MsgId {
    /// Whom the write is for (a token's subject; empty: anonymous clients, who share one
    /// scope).
    pub scope: Vec<u8>,
    /// The client's id.
    pub id: Vec<u8>,
}

/// How long, and how many, writes are remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupLimits {
    /// A repeat within this long of the first write is recognised, in ms.
    pub window_ms: u64,
    /// Entries kept in all (each partition keeps its share); past it the oldest go first.
    pub max_entries: usize,
}

impl Default for DedupLimits {
    fn default() -> Self {
        Self {
            window_ms: 10 * 60 * 1000,
            max_entries: 1_000_000,
        }
    }
}

/// What happened to remembered writes, since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Entries held now.
    pub entries: u64,
    /// Repeats answered with the first outcome.
    pub repeats: u64,
    /// Repeats refused because they asked for something else.
    pub mismatched: u64,
    /// Entries that left after their window.
    pub expired: u64,
    /// Entries that left early because the store held too many.
    pub evicted: u64,
}

/// What a write asked for (kind, condition, value), hashed: a repeat must ask the same.
pub fn fingerprint(w: &Write) -> u64 {
    let mut h = Xxh3::new();
    let (tag, if_version, value): (u8, Option<u64>, &[u8]) = match w {
        Write::Put {
            value, if_version, ..
        } => (0, *if_version, value),
        Write::Delete { if_version, .. } => (1, *if_version, &[]),
        Write::Publish { value, .. } => (2, None, value),
    };
    h.update(&[tag, u8::from(if_version.is_some())]);
    h.update(&if_version.unwrap_or(0).to_be_bytes());
    h.update(value);
    h.digest()
}

/// One partition's remembered writes: the records by storage key, and the keys in the
/// order they were written (a key re-remembered after its window appears twice; the
/// older appearance is recognised as stale by pointer and skipped).
#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<Arc<[u8]>, Remembered>,
    order: VecDeque<Arc<[u8]>>,
}

impl Table {
    /// Whether `k` (taken from `order`) is the live entry for its key.
    fn is_live(&self, k: &Arc<[u8]>) -> bool {
        self.by_key
            .get_key_value(&**k)
            .is_some_and(|(live, _)| Arc::ptr_eq(live, k))
    }
}

/// Every owned partition's remembered writes.
#[derive(Debug, Default)]
pub struct Dedup {
    tables: HashMap<u32, Table>,
    limits: DedupLimits,
    stats: DedupStats,
}

impl Dedup {
    /// Load the remembered writes of partitions `owned` as `r` holds them.
    pub fn load(r: &dyn Read, owned: &[u32]) -> Result<Self, Failure> {
        let mut d = Self::default();
        for &p in owned {
            let (start, end) = keys::remembered_range(p);
            let mut all: Vec<(Vec<u8>, Remembered)> = Vec::new();
            crate::changelog::scan_all(r, start, &end, |k, v| {
                all.push((k.to_vec(), records::decode_remembered(v)?));
                Ok(())
            })?;
            all.sort_by_key(|(_, rec)| (rec.time_ms, rec.seq));
            let t = d.tables.entry(p).or_default();
            for (k, rec) in all {
                let k: Arc<[u8]> = k.into();
                t.order.push_back(Arc::clone(&k));
                t.by_key.insert(k, rec);
            }
            d.stats.entries += t.by_key.len() as u64;
        }
        Ok(d)
    }

    /// Set the window and the bound (applied from the next sweep).
    pub fn set_limits(&mut self, limits: DedupLimits) {
        self.limits = limits;
    }

    /// The figures so far.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// The write remembered under storage key `k` of partition `p`, if still within its
    /// window at `now_ms`.
    pub fn lookup(&self, p: u32, k: &[u8], now_ms: u64) -> Option<Remembered> {
        let rec = self.tables.get(&p)?.by_key.get(k)?;
        (now_ms.saturating_sub(rec.time_ms) < self.limits.window_ms).then_some(*rec)
    }

    /// Count a repeat answered (`matched`) or refused.
    pub fn count_repeat(&mut self, matched: bool) {
        if matched {
            self.stats.repeats += 1;
        } else {
            self.stats.mismatched += 1;
        }
    }

    /// Remember `rec` under storage key `k` of partition `p` (replacing an entry whose
    /// window has passed).
    pub fn insert(&mut self, p: u32, k: Vec<u8>, rec: Remembered) {
        let t = self.tables.entry(p).or_default();
        if t.by_key.remove(k.as_slice()).is_none() {
            self.stats.entries += 1;
        }
        let k: Arc<[u8]> = k.into();
        t.order.push_back(Arc::clone(&k));
        t.by_key.insert(k, rec);
    }

    /// Add to `batch` the removal of entries past their window at `now_ms`, and of the
    /// oldest while a partition holds more than its share; never of an entry above its
    /// partition's `committed` seq (its batch may still fail), and at most a chunk.
    pub fn sweep(&mut self, now_ms: u64, committed: impl Fn(u32) -> u64, batch: &mut WriteBatch) {
        if self.stats.entries == 0 {
            return;
        }
        let share = self.limits.max_entries / self.tables.len().max(1);
        let window = self.limits.window_ms;
        let mut budget = SWEEP_CHUNK;
        for (&p, t) in &mut self.tables {
            let upto = committed(p);
            while budget > 0
                && let Some(k) = t.order.front()
            {
                if !t.is_live(k) {
                    t.order.pop_front();
                    continue;
                }
                let Some(rec) = t.by_key.get(&**k).copied() else {
                    break;
                };
                let expired = now_ms.saturating_sub(rec.time_ms) >= window;
                if rec.seq > upto || !(expired || t.by_key.len() > share) {
                    break;
                }
                if expired {
                    self.stats.expired += 1;
                } else {
                    self.stats.evicted += 1;
                }
                self.stats.entries -= 1;
                t.by_key.remove(&**k);
                batch.delete(k.to_vec());
                t.order.pop_front();
                budget -= 1;
            }
        }
    }

    /// Forget the entries of partition `p` above its `committed` seq: their batch
    /// failed, and their seqs will be given out again.
    pub fn abort(&mut self, committed: impl Fn(u32) -> u64) {
        for (&p, t) in &mut self.tables {
            let upto = committed(p);
            while let Some(k) = t.order.back() {
                if t.is_live(k) {
                    if t.by_key.get(&**k).is_some_and(|r| r.seq <= upto) {
                        break;
                    }
                    t.by_key.remove(&**k);
                    self.stats.entries -= 1;
                }
                t.order.pop_back();
            }
        }
    }
}

/// A remembered write's position in partition `p`.
pub fn position_of(p: u32, rec: &Remembered) -> Position {
    Position {
        partition: p,
        epoch: rec.epoch,
        seq: rec.seq,
    }
}
