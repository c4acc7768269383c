//! The worker's links to stores, one persistent TCP link per store: connect, hello,
//! then link frames both ways. Received bytes are cut into verified frames and handed
//! to the [`Hub`](crate::hub::Hub); frames the hub queued for a store go out in one
//! vectored send per round. A link that fails (connect refused, reset, malformed frame,
//! silent for [`LINK_DEAD_TICKS`]) is closed and reconnected with jittered exponential
//! backoff; the hub is told when it goes down and when it is up again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use tracing::{info, warn};
use wire::link::{LinkLimits, LinkMessage, decode_frame};

use super::timer::Tick;
use super::{Worker, requeue};
use crate::uring::{Chunk, Cqe, Gen, OpKind, Token, net};

/// Ticks between pings on an idle link.
const LINK_PING_TICKS: Tick = 5;
/// Ticks of silence (a ping is answered) after which a link is declared dead.
const LINK_DEAD_TICKS: Tick = 15;
/// Ticks a connect plus hello may take.
const LINK_CONNECT_TICKS: Tick = 5;
/// Marks the nonces of keep-alive pings.
const KEEPALIVE: u64 = 1 << 63;
/// Longest pause between reconnect attempts, in ticks.
const MAX_BACKOFF_TICKS: Tick = 8;

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; the next attempt is due at `retry_at`.
    Down,
    /// Connect in flight.
    Connecting,
    /// Connected, hello sent, waiting for its answer.
    Hello,
    /// Hello answered: requests flow.
    Up,
    /// Closed for good (the worker is stopping).
    Closed,
}

impl LinkState {
    /// The value `/metrics` shows: 0 down, 1 connecting, 2 up.
    pub fn metric(self) -> u64 {
        match self {
            Self::Down | Self::Closed => 0,
            Self::Connecting | Self::Hello => 1,
            Self::Up => 2,
        }
    }
}

/// One link to one store.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    fd: Option<OwnedFd>,
    /// Where it is.
    pub state: LinkState,
    /// Bumped on every reconnect: completions of an earlier socket are told apart.
    generation: Gen,
    inbuf: Vec<u8>,
    out: VecDeque<Chunk>,
    sending: bool,
    recv_armed: bool,
    attempts: u32,
    retry_at: Tick,
    since: Tick,
    last_rx: Tick,
    last_ping: Tick,
}

impl Link {
    /// A link to `addr`, down and due at once.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            fd: None,
            state: LinkState::Down,
            generation: Gen::default(),
            inbuf: Vec::new(),
            out: VecDeque::new(),
            sending: false,
            recv_armed: false,
            attempts: 0,
            retry_at: 0,
            since: 0,
            last_rx: 0,
            last_ping: 0,
        }
    }
}

impl Worker {
    fn next_random(&mut self) -> u64 {
        // xorshift64: jitter only, no need for quality.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn link_connect(&mut self, s: usize) {
        let now = self.wheel.now();
        let Some(link) = self.links.get_mut(s) else {
            return;
        };
        link.generation = link.generation.next();
        link.since = now;
        link.last_rx = now;
        let fd = match net::link_socket(link.addr) {
            Ok(fd) => fd,
            Err(e) => {
                warn!(worker = self.id, store = s, error = %e, "cannot create a link socket");
                self.link_fail(s, "socket");
                return;
            }
        };
        let (raw, addr, generation) = (fd.as_raw_fd(), link.addr, link.generation);
        link.fd = Some(fd);
        link.state = LinkState::Connecting;
        if self
            .ring
            .connect(
                raw,
                addr,
                Token::new(OpKind::LinkConnect, s as u32, generation),
            )
            .is_ok()
        {
            self.link_ops += 1;
        } else {
            self.link_fail(s, "submit");
        }
        self.publish_link(s);
    }

    pub(super) fn on_link_connect(&mut self, s: usize, generation: Gen, c: &Cqe) {
        self.link_ops -= 1;
        let Some(link) = self.links.get_mut(s).filter(|l| l.generation == generation) else {
            return;
        };
        if c.result < 0 {
            let e = std::io::Error::from_raw_os_error(-c.result);
            if link.attempts == 0 {
                warn!(worker = self.id, store = s, addr = %link.addr, error = %e, "store link: connect failed");
            }
            self.link_fail(s, "connect failed");
            return;
        }
        link.state = LinkState::Hello;
        let mut hello = Vec::new();
        let edge_id = format!("edge-{}", std::process::id());
        let _ = self.link_enc.hello(
            &mut hello,
            0,
            &edge_id,
            self.id as u16,
            self.hub.map().version,
        );
        link.out.push_back(Chunk::Owned(hello));
        self.link_arm_recv(s, generation);
        self.publish_link(s);
    }

    /// Keep a multishot receive armed on a live link (of `generation`).
    fn link_arm_recv(&mut self, s: usize, generation: Gen) {
        let Some(link) = self.links.get_mut(s).filter(|l| l.generation == generation) else {
            return;
        };
        if link.recv_armed || !matches!(link.state, LinkState::Hello | LinkState::Up) {
            return;
        }
        let Some(raw) = link.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        if self
            .ring
            .recv_multi(raw, Token::new(OpKind::LinkRecv, s as u32, generation))
            .is_ok()
        {
            self.link_ops += 1;
            if let Some(link) = self.links.get_mut(s) {
                link.recv_armed = true;
            }
        } else {
            self.link_fail(s, "submit");
        }
    }

    pub(super) fn on_link_recv(&mut self, s: usize, generation: Gen, c: &Cqe) {
        let bid = c.buffer();
        let now = self.wheel.now();
        if !c.more() {
            self.link_ops -= 1;
        }
        let Some(link) = self.links.get_mut(s).filter(|l| l.generation == generation) else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !c.more() {
            link.recv_armed = false;
        }
        if c.result > 0 {
            if let Some(b) = bid {
                if let Some(data) = self.bufs.get(b, c.result as usize) {
                    link.inbuf.extend_from_slice(data);
                }
                self.bufs.recycle(b);
            }
            link.last_rx = now;
            self.link_frames(s, generation);
        } else if c.result == 0 {
            self.link_fail(s, "closed by the store");
            return;
        } else if c.result == -libc::ENOBUFS {
            super::grow_buffers(&mut self.bufs, self.id);
        } else if c.result != -libc::ECANCELED {
            self.link_fail(s, "receive failed");
            return;
        }
        self.link_arm_recv(s, generation);
    }

    /// Cut the link's received bytes into frames and act on each.
    fn link_frames(&mut self, s: usize, generation: Gen) {
        let limits = LinkLimits::default();
        let Some(link) = self.links.get_mut(s) else {
            return;
        };
        let buf = std::mem::take(&mut link.inbuf);
        let mut at = 0;
        let mut failed: Option<String> = None;
        while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
            match decode_frame(rest, &limits) {
                Ok(Some((frame, used))) => {
                    at += used;
                    match frame.message {
                        LinkMessage::HelloAck(ack) => {
                            let partitions = self.hub.map().partitions;
                            if ack.partitions() != partitions {
                                // Positions and routing would disagree: requests would
                                // land on the wrong partitions and answers go nowhere.
                                // Refuse the link (its keys answer `unavailable`).
                                failed = Some(format!(
                                    "store has {} partitions, the edge's cluster map {partitions}: fix the maps",
                                    ack.partitions()
                                ));
                                break;
                            }
                            let map_version = self.hub.map().version;
                            if ack.map_version() != map_version {
                                warn!(
                                    worker = self.id,
                                    store = s,
                                    ours = map_version,
                                    theirs = ack.map_version(),
                                    "store serves another partition map version"
                                );
                            }
                            if let Some(link) = self.links.get_mut(s) {
                                link.state = LinkState::Up;
                                link.attempts = 0;
                            }
                            info!(
                                worker = self.id,
                                store = s,
                                id = ack.store_id().unwrap_or(""),
                                "store link up"
                            );
                            self.hub.link_up(s);
                            self.publish_link(s);
                        }
                        LinkMessage::Ping(p) => {
                            let mut pong = Vec::new();
                            let _ = self.link_enc.pong(&mut pong, frame.request_id, p.nonce());
                            if let Some(link) = self.links.get_mut(s) {
                                link.out.push_back(Chunk::Owned(pong));
                            }
                        }
                        LinkMessage::Pong(p) => self.hub.on_pong(p.nonce()),
                        _ => self.hub.on_frame(&frame),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(format!("malformed frame: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failed {
            warn!(worker = self.id, store = s, "store link: {why}");
            self.link_fail(s, "refused");
            return;
        }
        if let Some(link) = self.links.get_mut(s).filter(|l| l.generation == generation) {
            let mut buf = buf;
            buf.drain(..at.min(buf.len()));
            link.inbuf = buf;
        }
    }

    pub(super) fn on_link_send(&mut self, s: usize, generation: Gen, c: Cqe) {
        let chunks = c.sent;
        self.link_ops -= 1;
        let Some(link) = self.links.get_mut(s).filter(|l| l.generation == generation) else {
            return;
        };
        link.sending = false;
        if c.result < 0 {
            self.link_fail(s, "send failed");
            return;
        }
        for ch in requeue(chunks, c.result as usize).into_iter().rev() {
            link.out.push_front(ch);
        }
    }

    /// Close a link and schedule its reconnection.
    fn link_fail(&mut self, s: usize, why: &str) {
        let now = self.wheel.now();
        let r = self.next_random();
        let Some(link) = self.links.get_mut(s) else {
            return;
        };
        if link.state == LinkState::Up {
            warn!(worker = self.id, store = s, addr = %link.addr, "store link down: {why}");
        }
        if let Some(fd) = link.fd.take() {
            // Operations still armed on it complete once it is shut down; their
            // completions carry the old generation and only release buffers.
            net::shutdown_both(&fd);
        }
        link.generation = link.generation.next();
        link.state = LinkState::Down;
        link.inbuf = Vec::new();
        link.out.clear();
        link.sending = false;
        link.recv_armed = false;
        let base = (1 << link.attempts.min(3)).min(MAX_BACKOFF_TICKS);
        link.attempts += 1;
        // Jitter: spread reconnects of many workers and edges over the next interval.
        link.retry_at = now + base / 2 + 1 + (r % u64::from(base.max(1))) as Tick;
        self.hub.link_down(s);
        self.publish_link(s);
    }

    /// Every round: frames the hub queued go to their links, one send per link.
    pub(super) fn flush_links(&mut self) {
        for s in 0..self.links.len() {
            let up = self.hub.is_up(s);
            let Some(link) = self.links.get_mut(s) else {
                continue;
            };
            if up
                && link.state == LinkState::Up
                && let Some(out) = self.hub.link_out.get_mut(s)
                && !out.is_empty()
            {
                link.out.push_back(Chunk::Owned(std::mem::take(out)));
            }
            if link.sending
                || link.out.is_empty()
                || !matches!(link.state, LinkState::Hello | LinkState::Up)
            {
                continue;
            }
            let Some(raw) = link.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                continue;
            };
            let n = link.out.len().min(crate::uring::op::writev::MAX_IOV);
            let chunks: Vec<Chunk> = link.out.drain(..n).collect();
            link.sending = true;
            let generation = link.generation;
            if self
                .ring
                .writev(
                    raw,
                    chunks,
                    Token::new(OpKind::LinkSend, s as u32, generation),
                )
                .is_ok()
            {
                self.link_ops += 1;
            } else {
                self.link_fail(s, "submit");
            }
        }
    }

    /// Every tick: reconnect what is due, ping what is idle, drop what is silent.
    pub(super) fn links_tick(&mut self, now: Tick) {
        for s in 0..self.links.len() {
            let Some(link) = self.links.get(s) else {
                continue;
            };
            match link.state {
                LinkState::Down if now >= link.retry_at => self.link_connect(s),
                LinkState::Connecting | LinkState::Hello
                    if now.saturating_sub(link.since) >= LINK_CONNECT_TICKS =>
                {
                    self.link_fail(s, "no answer in time");
                }
                LinkState::Up if now.saturating_sub(link.last_rx) >= LINK_DEAD_TICKS => {
                    self.link_fail(s, "silent");
                }
                LinkState::Up if now.saturating_sub(link.last_ping) >= LINK_PING_TICKS => {
                    let mut ping = Vec::new();
                    // Keep-alive nonces: the top bit and the tick, with bits 32 to 62
                    // zero, which no watch id (the hub's nonces) has.
                    let _ = self.link_enc.ping(&mut ping, 0, KEEPALIVE | u64::from(now));
                    if let Some(link) = self.links.get_mut(s) {
                        link.last_ping = now;
                        link.out.push_back(Chunk::Owned(ping));
                    }
                }
                _ => {}
            }
        }
    }

    /// Stopping: close every link for good.
    pub(super) fn close_links(&mut self) {
        for link in &mut self.links {
            if let Some(fd) = link.fd.take() {
                net::shutdown_both(&fd);
            }
            link.state = LinkState::Closed;
            link.out.clear();
        }
    }

    /// Show a link's state in `/metrics`.
    fn publish_link(&self, s: usize) {
        if let (Some(link), Some(m)) = (self.links.get(s), self.metrics.links.get(s)) {
            m.store(link.state.metric(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}
