//! HTTP/1.1 responses written into a caller's buffer: the 101 that completes a
//! WebSocket handshake, and the plain responses (health, metrics, errors, 503 when
//! full) served on the same port. Plain responses always close the connection.

use super::accept::AcceptKey;

/// The statuses the edge answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 400 Bad Request.
    BadRequest,
    /// 401 Unauthorized (a missing or invalid token; see [`write_unauthorized`]).
    Unauthorized,
    /// 403 Forbidden (a browser handshake from an origin not allowed).
    Forbidden,
    /// 404 Not Found.
    NotFound,
    /// 405 Method Not Allowed.
    MethodNotAllowed,
    /// 409 Conflict (a write's expected version did not match).
    Conflict,
    /// 411 Length Required (a body framed other than by Content-Length).
    LengthRequired,
    /// 413 Content Too Large.
    PayloadTooLarge,
    /// 426 Upgrade Required (carries `Sec-WebSocket-Version: 13`).
    UpgradeRequired,
    /// 429 Too Many Requests (over a per-address connection limit; carries
    /// Retry-After).
    TooManyRequests,
    /// 431 Request Header Fields Too Large.
    HeaderFieldsTooLarge,
    /// 500 Internal Server Error.
    InternalServerError,
    /// 503 Service Unavailable (full or draining; may carry Retry-After).
    ServiceUnavailable,
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::LengthRequired => 411,
            Self::PayloadTooLarge => 413,
            Self::UpgradeRequired => 426,
            Self::TooManyRequests => 429,
            Self::HeaderFieldsTooLarge => 431,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::Conflict => "Conflict",
            Self::LengthRequired => "Length Required",
            Self::PayloadTooLarge => "Content Too Large",
            Self::UpgradeRequired => "Upgrade Required",
            Self::TooManyRequests => "Too Many Requests",
            Self::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::InternalServerError => "Internal Server Error",
            Self::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Append `101 Switching Protocols` completing a handshake, with the selected
/// subprotocol and the accepted extensions (a `Sec-WebSocket-Extensions` value, see
/// [`Deflate::response`](super::deflate::Deflate::response)) if any.
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept: &AcceptKey,
    protocol: Option<&str>,
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_str().as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    if let Some(e) = extensions {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(e.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Append `401 Unauthorized` for a missing or invalid bearer token, its `reason` (a
/// short fixed phrase, never the token) in the RFC 6750 `WWW-Authenticate` header and
/// in the body; `Connection: close`.
pub fn write_unauthorized(out: &mut Vec<u8>, reason: &str) {
    use std::io::Write;
    let body = format!("unauthorized: {reason}\n");
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nWWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"{reason}\"\r\n\r\n{body}",
        body.len()
    );
}

/// Append a complete plain response with a body; `Connection: close`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &[u8],
    retry_after_secs: Option<u32>,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.code(),
        status.reason(),
        content_type,
        body.len()
    );
    if status == Status::UpgradeRequired {
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    if let Some(secs) = retry_after_secs {
        let _ = write!(out, "Retry-After: {secs}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = r.parse(bytes).unwrap() else {
            panic!("partial")
        };
        let hs = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (r.code.unwrap(), hs, bytes[n..].to_vec())
    }

    #[test]
    fn unauthorized_says_why_in_the_header_and_body() {
        let mut out = Vec::new();
        write_unauthorized(&mut out, "token expired");
        let (code, headers, body) = parse(&out);
        assert_eq!(code, 401);
        let www = headers
            .iter()
            .find(|(n, _)| n == "WWW-Authenticate")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            www,
            Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
        );
        assert_eq!(body, b"unauthorized: token expired\n");
        let len = headers.iter().find(|(n, _)| n == "Content-Length");
        assert_eq!(len.map(|(_, v)| v.as_str()), Some("28"));
    }

    #[test]
    fn switching_protocols_is_valid_http() {
        let mut out = Vec::new();
        write_switching_protocols(
            &mut out,
            &super::super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            Some("ringline.v1.json"),
            Some("permessage-deflate; server_no_context_takeover"),
        );
        let (code, hs, body) = parse(&out);
        assert!(hs.contains(&(
            "Sec-WebSocket-Extensions".into(),
            "permessage-deflate; server_no_context_takeover".into()
        )));
        assert_eq!(code, 101);
        assert!(body.is_empty());
        assert!(hs.contains(&(
            "Sec-WebSocket-Accept".into(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
        )));
        assert!(hs.contains(&("Sec-WebSocket-Protocol".into(), "ringline.v1.json".into())));
    }

    #[test]
    fn plain_responses() {
        for (status, code) in [
            (Status::Ok, 200),
            (Status::BadRequest, 400),
            (Status::NotFound, 404),
            (Status::UpgradeRequired, 426),
            (Status::HeaderFieldsTooLarge, 431),
            (Status::ServiceUnavailable, 503),
        ] {
            let mut out = Vec::new();
            write_response(
                &mut out,
                status,
                "text/plain",
                b"hello",
                (code == 503).then_some(5),
            );
            let (c, hs, body) = parse(&out);
            assert_eq!(c, code);
            assert_eq!(body, b"hello");
            assert!(hs.contains(&("Content-Length".into(), "5".into())));
            assert_eq!(
                hs.iter().any(|(k, v)| k == "Retry-After" && v == "5"),
                code == 503
            );
            assert_eq!(
                hs.iter()
                    .any(|(k, v)| k == "Sec-WebSocket-Version" && v == "13"),
                code == 426
            );
        }
    }
}
