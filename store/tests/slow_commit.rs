//! A commit that stalls (a slow fsync) through the real core and committer, with an
//! engine whose writes become visible and then wait at a gate the test opens. While a
//! write waits: other links are answered (ping, get, watch) and the write is not
//! acknowledged; the writing link's own later read waits for it and sees it; a watch
//! whose snapshot already saw the landing batch does not get its changes twice; a repeat
//! of the stalled write (same msg_id) is answered only after it, with its position.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::changelog::{ChangeLog, Write};
use store::core::{CoreConfig, CoreMsg, CoreTx, Outbox, Req, Taken, spawn};
use store::dedup::MsgId;
use store::engine::memory::MemoryEngine;
use store::engine::{Engine, EngineError, Pair, Read, WriteBatch};
use tokio::sync::mpsc::UnboundedReceiver;
use wire::link::{LinkLimits, LinkMessage, WatchId, decode_frame};

/// Applies each batch at once, then holds the writer until the test lets it go.
struct Gated {
    inner: MemoryEngine,
    landed: Mutex<Sender<()>>,
    gate: Mutex<Receiver<()>>,
}

impl Read for Gated {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<Pair>, EngineError> {
        self.inner.scan(start, end, limit)
    }
    fn last(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>, EngineError> {
        self.inner.last(start, end)
    }
}

impl Engine for Gated {
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), EngineError> {
        self.inner.write(batch, sync)?;
        self.landed.lock().unwrap().send(()).unwrap();
        self.gate.lock().unwrap().recv().unwrap();
        Ok(())
    }
    fn snapshot_read<R>(&self, f: impl FnOnce(&dyn Read) -> R) -> R {
        self.inner.snapshot_read(f)
    }
}

/// What a link received, decoded into (kind, request id, detail).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    WriteReply(u64),
    GetReply(u64, Option<Vec<u8>>),
    Pong(u64),
    Snapshot(u64, Vec<String>, u64),
    Change(u64, String, u64),
    Other(String),
}

struct Link {
    id: u64,
    rx: UnboundedReceiver<Vec<u8>>,
    buf: Vec<u8>,
    /// (request id, seq) of every write reply taken.
    written: Vec<(u64, u64)>,
}

impl Link {
    /// Everything received so far, waiting up to `wait` for at least `n` items.
    fn take(&mut self, n: usize, wait: Duration) -> Vec<Got> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            while let Ok(b) = self.rx.try_recv() {
                self.buf.extend_from_slice(&b);
            }
            let mut at = 0;
            while let Some((f, used)) =
                decode_frame(&self.buf[at..], &LinkLimits::default()).unwrap()
            {
                at += used;
                let id = f.request_id;
                out.push(match f.message {
                    LinkMessage::WriteReply(w) => {
                        self.written.push((id, w.position().unwrap().seq()));
                        Got::WriteReply(id)
                    }
                    LinkMessage::GetReply(g) => {
                        Got::GetReply(id, g.value().map(|v| v.bytes().to_vec()))
                    }
                    LinkMessage::Pong(_) => Got::Pong(id),
                    LinkMessage::Snapshot(s) => Got::Snapshot(
                        id,
                        s.entries()
                            .iter()
                            .flatten()
                            .map(|e| e.key().to_owned())
                            .collect(),
                        s.position().unwrap().seq(),
                    ),
                    LinkMessage::Changes(cs) => {
                        for c in cs.changes().iter().flatten() {
                            out.push(Got::Change(
                                id,
                                c.key().to_owned(),
                                c.position().unwrap().seq(),
                            ));
                        }
                        continue;
                    }
                    other => Got::Other(format!("{:?}", other.kind())),
                });
            }
            self.buf.drain(..at);
            if out.len() >= n || std::time::Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn put(key: &str, v: u8) -> Req {
    Req::Write(Write::Put {
        key: key.as_bytes().to_vec(),
        value: vec![v],
        if_version: None,
        msg_id: None,
    })
}

/// The core's sender, two links, "a batch landed" notices, the gate, the core thread.
type Setup = (
    CoreTx,
    Vec<Link>,
    Receiver<()>,
    Sender<()>,
    std::thread::JoinHandle<std::io::Result<()>>,
);

fn setup() -> Setup {
    let (landed_tx, landed) = channel();
    let (gate, gate_rx) = channel();
    let engine = Arc::new(Gated {
        inner: MemoryEngine::new(),
        landed: Mutex::new(landed_tx),
        gate: Mutex::new(gate_rx),
    });
    // One partition: every key shares the same log, the worst case for a stall.
    // Creating it is one write: let it through.
    gate.send(()).unwrap();
    let log = ChangeLog::open(engine, 1, &[0], || 9).unwrap();
    landed.recv().unwrap();
    let (core, handle) = spawn(
        log,
        CoreConfig {
            sync: true,
            ..CoreConfig::default()
        },
    )
    .unwrap();
    let mut links = Vec::new();
    for id in 1..=2 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            close: Arc::new(tokio::sync::Notify::new()),
            intake: Arc::default(),
        };
        core.send(CoreMsg::Open { link: id, outbox }).unwrap();
        links.push(Link {
            id,
            rx,
            buf: Vec::new(),
            written: Vec::new(),
        });
    }
    (core, links, landed, gate, handle)
}

fn send(core: &CoreTx, link: &Link, request_id: u64, req: Req) {
    core.send(CoreMsg::Request {
        taken: Taken::NONE,
        link: link.id,
        request_id,
        req,
    })
    .unwrap();
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_stalled_commit_holds_only_its_writes() {
    let (core, mut links, landed, gate, handle) = setup();
    let (a, b) = links.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    send(&core, b, 1, put("other", 1));
    landed.recv_timeout(WAIT).unwrap();
    gate.send(()).unwrap();
    assert_eq!(b.take(1, WAIT), [Got::WriteReply(1)]);

    // Link A writes; the commit lands and stalls.
    send(&core, a, 10, put("k", 7));
    landed.recv_timeout(WAIT).unwrap();
    // A's own read waits behind its write.
    send(&core, a, 11, Req::Get("k".into()));
    // Link B is answered meanwhile: ping, a read, and a watch on the landing key.
    send(&core, b, 2, Req::Ping(5));
    send(&core, b, 3, Req::Get("other".into()));
    send(
        &core,
        b,
        4,
        Req::Watch {
            watch_id: WatchId::from_raw(40),
            target: "k".into(),
            prefix: false,
            from: None,
        },
    );
    let got = b.take(3, WAIT);
    assert_eq!(got[0], Got::Pong(2));
    assert_eq!(got[1], Got::GetReply(3, Some(vec![1])));
    // The snapshot already shows the landing write (seq 2 of the one partition).
    assert_eq!(got[2], Got::Snapshot(4, vec!["k".into()], 2));
    assert_eq!(got.len(), 3);
    // B's answers left the core in a drain after the one that submitted A's write, so
    // anything the core had for A by then is already in A's channel: no waiting.
    assert!(
        a.take(0, Duration::ZERO).is_empty(),
        "nothing for A while its commit stalls"
    );

    // The disk answers: A gets its reply, then its read, which sees the write.
    gate.send(()).unwrap();
    assert_eq!(
        a.take(2, WAIT),
        [Got::WriteReply(10), Got::GetReply(11, Some(vec![7]))]
    );
    // B's watch does not get seq 2 again; the next change of k reaches it once.
    send(&core, a, 12, put("k", 8));
    landed.recv_timeout(WAIT).unwrap();
    gate.send(()).unwrap();
    assert_eq!(a.take(1, WAIT), [Got::WriteReply(12)]);
    assert_eq!(b.take(1, WAIT), [Got::Change(0, "k".into(), 3)]);

    core.send(CoreMsg::Shutdown).unwrap();
    // The clean stop records itself with one more write.
    landed.recv_timeout(WAIT).ok();
    gate.send(()).ok();
    handle.join().unwrap().unwrap();
}

#[test]
fn writes_behind_a_stalled_commit_form_the_next_batch() {
    let (core, mut links, landed, gate, handle) = setup();
    let (a, b) = links.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    send(&core, a, 1, put("x", 1));
    landed.recv_timeout(WAIT).unwrap();
    // While the first commit stalls, 50 more writes arrive: they go out as one batch.
    for i in 0..50 {
        send(&core, a, 100 + i, put(&format!("y{i}"), 2));
    }
    // The core takes requests in the order sent: once B's ping, sent after them, is
    // answered, all 50 are in (held as the next batch).
    send(&core, b, 1, Req::Ping(1));
    assert_eq!(b.take(1, WAIT), [Got::Pong(1)]);
    gate.send(()).unwrap();
    landed.recv_timeout(WAIT).unwrap();
    gate.send(()).unwrap();
    // Had the 50 been split, the third commit would wait at the closed gate and some
    // replies would never come.
    let got = a.take(51, WAIT);
    let want: Vec<Got> = std::iter::once(1)
        .chain(100..150)
        .map(Got::WriteReply)
        .collect();
    assert_eq!(got, want);
    assert!(landed.try_recv().is_err(), "two commits for 51 writes");
    core.send(CoreMsg::Shutdown).unwrap();
    landed.recv_timeout(WAIT).ok();
    gate.send(()).ok();
    handle.join().unwrap().unwrap();
}

#[test]
fn a_repeat_of_a_stalled_write_is_answered_after_it_with_its_position() {
    let (core, mut links, landed, gate, handle) = setup();
    let (a, b) = links.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    let watch = Req::Watch {
        watch_id: WatchId::from_raw(40),
        target: "k".into(),
        prefix: false,
        from: None,
    };
    send(&core, b, 1, watch);
    assert_eq!(b.take(1, WAIT), [Got::Snapshot(1, vec![], 0)]);
    let once = |v| {
        Req::Write(Write::Put {
            key: b"k".to_vec(),
            value: vec![v],
            if_version: None,
            msg_id: Some(MsgId {
                scope: b"alice".to_vec(),
                id: b"m-1".to_vec(),
            }),
        })
    };
    // A writes with a msg_id; its commit lands and stalls. The repeat (as after a lost
    // reply) must wait for it: answering sooner would promise a write that may yet fail.
    send(&core, a, 10, once(7));
    landed.recv_timeout(WAIT).unwrap();
    send(&core, a, 11, once(7));
    // Requests are taken in the order sent: once B's ping is answered, the repeat is in.
    send(&core, b, 2, Req::Ping(1));
    assert_eq!(b.take(1, WAIT), [Got::Pong(2)]);
    assert!(
        a.take(1, Duration::ZERO).is_empty(),
        "the repeat is not answered yet"
    );
    gate.send(()).unwrap();
    // The repeat's batch (the first's record written again) lands after the first's and
    // stalls in turn: the first is answered and dispatched, its repeat is not.
    landed.recv_timeout(WAIT).unwrap();
    assert_eq!(a.take(1, WAIT), [Got::WriteReply(10)]);
    assert_eq!(b.take(1, WAIT), [Got::Change(0, "k".into(), 1)]);
    assert!(a.take(1, Duration::from_millis(200)).is_empty());
    gate.send(()).unwrap();
    assert_eq!(a.take(1, WAIT), [Got::WriteReply(11)]);
    assert_eq!(
        a.written,
        [(10, 1), (11, 1)],
        "both answers carry the first's position"
    );
    // Once the first is committed, a repeat (here from the other link) is answered at
    // once, with no batch.
    send(&core, b, 3, once(7));
    assert_eq!(b.take(1, WAIT), [Got::WriteReply(3)]);
    assert_eq!(b.written, [(3, 1)]);
    assert!(
        landed.try_recv().is_err(),
        "no commit for a committed write's repeat"
    );
    // A repeat asking for another value is refused; nothing more reaches the watch.
    send(&core, a, 12, once(8));
    let got = a.take(1, WAIT);
    assert_eq!(got, [Got::Other("Error".into())]);
    send(&core, b, 4, Req::Ping(2));
    assert_eq!(b.take(1, WAIT), [Got::Pong(4)], "no second change");
    core.send(CoreMsg::Shutdown).unwrap();
    landed.recv_timeout(WAIT).ok();
    gate.send(()).ok();
    handle.join().unwrap().unwrap();
}
