//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): up to `count` buffers of
//! `size` bytes that the kernel picks from when a multishot receive has data. An idle
//! connection therefore holds no receive buffer at all. A buffer the kernel filled is
//! the worker's until it calls [`BufRing::recycle`], which hands it back.
//!
//! Only a few buffers are handed to the kernel at first, and more (doubling, up to
//! `count`) each time a receive finds none free ([`BufRing::grow`]): the kernel takes
//! buffers in ring order, so every buffer handed over ends up touched, and handing over
//! only as many as the load needs keeps an idle or lightly loaded worker's resident
//! memory at its working set rather than `count × size`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group id every worker uses for its receive buffers.
pub const GROUP: u16 = 0;

/// The ring of entries and the buffers it points at.
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    data: *mut u8,
    data_layout: Layout,
    count: u16,
    size: usize,
    /// Buffers handed to the kernel so far (ids `0..provided`).
    provided: u16,
    /// Grown in this round of completions already: one exhaustion reports ENOBUFS on
    /// many receives at once, and counts as one.
    grown: bool,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("size", &self.size)
            .field("provided", &self.provided)
            .finish()
    }
}

impl BufRing {
    /// Room for `count` (a power of two, at most 32768) buffers of `size` bytes, the
    /// first `initial` (at least 1, at most `count`) handed to the kernel.
    pub fn new(count: u16, size: usize, initial: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two ≤ 32768, size > 0",
            ));
        }
        let entries_layout = Layout::array::<BufRingEntry>(usize::from(count))
            .and_then(|l| l.align_to(4096))
            .map_err(io::Error::other)?;
        let data_layout =
            Layout::from_size_align(usize::from(count) * size, 4096).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count ≥ 1, size ≥ 1).
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let data = unsafe { alloc_zeroed(data_layout) };
        if entries.is_null() || data.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut ring = Self {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            size,
            provided: 0,
            grown: false,
            tail: 0,
        };
        ring.provide(initial.clamp(1, count));
        Ok(ring)
    }

    /// Hand `n` more buffers (never used before) to the kernel.
    fn provide(&mut self, n: u16) {
        let end = self.provided.saturating_add(n).min(self.count);
        for bid in self.provided..end {
            self.put(bid);
        }
        self.provided = end;
        self.publish();
    }

    /// A receive found no buffer free: hand over as many again as there are (up to
    /// `count`), once per round of completions. Returns the number now handed over.
    pub fn grow(&mut self) -> u16 {
        if !std::mem::replace(&mut self.grown, true) {
            self.provide(self.provided);
        }
        self.provided
    }

    /// A round of completions is done: the next exhaustion may grow the ring again.
    pub fn end_round(&mut self) {
        self.grown = false;
    }

    /// Buffers handed to the kernel so far.
    pub fn provided(&self) -> u16 {
        self.provided
    }

    pub(super) fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entries stay allocated until `self` is dropped, and the worker
        // drops its `Ring` (which unregisters everything on close) before this.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.entries as u64, self.count, GROUP, 0)
        }
    }

    /// Write entry `bid` at our tail (not yet visible to the kernel).
    fn put(&mut self, bid: u16) {
        let mask = self.count - 1;
        let slot = usize::from(self.tail & mask);
        // SAFETY: `slot < count`, the number of entries allocated; `bid < count`, so
        // the buffer address is inside `data`. The kernel only reads entries between
        // its head and the published tail, and this one is past the published tail.
        unsafe {
            let e = &mut *self.entries.add(slot);
            e.set_addr(self.data.add(usize::from(bid) * self.size) as u64);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every entry put so far visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail field lives in the first entry, inside the allocation, and is
        // only ever accessed atomically by the kernel and by this release store.
        unsafe {
            let tail = BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion just gave us.
    pub fn get(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid >= self.provided || len > self.size {
            return None;
        }
        // SAFETY: `bid < provided ≤ count` and `len ≤ size` keep the slice inside `data`. The
        // kernel handed this buffer over with the completion and takes it back only
        // after `recycle`, and `&mut self` makes this the only reference meanwhile.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.data.add(usize::from(bid) * self.size), len)
        })
    }

    /// Hand buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid < self.provided {
            self.put(bid);
            self.publish();
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring that used them is
        // gone (the worker drops its `Ring` first).
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.data, self.data_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_handed_over_a_few_at_first_then_doubling_up_to_the_count() {
        let mut r = BufRing::new(16, 64, 4).unwrap();
        assert_eq!(r.provided(), 4);
        assert!(r.get(3, 64).is_some());
        assert!(r.get(4, 1).is_none(), "not handed over yet");
        assert_eq!(r.grow(), 8);
        assert_eq!(r.grow(), 8, "once per round");
        assert!(r.get(7, 64).is_some());
        r.end_round();
        assert_eq!(r.grow(), 16);
        r.end_round();
        assert_eq!(r.grow(), 16, "never past the count");
        assert!(r.get(16, 1).is_none());
    }
}
