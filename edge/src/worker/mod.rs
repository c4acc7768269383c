//! A worker: one thread, one io_uring ring, one `SO_REUSEPORT` listener, and the
//! connections it accepted, in a slab. Completions flow in (accepts, received
//! buffers, finished sends, the tick), each connection's state machine
//! ([`conn`]) turns bytes into frames to send, and at the end of each round every
//! connection with queued frames gets one vectored send. Nothing is shared with other
//! workers but read-only configuration, the stop flag and the metrics atomics.

pub mod conn;
mod dispatch;
pub mod link;
pub mod timer;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use wire::cluster::ClusterMap;
use wire::frame::{CloseCode, Opcode, SharedFrame};
use wire::link::{LinkEncoder, LinkLimits};

use crate::config::{Config, RecvMode};
use crate::hub::Hub;
use crate::metrics::WorkerMetrics;
use crate::uring::{BufRing, Chunk, Cqe, Ring, net};
use conn::{Conn, Ctx, Phase};
use link::Link;
use timer::{Tick, Wheel};

/// What a completion is for (the top byte of its user data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Cancel = 4,
    Tick = 5,
    Poll = 6,
    LinkConnect = 7,
    LinkRecv = 8,
    LinkSend = 9,
}

fn ud(op: Op, idx: u32, generation: u32) -> u64 {
    (op as u64) << 56 | (u64::from(generation) & 0xFF_FFFF) << 32 | u64::from(idx)
}

fn parse_ud(ud: u64) -> (u8, u32, u32) {
    ((ud >> 56) as u8, ((ud >> 32) & 0xFF_FFFF) as u32, ud as u32)
}

/// Receive buffers per worker at most, and their size.
const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 4096;
/// Receive buffers handed to the kernel at start; doubled whenever a receive finds
/// none free (see `BufRing::grow`).
const INITIAL_BUFFERS: u16 = 64;

/// Everything a worker thread owns. Field order is drop order: the ring goes before
/// the buffers it was given.
pub struct Worker {
    ring: Ring,
    bufs: BufRing,
    listener: Option<OwnedFd>,
    conns: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    wheel: Wheel,
    cfg: Arc<Config>,
    id: usize,
    metrics: Arc<WorkerMetrics>,
    all: Arc<Vec<Arc<WorkerMetrics>>>,
    stop: Arc<AtomicBool>,
    /// Connections with frames queued this round.
    dirty: Vec<u32>,
    drain: Option<Drain>,
    accepting: bool,
    /// The heartbeat ping, encoded once for every connection.
    ping: bytes::Bytes,
    /// Routing, subscriptions and fan-out.
    hub: Hub,
    /// One link per store, indexed as the cluster map's stores.
    links: Vec<Link>,
    /// Encoder for the links' own frames (hello, ping, pong).
    link_enc: LinkEncoder,
    /// Link operations in flight (including those of closed sockets).
    link_ops: usize,
    /// Jitter source.
    rng: u64,
    /// Client messages to deliver, encoded by `dispatch`.
    delivery: dispatch::Encoders,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("live", &self.live)
            .finish()
    }
}

/// A SIGTERM drain in progress.
#[derive(Debug)]
struct Drain {
    started: Instant,
    /// Ticks over which connections are closed.
    spread: u64,
    /// Ticks elapsed.
    ticks: u64,
}

/// Ticks a connection lingers after its close frame before it is closed anyway.
const LINGER_TICKS: Tick = 2;
/// Ticks a closing connection may take to flush its close frame.
const CLOSE_TICKS: Tick = 5;

/// How long `/healthz` says 503 before the listener closes, so that a load balancer's
/// health check sees it first.
const DRAIN_NOTICE_TICKS: u64 = 2;

/// A receive found no buffer free: hand the kernel more, if any are left.
fn grow_buffers(bufs: &mut BufRing, worker: usize) {
    let before = bufs.provided();
    let now = bufs.grow();
    if now != before {
        debug!(worker, before, now, "receive buffers grown");
    }
}

/// A configured duration in ticks (seconds).
fn secs(d: Duration) -> Tick {
    Tick::try_from(d.as_secs()).unwrap_or(Tick::MAX / 2)
}

/// The live connection in slot `idx`, if it is still of `generation`.
fn slot(conns: &mut [Option<Conn>], idx: u32, generation: u32) -> Option<&mut Conn> {
    conns
        .get_mut(idx as usize)?
        .as_mut()
        .filter(|c| c.generation & 0xFF_FFFF == generation)
}

impl Worker {
    /// A worker serving `listener`. Call on the worker's own thread: the ring accepts
    /// submissions only from the thread that created it.
    pub fn new(
        id: usize,
        listener: OwnedFd,
        cfg: Arc<Config>,
        metrics: Arc<WorkerMetrics>,
        all: Arc<Vec<Arc<WorkerMetrics>>>,
        stop: Arc<AtomicBool>,
        map: Arc<ClusterMap>,
    ) -> io::Result<Self> {
        let mut ring = Ring::new(4096)?;
        let bufs = BufRing::new(BUFFERS, BUFFER_SIZE, INITIAL_BUFFERS)?;
        ring.register(&bufs)?;
        Ok(Self {
            ring,
            bufs,
            listener: Some(listener),
            // Reserved up front: address space only until slots are used, and the slab
            // never moves (a doubling Vec would leave its old halves in the allocator,
            // resident, for as long as the process lives).
            conns: Vec::with_capacity(cfg.max_connections + 1),
            generations: Vec::with_capacity(cfg.max_connections + 1),
            free: Vec::new(),
            live: 0,
            wheel: Wheel::default(),
            cfg,
            id,
            metrics,
            all,
            stop,
            dirty: Vec::new(),
            drain: None,
            accepting: false,
            ping: SharedFrame::new(Opcode::Ping, b"").into_bytes(),
            links: map.stores.iter().map(|s| Link::new(s.addr)).collect(),
            hub: Hub::new(map),
            link_enc: LinkEncoder::new(&LinkLimits::default()),
            link_ops: 0,
            rng: 0x9E37_79B9_7F4A_7C15
                ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
                ^ u64::from(std::process::id()),
            delivery: dispatch::Encoders::default(),
        })
    }

    /// Run until drained (after the stop flag is set).
    pub fn run(mut self) -> io::Result<()> {
        info!(worker = self.id, ring = self.ring.flags, "worker running");
        self.arm_accept()?;
        self.ring.tick(Duration::from_secs(1), ud(Op::Tick, 0, 0))?;
        self.links_tick(0);
        let mut cqes: Vec<Cqe> = Vec::with_capacity(1024);
        let mut links_closed = false;
        loop {
            self.flush_links();
            self.ring.submit_and_wait(1)?;
            self.ring.completions(&mut cqes);
            for c in cqes.drain(..) {
                self.complete(c);
            }
            self.bufs.end_round();
            self.dispatch();
            self.flush_links();
            self.flush();
            if let Some(d) = &self.drain
                && (self.live == 0 && !self.accepting || d.started.elapsed() > self.cfg.drain)
            {
                if !links_closed {
                    // Links go last; their operations are drained before the ring goes.
                    links_closed = true;
                    self.close_links();
                }
                if self.link_ops == 0 {
                    info!(worker = self.id, left = self.live, "worker drained");
                    return Ok(());
                }
            }
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        if let Some(l) = &self.listener {
            self.ring
                .accept_multi(l.as_raw_fd(), ud(Op::Accept, 0, 0))?;
            self.accepting = true;
        }
        Ok(())
    }

    fn conn(&mut self, idx: u32, generation: u32) -> Option<&mut Conn> {
        slot(&mut self.conns, idx, generation)
    }

    fn complete(&mut self, c: Cqe) {
        let (op, generation, idx) = parse_ud(c.user_data);
        match op {
            x if x == Op::Accept as u8 => self.on_accept(c),
            x if x == Op::Recv as u8 => self.on_recv(idx, generation, c),
            x if x == Op::Send as u8 => self.on_send(idx, generation, c),
            x if x == Op::Tick as u8 => self.on_tick(),
            x if x == Op::Poll as u8 => self.on_poll(idx, generation, c),
            x if x == Op::LinkConnect as u8 => self.on_link_connect(idx as usize, generation, c),
            x if x == Op::LinkRecv as u8 => self.on_link_recv(idx as usize, generation, c),
            x if x == Op::LinkSend as u8 => self.on_link_send(idx as usize, generation, c),
            _ => {}
        }
    }

    fn on_accept(&mut self, c: Cqe) {
        if !c.more() {
            self.accepting = false;
        }
        if let Some(fd) = net::adopt(c.result) {
            WorkerMetrics::add(&self.metrics.accepted, 1);
            net::nodelay(&fd);
            self.add_conn(fd);
        } else if c.result != -libc::ECANCELED {
            debug!(worker = self.id, errno = -c.result, "accept failed");
        }
        if !self.accepting {
            if self.drain.is_some() {
                // Cancelled for the drain: the listener can go now.
                self.listener = None;
            } else if let Err(e) = self.arm_accept() {
                warn!(worker = self.id, error = %e, "cannot re-arm accept");
            }
        }
    }

    fn add_conn(&mut self, fd: OwnedFd) {
        let now = self.wheel.now();
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.next_generation(idx);
        let raw = fd.as_raw_fd();
        let mut conn = Conn::new(fd, generation, now);
        conn.due = now + secs(self.cfg.handshake_timeout);
        self.wheel.schedule((idx, generation), conn.due);
        let armed = match self.cfg.recv_mode {
            RecvMode::Multishot => self
                .ring
                .recv_multi(raw, ud(Op::Recv, idx, generation))
                .map(|()| conn.recv_armed = true),
            // A new connection's request head is on its way: receive it directly and
            // arm the poll once the handshake is done (idle connections then hold only
            // the poll).
            RecvMode::Poll => self
                .ring
                .recv_once(raw, ud(Op::Recv, idx, generation))
                .map(|()| conn.recv_armed = true),
        };
        if let Err(e) = armed {
            warn!(worker = self.id, error = %e, "cannot arm receive");
            return;
        }
        if let Some(slot) = self.conns.get_mut(idx as usize) {
            *slot = Some(conn);
        }
        self.live += 1;
        WorkerMetrics::add(&self.metrics.connections, 1);
    }

    /// A reused slot gets a new generation, so completions of its previous
    /// connection are recognised as stale.
    fn next_generation(&mut self, idx: u32) -> u32 {
        let i = idx as usize;
        if self.generations.len() <= i {
            self.generations.resize(i + 1, 0);
        }
        let g = (self.generations[i] + 1) & 0xFF_FFFF;
        self.generations[i] = g;
        g
    }

    fn ctx_parts(&self) -> (bool, bool) {
        let draining = self.drain.is_some();
        let refuse = draining || self.live > self.cfg.max_connections;
        (refuse, draining)
    }

    fn on_recv(&mut self, idx: u32, generation: u32, c: Cqe) {
        let now = self.wheel.now();
        let (refuse, draining) = self.ctx_parts();
        // Borrowed field by field: no reference-count traffic per completion.
        let mut ctx = Ctx {
            cfg: &self.cfg,
            metrics: &self.metrics,
            refuse,
            draining,
            all: &self.all,
            hub: &mut self.hub,
            me: (idx, generation),
        };
        let bid = c.buffer();
        let Some(conn) = slot(&mut self.conns, idx, generation) else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !c.more() {
            conn.recv_armed = false;
        }
        if c.result > 0 {
            if let Some(b) = bid {
                if let Some(data) = self.bufs.get(b, c.result as usize) {
                    conn.on_data(data, now, &mut ctx);
                }
                self.bufs.recycle(b);
            }
        } else if c.result == 0 {
            // The peer closed its side.
            conn.phase = Phase::Closing;
        } else if c.result == -libc::ENOBUFS {
            // Every buffer was in use: receive again (this round's are back now),
            // with more buffers if there is room.
            grow_buffers(&mut self.bufs, self.id);
        } else if c.result != -libc::ECANCELED {
            conn.phase = Phase::Closing;
        }
        if std::mem::take(&mut conn.upgraded) {
            // The first ping comes up to half a heartbeat early, spread by slot, so
            // that connections accepted in one burst are not all pinged on one tick
            // (one burst of sends, and of the memory they take, every heartbeat).
            let hb = secs(self.cfg.heartbeat);
            let spread = idx.wrapping_mul(0x9E37_79B9).rotate_left(16) % (hb / 2 + 1);
            conn.last_ping = now.saturating_sub(spread);
            conn.due = conn.last_ping + hb;
            self.wheel.schedule((idx, generation), conn.due);
        }
        let open = conn.reading();
        let raw = conn.fd.as_raw_fd();
        let poll_mode = self.cfg.recv_mode == RecvMode::Poll;
        if matches!(conn.phase, Phase::Lingering) && c.result <= 0 && c.result != -libc::ENOBUFS {
            // The peer closed (or failed) after our close frame: done.
            conn.phase = Phase::Closing;
        }
        let open = open && conn.reading();
        // Multishot: keep a receive armed. Poll mode: receive again at once only if
        // this one filled its buffer (more is likely waiting) or found none free.
        let rearm = open
            && !conn.recv_armed
            && (!poll_mode || c.result == BUFFER_SIZE as i32 || c.result == -libc::ENOBUFS);
        if poll_mode && open && !conn.poll_armed {
            match self.ring.poll_multi(raw, ud(Op::Poll, idx, generation)) {
                Ok(()) => conn.poll_armed = true,
                Err(_) => conn.phase = Phase::Closing,
            }
        }
        if rearm {
            let r = if poll_mode {
                self.ring.recv_once(raw, ud(Op::Recv, idx, generation))
            } else {
                self.ring.recv_multi(raw, ud(Op::Recv, idx, generation))
            };
            match r {
                Ok(()) => {
                    if let Some(conn) = self.conn(idx, generation) {
                        conn.recv_armed = true;
                    }
                }
                Err(_) => {
                    if let Some(conn) = self.conn(idx, generation) {
                        conn.phase = Phase::Closing;
                    }
                }
            }
        }
        self.after_event(idx, generation);
    }

    /// Poll mode: the socket became readable (or the poll ended).
    fn on_poll(&mut self, idx: u32, generation: u32, c: Cqe) {
        let Some(conn) = self.conn(idx, generation) else {
            return;
        };
        if !c.more() {
            conn.poll_armed = false;
        }
        let open = conn.reading();
        if c.result < 0 && c.result != -libc::ECANCELED && open {
            conn.phase = Phase::Closing;
        } else if c.result >= 0 && open {
            let raw = conn.fd.as_raw_fd();
            if !conn.poll_armed
                && self
                    .ring
                    .poll_multi(raw, ud(Op::Poll, idx, generation))
                    .is_ok()
                && let Some(conn) = self.conn(idx, generation)
            {
                conn.poll_armed = true;
            }
            self.recv_once_if_idle(idx, generation, raw);
        }
        self.after_event(idx, generation);
    }

    /// Poll mode: receive once now, unless a receive is already armed.
    fn recv_once_if_idle(&mut self, idx: u32, generation: u32, raw: std::os::fd::RawFd) {
        let needs_recv = self.conn(idx, generation).is_some_and(|c| !c.recv_armed);
        if needs_recv
            && self
                .ring
                .recv_once(raw, ud(Op::Recv, idx, generation))
                .is_ok()
            && let Some(conn) = self.conn(idx, generation)
        {
            conn.recv_armed = true;
        }
    }

    fn on_send(&mut self, idx: u32, generation: u32, c: Cqe) {
        let chunks = self.ring.send_done(c.user_data).unwrap_or_default();
        let Some(conn) = self.conn(idx, generation) else {
            return;
        };
        conn.sending = false;
        if c.result < 0 {
            conn.phase = Phase::Closing;
            conn.out.clear();
            conn.out_bytes = 0;
        } else {
            // Whatever the kernel did not take goes back to the front of the queue.
            let unsent = requeue(chunks, c.result as usize);
            let back: usize = unsent.iter().map(|c| c.as_slice().len()).sum();
            for ch in unsent.into_iter().rev() {
                conn.out.push_front(ch);
            }
            conn.out_bytes += back;
            WorkerMetrics::add(&self.metrics.bytes_out, c.result as u64);
        }
        self.dirty.push(idx);
        self.after_event(idx, generation);
    }

    /// After any event: mark for flushing, start closing, or free the slot.
    fn after_event(&mut self, idx: u32, generation: u32) {
        let max_outbound = self.cfg.max_outbound;
        let self_now = self.wheel.now();
        let metrics = &self.metrics;
        let Some(conn) = slot(&mut self.conns, idx, generation) else {
            return;
        };
        if conn.out_bytes > max_outbound && !matches!(conn.phase, Phase::Closing | Phase::Lingering)
        {
            // A slow consumer: drop what is queued and tell it why.
            conn.out.clear();
            conn.out_bytes = 0;
            conn.close_with(CloseCode::SLOW_CONSUMER, "slow consumer", metrics);
        }
        if matches!(conn.phase, Phase::Closing)
            && conn.close_after_flush
            && conn.linger
            && conn.out.is_empty()
            && !conn.sending
        {
            // Our close frame is out: half-close, then read and drop until the peer
            // closes or the linger deadline passes.
            net::shutdown_write(&conn.fd);
            conn.phase = Phase::Lingering;
            conn.close_after_flush = false;
            conn.linger = false;
            conn.due = self_now + LINGER_TICKS;
            let due = conn.due;
            let (reading, raw) = (conn.recv_armed || conn.poll_armed, conn.fd.as_raw_fd());
            self.wheel.schedule((idx, generation), due);
            if reading && self.cfg.recv_mode == RecvMode::Poll {
                // Bytes may already be waiting (no new readiness event would come for
                // them): read once now.
                self.recv_once_if_idle(idx, generation, raw);
            }
            if !reading {
                let armed = match self.cfg.recv_mode {
                    RecvMode::Poll => self.ring.poll_multi(raw, ud(Op::Poll, idx, generation)),
                    RecvMode::Multishot => self.ring.recv_multi(raw, ud(Op::Recv, idx, generation)),
                };
                let mode = self.cfg.recv_mode;
                if let Some(conn) = self.conn(idx, generation) {
                    match (armed, mode) {
                        (Ok(()), RecvMode::Poll) => conn.poll_armed = true,
                        (Ok(()), RecvMode::Multishot) => conn.recv_armed = true,
                        (Err(_), _) => conn.phase = Phase::Closing,
                    }
                }
            }
            return;
        }
        let flush = !conn.out.is_empty() && !conn.sending;
        let closing = matches!(conn.phase, Phase::Closing)
            && (!conn.close_after_flush || (conn.out.is_empty() && !conn.sending));
        let recv_armed = conn.recv_armed || conn.poll_armed;
        let sending = conn.sending;
        if flush {
            self.dirty.push(idx);
        }
        if closing {
            // Closing for good: stop reading (see `Conn::reading`).
            if let Some(conn) = self.conn(idx, generation) {
                conn.close_after_flush = false;
            }
            if recv_armed || sending {
                let cancel = self
                    .conn(idx, generation)
                    .is_some_and(|c| !std::mem::replace(&mut c.cancelling, true));
                if cancel
                    && let Some((poll, recv, send)) = self
                        .conn(idx, generation)
                        .map(|c| (c.poll_armed, c.recv_armed, c.sending))
                {
                    // Cancel the receive, the poll and a send stuck on a peer that
                    // stopped reading, each by its user data: the kernel finds each in
                    // its hash at once (cancelling by descriptor walks every pending
                    // operation of the ring, which made mass closes quadratic). Their
                    // completions disarm them, then the slot goes.
                    for (armed, op) in [(poll, Op::Poll), (recv, Op::Recv), (send, Op::Send)] {
                        if armed {
                            let _ = self
                                .ring
                                .cancel(ud(op, idx, generation), ud(Op::Cancel, idx, generation));
                        }
                    }
                }
            } else {
                self.release(idx);
            }
        } else if matches!(
            self.conn(idx, generation).map(|c| &c.phase),
            Some(Phase::Closing)
        ) && let Some(conn) = self.conn(idx, generation)
            && !std::mem::replace(&mut conn.deadline_set, true)
        {
            // Waiting to flush a close frame: not forever (a peer that stopped
            // reading would hold the slot and its send).
            conn.due = self_now + CLOSE_TICKS;
            let due = conn.due;
            self.wheel.schedule((idx, generation), due);
        }
    }

    fn release(&mut self, idx: u32) {
        if let Some(slot) = self.conns.get_mut(idx as usize)
            && let Some(conn) = slot.take()
        {
            // Dropping the descriptor closes the socket.
            let generation = conn.generation & 0xFF_FFFF;
            drop(conn);
            self.hub.conn_closed((idx, generation));
            self.free.push(idx);
            self.live -= 1;
            WorkerMetrics::sub(&self.metrics.connections, 1);
        }
    }

    /// One vectored send per connection with queued frames and none in flight.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for idx in dirty {
            let Some(conn) = self.conns.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            if conn.sending || conn.out.is_empty() {
                continue;
            }
            let n = conn.out.len().min(crate::uring::op::writev::MAX_IOV);
            // All of it (the usual case): the queue's own buffer goes with the send,
            // so an idle connection keeps no allocation behind.
            let chunks: Vec<Chunk> = if n == conn.out.len() {
                std::mem::take(&mut conn.out).into()
            } else {
                conn.out.drain(..n).collect()
            };
            let bytes: usize = chunks.iter().map(|c| c.as_slice().len()).sum();
            conn.out_bytes -= bytes;
            conn.sending = true;
            let generation = conn.generation & 0xFF_FFFF;
            let raw = conn.fd.as_raw_fd();
            if self
                .ring
                .writev(raw, chunks, ud(Op::Send, idx, generation))
                .is_err()
                && let Some(conn) = self.conn(idx, generation)
            {
                conn.sending = false;
                conn.phase = Phase::Closing;
            }
        }
    }

    fn on_tick(&mut self) {
        let mut due = Vec::new();
        self.wheel.advance(&mut due);
        let now = self.wheel.now();
        self.links_tick(now);
        self.publish_hub();
        self.hub.trim();
        self.ring.trim();
        crate::mem::trim_vec(&mut self.dirty);
        crate::mem::trim_vec(&mut self.free);
        if self.stop.load(Ordering::Relaxed) && self.drain.is_none() {
            info!(worker = self.id, connections = self.live, "draining");
            let spread = (self.cfg.drain.as_secs() / 2).max(1);
            self.drain = Some(Drain {
                started: Instant::now(),
                spread,
                ticks: 0,
            });
        }
        if let Some(d) = &mut self.drain {
            d.ticks += 1;
            let ticks = d.ticks;
            let spread = d.spread;
            if ticks == DRAIN_NOTICE_TICKS && self.accepting {
                let _ = self.ring.cancel(ud(Op::Accept, 0, 0), ud(Op::Cancel, 0, 0));
            }
            if ticks > DRAIN_NOTICE_TICKS {
                // Close a share of what is left each tick, so clients reconnect in a
                // smooth wave rather than all at once.
                let left = spread.saturating_sub(ticks - DRAIN_NOTICE_TICKS).max(1);
                let n = self.live.div_ceil(left as usize);
                self.close_some(n, CloseCode::GOING_AWAY, "server going away");
            }
        }
        for (idx, generation) in due {
            self.check(idx, generation, now);
        }
        let _ = self.ring.tick(Duration::from_secs(1), ud(Op::Tick, 0, 0));
    }

    fn close_some(&mut self, n: usize, code: CloseCode, reason: &str) {
        let metrics = Arc::clone(&self.metrics);
        let mut picked = Vec::new();
        for (i, slot) in self.conns.iter_mut().enumerate() {
            if picked.len() >= n {
                break;
            }
            if let Some(c) = slot
                && !matches!(c.phase, Phase::Closing | Phase::Lingering)
            {
                c.close_with(code, reason, &metrics);
                picked.push((i as u32, c.generation & 0xFF_FFFF));
            }
        }
        for (i, g) in picked {
            self.after_event(i, g);
        }
    }

    /// A connection's timer fired: handshake deadline, heartbeat, silence.
    fn check(&mut self, idx: u32, generation: u32, now: Tick) {
        let hb = secs(self.cfg.heartbeat);
        let metrics = Arc::clone(&self.metrics);
        let ping = self.ping.clone();
        let mut reschedule = None;
        {
            let Some(conn) = self.conn(idx, generation) else {
                return;
            };
            if conn.due != now {
                return;
            }
            match conn.phase {
                Phase::Http { .. } => {
                    // Slowloris: no complete head in time.
                    WorkerMetrics::add(&metrics.rejected_timeout, 1);
                    conn.phase = Phase::Closing;
                }
                Phase::Ws { .. } => {
                    if now.saturating_sub(conn.last_rx) >= 2 * hb {
                        conn.close_with(CloseCode::GOING_AWAY, "no heartbeat", &metrics);
                    } else {
                        if now.saturating_sub(conn.last_ping) >= hb {
                            conn.queue_shared(ping.clone());
                            conn.last_ping = now;
                        }
                        let next = (conn.last_ping + hb).min(conn.last_rx + 2 * hb);
                        conn.due = next.max(now + 1);
                        reschedule = Some(conn.due);
                    }
                }
                Phase::Lingering => conn.phase = Phase::Closing,
                Phase::Closing => {
                    // The close frame could not be flushed in time: give up on it.
                    conn.close_after_flush = false;
                    conn.linger = false;
                    conn.out.clear();
                    conn.out_bytes = 0;
                }
            }
        }
        if let Some(at) = reschedule {
            self.wheel.schedule((idx, generation), at);
        }
        self.after_event(idx, generation);
    }
}

/// What a send did not take of `chunks` (`sent` bytes went out), in order.
fn requeue(chunks: Vec<Chunk>, mut sent: usize) -> Vec<Chunk> {
    let mut unsent = Vec::new();
    for mut ch in chunks {
        let len = ch.as_slice().len();
        if sent >= len {
            sent -= len;
        } else {
            ch.advance(sent);
            sent = 0;
            unsent.push(ch);
        }
    }
    unsent
}
