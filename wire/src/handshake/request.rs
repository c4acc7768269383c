//! Parsing one HTTP/1.1 request head (httparse) and, when it asks for a WebSocket,
//! validating the upgrade (RFC 6455 §4.2.1). The header block is bounded in bytes
//! and fields, so a slow or oversized request is refused, never buffered forever.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::accept::{AcceptKey, accept_key};
use super::error::HandshakeError;
use crate::Decoded;

/// Hard cap on header fields (the parser's stack array); [`HandshakeLimits::max_headers`]
/// may lower it.
pub const MAX_HEADERS: usize = 100;

/// Bounds on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest header block in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Most header fields (431 above it); at most [`MAX_HEADERS`].
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 8 * 1024,
            max_headers: 32,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method (`GET`, ...).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string after `?`, if any.
    pub query: Option<&'a str>,
    /// The Host header.
    pub host: Option<&'a str>,
    /// The Authorization header.
    pub authorization: Option<&'a str>,
    /// The Origin header.
    pub origin: Option<&'a str>,
    /// The X-Forwarded-For header (set by HAProxy/nginx in front).
    pub x_forwarded_for: Option<&'a str>,
    /// The validated WebSocket upgrade, when the request asked for one.
    pub websocket: Option<Upgrade<'a>>,
    /// Bytes received after the request head (already-sent frames, or a pipelined request).
    pub rest: &'a [u8],
}

/// A valid WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// The client's Sec-WebSocket-Key.
    pub key: &'a str,
    /// The Sec-WebSocket-Accept value to answer with.
    pub accept: AcceptKey,
    /// The subprotocol selected: the first one the client offered that the server supports.
    pub protocol: Option<&'a str>,
    /// True when the client offered subprotocols (whether or not one was selected).
    pub protocols_offered: bool,
    /// The Sec-WebSocket-Extensions offered, verbatim; several such headers joined by
    /// commas (RFC 6455 §9.1: "logically the same as a single ... header field that
    /// contains all values"). See [`negotiate`](super::deflate::negotiate).
    pub extensions: Option<std::borrow::Cow<'a, str>>,
}

/// Iterate the comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Split an absolute-form request target (`http://host/path?q`) into its authority
/// and the rest (`/path?q`; the caller reads an empty path as `/`). Other targets pass
/// through.
fn split_absolute_form(target: &str) -> (Option<&str>, &str) {
    let Some((scheme, rest)) = target.split_once("://") else {
        return (None, target);
    };
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        return (None, target);
    }
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    (Some(&rest[..at]), &rest[at..])
}

/// Parse a request head from the start of `buf`, selecting a subprotocol from
/// `server_protocols`. `Ok(None)` while the head is incomplete (and within limits).
/// A request is a WebSocket attempt when its `Upgrade` header lists `websocket` or it
/// carries a `Sec-WebSocket-Key`; such a request is fully validated, and any flaw is an
/// error. Other requests are returned
/// with `websocket: None` for the caller to route.
///
/// The head is parsed from the start on every call, so a caller receiving a head in
/// many small pieces should call again only once `\r\n\r\n` has arrived (or the
/// limit is reached), not after every read.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &HandshakeLimits,
    server_protocols: &[&str],
) -> Result<Decoded<Request<'a>>, HandshakeError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut storage[..max_headers]);
    let Some(head_len) = head_length(req.parse(buf), buf.len(), limits)? else {
        return Ok(None);
    };
    // A complete parse always has a method, path and version.
    let method = req.method.unwrap_or_default();
    let target = RequestTarget::split(req.path.unwrap_or_default());
    let mut fields = Fields::read(req.headers, server_protocols);

    // RFC 9112 §3.2: a request with more than one Host, or an invalid one, gets 400.
    if fields.host_count > 1 || (fields.host_count == 1 && fields.host.is_none()) {
        return Err(HandshakeError::InvalidHost);
    }
    let host = target.authority.or(fields.host);

    // A request carrying a WebSocket key is an upgrade attempt even if a proxy dropped
    // its Upgrade header; it is then refused rather than routed as plain HTTP.
    let websocket = if fields.upgrade_websocket || fields.key.is_some() {
        Some(fields.upgrade(method, req.version, host)?)
    } else {
        None
    };

    let request = Request {
        method,
        path: target.path,
        query: target.query,
        host,
        authorization: fields.authorization,
        origin: fields.origin,
        x_forwarded_for: fields.x_forwarded_for,
        websocket,
        rest: &buf[head_len..],
    };
    Ok(Some((request, head_len)))
}

/// The head's length once httparse found it complete (`parsed`, of `received` bytes);
/// `None` while it is not, and within the limits.
fn head_length(
    parsed: httparse::Result<usize>,
    received: usize,
    limits: &HandshakeLimits,
) -> Result<Option<usize>, HandshakeError> {
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        // A head still incomplete at the limit can only end beyond it.
        Ok(httparse::Status::Partial) if received >= limits.max_header_bytes => {
            return Err(HandshakeError::HeadersTooLarge(limits.max_header_bytes));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(e) => return Err(HandshakeError::Malformed(e)),
    };
    if head_len > limits.max_header_bytes {
        return Err(HandshakeError::HeadersTooLarge(limits.max_header_bytes));
    }
    Ok(Some(head_len))
}

/// A request target, split.
struct RequestTarget<'a> {
    /// The authority of an absolute-form target.
    authority: Option<&'a str>,
    /// The path without the query (`/` when empty).
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> RequestTarget<'a> {
    fn split(target: &'a str) -> Self {
        // RFC 9112 §3.2.2: "A server MUST accept the absolute-form in requests" and then
        // use its authority in place of the Host header.
        let (authority, target) = split_absolute_form(target);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Self {
            authority,
            path,
            query,
        }
    }
}

/// What a request's header fields say about its routing and its upgrade, read in one
/// pass (repeated fields counted where a repeat is an error).
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a str>,
    host_count: usize,
    /// A `Content-Length` or `Transfer-Encoding` was sent.
    body_framing: bool,
    authorization: Option<&'a str>,
    origin: Option<&'a str>,
    x_forwarded_for: Option<&'a str>,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    key: Option<&'a [u8]>,
    duplicate_key: bool,
    version: Option<&'a [u8]>,
    version_count: usize,
    /// The first offered subprotocol the server speaks.
    protocol: Option<&'a str>,
    protocols_offered: bool,
    extensions: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn read(headers: &[httparse::Header<'a>], server_protocols: &[&str]) -> Self {
        let mut fields = Self::default();
        for h in headers {
            fields.take(h.name, h.value.trim_ascii(), server_protocols);
        }
        fields
    }

    /// One header field, its value trimmed.
    fn take(&mut self, name: &'a str, value: &'a [u8], server_protocols: &[&str]) {
        let text = || std::str::from_utf8(value).ok();
        if name.eq_ignore_ascii_case("host") {
            self.host_count += 1;
            self.host = text();
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade_websocket |=
                text().is_some_and(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("websocket")));
        } else if name.eq_ignore_ascii_case("connection") {
            self.connection_upgrade |=
                text().is_some_and(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            self.duplicate_key |= self.key.is_some();
            self.key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            self.version_count += 1;
            self.version = Some(value);
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            self.body_framing = true;
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            if let Some(v) = text() {
                for offered in tokens(v) {
                    self.protocols_offered = true;
                    if self.protocol.is_none() && server_protocols.contains(&offered) {
                        self.protocol = Some(offered);
                    }
                }
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            self.extensions = match (self.extensions.take(), text()) {
                (Some(first), Some(more)) => Some(format!("{first}, {more}").into()),
                (first, more) => first.or(more.map(Into::into)),
            };
        } else if name.eq_ignore_ascii_case("authorization") {
            self.authorization = text();
        } else if name.eq_ignore_ascii_case("origin") {
            self.origin = text();
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            self.x_forwarded_for = text();
        }
    }

    /// The WebSocket upgrade these fields ask for, validated (RFC 6455 §4.2.1), for a
    /// request with `method`, HTTP/1.`version` and `host`.
    fn upgrade(
        &mut self,
        method: &str,
        version: Option<u8>,
        host: Option<&str>,
    ) -> Result<Upgrade<'a>, HandshakeError> {
        // §4.2.1 (1): "An HTTP/1.1 or higher GET request"
        if method != "GET" {
            return Err(HandshakeError::NotGet);
        }
        if version != Some(1) {
            return Err(HandshakeError::HttpVersion);
        }
        // §4.2.1 (2): "A |Host| header field"
        if host.is_none_or(str::is_empty) {
            return Err(HandshakeError::MissingHost);
        }
        // §4.2.1 (3): "An |Upgrade| header field containing the value "websocket""
        if !self.upgrade_websocket {
            return Err(HandshakeError::MissingUpgrade);
        }
        // §4.2.1 (4): "A |Connection| header field that includes the token 'Upgrade'"
        if !self.connection_upgrade {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // §4.2.2: a version the server does not speak is answered with 426 and the
        // versions it does, before anything version-specific (such as the key) is read.
        match (self.version, self.version_count) {
            (None, _) => return Err(HandshakeError::MissingVersion),
            (Some(b"13"), 1) => {}
            (Some(_), 1) => return Err(HandshakeError::UnsupportedVersion),
            (Some(_), _) => return Err(HandshakeError::DuplicateVersion),
        }
        // §4.2.1 (5): "A |Sec-WebSocket-Key| header field with a base64-encoded value
        // that, when decoded, is 16 bytes in length."
        if self.duplicate_key {
            return Err(HandshakeError::DuplicateKey);
        }
        let key = self.key.ok_or(HandshakeError::MissingKey)?;
        let mut decoded = [0u8; 18];
        match STANDARD.decode_slice(key, &mut decoded) {
            Ok(16) => {}
            _ => return Err(HandshakeError::InvalidKey),
        }
        // A GET upgrade has no body; bytes after the head are WebSocket frames, so a
        // declared body would be misread as frames.
        if self.body_framing {
            return Err(HandshakeError::UnexpectedBody);
        }
        Ok(Upgrade {
            // The key decoded as base64, so it is ASCII.
            key: std::str::from_utf8(key).unwrap_or_default(),
            accept: accept_key(key),
            protocol: self.protocol,
            protocols_offered: self.protocols_offered,
            extensions: self.extensions.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Status;

    const PROTOS: &[&str] = &["ringline.v1.json", "ringline.v1.fb"];

    fn req(extra: &str) -> String {
        format!(
            "GET /ws?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn parse(s: &str) -> Result<Decoded<Request<'_>>, HandshakeError> {
        parse_request(s.as_bytes(), &HandshakeLimits::default(), PROTOS)
    }

    #[test]
    fn rfc_example_handshake() {
        let s =
            req("Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, ringline.v1.fb\r\n");
        let mut full = s.clone().into_bytes();
        full.extend_from_slice(b"\x81\x85");
        let (r, n) = parse_request(&full, &HandshakeLimits::default(), PROTOS)
            .unwrap()
            .unwrap();
        assert_eq!(n, s.len());
        assert_eq!((r.method, r.path, r.query), ("GET", "/ws", Some("x=1")));
        assert_eq!(r.origin, Some("http://example.com"));
        assert_eq!(r.rest, b"\x81\x85");
        let ws = r.websocket.unwrap();
        assert_eq!(ws.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(ws.protocol, Some("ringline.v1.fb"));
        assert!(ws.protocols_offered);
    }

    #[test]
    fn extension_offers_in_several_headers_are_one_list() {
        let one = req("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        let ext = |s: &str| {
            parse(s)
                .unwrap()
                .unwrap()
                .0
                .websocket
                .unwrap()
                .extensions
                .map(|e| e.into_owned())
        };
        assert_eq!(ext(&one).as_deref(), Some("permessage-deflate"));
        let two = req(
            "Sec-WebSocket-Extensions: x-foo\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        assert_eq!(
            ext(&two).as_deref(),
            Some("x-foo, permessage-deflate; client_max_window_bits")
        );
        assert_eq!(ext(&req("")), None);
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let s = req("");
        for cut in 0..s.len() {
            assert_eq!(parse(&s[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn header_tokens_are_case_insensitive_comma_lists() {
        let s = "GET / HTTP/1.1\r\nhost: h\r\nUPGRADE: h2c, WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
                 sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
        assert!(parse(s).unwrap().unwrap().0.websocket.is_some());
    }

    #[test]
    fn plain_requests_pass_through() {
        let s = "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nAuthorization: Bearer t\r\n\r\n";
        let (r, _) = parse(s).unwrap().unwrap();
        assert_eq!(r.path, "/healthz");
        assert_eq!(r.websocket, None);
        assert_eq!(r.x_forwarded_for, Some("10.0.0.1"));
        assert_eq!(r.authorization, Some("Bearer t"));
    }

    #[test]
    fn refusals_and_their_status() {
        let cases: &[(String, HandshakeError, u16)] = &[
            (
                req("").replacen("GET", "POST", 1),
                HandshakeError::NotGet,
                400,
            ),
            (
                req("").replacen("HTTP/1.1", "HTTP/1.0", 1),
                HandshakeError::HttpVersion,
                400,
            ),
            (
                req("").replacen("Host: example.com\r\n", "", 1),
                HandshakeError::MissingHost,
                400,
            ),
            (
                req("").replacen("Connection: Upgrade", "Connection: keep-alive", 1),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                req("").replacen("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1),
                HandshakeError::MissingKey,
                400,
            ),
            (
                req("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
                HandshakeError::DuplicateKey,
                400,
            ),
            (
                req("").replacen("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==", 1),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                req("").replacen("dGhlIHNhbXBsZSBub25jZQ==", "not base64!!", 1),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                req("").replacen("Sec-WebSocket-Version: 13\r\n", "", 1),
                HandshakeError::MissingVersion,
                400,
            ),
            (
                req("").replacen("Version: 13", "Version: 8", 1),
                HandshakeError::UnsupportedVersion,
                426,
            ),
        ];
        for (s, err, code) in cases {
            assert_eq!(parse(s).as_ref().map(|_| ()), Err(err), "{s}");
            assert_eq!(err.status().code(), *code);
        }
        assert_eq!(
            HandshakeError::UnsupportedVersion.status(),
            Status::UpgradeRequired
        );
    }

    #[test]
    fn limits_give_431_not_a_hang() {
        // Never completes, but exceeds the byte limit.
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(9000));
        let e = parse(&big).unwrap_err();
        assert_eq!(e.status().code(), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let e = parse(&req(&many)).unwrap_err();
        assert_eq!(e, HandshakeError::TooManyHeaders);
        assert_eq!(e.status().code(), 431);
        let mut out = Vec::new();
        e.write_response(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }

    #[test]
    fn garbage_is_malformed() {
        let e = parse("\x16\x03\x01 tls hello\r\n\r\n").unwrap_err();
        assert!(matches!(e, HandshakeError::Malformed(_)));
        assert_eq!(e.status().code(), 400);
    }

    #[test]
    fn absolute_form_targets_use_their_authority() {
        let s = "GET http://edge.example:8080/ws?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n";
        let (r, _) = parse(s).unwrap().unwrap();
        assert_eq!(
            (r.host, r.path, r.query),
            (Some("edge.example:8080"), "/ws", Some("x=1"))
        );
        let s = "GET wss://h?q HTTP/1.1\r\nHost: h\r\n\r\n";
        let (r, _) = parse(s).unwrap().unwrap();
        assert_eq!((r.host, r.path, r.query), (Some("h"), "/", Some("q")));
        let s = "GET https://h HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(parse(s).unwrap().unwrap().0.path, "/");
        let s = req("").replacen("GET /ws?x=1", "GET http://a.b/ws", 1);
        let (r, _) = parse(&s).unwrap().unwrap();
        assert_eq!((r.host, r.path), (Some("a.b"), "/ws"));
        assert!(r.websocket.is_some());
    }

    #[test]
    fn head_at_exactly_the_limit_is_refused() {
        let limits = HandshakeLimits {
            max_header_bytes: 64,
            max_headers: 8,
        };
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(64));
        let e = parse_request(&partial.as_bytes()[..64], &limits, PROTOS).unwrap_err();
        assert_eq!(e, HandshakeError::HeadersTooLarge(64));
        assert_eq!(
            parse_request(&partial.as_bytes()[..63], &limits, PROTOS),
            Ok(None)
        );
    }

    #[test]
    fn no_protocol_selected_when_none_matches() {
        let s = req("Sec-WebSocket-Protocol: mqtt\r\n");
        let (r, _) = parse(&s).unwrap().unwrap();
        let ws = r.websocket.unwrap();
        assert_eq!(ws.protocol, None);
        assert!(ws.protocols_offered);
    }
}
