//! A `/ws` connection's message budget: a token bucket that holds at most `burst`
//! messages and gains `rate` per tick (second), refilled when bytes arrive. A message
//! with no token left is refused (`rate_limited`); a connection that keeps running dry
//! tick after tick for longer than the grace is closed (1008), and so is one that sends
//! more than another whole burst past its budget within one tick (each refusal is an
//! answer: a flood must not be answered in full). Six bytes per connection.

/// What becomes of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget.
    Take,
    /// Over it: answer `rate_limited`.
    Refuse,
    /// Over it for longer than the grace: close with 1008.
    Close,
}

/// The limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens gained per tick (0: no limit).
    pub rate: u16,
    /// Most tokens held.
    pub burst: u16,
    /// Ticks in a row a connection may run dry (its messages refused); dry in the
    /// next one too, it is closed.
    pub grace: u8,
}

/// One connection's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    tokens: u16,
    /// Messages refused since the last refill (dry when not 0).
    refused: u16,
    /// Ticks in a row that ended dry.
    strikes: u8,
}

impl Budget {
    /// A full bucket.
    pub fn new(l: Limits) -> Self {
        Self {
            tokens: l.burst,
            refused: 0,
            strikes: 0,
        }
    }

    /// `ticks` whole ticks passed since bytes last arrived.
    pub fn refill(&mut self, ticks: u32, l: Limits) {
        if ticks == 0 {
            return;
        }
        // Dry in the tick just ended, and the one before: one more strike. A tick
        // that passed without running dry starts the count again.
        self.strikes = if self.refused > 0 && ticks == 1 {
            self.strikes.saturating_add(1)
        } else {
            0
        };
        self.refused = 0;
        let gained = u64::from(ticks).saturating_mul(u64::from(l.rate));
        let tokens = (u64::from(self.tokens) + gained).min(u64::from(l.burst));
        self.tokens = u16::try_from(tokens).unwrap_or(u16::MAX);
    }

    /// One message.
    pub fn spend(&mut self, l: Limits) -> Verdict {
        if l.rate == 0 {
            return Verdict::Take;
        }
        if let Some(t) = self.tokens.checked_sub(1) {
            self.tokens = t;
            return Verdict::Take;
        }
        self.refused = self.refused.saturating_add(1);
        if self.strikes >= l.grace || self.refused > l.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        rate: 10,
        burst: 20,
        grace: 2,
    };

    fn spend(b: &mut Budget, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| b.spend(L)).collect()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Budget::new(L);
        assert!(spend(&mut b, 20).iter().all(|v| *v == Verdict::Take));
        assert_eq!(b.spend(L), Verdict::Refuse);
        b.refill(1, L);
        assert!(spend(&mut b, 10).iter().all(|v| *v == Verdict::Take));
        assert_eq!(b.spend(L), Verdict::Refuse);
        // Idle long enough: the bucket is full again, and capped.
        b.refill(100, L);
        assert_eq!(spend(&mut b, 21).last(), Some(&Verdict::Refuse));
        assert_eq!(
            spend(&mut b, 20)[..20]
                .iter()
                .filter(|v| **v == Verdict::Take)
                .count(),
            0
        );
    }

    #[test]
    fn running_dry_past_the_grace_closes() {
        // Grace 2: dry in two ticks in a row is refused; the third closes.
        let mut b = Budget::new(L);
        assert_eq!(spend(&mut b, 25).last(), Some(&Verdict::Refuse));
        b.refill(1, L);
        assert_eq!(spend(&mut b, 11).last(), Some(&Verdict::Refuse));
        b.refill(1, L);
        assert_eq!(spend(&mut b, 11).last(), Some(&Verdict::Close));
    }

    #[test]
    fn a_tick_within_the_rate_forgives() {
        let mut b = Budget::new(L);
        spend(&mut b, 25);
        b.refill(1, L);
        spend(&mut b, 11);
        // Within the rate for a tick: the strikes start again.
        b.refill(1, L);
        spend(&mut b, 5);
        b.refill(1, L);
        assert_eq!(spend(&mut b, 30).last(), Some(&Verdict::Refuse));
        b.refill(1, L);
        assert_eq!(spend(&mut b, 30).last(), Some(&Verdict::Refuse));
        // A pause of two ticks forgives too.
        b.refill(2, L);
        assert_eq!(spend(&mut b, 30).last(), Some(&Verdict::Refuse));
    }

    #[test]
    fn a_flood_within_one_tick_closes_after_a_burst_of_refusals() {
        let mut b = Budget::new(L);
        let v = spend(&mut b, 20 + 20 + 1);
        assert!(v[..20].iter().all(|v| *v == Verdict::Take));
        assert!(v[20..40].iter().all(|v| *v == Verdict::Refuse));
        assert_eq!(v[40], Verdict::Close);
    }

    #[test]
    fn rate_zero_is_no_limit() {
        let off = Limits {
            rate: 0,
            burst: 0,
            grace: 0,
        };
        let mut b = Budget::new(off);
        assert!((0..100_000).all(|_| b.spend(off) == Verdict::Take));
    }
}
