//! A worker's routing state, without I/O. Client requests from `/ws` connections come in
//! ([`Hub::request`]); link frames from stores come in ([`Hub::on_frame`]); out go link
//! frames, appended per store to [`Hub::link_out`], and client messages, appended to
//! [`Hub::out`]. The worker moves bytes; everything about who gets what lives here.
//!
//! - Reads and writes (this file) go to the store owning the key's partition; the reply
//!   goes back to the request's connection. A request for a store whose link is down gets
//!   `unavailable` at once.
//! - Subscriptions are grouped: one group per (worker, key or prefix) however many local
//!   clients follow it. Every client subscription is a member of its target's group; the
//!   group holds the internal watch(es) whose changes are fanned out to its members, each
//!   change encoded once ([`Delivery`]). A subscription in `latest` mode gets its changes
//!   as [`Out::Latest`] (the worker may conflate them) and its end as [`Out::Ended`].
//! - `durable`: acknowledged positions; `sending`: users' inboxes and broadcast.
//!
//! How a member starts: it gets its own *join* watch on the store (a snapshot, or a resume
//! from its token), so that what it receives is exactly consistent with its own position.
//! When the join has answered for all of its partitions, it is either adopted as the
//! group's watch (if the group had none there yet) or retired (`Unwatch`, then a ping
//! whose pong proves its last frames are in): the group's watch carries the member from
//! then on. Changes are delivered to a member only past its own position, so a change
//! arriving through both watches, or one the member's snapshot already includes, is never
//! delivered twice. Members resuming from the same position share one join while it has
//! heard nothing from its store (a reconnect storm's clients of one key): its answer is
//! each one's, as if each had issued it.
//!
//! Positions: the group keeps the position it delivered per partition; a member whose
//! positions equal the group's ("synced", the normal state) shares the group's frame and
//! token; a member that is ahead somewhere (it joined after a newer snapshot) keeps its
//! own positions until the group catches up.
//!
//! Link loss: group watches on the lost link are re-established from the group's
//! positions when the link is back (the store answers `Resumed`, or `Reset` + snapshot);
//! members still joining through it get `unavailable` and must subscribe again.
//!
//! The files, by concern:
//! - `index`: where groups (`GroupId`), subscriptions ([`SubRef`]) and watches
//!   are found.
//! - `group`: one group: its partitions' positions (24 bytes each), its own watches, its
//!   members.
//! - `members`: one member's own state while it starts or is ahead, and its transitions
//!   (a change, a snapshot page, a resume answer), each returning what to deliver.
//! - `join`: subscribe and unsubscribe; the join watches that start a member, adopted or
//!   retired when complete.
//! - `watches`: watch roles and watch ids ([`wire::link::WatchId`]); retiring, pongs,
//!   refusals, a link's loss and return.
//! - `delivery`: changes, snapshot pages, resumes and resets from the stores, to the
//!   members they concern.
//! - `snapshot`: a store's snapshot page cut into client messages.

mod delivery;
mod durable;
mod echo;
mod group;
mod index;
mod join;
mod members;
mod presence;
mod sending;
mod snapshot;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_model;
mod watches;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use wire::client::{ErrorCode, Position, Request, Response, SubMode, Target, encode_token};
use wire::cluster::ClusterMap;
use wire::link::{LinkEncoder, LinkFrame, LinkLimits, LinkMessage, MsgIdRef, WatchId};

pub use delivery::{Delivery, JsonForm};
pub use durable::touches_reserved;
pub use sending::{BROADCAST_SUB, INBOX_ID, INBOXES_SUB, WORKER_CONN, inbox_subject};

/// A connection of this worker: (slab index, generation).
pub type ConnRef = (u32, u32);

/// One client subscription: its connection and the id the client gave it. Ordered by
/// connection first, so that one connection's subscriptions are a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubRef {
    pub(crate) conn: ConnRef,
    pub(crate) id: u64,
}

/// A message for a client connection.
#[derive(Debug)]
pub enum Out {
    /// One response, for one connection.
    Msg(ConnRef, Response<'static>),
    /// A change for subscription `id` of a connection; the change is shared by every
    /// subscriber it goes to.
    Change(ConnRef, u64, Rc<Delivery>),
    /// The same, for a subscription in `latest` mode: the worker may hold it back and
    /// send only the newest change per key once the connection has caught up.
    Latest(ConnRef, u64, Rc<Delivery>),
    /// Subscription `id` (in `latest` mode) of a connection ended: whatever the worker
    /// holds back for it is dropped.
    Ended(ConnRef, u64),
    /// A change of a user's inbox, for the worker's connections authenticated as the
    /// user ([`Hub::inbox_conns`]).
    Inbox(Rc<Delivery>),
    /// A member of a channel joined or left, for presence subscription `id` of a
    /// connection (the worker batches these per subscription).
    Presence(ConnRef, u64, Rc<Delivery>),
}

impl Out {
    /// The connection it is for ([`WORKER_CONN`] for the worker's own deliveries).
    #[must_use]
    pub fn conn(&self) -> ConnRef {
        match self {
            Self::Msg(c, _)
            | Self::Change(c, _, _)
            | Self::Latest(c, _, _)
            | Self::Ended(c, _)
            | Self::Presence(c, _, _) => *c,
            Self::Inbox(_) => WORKER_CONN,
        }
    }
}

/// A read or write waiting for its store's reply.
#[derive(Debug)]
struct Pending {
    conn: ConnRef,
    id: u64,
    store: usize,
    kind: PendingKind,
}

/// What a store's reply is for.
#[derive(Debug)]
enum PendingKind {
    /// A client's get, put or delete: the reply goes to it.
    Plain,
    /// A client's publish (its reply carries no version); `echo: false`: its change
    /// does not come back to the publishing connection.
    Publish {
        echo: bool,
    },
    /// The record of a durable `sub`, read before it subscribes.
    DurableSub(Box<durable::DurableSub>),
    /// An `ack` reading, then writing, its subscription's record.
    AckRead(Box<durable::AckState>),
    AckWrite(Box<durable::AckState>),
    /// A `join` (with the number of its record: forgotten if it fails) or a `leave`.
    Presence {
        join: Option<u64>,
    },
    /// A `presence` page of the channel whose member keys start with `prefix`.
    Members {
        prefix: Box<str>,
    },
}

/// Most subscriptions one connection may hold, unless configured otherwise.
pub const MAX_SUBS_PER_CONN: usize = 1000;

/// Most reads and writes one connection may have waiting for their stores; past it a
/// request gets `overloaded` (a client pipelining faster than the store answers cannot
/// grow the edge's memory without bound).
pub const MAX_INFLIGHT_PER_CONN: u32 = 1024;

/// Figures the worker publishes.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    /// Changes delivered to subscribers.
    pub deliveries: u64,
    /// Resume joins ridden instead of issued (one per partition of a member that rode
    /// on another's join).
    pub joins_shared: u64,
}

/// The routing state of one worker.
#[derive(Debug)]
pub struct Hub {
    map: Arc<ClusterMap>,
    enc: LinkEncoder,
    /// Per store: the link is up (its hello was answered).
    up: Vec<bool>,
    /// Per store: encoded frames waiting to be sent on its link.
    pub link_out: Vec<Vec<u8>>,
    /// Messages for clients, drained by the worker.
    pub out: Vec<Out>,
    /// Request ids and watch ids, one sequence.
    next_id: u64,
    requests: HashMap<u64, Pending>,
    /// Requests waiting, per connection (absent: none).
    inflight: HashMap<ConnRef, u32>,
    groups: index::Groups,
    /// The subscriptions in `latest` mode (most workers have none: then a delivery
    /// costs one emptiness check more).
    latest: HashSet<SubRef>,
    /// Durable subscriptions' records (see `durable`).
    durables: HashMap<SubRef, Box<str>>,
    /// Which connections get whose inbox (see `sending`).
    inboxes: sending::Inboxes,
    /// Publishes whose change must not come back to their connection (see `echo`).
    no_echo: echo::NoEcho,
    /// Joins and presence subscriptions (see `presence`).
    presence: presence::Presence,
    /// Most subscriptions one connection may hold.
    max_subs: usize,
    /// Counters.
    pub stats: HubStats,
}

impl Hub {
    /// The cluster's number of partitions.
    pub fn partitions(&self) -> u32 {
        self.map.partitions
    }

    /// A hub routing with `map`; every link starts down.
    pub fn new(map: Arc<ClusterMap>) -> Self {
        let n = map.stores.len();
        Self {
            map,
            enc: LinkEncoder::new(&LinkLimits::default()),
            up: vec![false; n],
            link_out: vec![Vec::new(); n],
            out: Vec::new(),
            next_id: 1,
            requests: HashMap::new(),
            inflight: HashMap::new(),
            groups: index::Groups::default(),
            latest: HashSet::new(),
            durables: HashMap::new(),
            inboxes: sending::Inboxes::new(),
            no_echo: echo::NoEcho::default(),
            presence: presence::Presence::default(),
            max_subs: MAX_SUBS_PER_CONN,
            stats: HubStats::default(),
        }
    }

    /// At most `n` subscriptions per connection (at least 1).
    #[must_use]
    pub fn with_max_subs(mut self, n: usize) -> Self {
        self.max_subs = n.max(1);
        self
    }

    /// Name this worker's connections in presence as worker `worker` of the edge process
    /// `edge` (its links' `edge_id`).
    #[must_use]
    pub fn with_presence(mut self, edge: &str, worker: u16) -> Self {
        self.presence = presence::Presence::new(edge, worker);
        self
    }

    /// Whether the link to store `s` is up.
    pub fn is_up(&self, s: usize) -> bool {
        self.up.get(s).copied().unwrap_or(false)
    }

    /// Internal watches open (group watches and joins in progress).
    pub fn watches(&self) -> usize {
        self.groups.watch_count()
    }

    /// Client subscriptions held (the worker's own broadcast subscription aside).
    pub fn subscriptions(&self) -> usize {
        let own = [BROADCAST_SUB, INBOXES_SUB]
            .into_iter()
            .filter(|&id| {
                self.groups.has_sub(SubRef {
                    conn: WORKER_CONN,
                    id,
                })
            })
            .count();
        self.groups.sub_count() - own
    }

    /// Give back what a burst left behind (see [`crate::mem`]).
    pub fn trim(&mut self) {
        crate::mem::trim_map(&mut self.requests);
        crate::mem::trim_map(&mut self.inflight);
        crate::mem::trim_map(&mut self.inboxes);
        crate::mem::trim_map(&mut self.durables);
        self.no_echo.tick();
        // `out` and `link_out` need none: the worker takes them whole every round.
        self.groups.trim();
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn store_of(&self, key: &str) -> usize {
        let p = self.map.partition_of(key.as_bytes());
        self.map.owner_index(p).unwrap_or(0)
    }

    fn reply(&mut self, conn: ConnRef, msg: Response<'static>) {
        self.out.push(Out::Msg(conn, msg));
    }

    fn fail(
        &mut self,
        conn: ConnRef,
        id: u64,
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.reply(
            conn,
            Response::Error {
                id: Some(id),
                code,
                message: message.into(),
                version: None,
            },
        );
    }

    /// A request from connection `conn`, whose token names `subject` (empty: anonymous).
    /// A write's msg_id goes to the store scoped by the subject, so one user's ids never
    /// meet another's; anonymous connections share one scope.
    pub fn request(&mut self, conn: ConnRef, req: Request<'_>, subject: &str) {
        let scope = scope_of(subject);
        let subject = &*scope;
        match req {
            Request::Sub {
                id,
                target,
                from,
                mode,
                durable: None,
            } => {
                self.replace_inbox(conn, &target, subject);
                self.sub_with_mode(SubRef { conn, id }, &target, from.as_deref(), mode);
            }
            Request::Sub {
                id,
                target,
                from,
                mode,
                durable: Some(name),
            } => {
                let record = durable::record_key(subject, &name, &target);
                self.durable_sub(SubRef { conn, id }, target, from.as_deref(), mode, record);
            }
            Request::Ack { id, token } => self.ack(conn, id, &token),
            Request::Join {
                id,
                channel,
                meta,
                device,
            } => self.join(conn, id, &channel, &meta, device.as_deref(), subject),
            Request::Leave { id, channel } => self.leave(conn, id, &channel),
            Request::Presence {
                id,
                channel,
                cursor,
                count_only,
            } => self.presence_query(conn, id, &channel, cursor.as_deref(), count_only),
            Request::Unsub { id } => {
                if self.unsubscribe(SubRef { conn, id }) {
                    self.reply(conn, presence::ok(id));
                } else {
                    self.fail(conn, id, ErrorCode::BadRequest, "no such subscription");
                }
            }
            Request::Get { id, key } => {
                self.forward(conn, id, &key, PendingKind::Plain, |enc, out, rid| {
                    enc.get(out, rid, &key)
                });
            }
            w @ (Request::Put { .. } | Request::Del { .. } | Request::Pub { .. }) => {
                self.write(conn, &w, subject);
            }
            // The connection answers `auth` itself; one that reached here is a bug,
            // refused rather than forwarded.
            Request::Auth { id, .. } => {
                self.fail(conn, id, ErrorCode::Internal, "auth is not routed");
            }
        }
    }

    /// A `put`, `del` or `pub` of connection `conn`: to the key's store, its msg_id in
    /// `scope`.
    fn write(&mut self, conn: ConnRef, req: &Request<'_>, scope: &str) {
        let msg = scoped(req.msg_id(), scope);
        match req {
            Request::Put {
                id,
                key,
                value,
                if_version,
                ..
            } => {
                self.forward(conn, *id, key, PendingKind::Plain, |enc, out, rid| {
                    enc.put(out, rid, key, value, *if_version, msg)
                });
            }
            Request::Del {
                id,
                key,
                if_version,
                ..
            } => {
                self.forward(conn, *id, key, PendingKind::Plain, |enc, out, rid| {
                    enc.delete(out, rid, key, *if_version, msg)
                });
            }
            Request::Pub {
                id,
                key,
                value,
                echo,
                ..
            } => {
                let kind = PendingKind::Publish { echo: *echo };
                self.forward(conn, *id, key, kind, |enc, out, rid| {
                    enc.publish(out, rid, key, value, msg)
                });
            }
            _ => {}
        }
    }

    /// Send a read or write to the store owning `key`; whether it went (else the client
    /// has its error).
    fn forward(
        &mut self,
        conn: ConnRef,
        id: u64,
        key: &str,
        kind: PendingKind,
        encode: impl FnOnce(
            &mut LinkEncoder,
            &mut Vec<u8>,
            u64,
        ) -> Result<(), wire::link::FrameTooLarge>,
    ) -> bool {
        let store = self.store_of(key);
        if self.inflight.get(&conn).copied().unwrap_or(0) >= MAX_INFLIGHT_PER_CONN {
            self.fail(
                conn,
                id,
                ErrorCode::Overloaded,
                "too many requests waiting on this connection",
            );
            return false;
        }
        if !self.is_up(store) {
            self.fail(
                conn,
                id,
                ErrorCode::Unavailable,
                "the key's store is unreachable",
            );
            return false;
        }
        let rid = self.id();
        let Some(out) = self.link_out.get_mut(store) else {
            return false;
        };
        if encode(&mut self.enc, out, rid).is_err() {
            self.fail(conn, id, ErrorCode::TooLarge, "request too large");
            return false;
        }
        self.requests.insert(
            rid,
            Pending {
                conn,
                id,
                store,
                kind,
            },
        );
        *self.inflight.entry(conn).or_insert(0) += 1;
        true
    }

    /// Take request `rid` off the waiting list.
    fn take_request(&mut self, rid: u64) -> Option<Pending> {
        let p = self.requests.remove(&rid)?;
        if let Some(n) = self.inflight.get_mut(&p.conn) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight.remove(&p.conn);
            }
        }
        Some(p)
    }

    /// A connection closed: its subscriptions end.
    pub fn conn_closed(&mut self, conn: ConnRef) {
        self.inflight.remove(&conn);
        self.presence_closed(conn);
        for id in self.groups.subs_of(conn) {
            self.unsubscribe(SubRef { conn, id });
        }
    }

    /// The link to store `s` is up (hello answered): re-establish the watches it lost.
    pub fn link_up(&mut self, s: usize) {
        if let Some(u) = self.up.get_mut(s) {
            *u = true;
        }
        self.presence_announce(s);
        self.rewatch(s);
    }

    /// The link to store `s` dropped: what waited on it fails, watches wait to resume.
    pub fn link_down(&mut self, s: usize) {
        if let Some(u) = self.up.get_mut(s) {
            *u = false;
        }
        if let Some(out) = self.link_out.get_mut(s) {
            out.clear();
        }
        let lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| p.store == s)
            .map(|(&rid, _)| rid)
            .collect();
        for rid in lost {
            if let Some(p) = self.take_request(rid) {
                self.fail(
                    p.conn,
                    p.id,
                    ErrorCode::Unavailable,
                    "the key's store became unreachable; the outcome is unknown",
                );
            }
        }
        self.lose_watches(s);
    }

    /// A read's reply: the value to the client, or to the durable subscription or ack
    /// that asked.
    fn on_get_reply(&mut self, p: Pending, r: &wire::link::internal::GetReply<'_>) {
        let value = r
            .found()
            .then(|| r.value().map(|v| v.bytes()).unwrap_or_default());
        let version = if value.is_some() { r.version() } else { 0 };
        match p.kind {
            PendingKind::DurableSub(d) => {
                self.durable_record(
                    SubRef {
                        conn: p.conn,
                        id: p.id,
                    },
                    *d,
                    value,
                );
            }
            PendingKind::AckRead(a) => {
                self.ack_read(p.conn, p.id, *a, value.map(|v| (v, version)));
            }
            _ => self.reply(
                p.conn,
                Response::Value {
                    id: p.id,
                    key: Cow::Owned(r.key().to_owned()),
                    value: value.map(|v| Cow::Owned(v.to_vec())),
                    version,
                },
            ),
        }
    }

    /// A write's reply: `ok` to the client (an ack's, once its record is written).
    fn on_write_reply(&mut self, p: Pending, r: &wire::link::internal::WriteReply<'_>) {
        let publish = match p.kind {
            PendingKind::AckWrite(_) => return self.acked(p.conn, p.id),
            PendingKind::Presence { .. } => return self.reply(p.conn, presence::ok(p.id)),
            PendingKind::Publish { echo } => {
                if let (false, Some(pos)) = (echo, r.position()) {
                    self.no_echo.insert(Position::from(pos), p.conn);
                }
                true
            }
            _ => false,
        };
        let token = r.position().map(|pos| encode_token(&[Position::from(pos)]));
        self.reply(
            p.conn,
            Response::Ok {
                id: p.id,
                version: (!publish).then(|| r.version()),
                token: token.map(Cow::Owned),
            },
        );
    }

    /// A request failed at its store: the error to the client (an ack whose write lost
    /// to another reads the record again).
    fn on_error_reply(&mut self, p: Pending, e: &wire::link::internal::Error<'_>) {
        let code = map_code(e.code());
        match (p.kind, code) {
            (PendingKind::AckWrite(a), ErrorCode::Conflict) => {
                return self.ack_conflict(p.conn, p.id, *a);
            }
            (PendingKind::Presence { join: Some(seq) }, _) => self.join_failed(p.conn, seq),
            _ => {}
        }
        let message = e.message().unwrap_or("store error").to_owned();
        let version = (code == ErrorCode::Conflict).then(|| e.current_version());
        self.reply(
            p.conn,
            Response::Error {
                id: Some(p.id),
                code,
                message: Cow::Owned(message),
                version,
            },
        );
    }

    /// Subscribe `sub` in `mode`; whether it is subscribed now.
    fn sub_with_mode(
        &mut self,
        sub: SubRef,
        target: &Target<'_>,
        from: Option<&str>,
        mode: SubMode,
    ) -> bool {
        let fresh = !self.groups.has_sub(sub);
        self.subscribe(sub.conn, sub.id, target, from);
        let subscribed = fresh && self.groups.has_sub(sub);
        if subscribed && matches!(target, Target::Presence(_)) {
            // Every join and leave matters: a presence subscription is never conflated.
            self.presence.subs.insert(sub);
        } else if mode == SubMode::Latest && subscribed {
            self.latest.insert(sub);
        }
        subscribed
    }

    /// A frame from a store: a reply, or watch traffic (watch ids say whose).
    pub fn on_frame(&mut self, frame: &LinkFrame<'_>) {
        let mark = self.out.len();
        self.on_message(frame);
        self.present(mark);
    }

    /// [`Hub::on_frame`]'s message, routed.
    fn on_message(&mut self, frame: &LinkFrame<'_>) {
        let rid = frame.request_id;
        match frame.message {
            LinkMessage::GetReply(r) => {
                if let Some(p) = self.take_request(rid) {
                    self.on_get_reply(p, &r);
                }
            }
            LinkMessage::WriteReply(r) => {
                if let Some(p) = self.take_request(rid) {
                    self.on_write_reply(p, &r);
                }
            }
            LinkMessage::MembersReply(r) => {
                if let Some(Pending {
                    conn,
                    id,
                    kind: PendingKind::Members { prefix },
                    ..
                }) = self.take_request(rid)
                {
                    self.on_members_reply(conn, id, &prefix, &r);
                }
            }
            LinkMessage::Error(e) => match self.take_request(rid) {
                Some(p) => self.on_error_reply(p, &e),
                None => {
                    let message = e.message().unwrap_or("store error");
                    self.watch_failed(WatchId::from_raw(rid), map_code(e.code()), message);
                }
            },
            LinkMessage::Snapshot(snap) => self.on_snapshot(&snap),
            LinkMessage::Resumed(r) => {
                self.on_resumed(WatchId::from_raw(r.watch_id()), r.partition());
            }
            LinkMessage::Reset(r) => {
                let wid = WatchId::from_raw(r.watch_id());
                self.on_reset(wid, r.partition(), r.reason().unwrap_or("reset"));
            }
            LinkMessage::Changes(c) => {
                if let Some(changes) = c.changes() {
                    for ch in changes {
                        self.on_change(&ch);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The client error code for a store's error code.
fn map_code(code: wire::link::ErrorCode) -> ErrorCode {
    use wire::link::ErrorCode as L;
    match code {
        L::BadRequest => ErrorCode::BadRequest,
        L::Conflict => ErrorCode::Conflict,
        L::Overloaded => ErrorCode::Overloaded,
        // A partition the store does not serve under our map: the map is being changed;
        // retrying later is the client's move.
        L::Unavailable | L::WrongPartition => ErrorCode::Unavailable,
        L::TooLarge => ErrorCode::TooLarge,
        _ => ErrorCode::Internal,
    }
}

/// `a` is later in its partition's log than `b`.
fn newer(a: &Position, b: &Position) -> bool {
    (a.epoch, a.seq) > (b.epoch, b.seq)
}

/// A client's msg_id as the store keys it: within `scope` (see [`scope_of`]).
fn scoped<'a>(msg_id: Option<&'a str>, scope: &'a str) -> Option<MsgIdRef<'a>> {
    msg_id.map(|id| MsgIdRef { scope, id })
}

/// Subjects longer than this name their msg_ids and durable records by a hash.
const MAX_SCOPE: usize = 256;

/// Whom a connection's msg_ids and durable subscriptions belong to: its token's subject
/// (empty: anonymous), or for a long one `#` and its 128-bit hash, so that stored keys
/// stay within the store's limits whatever a token holds.
fn scope_of(subject: &str) -> Cow<'_, str> {
    if subject.len() <= MAX_SCOPE {
        Cow::Borrowed(subject)
    } else {
        let h = xxhash_rust::xxh3::xxh3_128(subject.as_bytes());
        Cow::Owned(format!("#{h:032x}"))
    }
}

/// The message carrying change `d` to subscription `sub`: a `latest` one's may be
/// conflated by the worker.
fn change_out(latest: &HashSet<SubRef>, sub: SubRef, d: Rc<Delivery>) -> Out {
    if !latest.is_empty() && latest.contains(&sub) {
        Out::Latest(sub.conn, sub.id, d)
    } else {
        Out::Change(sub.conn, sub.id, d)
    }
}
