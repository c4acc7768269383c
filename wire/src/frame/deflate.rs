//! The payloads of compressed messages (RFC 7692 §7.2), both ways, for connections
//! that negotiated `permessage-deflate` without context takeover
//! ([`crate::handshake::deflate`]). Nothing is kept between messages, so one inflater
//! (and one compression of a change) serves every connection of a worker.
//!
//! - In: a message's payload, with the `00 00 ff ff` its sender removed put back
//!   (§7.2.2), inflated into at most a caller's limit: a message that would inflate
//!   past it is refused before more than the limit is held (a zip bomb costs nothing).
//! - Out: a payload is deflated with a sync flush and its final `00 00 ff ff` removed
//!   (§7.2.1). A message made of a per-recipient head and a shared rest is the head
//!   deflated whole (sync-flushed, ending on a byte boundary with an empty stored block)
//!   followed by the rest deflated once: two such streams concatenate into one valid
//!   stream, so the shared part is compressed once for every recipient.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The tail every sync-flushed deflate stream ends with, removed on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Bytes inflated per step.
const STEP: usize = 16 * 1024;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the limit (close 1009).
    #[error("inflates past {0} bytes")]
    TooBig(usize),
    /// It is not valid deflate data (close 1007: the payload is not what the
    /// extension says).
    #[error("not valid deflate data")]
    Corrupt,
}

/// One inflater, reset for every message (the client compresses without context
/// takeover).
pub struct Inflater {
    d: Decompress,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            d: Decompress::new(false),
            buf: vec![0; STEP],
        }
    }
}

impl Inflater {
    /// Inflate `payload`, one whole message's, appending at most `limit` bytes to
    /// `out` (nothing on an error).
    pub fn inflate(
        &mut self,
        payload: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.d.reset(false);
        let start = out.len();
        let r = self.inflate_into(payload, limit, start, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn inflate_into(
        &mut self,
        payload: &[u8],
        limit: usize,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        for input in [payload, &TAIL[..]] {
            let mut at = 0;
            loop {
                let held = out.len() - start;
                // What the limit still allows, and one byte more to see it passed.
                let room = (limit.saturating_sub(held) + 1).min(self.buf.len());
                let (in0, out0) = (self.d.total_in(), self.d.total_out());
                let rest = input.get(at..).unwrap_or_default();
                let step = self.buf.get_mut(..room).unwrap_or_default();
                let status = self
                    .d
                    .decompress(rest, step, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let used = usize::try_from(self.d.total_in() - in0).unwrap_or(usize::MAX);
                let made = usize::try_from(self.d.total_out() - out0).unwrap_or(usize::MAX);
                at += used;
                out.extend_from_slice(self.buf.get(..made).unwrap_or_default());
                if out.len() - start > limit {
                    return Err(InflateError::TooBig(limit));
                }
                if status == Status::StreamEnd {
                    // A final block: the message ends there.
                    return Ok(());
                }
                if (at >= input.len() && made < room) || (used == 0 && made == 0) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// One compressor, reset for every payload (no context takeover).
pub struct Deflater {
    c: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (0 to 9; 1 is fast, 6 zlib's default).
    #[must_use]
    pub fn new(level: u32) -> Self {
        Self {
            c: Compress::new(Compression::new(level.min(9)), false),
        }
    }

    /// Append `data` deflated and sync-flushed to `out`, whole (ending with
    /// `00 00 ff ff`): the start of a message whose rest follows.
    pub fn deflate_whole(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.c.reset();
        let mut at = 0;
        loop {
            out.reserve(data.len() - at + 64);
            let in0 = self.c.total_in();
            let room = out.capacity() - out.len();
            let rest = data.get(at..).unwrap_or_default();
            // Compressing into a Vec with room cannot fail.
            let _ = self.c.compress_vec(rest, out, FlushCompress::Sync);
            at += usize::try_from(self.c.total_in() - in0).unwrap_or(usize::MAX);
            // Done once every byte is in and the flush did not fill the room.
            if at >= data.len() && out.capacity() - out.len() > 0 && room > 0 {
                break;
            }
        }
    }

    /// Append `data` deflated as the end of a message (§7.2.1: the final
    /// `00 00 ff ff` removed).
    pub fn deflate_end(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.deflate_whole(data, out);
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        Inflater::default()
            .inflate(payload, limit, &mut out)
            .map(|()| out)
    }

    #[test]
    fn rfc_7692_example_hello() {
        // §7.2.3.1: "Hello" compressed without context takeover.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&hello, 100).unwrap(), b"Hello");
        // §7.2.3.3: "Hello" in a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: two blocks, the second final ("Hello" and "Hello").
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate(&two, 100).unwrap(), b"Hello");
    }

    #[test]
    fn a_head_and_a_shared_rest_deflated_apart_inflate_as_one() {
        let mut d = Deflater::new(6);
        let rest =
            br#""key":"room/{42}/title","value":{"text":"hello hello hello hello"},"version":7}"#;
        let mut shared = Vec::new();
        d.deflate_end(rest, &mut shared);
        for head in [
            &br#"{"op":"change","id":1,"#[..],
            br#"{"op":"change","id":123456,"#,
        ] {
            let mut msg = Vec::new();
            d.deflate_whole(head, &mut msg);
            msg.extend_from_slice(&shared);
            let mut want = head.to_vec();
            want.extend_from_slice(rest);
            assert_eq!(inflate(&msg, 1 << 20).unwrap(), want);
        }
        // And one deflated whole, as a single payload.
        let mut one = Vec::new();
        d.deflate_end(b"hello, hello, hello", &mut one);
        assert_eq!(inflate(&one, 100).unwrap(), b"hello, hello, hello");
    }

    #[test]
    fn a_zip_bomb_is_refused_at_the_limit_and_garbage_is_corrupt() {
        // 1 MiB of zeros deflates to about 1 KiB.
        let mut bomb = Vec::new();
        Deflater::new(9).deflate_end(&vec![0u8; 1 << 20], &mut bomb);
        assert!(bomb.len() < 2048, "{} bytes", bomb.len());
        let mut out = b"kept".to_vec();
        let err = Inflater::default().inflate(&bomb, 64 * 1024, &mut out);
        assert_eq!(err, Err(InflateError::TooBig(64 * 1024)));
        assert_eq!(out, b"kept", "nothing of a refused message is kept");
        assert_eq!(inflate(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
        // Exactly at the limit is allowed.
        let mut ten = Vec::new();
        Deflater::new(6).deflate_end(b"0123456789", &mut ten);
        assert_eq!(inflate(&ten, 10).map(|v| v.len()), Ok(10));
        assert_eq!(inflate(&ten, 9), Err(InflateError::TooBig(9)));
    }
}
