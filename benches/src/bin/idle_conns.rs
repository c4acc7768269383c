//! Idle memory per connection: starts a real `edge` (one worker), opens `--conns`
//! WebSocket connections to it from this process and leaves them idle, then reports
//! the edge's resident memory growth per connection (user space) and the kernel's
//! slab growth per connection (both ends of each loopback connection live on this
//! host, so the slab figure covers a client socket and a server socket).
//!
//! With `--path /ws` a real `store` is started behind the edge and every connection
//! subscribes to one key (`--keys` distinct keys, default one per connection: the
//! worst case, one internal watch each) and waits for its snapshot before the next
//! connection opens.
//!
//! With `--tls ecdsa|rsa` the edge serves TLS only (a throw-away certificate) and the
//! connections are `wss://` on `/echo`: memory per idle TLS connection, to compare
//! with the same run without it.
//!
//! `cargo run --release -p benches --bin idle_conns -- --conns 19000 [--path /ws]`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use benches::ws::WsClient;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Connections to hold open.
    #[arg(long, default_value_t = 19_000)]
    conns: usize,
    /// WebSocket path to connect to.
    #[arg(long, default_value = "/echo")]
    path: String,
    /// The edge binary [default: next to this one].
    #[arg(long)]
    edge: Option<PathBuf>,
    /// The edge's `--recv-mode` (`multishot` or `poll`).
    #[arg(long, default_value = "multishot")]
    recv_mode: String,
    /// With `--path /ws`: distinct keys the connections subscribe to (0: one per
    /// connection).
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// Connect over TLS with a certificate of this key type (`ecdsa` or `rsa`); `/echo`
    /// only.
    #[arg(long, value_name = "KEY")]
    tls: Option<String>,
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Total bytes in use in the kernel's slab caches (needs root to read).
fn slab_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let mut total = 0u64;
    for l in s.lines().skip(2) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(active), Some(size)) = (f.get(1), f.get(3)) else {
            continue;
        };
        total += active.parse::<u64>().ok()? * size.parse::<u64>().ok()?;
    }
    Some(total)
}

fn start_edge(
    bin: &PathBuf,
    mode: &str,
    cluster: Option<&PathBuf>,
    tls: Option<&(PathBuf, PathBuf)>,
) -> (Child, SocketAddr) {
    let mut cmd = Command::new(bin);
    if let Some(c) = cluster {
        cmd.arg("--cluster").arg(c);
    }
    let mut field = "listen=";
    if let Some((cert, key)) = tls {
        cmd.args([
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-only",
            "true",
            "--tls-cert",
        ])
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
        field = "listen_tls=";
    }
    benches::spawn_listening_on(
        cmd.args(["--recv-mode", mode])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--pin",
                "false",
            ])
            .env("RUST_LOG", "warn,edge=info"),
        "edge listening",
        field,
    )
}

/// A held connection (held open, never read).
#[allow(dead_code)]
enum Held {
    Clear(WsClient),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

/// Progress every 2,000 connections.
fn report(i: usize, t: Instant) {
    if (i + 1).is_multiple_of(2000) {
        eprintln!(
            "[idle_conns] {} connections open ({:.1}s)",
            i + 1,
            t.elapsed().as_secs_f64()
        );
    }
}

/// The table: `keys` when subscribed, the connect rate, RSS and slab before and after.
fn print_figures(
    args: &Args,
    keys: Option<usize>,
    rate: f64,
    (rss0, rss1): (u64, u64),
    slab: (Option<u64>, Option<u64>),
) {
    let n = args.conns as f64;
    let user = (rss1.saturating_sub(rss0) * 1024) as f64 / n;
    println!("| figure | value |");
    println!("|---|---:|");
    let tls = args
        .tls
        .as_deref()
        .map_or(String::new(), |k| format!(", TLS ({k})"));
    println!(
        "| idle WebSocket connections held (`{}`, `--recv-mode {}`{tls}) | {} |",
        args.path, args.recv_mode, args.conns
    );
    if let Some(keys) = keys {
        println!("| each subscribed to one key; distinct keys | {keys} |");
    }
    println!("| connect + handshake rate, one blocking client thread | {rate:.0} /s |");
    println!("| edge RSS before → after | {rss0} KiB → {rss1} KiB |");
    println!("| **edge user-space memory per connection** | **{user:.0} B** |");
    match slab {
        (Some(a), Some(b)) => println!(
            "| kernel slab per connection (client + server socket, whole host) | {:.0} B |",
            b.saturating_sub(a) as f64 / n
        ),
        _ => println!("| kernel slab per connection | (needs root for /proc/slabinfo) |"),
    }
}

fn main() {
    let args = Args::parse();
    let bin = args.edge.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("edge")
    });
    let ws = args.path == "/ws";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let started = ws.then(|| {
        let (child, saddr) = benches::spawn_listening(
            Command::new(bin.with_file_name("store"))
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(dir.path().join("store"))
                .env("RUST_LOG", "warn,store=info"),
            "serving edge links",
        );
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            format!("version = 1\npartitions = 256\n[[store]]\nid = \"store-1\"\naddr = \"{saddr}\"\npartitions = [\"0-255\"]\n"),
        )
        .unwrap_or_else(|e| panic!("cluster file: {e}"));
        (child, path)
    });
    let (store, cluster) = started.unzip();
    assert!(!(ws && args.tls.is_some()), "--tls measures /echo only");
    let certs = args
        .tls
        .as_deref()
        .map(|key| benches::tls::make_cert(dir.path(), key));
    let (mut edge, addr) = start_edge(&bin, &args.recv_mode, cluster.as_ref(), certs.as_ref());
    if ws {
        benches::cluster::wait_links(addr);
    }
    let keys = if args.keys == 0 {
        args.conns
    } else {
        args.keys
    };
    let pid = edge.id();
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, slab0) = (rss_kib(pid), slab_bytes());
    let t = Instant::now();
    let mut held = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        if args.tls.is_some() {
            let s = benches::tls::connect_wss(addr, &args.path)
                .unwrap_or_else(|e| panic!("connect: {e}"));
            held.push(Held::Tls(Box::new(s)));
            report(i, t);
            continue;
        }
        let mut s =
            WsClient::connect(addr, &args.path, None).unwrap_or_else(|e| panic!("connect: {e}"));
        if ws {
            // Subscribe and wait for the snapshot.
            s.send_text(&format!(
                r#"{{"op":"sub","id":1,"key":"idle/{}"}}"#,
                i % keys
            ))
            .unwrap_or_else(|e| panic!("sub: {e}"));
            let snap = s.recv_text().unwrap_or_default();
            assert!(snap.contains("\"snapshot\""), "expected a snapshot: {snap}");
        }
        held.push(Held::Clear(s));
        report(i, t);
    }
    let rate = args.conns as f64 / t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, slab1) = (rss_kib(pid), slab_bytes());
    print_figures(
        &args,
        ws.then_some(keys),
        rate,
        (rss0, rss1),
        (slab0, slab1),
    );
    drop(held);
    let _ = edge.kill();
    let _ = edge.wait();
    if let Some(mut s) = store {
        let _ = s.kill();
        let _ = s.wait();
    }
}
