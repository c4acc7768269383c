//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): up to `count` buffers of
//! `size` bytes that the kernel picks from when a multishot receive has data. An idle
//! connection therefore holds no receive buffer at all.
//!
//! Incremental (`IOU_PBUF_RING_INC`, Linux 6.12+, the default where the kernel has it):
//! a receive takes only the bytes it needs from the current buffer, so buffers can be
//! large (a 16 KiB message arrives whole, in one completion) while small messages pack
//! into one buffer one after another. The kernel and [`BufRing`] both keep the offset
//! at which the next receive into a buffer lands; a completion whose
//! `IORING_CQE_F_BUF_MORE` is set leaves the buffer with the kernel, one without it
//! ends the kernel's use. Otherwise (older kernels) each completion takes a whole
//! buffer. Either way, the bytes of a completion are the worker's from [`BufRing::get`]
//! until [`BufRing::consumed`], which hands the buffer back once the kernel is done
//! with it.
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

/// `IOU_PBUF_RING_INC` from `<linux/io_uring.h>` (the io-uring crate does not export
/// its registration flags).
const IOU_PBUF_RING_INC: u16 = 2;

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
    /// Incremental consumption: where the next receive into each buffer lands.
    offsets: Option<Vec<u32>>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("size", &self.size)
            .field("provided", &self.provided)
            .field("incremental", &self.offsets.is_some())
            .finish()
    }
}

impl BufRing {
    /// Room for `count` (a power of two, at most 32768) buffers of `size` bytes (at
    /// most 4 GiB), the first `initial` (at least 1, at most `count`) handed to the
    /// kernel; consumed incrementally if `incremental`.
    pub fn new(count: u16, size: usize, initial: u16, incremental: bool) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 1 << 15 || size == 0 || u32::try_from(size).is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two ≤ 32768, 0 < size < 4 GiB",
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
            offsets: incremental.then(|| vec![0; usize::from(count)]),
        };
        ring.provide(initial.clamp(1, count));
        Ok(ring)
    }

    /// Hand `n` more buffers (never used before) to the kernel, each made resident
    /// first: the receive path never takes a page fault, and the edge's resident
    /// memory counts every buffer it has handed over (not just the pages a receive
    /// happened to touch), so what it holds is known.
    fn provide(&mut self, n: u16) {
        let end = self.provided.saturating_add(n).min(self.count);
        for bid in self.provided..end {
            self.prefault(bid);
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

    /// Bytes of the buffers handed to the kernel so far (they stay resident once the
    /// kernel has written into them: the ring grows under load, never shrinks).
    pub fn provided_bytes(&self) -> usize {
        usize::from(self.provided) * self.size
    }

    /// Whether receives consume buffers incrementally.
    pub fn incremental(&self) -> bool {
        self.offsets.is_some()
    }

    pub(super) fn register(&self, ring: &IoUring) -> io::Result<()> {
        let flags = if self.incremental() {
            IOU_PBUF_RING_INC
        } else {
            0
        };
        // SAFETY: the entries stay allocated until `self` is dropped, and the worker
        // drops its `Ring` (which unregisters everything on close) before this.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                GROUP,
                flags,
            )
        }
    }

    /// Touch every page of buffer `bid`, which the kernel has not been given yet.
    fn prefault(&mut self, bid: u16) {
        let start = usize::from(bid) * self.size;
        for at in (0..self.size).step_by(4096) {
            // SAFETY: `bid < count`, so `start + at < count * size`, inside `data`;
            // the buffer is not provided yet, so nothing else reads or writes it.
            unsafe { self.data.add(start + at).write_volatile(0) };
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

    /// Where in buffer `bid` the bytes of its latest completion begin.
    fn offset(&self, bid: u16) -> usize {
        self.offsets
            .as_ref()
            .and_then(|o| o.get(usize::from(bid)))
            .map_or(0, |&at| at as usize)
    }

    /// The `len` bytes a completion just received into buffer `bid` (at the buffer's
    /// current offset when incremental).
    pub fn get(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        let at = self.offset(bid);
        if bid >= self.provided || at.checked_add(len).is_none_or(|end| end > self.size) {
            return None;
        }
        // SAFETY: `bid < provided ≤ count` and `at + len ≤ size` keep the slice inside
        // buffer `bid` of `data`. The kernel wrote these bytes before posting the
        // completion and, with incremental consumption, writes only past them; it takes
        // the buffer back only after `consumed` puts it in the ring again, and `&mut
        // self` makes this the only reference meanwhile.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.data.add(usize::from(bid) * self.size + at), len)
        })
    }

    /// The worker is done with the `len` bytes a completion received into buffer
    /// `bid`; `more` is the completion's `IORING_CQE_F_BUF_MORE` (the kernel keeps the
    /// rest of the buffer). Once the kernel is done with it, the buffer goes back to
    /// it. Returns whether the receive ran to the end of its buffer (more may be
    /// waiting in the socket).
    pub fn consumed(&mut self, bid: u16, len: usize, more: bool) -> bool {
        if bid >= self.provided {
            return false;
        }
        let end = self.offset(bid).saturating_add(len);
        if let Some(at) = self
            .offsets
            .as_mut()
            .and_then(|o| o.get_mut(usize::from(bid)))
        {
            if more {
                *at = u32::try_from(end).unwrap_or(u32::MAX);
                return false;
            }
            *at = 0;
        }
        self.put(bid);
        self.publish();
        end >= self.size || self.incremental()
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
        let mut r = BufRing::new(16, 64, 4, false).unwrap();
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

    #[test]
    fn incremental_receives_follow_each_other_in_a_buffer_until_the_kernel_is_done() {
        let mut r = BufRing::new(4, 64, 4, true).unwrap();
        r.get(1, 10).unwrap().copy_from_slice(&[1; 10]);
        assert!(!r.consumed(1, 10, true), "the kernel keeps the buffer");
        let second = r.get(1, 20).unwrap();
        assert_eq!(second.len(), 20);
        second.copy_from_slice(&[2; 20]);
        assert!(!r.consumed(1, 20, true));
        // The third ends the buffer: 30 + 34 = 64.
        let third = r.get(1, 34).unwrap();
        third.copy_from_slice(&[3; 34]);
        assert!(r.get(1, 35).is_none(), "never past the buffer's end");
        assert!(r.consumed(1, 34, false), "ran to the end: more may wait");
        // Back in the ring from its start; the bytes were laid out one after another.
        let whole = r.get(1, 64).unwrap();
        assert_eq!(&whole[..10], &[1; 10]);
        assert_eq!(&whole[10..30], &[2; 20]);
        assert_eq!(&whole[30..], &[3; 34]);
        // A completion of no bytes (end of stream) leaves the offset where it was.
        assert!(!r.consumed(2, 0, true));
        assert_eq!(r.get(2, 64).map(|b| b.len()), Some(64));
    }

    #[test]
    fn whole_buffer_receives_report_filled_only_when_full() {
        let mut r = BufRing::new(4, 64, 4, false).unwrap();
        assert!(r.get(0, 64).is_some());
        assert!(r.consumed(0, 64, false));
        assert!(r.get(0, 10).is_some());
        assert!(!r.consumed(0, 10, false));
        assert_eq!(r.offset(0), 0, "whole-buffer mode keeps no offsets");
    }
}
