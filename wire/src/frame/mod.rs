//! WebSocket frames (RFC 6455 §5). Client bytes flow in through [`Decoder`]
//! (header checks in [`header`], close payloads in [`close`], reassembly and UTF-8 in
//! [`decoder`]); server frames flow out through [`encode`]. Every way a peer can
//! break the protocol is a [`ProtocolError`], mapped to its close code in one place.
//! [`deflate`] inflates and deflates the payloads of `permessage-deflate` messages.

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod encode;
pub mod error;
pub mod header;
pub mod opcode;

pub use close::{CloseCode, CloseFrame};
pub use decoder::{Decoder, Incoming, Limits};
pub use encode::{
    SharedFrame, encode_client_frame, encode_close, encode_close_reply,
    encode_compressed_client_frame, encode_compressed_header, encode_frame, encode_header,
};
pub use error::ProtocolError;
pub use header::{FrameHeader, RSV1};
pub use opcode::Opcode;
