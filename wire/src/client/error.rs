//! Why a client message was refused: a [`ClientError`] names the protocol error code to
//! answer with and says what was wrong, for the client's developer.

use std::borrow::Cow;

use super::{ErrorCode, Response};

/// A client message that cannot be accepted. The connection can go on: answer with
/// [`ClientError::to_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ClientError {
    /// The message's id, when it could be read before the problem was found.
    pub id: Option<u64>,
    /// What was wrong.
    pub kind: ClientErrorKind,
}

/// What was wrong with a client message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientErrorKind {
    /// Not a well-formed message of the expected shape (JSON syntax, wrong field type, failed
    /// flatbuffer verification...). The text is the parser's, shortened.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// The `op` is not one this protocol knows.
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    /// `sub` has more or fewer than one of `key`, `prefix` and `presence`.
    #[error("`sub` needs exactly one of `key`, `prefix` and `presence`")]
    SubTarget,
    /// A key or prefix is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A key or prefix is longer than [`super::MAX_KEY_LEN`], or an `auth` message's
    /// token longer than [`super::MAX_JWT_LEN`].
    #[error("`{field}` is {len} bytes long, the limit is {max}")]
    KeyTooLong {
        /// `key`, `prefix`, `token` or `msg_id`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A resume token is longer than [`super::MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long, the limit is {max}")]
    TokenTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An error response names a code this protocol does not know (decoding responses only).
    #[error("unknown error code `{0}`")]
    UnknownCode(String),
}

impl ClientError {
    /// An error about the message with `id`.
    #[must_use]
    pub fn new(id: Option<u64>, kind: ClientErrorKind) -> Self {
        Self { id, kind }
    }

    /// The protocol error code to answer with.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            ClientErrorKind::KeyTooLong { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        }
    }

    /// The human-readable message to answer with.
    #[must_use]
    pub fn message(&self) -> String {
        self.kind.to_string()
    }

    /// The `error` response to send back.
    #[must_use]
    pub fn to_response(&self) -> Response<'static> {
        Response::Error {
            id: self.id,
            code: self.code(),
            message: Cow::Owned(self.message()),
            version: None,
        }
    }
}

impl From<ClientErrorKind> for ClientError {
    fn from(kind: ClientErrorKind) -> Self {
        Self { id: None, kind }
    }
}

/// Longest echo of client-supplied text (an unknown op, a parser message) in an error.
const MAX_ECHO: usize = 120;

/// `text` cut to at most [`MAX_ECHO`] bytes at a character boundary, with `…` when cut, so a
/// client cannot make the edge echo megabytes back.
pub(crate) fn shorten(text: &str) -> String {
    if text.len() <= MAX_ECHO {
        return text.to_owned();
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_responses() {
        let err = ClientError::new(Some(5), ClientErrorKind::Missing("key"));
        assert_eq!(err.code(), ErrorCode::BadRequest);
        assert_eq!(err.message(), "missing field `key`");
        assert_eq!(
            err.to_response(),
            Response::Error {
                id: Some(5),
                code: ErrorCode::BadRequest,
                message: "missing field `key`".into(),
                version: None
            }
        );
        let err = ClientError::from(ClientErrorKind::KeyTooLong {
            field: "key",
            len: 2000,
            max: 1024,
        });
        assert_eq!(err.code(), ErrorCode::TooLarge);
        assert_eq!(err.id, None);
    }

    #[test]
    fn shorten_cuts_at_char_boundaries() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(100);
        let short = shorten(&long);
        assert!(short.len() <= MAX_ECHO + '…'.len_utf8());
        assert!(short.ends_with('…'));
    }
}
