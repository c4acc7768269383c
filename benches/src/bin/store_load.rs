//! End-to-end store load: `links` TCP links pipelining puts into a real store (the
//! same core and link server as the `store` binary, on RocksDB), then raw RocksDB
//! writes (one put per WriteBatch, same options, as many threads as links) on a fresh
//! database, alternating for `rounds` rounds of the same length in one run. Prints a
//! table of every round and the medians.
//!
//! `cargo run --release -p benches --bin store_load -- --seconds 4 --links 4 --rounds 5`
#![allow(clippy::panic)] // a load tool should stop loudly on any failure

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches as _;
use clap::Parser;
use store::changelog::{ChangeLog, Retention};
use store::core::CoreConfig;
use store::engine::rocks::RocksEngine;
use wire::link::{LinkEncoder, LinkLimits, LinkMessage, decode_frame};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
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
    /// Alternating rounds of store and raw per `sync` setting; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Only measure one side (for profiling): `store` or `raw`.
    #[arg(long)]
    only: Option<String>,
}

fn start_store(sync: bool) -> (SocketAddr, tempfile::TempDir, Arc<store::metrics::Metrics>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let engine = Arc::new(RocksEngine::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
    let owned: Vec<u32> = (0..256).collect();
    let log = ChangeLog::open(engine, 256, &owned, || 1).unwrap_or_else(|e| panic!("{e}"));
    let cfg = CoreConfig {
        store_id: "load".into(),
        sync,
        retention: Retention::default(),
        ..CoreConfig::default()
    };
    let metrics = Arc::clone(&cfg.metrics);
    let kept = Arc::clone(&metrics);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::task::LocalSet::new().block_on(&rt, async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
            store::server::run_node(listener, log, cfg, std::future::pending())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        });
    });
    (rx.recv().unwrap_or_else(|e| panic!("{e}")), dir, kept)
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
            enc.put(&mut out, n, &key, &value, None, None)
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    for sync in [false, true] {
        let (addr, _dir, metrics) = start_store(sync);
        let raw_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let raw_db = RocksEngine::open(raw_dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let value = vec![b'v'; args.value];
        let (mut stores, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        // Store and raw alternate, so the machine's drift hits both alike.
        for round in 1..=args.rounds {
            eprintln!(
                "[store_load] sync={sync} round {round}/{}: store, {} links x {} in flight, {}s ...",
                args.rounds, args.links, args.pipeline, args.seconds
            );
            let before = (
                metrics.commits.load(Ordering::Relaxed),
                metrics.writes.load(Ordering::Relaxed),
            );
            let store = if args.only.as_deref() == Some("raw") {
                f64::NAN
            } else {
                measure(&args, |i, stop, done| link_load(addr, i, &args, stop, done))
            };
            let commits = metrics.commits.load(Ordering::Relaxed) - before.0;
            let writes = metrics.writes.load(Ordering::Relaxed) - before.1;
            eprintln!(
                "[store_load]   {store:.0} writes/s; {commits} commits, {:.1} writes per commit",
                writes as f64 / commits.max(1) as f64
            );
            let raw = if args.only.as_deref() == Some("store") {
                f64::NAN
            } else {
                eprintln!(
                    "[store_load] sync={sync} round {round}/{}: raw RocksDB, {} threads, {}s ...",
                    args.rounds, args.links, args.seconds
                );
                measure(&args, |i, stop, done| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let mut b = rocksdb::WriteBatch::default();
                        b.put(format!("load/{i}/{}", n % 100_000), &value);
                        raw_db.raw_write(b, sync).unwrap_or_else(|e| panic!("{e}"));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            eprintln!("[store_load]   raw {raw:.0} writes/s");
            stores.push(store);
            raws.push(raw);
            ratios.push(store / raw);
        }
        rows.push((sync, stores, raws, ratios));
    }
    println!(
        "| sync | round | store writes/s ({} links, {} in flight each) | raw RocksDB writes/s ({} threads) | store / raw |",
        args.links, args.pipeline, args.links
    );
    println!("|---|---|---:|---:|---:|");
    for (sync, stores, raws, ratios) in rows {
        for (i, ((s, r), q)) in stores.iter().zip(&raws).zip(&ratios).enumerate() {
            println!("| {sync} | {} | {s:.0} | {r:.0} | {q:.2} |", i + 1);
        }
        println!(
            "| {sync} | **median** | {:.0} | {:.0} | **{:.2}** |",
            median(stores),
            median(raws),
            median(ratios)
        );
    }
}
