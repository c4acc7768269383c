//! Limits per source address, held per process across its workers: connections open
//! at once, and new connections per second (a token bucket with a burst). In: an
//! upgrade's source address (the peer, or the first `X-Forwarded-For` address when the
//! peer is a trusted proxy) and the connection it is for; out: admitted, or the reason
//! for a 429. The connection's address is remembered here until it closes, so the
//! connection itself carries nothing. Sharded by address and by connection, each shard
//! behind its own lock (taken once per upgrade and once per close: never per message).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::hub::ConnRef;

const SHARDS: usize = 16;

/// A connection, process-wide: (worker, slab slot and generation).
pub type ConnId = (usize, ConnRef);

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimits {
    /// Connections open at once per address (0: no limit).
    pub connections: u32,
    /// New connections per second per address (0: no limit).
    pub rate: u32,
    /// New connections at once above the rate.
    pub burst: u32,
}

/// Why an upgrade is refused (429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Too many connections open from the address.
    Connections,
    /// Too many new connections from the address in too short a time.
    Rate,
}

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    at: Instant,
}

/// The process's per-address table.
#[derive(Debug)]
pub struct PerIp {
    limits: IpLimits,
    by_ip: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    by_conn: Vec<Mutex<HashMap<ConnId, IpAddr>>>,
    hasher: std::hash::RandomState,
}

impl PerIp {
    /// An empty table with `limits`.
    pub fn new(limits: IpLimits) -> Self {
        Self {
            limits,
            by_ip: (0..SHARDS).map(|_| Mutex::default()).collect(),
            by_conn: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard<'a, T: Hash, V>(&self, shards: &'a [Mutex<V>], k: &T) -> Option<&'a Mutex<V>> {
        shards.get(self.hasher.hash_one(k) as usize % SHARDS)
    }

    /// Admit connection `conn` from `ip` at `now`, counting it until [`release`].
    pub fn admit(&self, ip: IpAddr, conn: ConnId, now: Instant) -> Result<(), Over> {
        let l = self.limits;
        {
            let Some(shard) = self.shard(&self.by_ip, &ip) else {
                return Ok(());
            };
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let e = map.entry(ip).or_insert(Entry {
                open: 0,
                tokens: f64::from(l.burst),
                at: now,
            });
            refill(e, l, now);
            if l.connections > 0 && e.open >= l.connections {
                return Err(Over::Connections);
            }
            if l.rate > 0 && e.tokens < 1.0 {
                return Err(Over::Rate);
            }
            e.open += 1;
            if l.rate > 0 {
                e.tokens -= 1.0;
            }
        }
        if let Some(shard) = self.shard(&self.by_conn, &conn) {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(conn, ip);
        }
        Ok(())
    }

    /// Connection `conn` closed: its address counts one fewer (nothing if it was
    /// never admitted here).
    pub fn release(&self, conn: ConnId, now: Instant) {
        let Some(ip) = self.shard(&self.by_conn, &conn).and_then(|s| {
            s.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&conn)
        }) else {
            return;
        };
        let Some(shard) = self.shard(&self.by_ip, &ip) else {
            return;
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            refill(e, self.limits, now);
            if e.open == 0 && e.tokens >= f64::from(self.limits.burst) {
                map.remove(&ip);
            }
        }
    }

    /// Forget addresses with nothing open whose bucket has filled up again (called
    /// once a second), so the table holds only addresses that matter.
    pub fn sweep(&self, now: Instant) {
        for shard in &self.by_ip {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, e| {
                refill(e, self.limits, now);
                e.open > 0 || e.tokens < f64::from(self.limits.burst)
            });
        }
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.by_ip
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn refill(e: &mut Entry, l: IpLimits, now: Instant) {
    let secs = now.saturating_duration_since(e.at).as_secs_f64();
    e.tokens = (e.tokens + secs * f64::from(l.rate)).min(f64::from(l.burst));
    e.at = now;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const L: IpLimits = IpLimits {
        connections: 3,
        rate: 2,
        burst: 4,
    };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn open_connections_are_capped_per_address_and_freed_on_close() {
        let t = PerIp::new(IpLimits { rate: 0, ..L });
        let now = Instant::now();
        for s in 0..3 {
            assert_eq!(t.admit(ip(1), (0, (s, 1)), now), Ok(()));
        }
        assert_eq!(t.admit(ip(1), (0, (9, 1)), now), Err(Over::Connections));
        // Another address is not affected; a close makes room.
        assert_eq!(t.admit(ip(2), (1, (0, 1)), now), Ok(()));
        t.release((0, (1, 1)), now);
        assert_eq!(t.admit(ip(1), (0, (9, 1)), now), Ok(()));
        // Releasing what was never admitted changes nothing.
        t.release((5, (5, 5)), now);
        assert_eq!(t.admit(ip(1), (0, (10, 1)), now), Err(Over::Connections));
    }

    #[test]
    fn new_connections_follow_the_rate_after_the_burst() {
        let t = PerIp::new(IpLimits {
            connections: 0,
            ..L
        });
        let t0 = Instant::now();
        let mut n = 0u32;
        let mut admit = |at: Instant| {
            n += 1;
            t.admit(ip(1), (0, (n, 1)), at)
        };
        for _ in 0..4 {
            assert_eq!(admit(t0), Ok(()));
        }
        assert_eq!(admit(t0), Err(Over::Rate));
        // Half a second buys one more at 2/s.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(admit(later), Ok(()));
        assert_eq!(admit(later), Err(Over::Rate));
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let t = PerIp::new(L);
        let t0 = Instant::now();
        assert_eq!(t.admit(ip(1), (0, (1, 1)), t0), Ok(()));
        assert_eq!(t.admit(ip(2), (0, (2, 1)), t0), Ok(()));
        t.release((0, (1, 1)), t0);
        t.sweep(t0);
        assert_eq!(t.tracked(), 2, "the bucket is not full yet");
        t.sweep(t0 + Duration::from_secs(5));
        assert_eq!(t.tracked(), 1, "only the address with a connection open");
    }
}
