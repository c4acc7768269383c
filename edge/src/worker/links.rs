//! The worker's side of its links to the stores: it makes each attempt's socket and
//! carries out what each [`Link`] polls (connect, receive, send) as ring operations,
//! hands completions back to it, gives the hub's frames for a store to its link once a
//! round, and tells the hub (and `/metrics`) when a link goes up or down. While a link
//! is down a [`LINK_TIMER`] timeout runs so that its short backoff is kept; when a link
//! comes up, the sibling workers are woken (a message to their rings) so that theirs
//! to the same store try at once instead of waiting out their backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use wire::cluster::ClusterMap;

use wire::link::auth::{ClusterSecret, Nonce};
use wire::link::{LinkEncoder, LinkLimits, LinkMessage};

use super::Worker;
use super::link::backoff::Jitter;
use super::link::{Change, Link, LinkCtx, LinkOps, Millis, RecvEnd};
use crate::metrics::WorkerMetrics;
use crate::uring::{Cqe, Gen, OpKind, Token, net};

/// How often a worker with a link down looks for attempts that are due.
pub(super) const LINK_TIMER: Duration = Duration::from_millis(25);
/// The slot of the link timer's token (the one-second tick is on slot 0).
pub(super) const LINK_TIMER_SLOT: u32 = 1;

/// 32 random bytes from the kernel for a link's hello (a link connects rarely: one
/// `getrandom` per attempt); `None` if the kernel would not give them.
fn fresh_nonce() -> Option<Nonce> {
    let mut n = [0u8; 32];
    let mut filled = 0;
    while filled < n.len() {
        match rustix::rand::getrandom(&mut n[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(k) => filled += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    Some(Nonce(n))
}

/// This edge process's id on its links, `edge-<pid>-<8 hex digits>`: the digits are
/// random per start, so that a restarted edge is never taken for the one before it
/// (stores name presence members by it).
pub(crate) fn edge_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let boot =
            fresh_nonce().map_or(0, |n| u32::from_le_bytes([n.0[0], n.0[1], n.0[2], n.0[3]]));
        format!("edge-{}-{boot:08x}", std::process::id())
    })
}

/// The token of `kind` for link `s`'s socket of `generation`.
fn token(kind: OpKind, s: usize, generation: Gen) -> Token {
    Token::new(kind, s as u32, generation)
}

/// The worker's links and what they share: the encoder of their own frames, the
/// jitter source, and what goes into every hello.
#[derive(Debug)]
pub(super) struct LinkSet {
    links: Vec<Link>,
    enc: LinkEncoder,
    jitter: Jitter,
    edge_id: String,
    worker: u16,
    partitions: u32,
    map_version: u64,
    /// The start of the links' millisecond clock.
    epoch: Instant,
    /// The cluster secret links prove (`None`: not authenticated).
    secret: Option<Arc<ClusterSecret>>,
    /// TLS on the links (`None`: cleartext).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl LinkSet {
    /// One link per store of `map`, all down and due at once.
    pub(super) fn new(
        map: &ClusterMap,
        worker: usize,
        seed: u64,
        (secret, tls): (
            Option<Arc<ClusterSecret>>,
            Option<Arc<rustls::ClientConfig>>,
        ),
    ) -> Self {
        Self {
            links: map
                .stores
                .iter()
                .map(|s| Link::new(s.addr, &s.id))
                .collect(),
            enc: LinkEncoder::new(&LinkLimits::default()),
            jitter: Jitter::new(seed),
            edge_id: edge_id().to_owned(),
            worker: worker as u16,
            partitions: map.partitions,
            map_version: map.version,
            epoch: Instant::now(),
            secret,
            tls,
        }
    }

    /// Milliseconds since the worker started (the links' clock).
    pub(super) fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Whether any link is down (its next attempt is to be watched for).
    fn any_down(&self) -> bool {
        self.links.iter().any(|l| l.retry_at().is_some())
    }

    /// Run `f` on link `s` with its context.
    fn with<R>(&mut self, s: usize, f: impl FnOnce(&mut Link, &mut LinkCtx<'_>) -> R) -> Option<R> {
        let jitter = self.jitter.next();
        let link = self.links.get_mut(s)?;
        let mut ctx = LinkCtx {
            enc: &mut self.enc,
            partitions: self.partitions,
            map_version: self.map_version,
            edge_id: &self.edge_id,
            worker: self.worker,
            jitter,
            secret: self.secret.as_deref(),
            tls: self.tls.as_ref(),
        };
        Some(f(link, &mut ctx))
    }

    fn len(&self) -> usize {
        self.links.len()
    }
}

impl Worker {
    /// Start an attempt on every link that is due.
    fn links_connect(&mut self, now: Millis) {
        for s in 0..self.links.len() {
            let due = self
                .links
                .with(s, |l, _| l.poll_connect(now).map(|g| (g, l.addr())))
                .flatten();
            let Some((generation, addr)) = due else {
                continue;
            };
            let change = match net::link_socket(addr) {
                Err(e) => {
                    warn!(worker = self.id, store = s, error = %e, "cannot create a link socket");
                    self.link_submit_failed(s, 0, now)
                }
                Ok(fd) => {
                    let Some(raw) = self.links.with(s, |l, _| l.handle_socket(fd)) else {
                        continue;
                    };
                    let t = token(OpKind::LinkConnect, s, generation);
                    match self.ring.connect(raw, addr, t) {
                        Ok(()) => None,
                        Err(_) => self.link_submit_failed(s, LinkOps::CONNECT, now),
                    }
                }
            };
            self.link_changed(s, change);
        }
    }

    fn link_submit_failed(&mut self, s: usize, op: u8, now: Millis) -> Option<Change> {
        self.links
            .with(s, |l, ctx| l.handle_submit_failed(op, now, ctx))
            .flatten()
    }

    pub(super) fn on_link_connect(&mut self, s: usize, generation: Gen, c: &Cqe) {
        let now = self.links.now();
        let result = if c.result < 0 { Err(c.result) } else { Ok(()) };
        let change = self
            .links
            .with(s, |l, ctx| {
                l.handle_connected(generation, result, now, ctx, fresh_nonce())
            })
            .flatten();
        self.link_changed(s, change);
        self.link_arm_recv(s);
    }

    /// Keep a multishot receive armed on a connected link.
    fn link_arm_recv(&mut self, s: usize) {
        let Some((raw, generation)) = self.links.with(s, |l, _| l.poll_recv()).flatten() else {
            return;
        };
        let t = token(OpKind::LinkRecv, s, generation);
        if self.ring.recv_multi(raw, t).is_err() {
            let now = self.links.now();
            let change = self.link_submit_failed(s, LinkOps::RECV, now);
            self.link_changed(s, change);
        }
    }

    pub(super) fn on_link_recv(&mut self, s: usize, generation: Gen, c: &Cqe) {
        let bid = c.buffer();
        let len = usize::try_from(c.result).unwrap_or(0);
        let now = self.links.now();
        if c.result > 0
            && let Some(b) = bid
            && let Some(data) = self.bufs.get(b, len)
        {
            let hub = &mut self.hub;
            let change = self
                .links
                .with(s, |l, ctx| {
                    l.handle_recv(generation, data, now, ctx, &mut |f| match &f.message {
                        LinkMessage::Pong(p) => hub.on_pong(p.nonce()),
                        _ => hub.on_frame(f),
                    })
                })
                .flatten();
            self.link_changed(s, change);
        }
        if let Some(b) = bid {
            self.bufs.consumed(b, len, c.buffer_more());
        }
        let end = match c.result {
            _ if c.more() => RecvEnd::More,
            0 => RecvEnd::Eof,
            r if r > 0 || r == -libc::ECANCELED => RecvEnd::Rearm,
            r if r == -libc::ENOBUFS => {
                super::grow_buffers(&mut self.bufs, self.id);
                RecvEnd::Rearm
            }
            _ => RecvEnd::Failed,
        };
        let change = self
            .links
            .with(s, |l, ctx| {
                l.handle_recv_end(generation, end, now, ctx.jitter)
            })
            .flatten();
        self.link_changed(s, change);
        self.link_arm_recv(s);
    }

    pub(super) fn on_link_send(&mut self, s: usize, generation: Gen, c: Cqe) {
        let now = self.links.now();
        let sent = if c.result < 0 {
            Err(c.result)
        } else {
            Ok(c.result as usize)
        };
        let change = self
            .links
            .with(s, |l, ctx| {
                l.handle_sent(generation, c.sent, sent, now, ctx.jitter)
            })
            .flatten();
        self.link_changed(s, change);
    }

    /// Tell the hub, the log and `/metrics` what happened to link `s`.
    fn link_changed(&mut self, s: usize, change: Option<Change>) {
        let Some(change) = change else {
            return;
        };
        match change {
            Change::Up {
                store_id,
                map_version,
            } => {
                if let Some(theirs) = map_version {
                    let ours = self.links.map_version;
                    warn!(
                        worker = self.id,
                        store = s,
                        ours,
                        theirs,
                        "store serves another partition map version"
                    );
                }
                info!(worker = self.id, store = s, id = %store_id, "store link up");
                self.hub.link_up(s);
                self.ensure_own_subs();
                self.wake_siblings(s);
            }
            Change::Down {
                was_up,
                why,
                fd,
                unauthenticated,
            } => {
                if let Some(fd) = fd {
                    // Operations still armed on it complete once it is shut down;
                    // their completions carry the old generation.
                    net::shutdown_both(&fd);
                }
                let link = self.links.links.get(s);
                let addr = link.map(Link::addr);
                let attempts = link.map_or(0, Link::attempts);
                if unauthenticated {
                    WorkerMetrics::add(&self.metrics.link_auth_failed, 1);
                    // Retried every ~100 ms: said once, then every hundredth time.
                    if attempts == 1 || attempts.is_multiple_of(100) {
                        warn!(worker = self.id, store = s, addr = ?addr, attempts, "store link refused: {why}");
                    }
                } else if was_up {
                    warn!(worker = self.id, store = s, addr = ?addr, "store link down: {why}");
                } else if attempts == 1 || !why.starts_with("connect failed") {
                    warn!(worker = self.id, store = s, addr = ?addr, "store link: {why}");
                }
                self.hub.link_down(s);
                self.arm_link_timer();
            }
        }
        self.publish_link(s);
    }

    /// Every round: frames the hub queued go to their links, one send per link.
    pub(super) fn flush_links(&mut self) {
        for s in 0..self.links.len() {
            let Some(link) = self.links.links.get_mut(s) else {
                continue;
            };
            if link.is_up()
                && let Some(out) = self.hub.link_out.get_mut(s)
            {
                link.queue(std::mem::take(out));
            }
            let Some((raw, generation, chunks)) = link.poll_transmit() else {
                continue;
            };
            let t = token(OpKind::LinkSend, s, generation);
            if self.ring.writev(raw, chunks, t).is_err() {
                let now = self.links.now();
                let change = self.link_submit_failed(s, LinkOps::SEND, now);
                self.link_changed(s, change);
            }
        }
    }

    /// Every tick: drop what is silent or slow to answer, ping what is idle, then
    /// start the attempts that are due.
    pub(super) fn links_tick(&mut self, now: Millis) {
        for s in 0..self.links.len() {
            let change = self
                .links
                .with(s, |l, ctx| l.handle_tick(now, ctx))
                .flatten();
            self.link_changed(s, change);
        }
        self.links_connect(now);
        self.arm_link_timer();
    }

    /// Keep the link timer running while a link is down.
    fn arm_link_timer(&mut self) {
        let t = Token::new(OpKind::Tick, LINK_TIMER_SLOT, Gen::default());
        if self.links.any_down() && !self.ring.in_flight(t.slot, t.kind) {
            let _ = self.ring.tick(LINK_TIMER, t);
        }
    }

    /// The link timer fired: what is due is tried; it runs again while a link is down.
    pub(super) fn on_link_timer(&mut self) {
        let now = self.links.now();
        self.links_tick(now);
    }

    /// A sibling's link to store `s` came up: ours tries now if it is down.
    pub(super) fn on_wake(&mut self, s: usize) {
        let now = self.links.now();
        self.links.with(s, |l, _| l.handle_wake(now));
        self.links_connect(now);
    }

    /// Link `s` came up: wake the siblings, whose links to the same store may be
    /// waiting out a backoff.
    fn wake_siblings(&mut self, s: usize) {
        let Ok(store) = i32::try_from(s) else {
            return;
        };
        for (i, fd) in self.shared.rings.iter().enumerate() {
            let fd = fd.load(Ordering::Acquire);
            if i == self.id || fd < 0 {
                continue;
            }
            let wake = Token::worker(OpKind::Wake);
            let own = Token::new(OpKind::Notify, i as u32, Gen::default());
            if let Err(e) = self.ring.msg_ring(fd, store, wake, own) {
                debug!(worker = self.id, sibling = i, error = %e, "cannot wake a sibling");
            }
        }
    }

    /// Stopping: close every link for good.
    pub(super) fn close_links(&mut self) {
        for link in &mut self.links.links {
            if let Some(fd) = link.close() {
                net::shutdown_both(&fd);
            }
        }
    }

    /// Whether any link operation is still in flight (the ring must outlive them).
    pub(super) fn link_ops_in_flight(&self) -> bool {
        self.links.links.iter().any(|l| !l.ops().is_empty())
    }

    /// Show a link's state in `/metrics`.
    fn publish_link(&self, s: usize) {
        if let (Some(link), Some(m)) = (self.links.links.get(s), self.metrics.links.get(s)) {
            m.store(link.state().metric(), Ordering::Relaxed);
        }
    }
}
