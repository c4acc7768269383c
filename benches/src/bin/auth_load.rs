//! Handshake rate with a JWT against without: three edges (auth off; auth required with
//! an HS256 secret; auth required with an ES256 key from a JWKS), and a fourth with
//! auth off and two workers (where connections are handed between workers' rings at
//! accept, so the figure shows what admission across workers costs), take `/ws` upgrades in
//! a closed loop (connect, upgrade with the token as `Authorization: Bearer`, read the
//! 101, reset), one edge at a time, rounds alternating. The client saturates its core
//! before the edge does, so the figure is upgrades per edge CPU-second (the edge's own
//! user + system time, `/proc/<pid>/stat`); medians over the rounds, and each auth
//! edge's ratio to the one without.
//!
//! Then, for the permission check's share of a request: the edge's CPU per `put`
//! (auth off; one client pipelining 64 puts at a time through an edge to two stores),
//! to compare with the check's own cost (`cargo bench -p benches --bench grant`).
//!
//! `cargo run --release -p benches --bin auth_load -- --rounds 7 --seconds 3`
//!
//! The ES256 key is the edge's test-only key (`edge/src/auth/testdata/ec.pem`).
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use benches::{cpu_secs, median, spawn_listening};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

#[derive(Parser)]
struct Args {
    /// Rounds (each runs every edge once, in a rotating order).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Seconds per edge per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The edge binary [default: next to this one].
    #[arg(long)]
    edge: Option<PathBuf>,
}

const SECRET: &str = "the benchmark's HS256 secret, 32 bytes or more";
const EC: &[u8] = include_bytes!("../../../edge/src/auth/testdata/ec.pem");

/// One edge under test.
struct Edge {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// The `Authorization` header line its clients send (empty: none).
    header: String,
    /// Upgrades per edge CPU-second, one per round.
    rates: Vec<f64>,
}

fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "bench-user", "exp": now + 3600, "iat": now,
        "rl": { "read": ["user/{sub}/*", "public/*"], "write": ["user/{sub}/inbox"] },
    });
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, key).unwrap_or_else(|e| panic!("sign: {e}"))
}

fn start(bin: &PathBuf, flags: &[&str]) -> (Child, SocketAddr) {
    let workers: &[&str] = if flags.contains(&"--workers") {
        &[]
    } else {
        &["--workers", "1"]
    };
    spawn_listening(
        Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--pin", "false"])
            .args(workers)
            .args(flags)
            // No store: upgrades need none, and its links retrying would only log.
            .env("RUST_LOG", "error,edge=info,edge::worker::links=error"),
        "edge listening",
    )
}

/// Upgrades in a closed loop for `secs`, from `threads` threads; how many completed.
fn hammer(addr: SocketAddr, header: &str, threads: usize, secs: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(secs);
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringline.v1.json\r\n{header}\r\n"
    );
    std::thread::scope(|s| {
        let hands: Vec<_> = (0..threads)
            .map(|_| {
                let req = req.as_bytes();
                s.spawn(move || {
                    let mut n = 0u64;
                    let mut buf = [0u8; 512];
                    while Instant::now() < end {
                        let Ok(mut c) = TcpStream::connect(addr) else {
                            continue;
                        };
                        // Reset on close: no TIME_WAIT piling up on either side.
                        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                        if c.write_all(req).is_err() {
                            continue;
                        }
                        let mut got = 0;
                        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                            match c.read(&mut buf[got..]) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => got += k,
                            }
                        }
                        assert!(
                            buf.starts_with(b"HTTP/1.1 101"),
                            "{}",
                            String::from_utf8_lossy(&buf[..got])
                        );
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hands.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// Edge CPU per `put`, in nanoseconds, one figure per round: one client keeps 64
/// puts in flight for `secs`.
fn put_cost(rounds: usize, secs: u64) -> Vec<f64> {
    let c = benches::cluster::Cluster::start(&["--sync", "false"], 1, &[], false);
    let Some((edge, addr)) = c.edges.first() else {
        return Vec::new();
    };
    let pid = edge.id().to_string();
    let mut ws = benches::ws::WsClient::connect(*addr, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut w = ws.writer().unwrap_or_else(|e| panic!("{e}"));
    let put = |id: u64| {
        format!(
            r#"{{"op":"put","id":{id},"key":"bench/{}","value":{{"n":{id}}}}}"#,
            id % 1024
        )
    };
    let mut id = 0u64;
    let mut out = Vec::new();
    for _ in 0..rounds {
        for _ in 0..64 {
            id += 1;
            benches::ws::send_text(&mut w, &put(id)).unwrap_or_else(|e| panic!("{e}"));
        }
        let (cpu0, end) = (cpu_secs(&pid), Instant::now() + Duration::from_secs(secs));
        let mut done = 0u64;
        while Instant::now() < end {
            let reply = ws.recv_text().unwrap_or_else(|| panic!("edge closed"));
            assert!(reply.starts_with(r#"{"op":"ok""#), "{reply}");
            done += 1;
            id += 1;
            benches::ws::send_text(&mut w, &put(id)).unwrap_or_else(|e| panic!("{e}"));
        }
        let cpu = cpu_secs(&pid) - cpu0;
        for _ in 0..64 {
            let _ = ws.recv_text();
        }
        let ns = cpu * 1e9 / done.max(1) as f64;
        eprintln!("[auth_load] puts: {done} in {secs} s, edge {cpu:.2} CPU-s: {ns:.0} ns each");
        out.push(ns);
    }
    out
}

fn main() {
    let args = Args::parse();
    let bin = args.edge.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name("edge")
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, SECRET).unwrap_or_else(|e| panic!("{e}"));
    let ec = EncodingKey::from_ec_pem(EC).unwrap_or_else(|e| panic!("ec key: {e}"));
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&ec, Algorithm::ES256)
        .unwrap_or_else(|e| panic!("jwk: {e}"));
    jwk.common.key_id = Some("ec-1".into());
    let jwks = dir.path().join("jwks.json");
    let set = jsonwebtoken::jwk::JwkSet { keys: vec![jwk] };
    std::fs::write(&jwks, serde_json::to_string(&set).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let hs = EncodingKey::from_secret(SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let bearer = |t: String| format!("Authorization: Bearer {t}\r\n");
    let secret = secret.to_string_lossy().into_owned();
    let jwks = jwks.to_string_lossy().into_owned();
    let configs: [(&str, Vec<&str>, String); 5] = [
        ("no auth", vec![], String::new()),
        // Two workers, connections placed on the least-loaded one (about half are
        // handed to the other's ring), against two workers keeping what their own
        // listener took: what admission across workers costs.
        (
            "2 workers, least-loaded",
            vec!["--workers", "2"],
            String::new(),
        ),
        (
            "2 workers, local",
            vec!["--workers", "2", "--admission", "local"],
            String::new(),
        ),
        (
            "HS256",
            vec!["--auth", "required", "--auth-secret-file", &secret],
            bearer(token(Algorithm::HS256, &hs, None)),
        ),
        (
            "ES256",
            vec!["--auth", "required", "--auth-jwks-file", &jwks],
            bearer(token(Algorithm::ES256, &ec, Some("ec-1"))),
        ),
    ];
    let mut edges: Vec<Edge> = configs
        .into_iter()
        .map(|(name, flags, header)| {
            let (child, addr) = start(&bin, &flags);
            Edge {
                name,
                child,
                addr,
                header,
                rates: Vec::new(),
            }
        })
        .collect();
    for round in 0..args.rounds {
        for i in 0..edges.len() {
            let n = edges.len();
            let e = &mut edges[(round + i) % n];
            let pid = e.child.id().to_string();
            let cpu0 = cpu_secs(&pid);
            let n = hammer(e.addr, &e.header, args.threads, args.seconds);
            let cpu = cpu_secs(&pid) - cpu0;
            let rate = if cpu > 0.0 { n as f64 / cpu } else { 0.0 };
            eprintln!(
                "[auth_load] round {}/{} {:<8} {n} upgrades, edge {cpu:.2} CPU-s: {rate:.0}/CPU-s",
                round + 1,
                args.rounds,
                e.name
            );
            e.rates.push(rate);
        }
    }
    let base = median(&edges[0].rates);
    println!(
        "\n| edge | upgrades per edge CPU-second (median of {}) | ratio to no auth |",
        args.rounds
    );
    println!("|---|---|---|");
    for e in &mut edges {
        let m = median(&e.rates);
        println!(
            "| {} | {m:.0} | {:.2} |",
            e.name,
            if base > 0.0 { m / base } else { 0.0 }
        );
        let _ = e.child.kill();
        let _ = e.child.wait();
    }
    let puts = put_cost(args.rounds.min(5), args.seconds);
    println!(
        "\n| put through the edge (auth off) | edge CPU per put, median of {} |\n|---|---|\n| 64 in flight, two stores | {:.0} ns |",
        puts.len(),
        median(&puts)
    );
}
