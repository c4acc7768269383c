//! What can go wrong, grouped by who is at fault, each server error code mapped to one
//! variant in one place ([`Error::from_server`]).

use wire::client::ErrorCode;

/// A request's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or invalid (`bad_request`): do not retry it as is.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A key, value or other field is over its limit (`too_large`).
    #[error("too large: {0}")]
    TooLarge(String),
    /// `if_version` did not match; the key is now at `current` (0: absent).
    #[error("version conflict: the key is at version {current}")]
    Conflict {
        /// The key's version now.
        current: u64,
    },
    /// The token does not grant this (`forbidden`).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No valid token (`unauthorized`).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The data is unreachable for now (`unavailable`); a write's outcome is unknown:
    /// the client retries writes itself, with their `msg_id`.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The service sheds load (`overloaded`, `rate_limited`): retry later, slower.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The connection holds as many subscriptions (or presence channels) as it may.
    #[error("too many subscriptions: {0}")]
    TooManySubscriptions(String),
    /// A fault in the service (`internal`).
    #[error("internal server error: {0}")]
    Internal(String),
    /// More requests wait for a connection than the client may queue.
    #[error("the client's queue of requests waiting for a connection is full")]
    QueueFull,
    /// The client stopped (closed by the application, or a close code that ends it).
    #[error("the client is closed: {0}")]
    Closed(String),
}

impl Error {
    /// The variant for a server's error answer.
    #[must_use]
    pub fn from_server(code: ErrorCode, message: &str, version: Option<u64>) -> Self {
        let m = message.to_owned();
        match code {
            ErrorCode::BadRequest => Self::BadRequest(m),
            ErrorCode::TooLarge => Self::TooLarge(m),
            ErrorCode::Conflict => Self::Conflict {
                current: version.unwrap_or(0),
            },
            ErrorCode::Forbidden => Self::Forbidden(m),
            ErrorCode::Unauthorized => Self::Unauthorized(m),
            ErrorCode::Unavailable => Self::Unavailable(m),
            ErrorCode::Overloaded | ErrorCode::RateLimited => Self::Overloaded(m),
            ErrorCode::TooManySubscriptions => Self::TooManySubscriptions(m),
            ErrorCode::Internal => Self::Internal(m),
        }
    }

    /// Whether trying again later may succeed (the client does so itself for
    /// subscriptions).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Overloaded(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_code_has_its_variant() {
        for code in ErrorCode::ALL {
            let e = Error::from_server(code, "m", Some(7));
            let transient = matches!(
                code,
                ErrorCode::Unavailable | ErrorCode::Overloaded | ErrorCode::RateLimited
            );
            assert_eq!(e.is_transient(), transient, "{code}");
        }
        assert_eq!(
            Error::from_server(ErrorCode::Conflict, "x", Some(7)),
            Error::Conflict { current: 7 }
        );
    }
}
