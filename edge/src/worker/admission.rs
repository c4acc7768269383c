//! Where a new connection goes. Each worker accepts on its own `SO_REUSEPORT` listener,
//! where the kernel's hash of the addresses put the connection; then [`place`] picks
//! the least-loaded running worker of the process with room (the accepting one on
//! ties) and reserves the place in the shared counts, so that a full worker never
//! refuses a client while a sibling has room, and uneven arrivals do not leave workers
//! uneven. Only when every worker is full is the connection answered 503, by the one
//! that accepted it.
//!
//! A connection placed on another worker is handed over through that worker's ring
//! (`IORING_OP_MSG_RING`, the descriptor number in the message's result: the workers
//! are threads of one process and share the descriptor table). That happens once, at
//! accept: nothing on the per-message path. A handover the target's ring refuses comes
//! back as a completion, and the connection is placed again here.
//!
//! The counts: each worker's entry is its live connections plus places reserved for
//! it and not yet taken; the worker adds its own accepts and subtracts releases, a
//! sibling adds a reservation before it hands a connection over.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// Where a new connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// To the worker that accepted it (its place is reserved).
    Here,
    /// To worker `n` (its place is reserved).
    There(usize),
    /// Every worker is full: answer 503 here.
    Full,
}

/// Reserve a place for a connection accepted by worker `me` on the least-loaded
/// running worker with fewer than `max` connections, `me` on ties. `rings` says which
/// workers run (a descriptor of -1: not started, or stopped).
pub fn place(load: &[AtomicU32], rings: &[AtomicI32], me: usize, max: u32) -> Placement {
    loop {
        let best = load
            .iter()
            .enumerate()
            .filter(|(w, _)| {
                *w == me
                    || rings
                        .get(*w)
                        .is_some_and(|r| r.load(Ordering::Acquire) >= 0)
            })
            .map(|(w, l)| (l.load(Ordering::Acquire), w != me, w))
            .min();
        let Some((count, _, w)) = best else {
            return Placement::Full;
        };
        if count >= max {
            return Placement::Full;
        }
        let Some(slot) = load.get(w) else {
            return Placement::Full;
        };
        // Taken by someone else meanwhile: look again.
        if slot
            .compare_exchange(count, count + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return if w == me {
                Placement::Here
            } else {
                Placement::There(w)
            };
        }
    }
}

/// Reserve a place on worker `me` itself if it has room (`admission = "local"`).
pub fn place_here(load: &[AtomicU32], me: usize, max: u32) -> Placement {
    let Some(slot) = load.get(me) else {
        return Placement::Full;
    };
    match slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < max).then_some(n + 1)
    }) {
        Ok(_) => Placement::Here,
        Err(_) => Placement::Full,
    }
}

/// Count a connection on `w` without a reservation (one answered 503 still holds a
/// slot until its answer is flushed).
pub fn add(load: &[AtomicU32], w: usize) {
    if let Some(l) = load.get(w) {
        l.fetch_add(1, Ordering::AcqRel);
    }
}

/// A connection of `w` is gone, or a place reserved on `w` was not taken.
pub fn remove(load: &[AtomicU32], w: usize) {
    if let Some(l) = load.get(w) {
        let _ = l.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[u32]) -> Vec<AtomicU32> {
        v.iter().map(|&n| AtomicU32::new(n)).collect()
    }

    fn running(n: usize) -> Vec<AtomicI32> {
        (0..n).map(|_| AtomicI32::new(3)).collect()
    }

    fn now(load: &[AtomicU32]) -> Vec<u32> {
        load.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn the_least_loaded_worker_with_room_gets_it_and_ties_stay_here() {
        let rings = running(3);
        let load = counts(&[5, 3, 3]);
        assert_eq!(place(&load, &rings, 0, 10), Placement::There(1));
        assert_eq!(now(&load), [5, 4, 3]);
        assert_eq!(place(&load, &rings, 0, 10), Placement::There(2));
        let load = counts(&[3, 3, 3]);
        assert_eq!(place(&load, &rings, 2, 10), Placement::Here);
        assert_eq!(now(&load), [3, 3, 4]);
    }

    #[test]
    fn local_placement_keeps_it_here_or_refuses() {
        let load = counts(&[1, 0]);
        assert_eq!(place_here(&load, 0, 2), Placement::Here);
        assert_eq!(place_here(&load, 0, 2), Placement::Full);
        assert_eq!(now(&load), [2, 0]);
    }

    #[test]
    fn full_only_when_every_running_worker_is_full() {
        let rings = running(2);
        let load = counts(&[10, 9]);
        assert_eq!(place(&load, &rings, 0, 10), Placement::There(1));
        assert_eq!(place(&load, &rings, 0, 10), Placement::Full);
        assert_eq!(place(&load, &rings, 1, 10), Placement::Full);
        assert_eq!(now(&load), [10, 10]);
        // A stopped worker is never picked, however empty.
        let rings = running(2);
        rings[1].store(-1, Ordering::Relaxed);
        let load = counts(&[10, 0]);
        assert_eq!(place(&load, &rings, 0, 10), Placement::Full);
    }

    #[test]
    fn arrivals_all_on_one_worker_end_spread_evenly() {
        let rings = running(4);
        let load = counts(&[0, 0, 0, 0]);
        for _ in 0..400 {
            assert_ne!(place(&load, &rings, 0, 1000), Placement::Full);
        }
        assert_eq!(now(&load), [100, 100, 100, 100]);
        remove(&load, 2);
        add(&load, 3);
        assert_eq!(now(&load), [100, 100, 99, 101]);
        remove(&load, 9);
        let empty = counts(&[0]);
        remove(&empty, 0);
        assert_eq!(now(&empty), [0]);
    }

    #[test]
    fn racing_workers_never_place_past_the_limit() {
        let rings = std::sync::Arc::new(running(2));
        let load = std::sync::Arc::new(counts(&[0, 0]));
        let placed: u32 = std::thread::scope(|s| {
            let hands: Vec<_> = (0..2)
                .map(|me| {
                    let (rings, load) = (&rings, &load);
                    s.spawn(move || {
                        (0..1000)
                            .filter(|_| place(load, rings, me, 300) != Placement::Full)
                            .count() as u32
                    })
                })
                .collect();
            hands.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(placed, 600);
        assert_eq!(now(&load), [300, 300]);
    }
}
