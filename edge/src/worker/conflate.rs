//! Latest-value delivery, for subscriptions in `latest` mode. In: the hub's
//! [`Out::Latest`](crate::hub::Out::Latest) changes of connections that are behind, its
//! [`Out::Ended`](crate::hub::Out::Ended), and connections whose queue has drained; out:
//! the changes to queue, newest per key.
//!
//! While a connection has more than `latest_above` bytes queued (its peer reads slower
//! than its changes come), a change of one of its `latest` subscriptions is not queued
//! but held here, in one worker-wide table: one entry per (subscription, key), the newer
//! change replacing the older in place (counted as conflated). Once anything is held for
//! a connection, its later `latest` changes are held too, so that each subscription's
//! changes (and tokens) still leave in order. When the connection's queue is down to half
//! of `latest_above` (a send completes, or a round queued little), the held changes go
//! out, in the order their newest change arrived, up to `latest_above` at a time. A
//! reset or a snapshot of a subscription drops what it held (the snapshot replaces it);
//! its `resumed` lets it go out first. So a slow reader costs
//! at most one held change per key it follows, is not closed for being slow by these
//! subscriptions while the keys it follows fit in `max_outbound`, and always ends at the
//! newest value of every key. (Past `max_outbound`, queued and held together, it is a
//! slow consumer after all: 4008.)

use std::collections::HashMap;
use std::rc::Rc;

use wire::client::ChangeOp;

use super::slab::Key;
use crate::hub::Delivery;

/// Where a held change belongs: its subscription (the client's id) and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Slot {
    sub: u64,
    key: Box<str>,
}

/// A held change and when it arrived (a worker-wide counter: the order they leave in).
#[derive(Debug, Clone)]
struct Newest {
    arrival: u64,
    change: Rc<Delivery>,
}

/// One connection's held changes, the newest per slot, and about how many bytes they
/// would take queued.
#[derive(Debug, Default)]
struct Held {
    changes: HashMap<Slot, Newest>,
    bytes: usize,
}

/// About what `d` takes queued (its JSON form: the key, the value, the token, the rest).
fn size(d: &Delivery) -> usize {
    let value = match &d.op {
        ChangeOp::Put { value, .. } | ChangeOp::Publish { value } => value.len(),
        ChangeOp::Delete { .. } => 0,
    };
    64 + d.key.len() + value + d.token.len()
}

impl Held {
    /// Keep the changes of the subscriptions `keep` says; return the others.
    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> Vec<(Slot, Newest)> {
        let mut gone = Vec::new();
        let bytes = &mut self.bytes;
        self.changes.retain(|slot, n| {
            if keep(slot.sub) {
                return true;
            }
            *bytes = bytes.saturating_sub(size(&n.change));
            gone.push((slot.clone(), n.clone()));
            false
        });
        gone
    }
}

/// Every connection's held changes.
#[derive(Debug, Default)]
pub struct Conflation {
    by_conn: HashMap<Key, Held>,
    /// Arrival counter, for the order held changes leave in.
    arrivals: u64,
}

/// What [`Conflation::hold`] did with a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Held: the first for its key since the last release.
    New,
    /// Held in place of an older change of its key, which will never be sent.
    Replaced,
}

impl Conflation {
    /// Whether anything is held for the connection at `key`.
    pub fn holds(&self, key: Key) -> bool {
        !self.by_conn.is_empty() && self.by_conn.contains_key(&key)
    }

    /// Hold change `d` of subscription `id` of the connection at `key`.
    pub fn hold(&mut self, key: Key, id: u64, d: Rc<Delivery>) -> Holding {
        self.arrivals += 1;
        let held = self.by_conn.entry(key).or_default();
        held.bytes += size(&d);
        let slot = Slot {
            sub: id,
            key: d.key.clone(),
        };
        let newest = Newest {
            arrival: self.arrivals,
            change: d,
        };
        match held.changes.insert(slot, newest) {
            Some(old) => {
                held.bytes = held.bytes.saturating_sub(size(&old.change));
                Holding::Replaced
            }
            None => Holding::New,
        }
    }

    /// About how many bytes the changes held for the connection at `key` would take.
    pub fn held_bytes(&self, key: Key) -> usize {
        self.by_conn.get(&key).map_or(0, |h| h.bytes)
    }

    /// Everything held for the connection at `key`, in the order its newest changes
    /// arrived; nothing is held for it afterwards.
    pub fn release(&mut self, key: Key) -> Vec<(u64, Rc<Delivery>)> {
        let Some(held) = self.by_conn.remove(&key) else {
            return Vec::new();
        };
        in_order(held.changes.into_iter())
    }

    /// What is held for subscription `id` of the connection at `key`, in order (to go
    /// out before a message of the subscription that must follow it).
    pub fn release_sub(&mut self, key: Key, id: u64) -> Vec<(u64, Rc<Delivery>)> {
        let Some(held) = self.by_conn.get_mut(&key) else {
            return Vec::new();
        };
        let taken = held.retain(|sub| sub != id);
        if held.changes.is_empty() {
            self.by_conn.remove(&key);
        }
        in_order(taken.into_iter())
    }

    /// Subscription `id` of the connection at `key` ended, or starts over (a reset and
    /// a snapshot replace what it held): what it held is dropped.
    pub fn end(&mut self, key: Key, id: u64) {
        drop(self.release_sub(key, id));
    }

    /// The connection at `key` is gone.
    pub fn forget(&mut self, key: Key) {
        self.by_conn.remove(&key);
    }

    /// Changes held now, over every connection.
    pub fn held(&self) -> usize {
        self.by_conn.values().map(|h| h.changes.len()).sum()
    }
}

/// Held changes as (subscription id, change), in the order their newest change arrived.
fn in_order(held: impl Iterator<Item = (Slot, Newest)>) -> Vec<(u64, Rc<Delivery>)> {
    let mut all: Vec<(Slot, Newest)> = held.collect();
    all.sort_unstable_by_key(|(_, n)| n.arrival);
    all.into_iter()
        .map(|(slot, n)| (slot.sub, n.change))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::Gen;

    fn change(key: &str, v: u8) -> Rc<Delivery> {
        let op = ChangeOp::Put {
            value: vec![v].into(),
            version: u64::from(v),
        };
        Rc::new(Delivery::new(key, op, format!("t{v}")))
    }

    fn tokens(out: &[(u64, Rc<Delivery>)]) -> Vec<(u64, &str)> {
        out.iter().map(|(id, d)| (*id, d.token.as_str())).collect()
    }

    #[test]
    fn the_newest_change_per_key_leaves_in_the_order_it_arrived() {
        let mut c = Conflation::default();
        let (a, b) = (
            Key {
                slot: 1,
                generation: Gen::default(),
            },
            Key {
                slot: 2,
                generation: Gen::default(),
            },
        );
        assert!(!c.holds(a));
        assert_eq!(c.hold(a, 7, change("x", 1)), Holding::New);
        assert_eq!(c.hold(a, 7, change("y", 2)), Holding::New);
        assert_eq!(c.hold(a, 7, change("x", 3)), Holding::Replaced);
        assert_eq!(
            c.hold(a, 8, change("x", 4)),
            Holding::New,
            "another subscription"
        );
        assert_eq!(
            c.hold(b, 7, change("x", 5)),
            Holding::New,
            "another connection"
        );
        assert!(c.holds(a) && c.holds(b));
        assert_eq!(c.held(), 4);
        // Three held for `a` (one replaced), each 64 + key + value + token bytes.
        assert_eq!(c.held_bytes(a), 3 * (64 + 1 + 1 + 2));
        assert_eq!(tokens(&c.release(a)), [(7, "t2"), (7, "t3"), (8, "t4")]);
        assert!(!c.holds(a));
        assert!(c.release(a).is_empty());
        c.end(b, 7);
        assert!(!c.holds(b), "an ended subscription's changes are dropped");
    }

    #[test]
    fn one_subscription_can_leave_alone() {
        let mut c = Conflation::default();
        let a = Key {
            slot: 1,
            generation: Gen::default(),
        };
        c.hold(a, 1, change("x", 1));
        c.hold(a, 2, change("x", 2));
        c.hold(a, 1, change("y", 3));
        assert_eq!(tokens(&c.release_sub(a, 1)), [(1, "t1"), (1, "t3")]);
        assert!(c.holds(a));
        assert_eq!(tokens(&c.release_sub(a, 2)), [(2, "t2")]);
        assert!(!c.holds(a));
        c.hold(a, 1, change("x", 4));
        c.forget(a);
        assert_eq!(c.held(), 0);
    }
}
