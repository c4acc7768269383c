//! The load generator: drives a running Ringline edge (or HAProxy in front of edges)
//! with real WebSocket connections and reports a table (and `--json FILE`).
//!
//! - `connect`: open and hold N connections; connect rate and handshake latency.
//! - `fanout`: subscribers watch keys; a writer puts to them at a steady rate;
//!   deliveries/s and write → receive latency from the send time inside each value.
//! - `resume`: clients subscribe, drop, miss M changes per key, and come back with
//!   their tokens at once; time until the last one is caught up, and a check that
//!   each received exactly the missed changes, in order.
//! - `connect --presence CHANNEL`: once all are open, every connection joins one
//!   channel; join throughput, `count_only` and full paged listing times, and the
//!   edges' and the store's memory per member.
//!
//! N beyond one process's open-file limit is spread over several worker processes
//! (`--procs`, default: one per 15,000 connections), each connecting from 250 loopback
//! source addresses of its own (127.x.y.z, see `source`) when the target is on
//! loopback, so that no address runs out of ports. Each worker reports its own CPU use: a generator that
//! saturates a core says so in the table. With `--edge-pid`, the edges' CPU over the
//! measured window is read from `/proc`, giving deliveries per edge core.
//!
//! Its connections are lean hand-written clients on bare frames (`benches::ws`), not
//! the client library: tens of thousands of them per process, each a few hundred
//! bytes and no task, so that the generator is not what a measurement measures. The
//! tools that measure what a user's client sees (`failover`, `cluster_latency`) use
//! the Rust client library.
//!
//! `cargo run --release -p benches --bin loadgen -- fanout --target 127.0.0.1:8080
//!  --conns 10000 --keys 1 --rate 40 --seconds 10 --edge-pid $(pgrep -x edge)`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::aws::{Msg, Ws};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Connect,
    Fanout,
    Resume,
}

/// Drive running Ringline edges with real WebSocket connections: `connect` holds them,
/// `fanout` measures deliveries and write → receive latency, `resume` a reconnect storm
/// with tokens. Prints a table (and `--json FILE`).
#[derive(Debug, Clone, Parser)]
#[command(args_override_self = true)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// The edge (or the proxy in front of edges).
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// WebSocket path (`connect` may use `/echo`; the others speak `/ws`).
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Connections (`connect`), subscribers (`fanout`) or clients (`resume`).
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Worker processes [default: one per 15,000 connections].
    #[arg(long)]
    procs: Option<usize>,
    /// Connection attempts in flight per worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// `connect`: subscribe each connection to a key (spread over `--keys`) before it
    /// counts as open, as a real client would.
    #[arg(long)]
    subscribe: bool,
    /// `connect`: seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Keys the subscribers or clients spread over (`fanout`, `resume`).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// `fanout`: writes per second, over all keys.
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// `fanout`: measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// `fanout`: publish to the broadcast key `@all` instead of putting to the keys; the
    /// connections do not subscribe (every connection gets broadcasts).
    #[arg(long)]
    broadcast: bool,
    /// `fanout`: value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// `fanout`: the value is a JSON object of sensor rows (as a dashboard's), not a
    /// padded string.
    #[arg(long)]
    value_json: bool,
    /// Offer `permessage-deflate` on every subscriber's connection.
    #[arg(long)]
    deflate: bool,
    /// Subscribers speak `ringline.v2.json` (changes in the compact form).
    #[arg(long)]
    compact: bool,
    /// `fanout`: subscribers speak the binary form (`ringline.v1.fb`).
    #[arg(long, conflicts_with = "compact")]
    binary: bool,
    /// `resume`: changes per key written while the clients are away.
    #[arg(long, default_value_t = 20)]
    missed: u64,
    /// `resume`: seconds a client may take to come back and catch up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Don't spread workers over 127.x.y.z source addresses.
    #[arg(long)]
    no_sources: bool,
    /// Edge process ids (comma-separated) whose CPU to read over the measured window.
    #[arg(long, value_delimiter = ',')]
    edge_pid: Vec<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Authenticate every connection (edges with `auth = "required"`): each gets its own
    /// HS256 token, signed with this file's secret, for subject `lg-user-N`, granting
    /// `user/{sub}/*` and `lg/*` to read and `user/{sub}/inbox` to write, sent as the
    /// first message (`{"op":"auth"}`), as a browser would.
    #[arg(long)]
    auth_secret_file: Option<std::path::PathBuf>,
    /// `connect`: once all are open, every connection joins this presence channel.
    #[arg(long)]
    presence: Option<String>,
    /// The store's process id, whose memory per presence member to report.
    #[arg(long)]
    store_pid: Option<u32>,
    /// Internal: run as worker number N of `--procs`.
    #[arg(long, hide = true)]
    worker: Option<usize>,
}

/// What one worker reports at the end.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerResult {
    connected: u64,
    failed: u64,
    /// `connect`: connections the server closed during the hold.
    dropped: u64,
    /// Seconds from the first attempt to the last connection up.
    connect_secs: f64,
    /// Handshake latencies (µs) as (value, count).
    handshake_us: Vec<(u64, u64)>,
    /// Deliveries inside the measured window (`fanout`).
    deliveries: u64,
    /// Write → receive latencies (µs) as (value, count).
    latency_us: Vec<(u64, u64)>,
    /// `resume`: clients caught up, those with a gap, duplicate or reordering, and
    /// those that got a reset; µs from the go signal to the last one caught up.
    caught_up: u64,
    out_of_order: u64,
    timed_out: u64,
    resets: u64,
    catch_up_us: u64,
    /// The worker's own CPU seconds and wall seconds.
    cpu_secs: f64,
    wall_secs: f64,
    /// `fanout`: the worker's own CPU seconds inside the measured window.
    #[serde(default)]
    window_cpu_secs: f64,
    /// `fanout`: bytes read from the sockets, and the changes they carried.
    #[serde(default)]
    rx_bytes: u64,
    #[serde(default)]
    rx_changes: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The bytes a `/proc` file gives in kB on its line starting with `field` (0 if none).
fn proc_kb_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident bytes of process `pid`.
fn rss_bytes(pid: u32) -> u64 {
    proc_kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The host's kernel slab bytes.
fn slab_bytes() -> u64 {
    proc_kb_field("/proc/meminfo", "Slab:")
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|e| panic!("{e}"))
}

fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn merge(h: &mut Histogram<u64>, p: &[(u64, u64)]) {
    for &(v, n) in p {
        let _ = h.record_n(v.max(1), n);
    }
}

fn key(k: usize) -> String {
    format!("lg/{k}")
}

/// The `"value":"…"` string of a change message, or `"v":"…"` in the compact form (or
/// its `"sent"` string, when the value is a JSON object), if it is one.
fn change_value(text: &str) -> Option<&str> {
    let field = if text.starts_with(r#"{"op":"change""#) {
        r#""value":"#
    } else if text.starts_with(r#"{"c":"#) {
        r#""v":"#
    } else {
        return None;
    };
    let rest = text.split_once(field)?.1;
    let rest = rest
        .strip_prefix('"')
        .or_else(|| rest.strip_prefix(r#"{"sent":""#))?;
    rest.split('"').next()
}

/// The value string of a binary-form change (the JSON string the writer put, without
/// its quotes), if the message is one.
fn binary_change_value(b: &[u8]) -> Option<&str> {
    use wire::client::{ChangeOp, Response};
    let Ok(Response::Change {
        op: ChangeOp::Put { value, .. },
        ..
    }) = wire::client::fb::decode_response(b)
    else {
        return None;
    };
    // Borrowed from `b` (a value of a put is carried as bytes).
    let value: &[u8] = match value {
        std::borrow::Cow::Borrowed(v) => v,
        std::borrow::Cow::Owned(_) => return None,
    };
    let text = std::str::from_utf8(value).ok()?;
    let text = text.strip_prefix('"')?;
    text.split('"').next()
}

/// A value carrying its send time and sequence, padded to `size` bytes.
fn value(seq: u64, size: usize) -> String {
    let mut v = format!("t{}s{seq}p", now_us());
    while v.len() < size {
        v.push('x');
    }
    v
}

/// A value as JSON: [`value`] as a string, or (`json`) an object carrying it as
/// `"sent"` and sensor rows to about `size` bytes, numbers changing with `seq`.
fn value_literal(seq: u64, size: usize, json: bool) -> String {
    if !json {
        return format!("\"{}\"", value(seq, size));
    }
    benches::json_rows(&format!(r#""sent":"{}","#, value(seq, 0)), seq, size)
}

/// The time (µs) a worker's `GO <µs>` line carries, or now.
fn go_time(line: Option<String>) -> u64 {
    line.as_deref()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(now_us)
}

/// (send time µs, seq) from a value made by [`value`].
fn parse_value(v: &str) -> Option<(u64, u64)> {
    let rest = v.strip_prefix('t')?;
    let (t, rest) = rest.split_once('s')?;
    let (s, _) = rest.split_once('p')?;
    Some((t.parse().ok()?, s.parse().ok()?))
}

// ---------------------------------------------------------------------------------
// The parent: spawns workers, relays their progress, runs the writer, sums up.
// ---------------------------------------------------------------------------------

struct Worker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    /// Lines other than progress, as they arrive.
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_workers(procs: usize, progress: &Arc<Vec<AtomicU64>>) -> Vec<Worker> {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let own: Vec<String> = std::env::args().skip(1).collect();
    (0..procs)
        .map(|i| {
            let mut child = Command::new(&exe)
                .args(&own)
                .args(["--worker", &i.to_string(), "--procs", &procs.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("worker: {e}"));
            let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
            let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
            let (tx, lines) = std::sync::mpsc::channel();
            let progress = Arc::clone(progress);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(n) = line.strip_prefix("PROGRESS ") {
                        if let Some(slot) = progress.get(i) {
                            slot.store(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
                        }
                    } else if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Worker {
                child,
                stdin,
                lines,
            }
        })
        .collect()
}

/// Wait until every worker has said `word`, printing progress each second.
fn wait_all(workers: &[Worker], word: &str, total: usize, progress: &[AtomicU64], what: &str) {
    let start = Instant::now();
    let mut last = Instant::now();
    for (i, w) in workers.iter().enumerate() {
        loop {
            match w.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l == word => break,
                Ok(l) if l.starts_with("FAILED") => panic!("worker {i}: {l}"),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => panic!("worker {i} ended before {word}"),
            }
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let n: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                eprintln!(
                    "[loadgen] {what}: {n}/{total} ({:.0}/s) ...",
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
    }
}

fn tell(workers: &mut [Worker], line: &str) {
    for w in workers {
        let _ = writeln!(w.stdin, "{line}");
        let _ = w.stdin.flush();
    }
}

fn results(workers: Vec<Worker>) -> Vec<WorkerResult> {
    workers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            let r = loop {
                match w.lines.recv() {
                    Ok(l) => {
                        if let Some(json) = l.strip_prefix("RESULT ") {
                            break serde_json::from_str(json)
                                .unwrap_or_else(|e| panic!("worker {i} result: {e}"));
                        }
                    }
                    Err(_) => panic!("worker {i} ended without a result"),
                }
            };
            let _ = w.child.wait();
            r
        })
        .collect()
}

/// The writer's connection, on its own runtime thread: puts `values()` to keys.
fn writer_conn(args: &Args) -> (tokio::runtime::Runtime, Ws) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let ws = rt
        .block_on(Ws::connect(
            args.target,
            "/ws",
            Some("ringline.v1.json"),
            None,
        ))
        .unwrap_or_else(|e| panic!("writer: {e}"));
    (rt, ws)
}

/// Put `count` sequenced values to every key, each acknowledged before the next.
fn write_sequence(args: &Args, count: u64) {
    let (rt, mut ws) = writer_conn(args);
    rt.block_on(async {
        for seq in 1..=count {
            for k in 0..args.keys {
                let put = format!(
                    r#"{{"op":"put","id":{seq},"key":"{}","value":"{}"}}"#,
                    key(k),
                    value(seq, 0)
                );
                ws.send_text(&put).await.unwrap_or_else(|e| panic!("{e}"));
                let ack = ws.recv_text().await.unwrap_or_default();
                assert!(ack.contains(r#""op":"ok""#), "put refused: {ack}");
            }
        }
    });
}

/// The id of an answer (`ok`, or `error` when `error`).
fn answer_id(text: &str, error: bool) -> Option<usize> {
    let op = if error {
        r#""op":"error""#
    } else {
        r#""op":"ok""#
    };
    if !text.contains(op) {
        return None;
    }
    let at = text.find(r#""id":"#)? + 5;
    let digits = text.get(at..)?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits.get(..end)?.parse().ok()
}

/// Ids of the writer's probes: an `unsub` of a subscription it never made, answered
/// `error` by the edge alone (no store on the way).
const PROBE_IDS: usize = 1 << 40;

/// What the writer saw: how many writes went, each one's put → `ok` time (µs), and
/// each probe's time to its answer (µs): what a client's request waits while the edge
/// fans changes out.
struct Written {
    sent: u64,
    answered: Histogram<u64>,
    probed: Histogram<u64>,
}

/// Put at `args.rate` per second for `secs`, round robin over the keys, each put
/// followed by a probe.
fn write_steady(args: &Args, secs: f64) -> Written {
    let (rt, mut ws) = writer_conn(args);
    rt.block_on(async move {
        let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        let start = tokio::time::Instant::now();
        let mut sent = 0u64;
        let mut sent_at: Vec<Instant> = Vec::new();
        let (mut answered, mut probed) = (histogram(), histogram());
        let end = start + Duration::from_secs_f64(secs);
        loop {
            let due = start + interval.mul_f64(sent as f64);
            if due >= end {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    let (op, k) = if args.broadcast {
                        ("pub", "@all".to_owned())
                    } else {
                        ("put", key(sent as usize % args.keys))
                    };
                    let put = format!(
                        r#"{{"op":"{op}","id":{sent},"key":"{k}","value":{}}}"#,
                        value_literal(sent, args.value_size, args.value_json)
                    );
                    let probe = format!(r#"{{"op":"unsub","id":{}}}"#, PROBE_IDS + sent as usize);
                    sent_at.push(Instant::now());
                    ws.send_text(&put).await.unwrap_or_else(|e| panic!("{e}"));
                    ws.send_text(&probe).await.unwrap_or_else(|e| panic!("{e}"));
                    sent += 1;
                }
                alive = ws.recv(|m| {
                    if let Msg::Text(t) = m {
                        let at = |id: usize| sent_at.get(id).map(|at| at.elapsed().as_micros() as u64);
                        if let Some(us) = answer_id(t, false).and_then(at) {
                            let _ = answered.record(us);
                        } else if let Some(us) = answer_id(t, true)
                            .and_then(|id| id.checked_sub(PROBE_IDS))
                            .and_then(at)
                        {
                            let _ = probed.record(us);
                        }
                    }
                    true
                }) => assert!(alive, "writer connection lost"),
            }
        }
        Written { sent, answered, probed }
    })
}

fn parent(args: &Args) {
    let procs = args
        .procs
        .unwrap_or_else(|| args.conns.div_ceil(15_000))
        .max(1);
    eprintln!(
        "[loadgen] {:?}: {} connections to {}{} from {procs} worker process(es) ...",
        args.mode, args.conns, args.target, args.path
    );
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..procs).map(|_| AtomicU64::new(0)).collect());
    // Memory before any connection: the edges' resident bytes and the host's slab.
    let rss = |pids: &[u32]| pids.iter().map(|&p| rss_bytes(p)).sum::<u64>();
    let before = (rss(&args.edge_pid), slab_bytes());
    let mut workers = spawn_workers(procs, &progress);
    let what = match args.mode {
        Mode::Connect => "connected",
        _ => "subscribed",
    };
    wait_all(&workers, "READY", args.conns, &progress, what);
    let edge_cpu =
        |pids: &[u32]| -> f64 { pids.iter().map(|p| benches::cpu_secs(&p.to_string())).sum() };
    let mut summary: Vec<(String, String)> = Vec::new();
    let mut edge_secs = None;
    match args.mode {
        Mode::Connect => {
            eprintln!(
                "[loadgen] all {} open; holding {} s ...",
                args.conns, args.hold
            );
            std::thread::sleep(Duration::from_secs(args.hold));
            if let Some(channel) = &args.presence {
                presence(args, channel, &mut workers, &mut summary);
            }
            if !args.edge_pid.is_empty() {
                let (rss1, slab1) = (rss(&args.edge_pid), slab_bytes());
                let n = args.conns.max(1) as f64;
                summary.push((
                    "**edge user space per connection** (growth of the edges' resident memory)"
                        .into(),
                    format!("**{:.0} B**", rss1.saturating_sub(before.0) as f64 / n),
                ));
                summary.push((
                    "kernel slab per connection (host-wide growth: both ends)".into(),
                    format!("{:.0} B", slab1.saturating_sub(before.1) as f64 / n),
                ));
                summary.push((
                    "edges' resident memory at the end of the hold".into(),
                    format!("{:.1} MiB", rss1 as f64 / f64::from(1 << 20)),
                ));
            }
            tell(&mut workers, "GO");
        }
        Mode::Fanout => {
            let warm = 1.0;
            tell(&mut workers, &format!("GO {}", now_us()));
            eprintln!(
                "[loadgen] writing {}/s over {} key(s) for 1 + {} s ...",
                args.rate, args.keys, args.seconds
            );
            let cpu0 = Arc::new(Mutex::new(0.0));
            let pids = args.edge_pid.clone();
            let (c0, p0) = (Arc::clone(&cpu0), pids.clone());
            // The edges' CPU over the measured window (after the warm-up).
            let sampler = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs_f64(warm));
                if let Ok(mut c) = c0.lock() {
                    *c = edge_cpu(&p0);
                }
            });
            let w = write_steady(args, warm + args.seconds as f64);
            let _ = sampler.join();
            if !pids.is_empty() {
                let start = cpu0.lock().map_or(0.0, |c| *c);
                edge_secs = Some(edge_cpu(&pids) - start);
            }
            summary.push(("writes sent".into(), w.sent.to_string()));
            let pct = |h: &Histogram<u64>| {
                let q = |p: f64| h.value_at_quantile(p);
                format!("{} / {} / {} µs", q(0.5), q(0.99), h.max())
            };
            summary.push((
                "writer's put → ok p50 / p99 / max (through the store)".into(),
                pct(&w.answered),
            ));
            summary.push((
                "writer's probe → answer p50 / p99 / max (the edge alone)".into(),
                pct(&w.probed),
            ));
        }
        Mode::Resume => {
            tell(&mut workers, "DROP");
            wait_all(&workers, "DROPPED", args.conns, &progress, "dropped");
            eprintln!(
                "[loadgen] writing {} changes to each of {} key(s) while they are away ...",
                args.missed, args.keys
            );
            write_sequence(args, args.missed);
            eprintln!("[loadgen] all {} come back at once ...", args.conns);
            tell(&mut workers, &format!("GO {}", now_us()));
        }
    }
    let rs = results(workers);
    report(args, procs, &rs, edge_secs, summary);
}

/// `--presence`: every connection joins `channel` (timed, with the edges' and the
/// store's memory before and after); then `count_only` queries and a full paged
/// listing are timed.
fn presence(
    args: &Args,
    channel: &str,
    workers: &mut [Worker],
    summary: &mut Vec<(String, String)>,
) {
    let rss = |pids: &[u32]| pids.iter().map(|&p| rss_bytes(p)).sum::<u64>();
    let store: Vec<u32> = args.store_pid.into_iter().collect();
    let before = (rss(&args.edge_pid), rss(&store));
    eprintln!("[loadgen] all {} join {channel} ...", args.conns);
    let t = Instant::now();
    tell(workers, "JOIN");
    for (i, w) in workers.iter().enumerate() {
        loop {
            match w.lines.recv() {
                Ok(l) if l == "JOINED" => break,
                Ok(_) => {}
                Err(_) => panic!("worker {i} ended before joining"),
            }
        }
        eprintln!(
            "[loadgen] worker {i} joined ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }
    let secs = t.elapsed().as_secs_f64();
    let n = args.conns.max(1) as f64;
    summary.push((
        "**joins per second** (all connections join at once)".into(),
        format!("**{:.0}** ({} in {secs:.2} s)", n / secs, args.conns),
    ));
    // Let the store's commits and the edges' bookkeeping settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let after = (rss(&args.edge_pid), rss(&store));
    if !args.edge_pid.is_empty() {
        let per = after.0.saturating_sub(before.0) as f64 / n;
        summary.push(("edges' memory per member".into(), format!("{per:.0} B")));
    }
    if !store.is_empty() {
        let per = after.1.saturating_sub(before.1) as f64 / n;
        summary.push(("store's memory per member".into(), format!("{per:.0} B")));
    }
    let (count, listing) = presence_queries(args, channel);
    summary.push(("`count_only` answer, p50 / p99 of 200".into(), count));
    summary.push(("full paged listing (1,000 per page)".into(), listing));
}

/// Time 200 `count_only` queries and one full listing of `channel`, from one
/// connection: (p50 / p99 of the queries, the listing's time, pages and members).
fn presence_queries(args: &Args, channel: &str) -> (String, String) {
    let (rt, mut ws) = writer_conn(args);
    rt.block_on(async move {
        let mut h = histogram();
        for i in 0..200u64 {
            let q =
                format!(r#"{{"op":"presence","id":{i},"channel":"{channel}","count_only":true}}"#);
            let t = Instant::now();
            ws.send_text(&q).await.unwrap_or_else(|e| panic!("{e}"));
            let a = ws.recv_text().await.unwrap_or_default();
            assert!(
                a.contains(&format!(r#""total":{}"#, args.conns)),
                "count: {a}"
            );
            let _ = h.record((t.elapsed().as_micros() as u64).max(1));
        }
        let count = format!(
            "{:.2} / {:.2} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
        let t = Instant::now();
        let (mut cursor, mut pages, mut members) = (None::<String>, 0, 0usize);
        loop {
            let after = cursor
                .as_deref()
                .map(|c| format!(r#","cursor":{}"#, serde_json::Value::from(c)))
                .unwrap_or_default();
            let q = format!(r#"{{"op":"presence","id":1,"channel":"{channel}"{after}}}"#);
            ws.send_text(&q).await.unwrap_or_else(|e| panic!("{e}"));
            let a = ws.recv_text().await.unwrap_or_default();
            let v: serde_json::Value =
                serde_json::from_str(&a).unwrap_or_else(|e| panic!("{e}: {a}"));
            pages += 1;
            members += v["members"].as_array().map_or(0, |g| {
                g.iter()
                    .map(|m| m["metas"].as_array().map_or(0, Vec::len))
                    .sum()
            });
            match v["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(members, args.conns, "the listing holds every member");
        let listing = format!(
            "{:.0} ms ({pages} pages, {members} members)",
            t.elapsed().as_secs_f64() * 1000.0
        );
        (count, listing)
    })
}

fn report(
    args: &Args,
    procs: usize,
    rs: &[WorkerResult],
    edge_secs: Option<f64>,
    mut rows: Vec<(String, String)>,
) {
    let sum = |f: fn(&WorkerResult) -> u64| rs.iter().map(f).sum::<u64>();
    let mut hs = histogram();
    let mut lat = histogram();
    for r in rs {
        merge(&mut hs, &r.handshake_us);
        merge(&mut lat, &r.latency_us);
    }
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    rows.insert(0, ("worker processes".into(), procs.to_string()));
    rows.push(("connected".into(), sum(|r| r.connected).to_string()));
    rows.push(("failed".into(), sum(|r| r.failed).to_string()));
    if args.mode == Mode::Connect {
        rows.push((
            "**still open at the end of the hold**".into(),
            format!("**{}**", sum(|r| r.connected) - sum(|r| r.dropped)),
        ));
    }
    let connect_secs = rs.iter().map(|r| r.connect_secs).fold(0.0, f64::max);
    rows.push((
        "connect rate".into(),
        format!(
            "{:.0} /s",
            sum(|r| r.connected) as f64 / connect_secs.max(1e-9)
        ),
    ));
    rows.push((
        "handshake p50 / p99 / max".into(),
        format!("{} / {} / {} µs", q(&hs, 0.5), q(&hs, 0.99), hs.max()),
    ));
    if args.mode == Mode::Fanout {
        let d = sum(|r| r.deliveries);
        let offered = args.rate as f64 * args.seconds as f64 * sum(|r| r.connected) as f64
            / args.keys.max(1) as f64;
        rows.push((
            "deliveries (measured window) / offered".into(),
            format!(
                "{d} / {offered:.0} ({:.0} %)",
                100.0 * d as f64 / offered.max(1.0)
            ),
        ));
        rows.push((
            "**deliveries/s**".into(),
            format!("**{:.0}**", d as f64 / args.seconds as f64),
        ));
        let (bytes, changes) = (sum(|r| r.rx_bytes), sum(|r| r.rx_changes));
        rows.push((
            format!(
                "**bytes on the wire per delivery** ({} B values{}{})",
                args.value_size,
                if args.binary {
                    ", ringline.v1.fb"
                } else if args.compact {
                    ", ringline.v2.json"
                } else {
                    ""
                },
                if args.deflate {
                    ", compression offered"
                } else {
                    ""
                }
            ),
            format!("**{:.0}**", bytes as f64 / changes.max(1) as f64),
        ));
        if let Some(e) = edge_secs {
            rows.push(("edge CPU in the window".into(), format!("{e:.2} s")));
            rows.push((
                "**deliveries per edge CPU-second**".into(),
                format!("**{:.0}**", d as f64 / e.max(1e-9)),
            ));
        }
        rows.push((
            "write → receive p50 / p99 / p99.9 / max".into(),
            format!(
                "{} / {} / {} / {} µs",
                q(&lat, 0.5),
                q(&lat, 0.99),
                q(&lat, 0.999),
                lat.max()
            ),
        ));
    }
    if args.mode == Mode::Resume {
        rows.push(("caught up".into(), sum(|r| r.caught_up).to_string()));
        rows.push((
            "with a gap, duplicate or reorder".into(),
            sum(|r| r.out_of_order).to_string(),
        ));
        rows.push((
            "reset instead of resumed".into(),
            sum(|r| r.resets).to_string(),
        ));
        rows.push((
            format!("not caught up within {} s", args.timeout),
            sum(|r| r.timed_out).to_string(),
        ));
        let last = rs.iter().map(|r| r.catch_up_us).max().unwrap_or(0);
        rows.push((
            "**last client caught up after**".into(),
            format!("**{:.0} ms**", last as f64 / 1e3),
        ));
    }
    let busiest = rs
        .iter()
        .map(|r| r.cpu_secs / r.wall_secs.max(1e-9))
        .fold(0.0, f64::max);
    rows.push((
        "busiest worker's CPU (of one core, whole run)".into(),
        format!("{:.0} %", busiest * 100.0),
    ));
    if args.mode == Mode::Fanout {
        let window = rs.iter().map(|r| r.window_cpu_secs).fold(0.0, f64::max);
        rows.push((
            "busiest worker's CPU in the measured window (of one core; near 100 %: the generator is the limit)".into(),
            format!("{:.0} %", 100.0 * window / args.seconds.max(1) as f64),
        ));
    }
    println!(
        "\n| loadgen {:?} → {}{} | value |",
        args.mode, args.target, args.path
    );
    println!("|---|---:|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    if busiest > 0.9 {
        println!(
            "\nA worker used over 90 % of a core: the generator may be the bottleneck (raise --procs)."
        );
    }
    if let Some(path) = &args.json {
        let obj: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v)| {
                (
                    k.trim_matches('*').to_owned(),
                    serde_json::Value::String(v.trim_matches('*').to_owned()),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&obj).unwrap_or_default();
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

// ---------------------------------------------------------------------------------
// A worker: its share of the connections, driven by lines on stdin.
// ---------------------------------------------------------------------------------

/// The source address of connection `n` of worker `worker` when the target is on
/// loopback: 127.(1 + w / 250).(w % 250).(1 + n % 250), 250 addresses per worker, so
/// that ports never run short (not even with an earlier run's still in TIME_WAIT).
fn source(args: &Args, worker: usize, n: usize) -> Option<IpAddr> {
    (!args.no_sources && args.target.ip().is_loopback()).then(|| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            (1 + worker / 250) as u8,
            (worker % 250) as u8,
            (1 + n % 250) as u8,
        ))
    })
}

/// Lines from the parent, on a thread of their own.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn worker(args: &Args, index: usize, procs: usize) {
    let share = args.conns / procs + usize::from(index < args.conns % procs);
    let first = (0..index)
        .map(|i| args.conns / procs + usize::from(i < args.conns % procs))
        .sum::<usize>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut r = rt.block_on(work(args, index, first, share));
    r.cpu_secs = benches::cpu_secs("self");
    r.wall_secs = started.elapsed().as_secs_f64();
    say(&format!(
        "RESULT {}",
        serde_json::to_string(&r).unwrap_or_default()
    ));
}

async fn work(args: &Args, index: usize, first: usize, share: usize) -> WorkerResult {
    let local = tokio::task::LocalSet::new();
    local.run_until(work_local(args, index, first, share)).await
}

/// One open connection: its number, key, socket and the token of its snapshot.
struct Conn {
    n: usize,
    k: usize,
    ws: Ws,
    token: String,
}

/// Connect (and subscribe, unless `connect` mode); the connection and its token.
async fn open(args: &Args, index: usize, n: usize) -> Option<(Ws, String)> {
    let ws_proto = args.mode != Mode::Connect || args.subscribe || args.presence.is_some();
    let form = if args.binary {
        "ringline.v1.fb"
    } else if args.compact {
        "ringline.v2.json"
    } else {
        "ringline.v1.json"
    };
    let protocol = ws_proto.then_some(form);
    let sub = ws_proto && !args.broadcast;
    let src = source(args, index, n);
    let mut ws = Ws::connect_offering(args.target, &args.path, protocol, src, args.deflate)
        .await
        .ok()?;
    if let Some(jwt) = auth_token(args, n) {
        ws.send_text(&format!(r#"{{"op":"auth","id":0,"token":"{jwt}"}}"#))
            .await
            .ok()?;
        let ok = ws.recv_text().await?;
        if !ok.starts_with(r#"{"op":"ok""#) {
            eprintln!("[loadgen] auth refused: {ok}");
            return None;
        }
    }
    let mut token = String::new();
    if sub && args.binary {
        // The binary form: the subscription as flatbuffers, its snapshot skipped.
        let k = key(n % args.keys.max(1));
        let mut req = Vec::new();
        wire::client::fb::encode_request(
            &wire::client::Request::Sub {
                id: 1,
                target: wire::client::Target::Key(k.as_str().into()),
                from: None,
                mode: wire::client::SubMode::Stream,
                durable: None,
            },
            &mut req,
        );
        ws.send_binary(&req).await.ok()?;
        let mut snapshot = false;
        while !snapshot {
            if !ws
                .recv(|m| {
                    snapshot = matches!(m, Msg::Binary(_));
                    !snapshot
                })
                .await
            {
                return None;
            }
        }
    } else if sub {
        let k = n % args.keys.max(1);
        ws.send_text(&format!(r#"{{"op":"sub","id":1,"key":"{}"}}"#, key(k)))
            .await
            .ok()?;
        let snap = ws.recv_text().await?;
        token = snap
            .split_once(r#""token":""#)
            .and_then(|(_, t)| t.split('"').next())
            .unwrap_or_default()
            .to_owned();
    }
    Some((ws, token))
}

/// Connection `n`'s own token, if `--auth-secret-file` is given.
fn auth_token(args: &Args, n: usize) -> Option<String> {
    use std::sync::OnceLock;
    static KEY: OnceLock<Option<jsonwebtoken::EncodingKey>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let path = args.auth_secret_file.as_ref()?;
        let secret = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        jsonwebtoken::EncodingKey::from_secret(secret.trim_ascii_end()).ok()
    });
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": format!("lg-user-{n}"), "exp": now + 24 * 3600, "iat": now,
        "rl": {
            "read": ["user/{sub}/*", "lg/*"],
            "write": ["user/{sub}/inbox"],
            "presence": ["bench/*"],
        },
    });
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key.as_ref()?).ok()
}

/// Open `share` connections, at most `concurrency` attempts at a time (subscribing in
/// `fanout` and `resume`), then follow the parent's lines. In `connect` mode each
/// connection is read from the moment it is open (the server's pings are answered),
/// and one that ends before the hold does counts as dropped.
async fn work_local(args: &Args, index: usize, first: usize, share: usize) -> WorkerResult {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    let mut lines = stdin_lines();
    let hold = args.mode == Mode::Connect;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Rc::new(Cell::new(0u64));
    let dropped = Rc::new(Cell::new(0u64));
    let hs = Rc::new(RefCell::new(histogram()));
    let conns: Rc<RefCell<Vec<Conn>>> = Rc::new(RefCell::new(Vec::with_capacity(share)));
    let permits = Rc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    // `--presence`: the held connections join when the parent says JOIN.
    let (join_tx, join_rx) = tokio::sync::watch::channel(false);
    let joined = Arc::new(AtomicU64::new(0));
    let ticker = {
        let opened = Arc::clone(&opened);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                say(&format!("PROGRESS {}", opened.load(Ordering::Relaxed)));
            }
        })
    };
    let t0 = Instant::now();
    let args_rc = Rc::new(args.clone());
    let tasks: Vec<_> = (first..first + share)
        .map(|n| {
            let (args, opened, failed, dropped, hs, conns, permits) = (
                Rc::clone(&args_rc),
                Arc::clone(&opened),
                Rc::clone(&failed),
                Rc::clone(&dropped),
                Rc::clone(&hs),
                Rc::clone(&conns),
                Rc::clone(&permits),
            );
            let (mut join_rx, joined) = (join_rx.clone(), Arc::clone(&joined));
            tokio::task::spawn_local(async move {
                let permit = permits.acquire().await;
                let t = Instant::now();
                let Some((mut ws, token)) = open(&args, index, n).await else {
                    failed.set(failed.get() + 1);
                    return;
                };
                let _ = hs
                    .borrow_mut()
                    .record((t.elapsed().as_micros() as u64).max(1));
                opened.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                if hold {
                    if let Some(channel) = &args.presence {
                        if join_rx.wait_for(|&go| go).await.is_err()
                            || !join(&mut ws, channel).await
                        {
                            dropped.set(dropped.get() + 1);
                            return;
                        }
                        joined.fetch_add(1, Ordering::Relaxed);
                    }
                    while ws.recv(|_| true).await {}
                    dropped.set(dropped.get() + 1);
                } else {
                    let k = n % args.keys.max(1);
                    conns.borrow_mut().push(Conn { n, k, ws, token });
                }
            })
        })
        .collect();
    while opened.load(Ordering::Relaxed) + failed.get() < share as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut r = WorkerResult {
        connect_secs: t0.elapsed().as_secs_f64(),
        connected: opened.load(Ordering::Relaxed),
        failed: failed.get(),
        handshake_us: pairs(&hs.borrow()),
        ..WorkerResult::default()
    };
    say("READY");
    let conns = std::mem::take(&mut *conns.borrow_mut());
    match args.mode {
        Mode::Connect => {
            if args.presence.is_some() {
                let _ = lines.recv().await; // JOIN
                let _ = join_tx.send(true);
                while joined.load(Ordering::Relaxed) + dropped.get() < r.connected {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                say("JOINED");
            }
            let _ = lines.recv().await;
            r.dropped = dropped.get();
        }
        Mode::Fanout => fanout(args, &mut lines, conns, &mut r).await,
        Mode::Resume => resume(args, index, &mut lines, conns, &opened, &mut r).await,
    }
    for t in tasks {
        t.abort();
    }
    ticker.abort();
    r
}

/// Join `channel` on `ws` and wait for the answer; whether it was `ok`.
async fn join(ws: &mut Ws, channel: &str) -> bool {
    let msg = format!(r#"{{"op":"join","id":2,"channel":"{channel}","meta":{{"n":1}}}}"#);
    if ws.send_text(&msg).await.is_err() {
        return false;
    }
    loop {
        match ws.recv_text().await {
            Some(t) if t.starts_with(r#"{"op":"ok","id":2"#) => return true,
            Some(t) if t.starts_with(r#"{"op":"error""#) => {
                eprintln!("[loadgen] join refused: {t}");
                return false;
            }
            Some(_) => {}
            None => return false,
        }
    }
}

async fn fanout(
    args: &Args,
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    conns: Vec<Conn>,
    r: &mut WorkerResult,
) {
    let start = go_time(lines.recv().await);
    let from = start + 1_000_000;
    let until = from + args.seconds * 1_000_000;
    // The connections' tasks share this thread: plain shared cells, no locks. One
    // histogram per process, not per connection: a histogram is tens of KiB, and
    // thousands of them cost the generator gigabytes and the CPU to fault them in.
    let hist = std::rc::Rc::new(std::cell::RefCell::new(histogram()));
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    // This process's own CPU over the window: a generator that cannot keep up shows
    // here, not only as missing deliveries.
    let window_cpu = std::rc::Rc::new(std::cell::Cell::new(0.0f64));
    let wc = std::rc::Rc::clone(&window_cpu);
    let meter = tokio::task::spawn_local(async move {
        let at = |t: u64| {
            tokio::time::Instant::now() + Duration::from_micros(t.saturating_sub(now_us()))
        };
        tokio::time::sleep_until(at(from)).await;
        let c0 = benches::cpu_secs("self");
        tokio::time::sleep_until(at(until)).await;
        wc.set(benches::cpu_secs("self") - c0);
    });
    // Bytes read and changes carried, over every connection: bytes on the wire per
    // delivery (compressed ones as sent).
    let rx = std::rc::Rc::new(std::cell::Cell::new((0u64, 0u64)));
    let mut tasks = Vec::new();
    for Conn { mut ws, .. } in conns {
        let (hist, count) = (std::rc::Rc::clone(&hist), std::rc::Rc::clone(&count));
        let rx = std::rc::Rc::clone(&rx);
        tasks.push(tokio::task::spawn_local(async move {
            let mut n = 0u64;
            // Stop a little after the window even if nothing more arrives.
            let stop_at = tokio::time::Instant::now()
                + Duration::from_micros(until.saturating_sub(now_us()) + 200_000);
            loop {
                let mut past = false;
                let (bytes0, mut changes) = (ws.received(), 0u64);
                let received = tokio::time::timeout_at(
                    stop_at,
                    ws.recv(|m| {
                        let now = now_us();
                        let sent = match m {
                            Msg::Text(t) => change_value(t).and_then(parse_value),
                            Msg::Binary(b) => binary_change_value(b).and_then(parse_value),
                        };
                        changes += u64::from(sent.is_some());
                        if let Some((sent, _)) = sent
                            && now >= from
                            && now < until
                        {
                            n += 1;
                            let _ = hist.borrow_mut().record(now.saturating_sub(sent).max(1));
                        }
                        past = now >= until;
                        true
                    }),
                )
                .await;
                let (b, c) = rx.get();
                rx.set((b + ws.received() - bytes0, c + changes));
                if !matches!(received, Ok(true)) || past {
                    break;
                }
            }
            count.set(count.get() + n);
        }));
    }
    // Every connection stops at its first message past the window; stop waiting a
    // little after it in any case.
    let deadline = Duration::from_micros((until + 2_000_000).saturating_sub(now_us()));
    let _ = tokio::time::timeout(deadline, async {
        for t in tasks.iter_mut() {
            let _ = t.await;
        }
    })
    .await;
    for t in &tasks {
        t.abort();
    }
    let _ = meter.await;
    r.window_cpu_secs = window_cpu.get();
    r.deliveries = count.get();
    (r.rx_bytes, r.rx_changes) = rx.get();
    r.latency_us = pairs(&hist.borrow());
}

async fn resume(
    args: &Args,
    index: usize,
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    conns: Vec<Conn>,
    opened: &AtomicU64,
    r: &mut WorkerResult,
) {
    let _ = lines.recv().await; // DROP
    let saved: Vec<(usize, usize, String)> =
        conns.into_iter().map(|c| (c.n, c.k, c.token)).collect();
    opened.store(0, Ordering::Relaxed);
    say("DROPPED");
    let go_us = go_time(lines.recv().await);
    let missed = args.missed;
    // As many attempts in flight as when they first connected; each client's whole
    // catch-up is bounded, so a stuck one is reported rather than waited for.
    let permits = std::rc::Rc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut tasks = Vec::new();
    for (n, k, token) in saved {
        let (path, target) = (args.path.clone(), args.target);
        let src = source(args, index, n);
        let permits = std::rc::Rc::clone(&permits);
        tasks.push(tokio::task::spawn_local(tokio::time::timeout_at(
            deadline,
            async move {
                // (caught up at µs, in order, reset)
                let permit = permits.acquire().await;
                let mut ws = Ws::connect(target, &path, Some("ringline.v1.json"), src)
                    .await
                    .ok()?;
                ws.send_text(&format!(
                    r#"{{"op":"sub","id":1,"key":"{}","from":"{token}"}}"#,
                    key(k)
                ))
                .await
                .ok()?;
                let first = ws.recv_text().await?;
                drop(permit);
                let reset = first.contains(r#""op":"reset""#);
                let mut next = 1u64;
                let mut in_order = true;
                while next <= missed {
                    let mut done = false;
                    let alive = ws
                        .recv(|m| {
                            if let Msg::Text(t) = m
                                && let Some((_, seq)) = change_value(t).and_then(parse_value)
                            {
                                in_order &= seq == next;
                                next = seq + 1;
                                done = next > missed;
                            }
                            !done
                        })
                        .await;
                    if !alive || reset {
                        break;
                    }
                }
                Some((now_us(), in_order && next == missed + 1, reset))
            },
        )));
    }
    for t in tasks {
        let outcome = match t.await {
            Ok(Ok(o)) => o,
            Ok(Err(_elapsed)) => {
                r.timed_out += 1;
                continue;
            }
            Err(_) => None,
        };
        match outcome {
            Some((at, ok, reset)) => {
                r.resets += u64::from(reset);
                if ok {
                    r.caught_up += 1;
                } else if !reset {
                    r.out_of_order += 1;
                }
                r.catch_up_us = r.catch_up_us.max(at.saturating_sub(go_us));
            }
            None => r.failed += 1,
        }
    }
}

fn main() {
    let args = Args::parse();
    match args.worker {
        Some(i) => worker(&args, i, args.procs.unwrap_or(1).max(1)),
        None => parent(&args),
    }
}
