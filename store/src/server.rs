//! The store's one I/O thread: the core ([`crate::core`]) and every edge link's tasks
//! share it, on a single-threaded tokio runtime. Each link has a reader (bytes →
//! verified link frames → requests to the core, which runs on this same thread; it
//! stops reading while the core holds the link's full intake of requests unanswered,
//! [`crate::core::intake`]) and a writer (the core's frames for the link → socket,
//! coalesced into few writes). Only
//! the committer, which owns the disk, runs on another thread. A malformed frame drops
//! that one link, never the node.
//!
//! Links are few (edge workers × stores) and busy, so readiness I/O (epoll) serves them
//! well: a ready socket is read in one call, and a frame for the core or the writer
//! crosses no thread.
//!
//! With a cluster secret, a new link first proves it holds it ([`authenticate`],
//! `wire::link::auth`): only then does it reach the core, which answers its Hello. A
//! link that cannot prove it is dropped, logged with its peer's address and counted
//! (`ringline_store_links_dropped_total{reason="unauthenticated"}`). With link TLS
//! every link is a TLS session first (`tokio-rustls`), the proof then runs inside it.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};
use wire::link::auth::{ClusterSecret, Nonce, Side};
use wire::link::{LinkEncoder, LinkLimits, LinkMessage, WatchId, decode_frame};

use crate::changelog::{ChangeLog, Position, Write};
use crate::core::{CoreConfig, CoreMsg, CoreTx, Intake, IntakeLimits, Outbox, Req};
use crate::dedup::MsgId;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// How long a stopping node waits for its links' writers to hand over the last answers.
const STOP_FLUSH: Duration = Duration::from_secs(5);

/// Why a link's reader stopped when the node is stopping.
const STOPPING: &str = "store stopping";

/// Why a link's reader stopped when the core dropped the link.
const DROPPED: &str = "dropped by the core";

/// Largest frame a link may send before it has proven the cluster secret.
const AUTH_MAX_FRAME: usize = 4096;
/// Time a new link has to prove the cluster secret.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A link's reading half (a TCP socket's, or a TLS session's).
type LinkRead = Box<dyn AsyncRead + Unpin>;
/// A link's writing half.
type LinkWrite = Box<dyn AsyncWrite + Unpin>;

/// What a link must get through before it is served: TLS (if on), then the proof of
/// the cluster secret (if set).
#[derive(Clone, Default)]
struct Gate {
    tls: Option<tokio_rustls::TlsAcceptor>,
    secret: Option<Arc<ClusterSecret>>,
}

/// The link tasks of a node, for the stop to wait on.
type LinkTasks = Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>>;

/// Run a store node on the current thread, which must be inside a
/// [`tokio::task::LocalSet`] on a current-thread runtime: the core, plus every link
/// accepted on `listener`, until `stop` resolves. Then no link is accepted and no more
/// requests are read; the core commits and answers what it has; the links' writers
/// hand those answers to their sockets (for up to 5 s); then this returns. Fails if the
/// committer thread cannot be started or the core fails.
pub async fn run_node<E: Engine>(
    listener: TcpListener,
    log: ChangeLog<E>,
    cfg: CoreConfig,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = Arc::clone(&cfg.metrics);
    let gate = Gate {
        tls: cfg.link_tls.clone().map(tokio_rustls::TlsAcceptor::from),
        secret: cfg.cluster_secret.clone(),
    };
    let intake = cfg.link_intake;
    let (core, inbox) = crate::core::channel();
    let mut core_task = tokio::task::spawn_local(crate::core::run(log, cfg, core.clone(), inbox));
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let links: LinkTasks = Rc::default();
    let failed = tokio::select! {
        () = serve(listener, core.clone(), metrics, gate, intake, stop_rx, Rc::clone(&links)) => None,
        () = stop => None,
        // The core ended by itself: it failed; the node must not go on without it.
        r = &mut core_task => Some(r),
    };
    let _ = stopping.send(true);
    if let Some(r) = failed {
        return Err(match r {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::io::Error::other("the core stopped unasked"),
            Err(e) => std::io::Error::other(format!("the core failed: {e}")),
        });
    }
    // The readers have stopped taking requests, so what the core must finish is finite.
    let _ = core.send(CoreMsg::Shutdown);
    let r = core_task
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("the core failed: {e}"))));
    // The core has dropped every link's outbox: each writer ends once it has written
    // what it was handed.
    let tasks = std::mem::take(&mut *links.borrow_mut());
    let flushed = tokio::time::timeout(STOP_FLUSH, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    if flushed.is_err() {
        warn!("some links did not take their last answers within 5 s");
    }
    r
}

/// Accept links on `listener` forever, each served by tasks on this thread.
async fn serve(
    listener: TcpListener,
    core: CoreTx,
    metrics: Arc<Metrics>,
    gate: Gate,
    intake: IntakeLimits,
    stop: tokio::sync::watch::Receiver<bool>,
    links: LinkTasks,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
                info!(link, %peer, "link accepted");
                Metrics::add(&metrics.links_accepted, 1);
                let core = core.clone();
                let metrics = Arc::clone(&metrics);
                let stop = stop.clone();
                let gate = gate.clone();
                let task = tokio::task::spawn_local(async move {
                    let peer = Peer { link, addr: peer };
                    run_link(peer, stream, core, &metrics, &gate, intake, stop).await;
                });
                let mut links = links.borrow_mut();
                links.retain(|t| !t.is_finished());
                links.push(task);
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
}

/// A write's idempotency id from its link fields (an absent scope is the anonymous one).
fn msg_id(id: Option<&str>, scope: Option<&str>) -> Option<MsgId> {
    id.map(|id| MsgId {
        scope: scope.unwrap_or_default().as_bytes().to_vec(),
        id: id.as_bytes().to_vec(),
    })
}

fn to_req(msg: &LinkMessage<'_>) -> Option<Req> {
    let pos = |p: &wire::link::Position| Position {
        partition: p.partition(),
        epoch: p.epoch(),
        seq: p.seq(),
    };
    Some(match msg {
        LinkMessage::Hello(h) => Req::Hello {
            edge: h.edge_id().unwrap_or_default().to_owned(),
            worker: h.worker(),
        },
        LinkMessage::Ping(p) => Req::Ping(p.nonce()),
        LinkMessage::Get(g) => Req::Get(g.key().to_owned()),
        LinkMessage::Put(p) if wire::presence::is_presence_key(p.key()) => Req::Member {
            key: p.key().to_owned(),
            meta: Some(p.value().map(|v| v.bytes().to_vec()).unwrap_or_default()),
            owner: p.owner().unwrap_or_default().to_owned(),
        },
        LinkMessage::Delete(d) if wire::presence::is_presence_key(d.key()) => Req::Member {
            key: d.key().to_owned(),
            meta: None,
            owner: d.owner().unwrap_or_default().to_owned(),
        },
        LinkMessage::Put(p) => Req::Write(Write::Put {
            key: p.key().as_bytes().to_vec(),
            value: p.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
            if_version: p.if_version(),
            msg_id: msg_id(p.msg_id(), p.msg_scope()),
        }),
        LinkMessage::Delete(d) => Req::Write(Write::Delete {
            key: d.key().as_bytes().to_vec(),
            if_version: d.if_version(),
            msg_id: msg_id(d.msg_id(), d.msg_scope()),
        }),
        LinkMessage::Publish(p) => Req::Write(Write::Publish {
            key: p.key().as_bytes().to_vec(),
            value: p.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
            msg_id: msg_id(p.msg_id(), p.msg_scope()),
        }),
        LinkMessage::Watch(w) => Req::Watch {
            watch_id: WatchId::from_raw(w.watch_id()),
            target: w.key().to_owned(),
            prefix: w.prefix(),
            from: w.from().map(pos),
        },
        LinkMessage::Unwatch(u) => Req::Unwatch(WatchId::from_raw(u.watch_id())),
        LinkMessage::Members(m) => Req::Members {
            prefix: m.prefix().to_owned(),
            after: m.after().map(str::to_owned),
            limit: m.limit(),
        },
        LinkMessage::PresenceSync(s) => Req::PresenceSync {
            members: s
                .entries()
                .into_iter()
                .flatten()
                .zip(s.owners().into_iter().flatten())
                .map(|(e, owner)| {
                    let meta = e.value().map(|v| v.bytes().to_vec()).unwrap_or_default();
                    (e.key().to_owned(), meta, owner.to_owned())
                })
                .collect(),
            last: s.last(),
        },
        // Replies and pushes are the store's to send, not to receive.
        _ => return None,
    })
}

/// The link's writer: the core's frames for `link`, coalesced, to the socket;
/// `queued` counts down what is written.
fn spawn_writer(
    link: u64,
    mut wr: LinkWrite,
    mut rx: UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        while let Some(mut buf) = rx.recv().await {
            // Coalesce whatever else is queued into one write.
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
            }
            let res = wr.write_all(&buf).await;
            queued.fetch_sub(buf.len(), Ordering::AcqRel);
            if let Err(e) = res {
                warn!(link, error = %e, "link write failed");
                break;
            }
        }
    })
}

/// Hand the core the complete frames at the start of `pending` as requests of
/// `link`, each taking its share of the link's intake, until the intake is full: the
/// bytes used, or why the link must close.
fn forward(
    link: u64,
    pending: &[u8],
    limits: &LinkLimits,
    core: &CoreTx,
    intake: &Intake,
    metrics: &Metrics,
) -> Result<usize, String> {
    let mut at = 0;
    loop {
        if intake.full() {
            return Ok(at);
        }
        match decode_frame(&pending[at..], limits) {
            Ok(Some((frame, used))) => {
                at += used;
                let Some(req) = to_req(&frame.message) else {
                    return Err(format!(
                        "unexpected {:?} frame from an edge",
                        frame.message.kind()
                    ));
                };
                let msg = CoreMsg::Request {
                    link,
                    request_id: frame.request_id,
                    req,
                    taken: intake.take(used),
                };
                if core.send(msg).is_err() {
                    return Err("store shutting down".to_string());
                }
            }
            Ok(None) => return Ok(at),
            // A malformed frame: this link is dropped, the node keeps serving.
            Err(e) => {
                Metrics::add(&metrics.links_dropped_malformed, 1);
                return Err(format!("malformed frame: {e}"));
            }
        }
    }
}

/// The link's two halves: the socket's, or (link TLS on) its TLS session's once the
/// handshake is done (within 10 s). `None`: the handshake failed, logged and counted.
async fn open_session(
    peer: Peer,
    stream: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    metrics: &Metrics,
) -> Option<(LinkRead, LinkWrite)> {
    let Some(acceptor) = tls else {
        let (rd, wr) = stream.into_split();
        return Some((Box::new(rd), Box::new(wr)));
    };
    let why = match tokio::time::timeout(AUTH_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let (rd, wr) = tokio::io::split(s);
            return Some((Box::new(rd), Box::new(wr)));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no TLS handshake within 10 s".to_string(),
    };
    Metrics::add(&metrics.links_dropped_tls, 1);
    warn!(link = peer.link, peer = %peer.addr, reason = %why, "link refused: its TLS handshake failed");
    None
}

/// Through the gate: the link's halves once its TLS session (if on) is up and it has
/// proven the cluster secret (if set), with what it sent meanwhile in `pending`;
/// `None`: refused (logged and counted) or the node is stopping.
async fn admit(
    peer: Peer,
    stream: TcpStream,
    gate: &Gate,
    metrics: &Metrics,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    pending: &mut Vec<u8>,
) -> Option<(LinkRead, LinkWrite)> {
    // Replies and changes are already batched per drain; Nagle would only hold the
    // next batch back behind the peer's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        warn!(link = peer.link, error = %e, "cannot set TCP_NODELAY");
    }
    let (mut rd, mut wr) = open_session(peer, stream, gate.tls.as_ref(), metrics).await?;
    let Some(secret) = gate.secret.as_deref() else {
        return Some((rd, wr));
    };
    let proven = tokio::select! {
        r = tokio::time::timeout(AUTH_TIMEOUT, authenticate(&mut rd, &mut wr, secret, pending)) => {
            r.unwrap_or_else(|_| Err("no proof of the cluster secret within 10 s".into()))
        }
        _ = stop.changed() => Err(STOPPING.to_string()),
    };
    match proven {
        Ok(()) => {
            info!(link = peer.link, peer = %peer.addr, "link proved the cluster secret");
            Some((rd, wr))
        }
        Err(why) => {
            Metrics::add(&metrics.links_dropped_unauthenticated, 1);
            warn!(link = peer.link, peer = %peer.addr, reason = %why, "link refused: it did not prove the cluster secret");
            None
        }
    }
}

/// A link's number and its peer's address (for the logs).
#[derive(Debug, Clone, Copy)]
struct Peer {
    link: u64,
    addr: SocketAddr,
}

async fn run_link(
    peer: Peer,
    stream: TcpStream,
    core: CoreTx,
    metrics: &Metrics,
    gate: &Gate,
    intake: IntakeLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Peer {
        link,
        addr: peer_addr,
    } = peer;
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let Some((rd, wr)) = admit(peer, stream, gate, metrics, &mut stop, &mut pending).await else {
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let intake = Arc::new(Intake::new(intake));
    let outbox = Outbox {
        tx,
        queued: Arc::clone(&queued),
        close: Arc::clone(&close),
        intake: Arc::clone(&intake),
    };
    if core.send(CoreMsg::Open { link, outbox }).is_err() {
        return;
    }
    let writer = spawn_writer(link, wr, rx, queued);
    let reader = Reader {
        link,
        rd,
        // What came with the proof (the hello, held back until the link proved
        // itself) goes first.
        pending,
        core: &core,
        intake: &intake,
        close: &close,
        metrics,
    };
    let why = reader.run(&mut stop).await;
    if why == STOPPING {
        // The core still answers what this link sent; the writer ends once the core
        // has stopped and dropped the link's outbox.
        let _ = writer.await;
        info!(link, peer = %peer_addr, "link closed: store stopped");
        return;
    }
    info!(link, peer = %peer_addr, reason = %why, "link closed");
    let _ = core.send(CoreMsg::Closed { link });
    // Dropping the writer's half (with the task) and the reader's closes the socket.
    writer.abort();
}

/// A link's reading half, and where its requests go.
struct Reader<'a> {
    link: u64,
    rd: LinkRead,
    /// Bytes read and not yet handed over as requests.
    pending: Vec<u8>,
    core: &'a CoreTx,
    intake: &'a Intake,
    /// Signalled when the core drops the link.
    close: &'a tokio::sync::Notify,
    metrics: &'a Metrics,
}

impl Reader<'_> {
    /// Hand the core the link's requests, as far as its intake allows, until the link
    /// must stop reading: why ([`STOPPING`] when the node stops).
    async fn run(mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> String {
        let limits = LinkLimits::default();
        loop {
            let (core, intake, metrics) = (self.core, self.intake, self.metrics);
            match forward(self.link, &self.pending, &limits, core, intake, metrics) {
                Ok(used) => {
                    self.pending.drain(..used);
                }
                Err(why) => return why,
            }
            if *stop.borrow() {
                return STOPPING.to_string();
            }
            if self.intake.full() {
                if let Err(why) = self.wait_for_room(stop).await {
                    return why;
                }
                continue;
            }
            if self.pending.capacity() - self.pending.len() < READ_CHUNK / 4 {
                self.pending.reserve(READ_CHUNK);
            }
            tokio::select! {
                r = self.rd.read_buf(&mut self.pending) => match r {
                    Ok(0) => return "closed by peer".to_string(),
                    Ok(_) => {}
                    Err(e) => return format!("read error: {e}"),
                },
                // The core dropped the link (its peer stopped reading): stop here; the
                // writer, perhaps stuck on that peer, is stopped by the caller.
                () = self.close.notified() => return DROPPED.to_string(),
                // The node is stopping: no more requests from this link.
                _ = stop.changed() => return STOPPING.to_string(),
            }
        }
    }

    /// The core holds as much of this link's requests as it may: read nothing more (TCP
    /// holds the edge back) until it has answered some. `Err`: why the link must stop
    /// reading meanwhile.
    async fn wait_for_room(
        &self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        Metrics::add(&self.metrics.link_reads_paused, 1);
        while self.intake.full() {
            tokio::select! {
                // A stopping node takes no more requests, even with room made.
                biased;
                _ = stop.changed() => return Err(STOPPING.to_string()),
                () = self.close.notified() => return Err(DROPPED.to_string()),
                () = self.intake.room() => {}
            }
        }
        Ok(())
    }
}

/// Prove the cluster secret on a new link (`wire::link::auth`): its first frame must be
/// a Hello with the edge's nonce; the store answers with its own nonce and proof; the
/// edge's next frame must be its proof over both nonces. The Hello stays at the front
/// of `pending` (the core answers it once the link is in); the proof is consumed.
/// `Err` says why the link is refused.
async fn authenticate(
    rd: &mut LinkRead,
    wr: &mut LinkWrite,
    secret: &ClusterSecret,
    pending: &mut Vec<u8>,
) -> Result<(), String> {
    let limits = LinkLimits {
        max_frame: AUTH_MAX_FRAME,
        ..LinkLimits::default()
    };
    let hello_len = read_frame(rd, pending, 0, &limits).await?;
    let edge_nonce = match decode_frame(&pending[..hello_len], &limits) {
        Ok(Some((f, _))) => match f.message {
            LinkMessage::Hello(h) => h.nonce().and_then(|n| Nonce::from_slice(n.bytes())),
            _ => None,
        },
        _ => None,
    }
    .ok_or("its first frame is not a Hello with a nonce (an edge without the cluster secret?)")?;
    let store_nonce = Nonce(rand::random());
    let proof = secret.prove(Side::Store, &edge_nonce, &store_nonce);
    let mut out = Vec::new();
    LinkEncoder::default()
        .auth_challenge(&mut out, 0, &store_nonce, &proof)
        .map_err(|e| e.to_string())?;
    wr.write_all(&out)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let proof_len = read_frame(rd, pending, hello_len, &limits).await?;
    let end = hello_len + proof_len;
    let proven = match decode_frame(&pending[hello_len..end], &limits) {
        Ok(Some((f, _))) => match f.message {
            LinkMessage::AuthProof(p) => {
                secret.verify(Side::Edge, &edge_nonce, &store_nonce, p.proof().bytes())
            }
            _ => false,
        },
        _ => false,
    };
    if !proven {
        return Err("a wrong proof (another secret, or a replayed handshake)".into());
    }
    pending.drain(hello_len..end);
    Ok(())
}

/// Read until a whole frame starts at `at` in `pending`: its length.
async fn read_frame(
    rd: &mut LinkRead,
    pending: &mut Vec<u8>,
    at: usize,
    limits: &LinkLimits,
) -> Result<usize, String> {
    loop {
        match decode_frame(&pending[at..], limits) {
            Ok(Some((_, used))) => return Ok(used),
            Ok(None) => {}
            Err(e) => return Err(format!("malformed frame: {e}")),
        }
        match rd.read_buf(pending).await {
            Ok(0) => return Err("closed by the peer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}
