//! The core: one task that owns the change log's state and the watcher tables, on the
//! thread that also runs the links' readers and writers ([`crate::server`]), and beside
//! it the committer thread ([`committer`]) that owns the disk.
//!
//! Requests from every link arrive on one channel, each holding a share of its link's
//! [`intake`] until it is answered (a write: once committed), so a link's reader stops
//! reading while the core holds as much of it as it may. Writes queue up; whatever has
//! queued becomes **one** batch (one fsync with `sync = true`: group commit), handed
//! to the committer. While that batch is on its way to disk, the core goes on: it
//! answers reads, starts watches, and prepares the next batch from the writes that
//! arrived meanwhile, so the committer starts it the moment the first is done. A slow
//! fsync therefore delays only the writes that must wait for it; links that read or
//! watch are answered at once, and the batch behind it just grows. Only when a batch
//! is reported committed are its writes acknowledged and its changes dispatched: one
//! `Changes` frame per interested link for the whole batch (a few if it is big), in seq
//! order per partition. A repeat of a write remembered by its msg_id is answered with
//! the first's outcome and dispatches nothing.
//!
//! Requests of one link take effect in the order it sent them: any request but a write
//! (a read, watch, unwatch, ping) that follows a link's own uncommitted write waits for
//! that write (and so do that link's later requests), so a link always reads its own
//! writes. Other links are not held up by it. A request that fails is answered with
//! the error code of who is at fault ([`crate::error`]), and counted as a read or a
//! write error.
//!
//! Reads run on the core against one engine snapshot each and report the exact
//! position they saw (see [`crate::changelog`]). A watch whose snapshot or resume
//! already saw a batch that is committed but not yet dispatched records that, and the
//! dispatch skips those changes for it: no gap and no duplicate between a watch's
//! start and its live changes. A conditional write needs the committed version of its
//! key, so it is prepared only when no batch is in flight.
//!
//! Frames for a link are collected per drain and handed to the link's writer in one
//! piece. A link with bytes still unwritten that new ones would take past a bound is
//! dropped (its watches removed) once its writer has written nothing for
//! [`STALL`], or at once past four times the bound: a peer that stops reading costs
//! bounded memory, while one that reads a large snapshot slowly keeps its link.

mod committer;
pub mod intake;
mod pages;
mod presence;
mod resumes;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use tracing::{debug, info, warn};
use wire::link::{ChangeRef, ErrorCode, LinkEncoder, LinkLimits, WatchId};

use crate::changelog::{Change, ChangeLog, Position, Prepared, Retention, Write};
use crate::engine::Engine;
use crate::error::{Failure, Fault, StoreError};
use crate::metrics::{Metrics, PartitionLog};
use crate::records::ChangeKind;
use crate::watchers::{LinkId, Watchers};

pub use intake::{Intake, IntakeLimits, Taken};

pub use committer::Outcome;
pub use pages::{PAGE_BYTES, PAGE_ENTRIES, pages};

/// A request decoded by a link, owned so that it can cross to the core thread.
#[derive(Debug)]
pub enum Req {
    /// The edge introduced itself: its process (link id) and the worker owning the link.
    Hello {
        /// The edge process's id (unique per start).
        edge: String,
        /// The worker.
        worker: u16,
    },
    /// Liveness probe.
    Ping(u64),
    /// Read a key.
    Get(String),
    /// A write.
    Write(Write),
    /// Start watching.
    Watch {
        /// The edge's id for this watch.
        watch_id: WatchId,
        /// Key or prefix.
        target: String,
        /// True for a prefix.
        prefix: bool,
        /// Resume after this position (then only its partition is watched).
        from: Option<Position>,
    },
    /// Stop watching.
    Unwatch(WatchId),
    /// A page of a channel's presence members (`limit` 0: the count only).
    Members {
        /// The channel's prefix ([`wire::presence::channel_prefix`]).
        prefix: String,
        /// The last member key of the previous page.
        after: Option<String>,
        /// Most members in the page.
        limit: u32,
    },
    /// A presence member's join (`meta`) or leave (`None`) by connection `owner`.
    Member {
        /// The member's key.
        key: String,
        /// The meta of a join.
        meta: Option<Vec<u8>>,
        /// The connection joining or leaving.
        owner: String,
    },
    /// Members the link's worker holds, (key, meta, owner): one part of its
    /// announcement.
    PresenceSync {
        /// The members.
        members: Vec<(String, Vec<u8>, String)>,
        /// The announcement's last part.
        last: bool,
    },
}

/// What reaches the core.
#[derive(Debug)]
pub enum CoreMsg {
    /// A link connected; frames for it go to `outbox`.
    Open {
        /// Link id.
        link: LinkId,
        /// Its outbox.
        outbox: Outbox,
    },
    /// A request from a link.
    Request {
        /// Link id.
        link: LinkId,
        /// Echoed in the reply.
        request_id: u64,
        /// The request.
        req: Req,
        /// Its share of the link's intake, given back once it is answered.
        taken: Taken,
    },
    /// A link closed.
    Closed {
        /// Link id.
        link: LinkId,
    },
    /// Stop the core: it commits and answers what it has, then returns.
    Shutdown,
    /// The committer finished the batch in flight (sent by the core's own committer).
    Committed(Outcome),
}

/// Where the core puts a link's frames: a channel to the link's writer task plus the
/// number of bytes queued and not yet written, which bounds the link's memory.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Frames for the writer task.
    pub tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes handed over and not yet written to the socket (the writer subtracts).
    pub queued: Arc<AtomicUsize>,
    /// Signalled when the core drops the link: its socket is then shut down, which
    /// also frees a writer blocked on a peer that stopped reading.
    pub close: Arc<tokio::sync::Notify>,
    /// What the link's requests hold of the core; the core gives each share back once
    /// it has answered the request.
    pub intake: Arc<Intake>,
}

/// Core settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Store id (HelloAck).
    pub store_id: String,
    /// Cluster map version.
    pub map_version: u64,
    /// fsync before acknowledging.
    pub sync: bool,
    /// Log retention.
    pub retention: Retention,
    /// Most messages handled per drain.
    pub max_drain: usize,
    /// Bytes a link may have queued and unwritten before it is dropped as stuck.
    pub max_link_queue_bytes: usize,
    /// How much of its requests a link may have in the core unanswered before its
    /// reader stops reading (used by the link tasks, `server`).
    pub link_intake: IntakeLimits,
    /// Where the core's figures go.
    pub metrics: Arc<Metrics>,
    /// The cluster secret links must prove they hold before anything is served
    /// (`None`: links are not authenticated; loopback only). Used by the link tasks
    /// (`server`), before a link reaches the core.
    pub cluster_secret: Option<Arc<wire::link::auth::ClusterSecret>>,
    /// TLS on the links: every link is a TLS session with this config (`None`:
    /// cleartext). Used by the link tasks, like the secret.
    pub link_tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a gone edge's presence members are kept (ms).
    pub presence_grace_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            store_id: crate::cluster::DEFAULT_STORE_ID.into(),
            map_version: 1,
            sync: true,
            retention: Retention::default(),
            max_drain: 4096,
            max_link_queue_bytes: DEFAULT_LINK_QUEUE_BYTES,
            link_intake: IntakeLimits::default(),
            metrics: Arc::default(),
            cluster_secret: None,
            link_tls: None,
            presence_grace_ms: crate::config::DEFAULT_PRESENCE_GRACE_MS,
        }
    }
}

/// Log entries trimmed per partition per batch.
const TRIM_CHUNK: usize = 1000;

/// Default bound on a link's unwritten bytes.
pub const DEFAULT_LINK_QUEUE_BYTES: usize = 16 << 20;

/// How long a link over its bound may go without its writer writing a byte before it
/// is dropped as stuck.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// What the core knows of a link's writer's progress.
#[derive(Debug, Default)]
struct Flow {
    /// Bytes handed to the writer, ever.
    handed: u64,
    /// Over the bound: the bytes written when that was first seen without progress
    /// since, and when.
    over: Option<(u64, std::time::Instant)>,
}

impl Flow {
    /// Whether a link with `queued` bytes unwritten, to take `new` more against a bound
    /// of `max`, is stuck: over the bound and no byte written for [`STALL`], or past
    /// four times the bound.
    fn stuck(&mut self, queued: usize, new: usize, max: usize) -> bool {
        if queued == 0 || queued + new <= max {
            self.over = None;
            return false;
        }
        if queued + new > 4 * max {
            return true;
        }
        let written = self.handed.saturating_sub(queued as u64);
        let now = std::time::Instant::now();
        match self.over {
            Some((w, since)) if w == written => now.duration_since(since) >= STALL,
            _ => {
                self.over = Some((written, now));
                false
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn wire_pos(p: Position) -> wire::link::Position {
    wire::link::Position::new(p.partition, p.epoch, p.seq)
}

fn wire_kind(k: ChangeKind) -> wire::link::ChangeKind {
    match k {
        ChangeKind::Put => wire::link::ChangeKind::Put,
        ChangeKind::Delete => wire::link::ChangeKind::Delete,
        ChangeKind::Publish => wire::link::ChangeKind::Publish,
    }
}

fn text(key: &[u8]) -> &str {
    // Keys arrive as link strings (UTF-8), so stored keys are UTF-8.
    std::str::from_utf8(key).unwrap_or_default()
}

/// A prepared batch: who asked for each write, and what the change log made of it.
struct Batch {
    from: Vec<Asker>,
    prepared: Prepared,
}

/// A committed change as a link frame entry for `watch_ids`.
fn change_ref<'a>(c: &'a Change, watch_ids: &'a [u64]) -> ChangeRef<'a> {
    ChangeRef {
        watch_ids,
        position: wire_pos(c.position),
        key: text(&c.key),
        kind: wire_kind(c.kind),
        value: c.value.as_deref(),
        version: c.version,
    }
}

/// Read entries as link frame entries.
fn entry_refs(entries: &[crate::changelog::Entry]) -> Vec<wire::link::EntryRef<'_>> {
    entries
        .iter()
        .map(|(k, c)| wire::link::EntryRef {
            key: text(k),
            value: &c.value,
            version: c.version,
        })
        .collect()
}

/// The size of a change in a frame, for paging.
fn change_size(c: &ChangeRef<'_>) -> usize {
    c.key.len() + c.value.map_or(0, <[u8]>::len) + 8 * c.watch_ids.len()
}

/// Who asked for a request the core holds, and the share of the link's intake it
/// holds until it is answered.
#[derive(Debug, Clone, Copy)]
struct Asker {
    link: LinkId,
    request_id: u64,
    taken: Taken,
}

/// The core's state.
struct Core<E: Engine> {
    log: ChangeLog<E>,
    watchers: Watchers,
    links: HashMap<LinkId, Outbox>,
    /// Frames per link produced in this drain, handed over by `flush`.
    pending: HashMap<LinkId, Vec<u8>>,
    /// Per link: its writer's progress, for the stuck rule.
    flows: HashMap<LinkId, Flow>,
    enc: LinkEncoder,
    cfg: CoreConfig,
    /// Writes waiting for a batch, with who asked.
    queue: VecDeque<(Asker, Write)>,
    /// The batch the committer is writing.
    inflight: Option<Batch>,
    /// The next batch, prepared while `inflight` is written; submitted when it is done.
    held: Option<Batch>,
    committer: Sender<committer::Job>,
    /// (link, watch id, partition) → seq: changes up to it were already in the watch's
    /// snapshot or resume (read while a batch was landing); its dispatch skips them.
    skips: HashMap<(LinkId, u64, u32), u64>,
    /// Per link: its writes queued, held or in flight.
    outstanding: HashMap<LinkId, usize>,
    /// Per link: requests waiting for the link's earlier writes, in order.
    deferred: HashMap<LinkId, VecDeque<(Asker, Req)>>,
    /// Trimming is due; `trimming` while a batch with trims is not yet committed.
    trim_due: bool,
    trimming: bool,
    /// Presence members, and which edge process and worker each link serves.
    presence: crate::presence::Presence,
    link_edges: HashMap<LinkId, presence::LinkEdge>,
    /// Per link: the member keys of a presence announcement in progress.
    syncing: HashMap<LinkId, std::collections::HashSet<Box<str>>>,
    /// Records outside the log, written with the next batch (presence owners).
    side: Vec<crate::engine::BatchOp>,
    /// Resume reads kept for the watches that ask the same one.
    resumes: resumes::Resumes,
}

/// Where requests, link events and commit outcomes reach the core.
pub type CoreTx = UnboundedSender<CoreMsg>;

/// The core's inbox: its sender (for links, the committer and shutdown) and receiver.
pub fn channel() -> (CoreTx, UnboundedReceiver<CoreMsg>) {
    tokio::sync::mpsc::unbounded_channel()
}

/// Run the core as a task until it receives [`CoreMsg::Shutdown`]. It belongs on the
/// thread that runs the links' reader and writer tasks: a request then reaches it, and
/// its frames reach their writer, without waking another thread. Only the committer
/// (which owns the disk) runs beside it. `tx` is the sender of `rx`, for the committer.
pub async fn run<E: Engine>(
    log: ChangeLog<E>,
    cfg: CoreConfig,
    tx: CoreTx,
    mut rx: UnboundedReceiver<CoreMsg>,
) -> std::io::Result<()> {
    let (committer, committer_thread) =
        committer::spawn(log.engine(), Arc::clone(&cfg.metrics), tx).map_err(|e| {
            std::io::Error::other(format!("cannot start the committer thread: {e}"))
        })?;
    let mut core = Core::new(log, cfg, committer);
    core.load_presence();
    core.publish_partitions();
    let mut last_tick = now_ms();
    let mut stopping = false;
    loop {
        // Wake at least once a second, so an idle store still trims and publishes.
        let wait =
            Duration::from_millis(1000u64.saturating_sub(now_ms().saturating_sub(last_tick)));
        let Some(msgs) = drain(&mut rx, wait, core.cfg.max_drain).await else {
            break;
        };
        for msg in msgs {
            stopping |= core.handle(msg);
        }
        core.expire_presence();
        core.pump();
        core.flush();
        if stopping && core.idle() {
            break;
        }
        // With more already waiting, let the writers just handed frames (and the
        // readers) run before the next drain; otherwise waiting for it does.
        if !rx.is_empty() {
            tokio::task::yield_now().await;
        }
        let now = now_ms();
        if now.saturating_sub(last_tick) >= 1000 {
            last_tick = now;
            core.trim_due = true;
            core.publish_partitions();
        }
    }
    let clean = stopping && core.idle();
    core.stop(committer_thread, clean);
    Ok(())
}

/// What reached the core within `wait`, at most `max` messages (none on a timeout);
/// `None` once every sender is gone.
async fn drain(
    rx: &mut UnboundedReceiver<CoreMsg>,
    wait: Duration,
    max: usize,
) -> Option<Vec<CoreMsg>> {
    let mut msgs = Vec::new();
    match tokio::time::timeout(wait, rx.recv()).await {
        Ok(Some(m)) => msgs.push(m),
        Ok(None) => return None,
        Err(_elapsed) => {}
    }
    while msgs.len() < max {
        match rx.try_recv() {
            Ok(m) => msgs.push(m),
            Err(_) => break,
        }
    }
    Some(msgs)
}

impl<E: Engine> Core<E> {
    /// A core with nothing in it yet.
    fn new(log: ChangeLog<E>, cfg: CoreConfig, committer: Sender<committer::Job>) -> Self {
        Self {
            log,
            watchers: Watchers::default(),
            links: HashMap::new(),
            pending: HashMap::new(),
            flows: HashMap::new(),
            enc: LinkEncoder::new(&LinkLimits::default()),
            cfg,
            queue: VecDeque::new(),
            inflight: None,
            held: None,
            committer,
            skips: HashMap::new(),
            outstanding: HashMap::new(),
            deferred: HashMap::new(),
            trim_due: false,
            trimming: false,
            presence: crate::presence::Presence::default(),
            link_edges: HashMap::new(),
            syncing: HashMap::new(),
            side: Vec::new(),
            resumes: resumes::Resumes::default(),
        }
    }

    /// Take one message from the core's channel; `true`: it asks the core to stop.
    fn handle(&mut self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Request {
                link,
                request_id,
                req,
                taken,
            } => {
                let asker = Asker {
                    link,
                    request_id,
                    taken,
                };
                self.arrive(asker, req);
            }
            CoreMsg::Committed(outcome) => self.committed(outcome),
            CoreMsg::Open { link, outbox } => self.open(link, outbox),
            CoreMsg::Closed { link } => self.drop_link(link, "closed by peer"),
            CoreMsg::Shutdown => return true,
        }
        false
    }

    /// Stop the committer (it stops when its job sender is dropped) and wait for it,
    /// so that the engine is closed by this thread and not torn down under it at
    /// process exit; record a `clean` stop.
    fn stop(self, committer_thread: std::thread::JoinHandle<()>, clean: bool) {
        let Core {
            mut log, committer, ..
        } = self;
        drop(committer);
        if committer_thread.join().is_err() {
            warn!("the committer thread panicked");
        }
        if clean {
            match log.end_run() {
                Ok(()) => info!("core stopped cleanly"),
                Err(e) => warn!(error = %e, "could not record the clean stop"),
            }
        }
    }

    /// Nothing queued, in flight or held.
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_none() && self.held.is_none()
    }

    fn error(
        &mut self,
        link: LinkId,
        request_id: u64,
        code: ErrorCode,
        message: &str,
        current: u64,
    ) {
        let buf = self.pending.entry(link).or_default();
        let _ = self.enc.error(
            buf,
            request_id,
            code,
            message,
            self.cfg.map_version,
            current,
        );
    }

    /// Answer a request that failed with `e` (a store failure is logged as `what`).
    fn fail(&mut self, link: LinkId, request_id: u64, e: &StoreError, what: &str) {
        if e.fault() == Fault::Store {
            warn!(error = %e, "{what} failed");
        }
        let a = e.answer();
        self.error(link, request_id, a.code, &a.message, a.current);
    }

    /// A write failed or was refused.
    fn write_error(&mut self, link: LinkId, request_id: u64, e: &StoreError) {
        Metrics::add(&self.cfg.metrics.write_errors, 1);
        self.fail(link, request_id, e, "write");
    }

    /// A read (a get, a watch's start) failed or was refused.
    fn read_error(&mut self, link: LinkId, request_id: u64, e: &StoreError) {
        Metrics::add(&self.cfg.metrics.read_errors, 1);
        self.fail(link, request_id, e, "read");
    }

    /// A request arrives: it waits behind the link's requests already waiting, and
    /// (unless a write) behind the link's own uncommitted writes; else it runs now.
    fn arrive(&mut self, asker: Asker, req: Req) {
        let link = asker.link;
        if self.deferred.contains_key(&link) || self.behind_writes(link, &req) {
            self.deferred
                .entry(link)
                .or_default()
                .push_back((asker, req));
        } else {
            self.request(asker, req);
        }
    }

    /// Whether `req` must wait for `link`'s uncommitted writes: anything but another
    /// write does, so that the link reads its own writes.
    fn behind_writes(&self, link: LinkId, req: &Req) -> bool {
        !matches!(req, Req::Write(_)) && self.outstanding.get(&link).is_some_and(|&n| n > 0)
    }

    fn enqueue(&mut self, asker: Asker, w: Write) {
        *self.outstanding.entry(asker.link).or_default() += 1;
        self.queue.push_back((asker, w));
    }

    /// A request of `asker`'s has been answered: its share of the link's intake goes
    /// back (which may let the link's reader read again).
    fn give_back(&self, asker: Asker) {
        if let Some(outbox) = self.links.get(&asker.link) {
            outbox.intake.give_back(asker.taken);
        }
    }

    /// One of `link`'s writes has been answered: once none is left, run what waited.
    fn write_answered(&mut self, link: LinkId) {
        let left = match self.outstanding.get_mut(&link) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => return,
        };
        if left > 0 {
            return;
        }
        self.outstanding.remove(&link);
        let Some(mut waiting) = self.deferred.remove(&link) else {
            return;
        };
        while let Some((asker, req)) = waiting.pop_front() {
            if self.behind_writes(link, &req) {
                waiting.push_front((asker, req));
                self.deferred.insert(link, waiting);
                return;
            }
            self.request(asker, req);
        }
    }

    /// Keep the committer busy: with nothing in flight, commit what is queued (or due
    /// trimming); with a batch in flight, prepare the next one to follow it at once.
    fn pump(&mut self) {
        if self.inflight.is_none() {
            let next = match self.held.take() {
                Some(b) => Some(b),
                None => self.prepare(true, self.cfg.max_drain),
            };
            if let Some(b) = next {
                self.submit(b);
            }
        }
        if self.inflight.is_some() {
            // Whatever arrives while a batch is in flight joins the held one.
            let room = self
                .cfg
                .max_drain
                .saturating_sub(self.held.as_ref().map_or(0, |h| h.from.len()));
            if let Some(more) = self.prepare(false, room) {
                match &mut self.held {
                    Some(held) => {
                        held.from.extend(more.from);
                        held.prepared.merge(more.prepared);
                    }
                    None => self.held = Some(more),
                }
            }
        }
        Metrics::set(&self.cfg.metrics.queued_writes, self.queue.len() as u64);
        self.cfg.metrics.publish_dedup(self.log.dedup_stats());
    }

    /// Build a batch from the queued writes (stopping before a conditional write unless
    /// `conditional`, i.e. nothing is in flight) and from due trimming.
    fn prepare(&mut self, conditional: bool, max: usize) -> Option<Batch> {
        let mut take = 0;
        for (_, w) in &self.queue {
            if take == max || (!conditional && is_conditional(w)) {
                break;
            }
            take += 1;
        }
        let trim = self.trim_due && !self.trimming;
        if take == 0 && !trim && self.side.is_empty() {
            return None;
        }
        let mut from = Vec::with_capacity(take);
        let mut writes = Vec::with_capacity(take);
        for (asker, w) in self.queue.drain(..take) {
            from.push(asker);
            writes.push(w);
        }
        let now = now_ms();
        let mut prepared = self.log.prepare(&writes, now);
        prepared.batch.ops.append(&mut self.side);
        if trim {
            self.trim_due = false;
            let owned: Vec<u32> = self.log.owned().collect();
            for p in owned {
                match self
                    .log
                    .prepare_trim(p, self.cfg.retention, now, TRIM_CHUNK, &mut prepared)
                {
                    // A partition written faster than one chunk a second is trimmed
                    // again with the next batch, until it is back within retention.
                    Ok(more) => self.trim_due |= more,
                    Err(e) => warn!(partition = p, error = %e, "trim failed"),
                }
            }
            self.trimming = !prepared.trimmed.is_empty();
        }
        if prepared.batch.is_empty() {
            // Every write was refused before reaching the engine: answer them now.
            self.answer(Batch { from, prepared });
            return None;
        }
        Some(Batch { from, prepared })
    }

    fn submit(&mut self, mut b: Batch) {
        let mut batch = std::mem::take(&mut b.prepared.batch);
        batch.sort();
        let job = committer::Job {
            batch,
            sync: self.cfg.sync,
        };
        if self.committer.send(job).is_err() {
            warn!("the committer is gone");
            self.log.abort();
            b.prepared.results = crate::changelog::fail_all(b.prepared.results, &Failure::Stopped);
            self.answer(b);
            return;
        }
        self.inflight = Some(b);
    }

    /// The batch in flight is done: on success start the held one, then acknowledge
    /// and dispatch; on failure fail it and the held one (prepared on top of it).
    fn committed(&mut self, outcome: Outcome) {
        let Some(mut done) = self.inflight.take() else {
            warn!("commit outcome with no batch in flight");
            return;
        };
        match outcome {
            Ok(()) => {
                let p = &done.prepared;
                self.log.committed(&p.last_seqs, &p.trimmed);
                if !p.trimmed.is_empty() {
                    self.trimming = false;
                }
                if let Some(next) = self.held.take() {
                    self.submit(next);
                }
                let accepted = done.prepared.accepted();
                if accepted > 0 {
                    self.cfg.metrics.commit_writes.observe(accepted as f64);
                    Metrics::add(&self.cfg.metrics.writes, accepted as u64);
                }
                self.answer(done);
            }
            Err(e) => {
                warn!(error = %e, "commit failed: the batch and the one prepared after it fail");
                let e = Failure::Engine(e);
                self.log.abort();
                self.load_presence();
                self.trimming = false;
                let results = std::mem::take(&mut done.prepared.results);
                done.prepared.results = crate::changelog::fail_all(results, &e);
                self.answer(done);
                if let Some(mut next) = self.held.take() {
                    let results = std::mem::take(&mut next.prepared.results);
                    next.prepared.results = crate::changelog::fail_all(results, &e);
                    self.answer(next);
                }
            }
        }
        // Every skip recorded so far was read while `done` was landing, at most.
        self.skips.clear();
    }

    /// Reply to each write of `b` and dispatch its changes.
    fn answer(&mut self, b: Batch) {
        let mut changes: Vec<Change> = Vec::with_capacity(b.prepared.results.len());
        let mut links = Vec::with_capacity(b.from.len());
        for (asker, r) in b.from.into_iter().zip(b.prepared.results) {
            let Asker {
                link, request_id, ..
            } = asker;
            match r {
                Ok(w) => {
                    let buf = self.pending.entry(link).or_default();
                    let _ =
                        self.enc
                            .write_reply(buf, request_id, wire_pos(w.position()), w.version());
                    // A repeat changed nothing: there is nothing to dispatch.
                    changes.extend(w.change());
                }
                Err(e) => self.write_error(link, request_id, &e),
            }
            self.give_back(asker);
            links.push(link);
        }
        self.dispatch(&changes);
        // After the dispatch: a watch or unwatch that waited on these writes sees them.
        for link in links {
            self.write_answered(link);
        }
    }

    /// One `Changes` frame (or a few, if big) per interested link for `changes`.
    fn dispatch(&mut self, changes: &[Change]) {
        if self.watchers.is_empty() {
            return;
        }
        let mut per_link: HashMap<LinkId, Vec<(usize, Vec<u64>)>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            for (link, mut ids) in self.watchers.matching(&c.key, c.position.partition) {
                if !self.skips.is_empty() {
                    let p = c.position.partition;
                    ids.retain(|id| {
                        self.skips
                            .get(&(link, *id, p))
                            .is_none_or(|&upto| c.position.seq > upto)
                    });
                    if ids.is_empty() {
                        continue;
                    }
                }
                per_link.entry(link).or_default().push((i, ids));
            }
        }
        let mut delivered = 0;
        for (link, items) in per_link {
            let refs: Vec<ChangeRef<'_>> = items
                .iter()
                .filter_map(|(i, ids)| changes.get(*i).map(|c| change_ref(c, ids)))
                .collect();
            delivered += refs.len();
            let buf = self.pending.entry(link).or_default();
            for page in pages(&refs, change_size) {
                let _ = self.enc.changes(buf, 0, page);
            }
        }
        Metrics::add(&self.cfg.metrics.deliveries, delivered as u64);
    }

    fn open(&mut self, link: LinkId, outbox: Outbox) {
        debug!(link, "link open");
        self.links.insert(link, outbox);
        Metrics::set(&self.cfg.metrics.links, self.links.len() as u64);
    }

    /// Run a request whose turn has come: queue a write (its share of the link's
    /// intake goes back once it is answered), answer anything else now.
    fn request(&mut self, asker: Asker, req: Req) {
        match self.answer_now(asker.link, asker.request_id, req) {
            Some(w) => self.enqueue(asker, w),
            None => self.give_back(asker),
        }
    }

    /// Answer a request, or return the write it asks for, to be queued.
    fn answer_now(&mut self, link: LinkId, request_id: u64, req: Req) -> Option<Write> {
        match req {
            Req::Hello { edge, worker } => {
                self.presence_hello(link, edge, worker);
                let buf = self.pending.entry(link).or_default();
                let _ = self.enc.hello_ack(
                    buf,
                    request_id,
                    &self.cfg.store_id,
                    self.cfg.map_version,
                    self.log.partitions(),
                );
            }
            Req::Ping(nonce) => {
                let buf = self.pending.entry(link).or_default();
                let _ = self.enc.pong(buf, request_id, nonce);
            }
            Req::Get(key) => match self.log.get(key.as_bytes()) {
                Ok((cur, pos)) => {
                    Metrics::add(&self.cfg.metrics.gets, 1);
                    let (value, version) = cur
                        .as_ref()
                        .map_or((None, 0), |c| (Some(c.value.as_slice()), c.version));
                    let buf = self.pending.entry(link).or_default();
                    let _ =
                        self.enc
                            .get_reply(buf, request_id, &key, value, version, wire_pos(pos));
                }
                Err(e) => self.read_error(link, request_id, &e),
            },
            Req::Write(w) if presence::is_presence(&w) => {
                let e = StoreError::Presence(crate::presence::Refusal::NoOwner);
                self.write_error(link, request_id, &e);
            }
            Req::Member { key, meta, owner } => {
                return self.presence_write(link, request_id, key, meta, &owner);
            }
            Req::Write(w) => return Some(w),
            Req::Members {
                prefix,
                after,
                limit,
            } => self.members(link, request_id, &prefix, after.as_deref(), limit),
            Req::PresenceSync { members, last } => self.presence_sync(link, members, last),
            Req::Watch {
                watch_id,
                target,
                prefix,
                from,
            } => self.watch(link, request_id, watch_id, &target, prefix, from),
            Req::Unwatch(watch_id) => {
                self.watchers.remove(link, watch_id.get());
                Metrics::set(&self.cfg.metrics.watches, self.watchers.len() as u64);
            }
        }
        None
    }

    fn drop_link(&mut self, link: LinkId, why: &str) {
        if let Some(outbox) = self.links.remove(&link) {
            info!(link, why, "link dropped");
            outbox.close.notify_one();
        }
        self.pending.remove(&link);
        self.flows.remove(&link);
        self.deferred.remove(&link);
        self.watchers.remove_link(link);
        self.presence_link_gone(link);
        Metrics::set(&self.cfg.metrics.links, self.links.len() as u64);
        Metrics::set(&self.cfg.metrics.watches, self.watchers.len() as u64);
    }

    /// Hand every link its frames for this drain, in one piece; drop a link with bytes
    /// still unwritten that these would take past the limit (its peer has stopped
    /// reading).
    fn flush(&mut self) {
        let pending: Vec<(LinkId, Vec<u8>)> = self
            .pending
            .drain()
            .filter(|(_, b)| !b.is_empty())
            .collect();
        for (link, bytes) in pending {
            let Some(outbox) = self.links.get(&link) else {
                continue;
            };
            let queued = outbox.queued.load(Ordering::Acquire);
            // Stuck: bytes still unwritten, these would pass the bound, and the peer
            // has read nothing for a while (or the queue is far past it). A link whose
            // queue is empty takes one drain's frames whatever their size (a large
            // snapshot answered at once).
            let flow = self.flows.entry(link).or_default();
            if flow.stuck(queued, bytes.len(), self.cfg.max_link_queue_bytes) {
                Metrics::add(&self.cfg.metrics.links_dropped_stuck, 1);
                self.drop_link(link, "outbound queue full (peer not reading)");
                continue;
            }
            flow.handed += bytes.len() as u64;
            outbox.queued.fetch_add(bytes.len(), Ordering::AcqRel);
            if outbox.tx.send(bytes).is_err() {
                self.drop_link(link, "closed");
            }
        }
        let total: usize = self
            .links
            .values()
            .map(|o| o.queued.load(Ordering::Relaxed))
            .sum();
        Metrics::set(&self.cfg.metrics.link_queue_bytes, total as u64);
    }

    fn publish_partitions(&self) {
        let mut logs: Vec<PartitionLog> = self
            .log
            .owned()
            .filter_map(|p| {
                let pos = self.log.position(p)?;
                Some(PartitionLog {
                    partition: p,
                    first_seq: self.log.first_seq(p)?,
                    last_seq: pos.seq,
                })
            })
            .collect();
        logs.sort_unstable_by_key(|l| l.partition);
        self.cfg.metrics.publish_partitions(logs);
    }
}

fn is_conditional(w: &Write) -> bool {
    matches!(
        w,
        Write::Put {
            if_version: Some(_),
            ..
        } | Write::Delete {
            if_version: Some(_),
            ..
        }
    )
}

/// Run the core on a thread of its own (with a single-threaded runtime), for callers
/// that have no runtime to put it on; returns its sender. It runs until it receives
/// [`CoreMsg::Shutdown`].
pub fn spawn<E: Engine>(
    log: ChangeLog<E>,
    cfg: CoreConfig,
) -> std::io::Result<(CoreTx, std::thread::JoinHandle<std::io::Result<()>>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (tx, rx) = channel();
    let for_core = tx.clone();
    let handle = std::thread::Builder::new()
        .name("store-core".into())
        .spawn(move || rt.block_on(run(log, cfg, for_core, rx)))?;
    Ok((tx, handle))
}

#[cfg(test)]
mod flow_tests {
    use super::*;

    #[test]
    fn a_link_over_its_bound_is_stuck_only_without_progress_or_far_past_it() {
        let mut f = Flow {
            handed: 100,
            over: None,
        };
        // Under the bound, or nothing queued: never.
        assert!(!f.stuck(50, 10, 100));
        assert!(!f.stuck(0, 1000, 100));
        // Over it: first seen, not yet.
        assert!(!f.stuck(90, 20, 100));
        // The writer wrote (queued fell with nothing new handed): progress, not stuck.
        assert!(!f.stuck(80, 30, 100));
        // Far past it: at once.
        assert!(f.stuck(90, 400, 100));
        // No progress for STALL: stuck.
        f.over = f.over.map(|(w, since)| (w, since - STALL));
        assert!(f.stuck(80, 30, 100));
    }
}
