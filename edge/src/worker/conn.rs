//! One connection's state and what its received bytes do to it: first an HTTP head
//! (answered in plain HTTP, or upgraded to a WebSocket), then WebSocket frames: echoed
//! on `/echo`, decoded into client requests for the [`Hub`] on `/ws`. This file does no
//! I/O: bytes come in, frames to send go to `out`, and flags tell the worker what to do
//! next (close after flushing, stop reading).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use wire::frame::{
    CloseCode, Decoder, Incoming, Limits, Opcode, encode_close, encode_close_reply, encode_frame,
};
use wire::handshake::{
    HandshakeLimits, Status, parse_request, write_response, write_switching_protocols,
};

use wire::client::{fb as client_fb, json as client_json};

use crate::hub::{ConnRef, Hub};
use crate::metrics::WorkerMetrics;
use crate::uring::Chunk;
use crate::worker::timer::Tick;

/// The subprotocols `/ws` speaks, in order of preference when a client offers both.
pub const PROTOCOLS: [&str; 2] = [PROTOCOL_JSON, PROTOCOL_FB];
/// The client protocol in JSON text frames.
pub const PROTOCOL_JSON: &str = "ringline.v1.json";
/// The client protocol in flatbuffers binary frames.
pub const PROTOCOL_FB: &str = "ringline.v1.fb";

/// The page served at `/`.
const DEMO_PAGE: &str = include_str!("../../assets/index.html");

/// What a WebSocket's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `/echo`: sent back as they came.
    Echo,
    /// `/ws`, JSON text frames.
    Json,
    /// `/ws`, flatbuffers binary frames.
    Fb,
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head.
    Http {
        /// The head so far.
        head: Vec<u8>,
    },
    /// A WebSocket.
    Ws {
        /// Frame decoder (holds no heap memory while idle).
        dec: Decoder,
        /// Bytes of a frame not yet complete; `None` while idle (boxed: a pointer in
        /// every connection's slot, not a whole `Vec`).
        #[allow(clippy::box_collection)]
        partial: Option<Box<Vec<u8>>>,
    },
    /// Our close frame is sent and our side half-closed: what still arrives is read
    /// and dropped until the peer closes (or a short deadline passes), so that the
    /// close frame is not lost to a reset caused by unread bytes.
    Lingering,
    /// Closing: nothing more is read or answered.
    Closing,
}

/// A connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub fd: OwnedFd,
    /// Generation of its slab slot (stale completions are told apart by it).
    pub generation: u32,
    /// Where it is.
    pub phase: Phase,
    /// Frames queued and not yet handed to the kernel.
    pub out: VecDeque<Chunk>,
    /// Bytes in `out`.
    pub out_bytes: usize,
    /// A send is in flight.
    pub sending: bool,
    /// A receive is armed (multishot, or one-shot in poll mode).
    pub recv_armed: bool,
    /// The readability poll is armed (poll mode).
    pub poll_armed: bool,
    /// Its cancellation was requested.
    pub cancelling: bool,
    /// Close the socket once `out` is sent.
    pub close_after_flush: bool,
    /// Tick of the last bytes received.
    pub last_rx: Tick,
    /// Tick of the last ping sent.
    pub last_ping: Tick,
    /// The tick its timer entry is due.
    pub due: Tick,
    /// The handshake just completed: the worker moves its timer to the heartbeat.
    pub upgraded: bool,
    /// A close frame is queued: once it is sent, linger instead of closing at once.
    pub linger: bool,
    /// The deadline for flushing the close frame is scheduled.
    pub deadline_set: bool,
    /// What its WebSocket messages are (kept here, not in `Phase::Ws`, where it would
    /// cost the slot 8 bytes of padding).
    pub proto: Proto,
}

/// What a connection may see of its worker while handling bytes.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Where client requests go.
    pub hub: &'a mut Hub,
    /// This connection, as the hub names it.
    pub me: ConnRef,
    /// The edge's configuration.
    pub cfg: &'a crate::config::Config,
    /// This worker's figures.
    pub metrics: &'a WorkerMetrics,
    /// New WebSockets are refused (503): worker full or draining.
    pub refuse: bool,
    /// Draining: `/healthz` answers 503.
    pub draining: bool,
    /// Every worker's figures, for `/metrics`.
    pub all: &'a [std::sync::Arc<WorkerMetrics>],
}

/// Append bytes built by `write` to a send queue, coalescing small frames into the
/// last owned chunk.
fn push_with(out: &mut VecDeque<Chunk>, bytes: &mut usize, write: &mut dyn FnMut(&mut Vec<u8>)) {
    match out.back_mut() {
        Some(Chunk::Owned(v)) if v.len() < COALESCE => {
            let n = v.len();
            write(v);
            *bytes += v.len() - n;
        }
        _ => {
            let mut v = Vec::new();
            write(&mut v);
            *bytes += v.len();
            out.push_back(Chunk::Owned(v));
        }
    }
}

/// Largest owned chunk small frames are coalesced into.
const COALESCE: usize = 64 * 1024;

impl Conn {
    /// A new connection, reading its request head.
    pub fn new(fd: OwnedFd, generation: u32, now: Tick) -> Self {
        Self {
            fd,
            generation,
            phase: Phase::Http { head: Vec::new() },
            out: VecDeque::new(),
            out_bytes: 0,
            sending: false,
            recv_armed: false,
            poll_armed: false,
            cancelling: false,
            close_after_flush: false,
            last_rx: now,
            last_ping: now,
            due: 0,
            upgraded: false,
            linger: false,
            deadline_set: false,
            proto: Proto::Echo,
        }
    }

    /// Whether the worker keeps reading: always, except once closing for good. While a
    /// close frame waits to be flushed, input is read and dropped, so a peer busy
    /// writing does not block and can then read the close frame.
    pub fn reading(&self) -> bool {
        !matches!(self.phase, Phase::Closing) || self.close_after_flush
    }

    /// Queue bytes built by `write`, coalescing small frames into one chunk.
    pub fn queue_with(&mut self, mut write: impl FnMut(&mut Vec<u8>)) {
        push_with(&mut self.out, &mut self.out_bytes, &mut write);
    }

    /// Queue a frame encoded once and shared with other connections.
    pub fn queue_shared(&mut self, frame: bytes::Bytes) {
        self.out_bytes += frame.len();
        self.out.push_back(Chunk::Shared(frame));
    }

    /// Queue a close frame and stop: the socket closes once it is sent.
    pub fn close_with(&mut self, code: CloseCode, reason: &str, m: &WorkerMetrics) {
        if matches!(self.phase, Phase::Ws { .. }) {
            self.queue_with(|v| encode_close(v, code, reason));
            m.close_sent(code.0);
            self.linger = true;
        }
        self.phase = Phase::Closing;
        self.close_after_flush = true;
    }

    /// Handle received bytes (`data` may be modified: frames are unmasked in place).
    pub fn on_data(&mut self, data: &mut [u8], now: Tick, ctx: &mut Ctx<'_>) {
        self.last_rx = now;
        WorkerMetrics::add(&ctx.metrics.bytes_in, data.len() as u64);
        match &mut self.phase {
            Phase::Http { head } => {
                head.extend_from_slice(data);
                self.on_head(ctx);
            }
            Phase::Ws { .. } => self.on_ws(data, ctx),
            Phase::Lingering | Phase::Closing => {}
        }
    }

    fn on_head(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Http { head } = &mut self.phase else {
            return;
        };
        let limits = HandshakeLimits::default();
        // Parse only once the head can be complete (or too big).
        if !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < limits.max_header_bytes {
            return;
        }
        let head = std::mem::take(head);
        let mut reply = Vec::new();
        let mut upgraded: Option<(Vec<u8>, Proto)> = None;
        match parse_request(&head, &limits, &PROTOCOLS) {
            Ok(None) => {
                self.phase = Phase::Http { head };
                return;
            }
            Err(e) => {
                WorkerMetrics::add(&ctx.metrics.rejected_bad, 1);
                e.write_response(&mut reply);
            }
            Ok(Some((req, _))) => match (
                req.websocket.as_ref(),
                req.path.split_once('?').map_or(req.path, |(p, _)| p),
            ) {
                (None, "/healthz") => {
                    WorkerMetrics::add(&ctx.metrics.http_requests, 1);
                    let (status, body) = if ctx.draining {
                        (Status::ServiceUnavailable, &b"draining\n"[..])
                    } else {
                        (Status::Ok, &b"ok\n"[..])
                    };
                    write_response(&mut reply, status, "text/plain", body, None);
                }
                (None, "/") => {
                    // A small page to try Ringline by hand (it speaks `/ws`).
                    WorkerMetrics::add(&ctx.metrics.http_requests, 1);
                    write_response(
                        &mut reply,
                        Status::Ok,
                        "text/html; charset=utf-8",
                        DEMO_PAGE.as_bytes(),
                        None,
                    );
                }
                (None, "/metrics") => {
                    WorkerMetrics::add(&ctx.metrics.http_requests, 1);
                    let text = crate::metrics::render(ctx.all);
                    write_response(
                        &mut reply,
                        Status::Ok,
                        "text/plain; version=0.0.4",
                        text.as_bytes(),
                        None,
                    );
                }
                (Some(_), "/echo" | "/ws") if ctx.refuse => {
                    WorkerMetrics::add(&ctx.metrics.rejected_full, 1);
                    write_response(
                        &mut reply,
                        Status::ServiceUnavailable,
                        "text/plain",
                        b"full\n",
                        Some(5),
                    );
                }
                (Some(up), "/echo") if ctx.cfg.echo => {
                    WorkerMetrics::add(&ctx.metrics.handshakes, 1);
                    write_switching_protocols(&mut reply, &up.accept, None);
                    upgraded = Some((req.rest.to_vec(), Proto::Echo));
                }
                (Some(up), "/ws") => {
                    let proto = match up.protocol {
                        Some(PROTOCOL_FB) => Some(Proto::Fb),
                        Some(_) => Some(Proto::Json),
                        None if up.protocols_offered => None,
                        None => Some(Proto::Json),
                    };
                    match proto {
                        Some(proto) => {
                            WorkerMetrics::add(&ctx.metrics.handshakes, 1);
                            write_switching_protocols(&mut reply, &up.accept, up.protocol);
                            upgraded = Some((req.rest.to_vec(), proto));
                        }
                        None => {
                            WorkerMetrics::add(&ctx.metrics.rejected_bad, 1);
                            write_response(
                                &mut reply,
                                Status::BadRequest,
                                "text/plain",
                                b"unsupported subprotocol: offer ringline.v1.json or ringline.v1.fb\n",
                                None,
                            );
                        }
                    }
                }
                _ => {
                    WorkerMetrics::add(&ctx.metrics.http_requests, 1);
                    write_response(
                        &mut reply,
                        Status::NotFound,
                        "text/plain",
                        b"not found\n",
                        None,
                    );
                }
            },
        }
        self.out_bytes += reply.len();
        self.out.push_back(Chunk::Owned(reply));
        match upgraded {
            Some((mut rest, proto)) => {
                let limits = Limits {
                    max_frame: ctx.cfg.max_message,
                    max_message: ctx.cfg.max_message,
                };
                self.phase = Phase::Ws {
                    dec: Decoder::server(limits),
                    partial: None,
                };
                self.proto = proto;
                self.upgraded = true;
                if !rest.is_empty() {
                    self.on_ws(&mut rest, ctx);
                }
            }
            None => {
                self.phase = Phase::Closing;
                self.close_after_flush = true;
            }
        }
    }

    fn on_ws(&mut self, data: &mut [u8], ctx: &mut Ctx<'_>) {
        let Self {
            phase,
            out,
            out_bytes,
            proto,
            ..
        } = self;
        let Phase::Ws { dec, partial } = phase else {
            return;
        };
        let proto = *proto;
        let (hub, me) = (&mut *ctx.hub, ctx.me);
        let mut scratch = Vec::new();
        // Echoes are encoded straight into the connection's send queue.
        let mut reply = |write: &mut dyn FnMut(&mut Vec<u8>)| push_with(out, out_bytes, write);
        let mut messages = 0u64;
        let mut answered = 0u64;
        let mut close: Option<(CloseCode, bool)> = None;
        let mut run = |buf: &mut [u8]| -> usize {
            let mut at = 0;
            while at < buf.len() && close.is_none() {
                let Some(rest) = buf.get_mut(at..) else { break };
                match dec.decode(rest) {
                    Ok(Some((item, used))) => {
                        at += used;
                        match item {
                            Incoming::Text(s) => {
                                messages += 1;
                                match proto {
                                    Proto::Echo => reply(&mut |v| {
                                        encode_frame(v, Opcode::Text, s.as_bytes());
                                    }),
                                    Proto::Json => {
                                        match client_json::decode_request(s.as_bytes()) {
                                            Ok(req) => hub.request(me, req),
                                            Err(e) => {
                                                answered += 1;
                                                scratch.clear();
                                                client_json::encode_response(
                                                    &e.to_response(),
                                                    &mut scratch,
                                                );
                                                reply(&mut |v| {
                                                    encode_frame(v, Opcode::Text, &scratch)
                                                });
                                            }
                                        }
                                    }
                                    // "a binary frame on a JSON connection (or the reverse)
                                    // is a protocol error".
                                    Proto::Fb => {
                                        close = Some((CloseCode::UNSUPPORTED_DATA, false));
                                    }
                                }
                            }
                            Incoming::Binary(b) => {
                                messages += 1;
                                match proto {
                                    Proto::Echo => {
                                        reply(&mut |v| encode_frame(v, Opcode::Binary, b))
                                    }
                                    Proto::Fb => match client_fb::decode_request(b) {
                                        Ok(req) => hub.request(me, req),
                                        Err(e) => {
                                            answered += 1;
                                            scratch.clear();
                                            client_fb::encode_response(
                                                &e.to_response(),
                                                &mut scratch,
                                            );
                                            reply(&mut |v| {
                                                encode_frame(v, Opcode::Binary, &scratch)
                                            });
                                        }
                                    },
                                    Proto::Json => {
                                        close = Some((CloseCode::UNSUPPORTED_DATA, false));
                                    }
                                }
                            }
                            Incoming::Ping(p) => reply(&mut |v| encode_frame(v, Opcode::Pong, p)),
                            Incoming::Close(frame) => {
                                reply(&mut |v| encode_close_reply(v, frame.as_ref()));
                                let code = frame.map_or(CloseCode::NORMAL, |f| f.code);
                                close = Some((code, true));
                            }
                            Incoming::Pong(_) | Incoming::Fragment | Incoming::AfterClose => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        close = Some((e.close_code(), false));
                        at = buf.len();
                    }
                }
            }
            at
        };
        match partial {
            None => {
                let used = run(data);
                if let Some(rest) = data.get(used..)
                    && !rest.is_empty()
                    && close.is_none()
                {
                    *partial = Some(Box::new(rest.to_vec()));
                }
            }
            Some(buf) => {
                buf.extend_from_slice(data);
                let used = run(buf);
                buf.drain(..used.min(buf.len()));
                if buf.is_empty() {
                    *partial = None;
                }
            }
        }
        WorkerMetrics::add(&ctx.metrics.messages_in, messages);
        if proto == Proto::Echo {
            WorkerMetrics::add(&ctx.metrics.messages_out, messages);
        } else {
            WorkerMetrics::add(&ctx.metrics.messages_out, answered);
        }
        match close {
            Some((code, true)) => {
                // The peer closed: our reply (echoing its code) is already queued.
                ctx.metrics.close_sent(code.0);
                self.phase = Phase::Closing;
                self.close_after_flush = true;
                self.linger = true;
            }
            Some((code, false)) => self.close_with(code, "", ctx.metrics),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle WebSocket costs its slab slot (plus, on `/ws`, its subscriptions in the
    /// hub): keep the slot small.
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<Option<super::Conn>>();
        assert!(size <= 112, "{size}");
    }
}
