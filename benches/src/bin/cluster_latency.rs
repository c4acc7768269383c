//! Cross-node delivery latency: two stores, two edges. A subscriber on edge 1 follows
//! keys owned by both stores; a writer on edge 2 puts to them at a steady rate, each
//! value carrying its send time. Each delivery's latency (write sent → change received,
//! same process, monotonic clock) goes into a histogram; prints p50/p90/p99/p99.9/max.
//!
//! `cargo run --release -p benches --bin cluster_latency -- --seconds 10 --rate 2000`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::time::{Duration, Instant};

use benches::cluster::{Cluster, key_of};
use benches::ws::{WsClient, send_text};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of writing (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Writes per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Keys per store.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Worker threads per edge (this host has 2 cores for 2 stores, 2 edges and the
    /// clients).
    #[arg(long, default_value_t = 2)]
    edge_workers: usize,
    /// The stores' `--sync`: fsync each commit before acknowledging (the default) or not.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sync: bool,
}

fn main() {
    let args = Args::parse();
    eprintln!("[cluster_latency] starting 2 stores and 2 edges ...");
    let sync = args.sync.to_string();
    let workers = args.edge_workers.to_string();
    let c = Cluster::start(&["--sync", &sync], 2, &["--workers", &workers], false);
    let keys: Vec<String> = (0..args.keys)
        .flat_map(|i| [key_of(0, "lat/", i), key_of(1, "lat/", i)])
        .collect();
    let mut sub = WsClient::connect(c.edges[0].1, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("subscriber: {e}"));
    for (i, k) in keys.iter().enumerate() {
        sub.send_text(&format!(r#"{{"op":"sub","id":{i},"key":"{k}"}}"#))
            .unwrap_or_else(|e| panic!("sub: {e}"));
        let snap = sub.recv_text().unwrap_or_default();
        assert!(snap.contains("\"snapshot\""), "{snap}");
    }
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    // The subscriber's thread: latency of each change (its value is the send time in
    // microseconds since `start`), until the cluster is stopped.
    let reader = std::thread::spawn(move || {
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("{e}"));
        while let Some(text) = sub.recv_text() {
            let now = start.elapsed().as_micros() as u64;
            let Some(sent) = text
                .split("\"value\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            if Duration::from_micros(sent) >= warmup {
                let _ = h.record(now.saturating_sub(sent).max(1));
            }
        }
        h
    });
    // The writer, on the other edge; its acknowledgements are read and dropped by a
    // thread of their own.
    let mut writer = WsClient::connect(c.edges[1].1, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("writer: {e}"));
    let mut out = writer.writer().unwrap_or_else(|e| panic!("{e}"));
    let acks = std::thread::spawn(move || while writer.recv_text().is_some() {});
    let total = args.rate * (args.seconds + 1);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    eprintln!(
        "[cluster_latency] writing {total} puts at {}/s for {} s ...",
        args.rate,
        args.seconds + 1
    );
    for i in 0..total {
        let due = interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let k = &keys[i as usize % keys.len()];
        let sent = start.elapsed().as_micros();
        send_text(
            &mut out,
            &format!(r#"{{"op":"put","id":{i},"key":"{k}","value":{sent}}}"#),
        )
        .unwrap_or_else(|e| panic!("put: {e}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(c);
    let h = reader.join().unwrap_or_else(|_| panic!("reader"));
    let _ = acks.join();
    let us = |q: f64| h.value_at_quantile(q) as f64;
    println!(
        "| cross-node delivery (write on edge 2 → subscriber on edge 1), {}/s for {} s, keys on both stores, store `--sync {}`, edge `--workers {}` | value |",
        args.rate, args.seconds, args.sync, args.edge_workers
    );
    println!("|---|---:|");
    println!("| deliveries measured | {} |", h.len());
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        println!("| {name} | {:.0} µs |", us(q));
    }
    println!("| max | {} µs |", h.max());
}
