//! A keep-alive connection of the HTTP API (`/v1/...`; the codec is [`wire::api`]).
//! Received bytes collect in the connection's buffer; each whole request (head, then
//! a body of `Content-Length` bytes, at most `max_message`) becomes a [`Slot`]:
//! answered at once (refused, or a page that needs no store), or sent to the
//! [`Hub`](crate::hub::Hub) as the client protocol's requests, numbered on from the
//! connection's last id, and filled by the hub's answers ([`Conn::handle_api_answer`]).
//! Answers go out in request order (pipelining), at most [`MAX_PIPELINE`] requests in
//! flight; the bytes of later ones wait unread in the buffer until there is room. A
//! request with `Expect: 100-continue` whose head is whole gets `100 (Continue)` as
//! soon as every earlier answer is out, without waiting for its content. A
//! request asking to close, a framing error, or a drain ends the connection once every
//! earlier answer is out; one idle for [`IDLE_TICKS`], or whose request is not whole
//! within [`REQUEST_TICKS`], is closed. Tokens are checked per request as on `/ws` (the last one
//! verified is remembered until it expires), and every request spends from the
//! connection's message budget.

use std::collections::VecDeque;

use wire::api::{self as http_api, ApiError, Head};
use wire::client::{ErrorCode, Response};
use wire::handshake::HandshakeLimits;

use super::rate::Verdict;
use super::{Conn, Ctx, Proto};
use crate::config::AuthMode;
use crate::metrics::WorkerMetrics;
use crate::worker::conn::life::Life;
use crate::worker::timer::{Tick, deadline_after};

/// Most requests of one connection waiting for their answers.
pub const MAX_PIPELINE: usize = 32;

/// The bounds of a request head: larger than an upgrade's, for the `Last-Event-ID` of
/// an event stream of several subscriptions.
pub const API_LIMITS: HandshakeLimits = HandshakeLimits {
    max_header_bytes: 64 * 1024,
    max_headers: 32,
};

/// Ticks an idle keep-alive connection stays open (at least).
pub const IDLE_TICKS: Tick = 30;

/// Ticks a request may take to arrive whole once its first byte came (at least).
pub const REQUEST_TICKS: Tick = 10;

/// The OpenAPI description of the HTTP API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../assets/openapi.json");

/// A keep-alive HTTP API connection's own state (boxed in [`Life::Api`]).
#[derive(Debug, Default)]
pub struct Api {
    /// Bytes received and not yet taken as a request.
    buf: Vec<u8>,
    /// Requests taken, oldest first, until their answers are sent.
    slots: VecDeque<Slot>,
    /// The id the next request to the hub gets.
    next_id: u64,
    /// No more requests are taken: the last one said `Connection: close`, or could not
    /// be framed, or the edge is draining.
    last: bool,
    /// When the request now arriving started (`None`: none is): it must be whole within the
    /// handshake timeout.
    started: Option<Tick>,
    /// The last token verified, and the tick it expires (its identity is the
    /// connection's).
    token: Option<(String, Tick)>,
    /// The client a balancer's PROXY header named, if any.
    client: Option<std::net::IpAddr>,
    /// Counted against its source address's limits (at its first whole request,
    /// whose `X-Forwarded-For` a trusted balancer's connection is counted by).
    counted: bool,
    /// The request now arriving had its head judged for a `100 (Continue)` (and was sent
    /// one if owed).
    continue_judged: bool,
    /// The largest body taken (`max_message`).
    max_body: usize,
}

/// One request, from the time it is taken until its answer is sent.
#[derive(Debug)]
struct Slot {
    /// The id of its first request to the hub.
    first: u64,
    /// One answer per request to the hub, as they come.
    answers: Vec<Option<Response<'static>>>,
    /// A batch publish (one body of every answer).
    batch: bool,
    keep_alive: bool,
    /// The whole HTTP answer, once it can be written.
    ready: Option<Vec<u8>>,
}

impl Slot {
    /// Answered at once.
    fn ready(bytes: Vec<u8>, keep_alive: bool) -> Self {
        Self {
            first: 0,
            answers: Vec::new(),
            batch: false,
            keep_alive,
            ready: Some(bytes),
        }
    }

    /// An `error` of `code` the edge answers itself, at once.
    fn refused(code: ErrorCode, message: &'static str, keep_alive: bool) -> Self {
        let mut v = Vec::new();
        http_api::write_answer(&mut v, &refusal(code, message), keep_alive);
        Self::ready(v, keep_alive)
    }

    /// `e`, answered at once.
    fn error(e: &ApiError, keep_alive: bool) -> Self {
        let mut v = Vec::new();
        http_api::write_error(&mut v, e, keep_alive);
        Self::ready(v, keep_alive && !e.closes())
    }

    /// Once every answer is in: the HTTP answer written.
    fn render_if_done(&mut self) {
        if self.ready.is_some() || self.answers.iter().any(Option::is_none) {
            return;
        }
        let answers: Vec<Response<'static>> = self.answers.drain(..).flatten().collect();
        let mut v = Vec::new();
        match answers.first() {
            Some(one) if !self.batch => http_api::write_answer(&mut v, one, self.keep_alive),
            _ => http_api::write_batch(&mut v, &answers, self.keep_alive),
        }
        self.ready = Some(v);
    }
}

/// A whole request at the start of a buffer.
#[derive(Debug)]
struct Framed<'a> {
    head: Head<'a>,
    body: &'a [u8],
    /// The bytes it takes, head and body.
    len: usize,
}

/// The request at the start of `buf`, if it is all there; `Ok(None)` while it is not.
fn next_request(buf: &[u8], max_body: usize) -> Result<Option<Framed<'_>>, ApiError> {
    let Some((head, n)) = http_api::parse_head(buf, &API_LIMITS)? else {
        return Ok(None);
    };
    if head.content_length > max_body {
        return Err(ApiError::BodyTooLarge {
            len: head.content_length,
            max: max_body,
        });
    }
    let len = n + head.content_length;
    Ok(buf.get(n..len).map(|body| Framed { head, body, len }))
}

/// An `error` answer of the edge's own (no request id).
pub(super) fn refusal(code: ErrorCode, message: &'static str) -> Response<'static> {
    Response::Error {
        id: None,
        code,
        message: message.into(),
        version: None,
    }
}

/// When the timer must look at an API connection last heard from at `last_rx`: when
/// it would be idle too long, or its request arriving would be too slow, whichever
/// comes first, and never before the next tick.
fn api_deadline(api: &Api, last_rx: Tick, now: Tick) -> Tick {
    let mut next = deadline_after(last_rx, IDLE_TICKS);
    if let Some(started) = api.started {
        next = next.min(deadline_after(started, REQUEST_TICKS));
    }
    next.max(now + 1)
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1: the scheme is
/// case-insensitive).
pub(super) fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Conn {
    /// The request head so far is an HTTP API request: the connection becomes a
    /// keep-alive API connection, its bytes so far the start of its buffer (`full`:
    /// every worker was full when it came: 503, and it closes).
    pub(super) fn start_api(
        &mut self,
        bytes: Vec<u8>,
        full: bool,
        client: Option<std::net::IpAddr>,
        now: Tick,
        ctx: &mut Ctx<'_>,
    ) {
        self.life = Life::Api(Box::new(Api {
            started: Some(now),
            next_id: 1,
            client,
            max_body: ctx.cfg.max_message,
            ..Api::default()
        }));
        self.proto = Proto::Api;
        self.budget = super::rate::Budget::new(ctx.cfg.messages);
        if full {
            WorkerMetrics::add(&ctx.metrics.rejected_full, 1);
            let full = refusal(
                ErrorCode::Overloaded,
                "every worker is full: try another edge",
            );
            let mut v = Vec::new();
            http_api::write_answer(&mut v, &full, false);
            self.out.push_owned(v);
            self.closing(false, now);
            return;
        }
        self.on_api_bytes(&bytes, now, ctx);
    }

    /// Bytes of requests arrived.
    pub(super) fn on_api_bytes(&mut self, data: &[u8], now: Tick, ctx: &mut Ctx<'_>) {
        let Life::Api(api) = &mut self.life else {
            return;
        };
        if api.last {
            // Nothing more is taken (a request said close, or could not be framed):
            // read and dropped.
            return;
        }
        if api.buf.len() + data.len() > ctx.cfg.max_message + API_LIMITS.max_header_bytes {
            // Pipelined further ahead than one whole request at its largest, with the
            // pipeline full: refused, and the connection closes after the answers
            // before it.
            WorkerMetrics::add(&ctx.metrics.api_refused, 1);
            api.buf = Vec::new();
            api.last = true;
            api.slots
                .push_back(Slot::error(&ApiError::PipelineFull, false));
            self.api_flush(now);
            return;
        }
        if api.buf.is_empty() {
            api.started = Some(now);
        }
        api.buf.extend_from_slice(data);
        self.api_read(now, ctx);
    }

    /// Take whole requests from the buffer while there is room in the pipeline; send
    /// what answers are ready.
    pub(crate) fn api_read(&mut self, now: Tick, ctx: &mut Ctx<'_>) {
        let Life::Api(api) = &mut self.life else {
            return;
        };
        // Requests are read in place; what they took is dropped once, at the end.
        let mut buf = std::mem::take(&mut api.buf);
        let mut at = 0;
        loop {
            let Life::Api(api) = &mut self.life else {
                // It became an event stream: what follows is not read.
                return;
            };
            if api.last || api.slots.len() >= MAX_PIPELINE {
                break;
            }
            match next_request(buf.get(at..).unwrap_or_default(), ctx.cfg.max_message) {
                Ok(None) => break,
                Ok(Some(req)) => {
                    at += req.len;
                    api.started = (at < buf.len()).then_some(now);
                    api.continue_judged = false;
                    let Some(slot) = self.api_request(&req.head, req.body, now, ctx) else {
                        return;
                    };
                    if let Life::Api(api) = &mut self.life {
                        api.last |= !slot.keep_alive;
                        api.slots.push_back(slot);
                    }
                }
                Err(e) => {
                    WorkerMetrics::add(&ctx.metrics.api_refused, 1);
                    at = buf.len();
                    api.last = true;
                    api.slots.push_back(Slot::error(&e, false));
                }
            }
        }
        buf.drain(..at.min(buf.len()));
        if let Life::Api(api) = &mut self.life {
            api.buf = buf;
        }
        self.api_flush(now);
    }

    /// One whole request, taken: its slot (`None`: the connection became an event
    /// stream).
    fn api_request(
        &mut self,
        head: &Head<'_>,
        body: &[u8],
        now: Tick,
        ctx: &mut Ctx<'_>,
    ) -> Option<Slot> {
        if let Some(slot) = self.api_count_source(head, ctx) {
            return Some(slot);
        }
        // A HEAD's answer here carries a body: the connection then closes, so that
        // nothing reads that body as the next answer (RFC 9110 §9.3.2).
        let keep_alive = head.keep_alive && !ctx.draining && head.method != "HEAD";
        WorkerMetrics::add(&ctx.metrics.api_requests, 1);
        if head.path == "/v1/events" {
            let pipelined = matches!(&self.life, Life::Api(api) if !api.slots.is_empty());
            return match self.start_events(head, pipelined, keep_alive, now, ctx) {
                Ok(()) => None,
                Err(super::events::Refused(bytes, keep)) => Some(Slot::ready(bytes, keep)),
            };
        }
        Some(self.api_call(head, body, keep_alive, now, ctx))
    }

    /// At its first whole request, the connection is counted against its source
    /// address's limits as a WebSocket is; over them: 429, and it closes.
    fn api_count_source(&mut self, head: &Head<'_>, ctx: &Ctx<'_>) -> Option<Slot> {
        let Life::Api(api) = &mut self.life else {
            return None;
        };
        if api.counted {
            return None;
        }
        let source = super::http::Source {
            fd: &self.fd,
            client: api.client,
        };
        match super::http::limit_source(head.x_forwarded_for, source, ctx) {
            Ok(()) => {
                api.counted = true;
                None
            }
            Err(_) => {
                WorkerMetrics::add(&ctx.metrics.rejected_rate, 1);
                let message = "too many connections from this address";
                Some(Slot::refused(ErrorCode::RateLimited, message, false))
            }
        }
    }

    /// A request of the API proper (or another page): its slot.
    fn api_call(
        &mut self,
        head: &Head<'_>,
        body: &[u8],
        keep_alive: bool,
        now: Tick,
        ctx: &mut Ctx<'_>,
    ) -> Slot {
        if !head.path.starts_with("/v1/") {
            // The edge's other pages, answered as on a new connection (and closing).
            let mut v = Vec::new();
            super::http::answer_plain(head.path, &mut v, ctx);
            return Slot::ready(v, false);
        }
        if head.path == "/v1/openapi.json" {
            let mut v = Vec::new();
            let page = OPENAPI.as_bytes();
            let status = wire::handshake::Status::Ok;
            wire::handshake::write_response(&mut v, status, "application/json", page, None);
            return Slot::ready(v, false);
        }
        if let Some(refused) = self.api_admit(head, now, ctx) {
            let mut v = Vec::new();
            http_api::write_answer(&mut v, &refused, keep_alive);
            return Slot::ready(v, keep_alive);
        }
        let Life::Api(api) = &mut self.life else {
            return Slot::error(&ApiError::Malformed("state"), false);
        };
        let first = api.next_id;
        let call = match http_api::call(head, body, first) {
            Ok(call) => call,
            Err(e) => {
                WorkerMetrics::add(&ctx.metrics.api_refused, 1);
                return Slot::error(&e, keep_alive);
            }
        };
        let batch = matches!(call, http_api::Call::Batch(_));
        let requests = call.requests();
        // Each message of a batch spends from the budget like a message of its own.
        let budget = &mut self.budget;
        if (1..requests.len()).any(|_| budget.spend(ctx.cfg.messages) != Verdict::Take) {
            WorkerMetrics::add(&ctx.metrics.rate_limited, 1);
            let message = "this batch is over this connection's message rate: slow down";
            return Slot::refused(ErrorCode::RateLimited, message, keep_alive);
        }
        api.next_id += requests.len() as u64;
        let mut slot = Slot {
            first,
            answers: vec![None; requests.len()],
            batch,
            keep_alive,
            ready: None,
        };
        self.api_send(requests, &mut slot, ctx);
        slot.render_if_done();
        slot
    }

    /// The message budget and the token: `Some` refusal (`rate_limited`,
    /// `unauthorized`) when the request may not go on.
    fn api_admit(
        &mut self,
        head: &Head<'_>,
        now: Tick,
        ctx: &mut Ctx<'_>,
    ) -> Option<Response<'static>> {
        let refuse = |code, message| Some(refusal(code, message));
        match self.budget.spend(ctx.cfg.messages) {
            Verdict::Take => {}
            Verdict::Refuse | Verdict::Close => {
                WorkerMetrics::add(&ctx.metrics.rate_limited, 1);
                return refuse(
                    ErrorCode::RateLimited,
                    "over this connection's message rate: slow down",
                );
            }
        }
        match self.api_identity(head, None, now, ctx) {
            Ok(_) => None,
            Err(reason) => {
                WorkerMetrics::add(&ctx.metrics.rejected_unauthorized, 1);
                refuse(ErrorCode::Unauthorized, reason)
            }
        }
    }

    /// The request's token (`Authorization: Bearer`, else `cookie`, else the query
    /// where the config allows) made the connection's identity (verified unless it is
    /// the one last verified and not yet expired); none where auth is optional:
    /// anonymous. `Ok`: the tick the token expires (0: no token).
    pub(super) fn api_identity(
        &mut self,
        head: &Head<'_>,
        cookie: Option<&str>,
        now: Tick,
        ctx: &Ctx<'_>,
    ) -> Result<Tick, &'static str> {
        let (mode, Some(verifier)) = (ctx.cfg.auth, ctx.auth) else {
            return Ok(0);
        };
        let Life::Api(api) = &mut self.life else {
            return Err("not an API connection");
        };
        let query;
        let token = match bearer(head.authorization).or(cookie) {
            Some(t) => Some(t),
            None if ctx.cfg.auth_query_token => {
                query = super::http::query_token(head.query)?;
                query.as_deref()
            }
            None => None,
        };
        let Some(token) = token else {
            api.token = None;
            self.identity = None;
            return match mode {
                AuthMode::Required => Err("a token is required: Authorization: Bearer <JWT>"),
                _ => Ok(0),
            };
        };
        if let Some((_, until)) = api
            .token
            .as_ref()
            .filter(|(t, until)| t == token && now < *until)
        {
            return Ok(*until);
        }
        api.token = None;
        self.identity = None;
        let id = verifier.verify(token).map_err(|e| e.reason())?;
        let until = super::auth::expiry(now, verifier.remaining(&id));
        api.token = Some((token.to_owned(), until));
        self.identity = Some(Box::new(id));
        Ok(until)
    }

    /// Each request that the connection's standing allows goes to the hub; the others
    /// are answered in `slot` (`forbidden`).
    fn api_send(
        &mut self,
        requests: Vec<wire::client::Request<'_>>,
        slot: &mut Slot,
        ctx: &mut Ctx<'_>,
    ) {
        for (answer, req) in slot.answers.iter_mut().zip(requests) {
            match self.permits(&req, ctx) {
                Ok(()) => {
                    let subject = self.identity.as_ref().map_or("", |i| i.subject());
                    ctx.hub.request(ctx.me, req, subject);
                }
                Err((code, message)) => {
                    WorkerMetrics::add(&ctx.metrics.denied, 1);
                    *answer = Some(Response::Error {
                        id: Some(req.id()),
                        code,
                        message: message.into(),
                        version: None,
                    });
                }
            }
        }
    }

    /// The hub's answer to one of this connection's requests. `true`: requests wait
    /// in the buffer and the pipeline has room again (call [`Conn::api_read`]).
    pub fn handle_api_answer(&mut self, msg: &Response<'static>, now: Tick) -> bool {
        let Self { life, out, .. } = self;
        let Life::Api(api) = life else {
            return false;
        };
        let Some(id) = msg.id() else {
            return false;
        };
        let found = api.slots.iter().position(|s| {
            id.checked_sub(s.first)
                .and_then(|i| s.answers.get(usize::try_from(i).ok()?))
                .is_some_and(Option::is_none)
        });
        if let Some((k, s)) = found.and_then(|k| Some((k, api.slots.get_mut(k)?))) {
            if s.batch {
                if let Some(a) = s.answers.get_mut((id - s.first) as usize) {
                    *a = Some(msg.clone());
                }
                s.render_if_done();
            } else if k == 0 {
                // The next answer out: written straight into the send queue.
                let keep_alive = s.keep_alive;
                api.slots.pop_front();
                out.push_with(&mut |v| http_api::write_answer(v, msg, keep_alive));
            } else {
                let mut v = Vec::new();
                http_api::write_answer(&mut v, msg, s.keep_alive);
                s.answers.clear();
                s.ready = Some(v);
            }
        }
        let room = api.slots.len() < MAX_PIPELINE && !api.buf.is_empty() && !api.last;
        self.api_flush(now);
        room && matches!(self.life, Life::Api(_))
    }

    /// Send the answers that are ready, in request order; once the last one is out
    /// (a request said close), close.
    fn api_flush(&mut self, now: Tick) {
        let Life::Api(api) = &mut self.life else {
            return;
        };
        while let Some(bytes) = api.slots.front_mut().and_then(|s| s.ready.take()) {
            api.slots.pop_front();
            self.out.push_owned(bytes);
        }
        // A client waiting to send its content is told to go on at once, once every
        // earlier answer is out (a 1xx before them would be taken as theirs).
        if api.slots.is_empty() && !api.buf.is_empty() && !api.last && !api.continue_judged {
            let owed = http_api::continue_owed(&api.buf, &API_LIMITS, api.max_body);
            api.continue_judged = owed.is_some();
            if owed == Some(true) {
                self.out
                    .push_with(&mut |v| v.extend_from_slice(http_api::CONTINUE));
            }
        }
        if api.last && api.slots.is_empty() {
            // Half-close, then read and drop what still comes for a moment: closing
            // with unread input would reset the connection under the last answer
            // (RFC 9112 §9.6).
            self.closing(true, now);
            return;
        }
        let due = api_deadline(api, self.last_rx, now);
        self.set_due(due);
    }

    /// The timer of an API connection fired at `now`: a request started too long ago
    /// and still not whole, or a connection idle too long, is closed.
    pub(super) fn api_timer(&mut self, now: Tick) {
        let Life::Api(api) = &mut self.life else {
            return;
        };
        let slow = api
            .started
            .is_some_and(|s| now >= deadline_after(s, REQUEST_TICKS));
        let idle = api.slots.is_empty() && now >= deadline_after(self.last_rx, IDLE_TICKS);
        if slow || idle {
            self.cancel();
            return;
        }
        let due = api_deadline(api, self.last_rx, now);
        self.set_due(due);
    }

    /// Asked to close (a drain): take no more requests; close once the answers to
    /// those taken are out.
    pub(super) fn api_close(&mut self, now: Tick) {
        if let Life::Api(api) = &mut self.life {
            api.last = true;
            api.buf = Vec::new();
        }
        self.api_flush(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_whole_one_at_a_time() {
        let mut buf = b"PUT /v1/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n12".to_vec();
        assert!(matches!(next_request(&buf, 100), Ok(None)));
        buf.extend_from_slice(b"3GET /v1/keys/k HTTP/1.1\r\nHost: x\r\n\r\nGET");
        let first = next_request(&buf, 100).unwrap().unwrap();
        assert_eq!((first.head.method, first.body), ("PUT", &b"123"[..]));
        let rest = &buf[first.len..];
        let second = next_request(rest, 100).unwrap().unwrap();
        assert_eq!(
            (second.head.method, second.body.len(), second.len),
            ("GET", 0, 36)
        );
        assert_eq!(&rest[second.len..], b"GET");
        assert!(matches!(next_request(&rest[second.len..], 100), Ok(None)));
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_is_read() {
        let buf = b"PUT /v1/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n".to_vec();
        assert!(matches!(
            next_request(&buf, 100),
            Err(ApiError::BodyTooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(Some("Bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer(Some("bearer  a.b.c ")), Some("a.b.c"));
        assert_eq!(bearer(Some("Basic xyz")), None);
        assert_eq!(bearer(None), None);
    }
}
