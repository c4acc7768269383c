//! Integration tests against the real `store` binary over TCP: watches and writes
//! across links, a malformed frame dropping only its own link, `wrong_partition` for
//! partitions the store does not own, age-based log retention, and SIGKILL during a
//! synced write load on two links followed by a restart that must have every
//! acknowledged write, each write in flight at the kill entirely there or entirely
//! absent, and a gap-free log in the same epoch whose values are what reads return.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wire::link::{ChangeKind, Kind, LinkEncoder, LinkLimits, LinkMessage, Position, decode_frame};

struct Store {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Store {
    /// Start the real binary on an OS-chosen port (`127.0.0.1:0`, so parallel tests
    /// never race for a port) and read the address it bound from its log.
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Store::start`] with more flags.
    fn start_with(dir: &Path, flags: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .args(["--sync", "true"])
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut admin = None;
        let addr = loop {
            let line = lines
                .next()
                .expect("store exited before listening")
                .unwrap();
            let bound = || -> Option<SocketAddr> {
                line.split("listen=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            if line.contains("serving admin") {
                admin = bound();
            }
            if line.contains("serving edge links")
                && let Some(a) = bound()
            {
                break a;
            }
        };
        // Keep draining its log so that the store never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let admin = admin.expect("the admin listener is logged before the link listener");
        Self { child, addr, admin }
    }

    /// `GET path` on the admin port: (status line, body).
    fn admin_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// One sample of `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
    }

    /// Poll `/metrics` until `name` reads `want` (counters are updated as requests are
    /// handled, per-partition figures once a second); fail after 10 s.
    fn wait_metric(&self, name: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.metric(name);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {got}, still not {want} after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        // SIGKILL: no chance to flush anything.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; the process must exit by itself, successfully, within 10 s.
    fn sigterm_and_wait(&mut self, what: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "store exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "store did not stop on SIGTERM {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the tests look at in a frame, owned.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    HelloAck,
    WriteReply {
        seq: u64,
        epoch: u64,
        version: u64,
    },
    GetReply {
        found: bool,
        value: Vec<u8>,
        version: u64,
    },
    Error {
        code: String,
        map_version: u64,
    },
    Snapshot {
        keys: Vec<String>,
        more: bool,
    },
    Changes(Vec<Change>),
    Resumed,
    Reset {
        epoch: u64,
        reason: String,
    },
    Pong,
    Other(Kind),
}

/// One change of a `Changes` frame, owned.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    key: String,
    seq: u64,
    epoch: u64,
    kind: ChangeKind,
    value: Option<Vec<u8>>,
    version: u64,
}

struct Link {
    s: TcpStream,
    buf: Vec<u8>,
    enc: LinkEncoder,
    out: Vec<u8>,
}

impl Link {
    fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut l = Self {
            s,
            buf: Vec::new(),
            enc: LinkEncoder::new(&LinkLimits::default()),
            out: Vec::new(),
        };
        l.send(|e, o| e.hello(o, 1, "test-edge", 0, 1, None).unwrap());
        assert_eq!(l.recv(), (1, Got::HelloAck));
        l
    }

    fn send(&mut self, f: impl FnOnce(&mut LinkEncoder, &mut Vec<u8>)) {
        self.out.clear();
        f(&mut self.enc, &mut self.out);
        self.s.write_all(&self.out).unwrap();
    }

    fn recv(&mut self) -> (u64, Got) {
        loop {
            if let Some((f, used)) = decode_frame(&self.buf, &LinkLimits::default()).unwrap() {
                let got = match f.message {
                    LinkMessage::HelloAck(_) => Got::HelloAck,
                    LinkMessage::WriteReply(w) => {
                        let p = w.position().unwrap();
                        Got::WriteReply {
                            seq: p.seq(),
                            epoch: p.epoch(),
                            version: w.version(),
                        }
                    }
                    LinkMessage::GetReply(g) => Got::GetReply {
                        found: g.found(),
                        value: g.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                        version: g.version(),
                    },
                    LinkMessage::Error(e) => Got::Error {
                        code: format!("{:?}", e.code()),
                        map_version: e.map_version(),
                    },
                    LinkMessage::Snapshot(s) => Got::Snapshot {
                        keys: s
                            .entries()
                            .iter()
                            .flatten()
                            .map(|e| e.key().to_owned())
                            .collect(),
                        more: s.more(),
                    },
                    LinkMessage::Changes(c) => Got::Changes(
                        c.changes()
                            .iter()
                            .flatten()
                            .map(|c| {
                                let p = c.position().unwrap();
                                Change {
                                    key: c.key().to_owned(),
                                    seq: p.seq(),
                                    epoch: p.epoch(),
                                    kind: c.kind(),
                                    value: c.value().map(|v| v.bytes().to_vec()),
                                    version: c.version(),
                                }
                            })
                            .collect(),
                    ),
                    LinkMessage::Resumed(_) => Got::Resumed,
                    LinkMessage::Reset(r) => Got::Reset {
                        epoch: r.epoch(),
                        reason: r.reason().unwrap_or_default().to_owned(),
                    },
                    LinkMessage::Pong(_) => Got::Pong,
                    other => Got::Other(other.kind()),
                };
                let id = f.request_id;
                self.buf.drain(..used);
                return (id, got);
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "store closed the link");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn put(&mut self, id: u64, key: &str, value: &[u8]) -> Got {
        self.send(|e, o| e.put(o, id, key, value, None, None).unwrap());
        let (rid, got) = self.recv();
        assert_eq!(rid, id);
        got
    }

    /// Everything received up to the answer to a ping sent now: with nothing else in
    /// flight on the link, all the answers to what was sent before it.
    fn until_pong(&mut self, id: u64) -> Vec<(u64, Got)> {
        self.send(|e, o| e.ping(o, id, id).unwrap());
        let mut out = Vec::new();
        loop {
            match self.recv() {
                (rid, Got::Pong) if rid == id => return out,
                other => out.push(other),
            }
        }
    }

    /// Start watch `id` on `target` from `from` and return what it got at once (its
    /// start, and the changes a resume replays), then stop it.
    fn watch_once(
        &mut self,
        id: u64,
        target: &str,
        prefix: bool,
        from: Option<Position>,
    ) -> Vec<(u64, Got)> {
        self.send(|e, o| e.watch(o, id, id, target, prefix, from).unwrap());
        let got = self.until_pong(id + 1);
        self.send(|e, o| e.unwatch(o, id + 2, id).unwrap());
        got
    }

    /// Read `keys`, pipelined: per key, its value and version if found.
    fn get_many(&mut self, keys: &[String]) -> Vec<Option<(Vec<u8>, u64)>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            for (i, k) in chunk.iter().enumerate() {
                self.send(|e, o| e.get(o, i as u64 + 1, k).unwrap());
            }
            for (i, key) in chunk.iter().enumerate() {
                let (rid, got) = self.recv();
                assert_eq!(rid, i as u64 + 1, "get replies in order");
                let Got::GetReply {
                    found,
                    value,
                    version,
                } = got
                else {
                    panic!("expected a get reply for {key:?}, got {got:?}")
                };
                out.push(found.then_some((value, version)));
            }
        }
        out
    }
}

#[test]
fn watch_put_get_across_links_and_a_malformed_frame_drops_only_its_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(dir.path());
    let mut a = Link::connect(store.addr);
    let mut b = Link::connect(store.addr);

    a.send(|e, o| e.watch(o, 2, 77, "room/{1}/title", false, None).unwrap());
    assert_eq!(
        a.recv(),
        (
            2,
            Got::Snapshot {
                keys: vec![],
                more: false
            }
        )
    );

    let Got::WriteReply {
        seq,
        epoch,
        version,
    } = b.put(3, "room/{1}/title", b"\"hello\"")
    else {
        panic!()
    };
    assert_eq!(version, seq);
    assert_eq!(
        a.recv(),
        (
            0,
            Got::Changes(vec![Change {
                key: "room/{1}/title".into(),
                seq,
                epoch,
                kind: ChangeKind::Put,
                value: Some(b"\"hello\"".to_vec()),
                version,
            }])
        )
    );

    b.send(|e, o| e.get(o, 4, "room/{1}/title").unwrap());
    assert_eq!(
        b.recv(),
        (
            4,
            Got::GetReply {
                found: true,
                value: b"\"hello\"".to_vec(),
                version
            }
        )
    );

    // A conditional write with the wrong version is refused.
    b.send(|e, o| {
        e.put(o, 5, "room/{1}/title", b"1", Some(version + 100), None)
            .unwrap()
    });
    assert_eq!(
        b.recv(),
        (
            5,
            Got::Error {
                code: "Conflict".into(),
                map_version: 1,
            }
        )
    );

    // A third link sends garbage: it is dropped...
    let mut bad = TcpStream::connect(store.addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut sink = [0u8; 16];
    assert!(
        matches!(bad.read(&mut sink), Ok(0) | Err(_)),
        "the malformed link must be closed"
    );
    // ... and the good links keep working.
    let Got::WriteReply { seq: seq2, .. } = b.put(6, "room/{1}/title", b"2") else {
        panic!()
    };
    assert_eq!(seq2, seq + 1);
    assert!(matches!(a.recv(), (0, Got::Changes(c)) if c.len() == 1 && c[0].seq == seq2));

    // The admin port tells what happened. Each figure is polled: the dropped link's
    // close reaches the core after the test saw it, per-partition figures are
    // published once a second.
    store.wait_metric("ringline_store_writes_total", 2.0);
    store.wait_metric("ringline_store_write_errors_total", 1.0);
    assert!(
        store.metric("ringline_store_fsyncs_total") >= 2.0,
        "sync = true"
    );
    store.wait_metric("ringline_store_commit_writes_count", 2.0);
    store.wait_metric("ringline_store_links", 2.0);
    store.wait_metric("ringline_store_watches", 1.0);
    store.wait_metric("ringline_store_deliveries_total", 2.0);
    store.wait_metric(
        "ringline_store_links_dropped_total{reason=\"malformed\"}",
        1.0,
    );
    let p = store::partition::partition_of(b"room/{1}/title", 256);
    store.wait_metric(
        &format!("ringline_store_log_last_seq{{partition=\"{p}\"}}"),
        seq2 as f64,
    );
    store.wait_metric(
        &format!("ringline_store_log_entries{{partition=\"{p}\"}}"),
        2.0,
    );
    assert_eq!(store.admin_get("/health").0, "HTTP/1.1 200 OK");
    assert_eq!(store.admin_get("/nope").0, "HTTP/1.1 404 Not Found");
}

/// A link that writes puts of `{prefix}{n}` (value `v{n}`) back to back, pipelined,
/// with at most `window` unanswered, until the store goes away. It records what it
/// sent (before sending it) and every acknowledgement.
struct Pipelined {
    acked: Arc<AtomicUsize>,
    sender: std::thread::JoinHandle<Sent>,
    reader: std::thread::JoinHandle<Acks>,
}

/// What a [`Pipelined`] link sent, in order: (key, value); its n-th write has request id n.
type Sent = Vec<(String, Vec<u8>)>;
/// Its acknowledgements: request id → (seq, epoch, version).
type Acks = HashMap<u64, (u64, u64, u64)>;

impl Pipelined {
    fn start(addr: SocketAddr, prefix: &'static str, window: usize) -> Self {
        let link = Link::connect(addr);
        assert!(link.buf.is_empty());
        let mut reader = link.s.try_clone().unwrap();
        let mut writer = link.s;
        let (credit, credits) = std::sync::mpsc::channel::<()>();
        for _ in 0..window {
            credit.send(()).unwrap();
        }
        let acked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&acked);
        let reader = std::thread::spawn(move || {
            // request id (= index of the write) → (seq, epoch, version)
            let mut acks = HashMap::new();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 65536];
            loop {
                while let Some((f, used)) = decode_frame(&buf, &LinkLimits::default()).unwrap() {
                    let LinkMessage::WriteReply(r) = f.message else {
                        panic!("a write got {:?}", f.message.kind())
                    };
                    let p = r.position().unwrap();
                    assert!(
                        acks.insert(f.request_id, (p.seq(), p.epoch(), r.version()))
                            .is_none(),
                        "write {} answered twice",
                        f.request_id
                    );
                    count.fetch_add(1, Ordering::Release);
                    buf.drain(..used);
                    let _ = credit.send(());
                }
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return acks,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let sender = std::thread::spawn(move || {
            let mut enc = LinkEncoder::new(&LinkLimits::default());
            let mut out = Vec::new();
            let mut sent = Vec::new();
            // Each write waits for a credit; the reader gives one back per answer and
            // drops them all when the link ends.
            while credits.recv().is_ok() {
                let n = sent.len() as u64;
                let (key, value) = (format!("{prefix}{n}"), format!("v{n}").into_bytes());
                out.clear();
                enc.put(&mut out, n, &key, &value, None, None).unwrap();
                sent.push((key, value));
                if writer.write_all(&out).is_err() {
                    break;
                }
            }
            sent
        });
        Self {
            acked,
            sender,
            reader,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Acquire)
    }

    /// Once the link has ended: what was sent, in order, and the acknowledgements.
    fn join(self) -> (Sent, Acks) {
        let acks = self.reader.join().unwrap();
        (self.sender.join().unwrap(), acks)
    }
}

/// One write the SIGKILL test made: which link, its key and value, its
/// acknowledgement (seq) if it got one before the kill.
#[derive(Debug)]
struct Made {
    link: &'static str,
    key: String,
    value: Vec<u8>,
    acked: Option<u64>,
}

#[test]
fn sigkill_during_synced_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(dir.path());
    // Every key of both links shares one partition (hash tag), so its log is one
    // sequence holding both links' writes.
    let partition = store::partition::partition_of(b"{t}/", 256);
    // Link B writes pipelined, with up to 64 unanswered, until the store is killed.
    let b = Pipelined::start(store.addr, "{t}/b/", 64);
    // Link A writes one at a time.
    let mut a = Link::connect(store.addr);
    let mut made: Vec<Made> = Vec::new();
    let mut epoch = 0;
    for i in 0..200u64 {
        let (key, value) = (format!("{{t}}/a/{i}"), format!("a{i}").into_bytes());
        let Got::WriteReply {
            seq,
            epoch: e,
            version,
        } = a.put(i + 10, &key, &value)
        else {
            panic!("write {key} refused")
        };
        assert_eq!(version, seq);
        epoch = e;
        made.push(Made {
            link: "A",
            key,
            value,
            acked: Some(seq),
        });
    }
    // B must be writing too (it started first; this only waits on a slow start).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.acked() < 100 {
        assert!(Instant::now() < deadline, "link B is not being answered");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.kill();
    let (sent_b, acks_b) = b.join();
    let mut in_flight = 0;
    for (n, (key, value)) in sent_b.into_iter().enumerate() {
        let acked = acks_b.get(&(n as u64)).map(|&(seq, e, version)| {
            assert_eq!((e, version), (epoch, seq), "write {key}'s acknowledgement");
            seq
        });
        in_flight += usize::from(acked.is_none());
        made.push(Made {
            link: "B",
            key,
            value,
            acked,
        });
    }
    assert!(
        in_flight > 0,
        "no write of link B was in flight at the kill: nothing checked for them"
    );
    assert_eq!(
        acks_b.len() + in_flight,
        made.len() - 200,
        "B answers only what it sent"
    );

    let store = Store::start(dir.path());
    let mut r = Link::connect(store.addr);
    // Everything readable now, for every write ever sent.
    let keys: Vec<String> = made.iter().map(|m| m.key.clone()).collect();
    let read = r.get_many(&keys);
    // The whole log of the partition: resumed from its very start, in the same epoch.
    let got = r.watch_once(2, "{t}/", true, Some(Position::new(partition, epoch, 0)));
    let Some(((2, Got::Resumed), pages)) = got.split_first().map(|(f, rest)| (f.clone(), rest))
    else {
        panic!(
            "resuming from the start of the log in epoch {epoch}: {:?} (and {} more frames)",
            got.first(),
            got.len().saturating_sub(1)
        )
    };
    let log: Vec<Change> = pages
        .iter()
        .flat_map(|(id, g)| match g {
            Got::Changes(c) if *id == 2 => c.clone(),
            other => panic!("expected only the resumed changes, got {other:?}"),
        })
        .collect();
    // Gap-free from 1, no duplicates, same epoch, only puts, versions equal to seqs.
    let seqs: Vec<u64> = log.iter().map(|c| c.seq).collect();
    let want: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(seqs, want, "the log after the restart is not 1..=n");
    assert!(
        log.iter()
            .all(|c| c.epoch == epoch && c.kind == ChangeKind::Put && c.version == c.seq),
        "the log changed epoch or kind across the crash: {log:?}"
    );
    let mut logged: HashMap<&str, &Change> = HashMap::new();
    for c in &log {
        assert!(
            logged.insert(c.key.as_str(), c).is_none(),
            "{} is in the log twice",
            c.key
        );
    }
    let index: HashMap<&str, &Made> = made.iter().map(|m| (m.key.as_str(), m)).collect();
    for c in &log {
        let m = index
            .get(c.key.as_str())
            .unwrap_or_else(|| panic!("the log holds {:?}, which nobody wrote", c.key));
        assert_eq!(
            c.value.as_deref(),
            Some(&m.value[..]),
            "{}'s logged value",
            c.key
        );
    }
    // Each write: acknowledged ones are there at their seq; the others entirely there
    // (value readable at the version its log entry says) or entirely absent.
    let mut present_b: Vec<Option<u64>> = Vec::new();
    for (m, read) in made.iter().zip(&read) {
        let in_log = logged.get(m.key.as_str()).map(|c| c.seq);
        let there = match (m.acked, in_log, read) {
            (Some(seq), Some(at), Some((value, version)))
                if at == seq && *version == seq && *value == m.value =>
            {
                Some(seq)
            }
            (Some(seq), ..) => panic!(
                "link {}'s acknowledged write {} (seq {seq}) lost: in the log at {in_log:?}, read back {read:?}",
                m.link, m.key
            ),
            (None, Some(at), Some((value, version))) if *version == at && *value == m.value => {
                Some(at)
            }
            (None, None, None) => None,
            (None, ..) => panic!(
                "link {}'s write {} in flight at the kill is only partly there: in the log at {in_log:?}, read back {read:?}",
                m.link, m.key
            ),
        };
        if m.link == "B" {
            present_b.push(there);
        }
    }
    // B's writes took effect in the order it sent them: the ones there form a prefix
    // of what it sent, at rising seqs.
    let there = present_b.iter().take_while(|s| s.is_some()).count();
    assert!(
        present_b[there..].iter().all(Option::is_none),
        "link B's surviving writes are not a prefix of what it sent: {present_b:?}"
    );
    assert!(
        present_b[..there].windows(2).all(|w| w[0] < w[1]),
        "link B's writes are not in the log in the order sent: {present_b:?}"
    );
    // And the log goes on from where it stopped: no seq is reused or skipped.
    let Got::WriteReply { seq, epoch: e, .. } = r.put(3, "{t}/after", b"x") else {
        panic!("write after the restart refused")
    };
    assert_eq!(
        (seq, e),
        (log.len() as u64 + 1, epoch),
        "the first write after the restart"
    );
    eprintln!(
        "{} writes were acknowledged on link B and {in_flight} in flight when the store was killed, {} of those landed",
        acks_b.len(),
        there - acks_b.len()
    );
}

#[test]
fn big_prefix_snapshots_are_paged_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::start(dir.path());
    let mut w = Link::connect(store.addr);
    let n = store::core::PAGE_ENTRIES * 2 + 7;
    for i in 0..n {
        assert!(matches!(
            w.put(i as u64 + 1, &format!("{{big}}/{i:05}"), b"1"),
            Got::WriteReply { .. }
        ));
    }
    w.send(|e, o| e.watch(o, 9, 1, "{big}/", true, None).unwrap());
    let mut keys = Vec::new();
    loop {
        let (id, Got::Snapshot { keys: page, more }) = w.recv() else {
            panic!("expected a snapshot page")
        };
        assert_eq!(id, 9);
        assert!(page.len() <= store::core::PAGE_ENTRIES);
        keys.extend(page);
        if !more {
            break;
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{{big}}/{i:05}")).collect();
    assert_eq!(keys, want, "every key once, in order");

    // SIGTERM: the process exits by itself, successfully.
    store.sigterm_and_wait("when idle");
    // And it reopens with everything in place.
    drop(store);
    let store = Store::start(dir.path());
    let mut r = Link::connect(store.addr);
    r.send(|e, o| e.get(o, 1, "{big}/00000").unwrap());
    assert!(matches!(r.recv().1, Got::GetReply { found: true, .. }));
}

#[test]
fn a_link_that_stops_reading_is_dropped_with_bounded_memory_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(dir.path());
    let mut slow = Link::connect(store.addr);
    slow.send(|e, o| e.watch(o, 2, 1, "{bp}/", true, None).unwrap());
    assert!(matches!(slow.recv(), (2, Got::Snapshot { .. })));
    // From here on `slow` reads nothing. A writer sends 96 MiB of changes it watches.
    let mut w = Link::connect(store.addr);
    let value = vec![b'x'; 64 * 1024];
    for i in 0..1536u64 {
        let got = w.put(i + 10, &format!("{{bp}}/{}", i % 16), &value);
        assert!(
            matches!(got, Got::WriteReply { .. }),
            "the writer's link must keep working: {got:?}"
        );
    }
    // Drain `slow`: what was queued for it arrives, then the store has closed it.
    slow.s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut total = slow.buf.len();
    let mut chunk = vec![0u8; 1 << 16];
    let closed = loop {
        match slow.s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the stuck link should have been dropped");
    let limit = store::core::DEFAULT_LINK_QUEUE_BYTES;
    assert!(
        total < 3 * limit,
        "{total} bytes were queued for a link that stopped reading (limit {limit})"
    );
    eprintln!(
        "stuck link received {total} bytes before being dropped (96 MiB were sent to its watch)"
    );
}

#[test]
fn sigterm_under_a_nonstop_write_stream_answers_what_it_took_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::start(dir.path());
    // Two links that never pause: one thread writes puts back to back, another reads
    // the replies, so the store always has writes queued.
    let links: Vec<_> = (0..2u64)
        .map(|w| {
            let l = Link::connect(store.addr);
            let mut reader = l.s.try_clone().unwrap();
            let mut writer = l.s.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let mut enc = LinkEncoder::new(&LinkLimits::default());
                let mut out = Vec::new();
                for id in 1.. {
                    out.clear();
                    enc.put(&mut out, id, &format!("s/{w}/{id}"), b"v", None, None)
                        .unwrap();
                    if writer.write_all(&out).is_err() {
                        break;
                    }
                }
            });
            let count = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&count);
            let acks = std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                loop {
                    while let Ok(Some((f, used))) = decode_frame(&buf, &LinkLimits::default()) {
                        if matches!(f.message, LinkMessage::WriteReply(_)) {
                            acked.push(f.request_id);
                            counted.fetch_add(1, Ordering::Release);
                        }
                        buf.drain(..used);
                    }
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                acked
            });
            (w, sender, acks, count)
        })
        .collect();
    // Both links are flowing (each has had 100 writes answered) before the SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(10);
    while links
        .iter()
        .any(|(.., count)| count.load(Ordering::Acquire) < 100)
    {
        assert!(
            Instant::now() < deadline,
            "the write streams are not being answered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The store holds at most its intake of each link's requests unanswered (8,192
    // by default); the rest waits in TCP, so its queue stays bounded (without the
    // bound it passed 200,000 writes here within a second) and so does what a stop
    // has left to commit.
    let mut most = 0.0f64;
    let sampled = Instant::now() + Duration::from_secs(1);
    while Instant::now() < sampled {
        most = most.max(store.metric("ringline_store_queued_writes"));
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("at most {most} writes queued");
    assert!(
        most <= 2.0 * store::core::intake::DEFAULT_MAX_REQUESTS as f64,
        "{most} writes queued from two links"
    );
    assert!(
        store.metric("ringline_store_link_reads_paused_total") > 0.0,
        "the write streams never filled a link's intake"
    );
    // It stops taking requests, answers what it took, and exits by itself.
    store.sigterm_and_wait("under load");
    let acked: Vec<(u64, Vec<u64>)> = links
        .into_iter()
        .map(|(w, sender, acks, _)| {
            sender.join().unwrap();
            (w, acks.join().unwrap())
        })
        .collect();
    // Every acknowledged write (all of them) is there after a restart.
    drop(store);
    let store = Store::start(dir.path());
    let mut r = Link::connect(store.addr);
    // Tens of thousands of them: one snapshot of every partition reads them all at
    // once (a get each took seconds).
    let mut stored = std::collections::HashSet::new();
    for (id, got) in r.watch_once(1, "s/", true, None) {
        let (1, Got::Snapshot { keys, .. }) = (id, got) else {
            panic!("expected snapshot pages")
        };
        stored.extend(keys);
    }
    for (w, ids) in acked {
        assert!(
            ids.len() > 10,
            "link {w} had only {} writes answered",
            ids.len()
        );
        eprintln!("link {w}: {} writes acknowledged", ids.len());
        for id in ids {
            let key = format!("s/{w}/{id}");
            assert!(stored.contains(&key), "acknowledged write {key} is missing");
        }
    }
}

#[test]
fn a_store_answers_wrong_partition_for_partitions_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    // A map of version 7 splitting the 256 partitions over two stores; this one is s1
    // and owns 0-127.
    let map = dir.path().join("cluster.toml");
    let text =
        wire::cluster::even_split_toml(7, 256, &[("s1", "127.0.0.1:1"), ("s2", "127.0.0.1:2")]);
    std::fs::write(&map, &text).unwrap();
    let owned = wire::cluster::ClusterMap::from_toml(&text)
        .unwrap()
        .store("s1")
        .unwrap()
        .partitions
        .clone();
    assert_eq!(owned, (0..128).collect::<Vec<u32>>());
    let store = Store::start_with(
        &dir.path().join("data"),
        &[
            "--cluster".as_ref(),
            map.as_os_str(),
            "--store-id".as_ref(),
            "s1".as_ref(),
        ],
    );
    let key_in = |mine: bool| {
        (0..)
            .map(|i| format!("k/{i}"))
            .find(|k| owned.contains(&store::partition::partition_of(k.as_bytes(), 256)) == mine)
            .unwrap()
    };
    let (mine, theirs) = (key_in(true), key_in(false));
    let p_theirs = store::partition::partition_of(theirs.as_bytes(), 256);
    let tag_theirs = (0..)
        .map(|i| format!("{{{i}}}/"))
        .find(|k| !owned.contains(&store::partition::partition_of(k.as_bytes(), 256)))
        .unwrap();
    let wrong = Got::Error {
        code: "WrongPartition".into(),
        map_version: 7,
    };
    let mut l = Link::connect(store.addr);
    // Every kind of request on a partition owned elsewhere is refused as such.
    assert_eq!(
        l.put(1, &theirs, b"1"),
        wrong,
        "put {theirs:?} (partition {p_theirs})"
    );
    l.send(|e, o| e.delete(o, 2, &theirs, None, None).unwrap());
    assert_eq!(l.recv(), (2, wrong.clone()), "delete");
    l.send(|e, o| e.publish(o, 3, &theirs, b"1", None).unwrap());
    assert_eq!(l.recv(), (3, wrong.clone()), "publish");
    l.send(|e, o| e.get(o, 4, &theirs).unwrap());
    assert_eq!(l.recv(), (4, wrong.clone()), "get");
    assert_eq!(
        l.watch_once(10, &theirs, false, None),
        [(10, wrong.clone())],
        "watch a key"
    );
    assert_eq!(
        l.watch_once(20, &tag_theirs, true, None),
        [(20, wrong.clone())],
        "watch a hash-tagged prefix"
    );
    // The edge's per-partition watch of a plain prefix, resumed in a partition owned
    // elsewhere.
    assert_eq!(
        l.watch_once(30, "k/", true, Some(Position::new(p_theirs, 1, 0))),
        [(30, wrong.clone())],
        "resume a prefix watch"
    );
    // The same link is served for a partition this store owns.
    assert!(
        matches!(l.put(5, &mine, b"1"), Got::WriteReply { .. }),
        "put {mine:?}"
    );
    l.send(|e, o| e.get(o, 6, &mine).unwrap());
    assert!(matches!(l.recv(), (6, Got::GetReply { found: true, .. })));
    store.wait_metric("ringline_store_writes_total", 1.0);
}

#[test]
fn a_failed_read_is_answered_as_a_read_error_and_never_counted_as_a_write_error() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores of version 3; this one is s1 and owns partitions 0-127.
    let map = dir.path().join("cluster.toml");
    let text =
        wire::cluster::even_split_toml(3, 256, &[("s1", "127.0.0.1:1"), ("s2", "127.0.0.1:2")]);
    std::fs::write(&map, &text).unwrap();
    let owned = wire::cluster::ClusterMap::from_toml(&text)
        .unwrap()
        .store("s1")
        .unwrap()
        .partitions
        .clone();
    let key_in = |mine: bool| {
        (0..)
            .map(|i| format!("k/{i}"))
            .find(|k| owned.contains(&store::partition::partition_of(k.as_bytes(), 256)) == mine)
            .unwrap()
    };
    let (mine, theirs) = (key_in(true), key_in(false));
    let data = dir.path().join("data");
    let flags: [&std::ffi::OsStr; 4] = [
        "--cluster".as_ref(),
        map.as_os_str(),
        "--store-id".as_ref(),
        "s1".as_ref(),
    ];
    let mut store = Store::start_with(&data, &flags);
    let mut l = Link::connect(store.addr);
    assert!(matches!(l.put(1, &mine, b"1"), Got::WriteReply { .. }));
    drop(l);
    store.sigterm_and_wait("after one write");
    drop(store);
    // The stored value of `mine` is damaged while the store is down.
    {
        use store::engine::Engine as _;
        let engine = store::engine::rocks::RocksEngine::open(&data).unwrap();
        let p = store::partition::partition_of(mine.as_bytes(), 256);
        let mut batch = store::engine::WriteBatch::default();
        batch.put(
            store::keys::value(p, mine.as_bytes()),
            b"not a record".to_vec(),
        );
        engine.write(batch, true).unwrap();
    }
    let store = Store::start_with(&data, &flags);
    let mut l = Link::connect(store.addr);
    let error = |code: &str| Got::Error {
        code: code.into(),
        map_version: 3,
    };
    // A read on a partition owned elsewhere is the edge's mistake; a read of a damaged
    // record is the store's failure. Neither is a write error.
    l.send(|e, o| e.get(o, 2, &theirs).unwrap());
    assert_eq!(l.recv(), (2, error("WrongPartition")), "get {theirs:?}");
    l.send(|e, o| e.get(o, 3, &mine).unwrap());
    assert_eq!(l.recv(), (3, error("Internal")), "get the damaged {mine:?}");
    // One refused write, for comparison.
    assert_eq!(l.put(4, &theirs, b"1"), error("WrongPartition"));
    // Every reply is in, so every figure is final.
    assert_eq!(
        store.metric("ringline_store_write_errors_total"),
        1.0,
        "only the refused put is a write error"
    );
    assert_eq!(store.metric("ringline_store_read_errors_total"), 2.0);
    assert_eq!(store.metric("ringline_store_gets_total"), 0.0);
}

#[test]
fn log_entries_older_than_the_retention_age_are_trimmed_and_newer_ones_kept() {
    // Retention: at least 2 entries and 4 s per partition. Five old writes, then five
    // young ones 2.5 s later: once the old ones are past 4 s (trimmed by the next
    // once-a-second pass), the young ones are 1.5-2.5 s old and must all stay, though
    // the entry count alone would trim all but two of them.
    const AGE: Duration = Duration::from_secs(4);
    const GAP: Duration = Duration::from_millis(2500);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start_with(
        dir.path(),
        &[
            "--retention-secs".as_ref(),
            AGE.as_secs().to_string().as_ref(),
            "--retention-entries".as_ref(),
            "2".as_ref(),
        ],
    );
    let p = store::partition::partition_of(b"{r}/", 256);
    let mut l = Link::connect(store.addr);
    let write = |l: &mut Link, name: &str| {
        let mut seqs = Vec::new();
        let mut epoch = 0;
        for i in 0..5 {
            let Got::WriteReply { seq, epoch: e, .. } =
                l.put(100 + i, &format!("{{r}}/{name}/{i}"), b"v")
            else {
                panic!("write refused")
            };
            seqs.push(seq);
            epoch = e;
        }
        (seqs, epoch)
    };
    let old_at = Instant::now();
    let (old, epoch) = write(&mut l, "old");
    assert_eq!(old, [1, 2, 3, 4, 5]);
    // The two generations must differ in age: wait out the gap (no assertion follows
    // this wait; the trimming below is polled for).
    std::thread::sleep(GAP.saturating_sub(old_at.elapsed()));
    let young_at = Instant::now();
    let (young, _) = write(&mut l, "young");
    assert_eq!(young, [6, 7, 8, 9, 10]);

    // Poll: resuming from just before the last old write works until it is trimmed
    // (with all before it), then gets a reset and a fresh snapshot. (A pass may trim
    // only the first few old writes: they are a few ms apart.)
    let before_last_old = Some(Position::new(p, epoch, 4));
    let deadline = old_at + AGE + Duration::from_secs(10);
    let mut id = 1000;
    loop {
        id += 10;
        let got = l.watch_once(id, "{r}/", true, before_last_old);
        match got.first() {
            Some((_, Got::Reset { epoch: e, reason })) => {
                assert_eq!(*e, epoch);
                assert!(
                    reason.contains("older than the retained log"),
                    "reset for another reason: {reason}"
                );
                assert!(
                    matches!(&got[1..], [(_, Got::Snapshot { more: false, .. })]),
                    "a reset is followed by one snapshot: {got:?}"
                );
                break;
            }
            Some((_, Got::Resumed)) => {}
            _ => panic!("resuming from just before the last old write: {got:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "entries older than {AGE:?} were still in the log after {:?}",
            old_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let trimmed_after = old_at.elapsed();
    assert!(
        trimmed_after >= AGE,
        "entries trimmed after {trimmed_after:?}, younger than the {AGE:?} kept"
    );
    // Every old entry is gone, every young one kept: resuming from the last old write
    // replays exactly the young ones.
    let got = l.watch_once(id + 10, "{r}/", true, Some(Position::new(p, epoch, 5)));
    let seen = young_at.elapsed();
    assert!(
        seen < AGE,
        "the host stalled: the young entries were {seen:?} old when checked, past the {AGE:?} kept"
    );
    let replayed: Vec<u64> = match &got[..] {
        [(_, Got::Resumed), (_, Got::Changes(c))] => c.iter().map(|c| c.seq).collect(),
        other => panic!("resuming after the old writes {trimmed_after:?} after them: {other:?}"),
    };
    assert_eq!(replayed, young, "the young entries, all kept");
}
