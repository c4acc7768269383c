//! The core: one thread that owns the change log and the watcher tables. Requests
//! from every link arrive on one channel; the core drains what is queued, commits all
//! consecutive writes as **one** batch (one fsync with `sync = true`: group commit),
//! answers each request, and encodes one `Changes` frame per interested link for the
//! whole batch. Reads, snapshots and watch registration run on the same thread, between
//! batches, so a watch's snapshot or resume and its live changes meet with no gap and
//! no duplicate. Frames for a link are collected per drain and handed to the link's
//! writer in one piece; a link whose unwritten bytes pass a bound is dropped (its watches
//! removed), so a peer that stops reading costs bounded memory.
//!
//! The trade-off of one thread: a slow fsync delays every link's requests. Reads could
//! move to their own threads (RocksDB reads are thread-safe) once watch registration
//! is made epoch-safe against concurrent commits; measured first, in the store bench.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use wire::link::{ChangeRef, EntryRef, ErrorCode, LinkEncoder, LinkLimits};

use crate::changelog::{Change, ChangeLog, Position, Resume, Retention, Target, Write, WriteError};
use crate::engine::Engine;
use crate::records::ChangeKind;
use crate::watchers::{LinkId, Watchers};

/// A request decoded by a link, owned so that it can cross to the core thread.
#[derive(Debug)]
pub enum Req {
    /// The edge introduced itself.
    Hello,
    /// Liveness probe.
    Ping(u64),
    /// Read a key.
    Get(String),
    /// A write.
    Write(Write),
    /// Start watching.
    Watch {
        /// The edge's id for this watch.
        watch_id: u64,
        /// Key or prefix.
        target: String,
        /// True for a prefix.
        prefix: bool,
        /// Resume after this position (then only its partition is watched).
        from: Option<Position>,
    },
    /// Stop watching.
    Unwatch(u64),
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
    },
    /// A link closed.
    Closed {
        /// Link id.
        link: LinkId,
    },
    /// Stop the core.
    Shutdown,
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
}

/// Default bound on a link's unwritten bytes.
pub const DEFAULT_LINK_QUEUE_BYTES: usize = 16 << 20;

/// Entries per snapshot frame.
pub const SNAPSHOT_PAGE: usize = 512;

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

/// Writes drained from the channel and not yet committed, with who asked for each.
#[derive(Default)]
struct Queued {
    writes: Vec<Write>,
    from: Vec<(LinkId, u64)>,
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

/// The core's state.
struct Core<E: Engine> {
    log: ChangeLog<E>,
    watchers: Watchers,
    links: HashMap<LinkId, Outbox>,
    pending: HashMap<LinkId, Vec<u8>>,
    enc: LinkEncoder,
    cfg: CoreConfig,
}

/// Run the core until `Shutdown` or until every sender is gone.
pub fn run<E: Engine>(log: ChangeLog<E>, cfg: CoreConfig, rx: Receiver<CoreMsg>) {
    let mut core = Core {
        log,
        watchers: Watchers::default(),
        links: HashMap::new(),
        pending: HashMap::new(),
        enc: LinkEncoder::new(&LinkLimits::default()),
        cfg,
    };
    let mut batch = Queued::default();
    let mut last_trim = now_ms();
    let mut stopped_cleanly = false;
    loop {
        let Ok(first) = rx.recv() else { break };
        let mut msgs = vec![first];
        while msgs.len() < core.cfg.max_drain {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut stop = false;
        for msg in msgs {
            match msg {
                CoreMsg::Request {
                    link,
                    request_id,
                    req: Req::Write(w),
                } => {
                    batch.writes.push(w);
                    batch.from.push((link, request_id));
                }
                other => {
                    core.commit(&mut batch);
                    stop |= core.handle(other);
                }
            }
        }
        core.commit(&mut batch);
        core.flush();
        if stop {
            stopped_cleanly = true;
            break;
        }
        let now = now_ms();
        if now.saturating_sub(last_trim) > 1000 {
            last_trim = now;
            core.trim(now);
        }
    }
    if stopped_cleanly {
        match core.log.end_run() {
            Ok(()) => info!("core stopped cleanly"),
            Err(e) => warn!(error = %e, "could not record the clean stop"),
        }
    }
}

impl<E: Engine> Core<E> {
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

    fn write_error(&mut self, link: LinkId, request_id: u64, e: &WriteError) {
        match e {
            WriteError::Conflict { current } => self.error(
                link,
                request_id,
                ErrorCode::Conflict,
                &e.to_string(),
                *current,
            ),
            WriteError::WrongPartition(_) => self.error(
                link,
                request_id,
                ErrorCode::WrongPartition,
                &e.to_string(),
                0,
            ),
            WriteError::Engine(_) => {
                warn!(error = %e, "write failed");
                self.error(link, request_id, ErrorCode::Internal, "storage failure", 0)
            }
        }
    }

    /// Commit the queued writes as one batch, answer each, dispatch the changes.
    fn commit(&mut self, batch: &mut Queued) {
        if batch.writes.is_empty() {
            return;
        }
        let results = self.log.apply(&batch.writes, now_ms(), self.cfg.sync);
        batch.writes.clear();
        let mut changes: Vec<Change> = Vec::with_capacity(results.len());
        for ((link, request_id), r) in batch.from.drain(..).zip(results) {
            match r {
                Ok(c) => {
                    let buf = self.pending.entry(link).or_default();
                    let _ = self
                        .enc
                        .write_reply(buf, request_id, wire_pos(c.position), c.version);
                    changes.push(c);
                }
                Err(e) => self.write_error(link, request_id, &e),
            }
        }
        self.dispatch(&changes);
    }

    /// One `Changes` frame per interested link for `changes`.
    fn dispatch(&mut self, changes: &[Change]) {
        let mut per_link: HashMap<LinkId, Vec<(usize, Vec<u64>)>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            for (link, ids) in self.watchers.matching(&c.key, c.position.partition) {
                per_link.entry(link).or_default().push((i, ids));
            }
        }
        for (link, items) in per_link {
            let refs: Vec<ChangeRef<'_>> = items
                .iter()
                .map(|(i, ids)| change_ref(&changes[*i], ids))
                .collect();
            let buf = self.pending.entry(link).or_default();
            let _ = self.enc.changes(buf, 0, &refs);
        }
    }

    /// Handle a non-write message; true to stop.
    fn handle(&mut self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Shutdown => return true,
            CoreMsg::Open { link, outbox } => {
                debug!(link, "link open");
                self.links.insert(link, outbox);
            }
            CoreMsg::Closed { link } => self.drop_link(link, "closed by peer"),
            CoreMsg::Request {
                link,
                request_id,
                req,
            } => self.request(link, request_id, req),
        }
        false
    }

    fn request(&mut self, link: LinkId, request_id: u64, req: Req) {
        let mut buf = self.pending.remove(&link).unwrap_or_default();
        match req {
            Req::Hello => {
                let _ = self.enc.hello_ack(
                    &mut buf,
                    request_id,
                    &self.cfg.store_id,
                    self.cfg.map_version,
                    self.log.partitions(),
                );
            }
            Req::Ping(nonce) => {
                let _ = self.enc.pong(&mut buf, request_id, nonce);
            }
            Req::Get(key) => match self.log.get(key.as_bytes()) {
                Ok(cur) => {
                    let p = self.log.partition_of(key.as_bytes());
                    let pos = self.log.position(p).map(wire_pos).unwrap_or_default();
                    let (value, version) = cur
                        .as_ref()
                        .map_or((None, 0), |c| (Some(c.value.as_slice()), c.version));
                    let _ = self
                        .enc
                        .get_reply(&mut buf, request_id, &key, value, version, pos);
                }
                Err(e) => {
                    self.pending.insert(link, buf);
                    self.write_error(link, request_id, &e);
                    return;
                }
            },
            Req::Write(_) => {}
            Req::Watch {
                watch_id,
                target,
                prefix,
                from,
            } => {
                self.pending.insert(link, buf);
                self.watch(link, request_id, watch_id, &target, prefix, from);
                return;
            }
            Req::Unwatch(watch_id) => {
                self.watchers.remove(link, watch_id);
            }
        }
        self.pending.insert(link, buf);
    }

    fn watch(
        &mut self,
        link: LinkId,
        request_id: u64,
        watch_id: u64,
        target: &str,
        prefix: bool,
        from: Option<Position>,
    ) {
        let bytes = target.as_bytes();
        let t = if prefix {
            Target::Prefix(bytes)
        } else {
            Target::Key(bytes)
        };
        // Where the target lives: one partition for a key or a hash-tagged prefix,
        // every partition otherwise.
        let home = if prefix {
            crate::partition::prefix_partition(bytes, self.log.partitions())
        } else {
            Some(self.log.partition_of(bytes))
        };
        // A position in a partition the target does not live in cannot be resumed:
        // the watch starts over (reset + snapshot) in the right one.
        let misplaced = matches!((from, home), (Some(pos), Some(h)) if pos.partition != h);
        let from = from.filter(|_| !misplaced);
        let partitions: Vec<u32> = match (from, home) {
            (Some(pos), _) => vec![pos.partition],
            (None, Some(h)) => vec![h],
            (None, None) => {
                let mut v: Vec<u32> = self.log.owned().collect();
                v.sort_unstable();
                v
            }
        };
        // A prefix watch resumed in one partition covers only that partition (the
        // edge sends one such watch per partition).
        let bound = if partitions.len() == 1 && (from.is_some() || home.is_some()) {
            partitions.first().copied()
        } else {
            None
        };
        for &p in &partitions {
            if self.log.position(p).is_none() {
                self.error(
                    link,
                    request_id,
                    ErrorCode::WrongPartition,
                    &format!("partition {p} is not served here"),
                    0,
                );
                return;
            }
        }
        let mut buf = self.pending.remove(&link).unwrap_or_default();
        for p in partitions {
            let resumed = match from {
                Some(pos) => match self.log.resume(pos, t) {
                    Ok(Resume::Changes { changes, .. }) => {
                        let _ = self.enc.resumed(&mut buf, request_id, watch_id, p);
                        let ids = [watch_id];
                        let refs: Vec<ChangeRef<'_>> =
                            changes.iter().map(|c| change_ref(c, &ids)).collect();
                        if !refs.is_empty() {
                            let _ = self.enc.changes(&mut buf, request_id, &refs);
                        }
                        true
                    }
                    Ok(Resume::Reset { reason, now }) => {
                        let _ = self
                            .enc
                            .reset(&mut buf, request_id, watch_id, p, now.epoch, reason);
                        false
                    }
                    Err(e) => {
                        warn!(error = %e, "resume failed");
                        false
                    }
                },
                None => false,
            };
            if !resumed {
                let pos = self.log.position(p).map(wire_pos).unwrap_or_default();
                if misplaced {
                    let reason = "position belongs to another partition";
                    let _ = self
                        .enc
                        .reset(&mut buf, request_id, watch_id, p, pos.epoch(), reason);
                }
                match self.log.snapshot(p, t) {
                    Ok(entries) => {
                        let refs: Vec<EntryRef<'_>> = entries
                            .iter()
                            .map(|(k, c)| EntryRef {
                                key: text(k),
                                value: &c.value,
                                version: c.version,
                            })
                            .collect();
                        // Big snapshots go out as several frames, all but the last
                        // with `more`, each well under the link's frame limit.
                        let pages = refs.chunks(SNAPSHOT_PAGE).count().max(1);
                        for (i, page) in refs
                            .chunks(SNAPSHOT_PAGE)
                            .chain(std::iter::once(&[][..]).filter(|_| refs.is_empty()))
                            .enumerate()
                        {
                            let more = i + 1 < pages;
                            let _ = self
                                .enc
                                .snapshot(&mut buf, request_id, watch_id, p, page, pos, more);
                        }
                    }
                    Err(e) => warn!(error = %e, "snapshot failed"),
                }
            }
        }
        self.pending.insert(link, buf);
        self.watchers.add(link, watch_id, bytes, prefix, bound);
    }

    fn drop_link(&mut self, link: LinkId, why: &str) {
        if let Some(outbox) = self.links.remove(&link) {
            info!(link, why, "link dropped");
            outbox.close.notify_one();
        }
        self.pending.remove(&link);
        self.watchers.remove_link(link);
    }

    /// Hand every link its frames for this drain, in one piece; drop a link whose
    /// unwritten bytes would pass the limit (its peer has stopped reading).
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
            if queued + bytes.len() > self.cfg.max_link_queue_bytes {
                self.drop_link(link, "outbound queue full (peer not reading)");
                continue;
            }
            outbox.queued.fetch_add(bytes.len(), Ordering::AcqRel);
            if outbox.tx.send(bytes).is_err() {
                self.drop_link(link, "closed");
            }
        }
    }

    fn trim(&mut self, now: u64) {
        let owned: Vec<u32> = self.log.owned().collect();
        for p in owned {
            if let Err(e) = self.log.trim(p, self.cfg.retention, now, 1000) {
                warn!(partition = p, error = %e, "trim failed");
            }
        }
    }
}

/// Spawn the core thread; returns its request sender.
pub fn spawn<E: Engine>(
    log: ChangeLog<E>,
    cfg: CoreConfig,
) -> std::io::Result<(Sender<CoreMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("store-core".into())
        .spawn(move || run(log, cfg, rx))?;
    Ok((tx, handle))
}
