//! The numbers an edge puts in link frames to name its own things, and gets back from the
//! store unchanged: a [`WatchId`] names one of its watches (in `Watch`, `Unwatch` and every
//! frame the watch produces; the edge also pings with it, to learn that a retired watch's
//! last frames are in), a [`KeepAliveNonce`] names one idle-link ping. Both come back as a
//! `Pong`'s nonce, so their ranges are disjoint by construction:
//!
//! | bits           | 63 | 32..=62           | 0..=31            |
//! |----------------|----|-------------------|-------------------|
//! | watch id       | 1  | sequence, never 0 | the edge's tag    |
//! | keep-alive     | 1  | 0                 | the link's tick   |
//! | request id     | 0  | a counter from 1  |                   |
//!
//! The store treats a watch id as opaque ([`WatchId::from_raw`]); only the edge allocates
//! them ([`WatchId::new`]).

/// Bit 63: set in every watch id and keep-alive nonce, never in a request id.
const HIGH: u64 = 1 << 63;
/// Where a watch id's sequence starts.
const SEQ_SHIFT: u32 = 32;
/// Bits 32 to 62: a watch id's sequence, zero in a keep-alive nonce.
const SEQ_BITS: u64 = (WatchId::MAX_SEQ as u64) << SEQ_SHIFT;

/// An edge's name for one of its watches on a store link (the `watch_id` of link frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(u64);

impl WatchId {
    /// Largest sequence number (31 bits); a sequence wraps to 1 after it.
    pub const MAX_SEQ: u32 = (1 << 31) - 1;

    /// The watch id with sequence `seq` (1 to [`Self::MAX_SEQ`]) and `tag` (the edge's
    /// own, e.g. which of its groups the watch serves); `None` for a sequence out of range.
    #[must_use]
    pub const fn new(seq: u32, tag: u32) -> Option<Self> {
        if seq == 0 || seq > Self::MAX_SEQ {
            return None;
        }
        Some(Self(HIGH | (seq as u64) << SEQ_SHIFT | tag as u64))
    }

    /// A watch id as read from a frame, unchecked: the store echoes whatever the edge chose.
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The id as it goes into a frame.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The edge's tag (bits 0 to 31).
    #[must_use]
    pub const fn tag(self) -> u32 {
        self.0 as u32
    }

    /// Whether [`Self::new`] can give this id (no keep-alive nonce or request id is one).
    #[must_use]
    pub const fn is_allocated(self) -> bool {
        self.0 & HIGH != 0 && self.0 & SEQ_BITS != 0
    }
}

/// The nonce of a link's keep-alive ping: bit 63 and a tick, never a [`WatchId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepAliveNonce(u64);

impl KeepAliveNonce {
    /// The nonce of a keep-alive ping sent at `tick`.
    #[must_use]
    pub const fn new(tick: u32) -> Self {
        Self(HIGH | tick as u64)
    }

    /// The keep-alive nonce `raw` is, if it is one (a `Pong` also answers watch pings).
    #[must_use]
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw & HIGH != 0 && raw & SEQ_BITS == 0 {
            Some(Self(raw))
        } else {
            None
        }
    }

    /// The nonce as it goes into a `Ping`.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Ticks and tags at every boundary of their fields.
    const EDGES32: [u32; 6] = [0, 1, 0x7FFF_FFFF, 0x8000_0000, u32::MAX - 1, u32::MAX];

    #[test]
    fn no_watch_id_is_ever_a_keep_alive_nonce_at_the_boundaries() {
        for seq in [1, 2, WatchId::MAX_SEQ - 1, WatchId::MAX_SEQ] {
            for tag in EDGES32 {
                let wid = WatchId::new(seq, tag).unwrap();
                assert!(wid.is_allocated());
                assert_eq!(wid.tag(), tag);
                assert_eq!(KeepAliveNonce::from_raw(wid.get()), None, "{wid:?}");
                for tick in EDGES32 {
                    assert_ne!(wid.get(), KeepAliveNonce::new(tick).get());
                }
            }
        }
        for tick in EDGES32 {
            let nonce = KeepAliveNonce::new(tick);
            assert_eq!(KeepAliveNonce::from_raw(nonce.get()), Some(nonce));
            assert!(!WatchId::from_raw(nonce.get()).is_allocated());
        }
    }

    #[test]
    fn a_sequence_out_of_range_gives_no_watch_id() {
        assert_eq!(WatchId::new(0, 5), None);
        assert_eq!(WatchId::new(WatchId::MAX_SEQ + 1, 5), None);
        assert_eq!(WatchId::new(u32::MAX, 5), None);
    }

    #[test]
    fn request_ids_are_neither() {
        for rid in [0, 1, 2, u64::from(u32::MAX), (1 << 63) - 1] {
            assert!(!WatchId::from_raw(rid).is_allocated());
            assert_eq!(KeepAliveNonce::from_raw(rid), None);
        }
    }

    proptest! {
        /// The two ranges, as their own predicates say, never share a value.
        #[test]
        fn no_value_is_both(raw in any::<u64>()) {
            prop_assert!(
                !(WatchId::from_raw(raw).is_allocated() && KeepAliveNonce::from_raw(raw).is_some())
            );
        }

        /// Any allocated watch id differs from any keep-alive nonce.
        #[test]
        fn watch_ids_and_nonces_never_collide(seq in any::<u32>(), tag in any::<u32>(), tick in any::<u32>()) {
            let nonce = KeepAliveNonce::new(tick);
            prop_assert!(KeepAliveNonce::from_raw(nonce.get()).is_some());
            if let Some(wid) = WatchId::new(seq, tag) {
                prop_assert_ne!(wid.get(), nonce.get());
                prop_assert!(KeepAliveNonce::from_raw(wid.get()).is_none());
            } else {
                prop_assert!(seq == 0 || seq > WatchId::MAX_SEQ);
            }
        }
    }
}
