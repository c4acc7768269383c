//! One HTTP/1.1 request of the HTTP API: its head parsed (httparse) into the fields the
//! API reads, and the framing of its body (RFC 9112 §6). Bytes flow in; a [`Head`] and
//! the length of the head flow out, or `Ok(None)` while the head is incomplete (nothing
//! consumed), or an [`ApiError`] whose answer closes the connection (after a bad head
//! the next request cannot be found).

use super::error::ApiError;
use crate::Decoded;
use crate::handshake::HandshakeLimits;
use crate::handshake::request::MAX_HEADERS;

/// A parsed request head of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, without the query, still percent-encoded.
    pub path: &'a str,
    /// The query string after `?`, if any (still encoded).
    pub query: Option<&'a str>,
    /// The body's length (0 when none is declared).
    pub content_length: usize,
    /// Whether the connection stays open after the answer (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `If-Match` header.
    pub if_match: Option<&'a str>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The `Last-Event-ID` header (Server-Sent Events).
    pub last_event_id: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `X-Forwarded-For` header (from a balancer in front).
    pub x_forwarded_for: Option<&'a str>,
    /// An HTTP/1.1 request with `Expect: 100-continue`: the client may wait for a
    /// `100 (Continue)` before it sends the content.
    pub expects_continue: bool,
}

/// Iterate the comma-separated tokens of a header value, trimmed.
fn tokens(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Parse a request head from the start of `buf`. `Ok(None)` while it is incomplete
/// and within `limits`. A body must be framed by `Content-Length` (one value): RFC 9112
/// §6.3 lets a server that does not read chunked bodies answer 411, which this does for
/// `Transfer-Encoding`.
pub fn parse_head<'a>(
    buf: &'a [u8],
    limits: &HandshakeLimits,
) -> Result<Decoded<Head<'a>>, ApiError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut storage[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_header_bytes => n,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_header_bytes => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(ApiError::HeadTooLarge),
        Err(_) => return Err(ApiError::Malformed("not an HTTP/1.1 request head")),
    };
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut head = Head {
        method: req.method.unwrap_or_default(),
        path,
        query,
        content_length: 0,
        keep_alive: req.version == Some(1),
        authorization: None,
        if_match: None,
        if_none_match: None,
        idempotency_key: None,
        cookie: None,
        last_event_id: None,
        origin: None,
        x_forwarded_for: None,
        expects_continue: false,
    };
    let framing = read_headers(req.headers, &mut head)?;
    // RFC 9112 §6.3 (5): differing Content-Length values are unrecoverable.
    if framing.lengths > 1 {
        return Err(ApiError::Malformed("more than one Content-Length"));
    }
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    // HTTP/1.1 request message that lacks a Host header field and to any request
    // message that contains more than one Host header field".
    if (req.version == Some(1) && framing.hosts == 0) || framing.hosts > 1 {
        return Err(ApiError::Malformed("one Host header is required"));
    }
    // `close` anywhere wins; HTTP/1.0 stays open only when asked.
    head.keep_alive = !framing.close && (head.keep_alive || framing.keep);
    // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an
    // HTTP/1.0 request MUST ignore that expectation."
    head.expects_continue = framing.expect_continue && req.version == Some(1);
    Ok(Some((head, head_len)))
}

/// `100 (Continue)`, for a request it is [`continue_owed`] to.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether the request at the start of `buf` is owed a [`CONTINUE`] now: `None` while
/// its head is not whole (or cannot be parsed: its refusal goes instead); `Some(true)`
/// when its head is whole, expects 100-continue and declares content of at most
/// `max_body` bytes (a larger body is refused from its head alone), none of which has
/// come; `Some(false)` otherwise (none is owed to this request).
///
/// RFC 9110 §10.1.1: "Upon receiving an HTTP/1.1 (or later) request that has a
/// method, target URI, and complete header section that contains a 100-continue
/// expectation and an indication that request content will follow, an origin server
/// MUST send either: an immediate response with a final status code, if that status
/// can be determined by examining just the method, target URI, and header fields, or
/// an immediate 100 (Continue) response to encourage the client to send the request
/// content. The origin server MUST NOT wait for the content before sending the 100
/// (Continue) response." It "MAY omit sending a 100 (Continue) response if it has
/// already received some or all of the content for the corresponding request, or if
/// the framing indicates that there is no content."
#[must_use]
pub fn continue_owed(buf: &[u8], limits: &HandshakeLimits, max_body: usize) -> Option<bool> {
    let (head, n) = parse_head(buf, limits).ok()??;
    let body = head.content_length;
    Some(head.expects_continue && body > 0 && body <= max_body && buf.len() == n)
}

/// What the headers say of the request's framing, beside the fields of [`Head`].
#[derive(Debug, Default)]
struct Framing {
    /// `Content-Length` headers seen.
    lengths: usize,
    /// `Host` headers seen.
    hosts: usize,
    /// `Connection: close` seen.
    close: bool,
    /// `Connection: keep-alive` seen.
    keep: bool,
    /// `Expect: 100-continue` seen.
    expect_continue: bool,
}

/// Read `headers` into `head` (the fields the API reads, and the body's length); what
/// they say of the framing besides.
fn read_headers<'a>(
    headers: &[httparse::Header<'a>],
    head: &mut Head<'a>,
) -> Result<Framing, ApiError> {
    let mut f = Framing::default();
    for h in headers {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        // The framing headers first, whatever their bytes: one ignored for bytes that
        // are not text would frame the body differently from a proxy in front.
        if is("transfer-encoding") {
            return Err(ApiError::LengthRequired);
        }
        let value = std::str::from_utf8(h.value.trim_ascii());
        if is("content-length") {
            f.lengths += 1;
            // RFC 9110 §8.6: a value that is not one decimal number is unrecoverable.
            head.content_length = value
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(ApiError::Malformed("Content-Length is not a number"))?;
            continue;
        }
        if is("host") {
            f.hosts += 1;
        }
        let Ok(value) = value else {
            continue;
        };
        if is("connection") {
            f.close |= tokens(value).any(|t| t.eq_ignore_ascii_case("close"));
            f.keep |= tokens(value).any(|t| t.eq_ignore_ascii_case("keep-alive"));
        } else if is("authorization") {
            head.authorization = Some(value);
        } else if is("if-match") {
            head.if_match = Some(value);
        } else if is("if-none-match") {
            head.if_none_match = Some(value);
        } else if is("idempotency-key") {
            head.idempotency_key = Some(value);
        } else if is("cookie") {
            head.cookie = Some(value);
        } else if is("last-event-id") {
            head.last_event_id = Some(value);
        } else if is("origin") {
            head.origin = Some(value);
        } else if is("x-forwarded-for") {
            head.x_forwarded_for = Some(value);
        } else if is("expect") {
            // Other expectations are ignored (RFC 9110 §10.1.1 lets a server answer
            // them 417, and does not require it).
            f.expect_continue |= tokens(value).any(|t| t.eq_ignore_ascii_case("100-continue"));
        }
    }
    Ok(f)
}

/// Percent-decode `s` (`plus`: `+` is a space, as in a query). `None` when an escape is
/// malformed or the result is not UTF-8.
#[must_use]
pub fn percent_decode(s: &str, plus: bool) -> Option<std::borrow::Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || (plus && b == b'+')) {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

/// The `name=value` pairs of `query`, in order, still encoded.
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The value of parameter `name` in `query`, decoded (the first one, if repeated).
/// `Some(Err)`: present but malformed.
#[must_use]
pub fn query_param<'a>(
    query: Option<&'a str>,
    name: &str,
) -> Option<Result<std::borrow::Cow<'a, str>, ApiError>> {
    let pair = query_pairs(Some(query?)).find(|(n, _)| *n == name)?;
    Some(percent_decode(pair.1, true).ok_or(ApiError::Malformed("a query parameter is not UTF-8")))
}

/// `raw` with a `Host` header after its request line if it has none (for tests of
/// what is beside the point of a Host).
#[cfg(test)]
pub(crate) fn with_host(raw: &str) -> String {
    if raw.to_ascii_lowercase().contains("\r\nhost:") {
        return raw.to_owned();
    }
    match raw.split_once("\r\n") {
        Some((line, rest)) => format!("{line}\r\nHost: x\r\n{rest}"),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Decoded<Head<'static>>, ApiError> {
        let s: &'static str = Box::leak(with_host(s).into_boxed_str());
        parse_head(s.as_bytes(), &HandshakeLimits::default())
    }

    #[test]
    fn reads_the_fields_the_api_uses() {
        let s = "PUT /v1/keys/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nIf-Match: \"7\"\r\nIdempotency-Key: k1\r\nAuthorization: Bearer t\r\n\r\nhello";
        let (h, n) = parse(s).unwrap().unwrap();
        assert_eq!(n, s.len() - 5);
        assert_eq!(
            (h.method, h.path, h.query),
            ("PUT", "/v1/keys/a%2Fb", Some("x=1"))
        );
        assert_eq!(h.content_length, 5);
        assert_eq!(h.if_match, Some("\"7\""));
        assert_eq!(h.idempotency_key, Some("k1"));
        assert_eq!(h.authorization, Some("Bearer t"));
        assert!(h.keep_alive);
    }

    #[test]
    fn a_100_continue_is_awaited_until_content_comes() {
        let limits = HandshakeLimits::default();
        let waits = |s: &str| continue_owed(s.as_bytes(), &limits, 3) == Some(true);
        let head = "PUT /v1/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        assert!(waits(head));
        assert_eq!(
            continue_owed(head.as_bytes(), &limits, 2),
            Some(false),
            "over the limit: its 413 goes instead"
        );
        assert_eq!(
            continue_owed(&head.as_bytes()[..20], &limits, 3),
            None,
            "not whole yet"
        );
        assert!(
            waits(&head.replace("100-continue", "100-Continue")),
            "a case-insensitive token"
        );
        // Some content came: the client is sending it already.
        assert!(!waits(&format!("{head}1")));
        // Not whole yet, or no content, or no expectation, or HTTP/1.0.
        assert!(!waits(&head[..head.len() - 2]));
        assert!(!waits(
            &head.replace("Content-Length: 3", "Content-Length: 0")
        ));
        assert!(!waits(
            &head.replace("Expect: 100-continue", "Expect: something-else")
        ));
        assert!(!waits(&head.replace("HTTP/1.1", "HTTP/1.0")));
        let (h, _) = parse_head(head.as_bytes(), &limits).unwrap().unwrap();
        assert!(h.expects_continue);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |s: &str| parse(s).unwrap().unwrap().0.keep_alive;
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn incomplete_heads_wait_and_bad_framing_is_refused() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost:"), Ok(None));
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ApiError::LengthRequired)
        );
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(&big), Err(ApiError::HeadTooLarge));
        assert!(matches!(
            parse("\x01\x02 nonsense\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn framing_is_strict_where_a_proxy_might_read_it_otherwise() {
        fn strict(s: &str) -> Result<Decoded<Head<'_>>, ApiError> {
            parse_head(s.as_bytes(), &HandshakeLimits::default())
        }
        assert!(matches!(
            strict("GET / HTTP/1.1\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            strict("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(
            strict("GET / HTTP/1.0\r\n\r\n").is_ok(),
            "HTTP/1.0 needs no Host"
        );
        for cl in ["+5", "5 5", "0x5", ""] {
            let raw = format!("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n");
            assert!(
                matches!(strict(&raw), Err(ApiError::Malformed(_))),
                "{cl:?}"
            );
        }
        let not_text = b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\x80\r\n\r\n";
        assert!(parse_head(not_text, &HandshakeLimits::default()).is_err());
        let te = b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x80\r\n\r\n";
        assert!(parse_head(te, &HandshakeLimits::default()).is_err());
        // `close` wins wherever it is.
        let both =
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n";
        assert!(!strict(both).unwrap().unwrap().0.keep_alive);
        assert_eq!(percent_decode("%+1", false), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("room%2F%7B42%7D", false).unwrap(),
            "room/{42}"
        );
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(
            query_param(Some("a=1&cursor=x%3Dy&count_only=true"), "cursor")
                .unwrap()
                .unwrap(),
            "x=y"
        );
        assert!(query_param(Some("a=1"), "cursor").is_none());
        assert!(query_param(None, "cursor").is_none());
    }
}
