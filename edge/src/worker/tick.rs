//! The worker's one-second tick: links are reconnected, pinged or dropped (a link
//! that is down also has its own 25 ms timer, see `links.rs`), the hub's and the
//! compression's figures published, spare memory given back, a SIGTERM drain advanced (health
//! check says 503, the listeners close, connections are closed in a smooth wave), a
//! reloaded token verifier and TLS config taken, idle source addresses forgotten
//! (worker 0), and every connection whose deadline is due gets
//! [`Conn::handle_timer`](super::conn::Conn::handle_timer).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;
use wire::frame::CloseCode;

use super::slab::Key;
use super::{Worker, secs};
use crate::uring::{OpKind, Token};

/// A SIGTERM drain in progress.
#[derive(Debug)]
pub(super) struct Drain {
    pub(super) started: Instant,
    /// Ticks over which connections are closed.
    spread: u64,
    /// Ticks elapsed.
    ticks: u64,
}

/// How long `/healthz` says 503 before the listener closes, so that a load balancer's
/// health check sees it first.
const DRAIN_NOTICE_TICKS: u64 = 2;

impl Worker {
    pub(super) fn on_tick(&mut self) {
        let mut due = Vec::new();
        self.wheel.advance(&mut due);
        let now = self.wheel.now();
        self.links_tick(self.links.now());
        self.publish_hub();
        self.ensure_own_subs();
        self.hub.trim();
        self.ring.trim();
        self.conns.trim();
        crate::mem::trim_deque(&mut self.dirty);
        crate::mem::trim_deque(&mut self.answers);
        self.delivery.z.trim();
        self.drain_tick();
        self.reload_keys();
        self.reload_tls();
        if self.id == 0 {
            self.shared.per_ip.sweep(Instant::now());
        }
        for key in due {
            self.timer(key, now);
        }
        let _ = self
            .ring
            .tick(Duration::from_secs(1), Token::worker(OpKind::Tick));
    }

    /// Take the new verifier if the key file was reloaded since the last look.
    fn reload_keys(&mut self) {
        if let Some(keys) = &self.shared.keys {
            let seen = keys.generation();
            if seen != self.keys_seen {
                self.verifier = Some(keys.current());
                self.keys_seen = seen;
            }
        }
    }

    /// Take the new TLS config if the certificates were reloaded since the last look
    /// (sessions already started keep theirs).
    fn reload_tls(&mut self) {
        if let Some(certs) = &self.shared.certs {
            let seen = certs.generation();
            if seen != self.tls_seen {
                self.tls = Some(certs.current());
                self.tls_seen = seen;
            }
        }
    }

    /// Start a drain once the stop flag is set, then advance it.
    fn drain_tick(&mut self) {
        if self.shared.stop.load(Ordering::Relaxed) && self.drain.is_none() {
            info!(worker = self.id, connections = self.conns.len(), "draining");
            let spread = (self.cfg.drain.as_secs() / 2).max(1);
            self.drain = Some(Drain {
                started: Instant::now(),
                spread,
                ticks: 0,
            });
        }
        let Some(d) = &mut self.drain else {
            return;
        };
        d.ticks += 1;
        let (ticks, spread) = (d.ticks, d.spread);
        if ticks == DRAIN_NOTICE_TICKS {
            self.stop_accepting();
        }
        if ticks > DRAIN_NOTICE_TICKS {
            // Close a share of what is left each tick, so clients reconnect in a
            // smooth wave rather than all at once.
            let left = spread.saturating_sub(ticks - DRAIN_NOTICE_TICKS).max(1);
            let n = self.conns.len().div_ceil(left as usize);
            self.close_some(n, CloseCode::GOING_AWAY, "server going away");
        }
    }

    /// Close up to `n` connections that are not closing yet.
    fn close_some(&mut self, n: usize, code: CloseCode, reason: &str) {
        let picked: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_live())
            .map(|(k, _)| k)
            .take(n)
            .collect();
        let now = self.wheel.now();
        for key in picked {
            if let Some(c) = self.conns.get_mut(key) {
                c.close(code, reason, now, &self.metrics);
            }
            self.drive(key);
        }
    }

    /// A connection's timer fired: handshake deadline, heartbeat, silence, flush or
    /// linger deadline.
    fn timer(&mut self, key: Key, now: super::timer::Tick) {
        let hb = secs(self.cfg.heartbeat);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.handle_timer(now, hb, &self.ping, &self.metrics);
        self.drive(key);
    }
}
