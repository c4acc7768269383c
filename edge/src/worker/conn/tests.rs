//! The connection state machine driven by random interleavings of what the kernel and
//! the peer can do (receives of whole and cut frames, garbage, EOF, receive errors,
//! send completions whole, partial and failed, cancellations, timer ticks, closes by
//! the worker), in both receive styles. A model kernel carries out what the machine
//! polls and keeps what it was given; a model peer keeps what it sent. Checked:
//! - the kernel never gets an operation of a kind already in flight, and a slot is
//!   released exactly once, with nothing armed, and nothing is asked of it after;
//! - nothing is sent after a close frame, and nothing at all after the write side is
//!   shut down;
//! - every echo the peer is owed comes back, in order, before any close frame;
//! - a last answer is flushed or abandoned by its deadline (no connection stays
//!   closing past it), and once the peer goes quiet every connection is released.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use proptest::prelude::*;
use wire::frame::{CloseCode, Decoder, Incoming, Limits, Opcode, encode_client_frame};

use super::life::{CLOSE_TICKS, LINGER_TICKS};
use super::{Armed, Conn, Ctx, IoAction, Life, RecvStyle};
use crate::config::{Config, RecvMode};
use crate::hub::Hub;
use crate::metrics::WorkerMetrics;
use crate::uring::Chunk;
use crate::worker::timer::Tick;

/// An idle WebSocket costs its slab slot (plus, on `/ws`, its subscriptions in the
/// hub): keep the slot small. 120 bytes since the message budget, 128 since the TLS
/// session's pointer (no field left to shrink: the 4 spare bytes were padding; a
/// cleartext connection's user-space memory is about 320 B in all, see BENCHMARKS.md).
#[test]
fn a_connection_slot_stays_small() {
    let size = std::mem::size_of::<Option<super::Conn>>();
    assert!(size <= 128, "{size}");
}

const HANDSHAKE_TICKS: Tick = 10;
const HEARTBEAT_TICKS: Tick = 25;

/// What can happen next.
#[derive(Debug, Clone)]
enum Ev {
    /// The peer's next bytes arrive, cut after `cut` bytes (the rest stays queued).
    Recv { cut: usize },
    /// The peer queues garbage (a reserved opcode: a protocol error).
    Garbage,
    /// The peer closes its side.
    Eof,
    /// A receive fails.
    RecvError,
    /// No receive buffer was free.
    NoBuffers,
    /// The socket became readable (poll style).
    Readable,
    /// The send in flight completes: `part` of 4 of it taken, or failed.
    Sent { part: u8, fail: bool },
    /// A cancelled operation completes.
    Cancelled,
    /// A tick passes.
    Tick,
    /// The worker closes the connection (drain).
    Close,
    /// The peer queues a message to echo.
    Say { len: usize, binary: bool },
    /// The peer queues a close frame.
    PeerClose,
    /// The peer queues a ping.
    Ping,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (0usize..200).prop_map(|cut| Ev::Recv { cut }),
        1 => Just(Ev::Garbage),
        1 => Just(Ev::Eof),
        1 => Just(Ev::RecvError),
        1 => Just(Ev::NoBuffers),
        2 => Just(Ev::Readable),
        5 => (0u8..5, prop::bool::weighted(0.05)).prop_map(|(part, fail)| Ev::Sent { part, fail }),
        2 => Just(Ev::Cancelled),
        3 => Just(Ev::Tick),
        1 => Just(Ev::Close),
        5 => (0usize..300, any::<bool>()).prop_map(|(len, binary)| Ev::Say { len, binary }),
        1 => Just(Ev::PeerClose),
        1 => Just(Ev::Ping),
    ]
}

/// The kernel, the peer and the worker's loop around one connection.
struct Sim {
    conn: Option<Conn>,
    style: RecvStyle,
    now: Tick,
    /// Kinds in flight (the ring's own record).
    recv: bool,
    poll: bool,
    send: Option<Vec<Chunk>>,
    /// Operations a cancellation was asked for.
    cancelling: Armed,
    shut_write: bool,
    released: u32,
    /// Bytes the peer sent that the server has not received yet.
    to_server: Vec<u8>,
    /// Every byte the kernel took from the server, in order.
    wire: Vec<u8>,
    /// Echoes the peer is owed, in order, and how many came back.
    owed: Vec<(Opcode, Vec<u8>)>,
    /// The tick the connection started closing, if it is.
    closing_since: Option<Tick>,
    hub: Hub,
    cfg: Config,
    metrics: WorkerMetrics,
    per_ip: crate::worker::per_ip::PerIp,
    z: crate::worker::compress::Compression,
}

fn config(style: RecvStyle) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        listen_tls: None,
        tls_only: false,
        tls_certs: Vec::new(),
        cluster_secret_file: None,
        link_tls_ca_file: None,
        workers: 1,
        max_connections: 10,
        max_message: 1 << 20,
        max_outbound: 1 << 22,
        latest_above: 1 << 16,
        send_lowat: 1 << 16,
        presence_batch: std::time::Duration::from_millis(100),
        heartbeat: std::time::Duration::from_secs(u64::from(HEARTBEAT_TICKS)),
        handshake_timeout: std::time::Duration::from_secs(u64::from(HANDSHAKE_TICKS)),
        drain: std::time::Duration::from_secs(30),
        echo: true,
        http_api: true,
        compression: false,
        compression_min_bytes: 128,
        compression_level: 6,
        compression_level_single: 1,
        inbox: true,
        broadcast: true,
        pin: false,
        admission: crate::config::Admission::LeastLoaded,
        recv_mode: match style {
            RecvStyle::Multishot => RecvMode::Multishot,
            RecvStyle::Poll => RecvMode::Poll,
        },
        cluster: None,
        auth: crate::config::AuthMode::Off,
        auth_secret_file: None,
        auth_jwks_file: None,
        auth_audience: None,
        auth_issuer: None,
        auth_skew: std::time::Duration::from_secs(30),
        auth_timeout: std::time::Duration::from_secs(5),
        auth_query_token: false,
        messages: super::rate::Limits {
            rate: 1000,
            burst: 2000,
            grace: 2,
        },
        max_subscriptions: 1000,
        per_ip: crate::worker::per_ip::IpLimits {
            connections: 1000,
            rate: 100,
            burst: 500,
        },
        trusted_proxies: Vec::new(),
        proxy_protocol_from: Vec::new(),
        limit_loopback: false,
        allowed_origins: Vec::new(),
        allow_anonymous: false,
        anonymous: crate::auth::grant::Grant::default(),
    }
}

fn masked(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_client_frame(&mut v, true, opcode, payload, [1, 2, 3, 4]);
    v
}

impl Sim {
    fn new(style: RecvStyle) -> Self {
        let fd: OwnedFd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        let map = Arc::new(wire::cluster::ClusterMap::embedded_default());
        let mut s = Self {
            conn: Some(Conn::new(fd, style, 0, HANDSHAKE_TICKS, false, false, None)),
            style,
            now: 0,
            recv: false,
            poll: false,
            send: None,
            cancelling: Armed::default(),
            shut_write: false,
            released: 0,
            to_server:
                b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    .to_vec(),
            wire: Vec::new(),
            owed: Vec::new(),
            closing_since: None,
            hub: Hub::new(map),
            per_ip: crate::worker::per_ip::PerIp::new(config(style).per_ip),
            cfg: config(style),
            metrics: WorkerMetrics::default(),
            z: crate::worker::compress::Compression::new(&config(style)),
        };
        s.drive();
        s
    }

    /// What the worker does after every input: carry out what is polled.
    fn drive(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.enforce_outbound(self.cfg.max_outbound, self.now, &self.metrics);
        while let Some(a) = conn.poll_io(self.now) {
            match a {
                IoAction::RecvMulti | IoAction::RecvOnce => {
                    assert!(!self.recv, "a second receive armed");
                    assert_eq!(a == IoAction::RecvMulti, self.style == RecvStyle::Multishot);
                    self.recv = true;
                }
                IoAction::Poll => {
                    assert_eq!(self.style, RecvStyle::Poll);
                    assert!(!self.poll, "a second poll armed");
                    self.poll = true;
                }
                IoAction::Cancel(ops) => {
                    assert!(ops.has(Armed::RECV) <= self.recv);
                    assert!(ops.has(Armed::POLL) <= self.poll);
                    assert!(ops.has(Armed::SEND) <= self.send.is_some());
                    self.cancelling = ops;
                }
                IoAction::ShutdownWrite => {
                    assert!(self.send.is_none(), "shut down with a send in flight");
                    self.shut_write = true;
                }
                IoAction::Release => {
                    assert!(
                        !self.recv && !self.poll && self.send.is_none(),
                        "released with operations in flight"
                    );
                    self.released += 1;
                    self.conn = None;
                    return;
                }
            }
        }
        let c = self.conn.as_ref().unwrap_or_else(|| unreachable!());
        if matches!(c.life, Life::Closing { .. }) {
            self.closing_since.get_or_insert(self.now);
        }
    }

    /// The end of a round: one send if frames are queued.
    fn transmit(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some(chunks) = conn.poll_transmit() {
            assert!(self.send.is_none(), "a second send in flight");
            assert!(
                !self.shut_write,
                "a send after the write side was shut down"
            );
            self.send = Some(chunks);
        }
    }

    fn ctx_run(&mut self, f: impl FnOnce(&mut Conn, &mut Ctx<'_>, Tick)) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let all = Vec::new();
        let mut ctx = Ctx {
            hub: &mut self.hub,
            me: (0, 1),
            auth: None,
            cfg: &self.cfg,
            per_ip: &self.per_ip,
            worker: 0,
            metrics: &self.metrics,
            draining: false,
            all: &all,
            z: &mut self.z,
        };
        f(conn, &mut ctx, self.now);
    }

    fn deliver(&mut self, cut: usize) {
        if !self.recv || self.to_server.is_empty() {
            return;
        }
        let n = if cut == 0 {
            self.to_server.len()
        } else {
            cut.min(self.to_server.len())
        };
        let mut data: Vec<u8> = self.to_server.drain(..n).collect();
        self.ctx_run(|c, ctx, now| c.handle_recv(&mut data, now, ctx));
        if self.style == RecvStyle::Poll {
            self.recv_ended();
        }
    }

    fn recv_ended(&mut self) {
        self.recv = false;
        self.cancelling = self.cancelling.without(Armed::RECV);
        if let Some(c) = self.conn.as_mut() {
            c.handle_op_done(Armed::RECV);
        }
    }

    fn step(&mut self, e: &Ev) {
        match *e {
            Ev::Recv { cut } => self.deliver(cut),
            // A reserved opcode, masked, empty.
            Ev::Garbage => self.to_server.extend([0x83, 0x80, 0, 0, 0, 0]),
            Ev::Eof | Ev::RecvError if self.recv => {
                self.recv_ended();
                if let Some(c) = self.conn.as_mut() {
                    if matches!(e, Ev::Eof) {
                        c.handle_eof();
                    } else {
                        c.handle_io_error();
                    }
                }
            }
            Ev::NoBuffers if self.recv => {
                self.recv_ended();
                if let Some(c) = self.conn.as_mut() {
                    c.handle_readable();
                }
            }
            Ev::Readable if self.poll => {
                if let Some(c) = self.conn.as_mut() {
                    c.handle_readable();
                }
            }
            Ev::Sent { part, fail } => self.sent(part, fail),
            Ev::Cancelled => self.cancelled(),
            Ev::Tick => self.tick(),
            Ev::Close => {
                if let Some(c) = self.conn.as_mut() {
                    c.close(CloseCode::GOING_AWAY, "bye", self.now, &self.metrics);
                }
            }
            Ev::Say { len, binary } => {
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let op = if binary { Opcode::Binary } else { Opcode::Text };
                self.to_server.extend(masked(op, &payload));
                self.owed.push((op, payload));
            }
            Ev::PeerClose => self
                .to_server
                .extend(masked(Opcode::Close, &1000u16.to_be_bytes())),
            Ev::Ping => self.to_server.extend(masked(Opcode::Ping, b"p")),
            _ => {}
        }
        self.drive();
        self.transmit();
        self.check_deadlines();
    }

    fn sent(&mut self, part: u8, fail: bool) {
        let Some(chunks) = self.send.take() else {
            return;
        };
        self.cancelling = self.cancelling.without(Armed::SEND);
        let total: usize = chunks.iter().map(|c| c.as_slice().len()).sum();
        let result = if fail {
            Err(-libc::EPIPE)
        } else {
            let n = if part >= 4 {
                total
            } else {
                total * usize::from(part) / 4
            };
            let mut left = n;
            for c in &chunks {
                let s = c.as_slice();
                let k = left.min(s.len());
                self.wire.extend_from_slice(&s[..k]);
                left -= k;
            }
            Ok(n)
        };
        if let Some(c) = self.conn.as_mut() {
            c.handle_sent(chunks, result);
        }
    }

    fn cancelled(&mut self) {
        let ops = self.cancelling;
        if ops.has(Armed::RECV) && self.recv {
            self.recv_ended();
        } else if ops.has(Armed::POLL) && self.poll {
            self.poll = false;
            self.cancelling = self.cancelling.without(Armed::POLL);
            if let Some(c) = self.conn.as_mut() {
                c.handle_op_done(Armed::POLL);
            }
        } else if ops.has(Armed::SEND) && self.send.is_some() {
            let chunks = self.send.take().unwrap_or_default();
            self.cancelling = self.cancelling.without(Armed::SEND);
            if let Some(c) = self.conn.as_mut() {
                c.handle_sent(chunks, Err(-libc::ECANCELED));
            }
        }
    }

    fn tick(&mut self) {
        self.now += 1;
        let hb = HEARTBEAT_TICKS;
        let ping = bytes::Bytes::from_static(&[0x89, 0]);
        if let Some(c) = self.conn.as_mut() {
            c.handle_timer(self.now, hb, &ping, &self.metrics);
        }
    }

    fn check_deadlines(&self) {
        if let (Some(c), Some(since)) = (&self.conn, self.closing_since)
            && matches!(c.life, Life::Closing { .. })
        {
            assert!(
                self.now <= since + CLOSE_TICKS + 1,
                "still closing at tick {} (since {since})",
                self.now
            );
        }
        if let Some(c) = &self.conn
            && let Life::Lingering { until } = c.life
        {
            assert!(self.now <= until && until <= self.now + LINGER_TICKS + 1);
        }
    }

    /// The peer goes quiet; the kernel completes what is cancelled; time passes. The
    /// connection must go, however it stood.
    fn settle(&mut self) {
        for _ in 0..(HEARTBEAT_TICKS * 3 + CLOSE_TICKS + LINGER_TICKS + 5) {
            if self.conn.is_none() {
                break;
            }
            self.step(&Ev::Sent {
                part: 4,
                fail: false,
            });
            self.step(&Ev::Cancelled);
            self.step(&Ev::Cancelled);
            self.step(&Ev::Cancelled);
            self.step(&Ev::Tick);
        }
        assert!(self.conn.is_none(), "never released");
        assert_eq!(self.released, 1);
    }

    /// The frames the server sent, decoded as a client decodes them.
    fn frames(&self) -> Vec<(Opcode, Vec<u8>)> {
        let Some(end) = self.wire.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Vec::new();
        };
        let mut buf = self.wire[end + 4..].to_vec();
        let mut dec = Decoder::client(Limits::default());
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            match dec.decode(&mut buf[at..]) {
                Ok(Some((item, used))) => {
                    at += used;
                    match item {
                        Incoming::Text(s) => out.push((Opcode::Text, s.as_bytes().to_vec())),
                        Incoming::Binary(b) => out.push((Opcode::Binary, b.to_vec())),
                        Incoming::Ping(p) => out.push((Opcode::Ping, p.to_vec())),
                        Incoming::Pong(p) => out.push((Opcode::Pong, p.to_vec())),
                        Incoming::Close(_) => out.push((Opcode::Close, Vec::new())),
                        Incoming::Fragment | Incoming::AfterClose => {}
                        Incoming::Compressed { .. } => panic!("deflate is not negotiated"),
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("the server sent a bad frame: {e}"),
            }
        }
        out
    }

    /// Nothing after a close frame; the echoes came back in order (a prefix of what
    /// was owed: the rest was cut by a close).
    fn check_output(&self) {
        let frames = self.frames();
        if let Some(i) = frames.iter().position(|(op, _)| *op == Opcode::Close) {
            assert_eq!(
                i + 1,
                frames.len(),
                "frames after the close frame: {frames:?}"
            );
        }
        let echoes: Vec<&(Opcode, Vec<u8>)> = frames
            .iter()
            .filter(|(op, _)| matches!(op, Opcode::Text | Opcode::Binary))
            .collect();
        assert!(echoes.len() <= self.owed.len());
        for (got, want) in echoes.iter().zip(&self.owed) {
            assert_eq!(*got, want, "echoes out of order or changed");
        }
    }
}

fn run(style: RecvStyle, evs: &[Ev]) {
    let mut sim = Sim::new(style);
    for e in evs {
        sim.step(e);
        assert!(sim.released <= 1);
    }
    sim.settle();
    sim.check_output();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_multishot_connection_keeps_its_promises(evs in prop::collection::vec(ev(), 0..120)) {
        run(RecvStyle::Multishot, &evs);
    }

    #[test]
    fn a_poll_mode_connection_keeps_its_promises(evs in prop::collection::vec(ev(), 0..120)) {
        run(RecvStyle::Poll, &evs);
    }
}

/// A silent peer is closed after two whole heartbeats, never sooner: its last byte may
/// have come late in its tick.
#[test]
fn silence_closes_after_two_whole_heartbeats_never_sooner() {
    let mut sim = Sim::new(RecvStyle::Multishot);
    sim.step(&Ev::Recv { cut: 0 });
    let rx = sim.now;
    let closed_at = loop {
        sim.step(&Ev::Sent {
            part: 4,
            fail: false,
        });
        if sim.conn.as_ref().is_none_or(|c| !c.is_open()) {
            break sim.now;
        }
        sim.step(&Ev::Tick);
        assert!(sim.now < 10 * HEARTBEAT_TICKS, "never closed");
    };
    assert_eq!(closed_at, rx + 2 * HEARTBEAT_TICKS + 1);
}

/// A peer that echoes politely and closes: everything owed comes back before the
/// close, and the close is answered.
#[test]
fn a_polite_peer_gets_every_echo_then_the_close_answer() {
    for style in [RecvStyle::Multishot, RecvStyle::Poll] {
        let mut sim = Sim::new(style);
        let mut evs = vec![Ev::Readable, Ev::Recv { cut: 0 }];
        for i in 0..5 {
            evs.push(Ev::Say {
                len: 10 * i,
                binary: i % 2 == 0,
            });
            evs.push(Ev::Readable);
            evs.push(Ev::Recv { cut: 0 });
            evs.push(Ev::Sent {
                part: 2,
                fail: false,
            });
            evs.push(Ev::Sent {
                part: 4,
                fail: false,
            });
        }
        evs.extend([
            Ev::PeerClose,
            Ev::Readable,
            Ev::Recv { cut: 0 },
            Ev::Sent {
                part: 4,
                fail: false,
            },
        ]);
        for e in &evs {
            sim.step(e);
        }
        sim.settle();
        let frames = sim.frames();
        assert_eq!(frames.len(), 6, "{style:?}: {frames:?}");
        assert_eq!(frames.last().map(|f| f.0), Some(Opcode::Close));
        for (got, want) in frames.iter().zip(&sim.owed) {
            assert_eq!(got, want);
        }
    }
}

/// An HTTP API request that trickles in, a byte a tick, is dropped once it has taken
/// `REQUEST_TICKS` (the bytes coming do not move its deadline).
#[test]
fn a_trickling_api_request_is_dropped_in_time() {
    use super::api::REQUEST_TICKS;
    let mut sim = Sim::new(RecvStyle::Multishot);
    sim.to_server = b"GET /v1/keys/k HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
    sim.step(&Ev::Recv { cut: 0 });
    assert!(sim.conn.as_ref().is_some_and(Conn::is_api));
    let start = sim.now;
    while sim.conn.as_ref().is_some_and(Conn::is_live) {
        sim.to_server.push(b'a');
        sim.step(&Ev::Recv { cut: 0 });
        sim.step(&Ev::Tick);
        assert!(
            sim.now <= start + REQUEST_TICKS + 2,
            "still open at tick {} (started at {start})",
            sim.now
        );
    }
}
