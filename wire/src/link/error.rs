//! Errors of the link codec: what a peer can get wrong in a frame (decoding), and the one
//! thing a local caller can get wrong (encoding a frame over the size limit).

use flatbuffers::InvalidFlatbuffer;

use super::Kind;

/// A frame the peer sent breaks the link protocol. Every variant is the peer's fault and the
/// stream cannot be resynchronised: log it and drop the link ([`LinkError::is_fatal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The frame does not start with `RL`.
    #[error("bad link magic {0:02x?}: peer is not speaking the Ringline link protocol")]
    BadMagic([u8; 2]),
    /// The header version is not one this build speaks.
    #[error("unsupported link header version {0}")]
    UnsupportedVersion(u8),
    /// The `kind` byte names no table of `schemas/internal.fbs`.
    #[error("unknown link frame kind {0}")]
    UnknownKind(u8),
    /// A reserved header byte is non-zero.
    #[error("reserved link header bytes set: {0:02x?}")]
    ReservedBitsSet([u8; 3]),
    /// The header announces a frame longer than the configured maximum.
    #[error("link frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced frame length, header included.
        len: u64,
        /// [`super::LinkLimits::max_frame`].
        max: usize,
    },
    /// The payload is not a valid flatbuffer of the header's kind.
    #[error("invalid {kind:?} payload: {source}")]
    InvalidPayload {
        /// The kind from the header.
        kind: Kind,
        /// What the flatbuffers verifier found.
        #[source]
        source: InvalidFlatbuffer,
    },
}

impl LinkError {
    /// Whether the link must be dropped. Always true: no link error can be skipped over, since
    /// a corrupt header leaves the stream without frame boundaries and a corrupt payload means
    /// the peer's encoder is broken.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        true
    }
}

/// Encoding a frame would exceed the frame size limit (the caller's data is too large; the
/// output buffer is left as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("link frame of {len} bytes would exceed the limit of {max} bytes")]
pub struct FrameTooLarge {
    /// Frame length, header included.
    pub len: usize,
    /// The limit.
    pub max: usize,
}
