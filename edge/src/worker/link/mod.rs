//! One persistent link from a worker to one store, as a state machine that does no
//! I/O: connect, hello, then link frames both ways. Inputs come in through `handle_*`
//! (a socket, a connect's result, received bytes, a receive's end, a send's result,
//! the tick); what it wants comes out through `poll_connect`, `poll_recv` and
//! `poll_transmit`; what it has to say to the rest of the worker comes back as a
//! [`Change`] (up, or down with the socket to shut). Received bytes are cut into
//! verified frames: the hello's answer, keep-alive pings and pongs are handled here,
//! every other frame goes to the caller (the hub); the tick gives back a receive
//! buffer a burst left large and empty. The link is the only owner of its
//! up/down state; the hub hears of it through [`Change`]. A link that fails (connect
//! refused, reset, malformed frame, silent for [`LINK_DEAD_MS`]) is down until its
//! [`backoff`](backoff::backoff) passes (tens of milliseconds, so that a store that
//! restarts is relinked at once), or until a sibling worker's link to the same store
//! comes up and [`handle_wake`](Link::handle_wake) says to try now. Its clock is in
//! milliseconds ([`Millis`]).
//!
//! With a cluster secret the hello carries a fresh nonce, and before the hello's
//! answer the store must prove the secret (`AuthChallenge`, checked here) and the link
//! proves it back (`AuthProof`, `wire::link::auth`); a store that cannot, or a link
//! without a secret asked for one, is refused: [`Change::Down`] says it was
//! `unauthenticated`.
//!
//! With `link_tls_ca_file` the link runs in TLS ([`ClientTls`], the same sans-IO
//! record layer as a client connection's, client side): the hello and everything after
//! it is sealed once the handshake is done; received records are opened before they
//! are cut into frames.

pub mod backoff;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;

use wire::link::auth::{ClusterSecret, Nonce, Side};
use wire::link::{KeepAliveNonce, LinkEncoder, LinkFrame, LinkLimits, LinkMessage, decode_frame};

pub use backoff::Millis;

use crate::uring::{Chunk, Gen};

/// A link's TLS session (the client side).
pub type ClientTls = crate::tls::session::Tls<UnbufferedClientConnection>;

/// Milliseconds between pings on an idle link.
pub const LINK_PING_MS: Millis = 5_000;
/// Milliseconds of silence (a ping is answered) after which a link is declared dead.
pub const LINK_DEAD_MS: Millis = 15_000;
/// Milliseconds a connect plus hello may take.
pub const LINK_CONNECT_MS: Millis = 5_000;
/// Receive-buffer capacity a link keeps after a burst of answers; past it, the tick
/// shrinks a mostly empty buffer.
const INBUF_KEEP: usize = 64 * 1024;

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; the next attempt is due at `retry_at`.
    Down {
        /// When the next attempt is due.
        retry_at: Millis,
    },
    /// Connect in flight since `since`.
    Connecting {
        /// When the attempt started.
        since: Millis,
    },
    /// Connected, hello sent, waiting for its answer.
    Hello {
        /// When the attempt started.
        since: Millis,
    },
    /// Hello answered: requests flow.
    Up,
    /// Closed for good (the worker is stopping).
    Closed,
}

impl LinkState {
    /// The value `/metrics` shows: 0 down, 1 connecting, 2 up.
    pub fn metric(self) -> u64 {
        match self {
            Self::Down { .. } | Self::Closed => 0,
            Self::Connecting { .. } | Self::Hello { .. } => 1,
            Self::Up => 2,
        }
    }
}

/// What the rest of the worker must hear of.
#[derive(Debug)]
pub enum Change {
    /// The hello was answered: requests may flow.
    Up {
        /// The store's name for itself.
        store_id: String,
        /// The store serves another version of the partition map.
        map_version: Option<u64>,
    },
    /// The link went down (`was_up`: it had been up); `fd` is its socket, to shut down
    /// so that what is still armed on it completes.
    Down {
        /// It had been up.
        was_up: bool,
        /// Why.
        why: String,
        /// The socket, if it had one.
        fd: Option<OwnedFd>,
        /// Refused for the cluster secret: the store did not prove it, or asked for it
        /// and this edge has none.
        unauthenticated: bool,
    },
}

/// Why a link must go down.
#[derive(Debug)]
struct Fault {
    why: String,
    unauthenticated: bool,
}

impl Fault {
    fn protocol(why: String) -> Self {
        Self {
            why,
            unauthenticated: false,
        }
    }

    fn auth(why: &str) -> Self {
        Self {
            why: why.to_string(),
            unauthenticated: true,
        }
    }
}

/// How a receive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvEnd {
    /// Still armed (more completions follow).
    More,
    /// Ended without harm (cancelled, or no buffer free): arm it again.
    Rearm,
    /// The store closed the link.
    Eof,
    /// The receive failed.
    Failed,
}

/// Operations in flight (of any socket of the link), one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkOps(u8);

impl LinkOps {
    /// A connect.
    pub const CONNECT: u8 = 1;
    /// A receive.
    pub const RECV: u8 = 2;
    /// A send.
    pub const SEND: u8 = 4;

    /// Whether `bit` is in flight.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Whether nothing is in flight.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        self.0 = if on { self.0 | bit } else { self.0 & !bit };
    }
}

/// One link to one store.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    fd: Option<OwnedFd>,
    state: LinkState,
    /// Bumped on every attempt: completions of an earlier socket are told apart.
    generation: Gen,
    inbuf: Vec<u8>,
    out: VecDeque<Chunk>,
    /// In flight, of this socket or an earlier one: a new attempt waits until none is
    /// (the ring takes one operation of a kind per link at a time).
    ops: LinkOps,
    attempts: u32,
    last_rx: Millis,
    last_ping: Millis,
    /// This socket's nonce, sent in its hello (with a cluster secret).
    nonce: Option<Nonce>,
    /// The store proved the cluster secret on this socket.
    store_proven: bool,
    /// The name the store's certificate must carry (its id in the cluster map).
    name: ServerName<'static>,
    /// This socket's TLS session (with `link_tls_ca_file`).
    tls: Option<Box<ClientTls>>,
    /// Its session could not seal the link's frames: the next tick drops it.
    seal_failed: bool,
}

/// What the link needs to build its own frames and check the hello's answer.
#[derive(Debug)]
pub struct LinkCtx<'a> {
    /// Encoder for hello, ping and pong.
    pub enc: &'a mut LinkEncoder,
    /// The partitions of the edge's cluster map (the store must agree).
    pub partitions: u32,
    /// The version of the edge's cluster map.
    pub map_version: u64,
    /// The edge's name for itself, in the hello.
    pub edge_id: &'a str,
    /// This worker's number, in the hello.
    pub worker: u16,
    /// A random number for the backoff's jitter.
    pub jitter: u64,
    /// The cluster secret the store and this link prove to each other (`None`: links
    /// are not authenticated).
    pub secret: Option<&'a ClusterSecret>,
    /// TLS on the links: the client config (`None`: cleartext).
    pub tls: Option<&'a Arc<ClientConfig>>,
}

impl Link {
    /// A link to `addr`, the store named `name` (its id: what its certificate must
    /// name, with TLS), down and due at once.
    pub fn new(addr: SocketAddr, name: &str) -> Self {
        let name = ServerName::try_from(name.to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
        Self {
            addr,
            fd: None,
            state: LinkState::Down { retry_at: 0 },
            generation: Gen::default(),
            inbuf: Vec::new(),
            out: VecDeque::new(),
            ops: LinkOps::default(),
            attempts: 0,
            last_rx: 0,
            last_ping: 0,
            nonce: None,
            store_proven: false,
            name,
            tls: None,
            seal_failed: false,
        }
    }

    /// Where it is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Operations in flight (of any socket).
    pub fn ops(&self) -> LinkOps {
        self.ops
    }

    /// Failed attempts since it was last up.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The store's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is up (requests may be queued).
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }

    /// Queue frames for the store (only while up: the hub keeps them otherwise).
    pub fn queue(&mut self, frames: Vec<u8>) {
        if self.is_up() && !frames.is_empty() {
            self.out.push_back(Chunk::Owned(frames));
        }
    }

    /// An attempt is due (down, its backoff passed, nothing of an earlier socket in
    /// flight): it starts now; the caller creates a socket for it.
    pub fn poll_connect(&mut self, now: Millis) -> Option<Gen> {
        match self.state {
            LinkState::Down { retry_at } if now >= retry_at && self.ops.is_empty() => {
                self.generation = self.generation.next();
                self.state = LinkState::Connecting { since: now };
                self.last_rx = now;
                Some(self.generation)
            }
            _ => None,
        }
    }

    /// The socket of the attempt: connect it to [`addr`](Self::addr); returns its
    /// descriptor.
    pub fn handle_socket(&mut self, fd: OwnedFd) -> RawFd {
        let raw = fd.as_raw_fd();
        self.fd = Some(fd);
        self.ops.set(LinkOps::CONNECT, true);
        raw
    }

    /// A submission for the current socket failed (nothing of it is in flight), or
    /// its socket could not be made.
    pub fn handle_submit_failed(
        &mut self,
        op: u8,
        now: Millis,
        ctx: &mut LinkCtx<'_>,
    ) -> Option<Change> {
        self.ops.set(op, false);
        self.fail(now, "submit", ctx.jitter)
    }

    /// The connect of socket `generation` completed (`Err(errno)`: it failed); on
    /// success the hello is queued, with `nonce` (fresh random bytes) when there is a
    /// cluster secret (without one then, the attempt fails).
    pub fn handle_connected(
        &mut self,
        generation: Gen,
        result: Result<(), i32>,
        now: Millis,
        ctx: &mut LinkCtx<'_>,
        nonce: Option<Nonce>,
    ) -> Option<Change> {
        self.ops.set(LinkOps::CONNECT, false);
        if generation != self.generation || !matches!(self.state, LinkState::Connecting { .. }) {
            return None;
        }
        if let Err(errno) = result {
            let e = std::io::Error::from_raw_os_error(-errno);
            return self.fail(now, &format!("connect failed: {e}"), ctx.jitter);
        }
        let since = match self.state {
            LinkState::Connecting { since } => since,
            _ => now,
        };
        self.state = LinkState::Hello { since };
        if let Some(config) = ctx.tls {
            let started = UnbufferedClientConnection::new(Arc::clone(config), self.name.clone())
                .map(ClientTls::new)
                .and_then(|mut t| t.start().map(|()| t));
            match started {
                Ok(t) => self.tls = Some(Box::new(t)),
                Err(e) => return self.fail(now, &format!("TLS: {e}"), ctx.jitter),
            }
        }
        self.nonce = match (ctx.secret, nonce) {
            (None, _) => None,
            (Some(_), Some(n)) => Some(n),
            (Some(_), None) => return self.fail(now, "no random bytes for a nonce", ctx.jitter),
        };
        self.store_proven = false;
        let mut hello = Vec::new();
        let _ = ctx.enc.hello(
            &mut hello,
            0,
            ctx.edge_id,
            ctx.worker,
            ctx.map_version,
            self.nonce.as_ref(),
        );
        self.out.push_back(Chunk::Owned(hello));
        None
    }

    /// A receive should be armed on the current socket (connected, none in flight).
    pub fn poll_recv(&mut self) -> Option<(RawFd, Gen)> {
        if self.ops.has(LinkOps::RECV)
            || !matches!(self.state, LinkState::Hello { .. } | LinkState::Up)
        {
            return None;
        }
        let raw = self.fd.as_ref()?.as_raw_fd();
        self.ops.set(LinkOps::RECV, true);
        Some((raw, self.generation))
    }

    /// A receive of socket `generation` completed: `end` says whether it stays armed.
    pub fn handle_recv_end(
        &mut self,
        generation: Gen,
        end: RecvEnd,
        now: Millis,
        jitter: u64,
    ) -> Option<Change> {
        if end != RecvEnd::More {
            self.ops.set(LinkOps::RECV, false);
        }
        if generation != self.generation {
            return None;
        }
        match end {
            RecvEnd::Eof => self.fail(now, "closed by the store", jitter),
            RecvEnd::Failed => self.fail(now, "receive failed", jitter),
            RecvEnd::More | RecvEnd::Rearm => None,
        }
    }

    /// Bytes arrived on socket `generation` (opened in place, with TLS): cut them
    /// into frames; frames for the hub (watch pongs included) go to `on_frame`.
    pub fn handle_recv(
        &mut self,
        generation: Gen,
        data: &mut [u8],
        now: Millis,
        ctx: &mut LinkCtx<'_>,
        on_frame: &mut dyn FnMut(&LinkFrame<'_>),
    ) -> Option<Change> {
        if generation != self.generation
            || !matches!(self.state, LinkState::Hello { .. } | LinkState::Up)
        {
            return None;
        }
        self.last_rx = now;
        match self.tls.as_deref_mut() {
            None => self.inbuf.extend_from_slice(data),
            Some(tls) => match tls.handle_ciphertext(data, &mut self.inbuf) {
                Ok(o) if o.peer_closed => return self.fail(now, "closed by the store", ctx.jitter),
                Ok(_) => {}
                Err(e) => return self.fail(now, &format!("TLS: {e}"), ctx.jitter),
            },
        }
        let buf = std::mem::take(&mut self.inbuf);
        let (used, result) = self.frames(&buf, ctx, on_frame);
        match result {
            Err(f) => self.fail_for(now, f, ctx.jitter),
            Ok(change) => {
                let mut buf = buf;
                buf.drain(..used.min(buf.len()));
                self.inbuf = buf;
                change
            }
        }
    }

    /// Act on each whole frame of `buf`; returns the bytes used, and the link's change
    /// or why it must fail.
    fn frames(
        &mut self,
        buf: &[u8],
        ctx: &mut LinkCtx<'_>,
        on_frame: &mut dyn FnMut(&LinkFrame<'_>),
    ) -> (usize, Result<Option<Change>, Fault>) {
        let limits = LinkLimits::default();
        let mut at = 0;
        let mut change = None;
        while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
            let frame = match decode_frame(rest, &limits) {
                Ok(Some((frame, used))) => {
                    at += used;
                    frame
                }
                Ok(None) => break,
                Err(e) => return (at, Err(Fault::protocol(format!("malformed frame: {e}")))),
            };
            match frame.message {
                LinkMessage::AuthChallenge(c) => {
                    if let Err(f) = self.answer_challenge(c, ctx) {
                        return (at, Err(f));
                    }
                }
                LinkMessage::HelloAck(_) if ctx.secret.is_some() && !self.store_proven => {
                    let why = "the store did not prove the cluster secret (has it none?)";
                    return (at, Err(Fault::auth(why)));
                }
                LinkMessage::HelloAck(ack) => {
                    if ack.partitions() != ctx.partitions {
                        // Positions and routing would disagree: requests would land on
                        // the wrong partitions and answers go nowhere. Refuse the link
                        // (its keys answer `unavailable`).
                        let why = format!(
                            "store has {} partitions, the edge's cluster map {}: fix the maps",
                            ack.partitions(),
                            ctx.partitions
                        );
                        return (at, Err(Fault::protocol(why)));
                    }
                    self.state = LinkState::Up;
                    self.attempts = 0;
                    change = Some(Change::Up {
                        store_id: ack.store_id().unwrap_or("").to_string(),
                        map_version: (ack.map_version() != ctx.map_version)
                            .then(|| ack.map_version()),
                    });
                }
                LinkMessage::Ping(p) => {
                    let mut pong = Vec::new();
                    let _ = ctx.enc.pong(&mut pong, frame.request_id, p.nonce());
                    self.out.push_back(Chunk::Owned(pong));
                }
                // Our keep-alive's answer: its arrival already counted as traffic.
                LinkMessage::Pong(p) if KeepAliveNonce::from_raw(p.nonce()).is_some() => {}
                _ => on_frame(&frame),
            }
        }
        (at, Ok(change))
    }

    /// The frames of the next send on the current socket (sealed, with TLS), if any
    /// are queued and none is in flight.
    pub fn poll_transmit(&mut self) -> Option<(RawFd, Gen, Vec<Chunk>)> {
        if self.ops.has(LinkOps::SEND)
            || !matches!(self.state, LinkState::Hello { .. } | LinkState::Up)
        {
            return None;
        }
        let raw = self.fd.as_ref()?.as_raw_fd();
        let n = self.out.len().min(crate::uring::op::writev::MAX_IOV);
        let chunks = match self.tls.as_deref_mut() {
            None if n == 0 => return None,
            None => self.out.drain(..n).collect(),
            Some(tls) => {
                if tls.can_seal() && n > 0 {
                    let batch: Vec<Chunk> = self.out.drain(..n).collect();
                    if tls.seal_frames(&batch, false).is_err() {
                        self.seal_failed = true;
                        return None;
                    }
                }
                tls.take_sealed()?
            }
        };
        self.ops.set(LinkOps::SEND, true);
        Some((raw, self.generation, chunks))
    }

    /// A send of socket `generation` completed: `sent` bytes of `chunks` went out
    /// (`Err`: it failed); the rest goes back to the front of the queue.
    pub fn handle_sent(
        &mut self,
        generation: Gen,
        chunks: Vec<Chunk>,
        sent: Result<usize, i32>,
        now: Millis,
        jitter: u64,
    ) -> Option<Change> {
        self.ops.set(LinkOps::SEND, false);
        if generation != self.generation {
            return None;
        }
        match sent {
            Err(_) => self.fail(now, "send failed", jitter),
            Ok(n) => {
                match self.tls.as_deref_mut() {
                    Some(tls) => tls.handle_sent(chunks, n),
                    None => {
                        for ch in crate::worker::requeue(chunks, n).into_iter().rev() {
                            self.out.push_front(ch);
                        }
                    }
                }
                None
            }
        }
    }

    /// Every tick: give up on an attempt that takes too long, drop a silent link,
    /// ping an idle one.
    pub fn handle_tick(&mut self, now: Millis, ctx: &mut LinkCtx<'_>) -> Option<Change> {
        self.trim();
        if self.seal_failed {
            return self.fail(now, "TLS could not seal the link's frames", ctx.jitter);
        }
        match self.state {
            LinkState::Connecting { since } | LinkState::Hello { since }
                if now.saturating_sub(since) >= LINK_CONNECT_MS =>
            {
                self.fail(now, "no answer in time", ctx.jitter)
            }
            LinkState::Up if now.saturating_sub(self.last_rx) >= LINK_DEAD_MS => {
                self.fail(now, "silent", ctx.jitter)
            }
            LinkState::Up if now.saturating_sub(self.last_ping) >= LINK_PING_MS => {
                let mut ping = Vec::new();
                let nonce = KeepAliveNonce::new((now / 1000) as u32);
                let _ = ctx.enc.ping(&mut ping, 0, nonce.get());
                self.last_ping = now;
                self.out.push_back(Chunk::Owned(ping));
                None
            }
            _ => None,
        }
    }

    /// Give back what a burst of answers left in the receive buffer (see
    /// [`crate::mem`]): past [`INBUF_KEEP`] and mostly empty, it is shrunk.
    fn trim(&mut self) {
        let (len, capacity) = (self.inbuf.len(), self.inbuf.capacity());
        if capacity > INBUF_KEEP && len * 4 < capacity {
            self.inbuf.shrink_to((len * 2).max(INBUF_KEEP));
        }
    }

    /// The store's challenge (before its hello's answer): check its proof of the
    /// cluster secret over both nonces, and queue this link's proof.
    fn answer_challenge(
        &mut self,
        c: wire::link::internal::AuthChallenge<'_>,
        ctx: &mut LinkCtx<'_>,
    ) -> Result<(), Fault> {
        let (Some(secret), Some(edge)) = (ctx.secret, self.nonce) else {
            return Err(Fault::auth(
                "the store asks for the cluster secret and this edge has none (cluster_secret_file)",
            ));
        };
        let store = Nonce::from_slice(c.nonce().bytes())
            .ok_or_else(|| Fault::protocol("a challenge's nonce of the wrong length".into()))?;
        if !matches!(self.state, LinkState::Hello { .. }) || self.store_proven {
            return Err(Fault::protocol("a challenge out of turn".into()));
        }
        if !secret.verify(Side::Store, &edge, &store, c.proof().bytes()) {
            return Err(Fault::auth(
                "the store's proof of the cluster secret is wrong (another secret?)",
            ));
        }
        self.store_proven = true;
        let mut proof = Vec::new();
        let _ = ctx
            .enc
            .auth_proof(&mut proof, 0, &secret.prove(Side::Edge, &edge, &store));
        self.out.push_back(Chunk::Owned(proof));
        Ok(())
    }

    /// Down: forget the socket's state and wait for the backoff.
    fn fail(&mut self, now: Millis, why: &str, jitter: u64) -> Option<Change> {
        self.fail_for(now, Fault::protocol(why.to_string()), jitter)
    }

    /// [`fail`](Self::fail) for `fault`.
    fn fail_for(&mut self, now: Millis, fault: Fault, jitter: u64) -> Option<Change> {
        let was_up = self.state == LinkState::Up;
        if matches!(self.state, LinkState::Closed) {
            return None;
        }
        // Completions still to come for this socket carry its generation: bump it so
        // they are told apart from the next socket's.
        self.generation = self.generation.next();
        self.state = LinkState::Down {
            retry_at: now + backoff::backoff(self.attempts, jitter),
        };
        self.attempts += 1;
        self.inbuf = Vec::new();
        self.out.clear();
        self.nonce = None;
        self.store_proven = false;
        self.tls = None;
        self.seal_failed = false;
        Some(Change::Down {
            was_up,
            why: fault.why,
            fd: self.fd.take(),
            unauthenticated: fault.unauthenticated,
        })
    }

    /// A sibling worker's link to the same store just came up: the store is back, so
    /// a down link tries now instead of waiting out its backoff.
    pub fn handle_wake(&mut self, now: Millis) {
        if let LinkState::Down { retry_at } = &mut self.state {
            *retry_at = (*retry_at).min(now);
        }
    }

    /// When the next attempt is due, if the link is down.
    pub fn retry_at(&self) -> Option<Millis> {
        match self.state {
            LinkState::Down { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// Stopping: closed for good; returns the socket to shut down.
    pub fn close(&mut self) -> Option<OwnedFd> {
        self.state = LinkState::Closed;
        self.out.clear();
        self.fd.take()
    }
}
