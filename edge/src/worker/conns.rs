//! The worker's side of its connections: sockets accepted by its listeners
//! (cleartext, TLS: [`Transport`]; a TLS one starts its session) are placed on the
//! least-loaded worker ([`admission`](super::admission)), here or handed to a sibling,
//! and become [`Conn`]s in the slab; each completion for one (receive, poll, send) is handed to its `handle_*`;
//! then [`Worker::drive`] turns what the connection polls into ring operations, its
//! deadline into a wheel entry, and its release into a free slot. At the end of a round
//! [`Worker::flush`] gives each connection with frames queued one vectored send, to at
//! most [`SENDS_PER_ROUND`] connections a round (the rest go next round, with whatever
//! was queued for them meanwhile; those with an answer to their own input go first, up
//! to as many again), and counts the sends that carry changes (a change batch: the changes queued for
//! a connection since its last send).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::admission::{self, Placement};
use rustls::server::UnbufferedServerConnection;

use super::conn::{Armed, Conn, Ctx, IoAction, RecvStyle, ServerTls};
use super::slab::Key;
use super::timer::deadline_after;
use super::{Worker, conn_ref, grow_buffers, secs};
use crate::config::RecvMode;
use crate::metrics::WorkerMetrics;
use crate::uring::{Cqe, Gen, OpKind, Token, net};

/// The token of `kind` for the connection at `key`.
fn token(kind: OpKind, key: Key) -> Token {
    Token::new(kind, key.slot, key.generation)
}

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `listen`: cleartext.
    Clear = 0,
    /// `listen_tls`: TLS.
    Tls = 1,
}

impl Transport {
    /// Both, in listener order.
    pub const ALL: [Self; 2] = [Self::Clear, Self::Tls];

    /// Its listener's index (and its accept token's slot).
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_bits(b: u32) -> Self {
        if b == 1 { Self::Tls } else { Self::Clear }
    }
}

/// The bit of a handover's tag that says the connection is TLS (the rest is the
/// sibling's index).
const TLS_TAG: u32 = 1 << 23;

/// The context a connection at `key` sees of worker `$w` (borrowed field by field: no
/// reference-count traffic per completion, and the connections stay free to borrow).
macro_rules! conn_ctx {
    ($w:ident, $key:expr) => {
        Ctx {
            cfg: &$w.cfg,
            metrics: &$w.metrics,
            draining: $w.drain.is_some(),
            all: &$w.shared.metrics,
            auth: $w.verifier.as_deref(),
            per_ip: &$w.shared.per_ip,
            worker: $w.id,
            hub: &mut $w.hub,
            me: conn_ref($key),
            z: &mut $w.delivery.z,
        }
    };
}

impl Worker {
    /// Arm the multishot accept of every listener this worker has.
    pub(super) fn arm_accept(&mut self) -> std::io::Result<()> {
        for t in Transport::ALL {
            self.arm_accept_on(t)?;
        }
        Ok(())
    }

    fn arm_accept_on(&mut self, t: Transport) -> std::io::Result<()> {
        if let Some(l) = &self.listeners[t.index()] {
            let token = Token::new(OpKind::Accept, t as u32, Gen::default());
            self.ring.accept_multi(l.as_raw_fd(), token)?;
            self.accepting[t.index()] = true;
        }
        Ok(())
    }

    /// Whether any listener still accepts.
    pub(super) fn accepting(&self) -> bool {
        self.accepting.iter().any(|a| *a)
    }

    /// Stop accepting (the drain): each armed accept is cancelled; its last
    /// completion closes the listener.
    pub(super) fn stop_accepting(&mut self) {
        for t in Transport::ALL {
            if self.accepting[t.index()] {
                let _ = self
                    .ring
                    .cancel(Token::new(OpKind::Accept, t as u32, Gen::default()));
            }
        }
    }

    pub(super) fn on_accept(&mut self, slot: u32, c: &Cqe) {
        let t = Transport::from_bits(slot);
        if !c.more() {
            self.accepting[t.index()] = false;
        }
        if let Some(fd) = net::adopt(c.result) {
            // TCP_NODELAY and TCP_NOTSENT_LOWAT come with it from the listener.
            WorkerMetrics::add(&self.metrics.accepted, 1);
            self.admit(fd, t);
        } else if c.result != -libc::ECANCELED {
            debug!(worker = self.id, errno = -c.result, "accept failed");
        }
        if !self.accepting[t.index()] {
            if self.drain.is_some() {
                // Cancelled for the drain: the listener can go now.
                self.listeners[t.index()] = None;
            } else if let Err(e) = self.arm_accept_on(t) {
                warn!(worker = self.id, error = %e, "cannot re-arm accept");
            }
        }
    }

    /// A connection this worker accepted (or one handed back): here, to the
    /// least-loaded sibling, or answered 503 here when every worker is full.
    fn admit(&mut self, fd: OwnedFd, t: Transport) {
        let (load, rings) = (&self.shared.load, &self.shared.rings);
        let max = u32::try_from(self.cfg.max_connections).unwrap_or(u32::MAX);
        let placed = match self.cfg.admission {
            crate::config::Admission::LeastLoaded => admission::place(load, rings, self.id, max),
            crate::config::Admission::Local => admission::place_here(load, self.id, max),
        };
        match placed {
            Placement::Here => self.add_conn(fd, true, t),
            Placement::Full => {
                admission::add(load, self.id);
                self.add_conn(fd, false, t);
            }
            Placement::There(w) => self.hand_over(fd, w, t),
        }
    }

    /// Hand `fd` to worker `w`, whose place is reserved; if its ring cannot be
    /// messaged, place it again.
    fn hand_over(&mut self, fd: OwnedFd, w: usize, t: Transport) {
        let ring_fd = self
            .shared
            .rings
            .get(w)
            .map_or(-1, |r| r.load(Ordering::Acquire));
        let sibling = u32::try_from(w).unwrap_or(u32::MAX) & (TLS_TAG - 1);
        let tag = if t == Transport::Tls {
            sibling | TLS_TAG
        } else {
            sibling
        };
        let given = if ring_fd < 0 {
            Err(fd)
        } else {
            let token = Token::new(OpKind::Handoff, t as u32, Gen::default());
            self.ring.hand_over(ring_fd, fd, token, tag)
        };
        match given {
            Ok(()) => WorkerMetrics::add(&self.metrics.handed_over, 1),
            Err(fd) => {
                admission::remove(&self.shared.load, w);
                self.admit_here(fd, t);
            }
        }
    }

    /// A connection that could not be handed over: here if this worker has room,
    /// else answered 503.
    fn admit_here(&mut self, fd: OwnedFd, t: Transport) {
        let load = &self.shared.load;
        let room = load
            .get(self.id)
            .is_some_and(|l| (l.load(Ordering::Acquire) as usize) < self.cfg.max_connections);
        admission::add(load, self.id);
        self.add_conn(fd, room, t);
    }

    /// A sibling handed this worker a connection (its place is reserved here) that
    /// came through its listener of kind `slot`.
    pub(super) fn on_handoff(&mut self, slot: u32, raw: i32) {
        if let Some(fd) = net::adopt(raw) {
            self.add_conn(fd, true, Transport::from_bits(slot));
        }
    }

    /// A handover was refused by the sibling's ring: the descriptor `slot` is this
    /// worker's again; `tag` names the sibling and the listener.
    pub(super) fn on_hand_back(&mut self, slot: u32, tag: u32, result: i32) {
        let w = tag & (TLS_TAG - 1);
        let t = if tag & TLS_TAG != 0 {
            Transport::Tls
        } else {
            Transport::Clear
        };
        debug!(
            worker = self.id,
            sibling = w,
            error = result,
            "a handover was refused"
        );
        admission::remove(&self.shared.load, w as usize);
        if let Some(fd) = i32::try_from(slot).ok().and_then(net::adopt) {
            self.admit_here(fd, t);
        }
    }

    /// A connection counted in this worker's load; `room`: false when every worker
    /// was full (its upgrade gets 503).
    fn add_conn(&mut self, fd: OwnedFd, room: bool, t: Transport) {
        let now = self.wheel.now();
        let style = match self.cfg.recv_mode {
            RecvMode::Multishot => RecvStyle::Multishot,
            RecvMode::Poll => RecvStyle::Poll,
        };
        let deadline = deadline_after(now, secs(self.cfg.handshake_timeout));
        // Only when balancers are configured: one getpeername per connection.
        let proxied = !self.cfg.proxy_protocol_from.is_empty()
            && net::peer_ip(&fd).is_some_and(|ip| self.cfg.proxy_protocol_from.contains(&ip));
        let tls = match (t, &self.tls) {
            (Transport::Clear, _) => None,
            (Transport::Tls, Some(config)) => {
                match UnbufferedServerConnection::new(Arc::clone(config)) {
                    Ok(s) => Some(Box::new(ServerTls::new(s))),
                    Err(e) => {
                        warn!(worker = self.id, error = %e, "cannot start a TLS session");
                        admission::remove(&self.shared.load, self.id);
                        return;
                    }
                }
            }
            // A TLS listener without certificates is never opened.
            (Transport::Tls, None) => {
                admission::remove(&self.shared.load, self.id);
                return;
            }
        };
        let key = self
            .conns
            .insert(Conn::new(fd, style, now, deadline, !room, proxied, tls));
        WorkerMetrics::add(&self.metrics.connections, 1);
        self.drive(key);
    }

    pub(super) fn on_recv(&mut self, key: Key, c: &Cqe) {
        let now = self.wheel.now();
        let mut ctx = conn_ctx!(self, key);
        let bid = c.buffer();
        let len = usize::try_from(c.result).unwrap_or(0);
        let Some(conn) = self.conns.get_mut(key) else {
            if let Some(b) = bid {
                self.bufs.consumed(b, len, c.buffer_more());
            }
            return;
        };
        if !c.more() {
            conn.handle_op_done(Armed::RECV);
        }
        if let Some(b) = bid {
            if c.result > 0
                && let Some(data) = self.bufs.get(b, len)
            {
                let queued = conn.queued_bytes();
                conn.handle_recv(data, now, &mut ctx);
                if conn.queued_bytes() > queued {
                    // Its own input answered (a reply, a pong, an echo, a handshake's
                    // response): sent before the round's fan-out.
                    conn.mark_answer();
                }
            }
            if self.bufs.consumed(b, len, c.buffer_more()) && c.result > 0 {
                // Poll mode: it ran to the end of its buffer, more is likely waiting.
                conn.handle_readable();
            }
        }
        match c.result {
            r if r > 0 => {}
            0 => conn.handle_eof(),
            r if r == -libc::ENOBUFS => {
                // Every buffer was in use: receive again (this round's are back now),
                // with more buffers if there is room.
                grow_buffers(&mut self.bufs, self.id);
                conn.handle_readable();
            }
            r if r != -libc::ECANCELED => conn.handle_io_error(),
            _ => {}
        }
        self.drive(key);
    }

    /// The HTTP API connection at `key` has room in its pipeline again: take the
    /// requests waiting in its buffer.
    pub(super) fn api_resume(&mut self, key: Key) {
        let now = self.wheel.now();
        let mut ctx = conn_ctx!(self, key);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.api_read(now, &mut ctx);
        }
        self.drive(key);
    }

    /// Poll mode: the socket became readable (or the poll ended).
    pub(super) fn on_poll(&mut self, key: Key, c: &Cqe) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !c.more() {
            conn.handle_op_done(Armed::POLL);
        }
        if c.result >= 0 {
            conn.handle_readable();
        } else if c.result != -libc::ECANCELED {
            conn.handle_io_error();
        }
        self.drive(key);
    }

    pub(super) fn on_send(&mut self, key: Key, c: Cqe) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let sent = if c.result < 0 {
            Err(c.result)
        } else {
            WorkerMetrics::add(&self.metrics.bytes_out, c.result as u64);
            Ok(c.result as usize)
        };
        conn.handle_sent(c.sent, sent);
        self.release_held(key);
        self.drive(key);
    }

    /// After any input to the connection at `key`: carry out what it now wants, and
    /// queue it for this round's sends if it has frames waiting.
    pub(super) fn drive(&mut self, key: Key) {
        let now = self.wheel.now();
        let max_outbound = self.cfg.max_outbound;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.enforce_outbound(max_outbound, now, &self.metrics);
        while let Some(action) = conn.poll_io(now) {
            let raw = conn.fd().as_raw_fd();
            let (op, submitted) = match action {
                IoAction::RecvMulti => (
                    Armed::RECV,
                    self.ring.recv_multi(raw, token(OpKind::Recv, key)),
                ),
                IoAction::RecvOnce => (
                    Armed::RECV,
                    self.ring.recv_once(raw, token(OpKind::Recv, key)),
                ),
                IoAction::Poll => (
                    Armed::POLL,
                    self.ring.poll_multi(raw, token(OpKind::Poll, key)),
                ),
                IoAction::Cancel(armed) => {
                    // Each by its token: the kernel finds it in its hash at once
                    // (cancelling by descriptor walks every pending operation of the
                    // ring, which made mass closes quadratic). Their completions
                    // disarm them; then the slot goes.
                    for (bit, kind) in [
                        (Armed::POLL, OpKind::Poll),
                        (Armed::RECV, OpKind::Recv),
                        (Armed::SEND, OpKind::Send),
                    ] {
                        if armed.has(bit) {
                            let _ = self.ring.cancel(token(kind, key));
                        }
                    }
                    continue;
                }
                IoAction::ShutdownWrite => {
                    net::shutdown_write(conn.fd());
                    continue;
                }
                IoAction::Release => {
                    self.release(key);
                    return;
                }
            };
            if submitted.is_err() {
                conn.handle_submit_failed(op);
            }
        }
        if let Some(at) = conn.poll_timeout() {
            self.wheel.schedule(key, at);
        }
        if conn.take_answer() {
            self.answers.push_back(key);
        }
        if conn.list_for_send() {
            self.dirty.push_back(key);
        }
    }

    /// The connection at `key` is done: its socket closes and its slot is free.
    fn release(&mut self, key: Key) {
        for kind in [OpKind::Recv, OpKind::Poll, OpKind::Send] {
            if self.ring.in_flight(key.slot, kind) {
                // The state machine releases only when nothing is armed; the ring
                // disagreeing is a bug, and reusing the slot would refuse its next
                // operation of that kind: keep the slot.
                warn!(
                    worker = self.id,
                    slot = key.slot,
                    ?kind,
                    "released with an operation in flight"
                );
                return;
            }
        }
        // Dropping the descriptor closes the socket.
        if let Some(conn) = self.conns.remove(key) {
            self.conflation.forget(key);
            self.batches.forget(key);
            self.streams.forget(key);
            if let Some(subject) = conn.subject() {
                self.hub.close_inbox(conn_ref(key), subject);
            }
            self.hub.conn_closed(conn_ref(key));
            WorkerMetrics::sub(&self.metrics.connections, 1);
            admission::remove(&self.shared.load, self.id);
            let now = std::time::Instant::now();
            self.shared.per_ip.release((self.id, conn_ref(key)), now);
        }
    }

    /// One vectored send per connection with queued frames and none in flight: to at
    /// most [`SENDS_PER_ROUND`] with an answer of their own waiting, then to at most
    /// [`SENDS_PER_ROUND`] others, first listed first; the rest wait for the next
    /// round. Sends that carry changes are counted, and the change frames queued: the
    /// mean batch is one over the other.
    pub(super) fn flush(&mut self) {
        let mut with_changes = 0;
        // Those listed before this round (a connection answering again goes next round).
        for _ in 0..self.answers.len().min(SENDS_PER_ROUND) {
            let Some(key) = self.answers.pop_front() else {
                break;
            };
            // Still on the list, if it is: that turn finds its send in flight, or
            // sends what was queued after this one.
            self.send_to(key, &mut with_changes);
        }
        let mut sends = 0;
        while sends < SENDS_PER_ROUND {
            let Some(key) = self.dirty.pop_front() else {
                break;
            };
            if let Some(conn) = self.conns.get_mut(key) {
                conn.unlist();
            }
            sends += usize::from(self.send_to(key, &mut with_changes));
        }
        let m = &self.metrics;
        let frames = std::mem::take(&mut self.delivery.changes);
        let limited = u64::from(!self.dirty.is_empty());
        for (counter, n) in [
            (&m.change_sends, with_changes),
            (&m.change_frames, frames),
            (&m.rounds_limited, limited),
        ] {
            if n > 0 {
                WorkerMetrics::add(counter, n);
            }
        }
    }

    /// Give the connection at `key` its send, if it has frames queued and none in
    /// flight; true if it had (`with_changes` counts the submitted sends that carry
    /// changes).
    fn send_to(&mut self, key: Key, with_changes: &mut u64) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(chunks) = conn.poll_transmit() else {
            // Nothing to send after all: it may have failed and be closing now.
            self.drive(key);
            return false;
        };
        let changes = conn.take_change();
        let raw = conn.fd().as_raw_fd();
        if self
            .ring
            .writev(raw, chunks, token(OpKind::Send, key))
            .is_err()
        {
            conn.handle_submit_failed(Armed::SEND);
            self.drive(key);
        } else {
            *with_changes += u64::from(changes);
        }
        true
    }
}

/// Sends submitted per round at most: a fan-out to more connections goes out over
/// several rounds, and what completed meanwhile (a store link's next change, a
/// client's request, a handshake) is handled between them. A change that arrives
/// meanwhile joins the frames of the connections still waiting: one send carries both.
pub(super) const SENDS_PER_ROUND: usize = 1024;
