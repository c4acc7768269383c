//! `"echo":false` publishes: the publishing connection's own subscriptions do not get
//! the change back. In: a publish's position (from its store's reply) and its
//! connection; out: at the change's arrival, the connection to skip.
//!
//! The publish and every watch of its partition travel on the same link (one per store
//! per worker), and the store answers a write before it dispatches its change, so the
//! reply's position is known here before the change arrives. A position whose change
//! never comes (no subscription of this worker covers it) is forgotten after a few
//! ticks, and at most [`MAX_HELD`] are kept: a change arriving after that (a resume
//! after a link loss, say) reaches the publisher after all, as any change would.

use std::collections::{HashMap, VecDeque};

use wire::client::Position;

use super::ConnRef;

/// Positions kept at most.
const MAX_HELD: usize = 65_536;
/// Ticks a position is kept.
const KEEP_TICKS: u64 = 5;

/// Publishes waiting for their change, by position.
#[derive(Debug, Default)]
pub(super) struct NoEcho {
    by_pos: HashMap<Position, ConnRef>,
    /// Positions in the order they came, with the tick they came in.
    order: VecDeque<(u64, Position)>,
    tick: u64,
}

impl NoEcho {
    /// The change at `pos` was published by `conn`, which must not get it.
    pub(super) fn insert(&mut self, pos: Position, conn: ConnRef) {
        if self.order.len() >= MAX_HELD
            && let Some((_, old)) = self.order.pop_front()
        {
            self.by_pos.remove(&old);
        }
        self.by_pos.insert(pos, conn);
        self.order.push_back((self.tick, pos));
    }

    /// The connection the change at `pos` must skip, if any (once).
    pub(super) fn take(&mut self, pos: Position) -> Option<ConnRef> {
        if self.by_pos.is_empty() {
            return None;
        }
        self.by_pos.remove(&pos)
    }

    /// A tick went by: forget what waited too long.
    pub(super) fn tick(&mut self) {
        self.tick += 1;
        while let Some(&(at, pos)) = self.order.front() {
            if self.tick.saturating_sub(at) < KEEP_TICKS {
                break;
            }
            self.order.pop_front();
            self.by_pos.remove(&pos);
        }
        crate::mem::trim_map(&mut self.by_pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Position {
        Position {
            partition: 3,
            epoch: 9,
            seq,
        }
    }

    #[test]
    fn a_publish_is_skipped_once_and_forgotten_after_a_while() {
        let mut n = NoEcho::default();
        n.insert(at(1), (7, 1));
        n.insert(at(2), (8, 1));
        assert_eq!(n.take(at(1)), Some((7, 1)));
        assert_eq!(n.take(at(1)), None, "once");
        for _ in 0..KEEP_TICKS {
            n.tick();
        }
        assert_eq!(n.take(at(2)), None, "forgotten");
        assert!(n.by_pos.is_empty() && n.order.is_empty());
    }
}
