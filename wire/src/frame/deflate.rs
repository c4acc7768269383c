//! The payloads of compressed messages (RFC 7692 §7.2), both ways, for connections
//! that negotiated `permessage-deflate` without context takeover
//! ([`crate::handshake::deflate`]). Nothing is kept between messages, so one inflater
//! (and one compression of a change) serves every connection of a worker.
//!
//! - In: a message's payload, with the `00 00 ff ff` its sender removed put back
//!   (§7.2.2), inflated into at most a caller's limit: a message that would inflate
//!   past it is refused before more than the limit is held (a zip bomb costs nothing).
//!   [`inflate_message`] maps what goes wrong to the protocol's errors and checks text.
//! - Out: a payload is deflated with a sync flush and its final `00 00 ff ff` removed
//!   (§7.2.1). A message made of a per-recipient head and a shared rest is the head in
//!   a stored (uncompressed) block, [`stored_block`], followed by the rest deflated
//!   once: a stored block ends on a byte boundary, where the rest's blocks begin, so
//!   the two concatenate into one valid stream and the shared part is compressed once
//!   for every recipient, with no compressor run per recipient.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

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
    /// An inflater whose window is `bits` (9 to 15; others are taken as the nearest):
    /// a client's, that limited the server's window, reading the server's messages.
    #[must_use]
    pub fn with_window(bits: u8) -> Self {
        Self {
            d: Decompress::new_with_window_bits(false, bits.clamp(9, 15)),
            buf: vec![0; STEP],
        }
    }

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
                grow(out, made, start + limit + 1).map_err(|()| InflateError::TooBig(limit))?;
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

/// Inflate compressed message `payload` (of a text message if `text`) with `inflater`,
/// appending it to `out`: past `limit` bytes it is [`ProtocolError::MessageTooLarge`]
/// (1009), data that does not inflate [`ProtocolError::BadCompression`] (1007), and
/// text that is not UTF-8 [`ProtocolError::InvalidUtf8`] (1007). On an error `out` is
/// as it was.
pub fn inflate_message(
    inflater: &mut Inflater,
    text: bool,
    payload: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let start = out.len();
    inflater.inflate(payload, limit, out).map_err(|e| match e {
        InflateError::TooBig(max) => ProtocolError::MessageTooLarge {
            len: max as u64 + 1,
            max,
        },
        InflateError::Corrupt => ProtocolError::BadCompression,
    })?;
    let inflated = out.get(start..).unwrap_or_default();
    if text && simdutf8::basic::from_utf8(inflated).is_err() {
        out.truncate(start);
        return Err(ProtocolError::InvalidUtf8);
    }
    Ok(())
}

/// Append `data` as stored (uncompressed) deflate blocks, none of them final (RFC 1951
/// §3.2.4: a 3-bit block header `BFINAL=0 BTYPE=00`, padding to the byte, then `LEN`
/// and its one's complement `NLEN`, little-endian, then the bytes): the per-recipient
/// head of a message whose deflated rest follows.
pub fn stored_block(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(usize::from(u16::MAX)) {
        let len = chunk.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// The bytes [`stored_block`] appends for `n` bytes of data.
#[must_use]
pub fn stored_len(n: usize) -> usize {
    n + 5 * n.div_ceil(usize::from(u16::MAX))
}

/// Make room in `out` for `more` bytes, doubling as a `Vec` does but never past `cap`
/// bytes in all (what the limit allows and one byte more), and failing, not aborting,
/// if the memory cannot be had.
fn grow(out: &mut Vec<u8>, more: usize, cap: usize) -> Result<(), ()> {
    let need = out.len() + more;
    if need <= out.capacity() {
        return Ok(());
    }
    let target = out.capacity().saturating_mul(2).min(cap).max(need);
    out.try_reserve_exact(target - out.len()).map_err(|_| ())
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

    /// A compressor at `level` whose window is `bits` (9 to 15; others are taken as
    /// the nearest): what a peer that limited `server_max_window_bits` can inflate.
    #[must_use]
    pub fn with_window(level: u32, bits: u8) -> Self {
        let c = Compression::new(level.min(9));
        Self {
            c: Compress::new_with_window_bits(c, false, bits.clamp(9, 15)),
        }
    }

    /// Append `data` deflated and sync-flushed to `out`, whole (ending with
    /// `00 00 ff ff`).
    fn deflate_whole(&mut self, data: &[u8], out: &mut Vec<u8>) {
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
            b"",
        ] {
            let mut msg = Vec::new();
            stored_block(head, &mut msg);
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
    fn stored_blocks_match_the_rfc_and_split_past_64_kib() {
        // §7.2.3.3's "Hello" in a stored block, less its final flag and tail.
        let mut b = Vec::new();
        stored_block(b"Hello", &mut b);
        assert_eq!(
            b,
            [0x00, 0x05, 0x00, 0xfa, 0xff, b'H', b'e', b'l', b'l', b'o']
        );
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut b = Vec::new();
        stored_block(&big, &mut b);
        assert_eq!(b.len(), big.len() + 10, "two blocks");
        assert_eq!(stored_len(big.len()), b.len());
        assert_eq!((stored_len(0), stored_len(5)), (0, 10));
        assert_eq!(inflate(&b, 1 << 20).unwrap(), big);
    }

    #[test]
    fn a_message_is_inflated_into_the_protocol_s_errors() {
        let mut i = Inflater::default();
        let mut out = b"x".to_vec();
        let mut z = Vec::new();
        Deflater::new(6).deflate_end("héllo".as_bytes(), &mut z);
        assert_eq!(inflate_message(&mut i, true, &z, 100, &mut out), Ok(()));
        assert_eq!(out, "xhéllo".as_bytes());
        // Not UTF-8 once inflated: 1007, and nothing kept.
        let mut bad = Vec::new();
        Deflater::new(6).deflate_end(&[0xff, 0xfe, 0xfd], &mut bad);
        let err = inflate_message(&mut i, true, &bad, 100, &mut out);
        assert_eq!(err.map_err(|e| e.close_code().0), Err(1007));
        assert_eq!(inflate_message(&mut i, false, &bad, 100, &mut out), Ok(()));
        let too_big = inflate_message(&mut i, false, &z, 3, &mut Vec::new());
        assert_eq!(too_big.map_err(|e| e.close_code().0), Err(1009));
        let corrupt = inflate_message(&mut i, false, &[0xff; 4], 100, &mut Vec::new());
        assert_eq!(corrupt, Err(ProtocolError::BadCompression));
    }

    #[test]
    fn a_small_window_deflates_within_it() {
        // Repeats 1,000 bytes apart: a 15-bit window reaches them, a 9-bit one (512
        // bytes) cannot, and an inflater limited to 9 bits still reads its output.
        let block: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = block.repeat(8);
        let (mut wide, mut narrow) = (Vec::new(), Vec::new());
        Deflater::new(6).deflate_end(&data, &mut wide);
        Deflater::with_window(6, 9).deflate_end(&data, &mut narrow);
        assert!(
            narrow.len() > 2 * wide.len(),
            "{} vs {}",
            narrow.len(),
            wide.len()
        );
        let mut d = Decompress::new_with_window_bits(false, 9);
        let mut out = vec![0; data.len() + 16];
        narrow.extend_from_slice(&TAIL);
        let _ = d.decompress(&narrow, &mut out, FlushDecompress::Sync);
        assert_eq!(out.get(..data.len()), Some(&data[..]));
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
        assert!(
            out.capacity() <= 4 + 64 * 1024 + 1,
            "never held past the limit: {}",
            out.capacity()
        );
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
