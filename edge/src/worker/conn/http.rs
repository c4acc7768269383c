//! The request head of a new connection, answered: `/healthz`, `/metrics` and the demo
//! page in plain HTTP, `/echo` and `/ws` upgraded to a WebSocket (or refused: 503 when
//! full or draining, 400 for a bad request or an unsupported subprotocol), anything
//! else 404. A `/ws` upgrade from a browser origin not on the allow-list gets 403; with
//! auth on, its token (`Authorization: Bearer`, or the `token` query parameter where
//! the config allows it) is verified here: a bad one gets 401 with the reason; none
//! where one is required opens the connection pending its `auth` message. A plain
//! answer is the connection's last: it closes once that is flushed. A connection from
//! a balancer configured to send the PROXY protocol starts with that header (else 400);
//! the client it names is the one the per-address limits count. An upgrade offering
//! `permessage-deflate` gets it, when the config allows, on the terms of
//! `wire::handshake::deflate` (no context takeover either way).

use wire::frame::{Decoder, Limits};
use wire::handshake::deflate::{DeflatePolicy, negotiate};
use wire::handshake::{
    HandshakeLimits, Request, Status, parse_request, write_response, write_switching_protocols,
    write_unauthorized,
};
use wire::proxy::{ProxyHeader, parse_proxy_header};

use super::{Conn, Ctx, PROTOCOL_FB, PROTOCOL_JSON_COMPACT, PROTOCOLS, Proto};
use crate::auth::origin::allowed as allowed_origin;
use crate::auth::token::Identity;
use crate::config::AuthMode;
use crate::metrics::WorkerMetrics;
use crate::uring::Chunk;
use crate::worker::conn::life::{Life, Proxy};
use crate::worker::per_ip::Over;
use crate::worker::timer::{Tick, deadline_after};

/// The page served at `/`.
const DEMO_PAGE: &str = include_str!("../../../assets/index.html");

/// The TypeScript client's browser build, which the page uses, served at
/// `/ringline.min.js` (`clients/js`, `npm run bundle`; `edge/tests/js_client.rs`
/// checks that this copy is the current build).
const CLIENT_JS: &str = include_str!("../../../assets/ringline.min.js");

/// Where a request goes.
enum Route {
    /// Answered in plain HTTP, then closed.
    Answered,
    /// Upgraded: the bytes after the head, what its messages are, who its token says
    /// it is, and the window it compresses with if it negotiated `permessage-deflate`.
    Upgraded(Vec<u8>, Proto, Admission, Option<u8>),
}

/// How an upgrade stands with the verifier.
enum Admission {
    /// Auth is off, or optional and no token came (the anonymous grant), or `/echo`.
    Free,
    /// Auth required and no token came: only an `auth` message is taken, in time.
    Pending,
    /// A valid token, good for this many more seconds.
    Verified(Box<Identity>, u64),
}

impl Conn {
    /// The head so far may be complete: answer it.
    pub(super) fn on_head(&mut self, now: Tick, ctx: &mut Ctx<'_>) {
        let full = self.full;
        let Life::Handshake { head, proxy } = &mut self.life else {
            return;
        };
        let mut reply = Vec::new();
        match read_proxy_header(head, proxy.as_deref_mut()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(()) => {
                WorkerMetrics::add(&ctx.metrics.rejected_bad, 1);
                let body = b"bad PROXY header\n";
                write_response(&mut reply, Status::BadRequest, "text/plain", body, None);
                self.out.push_owned(reply);
                self.closing(false, now);
                return;
            }
        }
        let client = match proxy.as_deref() {
            Some(Proxy::Client(ip)) => *ip,
            _ => None,
        };
        if ctx.cfg.http_api && is_api_request(head) {
            // Its own limits apply (a reconnecting event stream's Last-Event-ID may be
            // long): it is read as the API reads, from the start.
            let head = std::mem::take(head);
            self.start_api(head, full, client, now, ctx);
            return;
        }
        let limits = HandshakeLimits::default();
        // Parse only once the head can be complete (or too big).
        if !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < limits.max_header_bytes {
            return;
        }
        let (head, proxy) = (std::mem::take(head), proxy.take());
        let route = match parse_request(&head, &limits, &PROTOCOLS) {
            Ok(None) => {
                self.life = Life::Handshake { head, proxy };
                return;
            }
            Err(e) => {
                WorkerMetrics::add(&ctx.metrics.rejected_bad, 1);
                e.write_response(&mut reply);
                Route::Answered
            }
            Ok(Some((req, _))) => {
                let source = Source {
                    fd: &self.fd,
                    client,
                };
                route(&req, full, source, &mut reply, ctx)
            }
        };
        self.out.push_owned(reply);
        match route {
            Route::Upgraded(mut rest, proto, admission, deflate) => {
                self.upgrade(proto, deflate, now, ctx);
                match admission {
                    Admission::Free => {}
                    Admission::Pending => {
                        let secs = crate::worker::secs(ctx.cfg.auth_timeout);
                        self.auth_by = deadline_after(now, secs);
                    }
                    Admission::Verified(identity, secs) => {
                        if ctx.cfg.inbox {
                            ctx.hub.open_inbox(ctx.me, identity.subject());
                        }
                        self.identity = Some(identity);
                        self.auth_by = super::auth::expiry(now, secs);
                    }
                }
                self.watch_auth_by(now);
                if !rest.is_empty() {
                    self.on_frames(&mut rest, now, ctx);
                }
            }
            Route::Answered => self.closing(false, now),
        }
    }

    /// The handshake is done: frames from now on (compressed ones too, if `deflate`
    /// says with which window ours are), and the heartbeat instead of the handshake
    /// deadline.
    fn upgrade(&mut self, proto: Proto, deflate: Option<u8>, now: Tick, ctx: &Ctx<'_>) {
        let limits = Limits {
            max_frame: ctx.cfg.max_message,
            max_message: ctx.cfg.max_message,
        };
        let mut dec = Decoder::server(limits);
        if let Some(window) = deflate {
            dec.enable_deflate();
            self.deflate_window = window;
        }
        self.life = Life::Open { dec, partial: None };
        self.proto = proto;
        self.budget = super::rate::Budget::new(ctx.cfg.messages);
        // The first ping comes up to half a heartbeat early, spread by slot, so that
        // connections accepted in one burst are not all pinged on one tick (one burst
        // of sends, and of the memory they take, every heartbeat).
        let hb = crate::worker::secs(ctx.cfg.heartbeat);
        let spread = ctx.me.0.wrapping_mul(0x9E37_79B9).rotate_left(16) % (hb / 2 + 1);
        self.last_ping = now.saturating_sub(spread);
        self.set_due(self.last_ping + hb);
    }
}

/// Whether the request line so far is whole and asks for `/v1/...` (the HTTP API).
fn is_api_request(head: &[u8]) -> bool {
    let Some(end) = head.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let mut parts = head[..end].split(|&b| b == b' ');
    parts.next();
    parts
        .next()
        .is_some_and(|target| target.starts_with(b"/v1/"))
}

/// From a balancer, its PROXY header comes first: take it off `head` once whole.
/// `Ok(true)`: the request head follows (or there was no header to wait for);
/// `Ok(false)`: wait for more; `Err`: not a PROXY header (400).
fn read_proxy_header(head: &mut Vec<u8>, proxy: Option<&mut Proxy>) -> Result<bool, ()> {
    let Some(p) = proxy.filter(|p| **p == Proxy::Awaiting) else {
        return Ok(true);
    };
    match parse_proxy_header(head) {
        Ok(None) => Ok(false),
        Ok(Some((h, used))) => {
            head.drain(..used.min(head.len()));
            *p = Proxy::Client(match h {
                ProxyHeader::Proxied { source, .. } => Some(source.ip().to_canonical()),
                ProxyHeader::Local => None,
            });
            Ok(true)
        }
        Err(_) => Err(()),
    }
}

/// Where a connection comes from, for the per-address limits: its socket's peer, or
/// the client a balancer's PROXY header named.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) fd: &'a std::os::fd::OwnedFd,
    pub(super) client: Option<std::net::IpAddr>,
}

/// Answer a parsed request into `reply`, or accept its upgrade (`full`: every worker
/// was full when it came, so an upgrade gets 503).
fn route(
    req: &Request<'_>,
    full: bool,
    source: Source<'_>,
    reply: &mut Vec<u8>,
    ctx: &mut Ctx<'_>,
) -> Route {
    let m = ctx.metrics;
    let path = req.path;
    let Some(up) = req.websocket.as_ref() else {
        answer_plain(path, reply, ctx);
        return Route::Answered;
    };
    let proto = match path {
        "/echo" | "/ws" if full || ctx.draining => {
            WorkerMetrics::add(&m.rejected_full, 1);
            write_response(
                reply,
                Status::ServiceUnavailable,
                "text/plain",
                b"full\n",
                Some(5),
            );
            return Route::Answered;
        }
        "/echo" if ctx.cfg.echo => Proto::Echo,
        "/ws" => match up.protocol {
            Some(PROTOCOL_FB) => Proto::Fb,
            Some(PROTOCOL_JSON_COMPACT) => Proto::JsonCompact,
            Some(_) => Proto::Json,
            None if !up.protocols_offered => Proto::Json,
            None => {
                WorkerMetrics::add(&m.rejected_bad, 1);
                write_response(
                    reply,
                    Status::BadRequest,
                    "text/plain",
                    b"unsupported subprotocol: offer ringline.v1.json, ringline.v2.json or ringline.v1.fb\n",
                    None,
                );
                return Route::Answered;
            }
        },
        _ => {
            WorkerMetrics::add(&m.http_requests, 1);
            write_response(reply, Status::NotFound, "text/plain", b"not found\n", None);
            return Route::Answered;
        }
    };
    if let Err(over) = limit_source(req.x_forwarded_for, source, ctx) {
        WorkerMetrics::add(&m.rejected_rate, 1);
        let body: &[u8] = match over {
            Over::Connections => b"too many connections from this address\n",
            Over::Rate => b"too many new connections from this address\n",
        };
        write_response(reply, Status::TooManyRequests, "text/plain", body, Some(1));
        return Route::Answered;
    }
    let Some(admission) = admit(req, proto, reply, ctx) else {
        ctx.per_ip
            .release((ctx.worker, ctx.me), std::time::Instant::now());
        return Route::Answered;
    };
    WorkerMetrics::add(&m.handshakes, 1);
    let protocol = if proto == Proto::Echo {
        None
    } else {
        up.protocol
    };
    let policy = DeflatePolicy {
        enabled: ctx.cfg.compression,
    };
    let deflate = negotiate(up.extensions.as_deref(), policy);
    let extensions = deflate.map(|d| d.response());
    write_switching_protocols(reply, &up.accept, protocol, extensions.as_deref());
    let window = deflate.map(|d| d.server_window_bits);
    Route::Upgraded(req.rest.to_vec(), proto, admission, window)
}

/// Count an upgrade against its source address's limits: the client a balancer's
/// PROXY header named, else the peer, or the first `X-Forwarded-For` address when the
/// peer is a trusted proxy. Loopback sources are not counted unless the config says so.
pub(super) fn limit_source(
    x_forwarded_for: Option<&str>,
    from: Source<'_>,
    ctx: &Ctx<'_>,
) -> Result<(), Over> {
    let Some(peer) = from.client.or_else(|| crate::uring::net::peer_ip(from.fd)) else {
        return Ok(());
    };
    let cfg = ctx.cfg;
    let source = if cfg.trusted_proxies.contains(&peer) {
        x_forwarded_for
            .and_then(|x| x.split(',').next())
            .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .map_or(peer, |a| a.to_canonical())
    } else {
        peer
    };
    if source.is_loopback() && !cfg.limit_loopback {
        return Ok(());
    }
    ctx.per_ip
        .admit(source, (ctx.worker, ctx.me), std::time::Instant::now())
}

/// A plain HTTP request (no upgrade), answered into `reply`.
pub(super) fn answer_plain(path: &str, reply: &mut Vec<u8>, ctx: &Ctx<'_>) {
    WorkerMetrics::add(&ctx.metrics.http_requests, 1);
    let (status, kind, body): (_, _, &[u8]) = match path {
        "/healthz" if ctx.draining => (Status::ServiceUnavailable, "text/plain", b"draining\n"),
        "/healthz" => (Status::Ok, "text/plain", b"ok\n"),
        // A small page to try Ringline by hand (it speaks `/ws`).
        "/" => (Status::Ok, "text/html; charset=utf-8", DEMO_PAGE.as_bytes()),
        "/ringline.min.js" => (
            Status::Ok,
            "text/javascript; charset=utf-8",
            CLIENT_JS.as_bytes(),
        ),
        "/metrics" => {
            let text = crate::metrics::render(ctx.all);
            write_response(
                reply,
                Status::Ok,
                "text/plain; version=0.0.4",
                text.as_bytes(),
                None,
            );
            return;
        }
        _ => (Status::NotFound, "text/plain", b"not found\n"),
    };
    write_response(reply, status, kind, body, None);
}

/// A `/ws` upgrade's origin and token checked: how it stands (`/echo` touches no
/// key: free), or `None` with the 403 or 401 written into `reply`.
fn admit(req: &Request<'_>, proto: Proto, reply: &mut Vec<u8>, ctx: &Ctx<'_>) -> Option<Admission> {
    if proto == Proto::Echo {
        return Some(Admission::Free);
    }
    let m = ctx.metrics;
    if !allowed_origin(&ctx.cfg.allowed_origins, req.origin) {
        WorkerMetrics::add(&m.rejected_origin, 1);
        write_response(
            reply,
            Status::Forbidden,
            "text/plain",
            b"origin not allowed\n",
            None,
        );
        return None;
    }
    match authenticate(req, ctx) {
        Ok(identity) => Some(identity),
        Err(reason) => {
            WorkerMetrics::add(&m.rejected_unauthorized, 1);
            write_unauthorized(reply, reason);
            None
        }
    }
}

/// How the upgrade's token stands; `Err` with the reason for a 401.
fn authenticate(req: &Request<'_>, ctx: &Ctx<'_>) -> Result<Admission, &'static str> {
    let (mode, Some(verifier)) = (ctx.cfg.auth, ctx.auth) else {
        return Ok(Admission::Free);
    };
    let token = match super::api::bearer(req.authorization) {
        Some(t) => Some(std::borrow::Cow::Borrowed(t)),
        None if ctx.cfg.auth_query_token => query_token(req.query)?,
        None => None,
    };
    match (token, mode) {
        (Some(t), _) => {
            let id = verifier.verify(&t).map_err(|e| e.reason())?;
            let secs = verifier.remaining(&id);
            Ok(Admission::Verified(Box::new(id), secs))
        }
        (None, AuthMode::Required) => Ok(Admission::Pending),
        (None, _) => Ok(Admission::Free),
    }
}

/// The `token` parameter of a request's query (RFC 6750 §2.3's `access_token` is
/// taken too), percent-decoded; `Err` when it is there twice or does not decode.
pub(super) fn query_token(
    query: Option<&str>,
) -> Result<Option<std::borrow::Cow<'_, str>>, &'static str> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "token" || name == "access_token" {
            if found.is_some() {
                return Err("more than one token");
            }
            found = Some(wire::api::percent_decode(value, false).ok_or("malformed token")?);
        }
    }
    Ok(found)
}

impl super::SendQueue {
    /// Append a buffer of this connection's own as one chunk.
    pub(super) fn push_owned(&mut self, v: Vec<u8>) {
        self.bytes += v.len();
        self.chunks.push_back(Chunk::Owned(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_token_is_found_decoded_and_single() {
        assert_eq!(query_token(None), Ok(None));
        assert_eq!(query_token(Some("x=1")), Ok(None));
        assert_eq!(
            query_token(Some("token=a.b.c")).unwrap().as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            query_token(Some("x=1&access_token=a.b%2Dc"))
                .unwrap()
                .as_deref(),
            Some("a.b-c")
        );
        assert_eq!(query_token(Some("token")), Ok(Some("".into())));
        assert!(query_token(Some("token=a&token=b")).is_err());
        assert!(query_token(Some("token=%zz")).is_err());
        assert!(query_token(Some("token=%ff")).is_err());
        assert!(query_token(Some("token=%4")).is_err());
    }
}
