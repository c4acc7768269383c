//! Cross-node delivery latency: two stores, two edges. A subscriber on edge 1 (the Rust
//! SDK, `ringline-client`) follows keys owned by both stores; a writer on edge 2 puts to them at a steady rate, each
//! value carrying its send time. Each delivery's latency (write sent → change received,
//! same process, monotonic clock) goes into a histogram; prints p50/p90/p99/p99.9/max.
//!
//! Beside it, measured in the same run so that the host's noise of the moment is in
//! both: what this host's parts cost alone, as a floor for the pipeline. `fdatasync` of
//! a small append in the stores' folder at the same rate (a durable write waits for at
//! least one), a loopback TCP round trip between two threads at the same rate (a
//! delivery crosses four loopback connections, two round trips' worth), and how long
//! the stores' own commits took (their `/metrics`).
//!
//! `cargo run --release -p benches --bin cluster_latency -- --seconds 10 --rate 2000`
//!
//! The stores' data goes under the system's temporary folder: `TMPDIR=/dev/shm` puts it
//! in memory, which takes the disk out of the measurement (with `--sync false`, the
//! software path alone).
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use benches::cluster::{Cluster, http_get, key_of};
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
    /// Seconds for each of the host baselines (fdatasync, loopback round trip).
    #[arg(long, default_value_t = 3)]
    baseline_seconds: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("{e}"))
}

/// Call `f` `rate` times a second for `seconds`, recording how long each call took.
fn paced(rate: u64, seconds: u64, mut f: impl FnMut()) -> Histogram<u64> {
    let mut h = histogram();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..rate * seconds {
        if let Some(wait) = interval.mul_f64(i as f64).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        f();
        let _ = h.record((t.elapsed().as_micros() as u64).max(1));
    }
    h
}

/// `fdatasync` after each 200-byte append to a file in `dir`.
fn fdatasync_baseline(dir: &Path, rate: u64, seconds: u64) -> Histogram<u64> {
    let path = dir.join("fdatasync-baseline");
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let record = [b'x'; 200];
    let h = paced(rate, seconds, || {
        f.write_all(&record).unwrap_or_else(|e| panic!("{e}"));
        f.sync_data().unwrap_or_else(|e| panic!("{e}"));
    });
    let _ = std::fs::remove_file(path);
    h
}

/// A 64-byte ping answered by an echo thread over loopback TCP.
fn loopback_baseline(rate: u64, seconds: u64) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let echo = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
    });
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 64];
    let h = paced(rate, seconds, || {
        s.write_all(&buf).unwrap_or_else(|e| panic!("{e}"));
        s.read_exact(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    });
    drop(s);
    let _ = echo.join();
    h
}

/// The stores' commit times, summed over both: (bucket bound in seconds, commits at or
/// under it), cumulative, as their `/metrics` publish them.
fn commit_buckets(c: &Cluster) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for admin in &c.store_admins {
        let text = http_get(*admin, "/metrics");
        let buckets = text
            .lines()
            .filter_map(|l| l.strip_prefix("ringline_store_commit_seconds_bucket{le=\""))
            .filter_map(|l| l.split_once("\"} "))
            .filter_map(|(le, n)| Some((le.to_owned(), n.trim().parse::<u64>().ok()?)));
        for (i, (le, n)) in buckets.enumerate() {
            match out.get_mut(i) {
                Some(b) => b.1 += n,
                None => out.push((le, n)),
            }
        }
    }
    out
}

fn row(name: &str, h: &Histogram<u64>) {
    let q = |q: f64| h.value_at_quantile(q);
    println!(
        "| {name} | {} | {} µs | {} µs | {} µs | {} µs | {} µs |",
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max()
    );
}

/// Follow `keys` through the edge at `addr` with the Rust SDK (one subscription per
/// key, on a current-thread runtime); say so on `ready` once every snapshot is in, then
/// record the latency of every change written after the first second, until `total`
/// changes came.
fn subscribe(
    addr: std::net::SocketAddr,
    keys: &[String],
    start: Instant,
    total: u64,
    ready: &std::sync::mpsc::Sender<()>,
) -> Histogram<u64> {
    use futures_util::StreamExt;
    use ringline_client::{Client, Config, Event};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let client = Client::connect(Config::new(&format!("ws://{addr}/ws")));
        let mut subs = Vec::new();
        for k in keys {
            let mut s = client
                .subscribe(k)
                .await
                .unwrap_or_else(|e| panic!("subscribe: {e}"));
            match s.next().await {
                Some(Event::Snapshot { last: true, .. }) => {}
                other => panic!("expected a snapshot, got {other:?}"),
            }
            subs.push(s);
        }
        let _ = ready.send(());
        let mut all = futures_util::stream::select_all(subs);
        let (mut h, mut seen) = (histogram(), 0);
        let warmup = Duration::from_secs(1);
        while seen < total {
            let next = tokio::time::timeout(Duration::from_secs(5), all.next()).await;
            let Ok(Some(event)) = next else {
                eprintln!("[cluster_latency] {seen} of {total} changes came (then 5 s of silence)");
                break;
            };
            let now = start.elapsed().as_micros() as u64;
            let Event::Change {
                op: wire::client::ChangeOp::Put { value, .. },
                ..
            } = event
            else {
                continue;
            };
            seen += 1;
            let sent = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(sent) = sent.filter(|s| Duration::from_micros(*s) >= warmup) {
                let _ = h.record(now.saturating_sub(sent).max(1));
            }
        }
        client.close();
        h
    })
}

fn main() {
    let args = Args::parse();
    eprintln!("[cluster_latency] starting 2 stores and 2 edges ...");
    let sync = args.sync.to_string();
    let workers = args.edge_workers.to_string();
    let c = Cluster::start(&["--sync", &sync], 2, &["--workers", &workers], false);
    eprintln!(
        "[cluster_latency] host baselines at {}/s for {} s each: fdatasync, loopback round trip ...",
        args.rate, args.baseline_seconds
    );
    let fsync = fdatasync_baseline(c.dir.path(), args.rate, args.baseline_seconds);
    let rtt = loopback_baseline(args.rate, args.baseline_seconds);
    let keys: Vec<String> = (0..args.keys)
        .flat_map(|i| [key_of(0, "lat/", i), key_of(1, "lat/", i)])
        .collect();
    let start = Instant::now();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = c.edges[0].1;
    let sub_keys = keys.clone();
    let total = args.rate * (args.seconds + 1);
    // The subscriber's thread (the Rust SDK, `ringline-client`): latency of each change
    // (its value is the send time in microseconds since `start`) until every write came.
    let reader =
        std::thread::spawn(move || subscribe(subscriber, &sub_keys, start, total, &ready_tx));
    ready_rx
        .recv()
        .unwrap_or_else(|_| panic!("the subscriber failed"));
    // The writer, on the other edge; its acknowledgements are read and dropped by a
    // thread of their own.
    let mut writer = WsClient::connect(c.edges[1].1, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("writer: {e}"));
    let mut out = writer.writer().unwrap_or_else(|e| panic!("{e}"));
    let acks = std::thread::spawn(move || while writer.recv_text().is_some() {});
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
    let h = reader.join().unwrap_or_else(|_| panic!("reader"));
    let commits = commit_buckets(&c);
    drop(c);
    let _ = acks.join();
    println!(
        "\n{}/s for {} s, keys on both stores, store `--sync {}`, edge `--workers {}`:\n",
        args.rate, args.seconds, args.sync, args.edge_workers
    );
    println!("| measured | samples | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    row(
        "**delivery**: write on edge 2 → change at a subscriber on edge 1",
        &h,
    );
    row("host: `fdatasync` of a 200 B append, stores' disk", &fsync);
    row("host: loopback TCP round trip, 64 B, two threads", &rtt);
    let total = commits.last().map_or(0, |b| b.1);
    println!("\nStore commits (both stores, `/metrics`), {total} in all:\n");
    println!("| commit took at most | share of commits |");
    println!("|---|---:|");
    // Up to the first bound that holds every commit.
    let shown = commits
        .iter()
        .position(|b| b.1 == total)
        .map_or(commits.len(), |i| i + 1);
    for (le, n) in &commits[..shown] {
        let share = 100.0 * *n as f64 / total.max(1) as f64;
        let bound = match le.parse::<f64>() {
            Ok(s) if s.is_finite() => format!("{} µs", (s * 1e6).round()),
            _ => "any".to_owned(),
        };
        println!("| {bound} | {share:.2} % |");
    }
}
