//! Operation tokens: the user data of every operation the ring carries, encoded and
//! decoded here and nowhere else. A token names what the operation is for (its
//! [`OpKind`]), the slab slot it belongs to and that slot's generation, so that a
//! completion arriving after its slot was reused is recognised as stale. The ring
//! refuses to submit a token that is already in flight (see [`Ring`](super::Ring)):
//! the memory an operation holds is keyed by its token, and two operations may never
//! share one.

/// What an operation is for: the top byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// The listener's multishot accept.
    Accept = 1,
    /// A connection's receive (multishot, or one-shot in poll mode).
    Recv = 2,
    /// A connection's vectored send.
    Send = 3,
    /// A cancellation (its completion carries nothing).
    Cancel = 4,
    /// The worker's one-second tick.
    Tick = 5,
    /// A connection's multishot readability poll (poll mode).
    Poll = 6,
    /// A link's connect.
    LinkConnect = 7,
    /// A link's multishot receive.
    LinkRecv = 8,
    /// A link's vectored send.
    LinkSend = 9,
    /// A sibling worker's message: one of its links came up (the completion's result
    /// names the store). Posted into this ring by the sibling; nothing is held.
    Wake = 10,
    /// This worker's message to a sibling's ring (its completion comes back only if it
    /// failed).
    Notify = 11,
    /// A sibling's message: a connection it accepted is this worker's now (the
    /// completion's result is the descriptor). Posted into this ring; nothing is held.
    Handoff = 12,
    /// This worker's handover of a connection to a sibling, whose completion comes
    /// back only if the sibling's ring refused it: the slot field carries the
    /// descriptor, the generation field the sibling's index.
    HandBack = 13,
}

impl OpKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Accept,
            2 => Self::Recv,
            3 => Self::Send,
            4 => Self::Cancel,
            5 => Self::Tick,
            6 => Self::Poll,
            7 => Self::LinkConnect,
            8 => Self::LinkRecv,
            9 => Self::LinkSend,
            10 => Self::Wake,
            11 => Self::Notify,
            12 => Self::Handoff,
            13 => Self::HandBack,
            _ => return None,
        })
    }

    /// Its bit in the ring's in-flight byte of a slot; `None` for cancellations and
    /// messages between rings, which hold no memory (several may be in flight at once)
    /// and are not tracked.
    pub(crate) fn bit(self) -> Option<u8> {
        Some(match self {
            Self::Cancel | Self::Wake | Self::Notify | Self::Handoff | Self::HandBack => {
                return None;
            }
            Self::Accept => 1,
            Self::Recv => 1 << 1,
            Self::Send => 1 << 2,
            Self::Tick => 1 << 3,
            Self::Poll => 1 << 4,
            Self::LinkConnect => 1 << 5,
            Self::LinkRecv => 1 << 6,
            Self::LinkSend => 1 << 7,
        })
    }
}

/// Bits of a generation that fit in a token.
const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// A slot's generation: bumped each time the slot is reused, wrapping within the
/// 24 bits a token carries for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Gen(u32);

impl Gen {
    /// The generation after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1) & GEN_MASK)
    }

    /// Its value (below 2^24).
    pub fn get(self) -> u32 {
        self.0
    }

    /// The generation a token's bits name (`v` as [`get`](Self::get) gave it).
    pub fn from_bits(v: u32) -> Self {
        Self(v & GEN_MASK)
    }
}

/// The user data of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    /// What it is for.
    pub kind: OpKind,
    /// The slab slot it belongs to (0 for the worker's own operations).
    pub slot: u32,
    /// That slot's generation when the operation was submitted.
    pub generation: Gen,
}

impl Token {
    /// A token for an operation of `kind` on `slot` of `generation`.
    pub fn new(kind: OpKind, slot: u32, generation: Gen) -> Self {
        Self {
            kind,
            slot,
            generation,
        }
    }

    /// A token for one of the worker's own operations (accept, tick).
    pub fn worker(kind: OpKind) -> Self {
        Self::new(kind, 0, Gen::default())
    }

    /// The same slot and generation, another kind (a cancellation's own token).
    #[must_use]
    pub fn with_kind(self, kind: OpKind) -> Self {
        Self { kind, ..self }
    }

    /// The user data: kind in the top byte, then the generation, then the slot.
    pub fn encode(self) -> u64 {
        (self.kind as u64) << 56
            | u64::from(self.generation.0 & GEN_MASK) << 32
            | u64::from(self.slot)
    }

    /// The token of a completion's user data; `None` for user data no token makes.
    pub fn decode(user_data: u64) -> Option<Self> {
        let kind = OpKind::from_u8((user_data >> 56) as u8)?;
        Some(Self {
            kind,
            generation: Gen(((user_data >> 32) as u32) & GEN_MASK),
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_decodes_to_itself() {
        let kinds = [
            OpKind::Accept,
            OpKind::Recv,
            OpKind::Send,
            OpKind::Cancel,
            OpKind::Tick,
            OpKind::Poll,
            OpKind::LinkConnect,
            OpKind::LinkRecv,
            OpKind::LinkSend,
            OpKind::Wake,
            OpKind::Notify,
            OpKind::Handoff,
            OpKind::HandBack,
        ];
        let mut g = Gen::default();
        for _ in 0..5 {
            g = g.next();
        }
        for kind in kinds {
            for slot in [0, 1, 77, u32::MAX] {
                for generation in [Gen::default(), g, Gen(GEN_MASK)] {
                    let t = Token::new(kind, slot, generation);
                    assert_eq!(Token::decode(t.encode()), Some(t));
                }
            }
        }
        assert_eq!(Token::decode(0), None, "user data 0 is no token");
        assert_eq!(Token::decode(200 << 56), None);
    }

    #[test]
    fn generations_wrap_within_their_bits_and_stay_told_apart_from_neighbours() {
        let last = Gen(GEN_MASK);
        assert_eq!(last.next(), Gen(0));
        let a = Token::new(OpKind::Recv, 3, last);
        let b = Token::new(OpKind::Recv, 3, last.next());
        assert_ne!(a.encode(), b.encode());
        // The generation never spills into the kind byte.
        assert_eq!(
            Token::decode(a.encode()).map(|t| t.kind),
            Some(OpKind::Recv)
        );
    }
}
