//! The store's write path (conditional check → value + log + index records → one
//! batch) and resume path, on RocksDB.
//!
//! Resume cost must follow what it returns, not the log's length: `resume/one_key`
//! resumes a key that changed once, in a partition whose log also holds 0 or 1,000,000
//! unrelated entries. Both run in one process, so their ratio is the figure to read;
//! `one_key_by_scanning_the_log` is the same resume without the per-key index.

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
        // What resuming would cost without the per-key index: read the partition's log
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

criterion_group!(benches, write_path, resume_path);
criterion_main!(benches);
