//! The incremental frame decoder: raw bytes from one connection flow in, whole
//! messages and control frames flow out. It unmasks payloads in the caller's buffer
//! (no copy for unfragmented messages), reassembles fragmented messages, validates
//! text as UTF-8 across fragments, and fails fast: a bad header, size or sequence is
//! rejected before its payload arrives, and invalid UTF-8 is rejected as soon as the
//! bytes received so far can no longer be valid, even inside one partial frame.

use super::close::{CloseFrame, parse_close_payload};
use super::error::ProtocolError;
use super::header::{FrameHeader, Role};
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
    /// RSV bits defined by negotiated extensions (0: none).
    pub allowed_rsv: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_message: 16 << 20,
            allowed_rsv: 0,
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
    /// A ping; answer with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame, validated. Answer with a close frame (echoing the code, or
    /// empty when none was sent) and stop reading: the decoder returns `Ok(None)` from now on.
    Close(Option<CloseFrame<'a>>),
    /// A non-final fragment was absorbed into the message being reassembled;
    /// nothing to deliver yet (its bytes are consumed).
    Fragment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// Per-connection decoding state. Idle, it holds no heap memory.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    /// The kind of the fragmented message in progress, if any.
    assembling: Option<DataKind>,
    /// Reassembly buffer for fragmented messages.
    message: Vec<u8>,
    /// UTF-8 state of the fragmented text message in progress.
    utf8: Utf8Validator,
    /// Early UTF-8 check of a text frame whose payload is still arriving: the
    /// validator state and how many payload bytes it has seen.
    probe: Option<(Utf8Validator, usize)>,
    closed: bool,
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
            message: Vec::new(),
            utf8: Utf8Validator::new(),
            probe: None,
            closed: false,
        }
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
            return Ok(None);
        }
        if self.assembling.is_none() && self.message.capacity() != 0 {
            // Release the last reassembled message: an idle connection holds no buffer.
            self.message = Vec::new();
        }
        let Some((h, hlen)) = FrameHeader::parse(buf, self.role, self.limits.allowed_rsv)? else {
            return Ok(None);
        };
        let len = self.check_frame(&h)?;
        let total = hlen.saturating_add(len);
        if buf.len() < total {
            self.probe_partial(&h, &buf[hlen..])?;
            return Ok(None);
        }
        self.probe = None;
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
                Incoming::Close(frame)
            }
            Opcode::Text if h.fin => Incoming::Text(
                simdutf8::basic::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
            ),
            Opcode::Binary if h.fin => Incoming::Binary(payload),
            Opcode::Text | Opcode::Binary => {
                let kind = if h.opcode == Opcode::Text {
                    DataKind::Text
                } else {
                    DataKind::Binary
                };
                self.message.clear();
                self.message.extend_from_slice(payload);
                self.utf8.reset();
                if kind == DataKind::Text {
                    self.utf8
                        .feed(payload)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                self.assembling = Some(kind);
                Incoming::Fragment
            }
            Opcode::Continuation => {
                let kind = self
                    .assembling
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                self.message.extend_from_slice(payload);
                if kind == DataKind::Text {
                    self.utf8
                        .feed(payload)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                if !h.fin {
                    Incoming::Fragment
                } else {
                    self.assembling = None;
                    match kind {
                        DataKind::Binary => Incoming::Binary(&self.message),
                        DataKind::Text => {
                            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                            Incoming::Text(
                                simdutf8::basic::from_utf8(&self.message)
                                    .map_err(|_| ProtocolError::InvalidUtf8)?,
                            )
                        }
                    }
                }
            }
        };
        Ok(Some((item, total)))
    }

    /// Checks that need only the header: sequencing (§5.4) and size limits. Returns
    /// the payload length as a `usize`.
    fn check_frame(&self, h: &FrameHeader) -> Result<usize, ProtocolError> {
        let too_big = |max: usize| h.payload_len > max as u64;
        if too_big(self.limits.max_frame) {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: self.limits.max_frame,
            });
        }
        match h.opcode {
            // §5.4: control frames MAY be injected in the middle of a fragmented message.
            Opcode::Ping | Opcode::Pong | Opcode::Close => {}
            // §5.4: the fragments of one message MUST NOT be interleaved with other
            // data frames.
            Opcode::Text | Opcode::Binary if self.assembling.is_some() => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            Opcode::Text | Opcode::Binary => {
                if too_big(self.limits.max_message) {
                    return Err(ProtocolError::MessageTooLarge {
                        len: h.payload_len,
                        max: self.limits.max_message,
                    });
                }
            }
            Opcode::Continuation => {
                if self.assembling.is_none() {
                    return Err(ProtocolError::UnexpectedContinuation);
                }
                let total = (self.message.len() as u64).saturating_add(h.payload_len);
                if total > self.limits.max_message as u64 {
                    return Err(ProtocolError::MessageTooLarge {
                        len: total,
                        max: self.limits.max_message,
                    });
                }
            }
        }
        usize::try_from(h.payload_len).map_err(|_| ProtocolError::FrameTooLarge {
            len: h.payload_len,
            max: self.limits.max_frame,
        })
    }

    /// A text frame's payload is still arriving: validate the bytes that are here so
    /// that invalid UTF-8 fails now rather than when the frame completes.
    fn probe_partial(&mut self, h: &FrameHeader, avail: &[u8]) -> Result<(), ProtocolError> {
        let text = match h.opcode {
            Opcode::Text => true,
            Opcode::Continuation => self.assembling == Some(DataKind::Text),
            _ => false,
        };
        if !text {
            return Ok(());
        }
        let (mut validator, mut seen) = match self.probe.take() {
            Some(p) => p,
            None if h.opcode == Opcode::Continuation => (self.utf8.clone(), 0),
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
        self.probe = Some((validator, seen));
        Ok(())
    }
}
