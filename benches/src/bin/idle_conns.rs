//! Idle memory per connection: starts a real `edge` (one worker), opens `--conns`
//! WebSocket connections to it from this process and leaves them idle, then reports
//! the edge's resident memory growth per connection (user space) and the kernel's
//! slab growth per connection (both ends of each loopback connection live on this
//! host, so the slab figure covers a client socket and a server socket).
//!
//! `cargo run --release -p benches --bin idle_conns -- --conns 19000`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

fn start_edge(bin: &PathBuf, mode: &str) -> (Child, SocketAddr) {
    benches::spawn_listening(
        Command::new(bin)
            .args(["--recv-mode", mode])
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
    )
}

fn connect(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            panic!("handshake failed: {}", String::from_utf8_lossy(&head));
        }
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
    s
}

fn main() {
    let args = Args::parse();
    let bin = args.edge.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("edge")
    });
    let (mut edge, addr) = start_edge(&bin, &args.recv_mode);
    let pid = edge.id();
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, slab0) = (rss_kib(pid), slab_bytes());
    let t = Instant::now();
    let mut held = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        held.push(connect(addr, &args.path));
        if (i + 1) % 2000 == 0 {
            eprintln!(
                "[idle_conns] {} connections open ({:.1}s)",
                i + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let rate = args.conns as f64 / t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, slab1) = (rss_kib(pid), slab_bytes());
    let n = args.conns as f64;
    let user = (rss1.saturating_sub(rss0) * 1024) as f64 / n;
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| idle WebSocket connections held (`{}`, `--recv-mode {}`) | {} |",
        args.path, args.recv_mode, args.conns
    );
    println!("| connect + handshake rate, one blocking client thread | {rate:.0} /s |");
    println!("| edge RSS before → after | {rss0} KiB → {rss1} KiB |");
    println!("| **edge user-space memory per connection** | **{user:.0} B** |");
    match (slab0, slab1) {
        (Some(a), Some(b)) => println!(
            "| kernel slab per connection (client + server socket, whole host) | {:.0} B |",
            b.saturating_sub(a) as f64 / n
        ),
        _ => println!("| kernel slab per connection | (needs root for /proc/slabinfo) |"),
    }
    drop(held);
    let _ = edge.kill();
    let _ = edge.wait();
}
