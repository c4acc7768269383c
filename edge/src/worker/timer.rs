//! One timer wheel per worker: a slot per tick (one second), each holding the
//! connections to look at on that tick. A connection has at most one live entry (its
//! `due` tick); entries left behind by rescheduling are skipped when their slot comes
//! round. No kernel timer per connection: one tick timeout per worker drives it all.

/// Ticks the wheel spans; later deadlines wait in their slot for another turn.
const SLOTS: usize = 256;

/// A tick count (one per second since the worker started: a `u32` lasts 136 years,
/// and keeps the per-connection fields and wheel entries small).
pub type Tick = u32;

/// The first tick at which at least `ticks` whole ticks have passed since any moment
/// of tick `now`. Something seen during tick `now` happened anywhere up to a tick after
/// it began, so `now + ticks` could come up to a tick early; one more never does, and
/// is late by at most a tick. Every deadline a user configures is set through this.
pub fn deadline_after(now: Tick, ticks: Tick) -> Tick {
    now.saturating_add(ticks).saturating_add(1)
}

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
    fn a_deadline_fires_late_by_up_to_a_tick_never_early() {
        // Tick `now` began at second `now`; the event came at `now + f`, f in [0, 1).
        for now in [0, 1, 7, 1000] {
            for ticks in [0, 1, 2, 10, 25] {
                let at = deadline_after(now, ticks);
                for tenths in 0..10 {
                    let event = f64::from(now) + f64::from(tenths) / 10.0;
                    let fires = f64::from(at);
                    assert!(
                        fires - event >= f64::from(ticks),
                        "early: {now} {ticks} {tenths}"
                    );
                    assert!(
                        fires - event <= f64::from(ticks) + 1.0,
                        "more than a tick late"
                    );
                }
            }
        }
        assert_eq!(deadline_after(Tick::MAX, 5), Tick::MAX);
    }

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
