//! `permessage-deflate` for a worker's connections (RFC 7692, without context
//! takeover either way, so nothing is kept per connection): one inflater and one
//! deflater per worker, reset per message.
//!
//! - In: a compressed message from a connection is inflated here, up to the message
//!   limit (past it: 1009, before more is held), then handled like any other.
//! - Out: a message of a connection's own (an answer, a snapshot, an echo) is
//!   compressed for it alone (at `compression_level_single`, 1 by default: it is paid
//!   per message) when it is at least `compression_min_bytes` long and comes out
//!   smaller. A change is compressed once per worker for all its subscribers (at
//!   `compression_level`, 6 by default: it is paid once)
//!   ([`Delivery`](crate::hub::Delivery) keeps the deflated rest); each subscriber's
//!   few bytes of head go in front of it in a stored block
//!   ([`stored_block`]), so no compressor runs per subscriber.
//!
//! A connection that limited our window (`server_max_window_bits` 9 to 14) gets every
//! message compressed for it alone, by a deflater of that window (one per window size
//! in use, made on first use).
//!
//! Its figures (compressions run, messages sent and received compressed) reach
//! `/metrics` once a tick.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use wire::frame::deflate::{Deflater, Inflater, inflate_message, stored_block, stored_len};
use wire::frame::{Opcode, ProtocolError, encode_compressed_header, encode_frame};

use super::conn::SendQueue;
use crate::metrics::WorkerMetrics;

/// Scratch capacity kept between messages; past it, the tick gives it back.
const SCRATCH_KEEP: usize = 64 * 1024;

/// What the stored block in front of a per-subscriber head adds.
const STORED_HEAD: usize = 5;

/// A worker's compression state.
#[derive(Debug)]
pub struct Compression {
    inflater: Inflater,
    /// For a change, shared by its subscribers.
    shared: Deflater,
    /// For a message of one connection's.
    single: Deflater,
    /// The same for connections that limited our window to 9..=14 bits, made on first
    /// use.
    windowed: [Option<Deflater>; 6],
    level_single: u32,
    /// A compressed message, inflated.
    inflated: Vec<u8>,
    /// A message deflated for one connection.
    deflated: Vec<u8>,
    /// Shorter messages go uncompressed.
    min_bytes: usize,
    counts: Counts,
}

/// What this worker's compression did, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Deflate runs: one per message of a connection's own, one per change shared by
    /// every subscriber.
    compressions: u64,
    /// Messages sent compressed.
    sent: u64,
    /// Compressed messages received.
    received: u64,
}

impl Compression {
    /// With the levels and threshold of `cfg`.
    pub fn new(cfg: &crate::config::Config) -> Self {
        Self::with(
            cfg.compression_level,
            cfg.compression_level_single,
            cfg.compression_min_bytes,
        )
    }

    /// A change deflated at `level`, a connection's own message at `level_single`;
    /// messages shorter than `min_bytes` uncompressed.
    fn with(level: u32, level_single: u32, min_bytes: usize) -> Self {
        Self {
            inflater: Inflater::default(),
            shared: Deflater::new(level),
            single: Deflater::new(level_single),
            windowed: Default::default(),
            level_single,
            inflated: Vec::new(),
            deflated: Vec::new(),
            min_bytes,
            counts: Counts::default(),
        }
    }

    /// Inflate compressed message `payload` (text if `text`) into `out`, at most
    /// `limit` bytes; the protocol's error (and `out` as it was) if it cannot be.
    pub fn inflate(
        &mut self,
        text: bool,
        payload: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        self.counts.received += 1;
        inflate_message(&mut self.inflater, text, payload, limit, out)
    }

    /// The scratch a message is inflated into, empty (give it back with
    /// [`put_inflated`](Self::put_inflated)).
    pub fn take_inflated(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inflated)
    }

    /// The scratch back, for the next message.
    pub fn put_inflated(&mut self, mut v: Vec<u8>) {
        v.clear();
        self.inflated = v;
    }

    /// Queue `body` as one message of `opcode` on `out`, a compressed connection's whose
    /// messages are deflated with a `window`-bit window: deflated when that is worth it,
    /// else as it is.
    pub fn queue(&mut self, out: &mut SendQueue, opcode: Opcode, body: &[u8], window: u8) {
        if body.len() >= self.min_bytes {
            self.deflated.clear();
            let level = self.level_single;
            let deflater = match self.windowed.get_mut(usize::from(window.saturating_sub(9))) {
                Some(d) if window < 15 => {
                    d.get_or_insert_with(|| Deflater::with_window(level, window))
                }
                _ => &mut self.single,
            };
            deflater.deflate_end(body, &mut self.deflated);
            self.counts.compressions += 1;
            if self.deflated.len() < body.len() {
                self.counts.sent += 1;
                let z = &self.deflated;
                out.push_with(&mut |v| {
                    encode_compressed_header(v, opcode, z.len());
                    v.extend_from_slice(z);
                });
                return;
            }
        }
        out.push_with(&mut |v| encode_frame(v, opcode, body));
    }

    /// `rest`, the shared part of a change of `whole` bytes, deflated once (the caller
    /// keeps it for every subscriber); `None` if the change is too short to compress
    /// or compresses to no gain.
    pub fn deflate_shared(&mut self, rest: &[u8], whole: usize) -> Option<Bytes> {
        if whole < self.min_bytes {
            return None;
        }
        self.deflated.clear();
        self.shared.deflate_end(rest, &mut self.deflated);
        self.counts.compressions += 1;
        // Copied out of the scratch: a `Bytes` made from the `Vec` would keep all the
        // capacity reserved for the uncompressed rest, uncounted by the send queues
        // that hold it.
        let z = &self.deflated;
        (z.len() + STORED_HEAD < rest.len()).then(|| Bytes::copy_from_slice(z))
    }

    /// Queue one compressed message whose payload is `head` (this subscriber's own
    /// bytes, in a stored block) then `rest_z` (the shared rest, deflated once by
    /// [`deflate_shared`](Self::deflate_shared)): copied when smaller than `share_min`,
    /// else sent by reference.
    pub fn queue_split(
        &mut self,
        out: &mut SendQueue,
        opcode: Opcode,
        head: &[u8],
        rest_z: &Bytes,
        share_min: usize,
    ) {
        self.counts.sent += 1;
        let len = stored_len(head.len()) + rest_z.len();
        let share = rest_z.len() >= share_min;
        out.push_with(&mut |v| {
            encode_compressed_header(v, opcode, len);
            stored_block(head, v);
            if !share {
                v.extend_from_slice(rest_z);
            }
        });
        if share {
            out.push_shared(rest_z.clone());
        }
    }

    /// Give back scratch a large message left behind.
    pub fn trim(&mut self) {
        for v in [&mut self.inflated, &mut self.deflated] {
            if v.capacity() > SCRATCH_KEEP {
                *v = Vec::new();
            }
        }
    }

    /// Publish the figures.
    pub fn publish(&self, m: &WorkerMetrics) {
        let c = self.counts;
        m.compressions.store(c.compressions, Ordering::Relaxed);
        m.compressed_out.store(c.sent, Ordering::Relaxed);
        m.compressed_in.store(c.received, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared rest is held by every subscriber's queue, which counts only its
    /// length: it must not keep the capacity reserved for the uncompressed rest.
    #[test]
    fn a_shared_rest_holds_only_its_own_bytes() {
        let mut z = Compression::with(6, 1, 128);
        let rest = vec![b'a'; 1 << 20];
        let shared = z.deflate_shared(&rest, rest.len());
        let held: Vec<u8> = shared.map(Vec::from).unwrap_or_default();
        assert!(!held.is_empty() && held.len() < 4096, "{}", held.len());
        assert!(held.capacity() < 4096, "{} bytes held", held.capacity());
        // Too short, or no gain: not compressed.
        assert!(z.deflate_shared(b"short", 5).is_none());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes deflate cannot shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(z.deflate_shared(&noise, noise.len()).is_none());
    }
}
