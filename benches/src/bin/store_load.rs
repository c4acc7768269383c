//! End-to-end store load: `links` TCP links pipelining puts into a real store (the
//! same core and link server as the `store` binary, on RocksDB), then raw RocksDB
//! writes (one put per WriteBatch, same sync option, as many threads as links) on a
//! fresh database, each for the same time, in one run. Prints a table with the ratio.
//!
//! `cargo run --release -p benches --bin store_load -- --seconds 5 --links 4`
#![allow(clippy::panic)] // a load tool should stop loudly on any failure

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches as _;
use clap::Parser;
use store::changelog::{ChangeLog, Retention};
use store::core::{CoreConfig, spawn};
use store::engine::rocks::RocksEngine;
use wire::link::{LinkEncoder, LinkLimits, LinkMessage, decode_frame};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent links (and raw writer threads).
    #[arg(long, default_value_t = 4)]
    links: usize,
    /// Puts in flight per link.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value: usize,
    /// Only measure one side (for profiling): `store` or `raw`.
    #[arg(long)]
    only: Option<String>,
}

fn start_store(sync: bool) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let engine = Arc::new(RocksEngine::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    let owned: Vec<u32> = (0..256).collect();
    let log = ChangeLog::open(engine, 256, &owned, || 1).unwrap_or_else(|e| panic!("{e}"));
    let cfg = CoreConfig {
        store_id: "load".into(),
        map_version: 1,
        sync,
        retention: Retention::default(),
        max_drain: 4096,
        max_link_queue_bytes: store::core::DEFAULT_LINK_QUEUE_BYTES,
    };
    let (core, _) = spawn(log, cfg).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio_uring::start(async move {
            let listener = tokio_uring::net::TcpListener::bind(
                "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
            store::server::serve(listener, core).await;
        })
    });
    (rx.recv().unwrap_or_else(|e| panic!("{e}")), dir)
}

fn link_load(addr: SocketAddr, id: usize, args: &Args, stop: &AtomicBool, done: &AtomicU64) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    s.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    let mut enc = LinkEncoder::new(&LinkLimits::default());
    let value = vec![b'v'; args.value];
    let (mut out, mut buf, mut n) = (Vec::new(), Vec::new(), 0u64);
    let limits = LinkLimits::default();
    let mut chunk = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        for _ in 0..args.pipeline {
            n += 1;
            let key = format!("load/{id}/{}", n % 100_000);
            enc.put(&mut out, n, &key, &value, None)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        s.write_all(&out).unwrap_or_else(|e| panic!("{e}"));
        let mut replies = 0;
        while replies < args.pipeline {
            let mut at = 0;
            while let Ok(Some((f, used))) = decode_frame(&buf[at..], &limits) {
                assert!(
                    matches!(f.message, LinkMessage::WriteReply(_)),
                    "unexpected {:?}",
                    f.message.kind()
                );
                at += used;
                replies += 1;
            }
            buf.drain(..at);
            if replies < args.pipeline {
                let r = s.read(&mut chunk).unwrap_or_else(|e| panic!("{e}"));
                assert!(r > 0, "store closed the link");
                buf.extend_from_slice(&chunk[..r]);
            }
        }
        done.fetch_add(replies as u64, Ordering::Relaxed);
    }
}

fn measure(args: &Args, work: impl Fn(usize, &AtomicBool, &AtomicU64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..args.links {
            let (stop, done, work) = (&stop, &done, &work);
            s.spawn(move || work(i, stop, done));
        }
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    for sync in [false, true] {
        eprintln!(
            "[store_load] sync={sync}: store, {} links x {} in flight, {}s ...",
            args.links, args.pipeline, args.seconds
        );
        let (addr, _dir) = start_store(sync);
        let store = if args.only.as_deref() == Some("raw") {
            f64::NAN
        } else {
            measure(&args, |i, stop, done| link_load(addr, i, &args, stop, done))
        };
        if args.only.as_deref() == Some("store") {
            rows.push((sync, store, f64::NAN));
            continue;
        }
        eprintln!(
            "[store_load] sync={sync}: raw RocksDB, {} threads, {}s ...",
            args.links, args.seconds
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let raw_db = RocksEngine::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let value = vec![b'v'; args.value];
        let raw = measure(&args, |i, stop, done| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut b = rocksdb::WriteBatch::default();
                b.put(format!("load/{i}/{}", n % 100_000), &value);
                raw_db.raw_write(b, sync).unwrap_or_else(|e| panic!("{e}"));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
        rows.push((sync, store, raw));
    }
    println!(
        "| sync | store writes/s ({} links, {} in flight each) | raw RocksDB writes/s ({} threads) | store / raw |",
        args.links, args.pipeline, args.links
    );
    println!("|---|---:|---:|---:|");
    for (sync, store, raw) in rows {
        println!("| {sync} | {store:.0} | {raw:.0} | {:.2} |", store / raw);
    }
}
