//! The link state machine driven by random interleavings of what the kernel and the
//! store can do (connects that succeed or fail, the hello's answer, pings, garbage,
//! EOF, failed receives, send completions whole, partial and failed, ticks, frames
//! from the hub). A model kernel carries out what the link polls, per socket. Checked:
//! - never two operations of a kind in flight, whatever socket they are for, and no
//!   new attempt while an earlier socket's operation is in flight;
//! - the first bytes on every socket are a hello, and nothing is sent on a socket after
//!   the link gave it up;
//! - up is reported only after the hello's answer; up and down alternate, and a down
//!   says whether it had been up;
//! - a silent link goes down within [`LINK_DEAD_MS`], a slow attempt within
//!   [`LINK_CONNECT_MS`], and a down link tries again within its backoff (at once when
//!   woken by a sibling);
//! - once the store behaves, the link comes up again.

use proptest::prelude::*;
use wire::link::{LinkEncoder, LinkLimits, LinkMessage, decode_frame};

use super::backoff::MAX_BACKOFF_MS;
use super::{
    Change, INBUF_KEEP, LINK_CONNECT_MS, LINK_DEAD_MS, Link, LinkCtx, LinkOps, LinkState, Millis,
    RecvEnd,
};
use crate::uring::{Chunk, Gen};
use wire::link::auth::{ClusterSecret, Nonce, Side};

/// How far the clock moves per tick of the simulation (the worker's link timer while a
/// link is down).
const TICK_MS: Millis = 25;

#[derive(Debug, Clone)]
enum Ev {
    ConnectDone { ok: bool },
    Ack,
    WrongAck,
    Ping,
    Garbage,
    Eof,
    RecvFailed,
    Cancelled,
    Sent { part: u8, fail: bool },
    Tick,
    Wake,
    HubFrames,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => any::<bool>().prop_map(|ok| Ev::ConnectDone { ok }),
        3 => Just(Ev::Ack),
        1 => Just(Ev::WrongAck),
        2 => Just(Ev::Ping),
        1 => Just(Ev::Garbage),
        1 => Just(Ev::Eof),
        1 => Just(Ev::RecvFailed),
        1 => Just(Ev::Cancelled),
        4 => (0u8..5, prop::bool::weighted(0.1)).prop_map(|(part, fail)| Ev::Sent { part, fail }),
        4 => Just(Ev::Tick),
        1 => Just(Ev::Wake),
        2 => Just(Ev::HubFrames),
    ]
}

const PARTITIONS: u32 = 16;

/// The kernel's view: one entry per operation in flight, with its socket's generation.
#[derive(Default)]
struct Kernel {
    connect: Option<Gen>,
    recv: Option<Gen>,
    send: Option<(Gen, Vec<Chunk>)>,
}

struct Sim {
    link: Link,
    k: Kernel,
    enc: LinkEncoder,
    now: Millis,
    /// The socket the store sees, and the bytes it got on it.
    socket: Option<Gen>,
    got: Vec<u8>,
    up: bool,
    /// Since when the link has been in its current state.
    since: Millis,
    retry_by: Option<Millis>,
    ups: u32,
    frames_to_hub: u32,
    /// The store answered this socket's hello.
    acked: bool,
    /// The cluster secret the link proves (`None`: none).
    secret: Option<ClusterSecret>,
    /// The last down was for the cluster secret.
    refused: bool,
}

impl Sim {
    fn new() -> Self {
        let mut s = Self {
            link: Link::new(
                "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
                "store-a",
            ),
            k: Kernel::default(),
            enc: LinkEncoder::new(&LinkLimits::default()),
            now: 0,
            socket: None,
            got: Vec::new(),
            up: false,
            since: 0,
            retry_by: Some(0),
            ups: 0,
            frames_to_hub: 0,
            acked: false,
            secret: None,
            refused: false,
        };
        s.tick_only();
        s
    }

    fn ctx<'a>(
        enc: &'a mut LinkEncoder,
        jitter: u64,
        secret: Option<&'a ClusterSecret>,
    ) -> LinkCtx<'a> {
        LinkCtx {
            enc,
            partitions: PARTITIONS,
            map_version: 1,
            edge_id: "edge-test",
            worker: 0,
            jitter,
            secret,
            tls: None,
        }
    }

    fn on_change(&mut self, c: Option<Change>) {
        match c {
            Some(Change::Up { .. }) => {
                assert!(!self.up, "up twice");
                assert_eq!(self.link.state(), LinkState::Up);
                self.up = true;
                self.ups += 1;
                self.since = self.now;
            }
            Some(Change::Down {
                was_up,
                unauthenticated,
                ..
            }) => {
                assert_eq!(was_up, self.up, "down must say whether it had been up");
                self.refused = unauthenticated;
                self.up = false;
                self.socket = None;
                self.since = self.now;
                if let LinkState::Down { retry_at } = self.link.state() {
                    assert!(retry_at > self.now, "a retry needs a pause");
                    assert!(retry_at <= self.now + MAX_BACKOFF_MS / 2 + MAX_BACKOFF_MS);
                    self.retry_by = Some(retry_at);
                }
            }
            None => {}
        }
    }

    /// What the worker does after every input: arm what is polled, send what is queued.
    fn drive(&mut self) {
        if let Some((_, g)) = self.link.poll_recv() {
            assert!(self.k.recv.is_none(), "a second receive in flight");
            self.k.recv = Some(g);
        }
        if let Some((_, g, chunks)) = self.link.poll_transmit() {
            assert!(self.k.send.is_none(), "a second send in flight");
            assert_eq!(Some(g), self.socket, "a send on a socket given up");
            self.k.send = Some((g, chunks));
        }
    }

    fn tick_only(&mut self) {
        let mut ctx = Self::ctx(&mut self.enc, self.now * 7919, self.secret.as_ref());
        let c = self.link.handle_tick(self.now, &mut ctx);
        self.on_change(c);
        if let Some(g) = self.link.poll_connect(self.now) {
            assert!(
                self.k.connect.is_none() && self.k.recv.is_none() && self.k.send.is_none(),
                "an attempt while an earlier socket's operation is in flight"
            );
            let fd: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").expect("null").into();
            self.link.handle_socket(fd);
            self.k.connect = Some(g);
            self.socket = Some(g);
            self.got.clear();
            self.acked = false;
            self.since = self.now;
            self.retry_by = None;
        }
    }

    /// The connect succeeds and the hello goes out whole.
    fn hello_sent(&mut self) {
        self.step(&Ev::ConnectDone { ok: true });
        self.step(&Ev::Sent {
            part: 4,
            fail: false,
        });
    }

    fn store_sends(&mut self, bytes: &[u8]) {
        let Some(g) = self.k.recv else { return };
        let mut ctx = Self::ctx(&mut self.enc, 3, self.secret.as_ref());
        let hub = &mut self.frames_to_hub;
        let c = self
            .link
            .handle_recv(g, &mut bytes.to_vec(), self.now, &mut ctx, &mut |_| {
                *hub += 1
            });
        if Some(g) == self.socket && self.up {
            // Traffic: silence counts from here.
            self.since = self.now;
        }
        self.on_change(c);
    }

    fn step(&mut self, e: &Ev) {
        match *e {
            Ev::ConnectDone { ok } => {
                if let Some(g) = self.k.connect.take() {
                    let mut ctx = Self::ctx(&mut self.enc, 5, self.secret.as_ref());
                    let r = if ok { Ok(()) } else { Err(-libc::ECONNREFUSED) };
                    let nonce = Some(Nonce([g.get() as u8; 32]));
                    let c = self.link.handle_connected(g, r, self.now, &mut ctx, nonce);
                    self.on_change(c);
                }
            }
            Ev::Ack | Ev::WrongAck => {
                // The store answers once, and only a hello it got whole.
                if !self.acked
                    && decode_frame(&self.got, &LinkLimits::default())
                        .ok()
                        .flatten()
                        .is_some_and(|(f, _)| matches!(f.message, LinkMessage::Hello(_)))
                {
                    let parts = if matches!(e, Ev::Ack) {
                        PARTITIONS
                    } else {
                        PARTITIONS + 1
                    };
                    let mut v = Vec::new();
                    let _ = self.enc.hello_ack(&mut v, 0, "store-a", 1, parts);
                    self.acked = self.k.recv.is_some();
                    self.store_sends(&v);
                }
            }
            Ev::Ping => {
                let mut v = Vec::new();
                let _ = self.enc.ping(&mut v, 0, 42);
                self.store_sends(&v);
            }
            Ev::Garbage => self.store_sends(&[0xFF; 40]),
            Ev::Eof | Ev::RecvFailed | Ev::Cancelled => {
                if let Some(g) = self.k.recv.take() {
                    let end = match e {
                        Ev::Eof => RecvEnd::Eof,
                        Ev::RecvFailed => RecvEnd::Failed,
                        _ => RecvEnd::Rearm,
                    };
                    let c = self.link.handle_recv_end(g, end, self.now, 11);
                    self.on_change(c);
                }
            }
            Ev::Sent { part, fail } => self.sent(part, fail),
            Ev::Tick => {
                self.now += TICK_MS;
                self.tick_only();
            }
            Ev::Wake => {
                self.link.handle_wake(self.now);
                if matches!(self.link.state(), LinkState::Down { .. }) {
                    // Woken: the attempt comes now, or as soon as the old socket's
                    // operations are done.
                    self.retry_by = Some(self.now + TICK_MS);
                }
                self.tick_only();
            }
            Ev::HubFrames => self.link.queue(vec![1, 2, 3]),
        }
        self.drive();
        self.check_deadlines();
    }

    fn sent(&mut self, part: u8, fail: bool) {
        let Some((g, chunks)) = self.k.send.take() else {
            return;
        };
        let total: usize = chunks.iter().map(|c| c.as_slice().len()).sum();
        let n = if part >= 4 {
            total
        } else {
            total * usize::from(part) / 4
        };
        if !fail && Some(g) == self.socket {
            let mut left = n;
            for c in &chunks {
                let s = c.as_slice();
                let k = left.min(s.len());
                self.got.extend_from_slice(&s[..k]);
                left -= k;
            }
            if !self.got.is_empty() {
                let first = decode_frame(&self.got, &LinkLimits::default());
                if let Ok(Some((f, _))) = first {
                    assert!(
                        matches!(f.message, LinkMessage::Hello(_)),
                        "the first frame is a hello"
                    );
                }
            }
        }
        let r = if fail { Err(-libc::EPIPE) } else { Ok(n) };
        let c = self.link.handle_sent(g, chunks, r, self.now, 13);
        self.on_change(c);
    }

    fn check_deadlines(&mut self) {
        match self.link.state() {
            LinkState::Up => assert!(self.now <= self.since + LINK_DEAD_MS, "silent but up"),
            LinkState::Connecting { .. } | LinkState::Hello { .. } => {
                assert!(
                    self.now <= self.since + LINK_CONNECT_MS,
                    "attempt past its time"
                )
            }
            LinkState::Down { .. } => {
                // An attempt waits for an earlier socket's operations to end, then
                // comes on the next tick at the latest.
                if !self.link.ops().is_empty() {
                    self.retry_by = self.retry_by.map(|by| by.max(self.now + TICK_MS));
                }
                if let Some(by) = self.retry_by {
                    assert!(self.now <= by, "no retry by {by}");
                }
            }
            LinkState::Closed => {}
        }
    }

    /// The kernel finishes what it holds and the store behaves: the link comes up.
    fn settle(&mut self) {
        for _ in 0..(4 * MAX_BACKOFF_MS / TICK_MS + 10) {
            if self.up {
                break;
            }
            // Old sockets' receives end once shut down (a current one is armed again).
            for e in [
                Ev::Cancelled,
                Ev::ConnectDone { ok: true },
                Ev::Sent {
                    part: 4,
                    fail: false,
                },
                Ev::Ack,
                Ev::Tick,
            ] {
                self.step(&e);
            }
        }
        assert!(self.up, "never up again: {:?}", self.link.state());
        assert!(self.link.ops().has(LinkOps::RECV));
    }

    /// The store stops answering (its keep-alive pings go out, nothing comes back):
    /// the link must go down by [`LINK_DEAD_MS`].
    fn go_silent(&mut self) {
        for _ in 0..=LINK_DEAD_MS / TICK_MS {
            self.step(&Ev::Sent {
                part: 4,
                fail: false,
            });
            self.step(&Ev::Tick);
        }
        assert!(!self.up, "a silent store's link stayed up");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_link_keeps_its_promises(evs in prop::collection::vec(ev(), 0..150)) {
        let mut sim = Sim::new();
        for e in &evs {
            sim.step(e);
        }
        sim.settle();
        sim.go_silent();
    }
}

#[test]
fn a_link_comes_up_after_its_hello_is_answered_and_passes_frames_on() {
    let mut sim = Sim::new();
    sim.hello_sent();
    assert!(!sim.up);
    sim.step(&Ev::Ack);
    assert!(sim.up && sim.ups == 1);
    let mut v = Vec::new();
    let _ = sim.enc.pong(&mut v, 0, 7);
    sim.store_sends(&v);
    assert_eq!(sim.frames_to_hub, 1, "a watch pong goes to the hub");
    v.clear();
    let _ = sim
        .enc
        .pong(&mut v, 0, wire::link::KeepAliveNonce::new(3).get());
    sim.store_sends(&v);
    assert_eq!(
        sim.frames_to_hub, 1,
        "a keep-alive pong stays with the link"
    );
}

#[test]
fn a_burst_of_answers_leaves_no_large_receive_buffer_behind_its_tick() {
    let mut sim = Sim::new();
    sim.hello_sent();
    sim.step(&Ev::Ack);
    assert!(sim.up);
    let mut burst = Vec::new();
    while burst.len() < 4 * INBUF_KEEP {
        let _ = sim.enc.pong(&mut burst, 0, 7);
    }
    let whole = sim.frames_to_hub;
    // All but the last byte: one frame stays incomplete in the buffer.
    sim.store_sends(&burst[..burst.len() - 1]);
    assert!(sim.link.inbuf.capacity() > INBUF_KEEP);
    sim.tick_only();
    assert!(
        sim.link.inbuf.capacity() <= INBUF_KEEP,
        "kept after the tick"
    );
    sim.store_sends(&burst[burst.len() - 1..]);
    let mut one = Vec::new();
    let _ = sim.enc.pong(&mut one, 0, 7);
    assert_eq!(
        (sim.frames_to_hub - whole) as usize,
        burst.len() / one.len(),
        "every frame passed on, the one cut in two as well"
    );
}

#[test]
fn a_refused_link_retries_within_150_ms_and_at_once_when_woken() {
    let mut sim = Sim::new();
    sim.step(&Ev::ConnectDone { ok: false });
    let LinkState::Down { retry_at } = sim.link.state() else {
        panic!(
            "a refused connect leaves the link down: {:?}",
            sim.link.state()
        );
    };
    assert!(
        retry_at > sim.now && retry_at <= sim.now + 150,
        "{retry_at}"
    );
    assert!(
        sim.link.poll_connect(sim.now).is_none(),
        "not before its backoff"
    );
    sim.link.handle_wake(sim.now);
    assert!(
        sim.link.poll_connect(sim.now).is_some(),
        "a sibling's link came up: try now"
    );
}

/// The link's frames the store got since `from` (whole ones).
fn frames_from(got: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((_, used))) = decode_frame(&got[at..], &LinkLimits::default()) {
        out.push(got[at..at + used].to_vec());
        at += used;
    }
    out
}

fn secret(b: u8) -> ClusterSecret {
    ClusterSecret::from_file_bytes(&[b; 32]).unwrap_or_else(|_| unreachable!())
}

/// A link with `edge` connected and its hello sent; the nonce its hello carried.
fn hello_sent(edge: Option<ClusterSecret>) -> (Sim, Option<Nonce>) {
    let mut sim = Sim::new();
    sim.secret = edge;
    sim.step(&Ev::ConnectDone { ok: true });
    sim.step(&Ev::Sent {
        part: 4,
        fail: false,
    });
    let frames = frames_from(&sim.got);
    let hello = decode_frame(&frames[0], &LinkLimits::default())
        .ok()
        .flatten()
        .map(|(f, _)| match f.message {
            LinkMessage::Hello(h) => h.nonce().and_then(|n| Nonce::from_slice(n.bytes())),
            other => panic!("the first frame is {other:?}"),
        });
    (sim, hello.flatten())
}

/// The store's challenge for `edge_nonce`, proven with `store`.
fn challenge(sim: &mut Sim, store: &ClusterSecret, edge_nonce: &Nonce, store_nonce: &Nonce) {
    let proof = store.prove(Side::Store, edge_nonce, store_nonce);
    let mut v = Vec::new();
    let _ = sim.enc.auth_challenge(&mut v, 0, store_nonce, &proof);
    sim.store_sends(&v);
    sim.drive();
}

#[test]
fn with_a_secret_a_link_is_up_once_the_store_proved_it_and_got_its_proof() {
    let (mut sim, nonce) = hello_sent(Some(secret(1)));
    let edge_nonce = nonce.unwrap_or_else(|| panic!("a hello without a nonce"));
    let store_nonce = Nonce([9; 32]);
    challenge(&mut sim, &secret(1), &edge_nonce, &store_nonce);
    assert!(!sim.up, "not up before the hello's answer");
    sim.step(&Ev::Sent {
        part: 4,
        fail: false,
    });
    let frames = frames_from(&sim.got);
    let proof = decode_frame(&frames[1], &LinkLimits::default())
        .ok()
        .flatten()
        .and_then(|(f, _)| match f.message {
            LinkMessage::AuthProof(p) => Some(p.proof().bytes().to_vec()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no proof after the challenge"));
    assert!(secret(1).verify(Side::Edge, &edge_nonce, &store_nonce, &proof));
    assert!(!secret(2).verify(Side::Edge, &edge_nonce, &store_nonce, &proof));
    sim.step(&Ev::Ack);
    assert!(sim.up && !sim.refused);
}

#[test]
fn a_store_with_another_secret_or_none_is_refused_and_so_is_a_challenge_without_one() {
    // The store's proof is under another secret.
    let (mut sim, nonce) = hello_sent(Some(secret(1)));
    let edge_nonce = nonce.unwrap_or_else(|| panic!("a hello without a nonce"));
    challenge(&mut sim, &secret(2), &edge_nonce, &Nonce([9; 32]));
    assert!(sim.refused && !sim.up, "{:?}", sim.link.state());
    // The store answers the hello without proving anything (it has no secret).
    let (mut sim, _) = hello_sent(Some(secret(1)));
    sim.step(&Ev::Ack);
    assert!(sim.refused && !sim.up);
    // This edge has no secret and the store asks for one: no nonce was sent.
    let (mut sim, nonce) = hello_sent(None);
    assert!(nonce.is_none(), "a hello without a secret carries no nonce");
    challenge(&mut sim, &secret(1), &Nonce([0; 32]), &Nonce([9; 32]));
    assert!(sim.refused && !sim.up);
}
