//! A link's intake: how many of its requests, and how many of their bytes, the core
//! holds unanswered. The link's reader takes a share for each request it hands the
//! core ([`Intake::take`]) and stops reading its socket while the intake is full; the
//! core gives each share back once it has answered the request (a write once it is
//! committed), which wakes a reader that waits for room ([`Intake::room`]). So an edge
//! that sends faster than the store commits is held back by TCP, what the store holds
//! of a link's requests stays within the bounds (passed by at most one frame), and a
//! stopping store has a bounded amount left to commit. The members of a relinked
//! edge's presence announcement become the store's own writes, outside any intake
//! (an edge announces them once per link it opens).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most requests a link may have in the core unanswered, unless configured otherwise:
/// two full batches' worth (see `CoreConfig::max_drain`), so a single link still
/// keeps the committer busy.
pub const DEFAULT_MAX_REQUESTS: usize = 8192;
/// Most bytes of request frames a link may have in the core unanswered, unless
/// configured otherwise. A frame is taken whenever the intake is not full, so the
/// bound may be passed by one frame.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// An intake's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLimits {
    /// Requests.
    pub requests: usize,
    /// Bytes of their frames.
    pub bytes: usize,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            requests: DEFAULT_MAX_REQUESTS,
            bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One request's share of its link's intake, given back once it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    requests: usize,
    bytes: usize,
}

impl Taken {
    /// The share of a request no reader took (the store's own writes; tests that talk
    /// to the core directly).
    pub const NONE: Taken = Taken {
        requests: 0,
        bytes: 0,
    };
}

/// What a link's requests hold of the core; shared by the link's reader and the core.
#[derive(Debug)]
pub struct Intake {
    limits: IntakeLimits,
    requests: AtomicUsize,
    bytes: AtomicUsize,
    room: tokio::sync::Notify,
}

impl Default for Intake {
    /// An empty intake with the default bounds.
    fn default() -> Self {
        Self::new(IntakeLimits::default())
    }
}

impl Intake {
    /// An empty intake with these bounds (each at least 1, so that a request always
    /// passes an empty intake).
    pub fn new(limits: IntakeLimits) -> Self {
        Self {
            limits: IntakeLimits {
                requests: limits.requests.max(1),
                bytes: limits.bytes.max(1),
            },
            requests: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
        }
    }

    /// Whether the link's reader must stop handing the core requests.
    pub fn full(&self) -> bool {
        self.requests.load(Ordering::Acquire) >= self.limits.requests
            || self.bytes.load(Ordering::Acquire) >= self.limits.bytes
    }

    /// Take a share for a request whose frame is `bytes` long.
    pub fn take(&self, bytes: usize) -> Taken {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Taken { requests: 1, bytes }
    }

    /// Give back a request's share; a reader waiting for room is woken if the intake
    /// is no longer full.
    pub fn give_back(&self, share: Taken) {
        if share == Taken::NONE {
            return;
        }
        // Never below zero (every share given back was taken; a bug must not leave the
        // link unread for good).
        let sub = |n: usize| move |v: usize| Some(v.saturating_sub(n));
        let requests =
            self.requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, sub(share.requests));
        let bytes = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, sub(share.bytes));
        debug_assert!(
            requests.is_ok_and(|r| r >= share.requests) && bytes.is_ok_and(|b| b >= share.bytes),
            "a share given back that was not taken"
        );
        if !self.full() {
            // Whether or not the reader waits yet: a permit is kept for it (several
            // merge into one) and it checks `full` again when woken. Deciding on "was
            // full before" instead could miss a reader on another thread that filled
            // the intake in between.
            self.room.notify_one();
        }
    }

    /// Wait until a share given back may have made room (check [`full`](Self::full)
    /// again).
    pub async fn room(&self) {
        self.room.notified().await;
    }

    /// Requests held now.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> IntakeLimits {
        IntakeLimits {
            requests: 3,
            bytes: 100,
        }
    }

    #[test]
    fn full_at_either_bound_and_not_before() {
        let i = Intake::new(limits());
        let a = i.take(10);
        let b = i.take(10);
        assert!(!i.full());
        let c = i.take(10);
        assert!(i.full(), "three requests");
        i.give_back(c);
        assert!(!i.full());
        let big = i.take(80);
        assert!(i.full(), "100 bytes");
        i.give_back(big);
        i.give_back(a);
        i.give_back(b);
        assert_eq!(i.requests(), 0);
        assert!(!i.full());
    }

    #[tokio::test]
    async fn a_share_given_back_wakes_a_reader_waiting_for_room() {
        let i = std::sync::Arc::new(Intake::new(limits()));
        let shares: Vec<_> = (0..3).map(|_| i.take(1)).collect();
        assert!(i.full());
        let waiter = {
            let i = std::sync::Arc::clone(&i);
            tokio::spawn(async move {
                while i.full() {
                    i.room().await;
                }
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        i.give_back(shares[0]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the reader was woken")
            .unwrap();
    }

    #[tokio::test]
    async fn room_made_before_the_reader_waits_is_not_lost() {
        let i = Intake::new(limits());
        let shares: Vec<_> = (0..3).map(|_| i.take(1)).collect();
        // The reader saw it full, then the core gave a share back before it waited.
        assert!(i.full());
        i.give_back(shares[1]);
        tokio::time::timeout(std::time::Duration::from_secs(5), i.room())
            .await
            .expect("the permit was kept");
    }

    #[test]
    fn bounds_of_zero_still_let_one_request_in() {
        let i = Intake::new(IntakeLimits {
            requests: 0,
            bytes: 0,
        });
        assert!(!i.full());
        let a = i.take(1);
        assert!(i.full());
        i.give_back(a);
        assert!(!i.full());
    }

    #[test]
    fn a_share_no_reader_took_changes_nothing() {
        let i = Intake::new(limits());
        let a = i.take(5);
        i.give_back(Taken::NONE);
        assert_eq!(i.requests(), 1);
        i.give_back(a);
        assert_eq!(i.requests(), 0);
    }
}
