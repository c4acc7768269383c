//! The frame header (RFC 6455 §5.2): FIN, RSV1-3, opcode, MASK, the 7/16/64-bit
//! payload length and the masking key. Parsing checks every MUST that the header
//! alone can decide, as soon as the bytes that decide it have arrived.

use super::error::ProtocolError;
use super::opcode::Opcode;
use crate::Decoded;

/// The longest header: 2 bytes + 8-byte length + 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// The largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;
/// RSV1, as [`FrameHeader::rsv`] holds it: `permessage-deflate`'s "Per-Message
/// Compressed" bit (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// Which side of the connection is decoding: a server decodes masked client
/// frames, a client (test tools, the load generator) decodes unmasked server frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames sent by a client: every frame must be masked.
    Server,
    /// Decoding frames sent by a server: no frame may be masked.
    Client,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the three low bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, if MASK is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parse a header from the start of `buf`, with no extension negotiated: every RSV
    /// bit must be zero.
    pub fn parse(buf: &[u8], role: Role) -> Result<Decoded<FrameHeader>, ProtocolError> {
        Self::parse_with(buf, role, false)
    }

    /// Parse a header from the start of `buf`; `deflate`: `permessage-deflate` was
    /// negotiated, so RSV1 may mark the first frame of a compressed message.
    pub fn parse_with(
        buf: &[u8],
        role: Role,
        deflate: bool,
    ) -> Result<Decoded<FrameHeader>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        // §5.2: "If a nonzero value is received and none of the negotiated extensions
        // defines the meaning of such a nonzero value, the receiving endpoint MUST
        // _Fail the WebSocket Connection_."
        let defined = if deflate { RSV1 } else { 0 };
        if rsv & !defined != 0 {
            return Err(ProtocolError::ReservedBits(rsv));
        }
        // §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail
        // the WebSocket Connection_."
        let opcode = Opcode::from_u4(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of
        // control frames and non-first fragments of a data message. An endpoint
        // receiving such a frame MUST _Fail the WebSocket Connection_."
        if rsv & RSV1 != 0 && (opcode.is_control() || opcode == Opcode::Continuation) {
            return Err(ProtocolError::MisplacedCompressedBit);
        }
        let masked = b1 & 0x80 != 0;
        match role {
            // §5.1: "The server MUST close the connection upon receiving a frame that
            // is not masked."
            Role::Server if !masked => return Err(ProtocolError::UnmaskedFrame),
            // §5.1: "A client MUST close a connection if it detects a masked frame."
            Role::Client if masked => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = u64::from(b1 & 0x7F);
        if opcode.is_control() {
            // §5.5: "All control frames MUST have a payload length of 125 bytes or
            // less and MUST NOT be fragmented."
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong(len7));
            }
        }
        let Some((payload_len, mut at)) = payload_len(buf, len7)? else {
            return Ok(None);
        };
        let mask = if masked {
            let Some(k) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            at,
        )))
    }

    /// Encode into `dst`, returning the number of bytes written (2 to 14), always
    /// with the minimal length form.
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        dst[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u4();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            n @ 0..=125 => {
                dst[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                dst[1] = mask_bit | 126;
                dst[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                dst[1] = mask_bit | 127;
                dst[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(k) = self.mask {
            dst[at..at + 4].copy_from_slice(&k);
            at += 4;
        }
        at
    }

    /// The header's encoded length.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// The payload length from its 7-bit field `len7` and, for 126 and 127, the 16- or
/// 64-bit length after it in `buf`, with the header's length so far.
fn payload_len(buf: &[u8], len7: u64) -> Result<Decoded<u64>, ProtocolError> {
    Ok(Some(match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            // §5.2: "the minimal number of bytes MUST be used to encode the length"
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength(len));
            }
            (len, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(b);
            let len = u64::from_be_bytes(be);
            // §5.2: "the most significant bit MUST be 0"
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTopBit);
            }
            if len <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength(len));
            }
            (len, 10)
        }
        n => (n, 2),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Decoded<FrameHeader>, ProtocolError> {
        FrameHeader::parse(b, Role::Server)
    }

    #[test]
    fn incomplete_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        let (h, n) = parse(&full).unwrap().unwrap();
        assert_eq!((h.payload_len, n, h.mask), (65536, 14, Some([1, 2, 3, 4])));
    }

    #[test]
    fn header_musts() {
        assert_eq!(parse(&[0x81, 0x05]), Err(ProtocolError::UnmaskedFrame));
        assert_eq!(parse(&[0xC1, 0x85]), Err(ProtocolError::ReservedBits(4)));
        assert_eq!(parse(&[0x83, 0x80]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(
            parse(&[0x8B, 0x80]),
            Err(ProtocolError::ReservedOpcode(0xB))
        );
        assert_eq!(
            parse(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse(&[0x89, 0xFE]),
            Err(ProtocolError::ControlFrameTooLong(126))
        );
        assert_eq!(
            parse(&[0x82, 0xFE, 0x00, 0x7D]),
            Err(ProtocolError::NonMinimalLength(125))
        );
        assert_eq!(
            parse(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength(65535))
        );
        assert_eq!(
            parse(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBit)
        );
        assert_eq!(
            FrameHeader::parse(&[0x81, 0x80, 1, 2, 3, 4], Role::Client),
            Err(ProtocolError::MaskedFrame)
        );
    }

    #[test]
    fn rsv1_only_where_deflate_defines_it() {
        let with = |b: &[u8]| FrameHeader::parse_with(b, Role::Server, true);
        // The first frame of a compressed message, whole or fragmented.
        for b0 in [0xC1, 0xC2, 0x41, 0x42] {
            let (h, _) = with(&[b0, 0x80, 0, 0, 0, 0]).unwrap().unwrap();
            assert_eq!(h.rsv, RSV1);
        }
        // Not without the extension, nor RSV2/RSV3 with it.
        assert_eq!(parse(&[0xC1, 0x80]), Err(ProtocolError::ReservedBits(4)));
        assert_eq!(with(&[0xA1, 0x80]), Err(ProtocolError::ReservedBits(2)));
        assert_eq!(with(&[0xE1, 0x80]), Err(ProtocolError::ReservedBits(6)));
        // Never on a continuation or a control frame.
        for b0 in [0xC0, 0x40, 0xC8, 0xC9, 0xCA] {
            assert_eq!(
                with(&[b0, 0x80]),
                Err(ProtocolError::MisplacedCompressedBit),
                "{b0:#x}"
            );
        }
    }

    #[test]
    fn encode_parse_round_trip_all_length_forms() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = FrameHeader {
                    fin: len % 2 == 0,
                    rsv: 0,
                    opcode: Opcode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut b = [0; MAX_HEADER_LEN];
                let n = h.encode(&mut b);
                assert_eq!(n, h.encoded_len());
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                assert_eq!(FrameHeader::parse(&b[..n], role), Ok(Some((h, n))));
            }
        }
    }
}
