//! How long a link waits before its next connection attempt: exponential in the
//! attempts made (1, 2, 4, 8 ticks, capped), with jitter so that the workers and edges
//! that lost one store do not all knock at once when it returns. Pure: the randomness
//! comes in as an argument.

use crate::worker::timer::Tick;

/// Longest pause between reconnect attempts, in ticks.
pub const MAX_BACKOFF_TICKS: Tick = 8;

/// Ticks to wait after `attempts` failed attempts (0: the link just went down), given
/// a random number `r`: between half the base and one and a half times it, at least 1.
pub fn backoff(attempts: u32, r: u64) -> Tick {
    let base: Tick = (1 << attempts.min(3)).min(MAX_BACKOFF_TICKS);
    base / 2 + 1 + (r % u64::from(base.max(1))) as Tick
}

/// A small, fast random source for jitter (xorshift64; not for anything secret).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A source seeded with `seed` (any value but 0 works; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitters_within_half_either_side() {
        for attempts in 0..10u32 {
            let base = (1u32 << attempts.min(3)).min(MAX_BACKOFF_TICKS);
            let mut seen = std::collections::BTreeSet::new();
            let mut j = Jitter::new(u64::from(attempts) + 1);
            for _ in 0..1000 {
                let b = backoff(attempts, j.next());
                assert!(b >= 1, "at least a tick");
                assert!(b > base / 2 && b <= base / 2 + base, "{attempts}: {b}");
                seen.insert(b);
            }
            assert_eq!(
                seen.len() as u32,
                base,
                "{attempts}: every value of the spread is used"
            );
        }
        assert_eq!(backoff(100, 0), MAX_BACKOFF_TICKS / 2 + 1, "capped");
    }

    #[test]
    fn jitter_never_sticks_at_zero() {
        let mut j = Jitter::new(0);
        assert!((0..100).all(|_| j.next() != 0));
    }
}
