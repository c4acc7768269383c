//! Client messages from the hub to connections: each is encoded in the connection's
//! form (JSON text, v1 or compact, or flatbuffers binary) and queued; an HTTP API connection's answers
//! go to its pipeline ([`super::conn::api`]), an event stream's become events
//! ([`super::streams`]). A change is encoded once per
//! form: the JSON body after the subscription id, the binary message with its id
//! patched per subscriber. Each subscriber gets its own few head bytes, and the shared
//! rest by reference when it is large enough for that to beat a copy. To a connection
//! that negotiated `permessage-deflate`, the shared rest goes deflated, compressed once
//! per change for all of them, behind its own head in a stored block
//! ([`super::compress`]); its other messages are compressed for it alone. A change of a
//! `latest` subscription whose connection is behind is held instead ([`super::conflate`])
//! and released when the connection's queue drains.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use wire::client::Response;
use wire::client::fb::FbEncoder;
use wire::client::json::{self, PreparedChange};
use wire::frame::{CloseCode, Opcode, encode_frame, encode_header};
use wire::handshake::deflate::SERVER_WINDOW_BITS;

use super::compress::Compression;
use super::conflate::{Conflation, Holding};
use super::conn::{Conn, Proto};
use super::slab::{Key, Slab};
use super::timer::Tick;
use super::{Worker, key_of};
use crate::hub::{BROADCAST_SUB, Delivery, INBOX_ID, INBOXES_SUB, JsonForm, Out, WORKER_CONN};
use crate::metrics::WorkerMetrics;

/// Shared bodies shorter than this are copied into the connection's queue instead.
const SHARE_MIN: usize = 512;

/// Reused encoders.
#[derive(Debug)]
pub struct Encoders {
    pub(super) fb: FbEncoder,
    pub(super) scratch: Vec<u8>,
    /// `permessage-deflate`, both ways.
    pub(super) z: Compression,
    /// Change frames queued since the figures were last published.
    pub(super) changes: u64,
}

impl Encoders {
    /// With compression as `cfg` says.
    pub fn new(cfg: &crate::config::Config) -> Self {
        Self {
            fb: FbEncoder::default(),
            scratch: Vec::new(),
            z: Compression::new(cfg),
            changes: 0,
        }
    }
}

/// Queue one frame whose payload is `head` (this connection's own bytes) then `rest`
/// (shared by every subscriber): copied when small, else sent by reference.
fn queue_split(conn: &mut Conn, opcode: Opcode, head: &[u8], rest: &Bytes) {
    let len = head.len() + rest.len();
    if rest.len() < SHARE_MIN {
        conn.queue_with(|v| {
            encode_header(v, opcode, len);
            v.extend_from_slice(head);
            v.extend_from_slice(rest);
        });
    } else {
        conn.queue_with(|v| {
            encode_header(v, opcode, len);
            v.extend_from_slice(head);
        });
        conn.queue_shared(rest.clone());
    }
}

/// Queue change `d` of subscription `id` on `conn`, in its form: the JSON body after
/// the subscription id, or the binary message with its id patched in, shared with every
/// other subscriber of the change (deflated once, if it is compressed).
fn queue_change(conn: &mut Conn, id: u64, d: &Delivery, enc: &mut Encoders) {
    let Encoders {
        fb,
        scratch,
        z,
        changes,
    } = enc;
    scratch.clear();
    *changes += 1;
    conn.mark_change();
    // The binary form's rest is a slice of its template, made here; the JSON rest is
    // borrowed (no reference-count traffic per subscriber).
    let fb_rest;
    let form = match conn.proto() {
        Proto::JsonCompact => JsonForm::Compact,
        _ => JsonForm::V1,
    };
    let (opcode, rest) = if conn.proto() != Proto::Fb {
        match form {
            JsonForm::V1 => PreparedChange::write_head(id, scratch),
            JsonForm::Compact => PreparedChange::write_head_compact(id, scratch),
        }
        (Opcode::Text, d.json_tail(form))
    } else {
        let Some((tpl, at)) = d.fb_template(fb) else {
            fb.encode_response(&d.response(id), scratch);
            return queue_own(conn, Opcode::Binary, scratch, z);
        };
        // The message encoded once: this subscriber's copy of its head with the id
        // patched in, then the shared rest.
        let end = at + 8;
        scratch.extend_from_slice(tpl.get(..end).unwrap_or_default());
        if let Some(slot) = scratch.get_mut(*at..end) {
            slot.copy_from_slice(&id.to_le_bytes());
        }
        fb_rest = tpl.slice(end..);
        (Opcode::Binary, &fb_rest)
    };
    match conn.deflate() {
        None => queue_split(conn, opcode, scratch, rest),
        Some(SERVER_WINDOW_BITS) => {
            let whole = scratch.len() + rest.len();
            let deflate = |r: &[u8]| z.deflate_shared(r, whole);
            let shared = if opcode == Opcode::Text {
                d.json_tail_deflated(form, deflate)
            } else {
                d.fb_rest_deflated(rest, deflate)
            };
            match shared {
                Some(rest_z) => z.queue_split(conn.out(), opcode, scratch, rest_z, SHARE_MIN),
                None => queue_split(conn, opcode, scratch, rest),
            }
        }
        // A window the shared compression does not fit: compressed for it alone.
        Some(window) => {
            scratch.extend_from_slice(rest);
            z.queue(conn.out(), opcode, scratch, window);
        }
    }
}

/// Queue `body`, a message of `conn`'s own, compressed if the connection is and it is
/// worth it.
fn queue_own(conn: &mut Conn, opcode: Opcode, body: &[u8], z: &mut Compression) {
    match conn.deflate() {
        Some(window) => z.queue(conn.out(), opcode, body, window),
        None => conn.queue_with(|v| encode_frame(v, opcode, body)),
    }
}

/// Who a change of the worker's own subscriptions goes to.
#[derive(Debug, Clone, Copy)]
enum Recipients {
    /// Every admitted connection (broadcast).
    Admitted,
    /// The connections authenticated as the user whose inbox changed.
    Inbox,
}

/// Queue change `d` on each of its recipients (as the automatic subscription
/// [`INBOX_ID`]); returns how many.
fn send_to_many(
    conns: &mut Slab<Conn>,
    hub: &crate::hub::Hub,
    to: Recipients,
    d: &Delivery,
    enc: &mut Encoders,
    touched: &mut Vec<Key>,
) -> u64 {
    let mut n = 0;
    let mut queue = |key: Key, conn: &mut Conn| {
        if conn.admitted() {
            queue_change(conn, INBOX_ID, d, enc);
            touched.push(key);
            n += 1;
        }
    };
    match to {
        Recipients::Admitted => conns.iter_mut().for_each(|(key, conn)| queue(key, conn)),
        Recipients::Inbox => {
            let subject = crate::hub::inbox_subject(&d.key);
            for &c in hub.inbox_conns(&d.key) {
                let key = key_of(c);
                // The map is by the subject's hash: a collision is checked here.
                if let Some(conn) = conns.get_mut(key).filter(|c| c.subject() == subject) {
                    queue(key, conn);
                }
            }
        }
    }
    n
}

/// Who a message of the worker's own subscriptions goes to, and the change it carries
/// (`None`: nobody; their snapshots and errors go nowhere).
fn own_recipients(o: &Out) -> Option<(Recipients, &Rc<Delivery>)> {
    match o {
        Out::Change(_, BROADCAST_SUB, d) => Some((Recipients::Admitted, d)),
        Out::Change(_, INBOXES_SUB, d) | Out::Inbox(d) => Some((Recipients::Inbox, d)),
        _ => None,
    }
}

/// A subscription's message arrives while it holds changes: a reset or a snapshot
/// replaces them (they are dropped), a `resumed` lets them go out first. Anything else
/// (a reply that merely reuses the id, an error, which `Ended` follows) leaves them.
fn held_before(
    held: &mut Conflation,
    key: Key,
    msg: &Response<'_>,
    conn: &mut Conn,
    enc: &mut Encoders,
) {
    match msg {
        Response::Reset { id, .. } | Response::Snapshot { id, .. } => held.end(key, *id),
        Response::Resumed { id, .. } => {
            for (sub, d) in held.release_sub(key, *id) {
                queue_change(conn, sub, &d, enc);
            }
        }
        _ => {}
    }
}

/// Queue response `msg` on `conn`, in its form.
pub(super) fn queue_msg(conn: &mut Conn, msg: &Response<'_>, enc: &mut Encoders) {
    let Encoders { fb, scratch, z, .. } = enc;
    scratch.clear();
    if conn.proto() == Proto::Fb {
        fb.encode_response(msg, scratch);
        queue_own(conn, Opcode::Binary, scratch, z);
    } else {
        if conn.proto() == Proto::JsonCompact {
            json::encode_response_compact(msg, scratch);
        } else {
            json::encode_response(msg, scratch);
        }
        queue_own(conn, Opcode::Text, scratch, z);
    }
}

/// Whether `msg` answers one request of its connection (its send goes before the
/// round's fan-out). Snapshots, resets and `resumed` are not: one link's loss or one
/// group's reset sends them to every member at once.
fn is_answer(msg: &Response<'_>) -> bool {
    matches!(
        msg,
        Response::Ok { .. }
            | Response::Value { .. }
            | Response::Error { .. }
            | Response::Members { .. }
    )
}

/// An HTTP API request's answer (nothing else goes to one), into its pipeline.
fn deliver_api(conn: &mut Conn, key: Key, o: &Out, round: &mut Round, now: Tick) {
    if let Out::Msg(_, msg) = o {
        conn.mark_answer();
        if conn.handle_api_answer(msg, now) && round.resume.last() != Some(&key) {
            round.resume.push(key);
        }
        round.touched.push(key);
    }
}

/// What queuing to an event stream needs of the worker.
struct Sse<'a> {
    streams: &'a mut super::streams::Streams,
    scratch: &'a mut Vec<u8>,
    metrics: &'a WorkerMetrics,
}

impl Sse<'_> {
    /// Queue `o` to the event stream `conn` (at `key`): each message an event, encoded
    /// for it alone; one whose subscription ended ends too (its error event is queued),
    /// and the browser comes back with its last event id. `true`: counted as sent
    /// (queued, or the stream closed).
    fn deliver(self, key: Key, conn: &mut Conn, o: &Out, now: Tick) -> bool {
        match o {
            Out::Msg(_, msg) => self.streams.queue(key, conn, msg, self.scratch),
            Out::Change(_, id, d) => self
                .streams
                .queue(key, conn, &d.response(*id), self.scratch),
            Out::Ended(..) => conn.close(CloseCode::NORMAL, "", now, self.metrics),
            _ => return false,
        }
        true
    }
}

/// What one round of [`Worker::dispatch`] gathers.
#[derive(Debug, Default)]
struct Round {
    /// Connections with something new queued, to drive (each once in a row).
    touched: Vec<Key>,
    /// HTTP API connections whose pipeline has room again.
    resume: Vec<Key>,
    /// Messages queued.
    messages: u64,
}

impl Round {
    /// One message was queued on the connection at `key`.
    fn sent(&mut self, key: Key) {
        self.messages += 1;
        if self.touched.last() != Some(&key) {
            self.touched.push(key);
        }
    }
}

impl Worker {
    /// Queue every message the hub produced this round (a `latest` subscription's change
    /// may be held instead: [`super::conflate`]).
    pub(super) fn dispatch(&mut self) {
        if self.hub.out.is_empty() {
            return;
        }
        let out = std::mem::take(&mut self.hub.out);
        let mut round = Round::default();
        for o in &out {
            let me = o.conn();
            if me == WORKER_CONN {
                // The worker's own subscriptions: their changes go to many connections,
                // their other messages (snapshots, errors) nowhere.
                if let Some((to, d)) = own_recipients(o) {
                    let (conns, touched) = (&mut self.conns, &mut round.touched);
                    round.messages +=
                        send_to_many(conns, &self.hub, to, d, &mut self.delivery, touched);
                }
                continue;
            }
            self.deliver_one(key_of(me), o, &mut round);
        }
        WorkerMetrics::add(&self.metrics.messages_out, round.messages);
        self.metrics
            .deliveries
            .store(self.hub.stats.deliveries, Ordering::Relaxed);
        self.metrics
            .joins_shared
            .store(self.hub.stats.joins_shared, Ordering::Relaxed);
        self.arm_presence_timer();
        for key in round.resume {
            self.api_resume(key);
        }
        for key in round.touched {
            self.release_held(key);
            self.drive(key);
        }
    }

    /// Queue message `o` for the connection at `key`, in its form: an HTTP API
    /// connection's answer to its pipeline, an event stream's message as an event, a
    /// WebSocket's as a frame (or held, for a `latest` subscription behind).
    fn deliver_one(&mut self, key: Key, o: &Out, round: &mut Round) {
        let now = self.wheel.now();
        let Self {
            conns,
            delivery: enc,
            conflation: held,
            batches,
            streams,
            cfg,
            metrics,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        if conn.is_api() {
            return deliver_api(conn, key, o, round, now);
        }
        if !conn.is_open() {
            return;
        }
        if conn.proto() == Proto::Sse {
            let sse = Sse {
                streams,
                scratch: &mut enc.scratch,
                metrics,
            };
            if sse.deliver(key, conn, o, now) {
                round.sent(key);
            }
            return;
        }
        match o {
            Out::Msg(_, msg) => {
                if held.holds(key) {
                    held_before(held, key, msg, conn, enc);
                }
                batches.before(key, msg, conn, enc);
                queue_msg(conn, msg, enc);
                if is_answer(msg) {
                    conn.mark_answer();
                }
            }
            Out::Presence(_, id, d) => {
                if !cfg.presence_batch.is_zero() {
                    batches.push(key, *id, Rc::clone(d));
                    return;
                }
                if let Some(m) = super::presence::events_message(*id, std::slice::from_ref(d)) {
                    queue_msg(conn, &m, enc);
                }
            }
            Out::Change(_, id, d) => queue_change(conn, *id, d, enc),
            Out::Latest(_, id, d) => {
                if held.holds(key) || conn.queued_bytes() > cfg.latest_above {
                    if held.hold(key, *id, Rc::clone(d)) == Holding::Replaced {
                        WorkerMetrics::add(&metrics.conflated, 1);
                    }
                    if held.held_bytes(key) + conn.queued_bytes() > cfg.max_outbound {
                        // Ever new keys: what it follows no longer fits.
                        held.forget(key);
                        conn.close_slow(now, metrics);
                    }
                    return;
                }
                queue_change(conn, *id, d, enc);
            }
            Out::Ended(_, id) => {
                held.end(key, *id);
                batches.drop_sub(key, *id);
                return;
            }
            // Taken with the worker's own subscriptions.
            Out::Inbox(_) => return,
        }
        round.sent(key);
    }

    /// Once the connection at `key` has sent all but half of `latest_above`: what its
    /// `latest` subscriptions hold goes out, in order, up to `latest_above` bytes (the
    /// rest stays held, for its next drain).
    pub(super) fn release_held(&mut self, key: Key) {
        if !self.conflation.holds(key) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            self.conflation.forget(key);
            return;
        };
        if !conn.is_open() || conn.queued_bytes() > self.cfg.latest_above / 2 {
            return;
        }
        let mut sent = 0u64;
        for (id, d) in self.conflation.release(key) {
            if conn.queued_bytes() > self.cfg.latest_above {
                self.conflation.hold(key, id, d);
                continue;
            }
            queue_change(conn, id, &d, &mut self.delivery);
            sent += 1;
        }
        WorkerMetrics::add(&self.metrics.messages_out, sent);
    }

    /// Hold the worker's own subscriptions: broadcast, and with authentication on the
    /// inboxes (made again if one failed).
    pub(super) fn ensure_own_subs(&mut self) {
        let inboxes = self.cfg.inbox && self.cfg.auth != crate::config::AuthMode::Off;
        self.hub.ensure_own_subs(self.cfg.broadcast, inboxes);
    }

    /// Once a tick: the hub's figures and the queue depth go to `/metrics`.
    pub(super) fn publish_hub(&self) {
        let m = &self.metrics;
        m.watches
            .store(self.hub.watches() as u64, Ordering::Relaxed);
        m.subscriptions
            .store(self.hub.subscriptions() as u64, Ordering::Relaxed);
        let queued: usize = self.conns.iter().map(|(_, c)| c.queued_bytes()).sum();
        m.queued_bytes.store(queued as u64, Ordering::Relaxed);
        m.receive_buffer_bytes
            .store(self.bufs.provided_bytes() as u64, Ordering::Relaxed);
        m.latest_held
            .store(self.conflation.held() as u64, Ordering::Relaxed);
        m.presence_joins
            .store(self.hub.presence_members() as u64, Ordering::Relaxed);
        m.presence_waiting
            .store(self.batches.len() as u64, Ordering::Relaxed);
        self.delivery.z.publish(m);
    }
}
