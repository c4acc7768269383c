//! The client protocol: what flows between a WebSocket client and an edge. Requests
//! (client → edge) and responses (edge → client) exist in two encodings that decode into the
//! same Rust types, [`Request`] and [`Response`]:
//!
//! - [`json`]: one JSON object per text frame, e.g. `{"op":"get","id":4,"key":"k"}`.
//!   Values are embedded as raw JSON; bytes that are not JSON go out as `{"b64":"..."}`.
//! - [`fb`]: one `Request`/`Response` flatbuffer (`schemas/client.fbs`) per binary frame.
//!
//! A WebSocket message is always complete, so the decoders take a whole message and return
//! a plain `Result` (the message is consumed entirely). Their errors are [`ClientError`]s,
//! which carry the protocol error code to answer with. Resume tokens are in [`token`].

pub(crate) mod error;
pub mod fb;
pub mod json;
pub mod token;
mod types;
pub(crate) mod validate;

#[cfg(test)]
mod arbitrary;
#[cfg(test)]
mod tests;

pub use error::{ClientError, ClientErrorKind};
pub use token::{Position, TokenError, decode_token, encode_token};
pub use types::{
    AUTO_SUB_ID, BROADCAST_KEY, ChangeOp, Entry, ErrorCode, Member, MemberMeta, PresenceEvent,
    Request, Response, SubMode, Target, inbox_key,
};
pub use validate::{MAX_DURABLE_LEN, MAX_JWT_LEN, MAX_KEY_LEN, MAX_MSG_ID_LEN, MAX_TOKEN_LEN};
