//! The WebSocket frame loop of an open connection: received bytes are decoded into
//! frames (unmasked in place; a frame cut by the end of a buffer waits in `partial`),
//! and each message is echoed (`/echo`) or decoded into a client request for the hub
//! (`/ws`; a request that does not decode gets its error answer, one its token does
//! not grant gets `forbidden`). Pings are answered,
//! a close is echoed, and a protocol error closes with its code.

use wire::client::{ErrorCode, Request, Response, fb as client_fb, json as client_json};
use wire::frame::{CloseCode, Decoder, Incoming, Opcode, encode_close_reply, encode_frame};

use super::{Conn, Ctx, Proto, SendQueue};
use crate::auth::grant::Grant;
use crate::hub::{ConnRef, Hub};
use crate::metrics::WorkerMetrics;
use crate::worker::conn::life::Life;
use crate::worker::timer::Tick;

/// How a frame loop ended early.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The peer sent a close frame (ours, echoing its code, is queued).
    PeerClosed(CloseCode),
    /// A protocol error: close with this code.
    Error(CloseCode),
}

/// Where the frames of one run over received bytes go: the queue or the hub.
struct FrameLoop<'a> {
    out: &'a mut SendQueue,
    proto: Proto,
    hub: &'a mut Hub,
    me: ConnRef,
    /// What this connection may touch (`None`: auth is off, everything).
    grant: Option<&'a Grant>,
    scratch: Vec<u8>,
    /// Messages received.
    messages: u64,
    /// Error answers queued (a `/ws` request that did not decode, or was denied).
    answered: u64,
    /// Requests denied as `forbidden`.
    denied: u64,
    stop: Option<Stop>,
}

impl FrameLoop<'_> {
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
                    self.stop = Some(Stop::Error(e.close_code()));
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
            Incoming::Ping(p) => out.push_with(&mut |v| encode_frame(v, Opcode::Pong, p)),
            Incoming::Close(frame) => {
                out.push_with(&mut |v| encode_close_reply(v, frame.as_ref()));
                let code = frame.map_or(CloseCode::NORMAL, |f| f.code);
                self.stop = Some(Stop::PeerClosed(code));
            }
            Incoming::Pong(_) | Incoming::Fragment | Incoming::AfterClose => {}
        }
    }

    /// A whole message (text or binary).
    fn on_message(&mut self, opcode: Opcode, body: &[u8]) {
        self.messages += 1;
        match (self.proto, opcode) {
            (Proto::Echo, _) => self.out.push_with(&mut |v| encode_frame(v, opcode, body)),
            (Proto::Json, Opcode::Text) => match client_json::decode_request(body) {
                Ok(req) => self.request(req, Opcode::Text),
                Err(e) => {
                    self.scratch.clear();
                    client_json::encode_response(&e.to_response(), &mut self.scratch);
                    self.answer(Opcode::Text);
                }
            },
            (Proto::Fb, Opcode::Binary) => match client_fb::decode_request(body) {
                Ok(req) => self.request(req, Opcode::Binary),
                Err(e) => {
                    self.scratch.clear();
                    client_fb::encode_response(&e.to_response(), &mut self.scratch);
                    self.answer(Opcode::Binary);
                }
            },
            // "a binary frame on a JSON connection (or the reverse) is a protocol
            // error".
            _ => self.stop = Some(Stop::Error(CloseCode::UNSUPPORTED_DATA)),
        }
    }

    /// A decoded request: to the hub if granted, else answered `forbidden` (the
    /// connection stays).
    fn request(&mut self, req: Request<'_>, opcode: Opcode) {
        if self.grant.is_none_or(|g| g.permits(&req)) {
            self.hub.request(self.me, req);
            return;
        }
        self.denied += 1;
        let denied = Response::Error {
            id: Some(req.id()),
            code: ErrorCode::Forbidden,
            message: "not granted by this connection's token".into(),
            version: None,
        };
        self.scratch.clear();
        if opcode == Opcode::Text {
            client_json::encode_response(&denied, &mut self.scratch);
        } else {
            client_fb::encode_response(&denied, &mut self.scratch);
        }
        self.answer(opcode);
    }

    /// Queue the error answer in `scratch`.
    fn answer(&mut self, opcode: Opcode) {
        self.answered += 1;
        let body = &self.scratch;
        self.out.push_with(&mut |v| encode_frame(v, opcode, body));
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
            ..
        } = self;
        let grant = match (ctx.auth, identity) {
            (None, _) => None,
            (Some(_), Some(id)) => Some(&id.grant),
            (Some(_), None) => Some(&ctx.cfg.anonymous),
        };
        let Life::Open { dec, partial } = life else {
            return;
        };
        let mut run = FrameLoop {
            out,
            proto: *proto,
            hub: &mut *ctx.hub,
            me: ctx.me,
            grant,
            scratch: Vec::new(),
            messages: 0,
            answered: 0,
            denied: 0,
            stop: None,
        };
        match partial {
            None => {
                let used = run.run(dec, data);
                if let Some(rest) = data.get(used..)
                    && !rest.is_empty()
                    && run.stop.is_none()
                {
                    *partial = Some(Box::new(rest.to_vec()));
                }
            }
            Some(buf) => {
                buf.extend_from_slice(data);
                let used = run.run(dec, buf);
                buf.drain(..used.min(buf.len()));
                if buf.is_empty() {
                    *partial = None;
                }
            }
        }
        let (messages, answered, stop) = (run.messages, run.answered, run.stop);
        let m = ctx.metrics;
        WorkerMetrics::add(&m.messages_in, messages);
        WorkerMetrics::add(&m.denied, run.denied);
        let out = if *proto == Proto::Echo {
            messages
        } else {
            answered
        };
        WorkerMetrics::add(&m.messages_out, out);
        match stop {
            Some(Stop::PeerClosed(code)) => {
                // Our reply (echoing its code) is already queued.
                m.close_sent(code.0);
                self.closing(true, now);
            }
            Some(Stop::Error(code)) => self.close(code, "", now, m),
            None => {}
        }
    }
}
