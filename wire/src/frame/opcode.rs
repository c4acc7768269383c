//! Frame opcodes (RFC 6455 §5.2): the 4-bit value that says what a frame carries.

/// A defined opcode. Reserved values never become an `Opcode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a text frame (UTF-8).
    Text,
    /// 0x2: a binary frame.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// Decode the low 4 bits of a frame's first byte. `None` for reserved opcodes
    /// (0x3-0x7 non-control, 0xB-0xF control).
    pub fn from_u4(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub fn as_u4(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Control frames are those with the high opcode bit set (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u4() & 0x8 != 0
    }
}
