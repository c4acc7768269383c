//! How long a link waits before its next connection attempt: exponential in the
//! attempts made (50 ms, then 100 ms, capped), with jitter so that the workers and
//! edges that lost one store do not all knock at once when it returns. Short on
//! purpose: a refused connect costs the store's kernel one reset, and a store that
//! restarts must find its edges linked again within a quarter of a second. Pure: the
//! randomness comes in as an argument.

/// Milliseconds (the link's clock).
pub type Millis = u64;

/// The pause after the first failure, before jitter.
pub const FIRST_BACKOFF_MS: Millis = 50;
/// The longest pause between attempts, before jitter.
pub const MAX_BACKOFF_MS: Millis = 100;

/// Milliseconds to wait after `attempts` failed attempts (0: the link just went down),
/// given a random number `r`: between half the base and one and a half times it, at
/// least 1.
pub fn backoff(attempts: u32, r: u64) -> Millis {
    let base = (FIRST_BACKOFF_MS << attempts.min(16)).min(MAX_BACKOFF_MS);
    base / 2 + 1 + r % base.max(1)
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
            let base = (FIRST_BACKOFF_MS << attempts).min(MAX_BACKOFF_MS);
            let mut seen = std::collections::BTreeSet::new();
            let mut j = Jitter::new(u64::from(attempts) + 1);
            for _ in 0..20_000 {
                let b = backoff(attempts, j.next());
                assert!(b >= 1, "at least a millisecond");
                assert!(b > base / 2 && b <= base / 2 + base, "{attempts}: {b}");
                seen.insert(b);
            }
            assert_eq!(
                seen.len() as u64,
                base,
                "{attempts}: every value of the spread is used"
            );
        }
        assert_eq!(backoff(0, 0), FIRST_BACKOFF_MS / 2 + 1, "starts near 50 ms");
        assert_eq!(backoff(u32::MAX, 0), MAX_BACKOFF_MS / 2 + 1, "capped");
        assert!(
            (0..1000).all(|r| backoff(u32::MAX, r) <= MAX_BACKOFF_MS * 3 / 2),
            "never more than 150 ms"
        );
    }

    #[test]
    fn jitter_never_sticks_at_zero() {
        let mut j = Jitter::new(0);
        assert!((0..100).all(|_| j.next() != 0));
    }
}
