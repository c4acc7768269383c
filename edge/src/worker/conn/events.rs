//! A Server-Sent Events stream (`GET /v1/events?sub=..&prefix=..`, up to 16
//! subscriptions; the codec is [`wire::api::sse`]). It starts as an HTTP API request on a connection with nothing
//! before it unanswered; checked like a `/ws` subscription (origin allow-list, message
//! budget, token from the `Authorization` header, the `ringline_token` cookie or,
//! where allowed, the query; the grant), it becomes an open connection whose one
//! subscriptions' messages the dispatcher writes as events ([`crate::worker::streams`]),
//! a comment every heartbeat. What the client sends from then on is read and dropped;
//! the stream ends when one of its subscriptions does (an error event first), on the token's expiry, a drain or a slow
//! consumer, and the browser reconnects with `Last-Event-ID`.

use wire::api::{self as http_api, ApiError, Head, sse};
use wire::client::ErrorCode;
use wire::frame::{Decoder, Limits};

use super::rate::Verdict;
use super::{Conn, Ctx, Proto};
use crate::auth::origin::allowed as allowed_origin;
use crate::metrics::WorkerMetrics;
use crate::worker::conn::life::Life;
use crate::worker::timer::Tick;

/// Longest event id a stream may need: what a reconnect's head holds beside the rest
/// of it.
pub const MAX_EVENT_ID: usize = super::api::API_LIMITS.max_header_bytes - 4096;

/// The cookie a browser's `EventSource` may carry its token in.
pub const TOKEN_COOKIE: &str = "ringline_token";

/// Why an events request is refused: its HTTP answer, and whether the connection
/// stays open after it.
pub(super) struct Refused(pub(super) Vec<u8>, pub(super) bool);

fn refused_with(code: ErrorCode, message: &'static str, keep_alive: bool) -> Refused {
    let mut v = Vec::new();
    http_api::write_answer(&mut v, &super::api::refusal(code, message), keep_alive);
    Refused(v, keep_alive)
}

impl Conn {
    /// `GET /v1/events` on an API connection (`pipelined`: requests before it are still
    /// unanswered): refused, or the connection becomes the stream.
    pub(super) fn start_events(
        &mut self,
        head: &Head<'_>,
        pipelined: bool,
        keep_alive: bool,
        now: Tick,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Refused> {
        let subs = match self.stream_subs(head, pipelined, ctx) {
            Ok(subs) => subs,
            Err(e) => {
                WorkerMetrics::add(&ctx.metrics.api_refused, 1);
                let mut v = Vec::new();
                let keep = keep_alive && !e.closes();
                http_api::write_error(&mut v, &e, keep);
                return Err(Refused(v, keep));
            }
        };
        if !allowed_origin(&ctx.cfg.allowed_origins, head.origin) {
            WorkerMetrics::add(&ctx.metrics.rejected_origin, 1);
            return Err(refused_with(
                ErrorCode::Forbidden,
                "origin not allowed",
                keep_alive,
            ));
        }
        if self.budget.spend(ctx.cfg.messages) != Verdict::Take {
            WorkerMetrics::add(&ctx.metrics.rate_limited, 1);
            return Err(refused_with(
                ErrorCode::RateLimited,
                "over this connection's message rate: slow down",
                keep_alive,
            ));
        }
        let cookie = sse::cookie(head.cookie, TOKEN_COOKIE);
        let until = self
            .api_identity(head, cookie, now, ctx)
            .map_err(|reason| {
                WorkerMetrics::add(&ctx.metrics.rejected_unauthorized, 1);
                refused_with(ErrorCode::Unauthorized, reason, keep_alive)
            })?;
        for sub in &subs {
            if let Err((code, message)) = self.permits(sub, ctx) {
                WorkerMetrics::add(&ctx.metrics.denied, 1);
                return Err(refused_with(code, message, keep_alive));
            }
        }
        let subject = self.identity.as_ref().map_or("", |i| i.subject());
        for sub in subs {
            ctx.hub.request(ctx.me, sub, subject);
        }
        WorkerMetrics::add(&ctx.metrics.event_streams, 1);
        self.open_stream(until, now, ctx);
        Ok(())
    }

    /// The subscriptions an events request asks for, if it may have them as one
    /// stream.
    fn stream_subs<'h>(
        &self,
        head: &Head<'h>,
        pipelined: bool,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<wire::client::Request<'h>>, ApiError> {
        let subs = sse::events_requests(head)?;
        // A reconnect sends this head again with the id beside it.
        let room = MAX_EVENT_ID.saturating_sub(head.path.len() + head.query.map_or(0, str::len));
        if sse::max_event_id_len(&subs, ctx.hub.partitions()) > room {
            return Err(ApiError::BadHeader(
                "these subscriptions' event id could pass the 60 KiB a reconnect's Last-Event-ID may hold: split them over several streams (a prefix without a hash tag holds a position per partition)",
            ));
        }
        if pipelined {
            return Err(ApiError::BadHeader(
                "an event stream must not be pipelined behind unanswered requests",
            ));
        }
        Ok(subs)
    }

    /// The stream's head is sent and the connection is an open one of [`Proto::Sse`]
    /// (`until`: the tick its token expires, 0: never).
    fn open_stream(&mut self, until: Tick, now: Tick, ctx: &Ctx<'_>) {
        let mut head = Vec::new();
        sse::write_stream_head(&mut head);
        self.out.push_owned(head);
        let limits = Limits {
            max_frame: 0,
            max_message: 0,
        };
        self.life = Life::Open {
            dec: Decoder::server(limits),
            partial: None,
        };
        self.proto = Proto::Sse;
        self.auth_by = until;
        self.last_ping = now;
        self.set_due(now + crate::worker::secs(ctx.cfg.heartbeat));
        self.watch_auth_by(now);
    }

    /// A heartbeat of a stream: a comment, if nothing was sent for an interval (the
    /// client sends nothing, so its silence means nothing).
    pub(super) fn events_heartbeat(&mut self, now: Tick, hb: Tick) {
        if now.saturating_sub(self.last_ping) >= hb {
            self.queue_with(sse::write_comment);
            self.last_ping = now;
        }
        let mut next = self.last_ping + hb;
        if self.auth_by != 0 {
            next = next.min(self.auth_by);
        }
        self.set_due(next.max(now + 1));
    }
}
