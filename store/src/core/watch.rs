//! Starting a watch: a snapshot (no position), the retained changes after a position
//! (resume), or a reset followed by a snapshot when the position cannot be resumed.
//! Each runs against one engine snapshot and reports the exact position it read; if
//! that position is past the committed one (a batch was landing), the watch records a
//! skip so the batch's dispatch does not send those changes a second time.

use wire::link::{ChangeRef, EntryRef, ErrorCode, WatchId};

use crate::changelog::{Position, Resume, Target};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::watchers::LinkId;

use super::{Core, change_ref, change_size, pages, text, wire_pos};

impl<E: Engine> Core<E> {
    /// Remember that watch `watch_id` of `link` has already seen partition `p` up to
    /// `read`; forget any such note from an earlier watch with the same id.
    fn note_read(&mut self, link: LinkId, watch_id: WatchId, read: Position) {
        let committed = self.log.position(read.partition).map_or(0, |p| p.seq);
        let key = (link, watch_id.get(), read.partition);
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
        let bytes = target.as_bytes();
        let t = if prefix {
            Target::Prefix(bytes)
        } else {
            Target::Key(bytes)
        };
        // Where the target lives: one partition for a key or a hash-tagged prefix,
        // every partition otherwise.
        let home = if prefix {
            crate::partition::prefix_partition(bytes, self.log.partitions())
        } else {
            Some(self.log.partition_of(bytes))
        };
        // A position in a partition the target does not live in cannot be resumed:
        // the watch starts over (reset + snapshot) in the right one.
        let misplaced = matches!((from, home), (Some(pos), Some(h)) if pos.partition != h);
        let from = from.filter(|_| !misplaced);
        let partitions: Vec<u32> = match (from, home) {
            (Some(pos), _) => vec![pos.partition],
            (None, Some(h)) => vec![h],
            (None, None) => {
                let mut v: Vec<u32> = self.log.owned().collect();
                v.sort_unstable();
                v
            }
        };
        // A prefix watch resumed in one partition covers only that partition (the
        // edge sends one such watch per partition).
        let bound = if partitions.len() == 1 && (from.is_some() || home.is_some()) {
            partitions.first().copied()
        } else {
            None
        };
        if let Some(&p) = partitions.iter().find(|&&p| self.log.position(p).is_none()) {
            self.error(
                link,
                request_id,
                ErrorCode::WrongPartition,
                &format!("partition {p} is not served here"),
                0,
            );
            return;
        }
        let metrics = std::sync::Arc::clone(&self.cfg.metrics);
        for p in partitions {
            let resumed = match from {
                Some(pos) => match self.log.resume(pos, t) {
                    Ok(Resume::Changes { changes, upto }) => {
                        Metrics::add(&metrics.watch_resumed, 1);
                        let buf = self.pending.entry(link).or_default();
                        let _ = self.enc.resumed(buf, request_id, watch_id.get(), p);
                        let ids = [watch_id.get()];
                        let refs: Vec<ChangeRef<'_>> =
                            changes.iter().map(|c| change_ref(c, &ids)).collect();
                        for page in pages(&refs, change_size) {
                            let _ = self.enc.changes(buf, request_id, page);
                        }
                        self.note_read(link, watch_id, upto);
                        true
                    }
                    Ok(Resume::Reset { reason, now }) => {
                        Metrics::add(&metrics.watch_reset, 1);
                        let buf = self.pending.entry(link).or_default();
                        let _ =
                            self.enc
                                .reset(buf, request_id, watch_id.get(), p, now.epoch, reason);
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resume failed");
                        false
                    }
                },
                None => false,
            };
            if resumed {
                continue;
            }
            if misplaced {
                Metrics::add(&metrics.watch_reset, 1);
                let epoch = self.log.position(p).map_or(0, |pos| pos.epoch);
                let reason = "position belongs to another partition";
                let buf = self.pending.entry(link).or_default();
                let _ = self
                    .enc
                    .reset(buf, request_id, watch_id.get(), p, epoch, reason);
            }
            Metrics::add(&metrics.watch_snapshot, 1);
            match self.log.snapshot(p, t) {
                Ok((entries, at)) => {
                    let refs: Vec<EntryRef<'_>> = entries
                        .iter()
                        .map(|(k, c)| EntryRef {
                            key: text(k),
                            value: &c.value,
                            version: c.version,
                        })
                        .collect();
                    // Big snapshots go out as several frames, all but the last with
                    // `more`; an empty one is one empty frame.
                    let mut pages = pages(&refs, |e| e.key.len() + e.value.len());
                    if pages.is_empty() {
                        pages.push(&[]);
                    }
                    let n = pages.len();
                    let buf = self.pending.entry(link).or_default();
                    for (i, page) in pages.into_iter().enumerate() {
                        let more = i + 1 < n;
                        let _ = self.enc.snapshot(
                            buf,
                            request_id,
                            watch_id.get(),
                            p,
                            page,
                            wire_pos(at),
                            more,
                        );
                    }
                    self.note_read(link, watch_id, at);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot failed");
                    self.error(link, request_id, ErrorCode::Internal, "storage failure", 0);
                    return;
                }
            }
        }
        self.watchers
            .add(link, watch_id.get(), bytes, prefix, bound);
        Metrics::set(&metrics.watches, self.watchers.len() as u64);
    }
}
