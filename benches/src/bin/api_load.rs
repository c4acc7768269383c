//! Publishing over the HTTP API against over a WebSocket: the edge's CPU per publish.
//! One edge (one worker) in front of two stores (no fsync); one client, three ways,
//! rounds alternating:
//! - `ws`: a `/ws` JSON connection keeping 32 `pub` requests in flight (the HTTP
//!   API's pipeline depth, so that both ways batch alike);
//! - `http`: a keep-alive HTTP/1.1 connection pipelining 32 `POST /v1/publish` of one
//!   message each;
//! - `http batch`: the same connection style, 4 requests of 100 messages in flight.
//!
//! Each publish is a 64-byte JSON value to one of 1,024 keys. The client is a closed
//! loop on the same 2-core host, so the figure that separates the ways is publishes per
//! edge CPU-second (the edge's own user + system time, `/proc/<pid>/stat`); the
//! client's rate is shown beside it. Medians over the rounds, and each way's ratio to
//! `ws`.
//!
//! `cargo run --release -p benches --bin api_load -- --rounds 5 --seconds 3`
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use benches::{cpu_secs, median};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Rounds (each runs every way once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per way per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Only this way (`ws`, `http`, `batch`), for a profile of one [default: all].
    #[arg(long)]
    only: Option<String>,
}

/// Requests in flight, either way: the HTTP API's pipeline depth.
const WINDOW: usize = 32;

/// A 64-byte JSON value.
const VALUE: &str = r#"{"text":"a message of sixty-four bytes, give or take a few bytes"}"#;

/// One way of publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Ws,
    Http,
    HttpBatch,
}

impl Way {
    fn flag(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Http => "http",
            Self::HttpBatch => "batch",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws, 32 in flight",
            Self::Http => "http, 32 pipelined, 1 message each",
            Self::HttpBatch => "http, 4 pipelined, 100 messages each",
        }
    }
}

/// A publish request's JSON for message `n` (its key one of 1,024).
fn message(n: u64) -> String {
    format!(r#"{{"key":"bench/{}","value":{VALUE}}}"#, n % 1024)
}

/// An HTTP `POST /v1/publish` with `body`.
fn post(body: &str) -> String {
    format!(
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Read one HTTP answer from `r`; panics unless it is a 200.
fn read_answer(r: &mut impl BufRead) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap_or_else(|e| panic!("{e}"));
}

/// Publish over HTTP for `secs`, `window` requests of `per` messages in flight: the
/// messages published.
fn run_http(addr: SocketAddr, secs: u64, window: usize, per: u64) -> u64 {
    let mut w = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    w.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(w.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut n = 0u64;
    let request = |n: &mut u64| {
        let body = if per == 1 {
            *n += 1;
            message(*n)
        } else {
            let items: Vec<String> = (0..per).map(|i| message(*n + i)).collect();
            *n += per;
            format!("[{}]", items.join(","))
        };
        post(&body)
    };
    for _ in 0..window {
        w.write_all(request(&mut n).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut done = 0;
    while Instant::now() < end {
        read_answer(&mut r);
        done += per;
        w.write_all(request(&mut n).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..window {
        read_answer(&mut r);
    }
    done
}

/// Publish over `/ws` for `secs`, [`WINDOW`] in flight: the messages published.
fn run_ws(addr: SocketAddr, secs: u64) -> u64 {
    let mut ws = benches::ws::WsClient::connect(addr, "/ws", Some("ringline.v1.json"))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut w = ws.writer().unwrap_or_else(|e| panic!("{e}"));
    let publish = |id: u64| {
        format!(
            r#"{{"op":"pub","id":{id},"key":"bench/{}","value":{VALUE}}}"#,
            id % 1024
        )
    };
    let mut id = 0u64;
    for _ in 0..WINDOW {
        id += 1;
        benches::ws::send_text(&mut w, &publish(id)).unwrap_or_else(|e| panic!("{e}"));
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut done = 0;
    while Instant::now() < end {
        let reply = ws.recv_text().unwrap_or_else(|| panic!("edge closed"));
        assert!(reply.starts_with(r#"{"op":"ok""#), "{reply}");
        done += 1;
        id += 1;
        benches::ws::send_text(&mut w, &publish(id)).unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..WINDOW {
        let _ = ws.recv_text();
    }
    done
}

fn main() {
    let args = Args::parse();
    let c = benches::cluster::Cluster::start(&["--sync", "false"], 1, &["--workers", "1"], false);
    let Some((edge, addr)) = c.edges.first() else {
        panic!("no edge")
    };
    let pid = edge.id().to_string();
    let all = [Way::Ws, Way::Http, Way::HttpBatch];
    let ways: Vec<Way> = all
        .into_iter()
        .filter(|w| args.only.as_deref().is_none_or(|o| o == w.flag()))
        .collect();
    eprintln!("[api_load] edge pid {pid}");
    // Per way: (publishes per edge CPU-second, publishes per second), one per round.
    let mut figures: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); ways.len()];
    for round in 0..args.rounds {
        for k in 0..ways.len() {
            // Rotate the order, so no way always runs first.
            let i = (k + round) % ways.len();
            let way = ways[i];
            let (cpu0, t0) = (cpu_secs(&pid), Instant::now());
            let done = match way {
                Way::Ws => run_ws(*addr, args.seconds),
                Way::Http => run_http(*addr, args.seconds, WINDOW, 1),
                Way::HttpBatch => run_http(*addr, args.seconds, 4, 100),
            };
            let (cpu, wall) = (cpu_secs(&pid) - cpu0, t0.elapsed().as_secs_f64());
            let per_cpu = done as f64 / cpu.max(0.01);
            eprintln!(
                "[api_load] round {}/{}: {}: {done} publishes, {:.0}/s, edge {cpu:.2} CPU-s: {per_cpu:.0} per edge CPU-s",
                round + 1,
                args.rounds,
                way.name(),
                done as f64 / wall
            );
            figures[i].0.push(per_cpu);
            figures[i].1.push(done as f64 / wall);
        }
    }
    let base = median(&figures[0].0);
    println!(
        "\n| publish (64 B JSON value), one client | publishes per edge CPU-second | ratio to ws | client's publishes/s |\n|---|---|---|---|"
    );
    for (way, (per_cpu, rate)) in ways.iter().zip(&figures) {
        println!(
            "| {} | {:.0} | {:.2} | {:.0} |",
            way.name(),
            median(per_cpu),
            median(per_cpu) / base.max(1.0),
            median(rate)
        );
    }
    println!(
        "\n(medians of {} rounds of {} s, ways alternating)",
        args.rounds, args.seconds
    );
}
