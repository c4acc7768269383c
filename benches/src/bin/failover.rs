//! Failover time: two stores, two edges, HAProxy in front. `--clients` clients of the
//! Rust SDK (`ringline-client`, tasks on two threads; URLs: edge 1, then HAProxy)
//! subscribe to one key each (keys on both stores) on edge 1 while a writer on edge 2
//! keeps writing a rising counter to every key. Edge 1 is killed with SIGKILL; every
//! client moves to HAProxy and resumes by itself, and counts as caught up when it has
//! received a value written after the kill. Prints the time from the kill to each
//! client being caught up (median, p99, last).
//!
//! With `--sdk-procs P`, the same failover runs again with the TypeScript SDK's clients
//! (`clients/js/bench/failover.mjs`, over P Node processes) and with hand-written
//! clients on bare frames (a thread each, reconnecting at once: the floor), rounds
//! alternating, each on a fresh cluster; the table gives all three and the ratios.
//! Caught-up times of the Node clients are their wall clocks against this tool's at the
//! kill (one host, one clock).
//!
//! `cargo run --release -p benches --bin failover -- --clients 1000`
//! `cargo run --release -p benches --bin failover -- --clients 1000 --sdk-procs 4 --rounds 3`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use benches::cluster::{Cluster, key_of};
use benches::ws::{WsClient, send_text};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Clients on the edge that is killed.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Keys per store the clients spread over.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Also run the same failover with the TypeScript SDK's clients over this many Node
    /// processes and with hand-written clients on bare frames, alternating rounds with
    /// this tool's own clients (the Rust SDK) (0: only those).
    #[arg(long, default_value_t = 0)]
    sdk_procs: usize,
    /// Milliseconds between the writer's rounds (one write to every key each).
    #[arg(long, default_value_t = 5)]
    write_ms: u64,
    /// Rounds of each way when comparing.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// The token and value of a JSON message (crude, but the edge's JSON is regular).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.split(&format!("\"{name}\":")).nth(1)?;
    let rest = rest.trim_start_matches('"');
    rest.split(['"', ',', '}']).next()
}

fn main() {
    let args = Args::parse();
    if args.sdk_procs == 0 {
        let times = run(&args, Way::RustSdk);
        table(&args, &[(Way::RustSdk, vec![times])]);
        return;
    }
    // Every way, rounds alternating, each on a fresh cluster.
    let ways = [Way::RustSdk, Way::Sdk, Way::Threads];
    let mut runs: Vec<(Way, Vec<Vec<Duration>>)> = ways.iter().map(|w| (*w, Vec::new())).collect();
    for round in 0..args.rounds {
        for k in 0..ways.len() {
            let i = (k + round) % ways.len();
            eprintln!(
                "[failover] round {}/{}: {}",
                round + 1,
                args.rounds,
                ways[i].name()
            );
            let times = run(&args, ways[i]);
            runs[i].1.push(times);
        }
    }
    table(&args, &runs);
}

/// How the clients are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The Rust client library (`ringline-client`), every client a task in this
    /// process: the tool's own clients.
    RustSdk,
    /// A thread each in this process, hand-written on bare frames: reconnect at once,
    /// resume by token (a floor: no backoff, no jitter, no library).
    Threads,
    /// The TypeScript library in Node processes (`clients/js/bench/failover.mjs`).
    Sdk,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Self::RustSdk => "the Rust SDK (this tool's clients)",
            Self::Threads => "hand-written clients on bare frames (threads)",
            Self::Sdk => "the TypeScript SDK (Node processes)",
        }
    }
}

/// The time from the kill to the last client caught up, per run; and the median and
/// p99 of all clients of the median run.
fn table(args: &Args, runs: &[(Way, Vec<Vec<Duration>>)]) {
    println!(
        "| failover: SIGKILL of the edge holding {} clients → each caught up on the other edge through HAProxy | runs | median client | p99 | **last client caught up** (median of runs) |",
        args.clients
    );
    println!("|---|---:|---:|---:|---:|");
    let mut lasts = Vec::new();
    for (way, times) in runs {
        let mut by_last: Vec<&Vec<Duration>> = times.iter().collect();
        by_last.sort_by_key(|t| t.last().copied());
        let Some(mid) = by_last.get(by_last.len() / 2) else {
            continue;
        };
        let at = |q: f64| mid[((mid.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        let all: Vec<String> = by_last
            .iter()
            .filter_map(|t| t.last())
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect();
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | **{:.0} ms** ({} ms) |",
            way.name(),
            times.len(),
            at(0.5),
            at(0.99),
            at(1.0),
            all.join(", ")
        );
        lasts.push(at(1.0));
    }
    if let [rust, ts, floor] = lasts[..] {
        println!(
            "\nlast caught up, TypeScript SDK / Rust SDK (the tool's own): {:.2}; Rust SDK / bare frames: {:.2}",
            ts / rust.max(1.0),
            rust / floor.max(1.0)
        );
    }
}

/// One failover on a fresh cluster: every client's time from the kill to catching up,
/// sorted.
fn run(args: &Args, way: Way) -> Vec<Duration> {
    eprintln!("[failover] starting 2 stores, 2 edges and HAProxy ...");
    let c = Cluster::start(&[], 2, &[], true);
    let (victim, survivor) = (c.edges[0].1, c.edges[1].1);
    let front = c
        .haproxy
        .as_ref()
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no haproxy"));
    let keys: Vec<String> = (0..args.keys)
        .flat_map(|i| [key_of(0, "fo/", i), key_of(1, "fo/", i)])
        .collect();
    eprintln!(
        "[failover] {} clients subscribing on edge 1 ...",
        args.clients
    );
    let clients = match way {
        Way::RustSdk => Clients::rust(args.clients, victim, front, &keys),
        Way::Threads => Clients::threads(args.clients, victim, front, &keys),
        Way::Sdk => Clients::sdk(args, victim, front, &keys),
    };
    // The writer: a rising counter to every key, every `--write-ms`, on the surviving edge.
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (counter, stop, keys) = (Arc::clone(&counter), Arc::clone(&stop), keys.clone());
        let every = Duration::from_millis(args.write_ms);
        std::thread::spawn(move || write_counter(survivor, &keys, every, &counter, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("[failover] SIGKILL edge 1 ...");
    let pid = c.edges[0].0.id().to_string();
    let (mut times, cpu) = clients.kill(|| {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        // Read once the edge is dead: a higher value can only come from the other.
        counter.load(Ordering::Relaxed)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    times.sort();
    eprintln!(
        "[failover] {}: last of {} caught up {:.0} ms after the kill; the clients' CPU meanwhile {:.0} ms",
        way.name(),
        times.len(),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        cpu * 1e3
    );
    times
}

/// Write a rising counter to every key of `keys` `every` so often through the edge at
/// `addr`, until `stop`.
fn write_counter(
    addr: SocketAddr,
    keys: &[String],
    every: Duration,
    counter: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut w = WsClient::connect(addr, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("writer: {e}"));
    let mut out = w.writer().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || while w.recv_text().is_some() {});
    while !stop.load(Ordering::Relaxed) {
        let v = counter.fetch_add(1, Ordering::Relaxed) + 1;
        for (i, k) in keys.iter().enumerate() {
            let _ = send_text(
                &mut out,
                &format!(r#"{{"op":"put","id":{i},"key":"{k}","value":{v}}}"#),
            );
        }
        std::thread::sleep(every);
    }
}

/// The clients of one run, subscribed and waiting for the kill.
enum Clients {
    Threads {
        handles: Vec<std::thread::JoinHandle<Duration>>,
        killed_at_value: Arc<AtomicU64>,
        t0: Arc<std::sync::OnceLock<Instant>>,
    },
    Sdk(Vec<std::process::Child>),
    RustSdk {
        rt: tokio::runtime::Runtime,
        tasks: Vec<tokio::task::JoinHandle<Duration>>,
        killed_at_value: Arc<AtomicU64>,
        t0: Arc<std::sync::OnceLock<Instant>>,
    },
}

impl Clients {
    fn threads(n: usize, victim: SocketAddr, front: SocketAddr, keys: &[String]) -> Self {
        let killed_at_value = Arc::new(AtomicU64::new(u64::MAX));
        let ready = Arc::new(Barrier::new(n + 1));
        let t0: Arc<std::sync::OnceLock<Instant>> = Arc::default();
        let handles = (0..n)
            .map(|i| {
                let key = keys[i % keys.len()].clone();
                let (k, r, t) = (
                    Arc::clone(&killed_at_value),
                    Arc::clone(&ready),
                    Arc::clone(&t0),
                );
                std::thread::spawn(move || client(victim, front, &key, &k, &r, &t))
            })
            .collect();
        ready.wait();
        Self::Threads {
            handles,
            killed_at_value,
            t0,
        }
    }

    /// `n` clients of the Rust SDK, tasks on a runtime of two threads, every one with
    /// its snapshot.
    fn rust(n: usize, victim: SocketAddr, front: SocketAddr, keys: &[String]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let killed_at_value = Arc::new(AtomicU64::new(u64::MAX));
        let t0: Arc<std::sync::OnceLock<Instant>> = Arc::default();
        let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
        let tasks = (0..n)
            .map(|i| {
                let key = keys[i % keys.len()].clone();
                let (k, r, t) = (
                    Arc::clone(&killed_at_value),
                    Arc::clone(&ready),
                    Arc::clone(&t0),
                );
                let urls = vec![format!("ws://{victim}/ws"), format!("ws://{front}/ws")];
                rt.spawn(async move { sdk_client(urls, key, &k, &r, &t).await })
            })
            .collect();
        rt.block_on(ready.wait());
        Self::RustSdk {
            rt,
            tasks,
            killed_at_value,
            t0,
        }
    }

    /// `args.clients` SDK clients over `args.sdk_procs` Node processes, every one with
    /// its snapshot.
    fn sdk(args: &Args, victim: SocketAddr, front: SocketAddr, keys: &[String]) -> Self {
        let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
        let tsc = js.join("node_modules/typescript/bin/tsc");
        let built = std::process::Command::new("node")
            .arg(&tsc)
            .args(["-p", "."])
            .current_dir(&js)
            .status()
            .unwrap_or_else(|e| panic!("node: {e} (scripts/interop-setup.sh installs it)"));
        assert!(built.success(), "tsc failed");
        let per = args.clients.div_ceil(args.sdk_procs);
        let mut children = Vec::new();
        for p in 0..args.sdk_procs {
            let count = per.min(args.clients - p * per);
            // NODE_FLAGS: extra flags for the SDK's processes (`--cpu-prof`, say).
            let flags = std::env::var("NODE_FLAGS").unwrap_or_default();
            let child = std::process::Command::new("node")
                .args(flags.split_whitespace())
                .arg(js.join("bench/failover.mjs"))
                .env("URLS", format!("ws://{victim}/ws,ws://{front}/ws"))
                .env("KEYS", keys.join(","))
                .env("COUNT", count.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("node: {e}"));
            children.push(child);
        }
        for child in &mut children {
            let Some(out) = child.stdout.as_mut() else {
                panic!("no stdout")
            };
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(line.trim(), "ready", "an SDK process did not get ready");
        }
        Self::Sdk(children)
    }

    /// Run `kill` (which returns the last value written while the edge lived), tell the
    /// clients that value, and wait for every client to catch up: each one's time from
    /// the kill.
    fn kill(self, kill: impl FnOnce() -> u64) -> (Vec<Duration>, f64) {
        match self {
            Self::Threads {
                handles,
                killed_at_value,
                t0,
            } => {
                let _ = t0.set(Instant::now());
                let cpu0 = benches::cpu_secs("self");
                killed_at_value.store(kill(), Ordering::Relaxed);
                let times = handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| panic!("a client failed")))
                    .collect();
                // This process's CPU (the writer's share included).
                (times, benches::cpu_secs("self") - cpu0)
            }
            Self::RustSdk {
                rt,
                tasks,
                killed_at_value,
                t0,
            } => {
                let _ = t0.set(Instant::now());
                let cpu0 = benches::cpu_secs("self");
                killed_at_value.store(kill(), Ordering::Relaxed);
                let times = rt.block_on(async {
                    let mut times = Vec::new();
                    for t in tasks {
                        times.push(t.await.unwrap_or_else(|e| panic!("a client failed: {e}")));
                    }
                    times
                });
                (times, benches::cpu_secs("self") - cpu0)
            }
            Self::Sdk(mut children) => {
                use std::io::Write;
                let t0 = std::time::SystemTime::now();
                let killed_at = kill();
                for child in &mut children {
                    if let Some(stdin) = child.stdin.as_mut() {
                        let _ = writeln!(stdin, "kill {killed_at}");
                    }
                }
                let mut times = Vec::new();
                let mut cpu = 0.0;
                for child in children {
                    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
                    assert!(out.status.success(), "an SDK process failed");
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        if let Some(ms) = line
                            .strip_prefix("cpu ")
                            .and_then(|m| m.parse::<f64>().ok())
                        {
                            cpu += ms / 1e3;
                        }
                        let Some(ms) = line
                            .strip_prefix("caught ")
                            .and_then(|m| m.parse::<f64>().ok())
                        else {
                            continue;
                        };
                        let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(ms / 1e3);
                        times.push(at.duration_since(t0).unwrap_or_default());
                    }
                }
                (times, cpu)
            }
        }
    }
}

/// One client of the Rust SDK: subscribe (connected to the victim first, the balancer
/// next), and after the kill return the time to the first value written since.
async fn sdk_client(
    urls: Vec<String>,
    key: String,
    killed_at_value: &AtomicU64,
    ready: &tokio::sync::Barrier,
    t0: &std::sync::OnceLock<Instant>,
) -> Duration {
    use futures_util::StreamExt;
    use ringline_client::{Client, Config, Event};
    let cfg = Config {
        urls,
        ..Config::new("")
    };
    let client = Client::connect(cfg);
    let mut sub = client
        .subscribe(&key)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let mut waiting = true;
    while let Some(event) = sub.next().await {
        match event {
            Event::Snapshot { last: true, .. } if waiting => {
                waiting = false;
                ready.wait().await;
            }
            Event::Change {
                op: wire::client::ChangeOp::Put { value, .. },
                ..
            } => {
                let v = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                if v.is_some_and(|v| v > killed_at_value.load(Ordering::Relaxed)) {
                    client.close();
                    return t0.get().map_or(Duration::ZERO, Instant::elapsed);
                }
            }
            Event::Reset { reason } => panic!("reset: {reason}"),
            _ => {}
        }
    }
    panic!("the subscription ended before catching up")
}

/// One client: subscribe on `victim`, wait, then after the kill reconnect through
/// `front` with the last token; returns the time from the kill to catching up.
fn client(
    victim: SocketAddr,
    front: SocketAddr,
    key: &str,
    killed_at_value: &AtomicU64,
    ready: &Barrier,
    t0: &std::sync::OnceLock<Instant>,
) -> Duration {
    let mut ws = WsClient::connect(victim, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    ws.send_text(&format!(r#"{{"op":"sub","id":1,"key":"{key}"}}"#))
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = ws.recv_text().unwrap_or_default();
    let mut token = field(&snap, "token").unwrap_or_default().to_owned();
    ready.wait();
    // Follow until the edge dies.
    while let Some(text) = ws.recv_text() {
        if let Some(t) = field(&text, "token") {
            token = t.to_owned();
        }
    }
    // Reconnect through HAProxy, resume, and wait for a value written after the kill.
    let mut ws = loop {
        if let Ok(ws) = WsClient::connect(front, "/ws", Some("ringline.v1.json")) {
            break ws;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    ws.send_text(&format!(
        r#"{{"op":"sub","id":1,"key":"{key}","from":"{token}"}}"#
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    while let Some(text) = ws.recv_text() {
        if text.contains("\"change\"")
            && let Some(v) = field(&text, "value").and_then(|v| v.parse::<u64>().ok())
            && v > killed_at_value.load(Ordering::Relaxed)
        {
            return t0.get().map_or(Duration::ZERO, Instant::elapsed);
        }
    }
    panic!("connection ended before catching up")
}
