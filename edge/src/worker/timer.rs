//! One timer wheel per worker: a slot per tick (one second), each holding the
//! connections to look at on that tick. A connection has at most one live entry (its
//! `due` tick); entries left behind by rescheduling are skipped when their slot comes
//! round. No kernel timer per connection: one tick timeout per worker drives it all.

/// Ticks the wheel spans; later deadlines wait in their slot for another turn.
const SLOTS: usize = 256;

/// A tick count (one per second since the worker started: a `u32` lasts 136 years,
/// and keeps the per-connection fields and wheel entries small).
pub type Tick = u32;

/// The wheel, holding entries `E` (a connection's slab key).
#[derive(Debug)]
pub struct Wheel<E> {
    slots: Vec<Vec<(E, Tick)>>,
    now: Tick,
}

impl<E> Default for Wheel<E> {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            now: 0,
        }
    }
}

impl<E> Wheel<E> {
    /// The current tick.
    pub fn now(&self) -> Tick {
        self.now
    }

    /// Look at `e` on tick `at` (at least the next tick).
    pub fn schedule(&mut self, e: E, at: Tick) {
        let at = at.max(self.now + 1);
        if let Some(slot) = self.slots.get_mut(at as usize % SLOTS) {
            slot.push((e, at));
        }
    }

    /// Advance one tick; returns the entries due on it.
    pub fn advance(&mut self, out: &mut Vec<E>) {
        self.now += 1;
        let now = self.now;
        let i = now as usize % SLOTS;
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let mut later = Vec::new();
        for (e, at) in slot.drain(..) {
            if at <= now {
                out.push(e);
            } else {
                later.push((e, at));
            }
        }
        *slot = later;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_on_their_tick_even_beyond_one_turn() {
        let mut w: Wheel<(u32, u32)> = Wheel::default();
        w.schedule((1, 0), 3);
        w.schedule((2, 0), 3 + SLOTS as Tick);
        w.schedule((3, 0), 0); // the past means the next tick
        let mut fired = Vec::new();
        let mut at = Vec::new();
        for _ in 0..(SLOTS + 5) {
            fired.clear();
            w.advance(&mut fired);
            for e in &fired {
                at.push((e.0, w.now()));
            }
        }
        assert_eq!(at, [(3, 1), (1, 3), (2, 3 + SLOTS as Tick)]);
    }
}
