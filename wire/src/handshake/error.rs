//! Why a handshake was refused, and the HTTP status that says so. Every variant is
//! the client's fault; the connection gets the status's response and is closed.

use super::response::Status;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not parseable as HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(#[from] httparse::Error),
    /// The header block exceeds the byte limit.
    #[error("request header block exceeds {0} bytes")]
    HeadersTooLarge(usize),
    /// More header fields than the limit.
    #[error("too many request header fields")]
    TooManyHeaders,
    /// §4.2.1 (1): the method MUST be GET.
    #[error("WebSocket upgrade must use GET")]
    NotGet,
    /// §4.2.1 (1): HTTP/1.1 or higher.
    #[error("WebSocket upgrade needs HTTP/1.1")]
    HttpVersion,
    /// §4.2.1 (2): a Host header field.
    #[error("missing Host header")]
    MissingHost,
    /// RFC 9112 §3.2: more than one Host header, or one that is not valid text.
    #[error("repeated or invalid Host header")]
    InvalidHost,
    /// §4.2.1 (3): an Upgrade header containing "websocket" (the request carried a
    /// Sec-WebSocket-Key, so it was meant as an upgrade).
    #[error("Sec-WebSocket-Key without Upgrade: websocket")]
    MissingUpgrade,
    /// §4.2.1 (4): a Connection header field containing the token "Upgrade".
    #[error("Connection header does not contain the Upgrade token")]
    MissingConnectionUpgrade,
    /// §4.2.1 (5): exactly one Sec-WebSocket-Key.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// More than one Sec-WebSocket-Key.
    #[error("repeated Sec-WebSocket-Key")]
    DuplicateKey,
    /// §4.2.1 (5): the key, base64-decoded, MUST be 16 bytes long.
    #[error("Sec-WebSocket-Key is not 16 bytes of base64")]
    InvalidKey,
    /// §4.2.1 (6): a Sec-WebSocket-Version header field.
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    /// More than one Sec-WebSocket-Version.
    #[error("repeated Sec-WebSocket-Version")]
    DuplicateVersion,
    /// An upgrade request that declares a body (Content-Length / Transfer-Encoding).
    #[error("WebSocket upgrade request must not have a body")]
    UnexpectedBody,
    /// §4.2.1 (6): the version MUST be 13 (answered with 426 and the version we speak).
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
}

impl HandshakeError {
    /// The response status for this refusal.
    pub fn status(&self) -> Status {
        match self {
            Self::HeadersTooLarge(_) | Self::TooManyHeaders => Status::HeaderFieldsTooLarge,
            Self::UnsupportedVersion => Status::UpgradeRequired,
            Self::Malformed(_)
            | Self::NotGet
            | Self::HttpVersion
            | Self::MissingHost
            | Self::MissingConnectionUpgrade
            | Self::MissingKey
            | Self::DuplicateKey
            | Self::InvalidKey
            | Self::MissingVersion
            | Self::InvalidHost
            | Self::MissingUpgrade
            | Self::DuplicateVersion
            | Self::UnexpectedBody => Status::BadRequest,
        }
    }

    /// Append the full HTTP response for this refusal (plain-text reason as body).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let body = format!("{self}\n");
        super::response::write_response(
            out,
            self.status(),
            "text/plain; charset=utf-8",
            body.as_bytes(),
            None,
        );
    }
}
