//! Failover time: two stores, two edges, HAProxy in front. `--clients` clients
//! connect to edge 1 and each subscribes to one key (keys on both stores) while a
//! writer on edge 2 keeps writing a rising counter to every key. Edge 1 is killed with
//! SIGKILL; every client reconnects through HAProxy with its last token and counts as
//! caught up when it has received a value written after the kill. Prints the time from
//! the kill to each client being caught up (median, p99, last).
//!
//! `cargo run --release -p benches --bin failover -- --clients 1000`
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
}

/// The token and value of a JSON message (crude, but the edge's JSON is regular).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.split(&format!("\"{name}\":")).nth(1)?;
    let rest = rest.trim_start_matches('"');
    rest.split(['"', ',', '}']).next()
}

fn main() {
    let args = Args::parse();
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
    let killed_at_value = Arc::new(AtomicU64::new(u64::MAX));
    let ready = Arc::new(Barrier::new(args.clients + 1));
    let t0: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    eprintln!(
        "[failover] {} clients subscribing on edge 1 ...",
        args.clients
    );
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let key = keys[i % keys.len()].clone();
            let (killed_at_value, ready, t0) = (
                Arc::clone(&killed_at_value),
                Arc::clone(&ready),
                Arc::clone(&t0),
            );
            std::thread::spawn(move || client(victim, front, &key, &killed_at_value, &ready, &t0))
        })
        .collect();
    ready.wait();
    // The writer: a rising counter to every key, every 5 ms, on the surviving edge.
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (counter, stop, keys) = (Arc::clone(&counter), Arc::clone(&stop), keys.clone());
        std::thread::spawn(move || {
            let mut w = WsClient::connect(survivor, "/ws", Some("ringline.v1.json"))
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
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("[failover] SIGKILL edge 1 ...");
    killed_at_value.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
    let _ = t0.set(Instant::now());
    let pid = c.edges[0].0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    let mut times: Vec<Duration> = clients
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| panic!("a client failed")))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "| failover: SIGKILL of the edge holding {} clients → each caught up on the other edge through HAProxy | value |",
        args.clients
    );
    println!("|---|---:|");
    println!("| median | {:.0} ms |", at(0.5).as_secs_f64() * 1e3);
    println!("| p99 | {:.0} ms |", at(0.99).as_secs_f64() * 1e3);
    println!(
        "| **last client caught up** | **{:.0} ms** |",
        at(1.0).as_secs_f64() * 1e3
    );
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
