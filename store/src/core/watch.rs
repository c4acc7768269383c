//! Starting a watch, in each partition its target lives on
//! ([`wire::partition::target_partitions`]; of a prefix spread over every partition,
//! those served here), or in its position's partition: a snapshot (no position), the
//! retained changes after a position (resume), or a reset followed by a snapshot when
//! the position cannot be resumed or lies in a partition the target does not live in.
//! A partition not served here refuses the watch (`wrong_partition`), and a failed
//! snapshot fails it; neither registers it.
//! A resume's read is shared by the watches asking the same one while the partition has
//! not moved ([`super::resumes`]). Each runs against one engine snapshot and reports the
//! exact position it read; if
//! that position is past the committed one (a batch was landing), the watch records a
//! skip so the batch's dispatch does not send those changes a second time.

use wire::link::{ChangeRef, WatchId};
use wire::partition::Partitions;

use crate::changelog::{Position, Resume, Target};
use crate::engine::Engine;
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::watchers::LinkId;

use super::resumes::Read;
use super::{Core, change_ref, change_size, pages, wire_pos};

impl<E: Engine> Core<E> {
    /// Remember that watch `watch_id` of `link` has already seen partition `p` up to
    /// `read`; forget any such note from an earlier watch with the same id.
    fn note_read(&mut self, link: LinkId, watch_id: u64, read: Position) {
        let committed = self.log.position(read.partition).map_or(0, |p| p.seq);
        let key = (link, watch_id, read.partition);
        if read.seq > committed {
            self.skips.insert(key, read.seq);
        } else {
            self.skips.remove(&key);
        }
    }

    pub(super) fn watch(
        &mut self,
        link: LinkId,
        request_id: u64,
        watch_id: WatchId,
        target: &str,
        prefix: bool,
        from: Option<Position>,
    ) {
        // Opaque here: the edge's name for its watch, echoed in every answer.
        let watch_id = watch_id.get();
        let bytes = target.as_bytes();
        let t = if prefix {
            Target::Prefix(bytes)
        } else {
            Target::Key(bytes)
        };
        let plan = self.plan(bytes, prefix, from);
        if let Some(&p) = plan
            .partitions
            .iter()
            .find(|&&p| self.log.position(p).is_none())
        {
            self.read_error(link, request_id, &StoreError::WrongPartition(p));
            return;
        }
        let start = Start {
            link,
            request_id,
            watch_id,
        };
        for &p in &plan.partitions {
            if let Some(pos) = plan.from
                && self.resume_into(start, pos, t)
            {
                continue;
            }
            if plan.misplaced {
                Metrics::add(&self.cfg.metrics.watch_reset, 1);
                let epoch = self.log.position(p).map_or(0, |pos| pos.epoch);
                let reason = "position belongs to another partition";
                let buf = self.pending.entry(link).or_default();
                let _ = self.enc.reset(buf, request_id, watch_id, p, epoch, reason);
            }
            if !self.snapshot_into(start, p, t) {
                return;
            }
        }
        self.watchers.add(link, watch_id, bytes, prefix, plan.bound);
        Metrics::set(&self.cfg.metrics.watches, self.watchers.len() as u64);
    }

    /// Where a watch of `target` from `from` starts.
    fn plan(&self, target: &[u8], prefix: bool, from: Option<Position>) -> Plan {
        let home = wire::partition::target_partitions(target, prefix, self.log.partitions());
        // A position in a partition the target does not live in cannot be resumed:
        // the watch starts over (reset + snapshot) in the right one.
        let misplaced = matches!((from, home.single()), (Some(pos), Some(h)) if pos.partition != h);
        let from = from.filter(|_| !misplaced);
        let partitions: Vec<u32> = match (from, home) {
            (Some(pos), _) => vec![pos.partition],
            (None, Partitions::One(h)) => vec![h],
            // Of every partition, those served here.
            (None, Partitions::All { .. }) => {
                let mut v: Vec<u32> = self.log.owned().collect();
                v.sort_unstable();
                v
            }
        };
        // A prefix watch resumed in one partition covers only that partition (the
        // edge sends one such watch per partition).
        let bound = if partitions.len() == 1 && (from.is_some() || home.single().is_some()) {
            partitions.first().copied()
        } else {
            None
        };
        Plan {
            from,
            misplaced,
            partitions,
            bound,
        }
    }

    /// Resume watch `s` in `from`'s partition: the retained changes of `t` after it,
    /// or a reset. True when resumed; false when a snapshot must follow. The read is
    /// shared with the watches that ask the same while the partition stays where it
    /// was ([`super::resumes`]).
    fn resume_into(&mut self, s: Start, from: Position, t: Target<'_>) -> bool {
        let p = from.partition;
        // Still in the retained log (trimming does not move the partition's position).
        let retained = self
            .log
            .first_seq(p)
            .is_some_and(|first| from.seq.saturating_add(1) >= first);
        let shared = self
            .log
            .position(p)
            .filter(|_| retained)
            .and_then(|now| self.resumes.get(from, t, now));
        let read = match shared {
            Some(read) => {
                Metrics::add(&self.cfg.metrics.resumes_shared, 1);
                Ok(read)
            }
            None => match self.log.resume(from, t) {
                Ok(Resume::Changes { changes, upto }) => {
                    Ok(self.resumes.keep(from, t, Read { changes, upto }))
                }
                Ok(Resume::Reset { reason, now }) => Err(Some((reason, now))),
                Err(e) => {
                    tracing::warn!(error = %e, "resume failed");
                    Err(None)
                }
            },
        };
        match read {
            Ok(read) => {
                Metrics::add(&self.cfg.metrics.watch_resumed, 1);
                let buf = self.pending.entry(s.link).or_default();
                let _ = self.enc.resumed(buf, s.request_id, s.watch_id, p);
                let ids = [s.watch_id];
                let refs: Vec<ChangeRef<'_>> =
                    read.changes.iter().map(|c| change_ref(c, &ids)).collect();
                for page in pages(&refs, change_size) {
                    let _ = self.enc.changes(buf, s.request_id, page);
                }
                self.note_read(s.link, s.watch_id, read.upto);
                true
            }
            Err(Some((reason, now))) => {
                Metrics::add(&self.cfg.metrics.watch_reset, 1);
                let buf = self.pending.entry(s.link).or_default();
                let _ = self
                    .enc
                    .reset(buf, s.request_id, s.watch_id, p, now.epoch, reason);
                false
            }
            Err(None) => false,
        }
    }

    /// Send watch `s` a snapshot of `t` in partition `p`. False when it failed (the
    /// request is then answered with an error and the watch not started).
    fn snapshot_into(&mut self, s: Start, p: u32, t: Target<'_>) -> bool {
        Metrics::add(&self.cfg.metrics.watch_snapshot, 1);
        let (entries, at) = match self.log.snapshot(p, t) {
            Ok(read) => read,
            Err(e) => {
                self.read_error(s.link, s.request_id, &e);
                return false;
            }
        };
        let refs = super::entry_refs(&entries);
        // Big snapshots go out as several frames, all but the last with `more`; an
        // empty one is one empty frame.
        let mut pages = pages(&refs, |e| e.key.len() + e.value.len());
        if pages.is_empty() {
            pages.push(&[]);
        }
        let n = pages.len();
        let buf = self.pending.entry(s.link).or_default();
        for (i, page) in pages.into_iter().enumerate() {
            let more = i + 1 < n;
            let _ = self
                .enc
                .snapshot(buf, s.request_id, s.watch_id, p, page, wire_pos(at), more);
        }
        self.note_read(s.link, s.watch_id, at);
        true
    }
}

/// The watch request being started.
#[derive(Debug, Clone, Copy)]
struct Start {
    link: LinkId,
    request_id: u64,
    watch_id: u64,
}

/// Where a watch starts.
#[derive(Debug)]
struct Plan {
    /// The position to resume from, unless it is in a partition the target does not
    /// live in.
    from: Option<Position>,
    /// The position was in such a partition: the watch gets a reset, then a snapshot.
    misplaced: bool,
    /// The partitions to start in.
    partitions: Vec<u32>,
    /// The one partition the watch covers, or `None` for every partition.
    bound: Option<u32>,
}
