//! Frame encoding. Server frames (unmasked) are appended to a caller's buffer, or
//! built once into a [`SharedFrame`] that any number of connections send by
//! reference (fan-out). Masked client frames serve tests and the load generator.

use bytes::Bytes;

use super::close::{CloseCode, CloseFrame, write_close_payload};
use super::header::{FrameHeader, MAX_HEADER_LEN, RSV1};
use super::opcode::Opcode;
use crate::mask::apply_mask;

/// Append one unmasked frame to `out`.
pub fn encode_frame_parts(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8]) {
    debug_assert!(
        !opcode.is_control() || (fin && payload.len() <= 125),
        "§5.5: control frames are ≤ 125 bytes and unfragmented"
    );
    out.reserve(MAX_HEADER_LEN + payload.len());
    write_header(out, fin, 0, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Append an unmasked frame header for `len` payload bytes.
fn write_header(out: &mut Vec<u8>, fin: bool, rsv: u8, opcode: Opcode, len: usize) {
    let h = FrameHeader {
        fin,
        rsv,
        opcode,
        mask: None,
        payload_len: len as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    out.extend_from_slice(&head[..n]);
}

/// Append only the header of a complete (FIN) unmasked frame of `len` payload bytes; the
/// caller sends the payload after it (possibly as several buffers).
pub fn encode_header(out: &mut Vec<u8>, opcode: Opcode, len: usize) {
    write_header(out, true, 0, opcode, len);
}

/// [`encode_header`] for a compressed message (`permessage-deflate`): RSV1 set, `len`
/// bytes of deflated payload to follow.
pub fn encode_compressed_header(out: &mut Vec<u8>, opcode: Opcode, len: usize) {
    debug_assert!(
        !opcode.is_control(),
        "RFC 7692 §6.1: never on a control frame"
    );
    write_header(out, true, RSV1, opcode, len);
}

/// Append one complete (FIN) unmasked frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    encode_frame_parts(out, true, opcode, payload);
}

/// Append a close frame with `code` and `reason` (cut to fit 125 bytes).
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    debug_assert!(
        code.is_sendable(),
        "§7.4.1: close code {} may not be sent",
        code.0
    );
    let mut body = Vec::with_capacity(2 + reason.len().min(123));
    write_close_payload(&mut body, code, reason);
    encode_frame(out, Opcode::Close, &body);
}

/// Append the answer to a received close frame (§5.5.1): echo its status code (with
/// no reason), or an empty close body when the peer sent none.
pub fn encode_close_reply(out: &mut Vec<u8>, received: Option<&CloseFrame<'_>>) {
    match received {
        Some(frame) => encode_close(out, frame.code, ""),
        None => encode_frame(out, Opcode::Close, &[]),
    }
}

/// Append one masked client frame to `out` (the payload is copied, then masked).
pub fn encode_client_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    key: [u8; 4],
) {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    out.reserve(n + payload.len());
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// Append one masked client frame of a compressed message (FIN, RSV1 set), `payload`
/// already deflated.
pub fn encode_compressed_client_frame(
    out: &mut Vec<u8>,
    opcode: Opcode,
    payload: &[u8],
    key: [u8; 4],
) {
    let start = out.len();
    encode_client_frame(out, true, opcode, payload, key);
    if let Some(b0) = out.get_mut(start) {
        *b0 |= RSV1 << 4;
    }
}

/// A complete server frame, encoded once and shared immutably: cloning is a
/// reference-count increment, so one change fans out to many connections without
/// re-encoding or copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFrame(Bytes);

impl SharedFrame {
    /// Encode `payload` as one FIN frame of `opcode`.
    pub fn new(opcode: Opcode, payload: &[u8]) -> Self {
        Self::build_with_capacity(opcode, payload.len(), |out| out.extend_from_slice(payload))
    }

    /// A text frame.
    pub fn text(s: &str) -> Self {
        Self::new(Opcode::Text, s.as_bytes())
    }

    /// A binary frame.
    pub fn binary(b: &[u8]) -> Self {
        Self::new(Opcode::Binary, b)
    }

    /// Build a frame whose payload `write` appends directly into the frame's own
    /// allocation (e.g. a JSON encoder): one allocation, no intermediate copy. The
    /// header is written in front of the payload afterwards.
    pub fn build(opcode: Opcode, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        Self::build_with_capacity(opcode, 0, write)
    }

    /// [`SharedFrame::build`] with room for `payload_hint` payload bytes reserved up
    /// front, so that a payload of that size is written without reallocating.
    pub fn build_with_capacity(
        opcode: Opcode,
        payload_hint: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN.saturating_add(payload_hint));
        buf.resize(MAX_HEADER_LEN, 0);
        write(&mut buf);
        // Should `write` have shortened the buffer, the payload is whatever is left past
        // the reserved header space (the header bytes are overwritten below).
        if buf.len() < MAX_HEADER_LEN {
            buf.resize(MAX_HEADER_LEN, 0);
        }
        let len = buf.len() - MAX_HEADER_LEN;
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len: len as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut head);
        let start = MAX_HEADER_LEN - n;
        buf[start..MAX_HEADER_LEN].copy_from_slice(&head[..n]);
        Self(Bytes::from(buf).slice(start..))
    }

    /// The encoded frame bytes, ready to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a valid frame (a header is at least 2 bytes); provided for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::close::parse_close_payload;

    #[test]
    fn close_reply_echoes_the_code() {
        let mut out = Vec::new();
        let got = parse_close_payload(b"\x0f\xa0going").unwrap();
        encode_close_reply(&mut out, got.as_ref());
        assert_eq!(out, [0x88, 0x02, 0x0f, 0xa0]);
        out.clear();
        encode_close_reply(&mut out, None);
        assert_eq!(out, [0x88, 0x00]);
    }

    #[test]
    fn shared_frame_build_places_header_before_payload() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![b'a'; len];
            let f = SharedFrame::build(Opcode::Text, |out| out.extend_from_slice(&payload));
            let mut plain = Vec::new();
            encode_frame(&mut plain, Opcode::Text, &payload);
            assert_eq!(f.as_bytes(), plain.as_slice(), "len {len}");
            let g = f.clone();
            assert_eq!(
                g.as_bytes().as_ptr(),
                f.as_bytes().as_ptr(),
                "clones share one buffer"
            );
        }
    }
}
