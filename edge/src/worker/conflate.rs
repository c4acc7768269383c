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
//! changes (and tokens) still leave in order. When the connection's queue is empty, every
//! held change goes out, in the order its newest change arrived. So a slow reader costs
//! at most one held change per key it follows, is never closed for being slow by these
//! subscriptions, and always ends at the newest value of every key.

use std::collections::HashMap;
use std::rc::Rc;

use super::slab::Key;
use crate::hub::Delivery;

/// One connection's held changes, by (subscription id, key): the newest change and when
/// it arrived (a worker-wide counter).
type Held = HashMap<(u64, Box<str>), (u64, Rc<Delivery>)>;

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
        match held.insert((id, d.key.clone()), (self.arrivals, d)) {
            Some(_) => Holding::Replaced,
            None => Holding::New,
        }
    }

    /// Everything held for the connection at `key`, in the order its newest changes
    /// arrived; nothing is held for it afterwards.
    pub fn release(&mut self, key: Key) -> Vec<(u64, Rc<Delivery>)> {
        let Some(held) = self.by_conn.remove(&key) else {
            return Vec::new();
        };
        in_order(held.into_iter())
    }

    /// What is held for subscription `id` of the connection at `key`, in order (to go
    /// out before a message of the subscription that must follow it).
    pub fn release_sub(&mut self, key: Key, id: u64) -> Vec<(u64, Rc<Delivery>)> {
        let Some(held) = self.by_conn.get_mut(&key) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        held.retain(|(sub, k), v| {
            if *sub == id {
                taken.push(((*sub, k.clone()), v.clone()));
                false
            } else {
                true
            }
        });
        if held.is_empty() {
            self.by_conn.remove(&key);
        }
        in_order(taken.into_iter())
    }

    /// Subscription `id` of the connection at `key` ended: what it held is dropped.
    pub fn end(&mut self, key: Key, id: u64) {
        if let Some(held) = self.by_conn.get_mut(&key) {
            held.retain(|(sub, _), _| *sub != id);
            if held.is_empty() {
                self.by_conn.remove(&key);
            }
        }
    }

    /// The connection at `key` is gone.
    pub fn forget(&mut self, key: Key) {
        self.by_conn.remove(&key);
    }

    /// Changes held now, over every connection.
    pub fn held(&self) -> usize {
        self.by_conn.values().map(HashMap::len).sum()
    }
}

/// Held changes as (subscription id, change), in the order their newest change arrived.
fn in_order(
    held: impl Iterator<Item = ((u64, Box<str>), (u64, Rc<Delivery>))>,
) -> Vec<(u64, Rc<Delivery>)> {
    let mut all: Vec<(u64, u64, Rc<Delivery>)> =
        held.map(|((id, _), (at, d))| (at, id, d)).collect();
    all.sort_unstable_by_key(|(at, ..)| *at);
    all.into_iter().map(|(_, id, d)| (id, d)).collect()
}

#[cfg(test)]
mod tests {
    use wire::client::ChangeOp;

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
