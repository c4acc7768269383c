//! The internal TCP server on `tokio-uring`: one thread accepts edge links; each link
//! has a reader task (bytes → verified link frames → requests to the core) and a
//! writer task (the core's batched frames → socket, coalesced into few writes). A
//! malformed frame drops that one link, never the node.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;

use tracing::{info, warn};
use wire::link::{LinkLimits, LinkMessage, decode_frame};

use crate::changelog::{Position, Write};
use crate::core::{CoreMsg, Outbox, Req};
use crate::metrics::Metrics;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// Serve links on `listener` forever (until the runtime stops).
pub async fn serve(
    listener: tokio_uring::net::TcpListener,
    core: Sender<CoreMsg>,
    metrics: Arc<Metrics>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let link = NEXT_LINK.fetch_add(1, Ordering::Relaxed);
                info!(link, %peer, "link accepted");
                Metrics::add(&metrics.links_accepted, 1);
                let core = core.clone();
                let metrics = Arc::clone(&metrics);
                tokio_uring::spawn(
                    async move { run_link(link, peer, stream, core, &metrics).await },
                );
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
}

fn to_req(msg: &LinkMessage<'_>) -> Option<Req> {
    let pos = |p: &wire::link::Position| Position {
        partition: p.partition(),
        epoch: p.epoch(),
        seq: p.seq(),
    };
    Some(match msg {
        LinkMessage::Hello(_) => Req::Hello,
        LinkMessage::Ping(p) => Req::Ping(p.nonce()),
        LinkMessage::Get(g) => Req::Get(g.key().to_owned()),
        LinkMessage::Put(p) => Req::Write(Write::Put {
            key: p.key().as_bytes().to_vec(),
            value: p.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
            if_version: p.if_version(),
        }),
        LinkMessage::Delete(d) => Req::Write(Write::Delete {
            key: d.key().as_bytes().to_vec(),
            if_version: d.if_version(),
        }),
        LinkMessage::Publish(p) => Req::Write(Write::Publish {
            key: p.key().as_bytes().to_vec(),
            value: p.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
        }),
        LinkMessage::Watch(w) => Req::Watch {
            watch_id: w.watch_id(),
            target: w.key().to_owned(),
            prefix: w.prefix(),
            from: w.from().map(pos),
        },
        LinkMessage::Unwatch(u) => Req::Unwatch(u.watch_id()),
        // Replies and pushes are the store's to send, not to receive.
        _ => return None,
    })
}

async fn run_link(
    link: u64,
    peer: SocketAddr,
    stream: tokio_uring::net::TcpStream,
    core: Sender<CoreMsg>,
    metrics: &Metrics,
) {
    // Replies and changes are already batched per drain; Nagle would only hold the
    // next batch back behind the peer's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        warn!(link, error = %e, "cannot set TCP_NODELAY");
    }
    let stream = Rc::new(stream);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let outbox = Outbox {
        tx,
        queued: Arc::clone(&queued),
        close: Arc::clone(&close),
    };
    if core.send(CoreMsg::Open { link, outbox }).is_err() {
        return;
    }
    let writer_stream = Rc::clone(&stream);
    let writer = tokio_uring::spawn(async move {
        while let Some(mut buf) = rx.recv().await {
            // Coalesce whatever else is queued into one write.
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
            }
            let len = buf.len();
            let (res, _) = writer_stream.write_all(buf).await;
            queued.fetch_sub(len, Ordering::AcqRel);
            if let Err(e) = res {
                warn!(link, error = %e, "link write failed");
                break;
            }
        }
    });

    let closer_stream = Rc::clone(&stream);
    let closer = tokio_uring::spawn(async move {
        close.notified().await;
        // Ends the reader's read and any write stuck on a peer that stopped reading.
        let _ = closer_stream.shutdown(std::net::Shutdown::Both);
    });

    let limits = LinkLimits::default();
    let mut pending: Vec<u8> = Vec::new();
    // One read buffer per link, handed to each read and returned by its completion.
    let mut buf = vec![0u8; READ_CHUNK];
    let why = 'read: loop {
        let (res, returned) = stream.read(buf).await;
        buf = returned;
        let n = match res {
            Ok(0) => break 'read "closed by peer".to_string(),
            Ok(n) => n,
            Err(e) => break 'read format!("read error: {e}"),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        loop {
            match decode_frame(&pending[at..], &limits) {
                Ok(Some((frame, used))) => {
                    at += used;
                    match to_req(&frame.message) {
                        Some(req) => {
                            let msg = CoreMsg::Request {
                                link,
                                request_id: frame.request_id,
                                req,
                            };
                            if core.send(msg).is_err() {
                                break 'read "store shutting down".to_string();
                            }
                        }
                        None => {
                            break 'read format!(
                                "unexpected {:?} frame from an edge",
                                frame.message.kind()
                            );
                        }
                    }
                }
                Ok(None) => break,
                // A malformed frame: this link is dropped, the node keeps serving.
                Err(e) => {
                    Metrics::add(&metrics.links_dropped_malformed, 1);
                    break 'read format!("malformed frame: {e}");
                }
            }
        }
        pending.drain(..at);
    };
    info!(link, %peer, reason = %why, "link closed");
    let _ = core.send(CoreMsg::Closed { link });
    writer.abort();
    closer.abort();
}
