//! One connection as a state machine that does no I/O (quinn-proto's `Connection` is
//! the model). Received bytes, completions and timer ticks come in through
//! `handle_*`; the I/O it wants (arm, cancel, shut down, release), the frames of its
//! next send and its next deadline come out through `poll_*`. On a TLS listener its
//! session ([`ServerTls`]) sits between the two: records are opened before the bytes go on,
//! and frames sealed on their way out. Its life is one enum,
//! [`Life`], whose transitions are all in [`life`]; [`http`] answers the request head
//! (plain HTTP, or the upgrade to a WebSocket), [`ws`] runs the frame loop (echo on
//! `/echo`, client requests for the [`Hub`](crate::hub::Hub) on `/ws`) and [`api`] the
//! keep-alive HTTP API (`/v1/...`, requests for the same hub), from which [`events`]
//! turns a connection into a Server-Sent Events stream.

pub mod api;
mod auth;
mod events;
mod http;
pub mod life;
pub mod rate;
#[cfg(test)]
mod tests;
mod ws;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::auth::token::{Identity, Verifier};
use crate::hub::{ConnRef, Hub};
use crate::metrics::WorkerMetrics;
use crate::uring::Chunk;
use crate::worker::timer::Tick;
use life::Pending;
pub use life::{Armed, IoAction, Life, RecvStyle};

/// A connection's TLS session (the server side).
pub type ServerTls = crate::tls::session::Tls<rustls::server::UnbufferedServerConnection>;

/// The subprotocols `/ws` speaks (the client's first offered that is one of these is
/// taken).
pub const PROTOCOLS: [&str; 3] = [PROTOCOL_JSON, PROTOCOL_FB, PROTOCOL_JSON_COMPACT];
/// The client protocol in JSON text frames.
pub const PROTOCOL_JSON: &str = "ringline.v1.json";
/// The client protocol in JSON text frames, changes in their compact form.
pub const PROTOCOL_JSON_COMPACT: &str = "ringline.v2.json";
/// The client protocol in flatbuffers binary frames.
pub const PROTOCOL_FB: &str = "ringline.v1.fb";

/// What a WebSocket's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `/echo`: sent back as they came.
    Echo,
    /// `/ws`, JSON text frames.
    Json,
    /// `/ws`, JSON text frames, changes in the compact form (`ringline.v2.json`).
    JsonCompact,
    /// `/ws`, flatbuffers binary frames.
    Fb,
    /// The HTTP API (`/v1/...`): answers become HTTP responses.
    Api,
    /// A Server-Sent Events stream (`/v1/events`): its subscription's messages become
    /// events.
    Sse,
}

/// Frames queued for a connection and not yet handed to the kernel.
#[derive(Debug, Default)]
pub struct SendQueue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

impl SendQueue {
    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// Append bytes built by `write`, coalescing small frames into the last owned chunk.
    pub fn push_with(&mut self, write: &mut dyn FnMut(&mut Vec<u8>)) {
        match self.chunks.back_mut() {
            Some(Chunk::Owned(v)) if v.len() < COALESCE => {
                let n = v.len();
                write(v);
                self.bytes += v.len() - n;
            }
            _ => {
                let mut v = Vec::new();
                write(&mut v);
                self.bytes += v.len();
                self.chunks.push_back(Chunk::Owned(v));
            }
        }
    }

    /// Append a frame encoded once and shared with other connections.
    pub fn push_shared(&mut self, frame: bytes::Bytes) {
        self.bytes += frame.len();
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// The frames of one send (at most [`MAX_IOV`](crate::uring::op::writev::MAX_IOV)).
    /// All of them, the usual case, takes the queue's own buffer with the send, so an
    /// idle connection keeps no allocation behind.
    fn take_batch(&mut self) -> Vec<Chunk> {
        let n = self.chunks.len().min(crate::uring::op::writev::MAX_IOV);
        let batch: Vec<Chunk> = if n == self.chunks.len() {
            std::mem::take(&mut self.chunks).into()
        } else {
            self.chunks.drain(..n).collect()
        };
        self.bytes -= batch.iter().map(|c| c.as_slice().len()).sum::<usize>();
        batch
    }

    /// What a send did not take of `chunks` (`sent` bytes went out) goes back to the
    /// front, in order.
    fn requeue(&mut self, chunks: Vec<Chunk>, sent: usize) {
        let unsent = crate::worker::requeue(chunks, sent);
        self.bytes += unsent.iter().map(|c| c.as_slice().len()).sum::<usize>();
        for ch in unsent.into_iter().rev() {
            self.chunks.push_front(ch);
        }
    }
}

/// A connection: its socket and its state machine ([`life`]).
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    fd: OwnedFd,
    /// Where it is.
    life: Life,
    /// Frames queued and not yet handed to the kernel.
    out: SendQueue,
    /// Tick of the last bytes received.
    last_rx: Tick,
    /// Tick of the last ping sent.
    last_ping: Tick,
    /// The tick its timer looks at it.
    due: Tick,
    /// Operations in flight.
    armed: Armed,
    /// Asked for and not yet polled.
    pending: Pending,
    /// How its receives are armed.
    style: RecvStyle,
    /// What its WebSocket messages are (kept here, not in `Life::Open`, where it would
    /// cost the slot 8 bytes of padding).
    proto: Proto,
    /// Who its token says it is and what it may touch (`None`: anonymous, not yet
    /// authenticated, or auth is off).
    identity: Option<Box<Identity>>,
    /// The tick it must authenticate by (no identity yet: closed with 4408) or
    /// refresh its token by (closed with 4419); 0: never.
    auth_by: Tick,
    /// Its message budget (`/ws`).
    budget: rate::Budget,
    /// It came when every worker was full: its upgrade gets 503 (kept here, not in
    /// `Life::Handshake`, where it would cost the slot 8 bytes).
    full: bool,
    /// Its TLS session (`None`: cleartext).
    tls: Option<Box<ServerTls>>,
    /// The window (bits) its compressed messages are deflated with, if it
    /// negotiated `permessage-deflate` (kept here, in what was padding).
    deflate_window: u8,
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
    /// Draining: `/healthz` answers 503, and so does an upgrade.
    pub draining: bool,
    /// Every worker's figures, for `/metrics`.
    pub all: &'a [std::sync::Arc<WorkerMetrics>],
    /// Client tokens are checked against this (`None`: auth is off).
    pub auth: Option<&'a Verifier>,
    /// The process's per-address connection limits.
    pub per_ip: &'a crate::worker::per_ip::PerIp,
    /// This worker's index.
    pub worker: usize,
    /// This worker's `permessage-deflate` state.
    pub z: &'a mut crate::worker::compress::Compression,
}

/// Largest owned chunk small frames are coalesced into.
const COALESCE: usize = 64 * 1024;

impl Conn {
    /// A new connection, reading its request head; its handshake must complete by
    /// `deadline` (the TLS handshake included). `full`: it came when every worker was
    /// full (its upgrade gets 503); `proxied`: it comes from a balancer that sends a
    /// PROXY header first; `tls`: its session, on a TLS listener.
    pub fn new(
        fd: OwnedFd,
        style: RecvStyle,
        now: Tick,
        deadline: Tick,
        full: bool,
        proxied: bool,
        tls: Option<Box<ServerTls>>,
    ) -> Self {
        let mut c = Self {
            fd,
            life: Life::Handshake {
                head: Vec::new(),
                proxy: proxied.then(|| Box::new(life::Proxy::Awaiting)),
            },
            out: SendQueue::default(),
            last_rx: now,
            last_ping: now,
            due: 0,
            armed: Armed::default(),
            pending: Pending::default(),
            style,
            proto: Proto::Echo,
            identity: None,
            auth_by: 0,
            budget: rate::Budget::default(),
            full,
            tls,
            deflate_window: 0,
        };
        c.set_due(deadline);
        // The request head is on its way: receive it at once (in poll mode too).
        c.pending.put(Pending::RECV);
        c
    }

    /// The socket.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// What its WebSocket messages are.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Who its token says it is (`None`: anonymous, or not authenticated yet).
    pub fn subject(&self) -> Option<&str> {
        self.identity.as_deref().map(Identity::subject)
    }

    /// Whether it is an HTTP API connection still taking answers.
    pub fn is_api(&self) -> bool {
        matches!(self.life, Life::Api(_))
    }

    /// Whether it is an open `/ws` connection that may be sent data: not `/echo`, and
    /// not waiting for its first `auth`.
    pub fn admitted(&self) -> bool {
        self.is_open()
            && matches!(self.proto, Proto::Json | Proto::JsonCompact | Proto::Fb)
            && !(self.identity.is_none() && self.auth_by != 0)
    }

    /// Bytes queued for sending: frames, and on TLS the records sealed and not yet
    /// handed to a send.
    pub fn queued_bytes(&self) -> usize {
        self.out.bytes() + self.tls.as_ref().map_or(0, |t| t.sealed_bytes())
    }

    /// Queue bytes built by `write`, coalescing small frames into one chunk.
    pub fn queue_with(&mut self, mut write: impl FnMut(&mut Vec<u8>)) {
        self.out.push_with(&mut write);
    }

    /// Queue a frame encoded once and shared with other connections.
    pub fn queue_shared(&mut self, frame: bytes::Bytes) {
        self.out.push_shared(frame);
    }

    /// A change frame was queued (its send is counted as one carrying changes).
    pub fn mark_change(&mut self) {
        self.pending.put(Pending::CHANGE);
    }

    /// Whether a change frame was queued since the last call: the send just polled
    /// carries it (a send that takes only part of the queue counts as carrying them).
    pub fn take_change(&mut self) -> bool {
        self.pending.take(Pending::CHANGE)
    }

    /// An answer to its own request (or an echo) was queued: its send goes before
    /// the round's fan-out.
    pub fn mark_answer(&mut self) {
        self.pending.put(Pending::ANSWER);
    }

    /// Whether it may send now and an answer of its own waits: taken once per send.
    pub fn take_answer(&mut self) -> bool {
        self.wants_transmit() && self.pending.take(Pending::ANSWER)
    }

    /// Its send queue.
    pub fn out(&mut self) -> &mut SendQueue {
        &mut self.out
    }

    /// The window its messages are deflated with, if it is an open WebSocket that
    /// negotiated `permessage-deflate`.
    pub fn deflate(&self) -> Option<u8> {
        match &self.life {
            Life::Open { dec, .. } if dec.deflate() => Some(self.deflate_window),
            _ => None,
        }
    }

    /// Bytes arrived (`data` may be modified: frames are unmasked, TLS records opened,
    /// in place).
    pub fn handle_recv(&mut self, data: &mut [u8], now: Tick, ctx: &mut Ctx<'_>) {
        self.budget
            .refill(now.saturating_sub(self.last_rx), ctx.cfg.messages);
        self.last_rx = now;
        WorkerMetrics::add(&ctx.metrics.bytes_in, data.len() as u64);
        if self.tls.is_some() {
            self.on_ciphertext(data, now, ctx);
        } else {
            self.on_plaintext(data, now, ctx);
        }
    }

    /// TLS records arrived: what they open to goes on as if it had come in clear.
    fn on_ciphertext(&mut self, data: &mut [u8], now: Tick, ctx: &mut Ctx<'_>) {
        if !self.is_live() {
            // Closing: read and dropped, like cleartext.
            return;
        }
        let Some(tls) = self.tls.as_deref_mut() else {
            return;
        };
        let mut plain = Vec::new();
        match tls.handle_ciphertext(data, &mut plain) {
            Ok(opened) => {
                if opened.handshake_done {
                    WorkerMetrics::add(&ctx.metrics.tls_handshakes, 1);
                    if tls.is_resumed() {
                        WorkerMetrics::add(&ctx.metrics.tls_resumed, 1);
                    }
                }
                if !plain.is_empty() {
                    self.on_plaintext(&mut plain, now, ctx);
                }
                if opened.peer_closed {
                    self.handle_eof();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "TLS failed");
                WorkerMetrics::add(&ctx.metrics.tls_failed, 1);
                // Its alert, if any, goes out (nothing queued can be sealed any more);
                // then the connection is released.
                self.out.clear();
                self.closing(false, now);
            }
        }
    }

    /// Plaintext arrived: the request head, or frames.
    fn on_plaintext(&mut self, data: &mut [u8], now: Tick, ctx: &mut Ctx<'_>) {
        match &mut self.life {
            Life::Handshake { head, .. } => {
                head.extend_from_slice(data);
                self.on_head(now, ctx);
            }
            // An event stream's client has nothing to say: read and dropped.
            Life::Open { .. } if self.proto == Proto::Sse => {}
            Life::Open { .. } => self.on_frames(data, now, ctx),
            Life::Api(_) => self.on_api_bytes(data, now, ctx),
            // Closing: read and dropped.
            Life::Closing { .. } | Life::Lingering { .. } | Life::Cancelling => {}
        }
    }
}
