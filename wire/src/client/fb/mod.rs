//! The client protocol's binary form: one `Request` or `Response` flatbuffer
//! (`schemas/client.fbs`) per WebSocket binary frame. Same messages as the JSON form; values
//! are plain bytes.
//!
//! Decoders verify the buffer (bounded depth and table count) before reading any field.
//! Encoders append to a caller-owned buffer; [`FbEncoder`] keeps its builder between
//! messages, the free functions use a fresh one.

mod decode;
mod encode;

pub use decode::{decode_request, decode_response};
pub use encode::{FbEncoder, encode_request, encode_response};
