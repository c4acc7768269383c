//! Accept rate and echo throughput: the edge's `/echo` beside `tokio-tungstenite` and
//! `fastwebsockets` echo servers, all pinned to core 0, driven by the same client
//! pinned to core 1. Accept rate: 64 concurrent loops of connect, handshake, reset.
//! Echo: each connection sends one message and waits for its echo, over and over.
//! Servers take turns within each of `rounds` rounds per workload; the table gives each
//! round, the medians, and the edge's ratio to the faster of the two peers (rows count
//! connections/s for the first workload, messages/s after).
//!
//! Closed-loop echo saturates both cores: the client's kernel work per message (its own
//! send, which runs the server socket's receive path, and its receive) is as large as
//! the server's, so the client's core caps every server alike. The last workload
//! therefore offers a fixed rate below that cap and reads the server process's CPU
//! time (user and system, `/proc/<pid>/stat`): messages per server CPU-second, the
//! server's own efficiency (core 0's busy share is shown beside it). The
//! last two workloads do this for small (100 × 20 B) and large (200 × 16 KiB)
//! messages.
//!
//! `--against OLD_EDGE` measures another edge build in place of the two peers: a
//! before/after ratio in one run, rounds alternating.
//!
//! `--tls ecdsa|rsa` measures TLS instead: the edge's `wss://` listener beside the same
//! edge build in cleartext and beside `fastwebsockets` behind `tokio-rustls` (a
//! throw-away certificate from `openssl`, ECDSA P-256 or RSA-2048; TLS 1.3, rustls's
//! default suite). The first workload is then connect + TLS handshake + upgrade. The
//! client checks no certificate (its own cost is kept low; what is measured is the
//! server's).
//!
//! `--deflate` measures `permessage-deflate`: two processes of the edge build, both with
//! compression on, one echoing to clients that agree compression (each message
//! compressed by the client, inflated and compressed again by the edge), the other to
//! clients that do not; messages are JSON sensor rows (1 KiB and 16 KiB) either way.
//!
//! `cargo run --release -p benches --bin echo_load -- --seconds 4 --rounds 3`
#![allow(clippy::panic)] // a load tool should stop loudly on any failure

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::frame::{Decoder, Incoming, Limits, Opcode, encode_client_frame};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Alternating rounds per workload.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Messages/s offered in all by the paced 100 × 20 B workload (below what the
    /// client's core can drive, so that each server's own cost shows).
    #[arg(long, default_value_t = 60_000.0)]
    offered: f64,
    /// Messages/s offered in all by the paced 200 × 16 KiB workload.
    #[arg(long, default_value_t = 40_000.0)]
    offered_large: f64,
    /// Run only the workloads whose label contains this (e.g. `offered`).
    #[arg(long)]
    only: Option<String>,
    /// The edge binary [default: next to this one].
    #[arg(long)]
    edge: Option<PathBuf>,
    /// Measure this edge binary (an older build, say) beside the edge instead of the
    /// two peers: a before/after comparison, as a ratio in one run.
    #[arg(long)]
    against: Option<PathBuf>,
    /// The edge's `--recv-mode` (`multishot` or `poll`).
    #[arg(long, default_value = "multishot")]
    recv_mode: String,
    /// Internal: run the tokio-tungstenite echo server on this address.
    #[arg(long, hide = true)]
    tungstenite_server: Option<SocketAddr>,
    /// Internal: run the fastwebsockets echo server on this address.
    #[arg(long, hide = true)]
    fastwebsockets_server: Option<SocketAddr>,
    /// Measure TLS with a certificate of this key type: `ecdsa` (P-256) or `rsa`
    /// (2048 bits).
    #[arg(long, value_name = "KEY")]
    tls: Option<String>,
    /// Measure compression: the edge echoing compressed beside the edge echoing
    /// uncompressed, JSON messages of 1 KiB and 16 KiB.
    #[arg(long)]
    deflate: bool,
    /// With `--deflate`: the edge's `--compression-level`.
    #[arg(long, default_value_t = 6)]
    deflate_level: u32,
    /// Internal: with `--fastwebsockets-server`, serve TLS with this certificate and
    /// key (PEM).
    #[arg(long, hide = true, num_args = 2)]
    tls_files: Option<Vec<PathBuf>>,
}

/// How a server under test is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Ws,
    /// TLS, every handshake a full one.
    Wss,
    /// Cleartext, JSON messages, no compression offered.
    WsJson,
    /// Cleartext, JSON messages, `permessage-deflate` offered and used both ways.
    WsDeflate,
}

impl Scheme {
    /// Its messages are JSON text (sensor rows), not a run of one byte.
    fn json(self) -> bool {
        matches!(self, Self::WsJson | Self::WsDeflate)
    }
}

/// A client stream: TCP, or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Connect to `addr`, with a TLS handshake (SNI `localhost`, ALPN `http/1.1`) for
/// `wss`.
async fn connect(addr: SocketAddr, scheme: Scheme) -> std::io::Result<Box<dyn Stream>> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    // Linger 0: a close sends a reset and returns at once (no TIME_WAIT using up the
    // client's ports in the connection-rate test).
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
    match scheme {
        Scheme::Ws | Scheme::WsJson | Scheme::WsDeflate => Ok(Box::new(s)),
        Scheme::Wss => {
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(benches::tls::client_config())
                .connect(name, s)
                .await?;
            Ok(Box::new(tls))
        }
    }
}

/// The server TLS config of the `fastwebsockets` peer: what the edge serves (rustls
/// with `ring`, TLS 1.2 and 1.3, ALPN `http/1.1`).
fn tls_server(files: &[PathBuf]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let (Some(cert), Some(key)) = (files.first(), files.get(1)) else {
        panic!("--tls-files CERT KEY");
    };
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| panic!("{e}"));
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{e}"));
    let mut c =
        rustls::ServerConfig::builder_with_provider(Arc::new(benches::tls::ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|e| panic!("{e}"));
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Serve `addr` on a current-thread runtime pinned to core 0, each connection handled
/// by `echo` in a task of its own.
fn serve<F, Fut>(addr: SocketAddr, echo: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    pin(0);
    runtime().block_on(async move {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("listening on {}", l.local_addr().unwrap_or(addr));
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(echo(s));
        }
    });
}

/// The first reference server: tokio-tungstenite.
fn tungstenite_server(addr: SocketAddr) {
    serve(addr, |s| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                break;
            }
        }
    });
}

/// The other reference server: fastwebsockets, behind a minimal RFC 6455 upgrade
/// (fastwebsockets leaves the HTTP part to its caller), and behind `tokio-rustls` when
/// `tls` is given.
fn fastwebsockets_server(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) {
    serve(addr, move |s| {
        let tls = tls.clone();
        async move {
            match tls {
                None => fastwebsockets_echo(s).await,
                Some(config) => {
                    if let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(s).await {
                        fastwebsockets_echo(s).await;
                    }
                }
            }
        }
    });
}

/// One fastwebsockets connection: upgrade, then echo.
async fn fastwebsockets_echo<S: Stream + 'static>(mut s: S) {
    use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
    {
        if upgrade(&mut s).await.is_none() {
            return;
        }
        let mut ws = FragmentCollector::new(WebSocket::after_handshake(s, Role::Server));
        while let Ok(frame) = ws.read_frame().await {
            let echo = match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => frame,
                _ => continue,
            };
            if ws.write_frame(echo).await.is_err() {
                break;
            }
        }
    }
}

/// Read an upgrade request and answer 101 (RFC 6455 §4.2.2), with `wire`'s accept
/// key and response, as the edge does.
async fn upgrade<S: Stream>(s: &mut S) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf).ok()?.is_complete() {
            let key = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))?
                .value;
            let mut answer = Vec::new();
            wire::handshake::write_switching_protocols(
                &mut answer,
                &wire::handshake::accept_key(key),
                None,
                None,
            );
            return s.write_all(&answer).await.ok();
        }
    }
}

async fn client_conn(
    addr: SocketAddr,
    scheme: Scheme,
    size: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    ready: Arc<tokio::sync::Barrier>,
    pace: Option<(Duration, Duration)>,
) {
    let mut s = connect(addr, scheme)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut req = benches::ws::upgrade_request("x", "/echo", None);
    if scheme == Scheme::WsDeflate {
        req.truncate(req.len() - 2);
        req.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n\r\n",
            benches::aws::DEFLATE_OFFER
        ));
    }
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::with_capacity(size + 64);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        assert!(n > 0, "handshake failed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..i + 4);
            break;
        }
    }
    let (frame, dec) = client_frame(scheme, size);
    let mut dec = dec;
    ready.wait().await;
    // Paced: one message per `period`, this connection's first after `offset`, so that
    // the connections' sends spread evenly over each period.
    let mut ticks = pace.map(|(period, offset)| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    while !stop.load(Ordering::Relaxed) {
        if let Some(t) = ticks.as_mut() {
            t.tick().await;
        }
        s.write_all(&frame).await.unwrap_or_else(|e| panic!("{e}"));
        loop {
            let got = match dec.decode(&mut buf) {
                Ok(Some((
                    Incoming::Text(_) | Incoming::Binary(_) | Incoming::Compressed { .. },
                    used,
                ))) => Some((true, used)),
                Ok(Some((_, used))) => Some((false, used)),
                Ok(None) => None,
                Err(e) => panic!("{e}"),
            };
            match got {
                Some((msg, used)) => {
                    buf.drain(..used);
                    if msg {
                        break;
                    }
                }
                None => {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    assert!(n > 0, "server closed");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The frame a client connection sends over and over, and its decoder: `size` bytes of
/// `x` (text up to 125, binary past it), or JSON text, compressed for `WsDeflate`
/// (the client deflates once; what is measured is the server).
fn client_frame(scheme: Scheme, size: usize) -> (Vec<u8>, Decoder) {
    let mut dec = Decoder::client(Limits::default());
    let mut frame = Vec::new();
    if !scheme.json() {
        let op = if size <= 125 {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        encode_client_frame(&mut frame, true, op, &vec![b'x'; size], [1, 2, 3, 4]);
        return (frame, dec);
    }
    let payload = benches::json_rows("", 1, size).into_bytes();
    if scheme == Scheme::WsDeflate {
        let mut z = Vec::new();
        wire::frame::deflate::Deflater::new(6).deflate_end(&payload, &mut z);
        wire::frame::encode_compressed_client_frame(&mut frame, Opcode::Text, &z, [1, 2, 3, 4]);
        dec.enable_deflate();
    } else {
        encode_client_frame(&mut frame, true, Opcode::Text, &payload, [1, 2, 3, 4]);
    }
    (frame, dec)
}

/// A current-thread runtime (the reference server and the client each run on one).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Busy and total jiffies of core 0 so far (`/proc/stat`; idle, iowait and steal
/// count as not busy).
fn core0() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu0 ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0)
        + v.get(4).copied().unwrap_or(0)
        + v.get(7).copied().unwrap_or(0);
    (total - idle, total)
}

/// What one measurement saw: the rate, and the share of core 0 (the server's) in use.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    busy: f64,
    /// CPU-seconds the server process used per second (user and system, all threads).
    cpu: f64,
}

/// The server process being measured (its CPU time is read around each window).
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How fast `done` grows over the next `seconds`, core 0's busy share and the server
/// process's CPU use meanwhile.
async fn window(done: &AtomicU64, seconds: u64) -> Sample {
    let pid = SERVER_PID.load(Ordering::Relaxed);
    let (b0, t0) = core0();
    let c0 = benches::cpu_secs(&pid.to_string());
    let n0 = done.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = done.load(Ordering::Relaxed) - n0;
    let (b1, t1) = core0();
    let c1 = benches::cpu_secs(&pid.to_string());
    let wall = t.elapsed().as_secs_f64();
    Sample {
        rate: n as f64 / wall,
        busy: (b1 - b0) as f64 / (t1 - t0).max(1) as f64,
        cpu: (c1 - c0) / wall,
    }
}

/// Messages per second echoed for `conns` connections of `size`-byte messages, each
/// connection in a closed loop, or paced to `offered` messages/s in all.
fn measure(
    (addr, scheme): (SocketAddr, Scheme),
    conns: usize,
    size: usize,
    seconds: u64,
    offered: Option<f64>,
) -> Sample {
    runtime().block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(tokio::sync::Barrier::new(conns + 1));
        let mut tasks = Vec::new();
        let period = offered.map(|r| Duration::from_secs_f64(conns as f64 / r));
        for i in 0..conns {
            let pace = period.map(|p| (p, p.mul_f64(i as f64 / conns as f64)));
            tasks.push(tokio::spawn(client_conn(
                addr,
                scheme,
                size,
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&ready),
                pace,
            )));
        }
        ready.wait().await;
        // Half a second to settle into the pace, then count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sample = window(&done, seconds).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        sample
    })
}

/// Connections per second: `tasks` concurrent loops of connect (and TLS handshake),
/// upgrade, read the 101, reset (SO_LINGER 0, so no TIME_WAIT uses up the client's
/// ports).
fn measure_accept((addr, scheme): (SocketAddr, Scheme), tasks: usize, seconds: u64) -> Sample {
    runtime().block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            handles.push(tokio::spawn(async move {
                let req = benches::ws::upgrade_request("x", "/echo", None);
                let mut buf = vec![0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect(addr, scheme).await else {
                        continue;
                    };
                    if s.write_all(req.as_bytes()).await.is_err() {
                        continue;
                    }
                    let mut got = 0;
                    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                        if got == buf.len() {
                            break;
                        }
                    }
                    if buf[..got].starts_with(b"HTTP/1.1 101") {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Let the first connections settle, then count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sample = window(&done, seconds).await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.abort();
        }
        sample
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Start the edge binary `bin` with one worker (and `extra` flags: a TLS listener
/// only, say); its child and address (the TLS listener's, if it has one).
fn spawn_edge(
    bin: &std::path::Path,
    recv_mode: &str,
    extra: &[std::ffi::OsString],
) -> (std::process::Child, SocketAddr) {
    let field = if extra.iter().any(|a| a == "--listen-tls") {
        "listen_tls="
    } else {
        "listen="
    };
    benches::spawn_listening_on(
        Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--max-message",
                "1048576",
            ])
            .args(["--recv-mode", recv_mode])
            .args(extra)
            .env("RUST_LOG", "warn,edge=info"),
        "edge listening",
        field,
    )
}

/// A server under test: its name, process and address (and how to reach it).
type Server = (String, std::process::Child, (SocketAddr, Scheme));

/// The edge, then either the two peers or (`--against`) another edge build.
fn start_servers(args: &Args) -> Vec<Server> {
    let me = std::env::current_exe().unwrap_or_default();
    let edge_bin = args
        .edge
        .clone()
        .unwrap_or_else(|| me.with_file_name("edge"));
    if let Some(key) = &args.tls {
        return start_tls_servers(args, &edge_bin, key);
    }
    if args.deflate {
        let level = args.deflate_level.to_string();
        let on =
            ["--compression", "true", "--compression-level", &level].map(std::ffi::OsString::from);
        let (a, a_addr) = spawn_edge(&edge_bin, &args.recv_mode, &on);
        let (b, b_addr) = spawn_edge(&edge_bin, &args.recv_mode, &on);
        return vec![
            ("edge compressed".to_owned(), a, (a_addr, Scheme::WsDeflate)),
            ("edge uncompressed".to_owned(), b, (b_addr, Scheme::WsJson)),
        ];
    }
    let (edge, edge_addr) = spawn_edge(&edge_bin, &args.recv_mode, &[]);
    let mut servers = vec![("edge".to_owned(), edge, (edge_addr, Scheme::Ws))];
    if let Some(other) = &args.against {
        let (c, a) = spawn_edge(other, &args.recv_mode, &[]);
        servers.push(("against".to_owned(), c, (a, Scheme::Ws)));
        return servers;
    }
    for (name, flag) in [
        ("tokio-tungstenite", "--tungstenite-server"),
        ("fastwebsockets", "--fastwebsockets-server"),
    ] {
        let (c, a) = benches::spawn_listening(
            Command::new(&me).args([flag, "127.0.0.1:0"]),
            "listening on",
        );
        servers.push((name.to_owned(), c, (a, Scheme::Ws)));
    }
    servers
}

/// TLS: the edge's `wss://`, the same edge build in cleartext, and fastwebsockets
/// behind tokio-rustls, with one certificate of `key`.
fn start_tls_servers(args: &Args, edge_bin: &std::path::Path, key: &str) -> Vec<Server> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, keyf) = benches::tls::make_cert(dir.path(), key);
    let files = [
        "--listen-tls".into(),
        "127.0.0.1:0".into(),
        "--tls-only".into(),
        "true".into(),
        "--tls-cert".into(),
        cert.clone().into_os_string(),
        "--tls-key".into(),
        keyf.clone().into_os_string(),
    ];
    let (tls_edge, tls_addr) = spawn_edge(edge_bin, &args.recv_mode, &files);
    let (edge, addr) = spawn_edge(edge_bin, &args.recv_mode, &[]);
    let me = std::env::current_exe().unwrap_or_default();
    let (peer, peer_addr) = benches::spawn_listening(
        Command::new(&me)
            .args(["--fastwebsockets-server", "127.0.0.1:0", "--tls-files"])
            .arg(&cert)
            .arg(&keyf),
        "listening on",
    );
    // The servers have read the files.
    drop(dir);
    vec![
        (
            format!("edge wss ({key})"),
            tls_edge,
            (tls_addr, Scheme::Wss),
        ),
        ("edge ws".to_owned(), edge, (addr, Scheme::Ws)),
        (
            format!("fastwebsockets + tokio-rustls ({key})"),
            peer,
            (peer_addr, Scheme::Wss),
        ),
    ]
}

/// Each workload: its label, whether its figure is per server CPU-second (else per
/// second), and the measurement.
type Workload = (String, bool, Box<dyn Fn((SocketAddr, Scheme)) -> Sample>);

/// Accept rate first (connections + handshakes per second, 64 at a time), then echo.
fn workloads(args: &Args) -> Vec<Workload> {
    let secs = args.seconds;
    let accept = if args.tls.is_some() {
        "connect + full TLS handshake + upgrade (64 at a time)"
    } else {
        "connect + handshake (64 at a time)"
    };
    let mut workloads: Vec<Workload> = vec![(
        accept.into(),
        false,
        Box::new(move |addr| measure_accept(addr, 64, secs)),
    )];
    let small = if args.deflate { 1024 } else { 20 };
    for (conns, size) in [(100usize, small), (200, 16 * 1024)] {
        workloads.push((
            format!("{conns} × {size} B"),
            false,
            Box::new(move |addr| measure(addr, conns, size, secs, None)),
        ));
    }
    let offered = args.offered;
    workloads.push((
        format!("100 × {small} B at {offered:.0}/s offered, per server CPU-second"),
        true,
        Box::new(move |addr| measure(addr, 100, small, secs, Some(offered))),
    ));
    let large = args.offered_large;
    workloads.push((
        format!("200 × 16384 B at {large:.0}/s offered, per server CPU-second"),
        true,
        Box::new(move |addr| measure(addr, 200, 16 * 1024, secs, Some(large))),
    ));
    if let Some(only) = &args.only {
        workloads.retain(|(label, ..)| label.contains(only.as_str()));
    }
    workloads
}

/// One workload's figures: per server, each round's figure and sample; each round's
/// ratio of the first server to each of the others.
struct Row<'a> {
    label: &'a str,
    got: Vec<Vec<f64>>,
    samples: Vec<Vec<Sample>>,
    ratios: Vec<Vec<f64>>,
}

/// Run `workload` for `rounds` rounds, each measuring every server in turn, so that
/// the host's noise of the moment falls on all of them.
fn run_workload<'a>(w: &'a Workload, servers: &[Server], rounds: usize) -> Row<'a> {
    let (label, per_core, run) = w;
    let mut row = Row {
        label,
        got: vec![Vec::new(); servers.len()],
        samples: vec![Vec::new(); servers.len()],
        ratios: Vec::new(),
    };
    for round in 1..=rounds {
        let mut this = Vec::new();
        for (i, (name, child, addr)) in servers.iter().enumerate() {
            eprintln!("[echo_load] {label}, round {round}/{rounds}: {name} ...");
            SERVER_PID.store(child.id(), Ordering::Relaxed);
            let x = run(*addr);
            let v = if *per_core {
                x.rate / x.cpu.max(1e-9)
            } else {
                x.rate
            };
            eprintln!(
                "[echo_load]   {name} {:.0}/s, core 0 {:.0}% busy, server {:.2} CPU-s/s",
                x.rate,
                x.busy * 100.0,
                x.cpu
            );
            row.got[i].push(v);
            row.samples[i].push(x);
            this.push(v);
        }
        row.ratios
            .push(this.iter().skip(1).map(|o| this[0] / o).collect());
    }
    row
}

/// The tables: each round and the medians, then the medians of rate and busy share.
fn print_tables(servers: &[Server], rows: Vec<Row<'_>>) {
    let names: Vec<&str> = servers.iter().map(|(n, ..)| n.as_str()).collect();
    let first = names.first().copied().unwrap_or("edge");
    let ratio_heads: Vec<String> = names
        .iter()
        .skip(1)
        .map(|o| format!("{first} / {o}"))
        .collect();
    println!(
        "| workload | round | {} /s | {} |",
        names.join(" /s | "),
        ratio_heads.join(" | ")
    );
    println!(
        "|---|---|{}{}",
        "---:|".repeat(names.len()),
        "---:|".repeat(ratio_heads.len())
    );
    for row in &rows {
        let label = row.label;
        for (i, q) in row.ratios.iter().enumerate() {
            let cells: Vec<String> = row.got.iter().map(|g| format!("{:.0}", g[i])).collect();
            let qs: Vec<String> = q.iter().map(|q| format!("{q:.2}")).collect();
            println!(
                "| {label} | {} | {} | {} |",
                i + 1,
                cells.join(" | "),
                qs.join(" | ")
            );
        }
        let cells: Vec<String> = row
            .got
            .iter()
            .map(|g| format!("{:.0}", median(g.clone())))
            .collect();
        let qs: Vec<String> = (0..ratio_heads.len())
            .map(|k| {
                let m = median(
                    row.ratios
                        .iter()
                        .filter_map(|r| r.get(k).copied())
                        .collect(),
                );
                format!("**{m:.2}**")
            })
            .collect();
        println!(
            "| {label} | **median** | {} | {} |",
            cells.join(" | "),
            qs.join(" | ")
        );
    }
    println!();
    println!(
        "Medians of the rate each server reached, of its core's busy share and of its process's CPU-seconds per second:"
    );
    println!();
    println!(
        "| workload | {} /s | busy | CPU |",
        names.join(" /s | busy | CPU | ")
    );
    println!("|---|{}", "---:|---:|---:|".repeat(names.len()));
    for row in &rows {
        let cells: Vec<String> = row
            .samples
            .iter()
            .map(|s| {
                let rate = median(s.iter().map(|x| x.rate).collect());
                let busy = median(s.iter().map(|x| x.busy).collect());
                let cpu = median(s.iter().map(|x| x.cpu).collect());
                format!("{rate:.0} | {:.0}% | {cpu:.2}", busy * 100.0)
            })
            .collect();
        println!("| {} | {} |", row.label, cells.join(" | "));
    }
}

fn main() {
    let args = Args::parse();
    if let Some(addr) = args.tungstenite_server {
        tungstenite_server(addr);
        return;
    }
    if let Some(addr) = args.fastwebsockets_server {
        fastwebsockets_server(addr, args.tls_files.as_deref().map(tls_server));
        return;
    }
    pin(1);
    let mut servers = start_servers(&args);
    let workloads = workloads(&args);
    let rows: Vec<Row<'_>> = workloads
        .iter()
        .map(|w| run_workload(w, &servers, args.rounds))
        .collect();
    print_tables(&servers, rows);
    for (_, child, _) in &mut servers {
        let _ = child.kill();
        let _ = child.wait();
    }
}
