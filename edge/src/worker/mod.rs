//! A worker: one thread, one io_uring ring, its `SO_REUSEPORT` listeners (cleartext,
//! and TLS when configured), the
//! connections it accepted (in a [`slab`]) and its links to the stores. This file is
//! the run loop: reap completions, route each by its token to the connection
//! ([`conns`]), link ([`link`]) or tick ([`tick`]) it is for, hand the hub's output to
//! connections ([`dispatch`]; `latest` subscriptions of connections that are behind
//! are conflated in [`conflate`]), then give every connection and link with frames queued
//! one vectored send. The state machines ([`conn`], [`link`]) do no I/O; the worker
//! turns what they poll into ring operations. Nothing is shared with other workers but
//! [`Shared`]: read-only configuration and map, the stop flag, the metrics atomics,
//! the token verifier and TLS certificates, the workers' ring descriptors (a link that comes up wakes its
//! siblings' links to the same store with a message to their rings) and connection
//! counts (a new connection goes to the least-loaded worker, [`admission`], handed
//! over through its ring).

mod admission;
pub mod compress;
mod conflate;
pub mod conn;
mod conns;
mod dispatch;
pub mod link;
mod links;
pub mod per_ip;
mod presence;
pub mod slab;
mod streams;
mod tick;
pub mod timer;

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use tracing::{debug, info};
use wire::cluster::ClusterMap;
use wire::frame::{Opcode, SharedFrame};

use crate::config::Config;
use crate::hub::{ConnRef, Hub};
use crate::metrics::WorkerMetrics;
use crate::uring::{BufRing, Chunk, Cqe, Gen, OpKind, Ring, Token};
use conn::Conn;
use slab::{Key, Slab};
use timer::{Tick, Wheel};

/// Receive buffers per worker at most, their size, and how many are handed to the
/// kernel at start (doubled whenever a receive finds none free, see `BufRing::grow`),
/// when buffers are consumed incrementally: large, so that a 16 KiB message arrives
/// whole, while small messages pack one after another into one buffer.
const INC_BUFFERS: u16 = 128;
const INC_BUFFER_SIZE: usize = 64 * 1024;
const INC_INITIAL_BUFFERS: u16 = 4;
/// The same where the kernel cannot consume buffers incrementally (before 6.12): each
/// receive takes a whole buffer, so they are small.
const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 4096;
const INITIAL_BUFFERS: u16 = 64;

/// What every worker of the process shares.
#[derive(Debug)]
pub struct Shared {
    pub cfg: Arc<Config>,
    pub map: Arc<ClusterMap>,
    /// Set on SIGTERM: drain and stop.
    pub stop: Arc<AtomicBool>,
    /// Every worker's metrics, indexed by worker id (a `/metrics` answer sums them).
    pub metrics: Arc<Vec<Arc<WorkerMetrics>>>,
    /// Every worker's ring descriptor, indexed by worker id; -1 until it runs and
    /// after it ends.
    pub rings: Vec<AtomicI32>,
    /// Every worker's connections plus places reserved on it (see `admission`).
    pub load: Vec<AtomicU32>,
    /// Connections and new connections per source address, across the workers.
    pub per_ip: per_ip::PerIp,
    /// Client tokens are checked against this (`None`: auth is off); it changes
    /// when the key file does.
    pub keys: Option<Arc<crate::auth::keys::Keys>>,
    /// The TLS listener's certificates (`None`: no TLS listener); they change when
    /// their files do.
    pub certs: Option<Arc<crate::tls::certs::Certs>>,
    /// The cluster secret store links prove (`None`: they are not authenticated).
    pub cluster_secret: Option<Arc<wire::link::auth::ClusterSecret>>,
    /// TLS on the store links: their client config (`None`: cleartext).
    pub link_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Shared {
    /// What `workers` workers share, none running yet.
    pub fn new(
        cfg: Arc<Config>,
        map: Arc<ClusterMap>,
        stop: Arc<AtomicBool>,
        metrics: Arc<Vec<Arc<WorkerMetrics>>>,
        keys: Option<Arc<crate::auth::keys::Keys>>,
        certs: Option<Arc<crate::tls::certs::Certs>>,
    ) -> Self {
        let rings = (0..cfg.workers).map(|_| AtomicI32::new(-1)).collect();
        let load = (0..cfg.workers).map(|_| AtomicU32::new(0)).collect();
        let per_ip = per_ip::PerIp::new(cfg.per_ip);
        Self {
            cfg,
            map,
            stop,
            metrics,
            rings,
            load,
            per_ip,
            keys,
            certs,
            cluster_secret: None,
            link_tls: None,
        }
    }
}

/// Everything a worker thread owns. Field order is drop order: the ring goes before
/// the buffers it was given.
pub struct Worker {
    ring: Ring,
    bufs: BufRing,
    /// The cleartext and the TLS listener, as [`conns::Transport`] indexes them.
    listeners: [Option<OwnedFd>; 2],
    conns: Slab<Conn>,
    wheel: Wheel<Key>,
    cfg: Arc<Config>,
    id: usize,
    metrics: Arc<WorkerMetrics>,
    shared: Arc<Shared>,
    /// Connections with frames queued and no send yet, in the order they got them
    /// (each at most once: [`Conn::list_for_send`]); a round sends to at most
    /// [`conns::SENDS_PER_ROUND`] of them.
    dirty: VecDeque<Key>,
    /// Connections with an answer of their own queued (to a request, or an echo): sent
    /// to first, so that a request does not wait behind a fan-out.
    answers: VecDeque<Key>,
    drain: Option<tick::Drain>,
    /// Each listener's accept is armed.
    accepting: [bool; 2],
    /// The heartbeat ping, encoded once for every connection.
    ping: bytes::Bytes,
    /// Routing, subscriptions and fan-out.
    hub: Hub,
    /// One link per store, indexed as the cluster map's stores.
    links: links::LinkSet,
    /// Client messages to deliver, encoded by `dispatch`.
    delivery: dispatch::Encoders,
    /// Changes of `latest` subscriptions held for connections that are behind.
    conflation: conflate::Conflation,
    /// The event streams' positions.
    streams: streams::Streams,
    /// Presence events waiting for their interval.
    batches: presence::Batches,
    /// The verifier tokens are checked against (`None`: auth is off), and the
    /// generation of [`Shared::keys`] it is.
    verifier: Option<Arc<crate::auth::token::Verifier>>,
    keys_seen: u64,
    /// The TLS config new sessions start with, and the generation of
    /// [`Shared::certs`] it is.
    tls: Option<Arc<rustls::ServerConfig>>,
    tls_seen: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("live", &self.conns.len())
            .finish()
    }
}

/// A receive found no buffer free: hand the kernel more, if any are left.
fn grow_buffers(bufs: &mut BufRing, worker: usize) {
    let before = bufs.provided();
    let now = bufs.grow();
    if now != before {
        debug!(worker, before, now, "receive buffers grown");
    }
}

/// The ring's receive buffers: consumed incrementally where the kernel can.
fn receive_buffers(ring: &mut Ring) -> io::Result<BufRing> {
    let inc = BufRing::new(INC_BUFFERS, INC_BUFFER_SIZE, INC_INITIAL_BUFFERS, true)?;
    if ring.register(&inc).is_ok() {
        return Ok(inc);
    }
    let whole = BufRing::new(BUFFERS, BUFFER_SIZE, INITIAL_BUFFERS, false)?;
    ring.register(&whole)?;
    Ok(whole)
}

/// A configured duration in ticks (seconds).
fn secs(d: Duration) -> Tick {
    Tick::try_from(d.as_secs()).unwrap_or(Tick::MAX / 2)
}

/// The slab key of a connection the hub names.
fn key_of(c: ConnRef) -> Key {
    Key {
        slot: c.0,
        generation: Gen::from_bits(c.1),
    }
}

/// How the hub names the connection at `key`.
fn conn_ref(key: Key) -> ConnRef {
    (key.slot, key.generation.get())
}

impl Worker {
    /// A worker serving `listeners` (cleartext, TLS). Call on the worker's own thread:
    /// the ring accepts submissions only from the thread that created it.
    pub fn new(
        id: usize,
        listeners: [Option<OwnedFd>; 2],
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let mut ring = Ring::new(4096)?;
        let bufs = receive_buffers(&mut ring)?;
        if id == 0 {
            info!(?bufs, "receive buffers");
        }
        let metrics = shared
            .metrics
            .get(id)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no metrics for worker {id}")))?;
        let ring_slot = shared
            .rings
            .get(id)
            .ok_or_else(|| io::Error::other(format!("no ring slot for worker {id}")))?;
        ring_slot.store(ring.fd(), Ordering::Release);
        let (cfg, map) = (Arc::clone(&shared.cfg), Arc::clone(&shared.map));
        let max_subs = cfg.max_subscriptions;
        let keys_seen = shared.keys.as_ref().map_or(0, |k| k.generation());
        let verifier = shared.keys.as_ref().map(|k| k.current());
        let tls_seen = shared.certs.as_ref().map_or(0, |c| c.generation());
        let tls = shared.certs.as_ref().map(|c| c.current());
        let cluster_secret = shared.cluster_secret.clone();
        let link_tls = shared.link_tls.clone();
        let delivery = dispatch::Encoders::new(&cfg);
        Ok(Self {
            ring,
            bufs,
            listeners,
            conns: Slab::with_capacity(cfg.max_connections + 1),
            wheel: Wheel::default(),
            cfg,
            id,
            metrics,
            shared,
            dirty: VecDeque::new(),
            answers: VecDeque::new(),
            drain: None,
            accepting: [false; 2],
            ping: SharedFrame::new(Opcode::Ping, b"").into_bytes(),
            links: links::LinkSet::new(
                &map,
                id,
                0x9E37_79B9_7F4A_7C15
                    ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
                    ^ u64::from(std::process::id()),
                (cluster_secret, link_tls),
            ),
            hub: Hub::new(map)
                .with_max_subs(max_subs)
                .with_presence(links::edge_id(), id as u16),
            delivery,
            conflation: conflate::Conflation::default(),
            streams: streams::Streams::default(),
            batches: presence::Batches::default(),
            verifier,
            keys_seen,
            tls,
            tls_seen,
        })
    }

    /// Run until drained (after the stop flag is set): each round reaps completions,
    /// hands the hub's output to connections and sends what is queued.
    pub fn run(mut self) -> io::Result<()> {
        info!(worker = self.id, ring = self.ring.flags, "worker running");
        self.arm_accept()?;
        self.ring
            .tick(Duration::from_secs(1), Token::worker(OpKind::Tick))?;
        self.links_tick(self.links.now());
        let mut cqes: Vec<Cqe> = Vec::with_capacity(1024);
        let mut links_closed = false;
        loop {
            self.flush_links();
            // Sends left for the next round: look at what completed, without waiting.
            self.ring
                .submit_and_wait(usize::from(self.dirty.is_empty()))?;
            self.ring.completions(&mut cqes);
            for c in cqes.drain(..) {
                self.complete(c);
            }
            self.bufs.end_round();
            self.dispatch();
            self.flush_links();
            self.flush();
            if let Some(d) = &self.drain
                && (self.conns.len() == 0 && !self.accepting()
                    || d.started.elapsed() > self.cfg.drain)
            {
                if !links_closed {
                    // Links go last; their operations are drained before the ring goes.
                    links_closed = true;
                    self.close_links();
                }
                if !self.link_ops_in_flight() {
                    info!(worker = self.id, left = self.conns.len(), "worker drained");
                    return Ok(());
                }
            }
        }
    }

    /// Route a completion by its token.
    fn complete(&mut self, c: Cqe) {
        let Some(t) = c.token else {
            return;
        };
        let key = Key {
            slot: t.slot,
            generation: t.generation,
        };
        match t.kind {
            OpKind::Accept => self.on_accept(t.slot, &c),
            OpKind::Recv => self.on_recv(key, &c),
            OpKind::Send => self.on_send(key, c),
            OpKind::Poll => self.on_poll(key, &c),
            OpKind::Tick if t.slot == links::LINK_TIMER_SLOT => self.on_link_timer(),
            OpKind::Tick if t.slot == presence::PRESENCE_TIMER_SLOT => self.on_presence_timer(),
            OpKind::Tick => self.on_tick(),
            OpKind::Wake => {
                if let Ok(s) = usize::try_from(c.result) {
                    self.on_wake(s);
                }
            }
            OpKind::Notify => {
                if c.result < 0 {
                    debug!(
                        worker = self.id,
                        error = c.result,
                        "a sibling's ring refused a wake"
                    );
                }
            }
            OpKind::Handoff => self.on_handoff(t.slot, c.result),
            OpKind::HandBack => self.on_hand_back(t.slot, t.generation.get(), c.result),
            OpKind::LinkConnect => self.on_link_connect(t.slot as usize, t.generation, &c),
            OpKind::LinkRecv => self.on_link_recv(t.slot as usize, t.generation, &c),
            OpKind::LinkSend => self.on_link_send(t.slot as usize, t.generation, c),
            OpKind::Cancel => {}
        }
    }
}

impl Drop for Worker {
    /// The ring is about to close: siblings must not message it any more.
    fn drop(&mut self) {
        if let Some(slot) = self.shared.rings.get(self.id) {
            slot.store(-1, Ordering::Release);
        }
    }
}

/// What a send did not take of `chunks` (`sent` bytes went out), in order.
pub(crate) fn requeue(chunks: Vec<Chunk>, mut sent: usize) -> Vec<Chunk> {
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
