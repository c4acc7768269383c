//! Why an HTTP API request is refused before it reaches the hub, grouped by who is at
//! fault (rustls's model), and every refusal's HTTP status and code in one place:
//! [`ApiError::status`], with [`status_of`] for the client protocol's error codes
//! that come back from the hub.

use crate::client::{ClientErrorKind, ErrorCode};
use crate::handshake::Status;

/// An HTTP API request refused by the edge itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    // The request's framing: the connection cannot go on after these.
    /// The head is not HTTP/1.1.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head is over its byte or field limit.
    #[error("request head too large")]
    HeadTooLarge,
    /// A body framed other than by `Content-Length`.
    #[error("a body needs Content-Length (chunked bodies are not read)")]
    LengthRequired,
    /// Requests sent so far ahead of their answers that the bytes waiting pass one
    /// whole request at its largest.
    #[error("too many requests pipelined ahead of their answers")]
    PipelineFull,
    /// A body over the edge's message limit.
    #[error("body is {len} bytes, the limit is {max}")]
    BodyTooLarge {
        /// Its declared length.
        len: usize,
        /// The limit.
        max: usize,
    },

    // The request, well framed, asks for something wrong: answered, the connection stays.
    /// No such resource.
    #[error("no such resource: see /v1/openapi.json")]
    NotFound,
    /// The resource does not take this method.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// A field of the request is wrong (the same checks as the WebSocket protocol's).
    #[error("{0}")]
    Invalid(ClientErrorKind),
    /// A header or parameter is wrong.
    #[error("{0}")]
    BadHeader(&'static str),
}

impl ApiError {
    /// The status to answer with.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            Self::Malformed(_) | Self::BadHeader(_) => Status::BadRequest,
            Self::HeadTooLarge => Status::HeaderFieldsTooLarge,
            Self::LengthRequired => Status::LengthRequired,
            Self::BodyTooLarge { .. } => Status::PayloadTooLarge,
            Self::PipelineFull => Status::TooManyRequests,
            Self::NotFound => Status::NotFound,
            Self::MethodNotAllowed(_) => Status::MethodNotAllowed,
            Self::Invalid(ClientErrorKind::KeyTooLong { .. }) => Status::PayloadTooLarge,
            Self::Invalid(_) => Status::BadRequest,
        }
    }

    /// The error's code in the answer's body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::BadHeader(_) | Self::Invalid(_) => {
                if self.status() == Status::PayloadTooLarge {
                    "too_large"
                } else {
                    "bad_request"
                }
            }
            Self::HeadTooLarge => "head_too_large",
            Self::LengthRequired => "length_required",
            Self::BodyTooLarge { .. } => "too_large",
            Self::PipelineFull => "rate_limited",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    /// Whether the connection must close after the answer: the end of this request,
    /// and so the start of the next, is unknown.
    #[must_use]
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::HeadTooLarge
                | Self::LengthRequired
                | Self::BodyTooLarge { .. }
                | Self::PipelineFull
        )
    }
}

/// The HTTP status of an `error` answer with `code`, and the seconds of its
/// `Retry-After` when the client should come back.
#[must_use]
pub fn status_of(code: ErrorCode) -> (Status, Option<u32>) {
    match code {
        ErrorCode::BadRequest => (Status::BadRequest, None),
        ErrorCode::TooLarge => (Status::PayloadTooLarge, None),
        ErrorCode::Conflict => (Status::Conflict, None),
        ErrorCode::Unavailable | ErrorCode::Overloaded => (Status::ServiceUnavailable, Some(1)),
        ErrorCode::Internal => (Status::InternalServerError, None),
        ErrorCode::Unauthorized => (Status::Unauthorized, None),
        ErrorCode::Forbidden => (Status::Forbidden, None),
        ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => {
            (Status::TooManyRequests, Some(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_code_has_its_status() {
        let want = [
            (ErrorCode::BadRequest, 400, None),
            (ErrorCode::TooLarge, 413, None),
            (ErrorCode::Conflict, 409, None),
            (ErrorCode::Unavailable, 503, Some(1)),
            (ErrorCode::Overloaded, 503, Some(1)),
            (ErrorCode::Internal, 500, None),
            (ErrorCode::Unauthorized, 401, None),
            (ErrorCode::Forbidden, 403, None),
            (ErrorCode::RateLimited, 429, Some(1)),
            (ErrorCode::TooManySubscriptions, 429, Some(1)),
        ];
        assert_eq!(want.len(), ErrorCode::ALL.len());
        for (code, status, retry) in want {
            let (s, r) = status_of(code);
            assert_eq!((s.code(), r), (status, retry), "{code}");
        }
    }

    #[test]
    fn framing_errors_close_the_connection_and_the_rest_do_not() {
        assert!(ApiError::LengthRequired.closes());
        assert!(ApiError::BodyTooLarge { len: 2, max: 1 }.closes());
        assert!(!ApiError::NotFound.closes());
        assert!(!ApiError::Invalid(ClientErrorKind::Missing("key")).closes());
        assert_eq!(
            ApiError::Invalid(ClientErrorKind::KeyTooLong {
                field: "key",
                len: 2000,
                max: 1024
            })
            .status()
            .code(),
            413
        );
        assert_eq!(ApiError::MethodNotAllowed("GET").status().code(), 405);
        assert_eq!(ApiError::LengthRequired.status().code(), 411);
    }
}
