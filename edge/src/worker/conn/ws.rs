//! The WebSocket frame loop of an open connection: received bytes are decoded into
//! frames (unmasked in place; a frame cut by the end of a buffer waits in `partial`),
//! and each message is echoed (`/echo`) or decoded into a client request (`/ws`: one
//! that does not decode gets its error answer; `auth`, and whether the others may go on
//! to the hub, are [`auth`](super::auth)'s). Pings are answered, a close is echoed, and
//! a protocol error closes with its code. On a connection that negotiated
//! `permessage-deflate`, a compressed message is inflated first (the worker's one
//! inflater, [`Compression`]; past the message limit it closes with 1009), and the
//! echoes and answers queued here go compressed when that is worth it.

use wire::client::{ErrorCode, Response, fb as client_fb, json as client_json};
use wire::frame::{CloseCode, Decoder, Incoming, Opcode, encode_close_reply, encode_frame};

use super::auth::Standing;
use super::rate::{Budget, Limits, Verdict};
use super::{Conn, Ctx, Proto, SendQueue};
use crate::hub::{ConnRef, Hub};
use crate::metrics::WorkerMetrics;
use crate::worker::compress::Compression;
use crate::worker::conn::life::Life;
use crate::worker::timer::Tick;

/// How a frame loop ended early.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    /// The peer sent a close frame (ours, echoing its code, is queued).
    PeerClosed(CloseCode),
    /// A protocol error, or a refused `auth`: close with this code and reason.
    Error(CloseCode, &'static str),
}

/// Where the frames of one run over received bytes go: the queue or the hub.
pub(super) struct FrameLoop<'a> {
    out: &'a mut SendQueue,
    proto: Proto,
    pub(super) hub: &'a mut Hub,
    pub(super) me: ConnRef,
    /// Who the connection is and what it may touch.
    pub(super) standing: Standing<'a>,
    pub(super) now: crate::worker::timer::Tick,
    /// Its message budget, and the limits it is kept to.
    budget: &'a mut Budget,
    limits: Limits,
    scratch: Vec<u8>,
    /// The worker's compression, and the window this connection's messages are
    /// deflated with if it negotiated it.
    z: &'a mut Compression,
    deflate: Option<u8>,
    /// The largest message, inflated.
    max_message: usize,
    /// Messages received.
    messages: u64,
    /// Answers queued here (a `/ws` request that did not decode, was refused, or was
    /// an `auth`).
    answered: u64,
    /// Requests refused: `forbidden`, or `unauthorized` before the first `auth`.
    pub(super) denied: u64,
    /// `auth` messages refused.
    pub(super) unauthorized: u64,
    /// Subscriptions ended by a refresh that narrowed the grant.
    pub(super) narrowed: u64,
    /// Messages refused as `rate_limited`.
    limited: u64,
    pub(super) stop: Option<Stop>,
}

impl FrameLoop<'_> {
    /// Run the frames of `data`, after the bytes of an incomplete frame kept from the
    /// last receive (`partial`); keep what is left incomplete (unless the connection
    /// stops). `partial` is the connection's own field, boxed to keep its slot small.
    #[allow(clippy::box_collection)]
    fn run_kept(&mut self, dec: &mut Decoder, partial: &mut Option<Box<Vec<u8>>>, data: &mut [u8]) {
        match partial {
            None => {
                let used = self.run(dec, data);
                if let Some(rest) = data.get(used..)
                    && !rest.is_empty()
                    && self.stop.is_none()
                {
                    *partial = Some(Box::new(rest.to_vec()));
                }
            }
            Some(buf) => {
                buf.extend_from_slice(data);
                let used = self.run(dec, buf);
                buf.drain(..used.min(buf.len()));
                if buf.is_empty() {
                    *partial = None;
                }
            }
        }
    }

    /// Add what this run counted to the worker's figures (an echo connection's
    /// messages out are its messages in).
    fn publish(&self, m: &WorkerMetrics, echo: bool) {
        WorkerMetrics::add(&m.messages_in, self.messages);
        WorkerMetrics::add(&m.denied, self.denied + self.narrowed);
        WorkerMetrics::add(&m.rejected_unauthorized, self.unauthorized);
        WorkerMetrics::add(&m.rate_limited, self.limited);
        let out = if echo { self.messages } else { self.answered };
        WorkerMetrics::add(&m.messages_out, out);
    }

    /// Decode frames from `buf` with `dec` until it runs out or the loop stops;
    /// returns the bytes used. (The decoder is not a field: a message it assembled
    /// from fragments borrows it.)
    fn run(&mut self, dec: &mut Decoder, buf: &mut [u8]) -> usize {
        let mut at = 0;
        while at < buf.len() && self.stop.is_none() {
            let Some(rest) = buf.get_mut(at..) else { break };
            match dec.decode(rest) {
                Ok(Some((item, used))) => {
                    at += used;
                    self.on_item(item);
                }
                Ok(None) => break,
                Err(e) => {
                    self.stop = Some(Stop::Error(e.close_code(), ""));
                    at = buf.len();
                }
            }
        }
        at
    }

    fn on_item(&mut self, item: Incoming<'_>) {
        let out = &mut *self.out;
        match item {
            Incoming::Text(s) => self.on_message(Opcode::Text, s.as_bytes()),
            Incoming::Binary(b) => self.on_message(Opcode::Binary, b),
            Incoming::Compressed { text, payload } => self.on_compressed(text, payload),
            Incoming::Ping(p) => out.push_with(&mut |v| encode_frame(v, Opcode::Pong, p)),
            Incoming::Close(frame) => {
                out.push_with(&mut |v| encode_close_reply(v, frame.as_ref()));
                let code = frame.map_or(CloseCode::NORMAL, |f| f.code);
                self.stop = Some(Stop::PeerClosed(code));
            }
            Incoming::Pong(_) | Incoming::Fragment | Incoming::AfterClose => {}
        }
    }

    /// A compressed message: inflated into the worker's scratch, then handled as if it
    /// had come so.
    fn on_compressed(&mut self, text: bool, payload: &[u8]) {
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        // Taken out of the worker's compression state for the while: handling the
        // message may use that state too (to compress its answer).
        let mut inflated = self.z.take_inflated();
        match self
            .z
            .inflate(text, payload, self.max_message, &mut inflated)
        {
            Ok(()) => self.on_message(opcode, &inflated),
            Err(e) => self.stop = Some(Stop::Error(e.close_code(), "")),
        }
        self.z.put_inflated(inflated);
    }

    /// A whole message (text or binary). On `/ws` each one spends from the
    /// connection's budget, decoded or not.
    fn on_message(&mut self, opcode: Opcode, body: &[u8]) {
        self.messages += 1;
        let verdict = if self.proto == Proto::Echo {
            Verdict::Take
        } else {
            self.budget.spend(self.limits)
        };
        let limited = match verdict {
            Verdict::Take => false,
            Verdict::Refuse => true,
            Verdict::Close => {
                self.stop = Some(Stop::Error(CloseCode::POLICY, "message rate exceeded"));
                return;
            }
        };
        let decoded = match (self.proto, opcode) {
            (Proto::Echo, _) => {
                self.send(opcode, body);
                return;
            }
            (Proto::Json | Proto::JsonCompact, Opcode::Text) => client_json::decode_request(body),
            (Proto::Fb, Opcode::Binary) => client_fb::decode_request(body),
            // "a binary frame on a JSON connection (or the reverse) is a protocol
            // error".
            _ => {
                self.stop = Some(Stop::Error(CloseCode::UNSUPPORTED_DATA, ""));
                return;
            }
        };
        match decoded {
            Ok(req) if limited => {
                self.limited += 1;
                let refused = Response::Error {
                    id: Some(req.id()),
                    code: ErrorCode::RateLimited,
                    message: "over this connection's message rate: slow down".into(),
                    version: None,
                };
                self.reply(opcode, &refused);
            }
            Ok(req) => self.request(req, opcode),
            Err(e) => self.reply(opcode, &e.to_response()),
        }
    }

    /// Queue an answer of the connection's own (not the hub's), in its encoding.
    pub(super) fn reply(&mut self, opcode: Opcode, response: &Response<'_>) {
        self.scratch.clear();
        if opcode == Opcode::Text {
            client_json::encode_response(response, &mut self.scratch);
        } else {
            client_fb::encode_response(response, &mut self.scratch);
        }
        self.answered += 1;
        let body = std::mem::take(&mut self.scratch);
        self.send(opcode, &body);
        self.scratch = body;
    }

    /// Queue one message: compressed when the connection negotiated it and it is worth
    /// it.
    fn send(&mut self, opcode: Opcode, body: &[u8]) {
        if let Some(window) = self.deflate {
            self.z.queue(self.out, opcode, body, window);
        } else {
            self.out.push_with(&mut |v| encode_frame(v, opcode, body));
        }
    }
}

impl Conn {
    /// Frames arrived on an open WebSocket.
    pub(super) fn on_frames(&mut self, data: &mut [u8], now: Tick, ctx: &mut Ctx<'_>) {
        let Self {
            life,
            out,
            proto,
            identity,
            auth_by,
            budget,
            deflate_window,
            ..
        } = self;
        let Life::Open { dec, partial } = life else {
            return;
        };
        let was_due = *auth_by;
        let echo = *proto == Proto::Echo;
        let mut run = FrameLoop {
            out,
            proto: *proto,
            hub: &mut *ctx.hub,
            me: ctx.me,
            standing: Standing {
                verifier: ctx.auth,
                identity,
                anonymous: &ctx.cfg.anonymous,
                auth_by,
                inbox: ctx.cfg.inbox,
            },
            now,
            budget,
            limits: ctx.cfg.messages,
            scratch: Vec::new(),
            deflate: dec.deflate().then_some(*deflate_window),
            z: &mut *ctx.z,
            max_message: ctx.cfg.max_message,
            messages: 0,
            answered: 0,
            denied: 0,
            unauthorized: 0,
            narrowed: 0,
            limited: 0,
            stop: None,
        };
        run.run_kept(dec, partial, data);
        let m = ctx.metrics;
        run.publish(m, echo);
        let stop = run.stop;
        if self.auth_by != was_due {
            self.watch_auth_by(now);
        }
        match stop {
            Some(Stop::PeerClosed(code)) => {
                // Our reply (echoing its code) is already queued.
                m.close_sent(code.0);
                self.closing(true, now);
            }
            Some(Stop::Error(code, reason)) => self.close(code, reason, now, m),
            None => {}
        }
    }
}
