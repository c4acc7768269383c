//! The HTTP/1.1 side of a connection: the opening handshake (RFC 6455 §4.2) and the
//! plain HTTP responses the edge serves on the same port. Request bytes flow into
//! [`parse_request`]; a [`Request`] (with its validated [`Upgrade`], if it asked for
//! one) or a [`HandshakeError`] that knows its HTTP status flows out; responses are
//! written by [`response`]; [`deflate`] negotiates `permessage-deflate` (RFC 7692).

pub mod accept;
pub mod deflate;
pub mod error;
pub mod request;
pub mod response;

pub use accept::{AcceptKey, accept_key};
pub use deflate::{Deflate, DeflatePolicy, negotiate as negotiate_deflate};
pub use error::HandshakeError;
pub use request::{HandshakeLimits, Request, Upgrade, parse_request};
pub use response::{Status, write_response, write_switching_protocols, write_unauthorized};
