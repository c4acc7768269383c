//! A connection's life, one enum, and every transition of it. Inputs come in through
//! the `handle_*` methods and [`Conn::close`] (completions, timers, the worker's
//! decisions); what the connection wants done comes out of [`Conn::poll_io`] (arm a
//! receive or a poll, cancel what is armed, shut down the write side, release the
//! slot), [`Conn::poll_transmit`] (the frames of one send) and [`Conn::poll_timeout`]
//! (its next deadline). The worker never sets a state: it performs what is polled and
//! reports the results back.
//!
//! ```text
//! Handshake ──upgrade──▶ Open ──close(code)──▶ Closing ──flushed, linger──▶ Lingering
//!     │ answered (HTTP)                           │ flushed, no linger         │ EOF, deadline
//!     ├──────────────────────▶ Closing ───────────┴────────────▶ Cancelling ◀──┘
//!     │ /v1/ (HTTP API)              ▲ last answer out        ▲ idle, slow request
//!     └───────────────────▶ Api ─────┴────────────────────────┘
//!                     EOF, errors, deadlines ──────────────────────▶ Cancelling ──nothing armed──▶ released
//! ```

use wire::frame::{CloseCode, Decoder, encode_close};

use super::Conn;
use crate::metrics::WorkerMetrics;
use crate::uring::Chunk;
use crate::worker::timer::{Tick, deadline_after};

/// Ticks a connection lingers after its close frame before it is closed anyway (at
/// least; see [`deadline_after`]).
pub const LINGER_TICKS: Tick = 2;
/// Ticks a closing connection may take to flush its last answer (at least).
pub const CLOSE_TICKS: Tick = 5;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Life {
    /// Reading the HTTP request head (after a PROXY header, from a balancer that
    /// sends one).
    Handshake {
        /// The head so far.
        head: Vec<u8>,
        /// From a balancer that sends the PROXY protocol: what its header said (boxed:
        /// only such connections pay for it).
        proxy: Option<Box<Proxy>>,
    },
    /// A WebSocket.
    Open {
        /// Frame decoder (holds no heap memory while idle).
        dec: Decoder,
        /// Bytes of a frame not yet complete; `None` while idle (boxed: a pointer in
        /// every connection's slot, not a whole `Vec`).
        #[allow(clippy::box_collection)]
        partial: Option<Box<Vec<u8>>>,
    },
    /// A keep-alive HTTP API connection (`/v1/...`): requests in, answers out, in order
    /// ([`super::api`]).
    Api(Box<super::api::Api>),
    /// A last answer (a close frame, or an HTTP response) is queued: nothing more is
    /// answered; what arrives is read and dropped (so a peer busy writing does not
    /// block and can then read the answer) until it is flushed or `deadline` passes.
    Closing {
        /// The tick by which it must be flushed, else it is abandoned.
        deadline: Tick,
        /// Once flushed, half-close and linger (a close frame was sent) rather than
        /// release at once.
        linger: bool,
        /// Still reading (false once the peer closed or reading failed).
        reading: bool,
    },
    /// Our close frame is sent and our side half-closed: what still arrives is read
    /// and dropped until the peer closes (or `until` passes), so that the close frame
    /// is not lost to a reset caused by unread bytes.
    Lingering {
        /// The tick it is closed anyway.
        until: Tick,
    },
    /// Closing for good: every armed operation is cancelled ([`Armed`] says which are
    /// still in flight); once none is, the slot is released.
    Cancelling,
}

/// A connection from a balancer that speaks the PROXY protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// Its header has not arrived whole yet.
    Awaiting,
    /// The client's address it gave (`None`: a health check, the peer stands).
    Client(Option<std::net::IpAddr>),
}

/// The operations a connection has in flight, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Armed(u8);

impl Armed {
    /// A receive (multishot, or one-shot in poll mode).
    pub const RECV: Self = Self(1);
    /// The readability poll (poll mode).
    pub const POLL: Self = Self(2);
    /// A send.
    pub const SEND: Self = Self(4);

    /// Whether every operation of `other` is armed.
    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether nothing is armed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These, without `other`.
    #[must_use]
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    fn set(&mut self, other: Self, on: bool) {
        *self = if on {
            Self(self.0 | other.0)
        } else {
            self.without(other)
        };
    }
}

/// How receives are armed (the worker's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvStyle {
    /// One multishot receive kept armed.
    Multishot,
    /// A multishot readability poll, and one receive per readiness event.
    Poll,
}

/// What a connection wants the worker to do.
#[derive(Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Arm a multishot receive.
    RecvMulti,
    /// Receive once (poll mode).
    RecvOnce,
    /// Arm a multishot readability poll.
    Poll,
    /// Cancel each of these operations (they complete with `-ECANCELED`).
    Cancel(Armed),
    /// Half-close: shut down the write side.
    ShutdownWrite,
    /// Nothing is armed and nothing more will be: free the slot.
    Release,
}

/// Things asked for and not yet polled, one bit each.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pending(u8);

impl Pending {
    /// Receive once as soon as no receive is armed (poll mode: bytes are waiting).
    pub(super) const RECV: u8 = 1;
    /// The deadline changed: [`Conn::poll_timeout`] has a new one.
    pub(super) const TIMER: u8 = 2;
    /// The cancellations are submitted.
    pub(super) const CANCELLED: u8 = 4;
    /// The release was polled: the connection is gone.
    pub(super) const RELEASED: u8 = 8;
    /// It is on the worker's list of connections waiting for a send.
    pub(super) const LISTED: u8 = 16;
    /// A change frame was queued since its last send.
    pub(super) const CHANGE: u8 = 32;
    /// An answer to its own request (or an echo) was queued since its last send.
    pub(super) const ANSWER: u8 = 64;

    pub(super) fn take(&mut self, bit: u8) -> bool {
        let had = self.0 & bit != 0;
        self.0 &= !bit;
        had
    }

    pub(super) fn put(&mut self, bit: u8) {
        self.0 |= bit;
    }

    pub(super) fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl Conn {
    /// Whether the connection is a WebSocket that takes messages.
    pub fn is_open(&self) -> bool {
        matches!(self.life, Life::Open { .. })
    }

    /// Whether it still answers (not closing, lingering or cancelling): closing it
    /// means something.
    pub fn is_live(&self) -> bool {
        matches!(
            self.life,
            Life::Handshake { .. } | Life::Open { .. } | Life::Api(_)
        )
    }

    /// Whether it reads (and drops, once closing) what arrives.
    fn reading(&self) -> bool {
        match self.life {
            Life::Handshake { .. } | Life::Open { .. } | Life::Api(_) | Life::Lingering { .. } => {
                true
            }
            Life::Closing { reading, .. } => reading,
            Life::Cancelling => false,
        }
    }

    /// Set the deadline the timer looks at.
    pub(super) fn set_due(&mut self, at: Tick) {
        self.due = at;
        self.pending.put(Pending::TIMER);
    }

    /// `auth_by` changed: the timer must look at the connection by then.
    pub(super) fn watch_auth_by(&mut self, now: Tick) {
        if self.auth_by != 0 && self.auth_by < self.due && self.is_open() {
            self.set_due(self.auth_by.max(now + 1));
        }
    }

    /// Close with `code`: a WebSocket queues a close frame, then lingers once it is
    /// flushed; a connection still in its handshake flushes what is queued. Closing
    /// one that is already closing does nothing.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Tick, m: &WorkerMetrics) {
        let linger = match self.life {
            // An event stream just ends (its browser reconnects by itself).
            Life::Open { .. } if self.proto == super::Proto::Sse => false,
            Life::Open { .. } => {
                self.queue_with(|v| encode_close(v, code, reason));
                m.close_sent(code.0);
                true
            }
            Life::Handshake { .. } => false,
            Life::Api(_) => {
                self.api_close(now);
                return;
            }
            Life::Closing { .. } | Life::Lingering { .. } | Life::Cancelling => return,
        };
        self.closing(linger, now);
    }

    /// Flush what is queued (a last answer), then linger or release.
    pub(super) fn closing(&mut self, linger: bool, now: Tick) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.close();
        }
        let deadline = deadline_after(now, CLOSE_TICKS);
        self.life = Life::Closing {
            deadline,
            linger,
            reading: true,
        };
        self.set_due(deadline);
    }

    /// Close at once: nothing more is sent or read.
    pub(super) fn cancel(&mut self) {
        self.life = Life::Cancelling;
    }

    /// The peer closed its side (a receive returned 0).
    pub fn handle_eof(&mut self) {
        self.stop_reading();
    }

    /// A receive or poll failed.
    pub fn handle_io_error(&mut self) {
        self.stop_reading();
    }

    /// Nothing more can be read: a last answer still being flushed goes out (there is
    /// no one left to linger for); anything else closes at once.
    fn stop_reading(&mut self) {
        match &mut self.life {
            Life::Closing {
                linger, reading, ..
            } => {
                *linger = false;
                *reading = false;
            }
            _ => self.cancel(),
        }
    }

    /// The operation `op` ended (its last completion arrived).
    pub fn handle_op_done(&mut self, op: Armed) {
        self.armed.set(op, false);
    }

    /// Poll mode: the socket is readable (or a receive filled its buffer, or found
    /// none free): receive again.
    pub fn handle_readable(&mut self) {
        if self.reading() {
            self.pending.put(Pending::RECV);
        }
    }

    /// Submitting `op` failed: nothing of it is in flight; close at once.
    pub fn handle_submit_failed(&mut self, op: Armed) {
        self.armed.set(op, false);
        self.cancel();
    }

    /// A send completed: `sent` bytes of `chunks` went out (`Err`: it failed). What
    /// the kernel did not take goes back to the front of the queue.
    pub fn handle_sent(&mut self, chunks: Vec<Chunk>, sent: Result<usize, i32>) {
        self.armed.set(Armed::SEND, false);
        match sent {
            Err(_) => {
                self.out.clear();
                self.cancel();
            }
            Ok(n) => {
                if !matches!(self.life, Life::Cancelling) {
                    match self.tls.as_deref_mut() {
                        Some(tls) => tls.handle_sent(chunks, n),
                        None => self.out.requeue(chunks, n),
                    }
                }
            }
        }
    }

    /// A slow consumer: more than `max` bytes queued (sealed ones included). What is
    /// queued is dropped and the connection closed with 4008.
    pub fn enforce_outbound(&mut self, max: usize, now: Tick, m: &WorkerMetrics) {
        if self.queued_bytes() > max {
            self.close_slow(now, m);
        }
    }

    /// Close as a slow consumer (4008), dropping what is queued.
    pub fn close_slow(&mut self, now: Tick, m: &WorkerMetrics) {
        if let Life::Api(_) = self.life {
            // An answer may be half sent: nothing after it could be framed.
            self.cancel();
            return;
        }
        if self.is_live() {
            self.out.clear();
            self.close(CloseCode::SLOW_CONSUMER, "slow consumer", now, m);
        }
    }

    /// The timer fired at `now`: the handshake deadline, the authentication deadline
    /// or the token's expiry, the heartbeat, the flush or linger deadline. An entry for an earlier deadline (moved since) does nothing.
    pub fn handle_timer(&mut self, now: Tick, hb: Tick, ping: &bytes::Bytes, m: &WorkerMetrics) {
        if self.due != now {
            return;
        }
        match self.life {
            Life::Handshake { .. } => {
                // Slowloris: no complete head in time.
                WorkerMetrics::add(&m.rejected_timeout, 1);
                self.cancel();
            }
            Life::Open { .. } if self.auth_by != 0 && now >= self.auth_by => {
                let (code, reason) = if self.identity.is_none() {
                    (CloseCode::AUTH_TIMEOUT, "authentication timeout")
                } else {
                    (CloseCode::TOKEN_EXPIRED, "token expired")
                };
                self.close(code, reason, now, m);
            }
            Life::Open { .. } if self.proto == super::Proto::Sse => self.events_heartbeat(now, hb),
            Life::Open { .. } => {
                // Two whole silent intervals, however late in its tick the last byte
                // came.
                let silent_at = deadline_after(self.last_rx, 2 * hb);
                if now >= silent_at {
                    self.close(CloseCode::GOING_AWAY, "no heartbeat", now, m);
                } else {
                    if now.saturating_sub(self.last_ping) >= hb {
                        self.queue_shared(ping.clone());
                        self.last_ping = now;
                    }
                    let mut next = (self.last_ping + hb).min(silent_at);
                    if self.auth_by != 0 {
                        next = next.min(self.auth_by);
                    }
                    self.set_due(next.max(now + 1));
                }
            }
            Life::Api(_) => self.api_timer(now),
            Life::Closing { deadline, .. } if now >= deadline => {
                // The last answer could not be flushed in time: give up on it.
                self.out.clear();
                self.cancel();
            }
            Life::Lingering { until } if now >= until => self.cancel(),
            Life::Closing { .. } | Life::Lingering { .. } | Life::Cancelling => {}
        }
    }

    /// The next thing to do, if any: call until `None` after every input. `now` is
    /// the current tick (a linger that starts now ends [`LINGER_TICKS`] later).
    pub fn poll_io(&mut self, now: Tick) -> Option<IoAction> {
        if let Life::Closing { linger, .. } = self.life
            && self.out.is_empty()
            && !self.armed.has(Armed::SEND)
            && self.tls.as_deref().is_none_or(super::ServerTls::flushed)
        {
            // Flushed.
            if linger {
                let until = deadline_after(now, LINGER_TICKS);
                self.life = Life::Lingering { until };
                self.set_due(until);
                // Bytes may already be waiting (no new readiness event would come for
                // them): read once now.
                self.pending.put(Pending::RECV);
                return Some(IoAction::ShutdownWrite);
            }
            self.cancel();
        }
        if let Life::Cancelling = self.life {
            if !self.armed.is_empty() && !self.pending.take(Pending::CANCELLED) {
                self.pending.put(Pending::CANCELLED);
                return Some(IoAction::Cancel(self.armed));
            }
            if self.armed.is_empty() && !self.pending.has(Pending::RELEASED) {
                self.pending.put(Pending::RELEASED);
                return Some(IoAction::Release);
            }
            return None;
        }
        self.poll_arm()
    }

    /// A receive or poll to arm, if one is wanted and not armed.
    fn poll_arm(&mut self) -> Option<IoAction> {
        if !self.reading() {
            return None;
        }
        match self.style {
            RecvStyle::Multishot => {
                self.pending.take(Pending::RECV);
                if !self.armed.has(Armed::RECV) {
                    self.armed.set(Armed::RECV, true);
                    return Some(IoAction::RecvMulti);
                }
            }
            RecvStyle::Poll => {
                // A receive asked for while one is armed is dropped: that one reads
                // what is waiting (a second would sit armed on an idle connection).
                if self.pending.take(Pending::RECV) && !self.armed.has(Armed::RECV) {
                    self.armed.set(Armed::RECV, true);
                    return Some(IoAction::RecvOnce);
                }
                // The request head is read directly; the poll is armed once that
                // receive is done (idle connections then hold only the poll).
                let first =
                    matches!(self.life, Life::Handshake { .. }) && self.armed.has(Armed::RECV);
                if !self.armed.has(Armed::POLL) && !first {
                    self.armed.set(Armed::POLL, true);
                    return Some(IoAction::Poll);
                }
            }
        }
        None
    }

    /// The frames of the next send (sealed, on TLS), if any are queued and none is in
    /// flight.
    pub fn poll_transmit(&mut self) -> Option<Vec<Chunk>> {
        if !self.wants_transmit() {
            return None;
        }
        let chunks = match self.tls.as_deref_mut() {
            None => self.out.take_batch(),
            Some(tls) => {
                let sealed = if tls.can_seal() && (!self.out.is_empty() || tls.notify_wanted()) {
                    let batch = self.out.take_batch();
                    tls.seal_frames(&batch, self.out.is_empty())
                } else {
                    Ok(())
                };
                match sealed.map(|()| tls.take_sealed()) {
                    Ok(Some(sealed)) => sealed,
                    Ok(None) => return None,
                    Err(_) => {
                        // The session cannot seal any more: close at once.
                        self.out.clear();
                        self.cancel();
                        return None;
                    }
                }
            }
        };
        self.armed.set(Armed::SEND, true);
        Some(chunks)
    }

    /// Whether it goes on the worker's list of connections waiting for a send: it
    /// [wants to transmit](Self::wants_transmit) and is not on it already.
    pub fn list_for_send(&mut self) -> bool {
        if self.pending.has(Pending::LISTED) || !self.wants_transmit() {
            return false;
        }
        self.pending.put(Pending::LISTED);
        true
    }

    /// It came off the worker's list (its turn to send).
    pub fn unlist(&mut self) {
        self.pending.take(Pending::LISTED);
    }

    /// Whether frames (or, on TLS, handshake records or a `close_notify`) wait for a
    /// send.
    pub fn wants_transmit(&self) -> bool {
        if self.armed.has(Armed::SEND) || matches!(self.life, Life::Cancelling) {
            return false;
        }
        match self.tls.as_deref() {
            None => !self.out.is_empty(),
            Some(tls) => tls.wants_transmit(!self.out.is_empty()),
        }
    }

    /// A new deadline for the timer, once each time it changes.
    pub fn poll_timeout(&mut self) -> Option<Tick> {
        self.pending.take(Pending::TIMER).then_some(self.due)
    }
}
