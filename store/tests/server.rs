//! Integration tests against the real `store` binary over TCP: watches and writes
//! across links, a malformed frame dropping only its own link, and SIGKILL during a
//! synced write load followed by a restart that must have every acknowledged write,
//! a gap-free log in the same epoch, and a resume that replays exactly what was missed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
    },
    Snapshot {
        keys: Vec<String>,
        more: bool,
    },
    Changes(Vec<(String, u64, u64, ChangeKind)>), // (key, seq, epoch, kind)
    Resumed,
    Reset,
    Other(Kind),
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
        l.send(|e, o| e.hello(o, 1, "test-edge", 0, 1).unwrap());
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
                                (c.key().to_owned(), p.seq(), p.epoch(), c.kind())
                            })
                            .collect(),
                    ),
                    LinkMessage::Resumed(_) => Got::Resumed,
                    LinkMessage::Reset(_) => Got::Reset,
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
        self.send(|e, o| e.put(o, id, key, value, None).unwrap());
        let (rid, got) = self.recv();
        assert_eq!(rid, id);
        got
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
            Got::Changes(vec![("room/{1}/title".into(), seq, epoch, ChangeKind::Put)])
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
        e.put(o, 5, "room/{1}/title", b"1", Some(version + 100))
            .unwrap()
    });
    assert_eq!(
        b.recv(),
        (
            5,
            Got::Error {
                code: "Conflict".into()
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
    assert!(matches!(a.recv(), (0, Got::Changes(c)) if c[0].1 == seq2));

    // The admin port tells what happened.
    assert_eq!(store.metric("ringline_store_writes_total"), 2.0);
    assert_eq!(store.metric("ringline_store_write_errors_total"), 1.0);
    assert!(
        store.metric("ringline_store_fsyncs_total") >= 2.0,
        "sync = true"
    );
    assert_eq!(store.metric("ringline_store_commit_writes_count"), 2.0);
    assert_eq!(store.metric("ringline_store_links"), 2.0);
    assert_eq!(store.metric("ringline_store_watches"), 1.0);
    assert_eq!(store.metric("ringline_store_deliveries_total"), 2.0);
    assert_eq!(
        store.metric("ringline_store_links_dropped_total{reason=\"malformed\"}"),
        1.0
    );
    let p = store::partition::partition_of(b"room/{1}/title", 256);
    // Per-partition figures are published once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.metric(&format!("ringline_store_log_last_seq{{partition=\"{p}\"}}")) != seq2 as f64
    {
        assert!(
            Instant::now() < deadline,
            "partition {p}'s log position never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        store.metric(&format!("ringline_store_log_entries{{partition=\"{p}\"}}")),
        2.0
    );
    assert_eq!(store.admin_get("/health").0, "HTTP/1.1 200 OK");
    assert_eq!(store.admin_get("/nope").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn sigkill_during_synced_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(dir.path());
    let addr = store.addr;
    let mut w = Link::connect(addr);
    // Every key shares one partition (hash tag), so its log is one sequence.
    let mut acked = Vec::new();
    let writer = {
        let addr = store.addr;
        std::thread::spawn(move || {
            // A second link keeps writing while the store is killed.
            let mut l = Link::connect(addr);
            let mut n = 0u64;
            loop {
                l.send(|e, o| {
                    e.put(o, 1_000_000 + n, &format!("{{load}}/{n}"), b"x", None)
                        .unwrap()
                });
                let mut chunk = [0u8; 4096];
                match l.s.read(&mut chunk) {
                    Ok(0) | Err(_) => return n,
                    Ok(_) => n += 1,
                }
            }
        })
    };
    let mut epoch = 0;
    for i in 0..200u64 {
        let Got::WriteReply { seq, epoch: e, .. } =
            w.put(i + 10, &format!("{{t}}/{i}"), &i.to_be_bytes())
        else {
            panic!()
        };
        epoch = e;
        acked.push((i, seq));
    }
    store.kill();
    let during = writer.join().unwrap();

    let store = Store::start(dir.path());
    let mut r = Link::connect(store.addr);
    for &(i, seq) in &acked {
        r.send(|e, o| e.get(o, 1, &format!("{{t}}/{i}")).unwrap());
        assert_eq!(
            r.recv().1,
            Got::GetReply {
                found: true,
                value: i.to_be_bytes().to_vec(),
                version: seq
            },
            "write {i} lost"
        );
    }
    // Resume from before the first write: exactly the 200 acknowledged changes, in
    // order, gap-free, same epoch.
    let p = acked[0].1 - 1;
    let partition = store::partition::partition_of(b"{t}/0", 256);
    r.send(|e, o| {
        e.watch(
            o,
            2,
            9,
            "{t}/",
            true,
            Some(Position::new(partition, epoch, p)),
        )
        .unwrap()
    });
    assert_eq!(r.recv(), (2, Got::Resumed));
    let (_, Got::Changes(changes)) = r.recv() else {
        panic!("expected the missed changes")
    };
    let seqs: Vec<u64> = changes.iter().map(|c| c.1).collect();
    let want: Vec<u64> = acked.iter().map(|a| a.1).collect();
    assert_eq!(seqs, want);
    assert!(
        changes.iter().all(|c| c.2 == epoch),
        "epoch changed across a crash"
    );
    eprintln!("{during} writes were in flight on a second link when the store was killed");
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
                    enc.put(&mut out, id, &format!("s/{w}/{id}"), b"v", None)
                        .unwrap();
                    if writer.write_all(&out).is_err() {
                        break;
                    }
                }
            });
            let acks = std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                loop {
                    while let Ok(Some((f, used))) = decode_frame(&buf, &LinkLimits::default()) {
                        if matches!(f.message, LinkMessage::WriteReply(_)) {
                            acked.push(f.request_id);
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
            (w, sender, acks)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    // It stops taking requests, answers what it took, and exits by itself.
    store.sigterm_and_wait("under load");
    let acked: Vec<(u64, Vec<u64>)> = links
        .into_iter()
        .map(|(w, sender, acks)| {
            sender.join().unwrap();
            (w, acks.join().unwrap())
        })
        .collect();
    // Every acknowledged write is there after a restart.
    drop(store);
    let store = Store::start(dir.path());
    let mut r = Link::connect(store.addr);
    for (w, ids) in acked {
        assert!(
            ids.len() > 10,
            "link {w} had only {} writes answered",
            ids.len()
        );
        for &id in ids.iter().rev().take(20).chain(ids.first()) {
            r.send(|e, o| e.get(o, id, &format!("s/{w}/{id}")).unwrap());
            assert!(
                matches!(r.recv().1, Got::GetReply { found: true, .. }),
                "acknowledged write s/{w}/{id} is missing"
            );
        }
    }
}
