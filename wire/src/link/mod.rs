//! Edge↔store link frames: what flows between an edge worker and a store over one TCP
//! link. Each frame is a fixed 20-byte [`LinkHeader`] followed by one flatbuffer whose root
//! table is chosen by the header's `kind` byte ([`Kind`], declared in
//! `schemas/internal.fbs`).
//!
//! - [`decode_frame`] checks the header (before waiting for the payload, so a bad length
//!   fails at once), then verifies the payload against the kind's table before any field
//!   can be read, and hands out a [`LinkFrame`] whose [`LinkMessage`] holds the accessor.
//! - [`encode_frame`] writes a header and a ready payload; [`LinkEncoder`] builds the
//!   payload of every kind with one reused `FlatBufferBuilder`.
//! - [`WatchId`] and [`KeepAliveNonce`]: the edge's names for its watches and its idle
//!   pings, which both come back in a `Pong`; their ranges never overlap.
//!
//! - [`auth`]: the cluster mesh's challenge and response (HMAC-SHA256 over a nonce from
//!   each side), proving both ends hold the cluster secret.
//!
//! Every [`LinkError`] means the peer broke the protocol: the link should be dropped.

pub mod auth;
mod decode;
mod encode;
mod error;
mod header;
mod ids;

#[cfg(test)]
mod tests;

pub use decode::{LinkFrame, LinkLimits, LinkMessage, decode_frame};
pub use encode::{ChangeRef, EntryRef, LinkEncoder, MsgIdRef, encode_frame};
pub use error::{FrameTooLarge, LinkError};
pub use header::{HEADER_LEN, LinkHeader, MAGIC, VERSION};
pub use ids::{KeepAliveNonce, WatchId};

/// The generated payload tables (`ringline.internal`), for reading [`LinkMessage`]s.
pub use crate::generated::internal;
pub use crate::generated::internal::{ChangeKind, ErrorCode, Kind, Position};
