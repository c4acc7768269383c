//! Giving memory back after a burst: tables and queues sized by a peak (a connect
//! storm's thousands of joins in flight, a mass close) keep that capacity for as long
//! as the process lives unless told otherwise. Each worker trims its own once a tick;
//! a table is only reallocated when it is mostly empty, so steady load never pays.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// Tables smaller than this are left alone.
const MIN_CAPACITY: usize = 64;

/// The one rule: a table of more than [`MIN_CAPACITY`] that is less than a quarter
/// full is shrunk to twice its length.
fn worth_trimming(len: usize, capacity: usize) -> bool {
    capacity > MIN_CAPACITY && len * 4 < capacity
}

/// Shrink `m` by the rule.
pub fn trim_map<K: Eq + Hash, V, S: BuildHasher>(m: &mut HashMap<K, V, S>) {
    if worth_trimming(m.len(), m.capacity()) {
        m.shrink_to(m.len() * 2);
    }
}

/// [`trim_map`] for a `HashTable`, which rehashes its entries with `hash`.
pub fn trim_table<T>(t: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    if worth_trimming(t.len(), t.capacity()) {
        t.shrink_to(t.len() * 2, hash);
    }
}

/// Shrink `q` by the rule.
pub fn trim_deque<T>(q: &mut std::collections::VecDeque<T>) {
    if worth_trimming(q.len(), q.capacity()) {
        q.shrink_to(q.len() * 2);
    }
}

/// Shrink `v` by the rule.
pub fn trim_vec<T>(v: &mut Vec<T>) {
    if worth_trimming(v.len(), v.capacity()) {
        v.shrink_to(v.len() * 2);
    }
}

/// Push onto `v`, growing from one element rather than `Vec`'s four: for the many
/// small lists held per key (a group's members and watches), most of which hold one.
pub fn push_tight<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tight_pushes_start_at_one_then_double() {
        let mut v: Vec<[u8; 24]> = Vec::new();
        push_tight(&mut v, [0; 24]);
        assert_eq!(v.capacity(), 1);
        push_tight(&mut v, [0; 24]);
        assert_eq!(v.capacity(), 2);
        push_tight(&mut v, [0; 24]);
        assert_eq!(v.capacity(), 4);
    }

    #[test]
    fn a_table_left_mostly_empty_by_a_burst_shrinks_and_a_busy_one_does_not() {
        let mut m: HashMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        let peak = m.capacity();
        m.retain(|&k, _| k < 100);
        trim_map(&mut m);
        assert!(m.capacity() < peak / 16, "{} of {peak}", m.capacity());
        assert_eq!(m.len(), 100);
        let mut busy: HashMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        let cap = busy.capacity();
        trim_map(&mut busy);
        assert_eq!(busy.capacity(), cap);
        let mut v: Vec<u32> = (0..10_000).collect();
        v.truncate(10);
        trim_vec(&mut v);
        assert!(v.capacity() <= 20);
    }
}
