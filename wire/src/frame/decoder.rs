//! The incremental frame decoder: raw bytes from one connection flow in, whole
//! messages and control frames flow out. It unmasks payloads in the caller's buffer
//! (no copy for unfragmented messages), reassembles fragmented messages, validates
//! text as UTF-8 across fragments, and fails fast: a bad header, size or sequence is
//! rejected before its payload arrives, and invalid UTF-8 is rejected as soon as the
//! bytes received so far can no longer be valid, even inside one partial frame.
//!
//! With `permessage-deflate` negotiated ([`Decoder::enable_deflate`]), a message whose
//! first frame has RSV1 set is compressed: it is reassembled like any other and handed
//! over as [`Incoming::Compressed`], for the caller to inflate (with a worker's one
//! [`Inflater`](super::deflate::Inflater), [`inflate_message`](super::deflate::inflate_message))
//! and, if it is text, to validate then. Compressed and plain messages may interleave.

use super::close::{CloseFrame, parse_close_payload};
use super::error::ProtocolError;
use super::header::{FrameHeader, RSV1, Role};
use super::opcode::Opcode;
use crate::Decoded;
use crate::mask::{apply_mask, apply_mask_at};
use crate::utf8::Utf8Validator;

/// Size limits and negotiated options for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of a single frame (close 1009 above it).
    pub max_frame: usize,
    /// Largest message, after reassembly (close 1009 above it).
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// One decoded unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A complete text message (validated UTF-8).
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A complete compressed message (`permessage-deflate`): its deflated payload,
    /// reassembled; `text` if its opcode was text (valid UTF-8 only once inflated).
    Compressed {
        /// A text message (else binary).
        text: bool,
        /// The payload as sent, without the removed `00 00 ff ff`.
        payload: &'a [u8],
    },
    /// A ping; answer with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame, validated. Answer with a close frame (echoing the code, or
    /// empty when none was sent) and stop reading; anything that still arrives is
    /// returned as [`Incoming::AfterClose`].
    Close(Option<CloseFrame<'a>>),
    /// A non-final fragment was absorbed into the message being reassembled;
    /// nothing to deliver yet (its bytes are consumed).
    Fragment,
    /// Bytes that arrived after the peer's close frame: consumed and discarded (§5.5.1:
    /// nothing may follow a close), so a caller never buffers them.
    AfterClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// Per-connection decoding state. Idle, it holds no heap memory, and it is small
/// (32 bytes): a server keeps one per connection, so what only a message in progress
/// needs lives in a box that exists only meanwhile.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    /// The kind of the fragmented message in progress, if any.
    assembling: Option<DataKind>,
    /// A fragmented message or a partial text frame in progress.
    work: Option<Box<Work>>,
    closed: bool,
    /// `permessage-deflate` was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The fragmented message in progress is compressed.
    compressed: bool,
}

/// The state of a message in progress.
#[derive(Debug, Clone, Default)]
struct Work {
    /// Reassembly buffer for fragmented messages.
    message: Vec<u8>,
    /// UTF-8 state of the fragmented text message in progress.
    utf8: Utf8Validator,
    /// Early UTF-8 check of a text frame whose payload is still arriving: the
    /// validator state and how many payload bytes it has seen.
    probe: Option<(Utf8Validator, usize)>,
}

/// Bytes unmasked at a time into a stack buffer when probing a partial text frame.
const PROBE_CHUNK: usize = 1024;

impl Decoder {
    /// A decoder for the given role.
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            assembling: None,
            work: None,
            closed: false,
            deflate: false,
            compressed: false,
        }
    }

    /// `permessage-deflate` was negotiated: from now on, a message whose first frame
    /// has RSV1 set is compressed.
    pub fn enable_deflate(&mut self) {
        self.deflate = true;
    }

    /// Whether `permessage-deflate` was negotiated.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// A server-side decoder (client frames must be masked).
    pub fn server(limits: Limits) -> Self {
        Self::new(Role::Server, limits)
    }

    /// A client-side decoder (server frames must not be masked).
    pub fn client(limits: Limits) -> Self {
        Self::new(Role::Client, limits)
    }

    /// True once a close frame has been decoded.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while a fragmented message is being reassembled.
    pub fn in_message(&self) -> bool {
        self.assembling.is_some()
    }

    /// Decode the next unit from the start of `buf`. The payload is unmasked in place,
    /// so `buf` must hold bytes received and not yet consumed. On `Ok(None)` nothing
    /// was consumed and `buf` is unchanged. After an error the connection must be closed
    /// with [`ProtocolError::close_code`].
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> Result<Decoded<Incoming<'a>>, ProtocolError> {
        if self.closed {
            return Ok((!buf.is_empty()).then_some((Incoming::AfterClose, buf.len())));
        }
        if self.assembling.is_none() && self.work.as_ref().is_some_and(|w| w.probe.is_none()) {
            // Release the last reassembled message: an idle connection holds no buffer.
            self.work = None;
        }
        // Sequencing needs only the first byte: fail before the rest of the header.
        if let Some(&b0) = buf.first()
            && let Some(op) = Opcode::from_u4(b0 & 0x0F)
        {
            self.check_sequence(op)?;
        }
        let Some((h, hlen)) = FrameHeader::parse_with(buf, self.role, self.deflate)? else {
            return Ok(None);
        };
        let len = self.check_frame(&h)?;
        let total = hlen.saturating_add(len);
        if buf.len() < total {
            self.probe_partial(&h, &buf[hlen..])?;
            return Ok(None);
        }
        if let Some(w) = &mut self.work {
            w.probe = None;
        }
        let payload = &mut buf[hlen..total];
        if let Some(key) = h.mask {
            apply_mask(payload, key);
        }
        let item = match h.opcode {
            Opcode::Ping => Incoming::Ping(payload),
            Opcode::Pong => Incoming::Pong(payload),
            Opcode::Close => {
                let frame = parse_close_payload(payload)?;
                self.closed = true;
                self.assembling = None;
                self.work = None;
                Incoming::Close(frame)
            }
            Opcode::Text | Opcode::Binary => self.first_frame(&h, payload)?,
            Opcode::Continuation => self.continuation(h.fin, payload)?,
        };
        Ok(Some((item, total)))
    }

    /// The first (or only) frame of a data message: the whole message when FIN is set,
    /// else the start of one to reassemble.
    fn first_frame<'a>(
        &'a mut self,
        h: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Incoming<'a>, ProtocolError> {
        let text = h.opcode == Opcode::Text;
        let compressed = h.rsv & RSV1 != 0;
        if h.fin {
            return Ok(if compressed {
                Incoming::Compressed { text, payload }
            } else if text {
                Incoming::Text(
                    simdutf8::basic::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
                )
            } else {
                Incoming::Binary(payload)
            });
        }
        let work = self.work.get_or_insert_with(Box::default);
        work.message.clear();
        work.utf8.reset();
        if text && !compressed {
            work.utf8
                .feed(payload)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.append(payload)?;
        self.assembling = Some(if text {
            DataKind::Text
        } else {
            DataKind::Binary
        });
        self.compressed = compressed;
        Ok(Incoming::Fragment)
    }

    /// A continuation frame: absorbed, and the whole message once FIN is set.
    fn continuation<'a>(
        &'a mut self,
        fin: bool,
        payload: &'a [u8],
    ) -> Result<Incoming<'a>, ProtocolError> {
        let kind = self
            .assembling
            .ok_or(ProtocolError::UnexpectedContinuation)?;
        // Text is checked as it comes only when it is not compressed.
        let plain_text = kind == DataKind::Text && !self.compressed;
        let work = self.work.get_or_insert_with(Box::default);
        work.message.extend_from_slice(payload);
        if plain_text {
            work.utf8
                .feed(payload)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !fin {
            return Ok(Incoming::Fragment);
        }
        self.assembling = None;
        Ok(match kind {
            _ if self.compressed => Incoming::Compressed {
                text: kind == DataKind::Text,
                payload: &work.message,
            },
            DataKind::Binary => Incoming::Binary(&work.message),
            DataKind::Text => {
                work.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Incoming::Text(
                    simdutf8::basic::from_utf8(&work.message)
                        .map_err(|_| ProtocolError::InvalidUtf8)?,
                )
            }
        })
    }

    /// §5.4: continuation frames only inside a fragmented message, and no new data
    /// frame until it ends; control frames MAY be injected in between.
    fn check_sequence(&self, op: Opcode) -> Result<(), ProtocolError> {
        match op {
            Opcode::Continuation if self.assembling.is_none() => {
                Err(ProtocolError::UnexpectedContinuation)
            }
            // "the fragments of one message MUST NOT be interleaved between the
            // fragments of another message"
            Opcode::Text | Opcode::Binary if self.assembling.is_some() => {
                Err(ProtocolError::ExpectedContinuation)
            }
            _ => Ok(()),
        }
    }

    /// Size limits, checked from the header before any payload is buffered. Returns
    /// the payload length as a `usize`.
    fn check_frame(&self, h: &FrameHeader) -> Result<usize, ProtocolError> {
        let max = self.limits;
        if h.payload_len > max.max_frame as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: max.max_frame,
            });
        }
        let message_len = match h.opcode {
            Opcode::Ping | Opcode::Pong | Opcode::Close => 0,
            Opcode::Text | Opcode::Binary => h.payload_len,
            Opcode::Continuation => {
                let held = self.work.as_ref().map_or(0, |w| w.message.len());
                (held as u64).saturating_add(h.payload_len)
            }
        };
        if message_len > max.max_message as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len: message_len,
                max: max.max_message,
            });
        }
        usize::try_from(h.payload_len).map_err(|_| ProtocolError::FrameTooLarge {
            len: h.payload_len,
            max: max.max_frame,
        })
    }

    /// Append a fragment to the reassembly buffer, growing it at most to `max_message`
    /// (no doubling past the limit) and failing the message, not the process, if the
    /// memory cannot be had.
    fn append(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let max = self.limits.max_message;
        let message = &mut self.work.get_or_insert_with(Box::default).message;
        let needed = message.len() + payload.len();
        if needed > message.capacity() {
            let target = needed
                .max(message.capacity().saturating_mul(2))
                .min(max)
                .max(needed);
            message
                .try_reserve_exact(target - message.len())
                .map_err(|_| ProtocolError::MessageTooLarge {
                    len: needed as u64,
                    max,
                })?;
        }
        message.extend_from_slice(payload);
        Ok(())
    }

    /// A text frame's payload is still arriving: validate the bytes that are here so
    /// that invalid UTF-8 fails now rather than when the frame completes.
    fn probe_partial(&mut self, h: &FrameHeader, avail: &[u8]) -> Result<(), ProtocolError> {
        // A compressed message's text is only text once inflated.
        let text = match h.opcode {
            Opcode::Text => h.rsv & RSV1 == 0,
            Opcode::Continuation => self.assembling == Some(DataKind::Text) && !self.compressed,
            _ => false,
        };
        if !text {
            return Ok(());
        }
        let work = self.work.get_or_insert_with(Box::default);
        let (mut validator, mut seen) = match work.probe.take() {
            Some(p) => p,
            None if h.opcode == Opcode::Continuation => (work.utf8.clone(), 0),
            None => (Utf8Validator::new(), 0),
        };
        let mut scratch = [0u8; PROBE_CHUNK];
        while seen < avail.len() {
            let n = (avail.len() - seen).min(PROBE_CHUNK);
            let chunk = &mut scratch[..n];
            chunk.copy_from_slice(&avail[seen..seen + n]);
            if let Some(key) = h.mask {
                apply_mask_at(chunk, key, seen);
            }
            validator
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            seen += n;
        }
        work.probe = Some((validator, seen));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server holds one decoder per connection: what a message in progress needs is
    /// boxed, so an idle decoder is a few words.
    #[test]
    fn an_idle_decoder_is_small_and_holds_no_heap() {
        assert!(
            std::mem::size_of::<Decoder>() <= 32,
            "{}",
            std::mem::size_of::<Decoder>()
        );
        let mut d = Decoder::server(Limits::default());
        // A masked text frame split in two, then a fragmented binary message.
        let mut frame = vec![0x81, 0x85, 1, 2, 3, 4];
        frame.extend(
            b"hello"
                .iter()
                .zip([1u8, 2, 3, 4].iter().cycle())
                .map(|(b, k)| b ^ k),
        );
        let (head, tail) = frame.split_at(8);
        let mut first = head.to_vec();
        assert!(d.decode(&mut first).unwrap().is_none());
        assert!(
            d.work.is_some(),
            "a partial text frame keeps its UTF-8 probe"
        );
        let mut whole = [head, tail].concat();
        assert!(matches!(
            d.decode(&mut whole).unwrap(),
            Some((Incoming::Text("hello"), 11))
        ));
        let mut empty = [];
        let _ = d.decode(&mut empty).unwrap();
        assert!(d.work.is_none(), "released once the frame is done");
        for (b0, payload) in [(0x02u8, b"ab"), (0x80, b"cd")] {
            let mut f = vec![b0, 0x82, 0, 0, 0, 0];
            f.extend_from_slice(payload);
            let got = d.decode(&mut f).unwrap();
            if b0 == 0x80 {
                assert!(matches!(got, Some((Incoming::Binary(b"abcd"), 8))));
            }
        }
        let _ = d.decode(&mut empty).unwrap();
        assert!(d.work.is_none());
    }
}
