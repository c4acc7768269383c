//! Link frame decoding: bytes received from a peer in, a header-checked and
//! payload-verified [`LinkFrame`] out.

use flatbuffers::{Follow, Verifiable, VerifierOptions};
use zerocopy::FromBytes;

use super::header::{HEADER_LEN, LinkHeader};
use super::internal::{
    AuthChallenge, AuthProof, Changes, Delete, Error, Get, GetReply, Hello, HelloAck, Members,
    MembersReply, Ping, Pong, PresenceSync, Publish, Put, Reset, Resumed, Snapshot, Unwatch, Watch,
    WriteReply,
};
use super::{Kind, LinkError};
use crate::Decoded;

/// Bounds applied to frames received from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Largest accepted frame, header included. Checked from the header alone, before the
    /// payload is buffered. Also enforced by [`super::LinkEncoder`] on the sending side.
    pub max_frame: usize,
    /// Deepest table nesting the payload verifier accepts.
    pub max_depth: usize,
    /// Most tables one payload may hold.
    pub max_tables: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_depth: 8,
            max_tables: 1 << 20,
        }
    }
}

impl LinkLimits {
    /// Verifier options for a payload of `len` bytes. The "apparent size" (bytes visited when
    /// the flatbuffer's DAG is walked as a tree) is bounded by a small multiple of the real
    /// size: honest encoders share nothing but vtables, while a hostile payload could
    /// otherwise make many offsets point at one large vector and inflate verification work.
    fn verifier_options(&self, len: usize) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: len.saturating_mul(8).max(1024),
            ignore_missing_null_terminator: false,
        }
    }
}

/// One decoded link frame. Borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFrame<'a> {
    /// Correlates replies with requests.
    pub request_id: u64,
    /// The header's flags byte, untouched.
    pub flags: u8,
    /// The verified payload.
    pub message: LinkMessage<'a>,
}

/// A verified link payload: one variant per [`Kind`], holding the generated table accessor
/// (reading its fields cannot fail or read out of bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkMessage<'a> {
    Hello(Hello<'a>),
    HelloAck(HelloAck<'a>),
    Ping(Ping<'a>),
    Pong(Pong<'a>),
    Error(Error<'a>),
    Get(Get<'a>),
    GetReply(GetReply<'a>),
    Put(Put<'a>),
    Delete(Delete<'a>),
    Publish(Publish<'a>),
    WriteReply(WriteReply<'a>),
    Watch(Watch<'a>),
    Unwatch(Unwatch<'a>),
    Snapshot(Snapshot<'a>),
    Changes(Changes<'a>),
    Resumed(Resumed<'a>),
    Reset(Reset<'a>),
    AuthChallenge(AuthChallenge<'a>),
    AuthProof(AuthProof<'a>),
    Members(Members<'a>),
    MembersReply(MembersReply<'a>),
    PresenceSync(PresenceSync<'a>),
}

impl LinkMessage<'_> {
    /// The header kind this message is sent with.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Self::Hello(_) => Kind::Hello,
            Self::HelloAck(_) => Kind::HelloAck,
            Self::Ping(_) => Kind::Ping,
            Self::Pong(_) => Kind::Pong,
            Self::Error(_) => Kind::Error,
            Self::Get(_) => Kind::Get,
            Self::GetReply(_) => Kind::GetReply,
            Self::Put(_) => Kind::Put,
            Self::Delete(_) => Kind::Delete,
            Self::Publish(_) => Kind::Publish,
            Self::WriteReply(_) => Kind::WriteReply,
            Self::Watch(_) => Kind::Watch,
            Self::Unwatch(_) => Kind::Unwatch,
            Self::Snapshot(_) => Kind::Snapshot,
            Self::Changes(_) => Kind::Changes,
            Self::Resumed(_) => Kind::Resumed,
            Self::Reset(_) => Kind::Reset,
            Self::AuthChallenge(_) => Kind::AuthChallenge,
            Self::AuthProof(_) => Kind::AuthProof,
            Self::Members(_) => Kind::Members,
            Self::MembersReply(_) => Kind::MembersReply,
            Self::PresenceSync(_) => Kind::PresenceSync,
        }
    }
}

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete (nothing consumed). Header errors and an
/// over-limit length are reported as soon as the header is in, without waiting for the
/// payload; the payload is verified for its kind before anything is returned.
pub fn decode_frame<'a>(
    buf: &'a [u8],
    limits: &LinkLimits,
) -> Result<Decoded<LinkFrame<'a>>, LinkError> {
    let Ok((header, rest)) = LinkHeader::ref_from_prefix(buf) else {
        LinkHeader::validate_prefix(buf)?;
        return Ok(None);
    };
    let kind = header.validate()?;
    let payload_len = header.payload_len.get();
    let frame_len = HEADER_LEN as u64 + u64::from(payload_len);
    if frame_len > limits.max_frame as u64 {
        return Err(LinkError::FrameTooLarge {
            len: frame_len,
            max: limits.max_frame,
        });
    }
    // Fits in usize: it is at most `max_frame`.
    let payload_len = payload_len as usize;
    let Some(payload) = rest.get(..payload_len) else {
        return Ok(None);
    };
    let message = verify(kind, payload, limits)?;
    let frame = LinkFrame {
        request_id: header.request_id.get(),
        flags: header.flags,
        message,
    };
    Ok(Some((frame, HEADER_LEN + payload_len)))
}

fn verify<'a>(
    kind: Kind,
    payload: &'a [u8],
    limits: &LinkLimits,
) -> Result<LinkMessage<'a>, LinkError> {
    let opts = limits.verifier_options(payload.len());
    let message = match kind {
        Kind::Hello => LinkMessage::Hello(root::<Hello>(kind, &opts, payload)?),
        Kind::HelloAck => LinkMessage::HelloAck(root::<HelloAck>(kind, &opts, payload)?),
        Kind::Ping => LinkMessage::Ping(root::<Ping>(kind, &opts, payload)?),
        Kind::Pong => LinkMessage::Pong(root::<Pong>(kind, &opts, payload)?),
        Kind::Error => LinkMessage::Error(root::<Error>(kind, &opts, payload)?),
        Kind::Get => LinkMessage::Get(root::<Get>(kind, &opts, payload)?),
        Kind::GetReply => LinkMessage::GetReply(root::<GetReply>(kind, &opts, payload)?),
        Kind::Put => LinkMessage::Put(root::<Put>(kind, &opts, payload)?),
        Kind::Delete => LinkMessage::Delete(root::<Delete>(kind, &opts, payload)?),
        Kind::Publish => LinkMessage::Publish(root::<Publish>(kind, &opts, payload)?),
        Kind::WriteReply => LinkMessage::WriteReply(root::<WriteReply>(kind, &opts, payload)?),
        Kind::Watch => LinkMessage::Watch(root::<Watch>(kind, &opts, payload)?),
        Kind::Unwatch => LinkMessage::Unwatch(root::<Unwatch>(kind, &opts, payload)?),
        Kind::Snapshot => LinkMessage::Snapshot(root::<Snapshot>(kind, &opts, payload)?),
        Kind::Changes => LinkMessage::Changes(root::<Changes>(kind, &opts, payload)?),
        Kind::Resumed => LinkMessage::Resumed(root::<Resumed>(kind, &opts, payload)?),
        Kind::Reset => LinkMessage::Reset(root::<Reset>(kind, &opts, payload)?),
        Kind::AuthChallenge => {
            LinkMessage::AuthChallenge(root::<AuthChallenge>(kind, &opts, payload)?)
        }
        Kind::AuthProof => LinkMessage::AuthProof(root::<AuthProof>(kind, &opts, payload)?),
        Kind::Members => LinkMessage::Members(root::<Members>(kind, &opts, payload)?),
        Kind::MembersReply => {
            LinkMessage::MembersReply(root::<MembersReply>(kind, &opts, payload)?)
        }
        Kind::PresenceSync => {
            LinkMessage::PresenceSync(root::<PresenceSync>(kind, &opts, payload)?)
        }
        _ => return Err(LinkError::UnknownKind(kind.0)),
    };
    Ok(message)
}

fn root<'a, T>(kind: Kind, opts: &VerifierOptions, payload: &'a [u8]) -> Result<T::Inner, LinkError>
where
    T: 'a + Follow<'a> + Verifiable,
{
    flatbuffers::root_with_opts::<T>(opts, payload)
        .map_err(|source| LinkError::InvalidPayload { kind, source })
}
