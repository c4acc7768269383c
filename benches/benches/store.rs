//! The store's write path (conditional check → value + log + index records → one
//! batch) and resume path, on RocksDB.
//!
//! Resume cost must follow what it returns, not the log's length: `resume/one_key`
//! resumes a key that changed once, in a partition whose log also holds 0 or 1,000,000
//! unrelated entries. Both run in one process, so their ratio is the figure to read;
//! `one_key_by_scanning_the_log` is the same resume without the key chains.

#![allow(clippy::panic)] // setup failures in a benchmark should stop it loudly

use std::sync::Arc;
use std::time::Instant;

use benches as _;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use store::changelog::{ChangeLog, Position, Resume, Target, Write};
use store::engine::rocks::RocksEngine;

fn open(dir: &tempfile::TempDir) -> ChangeLog<RocksEngine> {
    let engine = Arc::new(RocksEngine::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    ChangeLog::open(engine, 1, &[0], || 42).unwrap_or_else(|e| panic!("{e}"))
}

fn put(key: Vec<u8>, value: &[u8]) -> Write {
    Write::Put {
        key,
        value: value.to_vec(),
        if_version: None,
        msg_id: None,
    }
}

fn write_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_write");
    for batch in [1usize, 64] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut log = open(&dir);
        let mut i = 0u64;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(
            BenchmarkId::new("put_nosync_batch", batch),
            &batch,
            |b, &n| {
                b.iter(|| {
                    let writes: Vec<Write> = (0..n)
                        .map(|_| {
                            i += 1;
                            put(
                                format!("room/{}/title", i % 10_000).into_bytes(),
                                b"{\"t\":\"hello\"}",
                            )
                        })
                        .collect();
                    black_box(log.apply(&writes, i, false))
                })
            },
        );
    }
    g.finish();
}

fn resume_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("resume");
    // `cargo test --all-targets` runs each benchmark once as a smoke test (no
    // `--bench` flag): a small log keeps that quick; `cargo bench` uses the full million.
    let big = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    for unrelated in [0u64, big] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut log = open(&dir);
        let start: Position = log.position(0).unwrap_or_else(|| unreachable!());
        log.apply(&[put(b"watched".to_vec(), b"1")], 1, false);
        let t = Instant::now();
        let mut written = 0u64;
        while written < unrelated {
            let writes: Vec<Write> = (0..1000)
                .map(|j| {
                    put(
                        format!("other/{}", (written + j) % 50_000).into_bytes(),
                        b"x",
                    )
                })
                .collect();
            log.apply(&writes, 1, false);
            written += 1000;
            if written.is_multiple_of(200_000) {
                eprintln!(
                    "  resume setup: {written} unrelated writes ({:.1}s)",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(
            BenchmarkId::new("one_key_after_unrelated_writes", unrelated),
            &unrelated,
            |b, _| {
                b.iter(
                    || match log.resume(black_box(start), Target::Key(b"watched")) {
                        Ok(Resume::Changes { changes, .. }) => {
                            assert_eq!(changes.len(), 1);
                            black_box(changes)
                        }
                        other => panic!("unexpected {other:?}"),
                    },
                )
            },
        );
        // What resuming would cost without the key chains: read the partition's log
        // after the position and keep the key's entries.
        g.sample_size(10);
        g.bench_with_input(
            BenchmarkId::new("one_key_by_scanning_the_log", unrelated),
            &unrelated,
            |b, _| {
                b.iter(|| {
                    let mut found = 0;
                    let mut after = start.seq;
                    loop {
                        let page = log
                            .log_after(0, after, 4096)
                            .unwrap_or_else(|e| panic!("{e}"));
                        let Some(last) = page.last() else { break };
                        after = last.position.seq;
                        found += page.iter().filter(|c| c.key == b"watched").count();
                    }
                    assert_eq!(found, 1);
                    black_box(found)
                })
            },
        );
        g.sample_size(100);
    }
    g.finish();
}

/// The whole write path through the core (on a thread of its own here): 64 writes
/// committed as one batch, a reply each, and one `Changes` frame to each of two links
/// watching every key (measured until a ping queued after them is answered).
fn write_path_with_dispatch(c: &mut Criterion) {
    use std::sync::atomic::AtomicUsize;
    use store::core::{CoreConfig, CoreMsg, Outbox, Req, Taken, spawn};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let engine = Arc::new(RocksEngine::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    let owned: Vec<u32> = (0..256).collect();
    let log = ChangeLog::open(engine, 256, &owned, || 7).unwrap_or_else(|e| panic!("{e}"));
    let cfg = CoreConfig {
        store_id: "bench".into(),
        map_version: 1,
        sync: false,
        retention: store::changelog::Retention::default(),
        max_link_queue_bytes: 1 << 30,
        ..CoreConfig::default()
    };
    let (core, _handle) = spawn(log, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut rxs = Vec::new();
    for link in 0..3u64 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let close = Arc::new(tokio::sync::Notify::new());
        let outbox = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            close,
            intake: Arc::default(),
        };
        core.send(CoreMsg::Open { link, outbox })
            .unwrap_or_else(|e| panic!("{e}"));
        rxs.push(rx);
    }
    for link in [1u64, 2] {
        let req = Req::Watch {
            watch_id: wire::link::WatchId::from_raw(1),
            target: "room/".into(),
            prefix: true,
            from: None,
        };
        core.send(CoreMsg::Request {
            taken: Taken::NONE,
            link,
            request_id: 1,
            req,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut g = c.benchmark_group("store_core");
    g.throughput(Throughput::Elements(64));
    let mut n = 0u64;
    g.bench_function(
        "64_writes_committed_replied_and_dispatched_to_2_watchers",
        |b| {
            b.iter(|| {
                for _ in 0..64 {
                    n += 1;
                    let w = put(
                        format!("room/{}", n % 10_000).into_bytes(),
                        b"{\"t\":\"hello\"}",
                    );
                    core.send(CoreMsg::Request {
                        taken: Taken::NONE,
                        link: 0,
                        request_id: n,
                        req: Req::Write(w),
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                }
                core.send(CoreMsg::Request {
                    taken: Taken::NONE,
                    link: 0,
                    request_id: 0,
                    req: Req::Ping(n),
                })
                .unwrap_or_else(|e| panic!("{e}"));
                // The ping is answered after the batch before it was committed and dispatched.
                let mut bytes = 0;
                loop {
                    let frame = rxs[0]
                        .blocking_recv()
                        .unwrap_or_else(|| panic!("core stopped"));
                    bytes += frame.len();
                    if is_pong(&frame) {
                        break;
                    }
                }
                for rx in &mut rxs[1..] {
                    while let Ok(f) = rx.try_recv() {
                        bytes += f.len();
                    }
                }
                black_box(bytes)
            })
        },
    );
    g.finish();
}

/// Whether the last frame in `bytes` is a pong.
fn is_pong(bytes: &[u8]) -> bool {
    let limits = wire::link::LinkLimits::default();
    let mut at = 0;
    let mut last = None;
    while let Ok(Some((f, used))) = wire::link::decode_frame(&bytes[at..], &limits) {
        last = Some(f.message.kind());
        at += used;
    }
    last == Some(wire::link::Kind::Pong)
}

criterion_group!(benches, write_path, write_path_with_dispatch, resume_path);
criterion_main!(benches);
