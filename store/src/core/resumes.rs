//! Resume reads shared by the watches that ask for the same one. In a reconnect storm
//! the clients of one key come back with the same token: each of their joins asks this
//! store for the key's changes after the same position. The first read is kept, keyed
//! by (target, position), with the partition's position it read up to; a later watch
//! asking the same takes it as long as the partition has not moved since (no change
//! committed after it, the same epoch) and the position is still in the retained log
//! (the caller checks: trimming does not move the partition), so what it gets is
//! exactly what a read would return then. A moved partition makes the entry a miss, replaced by the next read.
//! Bounded: past [`MAX_ENTRIES`] entries or [`MAX_BYTES`] of changes held, everything
//! kept is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use crate::changelog::{Change, Position, Target};

/// Most resume reads kept.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes of keys and values held by the reads kept.
pub const MAX_BYTES: usize = 16 << 20;

/// One resume read, as asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Asked {
    from: Position,
    prefix: bool,
    target: Box<[u8]>,
}

impl Asked {
    fn new(from: Position, t: Target<'_>) -> Self {
        let (prefix, target) = match t {
            Target::Key(k) => (false, k),
            Target::Prefix(p) => (true, p),
        };
        Self {
            from,
            prefix,
            target: target.into(),
        }
    }
}

/// A read kept: its changes, and the position of the partition it read up to.
#[derive(Debug)]
pub struct Read {
    pub changes: Vec<Change>,
    pub upto: Position,
}

/// The resume reads kept.
#[derive(Debug, Default)]
pub struct Resumes {
    kept: HashMap<Asked, Arc<Read>>,
    bytes: usize,
}

impl Resumes {
    /// The read of `t` after `from`, if one was kept and its partition is still at
    /// `now` (nothing committed since).
    pub fn get(&self, from: Position, t: Target<'_>, now: Position) -> Option<Arc<Read>> {
        self.kept
            .get(&Asked::new(from, t))
            .filter(|r| r.upto == now)
            .cloned()
    }

    /// Keep `read`, the read of `t` after `from`.
    pub fn keep(&mut self, from: Position, t: Target<'_>, read: Read) -> Arc<Read> {
        let size: usize = read
            .changes
            .iter()
            .map(|c| c.key.len() + c.value.as_ref().map_or(0, Vec::len))
            .sum();
        if self.kept.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.kept.clear();
            self.bytes = 0;
        }
        let read = Arc::new(read);
        if size <= MAX_BYTES {
            self.bytes += size;
            if let Some(old) = self.kept.insert(Asked::new(from, t), Arc::clone(&read)) {
                self.bytes = self.bytes.saturating_sub(old_size(&old));
            }
        }
        read
    }

    /// Reads kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

fn old_size(r: &Read) -> usize {
    r.changes
        .iter()
        .map(|c| c.key.len() + c.value.as_ref().map_or(0, Vec::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64) -> Position {
        Position {
            partition: 1,
            epoch: 7,
            seq,
        }
    }

    #[test]
    fn a_read_is_shared_only_while_its_partition_has_not_moved() {
        let mut r = Resumes::default();
        let t = Target::Key(b"k");
        assert!(r.get(pos(3), t, pos(9)).is_none());
        r.keep(
            pos(3),
            t,
            Read {
                changes: Vec::new(),
                upto: pos(9),
            },
        );
        assert!(r.get(pos(3), t, pos(9)).is_some());
        // Another position, target or kind of target: not the same read.
        assert!(r.get(pos(4), t, pos(9)).is_none());
        assert!(r.get(pos(3), Target::Key(b"j"), pos(9)).is_none());
        assert!(r.get(pos(3), Target::Prefix(b"k"), pos(9)).is_none());
        // The partition moved (or its epoch changed): a miss.
        assert!(r.get(pos(3), t, pos(10)).is_none());
        let other_epoch = Position { epoch: 8, ..pos(9) };
        assert!(r.get(pos(3), t, other_epoch).is_none());
    }

    #[test]
    fn past_its_bound_everything_kept_is_dropped() {
        let mut r = Resumes::default();
        for seq in 0..MAX_ENTRIES as u64 {
            r.keep(
                pos(seq),
                Target::Key(b"k"),
                Read {
                    changes: Vec::new(),
                    upto: pos(MAX_ENTRIES as u64),
                },
            );
        }
        assert_eq!(r.len(), MAX_ENTRIES);
        r.keep(
            pos(u64::MAX),
            Target::Key(b"k"),
            Read {
                changes: Vec::new(),
                upto: pos(u64::MAX),
            },
        );
        assert_eq!(r.len(), 1);
    }
}
