//! Presence on the edge. In: `join`, `leave` and `presence` requests, presence
//! subscriptions, a connection's close, a link's return, and the stores' answers; out:
//! member writes and `Members` / `PresenceSync` frames to the store owning each channel
//! (a member is a key under `@presence/`, [`wire::presence`]), and `members` / presence
//! events to clients.
//!
//! - A join is a put of the member's key (the connection's, or with `device` the user's
//!   device's: the same member from any connection) with its meta, naming the
//!   connection that holds it; a leave its delete by that connection. The worker
//!   remembers each connection's joins, so that a close leaves them all, and a relinked
//!   store hears every member this worker holds for it (one `PresenceSync`, in parts),
//!   which it reconciles without logging the unchanged ones.
//! - A presence subscription is a prefix subscription to the channel's member keys (one
//!   partition, by the channel's hash tag): the same groups, positions, tokens, resume
//!   and reset as any subscription. Only its messages change form: a snapshot page
//!   becomes a `members` page, a change a presence event ([`Out::Presence`], which the
//!   worker batches per subscription).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use wire::client::{ErrorCode, Member, MemberMeta, Response};
use wire::link::EntryRef;
use wire::presence::{ConnName, MemberId, MemberKey, channel_prefix};

use super::{ConnRef, Hub, Out, PendingKind, SubRef};

/// Most members in one answer page (the store's bound too).
pub const PAGE: u32 = 1000;

/// Members per `PresenceSync` part.
const SYNC_PART: usize = 1000;

/// Most channels one connection may have joined at once.
pub const MAX_JOINS_PER_CONN: usize = 100;

/// One channel a connection joined.
#[derive(Debug)]
pub(super) struct Joined {
    /// Which join request wrote it (a failed one forgets it only if still current).
    seq: u64,
    /// The channel.
    channel: Box<str>,
    /// Its member key.
    key: Box<str>,
    /// Its meta (JSON text).
    meta: Box<[u8]>,
}

/// The worker's presence state.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// The edge process's id (its links' `edge_id`) and this worker: the connection
    /// names in member keys.
    edge: Rc<str>,
    worker: u16,
    /// Per connection, the channels it joined.
    joined: HashMap<ConnRef, Vec<Joined>>,
    /// The subscriptions following a channel's presence.
    pub(super) subs: HashSet<SubRef>,
}

impl Presence {
    /// Presence for `worker` of the edge process `edge`.
    pub(super) fn new(edge: &str, worker: u16) -> Self {
        Self {
            edge: edge.into(),
            worker,
            ..Self::default()
        }
    }

    /// Connection `conn`'s name in the cluster.
    fn conn_name(&self, conn: ConnRef) -> String {
        ConnName {
            edge: &self.edge,
            worker: self.worker,
            slot: conn.0,
            generation: conn.1,
        }
        .to_string()
    }

    /// Connections with joins.
    pub(super) fn members(&self) -> usize {
        self.joined.values().map(Vec::len).sum()
    }
}

/// The members of a page of (member key, meta), grouped by user in the order given
/// (keys sort by channel, then user: one user's connections are adjacent).
pub(super) fn group<'a>(
    entries: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<Member<'static>> {
    let mut out: Vec<Member<'static>> = Vec::new();
    for (key, meta) in entries {
        let Some(m) = wire::presence::parse(key) else {
            continue;
        };
        let user = (!m.user.is_empty()).then(|| Cow::Owned(m.user.to_owned()));
        let meta = MemberMeta {
            conn: Cow::Owned(m.member.as_str().to_owned()),
            meta: Cow::Owned(meta.to_vec()),
        };
        match out.last_mut() {
            // Anonymous connections are a group each.
            Some(last) if user.is_some() && last.user == user => last.metas.push(meta),
            _ => out.push(Member {
                user,
                metas: vec![meta],
            }),
        }
    }
    out
}

impl Hub {
    /// `join`: the member (`device`'s, else the connection's) of user `user` in
    /// `channel` is written with `meta`, held by this connection (again: the meta is
    /// replaced; with another device, the previous member leaves). Nothing changes
    /// unless the join goes to its store.
    pub(super) fn join(
        &mut self,
        conn: ConnRef,
        id: u64,
        channel: &str,
        meta: &[u8],
        device: Option<&str>,
        user: &str,
    ) {
        if device.is_some() && user.is_empty() {
            let why = "a device needs an authenticated connection";
            return self.fail(conn, id, ErrorCode::BadRequest, why);
        }
        let joins = self.presence.joined.get(&conn);
        let again = joins.is_some_and(|js| js.iter().any(|j| *j.channel == *channel));
        if !again && joins.is_some_and(|js| js.len() >= MAX_JOINS_PER_CONN) {
            let why = "this connection has joined as many channels as it may (100)";
            return self.fail(conn, id, ErrorCode::TooManySubscriptions, why);
        }
        let owner = self.presence.conn_name(conn);
        let member = match device {
            Some(d) => MemberId::Device(d),
            None => MemberId::Conn(&owner),
        };
        let key = MemberKey {
            channel,
            user,
            member,
        }
        .encode();
        let seq = self.id();
        let kind = PendingKind::Presence { join: Some(seq) };
        let sent = self.forward(conn, id, &key, kind, |enc, out, rid| {
            enc.join(out, rid, &key, meta, &owner)
        });
        if !sent {
            return;
        }
        if let Some(old) = self.take_join(conn, channel).filter(|o| *o.key != *key) {
            self.send_leave(&old.key, &owner);
        }
        self.presence.joined.entry(conn).or_default().push(Joined {
            seq,
            channel: channel.into(),
            key: key.as_str().into(),
            meta: meta.into(),
        });
    }

    /// A join failed at its store: forgotten, if it is still the connection's current
    /// join of its channel.
    pub(super) fn join_failed(&mut self, conn: ConnRef, seq: u64) {
        let Some(joins) = self.presence.joined.get_mut(&conn) else {
            return;
        };
        joins.retain(|j| j.seq != seq);
        if joins.is_empty() {
            self.presence.joined.remove(&conn);
        }
    }

    /// Connection `conn`'s grant narrowed: it leaves every channel `keep` refuses.
    pub fn narrow_joins(&mut self, conn: ConnRef, keep: impl Fn(&str) -> bool) {
        let Some(joins) = self.presence.joined.get(&conn) else {
            return;
        };
        let refused: Vec<Box<str>> = joins
            .iter()
            .filter(|j| !keep(&j.channel))
            .map(|j| j.channel.clone())
            .collect();
        let owner = self.presence.conn_name(conn);
        for channel in refused {
            if let Some(j) = self.take_join(conn, &channel) {
                self.send_leave(&j.key, &owner);
            }
        }
    }

    /// `leave`: the connection's member of `channel` is deleted (a channel it did not
    /// join is left at once).
    pub(super) fn leave(&mut self, conn: ConnRef, id: u64, channel: &str) {
        let Some(j) = self.take_join(conn, channel) else {
            self.reply(conn, ok(id));
            return;
        };
        let owner = self.presence.conn_name(conn);
        let kind = PendingKind::Presence { join: None };
        self.forward(conn, id, &j.key, kind, |enc, out, rid| {
            enc.leave(out, rid, &j.key, &owner)
        });
    }

    /// A leave of `key` by `owner` that nobody waits for (if its store is up; else the
    /// store hears of it when it relinks, from what this worker announces).
    fn send_leave(&mut self, key: &str, owner: &str) {
        let store = self.store_of(key);
        if !self.is_up(store) {
            return;
        }
        let rid = self.id();
        if let Some(out) = self.link_out.get_mut(store) {
            let _ = self.enc.leave(out, rid, key, owner);
        }
    }

    /// Take the connection's join of `channel`, if it has one.
    fn take_join(&mut self, conn: ConnRef, channel: &str) -> Option<Joined> {
        let joins = self.presence.joined.get_mut(&conn)?;
        let at = joins.iter().position(|j| *j.channel == *channel)?;
        let j = joins.swap_remove(at);
        if joins.is_empty() {
            self.presence.joined.remove(&conn);
        }
        Some(j)
    }

    /// `presence`: a page of `channel`'s members after `cursor`, or its count.
    pub(super) fn presence_query(
        &mut self,
        conn: ConnRef,
        id: u64,
        channel: &str,
        cursor: Option<&str>,
        count_only: bool,
    ) {
        let prefix = channel_prefix(channel);
        let after = cursor.map(|c| format!("{prefix}{c}"));
        let limit = if count_only { 0 } else { PAGE };
        let kind = PendingKind::Members {
            prefix: prefix.as_str().into(),
        };
        self.forward(conn, id, &prefix, kind, |enc, out, rid| {
            enc.members(out, rid, &prefix, after.as_deref(), limit)
        });
    }

    /// A store's page of members, to the client that asked.
    pub(super) fn on_members_reply(
        &mut self,
        conn: ConnRef,
        id: u64,
        prefix: &str,
        r: &wire::link::internal::MembersReply<'_>,
    ) {
        let entries: Vec<(&str, &[u8])> = r
            .entries()
            .into_iter()
            .flatten()
            .map(|e| (e.key(), e.value().map(|v| v.bytes()).unwrap_or_default()))
            .collect();
        let cursor = entries
            .last()
            .filter(|_| r.more())
            .and_then(|(k, _)| k.strip_prefix(prefix))
            .map(|c| Cow::Owned(c.to_owned()));
        let members = group(entries.into_iter());
        self.reply(
            conn,
            Response::Members {
                id,
                members,
                total: Some(r.total()),
                cursor,
                token: None,
                more: false,
            },
        );
    }

    /// A connection closed: it leaves every channel it joined (on stores whose link is
    /// up; the others hear of it when they relink, from what this worker announces).
    pub(super) fn presence_closed(&mut self, conn: ConnRef) {
        let Some(joins) = self.presence.joined.remove(&conn) else {
            return;
        };
        let owner = self.presence.conn_name(conn);
        for j in joins {
            self.send_leave(&j.key, &owner);
        }
    }

    /// The link to store `s` is up: announce every member this worker holds there (at
    /// least one part, so that members it no longer holds leave).
    pub(super) fn presence_announce(&mut self, s: usize) {
        let mine: Vec<(&str, &[u8], String)> = self
            .presence
            .joined
            .iter()
            .flat_map(|(&c, js)| js.iter().map(move |j| (c, j)))
            .filter(|(_, j)| self.store_of(&j.key) == s)
            .map(|(c, j)| (&*j.key, &*j.meta, self.presence.conn_name(c)))
            .collect();
        let parts: Vec<&[(&str, &[u8], String)]> = if mine.is_empty() {
            vec![&[]]
        } else {
            mine.chunks(SYNC_PART).collect()
        };
        let last = parts.len() - 1;
        let Some(out) = self.link_out.get_mut(s) else {
            return;
        };
        for (i, part) in parts.iter().enumerate() {
            let entries: Vec<EntryRef<'_>> = part
                .iter()
                .map(|(key, value, _)| EntryRef {
                    key,
                    value,
                    version: 0,
                })
                .collect();
            let owners: Vec<&str> = part.iter().map(|(_, _, o)| o.as_str()).collect();
            let _ = self.enc.presence_sync(out, 0, &entries, &owners, i == last);
        }
    }

    /// Give the client messages from `from` on their presence form: a presence
    /// subscription's snapshot pages become `members` pages, its changes events.
    pub(super) fn present(&mut self, from: usize) {
        if self.presence.subs.is_empty() {
            return;
        }
        let subs = &self.presence.subs;
        for o in self.out.iter_mut().skip(from) {
            match o {
                Out::Change(conn, id, d)
                    if subs.contains(&SubRef {
                        conn: *conn,
                        id: *id,
                    }) =>
                {
                    *o = Out::Presence(*conn, *id, Rc::clone(d));
                }
                Out::Msg(conn, Response::Snapshot { id, .. })
                    if subs.contains(&SubRef {
                        conn: *conn,
                        id: *id,
                    }) =>
                {
                    let conn = *conn;
                    let Out::Msg(
                        _,
                        Response::Snapshot {
                            id,
                            entries,
                            token,
                            more,
                        },
                    ) = std::mem::replace(o, Out::Ended(conn, 0))
                    else {
                        continue;
                    };
                    let members = group(entries.iter().map(|e| (&*e.key, &*e.value)));
                    *o = Out::Msg(
                        conn,
                        Response::Members {
                            id,
                            members,
                            total: None,
                            cursor: None,
                            token,
                            more,
                        },
                    );
                }
                _ => {}
            }
        }
    }

    /// A presence subscription ended: the worker drops the events it holds for it.
    pub(super) fn presence_unsubscribed(&mut self, sub: SubRef) {
        if self.presence.subs.remove(&sub) {
            self.out.push(Out::Ended(sub.conn, sub.id));
        }
    }

    /// Member connections of this worker (for `/metrics`).
    pub fn presence_members(&self) -> usize {
        self.presence.members()
    }
}

/// `ok` without version or token (a join, a leave, an unsub).
pub(super) fn ok(id: u64) -> Response<'static> {
    Response::Ok {
        id,
        version: None,
        token: None,
    }
}
