//! Every way a client can break RFC 6455 on the frame layer, and (in one place,
//! [`ProtocolError::close_code`]) the close code each one is answered with.

use super::close::CloseCode;

/// A peer violated the protocol; the connection must be closed with
/// [`ProtocolError::close_code`]. These are always the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// §5.1: a client MUST mask all frames it sends.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// §5.1: a client MUST close the connection if it detects a masked frame
    /// (only when decoding as a client).
    #[error("server frame is masked")]
    MaskedFrame,
    /// §5.2: RSV1-3 MUST be 0 unless an extension defining them was negotiated.
    #[error("reserved bits {0:#x} set without a negotiated extension")]
    ReservedBits(u8),
    /// RFC 7692 §6.1: the "Per-Message Compressed" bit (RSV1) on a control frame or a
    /// continuation.
    #[error("compressed bit on a control frame or a continuation")]
    MisplacedCompressedBit,
    /// A compressed message's payload does not inflate (RFC 7692 §7.2.2).
    #[error("compressed message is not valid deflate data")]
    BadCompression,
    /// §5.2: reserved opcodes MUST fail the connection.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// §5.5: control frames MUST have a payload of 125 bytes or less.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// §5.5: control frames MUST NOT be fragmented.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// §5.2: the most significant bit of a 64-bit length MUST be 0.
    #[error("64-bit payload length has its top bit set")]
    LengthTopBit,
    /// §5.2: the minimal number of bytes MUST be used to encode the length.
    #[error("payload length {0} not minimally encoded")]
    NonMinimalLength(u64),
    /// §5.4: a continuation frame outside a fragmented message.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// §5.4: a new data frame while a fragmented message is still in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A frame larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// A (possibly reassembled) message larger than the configured limit.
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Bytes the message would reach.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// §8.1: text messages MUST be valid UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// §5.5.1: a close body, if present, MUST start with a 2-byte status code.
    #[error("close frame with a 1-byte payload")]
    CloseTooShort,
    /// §7.4: a status code that may not be sent on the wire.
    #[error("close frame with illegal status code {0}")]
    InvalidCloseCode(u16),
    /// §5.5.1: the close reason MUST be UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
}

impl ProtocolError {
    /// The close code that answers this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::TOO_BIG,
            Self::InvalidUtf8 | Self::InvalidCloseReason | Self::BadCompression => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::ReservedBits(_)
            | Self::MisplacedCompressedBit
            | Self::ReservedOpcode(_)
            | Self::ControlFrameTooLong(_)
            | Self::FragmentedControlFrame
            | Self::LengthTopBit
            | Self::NonMinimalLength(_)
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::CloseTooShort
            | Self::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}
