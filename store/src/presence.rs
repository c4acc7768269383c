//! The member table: which presence members ([`wire::presence`] keys) this store holds,
//! per channel and per edge, in memory beside the log that makes them durable. Joins
//! and leaves arrive as writes of member keys; the table decides which of them change
//! anything (a join with an unchanged meta, or a leave of no member, logs nothing), and
//! answers counts in O(1) and pages in key order.
//!
//! Owners: every member is held by one connection (its *owner*, named on each join and
//! leave, [`wire::presence::ConnName`]); a device's member joined again from another
//! connection, on any edge, changes owner and nothing else (no event), and only its
//! owner makes it leave. The table counts each edge's links; when the last one goes,
//! the members its connections hold are kept for a grace period, then leave (so a
//! device that reconnects elsewhere meanwhile never appears to have left). A relinked
//! worker's announcement claims its members again and makes the others it held leave
//! ([`Presence::stale`]). Owners are not stored: after a restart the members are
//! loaded unclaimed, and those no announcement claims within the grace period leave.
//!
//! The table is updated when a write is accepted (before it commits), like the change
//! log's own state; a batch that fails to commit reloads it from the engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use wire::presence::{self, ConnName, MemberId};
use xxhash_rust::xxh3::xxh3_64;

/// A member's key, shared by the channel and edge indexes.
pub type Key = Rc<str>;

/// One member: its meta's hash, and the connection holding it (`None`: not claimed
/// since the table was loaded).
#[derive(Debug)]
struct Member {
    hash: u64,
    owner: Option<Box<str>>,
}

/// One edge process's members and links.
#[derive(Debug, Default)]
struct Edge {
    /// Its links up now.
    links: u32,
    /// When its last link went (ms), while it has none.
    gone_since: Option<u64>,
    /// The members its connections hold, by worker.
    members: HashMap<u16, HashSet<Key>>,
}

/// What a join or a leave changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing anyone sees: the member is already so (perhaps now held by another
    /// connection), or already gone, or held by another connection than the leaving
    /// one; nothing is logged.
    None,
    /// The write is to be logged.
    Write,
}

/// The store's presence members.
#[derive(Debug, Default)]
pub struct Presence {
    /// Per channel prefix: its members, in key order.
    channels: HashMap<Box<str>, BTreeMap<Key, Member>>,
    /// Per edge process (its link id).
    edges: HashMap<Box<str>, Edge>,
    /// Members no connection has claimed since the table was loaded, and since when.
    unclaimed: HashSet<Key>,
    loaded_at: u64,
    /// Members held.
    len: usize,
}

/// Why a presence write is refused (the edge's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a canonical member key.
    #[error("not a presence member key")]
    NotMember,
    /// No owner, or one that is not a connection name.
    #[error("a presence write without a connection holding the member")]
    NoOwner,
    /// The owner is a connection of another edge than the link's, or the member is
    /// another connection.
    #[error("a presence member of another connection or edge")]
    NotOwner,
}

/// The owner's (edge, worker).
fn owner_of(owner: &str) -> Option<(&str, u16)> {
    ConnName::parse(owner).map(|c| (c.edge, c.worker))
}

impl Presence {
    /// Members held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no member is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Channels with members.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Members of the channel whose prefix is `prefix`.
    pub fn count(&self, prefix: &str) -> u64 {
        self.channels.get(prefix).map_or(0, |m| m.len() as u64)
    }

    /// Every member key with its meta's hash, in key order per channel (for tests).
    pub fn members(&self) -> Vec<(Key, u64)> {
        let mut all: Vec<(Key, u64)> = self
            .channels
            .values()
            .flat_map(|c| c.iter().map(|(k, m)| (Rc::clone(k), m.hash)))
            .collect();
        all.sort();
        all
    }

    /// A join of `key` with `meta` by connection `owner` through a link of `edge`
    /// (`owner` `None`: a member loaded from the engine, not yet claimed): whether it
    /// changes what readers see.
    pub fn join(
        &mut self,
        edge: Option<&str>,
        key: &str,
        meta: &[u8],
        owner: Option<&str>,
    ) -> Result<Effect, Refusal> {
        let m = presence::parse(key).ok_or(Refusal::NotMember)?;
        if let Some(o) = owner {
            let (o_edge, _) = owner_of(o).ok_or(Refusal::NoOwner)?;
            let other_conn = matches!(m.member, MemberId::Conn(c) if c != o);
            if other_conn || edge.is_some_and(|e| e != o_edge) {
                return Err(Refusal::NotOwner);
            }
        }
        let hash = xxh3_64(meta);
        let prefix = presence::channel_prefix(m.channel);
        let channel = self.channels.entry(prefix.into_boxed_str()).or_default();
        let (shared, effect, before) = match channel.get_key_value(key) {
            Some((k, member)) => {
                let effect = if member.hash == hash {
                    Effect::None
                } else {
                    Effect::Write
                };
                (Rc::clone(k), effect, member.owner.clone())
            }
            None => {
                let k: Key = Rc::from(key);
                channel.insert(Rc::clone(&k), Member { hash, owner: None });
                self.len += 1;
                self.unclaimed.insert(Rc::clone(&k));
                (k, Effect::Write, None)
            }
        };
        if let Some(member) = channel.get_mut(key) {
            member.hash = hash;
            if owner.is_some() {
                member.owner = owner.map(Into::into);
            }
        }
        if owner.is_some() && before.as_deref() != owner {
            self.unindex(&shared, before.as_deref());
            self.index(&shared, owner);
        }
        Ok(effect)
    }

    /// A leave of `key` by connection `owner` (`None`: the store's own): whether it
    /// changes what readers see (only the connection holding a member makes it leave).
    pub fn leave(&mut self, key: &str, owner: Option<&str>) -> Result<Effect, Refusal> {
        let m = presence::parse(key).ok_or(Refusal::NotMember)?;
        let prefix = presence::channel_prefix(m.channel);
        let Some(channel) = self.channels.get_mut(prefix.as_str()) else {
            return Ok(Effect::None);
        };
        let held_by = match channel.get(key) {
            None => return Ok(Effect::None),
            Some(member) => member.owner.clone(),
        };
        if owner.is_some() && held_by.as_deref() != owner {
            return Ok(Effect::None);
        }
        let Some((k, _)) = channel.remove_entry(key) else {
            return Ok(Effect::None);
        };
        if channel.is_empty() {
            self.channels.remove(prefix.as_str());
        }
        self.unindex(&k, held_by.as_deref());
        self.len -= 1;
        Ok(Effect::Write)
    }

    /// Put `key` under `owner`'s edge and worker (or with the unclaimed).
    fn index(&mut self, key: &Key, owner: Option<&str>) {
        match owner.and_then(owner_of) {
            Some((edge, worker)) => {
                let e = self.edges.entry(edge.into()).or_default();
                e.members.entry(worker).or_default().insert(Rc::clone(key));
            }
            None => {
                self.unclaimed.insert(Rc::clone(key));
            }
        }
    }

    /// Take `key` out of `owner`'s edge and worker (or the unclaimed).
    fn unindex(&mut self, key: &str, owner: Option<&str>) {
        let Some((edge, worker)) = owner.and_then(owner_of) else {
            self.unclaimed.remove(key);
            return;
        };
        let Some(e) = self.edges.get_mut(edge) else {
            return;
        };
        if let Some(w) = e.members.get_mut(&worker) {
            w.remove(key);
            if w.is_empty() {
                e.members.remove(&worker);
            }
        }
        if e.members.is_empty() && e.links == 0 {
            self.edges.remove(edge);
        }
    }

    /// Up to `limit` member keys of the channel `prefix` after `after`, in key order.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<Key> {
        let Some(channel) = self.channels.get(prefix) else {
            return Vec::new();
        };
        let range = match after {
            Some(a) => {
                channel.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => channel.range::<str, _>(..),
        };
        range.take(limit).map(|(k, _)| Rc::clone(k)).collect()
    }

    /// A link of `edge` came up: its members are no longer on their way out.
    pub fn link_up(&mut self, edge: &str) {
        let e = self.edges.entry(edge.into()).or_default();
        e.links += 1;
        e.gone_since = None;
    }

    /// A link of `edge` went at `now_ms`; its last one starts the grace period.
    pub fn link_down(&mut self, edge: &str, now_ms: u64) {
        let Some(e) = self.edges.get_mut(edge) else {
            return;
        };
        e.links = e.links.saturating_sub(1);
        if e.links == 0 {
            if e.members.is_empty() {
                self.edges.remove(edge);
            } else {
                e.gone_since = Some(now_ms);
            }
        }
    }

    /// The table was (re)loaded at `now_ms`: its unclaimed members, and the members of
    /// every edge without a link, are on their way out from then.
    pub fn loaded(&mut self, now_ms: u64) {
        self.loaded_at = now_ms;
        for e in self.edges.values_mut() {
            if e.links == 0 && e.gone_since.is_none() {
                e.gone_since = Some(now_ms);
            }
        }
    }

    /// The members of edges gone for at least `grace_ms` at `now_ms`, and those loaded
    /// at least as long ago and still unclaimed: they are to leave (the caller writes
    /// their leaves).
    pub fn expired(&self, now_ms: u64, grace_ms: u64) -> Vec<Key> {
        let past = |t: u64| now_ms.saturating_sub(t) >= grace_ms;
        let mut out: Vec<Key> = self
            .edges
            .values()
            .filter(|e| e.gone_since.is_some_and(past))
            .flat_map(|e| e.members.values().flatten().cloned())
            .collect();
        if past(self.loaded_at) {
            out.extend(self.unclaimed.iter().cloned());
        }
        out
    }

    /// The members `edge`'s `worker` holds but did not announce in `announced` (keys):
    /// they are to leave.
    pub fn stale(&self, edge: &str, worker: u16, announced: &HashSet<Box<str>>) -> Vec<Key> {
        self.edges
            .get(edge)
            .and_then(|e| e.members.get(&worker))
            .map(|w| {
                w.iter()
                    .filter(|k| !announced.contains(&***k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The connection holding `key` now, if any.
    pub fn owner(&self, key: &str) -> Option<&str> {
        let m = presence::parse(key)?;
        self.channels
            .get(presence::channel_prefix(m.channel).as_str())?
            .get(key)?
            .owner
            .as_deref()
    }

    /// Every claimed member's owner (kept across a reload, see [`Presence::claim`]).
    pub fn owners(&self) -> Vec<(Key, Box<str>)> {
        self.channels
            .values()
            .flat_map(|c| c.iter())
            .filter_map(|(k, m)| Some((Rc::clone(k), m.owner.clone()?)))
            .collect()
    }

    /// `owner` holds `key` (if it is a member: whether it is), its meta unchanged.
    pub fn claim(&mut self, key: &str, owner: &str) -> bool {
        let Some(m) = presence::parse(key) else {
            return false;
        };
        let prefix = presence::channel_prefix(m.channel);
        let Some((k, member)) = self.channels.get_mut(prefix.as_str()).and_then(|c| {
            c.get_key_value(key)
                .map(|(k, _)| Rc::clone(k))
                .zip(c.get_mut(key))
        }) else {
            return false;
        };
        let before = member.owner.replace(owner.into());
        self.unindex(&k, before.as_deref());
        self.index(&k, Some(owner));
        true
    }

    /// Forget every member (keeping the edges' links), before a reload.
    pub fn clear_members(&mut self) {
        self.channels.clear();
        self.unclaimed.clear();
        self.len = 0;
        self.edges.retain(|_, e| {
            e.members.clear();
            e.links > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::presence::MemberKey;

    fn conn(edge: &str, worker: u16, slot: u32) -> String {
        ConnName {
            edge,
            worker,
            slot,
            generation: 1,
        }
        .to_string()
    }

    fn key(channel: &str, user: &str, member: MemberId<'_>) -> String {
        MemberKey {
            channel,
            user,
            member,
        }
        .encode()
    }

    #[test]
    fn joins_and_leaves_change_only_what_readers_see() {
        let mut p = Presence::default();
        let c1 = conn("e1", 0, 1);
        let a = key("room", "alice", MemberId::Conn(&c1));
        assert_eq!(p.join(Some("e1"), &a, b"1", Some(&c1)), Ok(Effect::Write));
        assert_eq!(p.join(Some("e1"), &a, b"1", Some(&c1)), Ok(Effect::None));
        assert_eq!(p.join(Some("e1"), &a, b"2", Some(&c1)), Ok(Effect::Write));
        let other = conn("e1", 0, 2);
        assert_eq!(
            p.join(Some("e1"), &a, b"2", Some(&other)),
            Err(Refusal::NotOwner)
        );
        assert_eq!(
            p.join(Some("e2"), &a, b"2", Some(&c1)),
            Err(Refusal::NotOwner)
        );
        assert_eq!(
            p.join(Some("e1"), &a, b"2", Some("nope")),
            Err(Refusal::NoOwner)
        );
        assert_eq!(p.join(None, "room", b"2", None), Err(Refusal::NotMember));
        assert_eq!(p.count(&presence::channel_prefix("room")), 1);
        assert_eq!(p.leave(&a, Some(&other)), Ok(Effect::None), "not its owner");
        assert_eq!(p.leave(&a, Some(&c1)), Ok(Effect::Write));
        assert_eq!(p.leave(&a, Some(&c1)), Ok(Effect::None));
        assert!(p.is_empty() && p.channels() == 0 && p.edges.is_empty());
    }

    #[test]
    fn a_device_moves_to_another_connection_without_a_change() {
        let mut p = Presence::default();
        let (old, new) = (conn("e1", 0, 1), conn("e2", 1, 9));
        let phone = key("room", "alice", MemberId::Device("phone"));
        p.link_up("e1");
        p.link_up("e2");
        assert_eq!(
            p.join(Some("e1"), &phone, b"1", Some(&old)),
            Ok(Effect::Write)
        );
        p.link_down("e1", 0);
        assert_eq!(
            p.join(Some("e2"), &phone, b"1", Some(&new)),
            Ok(Effect::None)
        );
        assert_eq!(p.owner(&phone), Some(new.as_str()));
        assert!(p.expired(60_000, 10_000).is_empty(), "no longer e1's");
        assert_eq!(
            p.leave(&phone, Some(&old)),
            Ok(Effect::None),
            "the old one is not its owner"
        );
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_gone_edge_expires_after_the_grace_unless_it_returns() {
        let mut p = Presence::default();
        let (ca, cb) = (conn("e1", 0, 1), conn("e2", 1, 1));
        let a = key("room", "alice", MemberId::Conn(&ca));
        let b = key("room", "bob", MemberId::Conn(&cb));
        p.link_up("e1");
        p.link_up("e1");
        p.link_up("e2");
        p.join(Some("e1"), &a, b"", Some(&ca)).unwrap();
        p.join(Some("e2"), &b, b"", Some(&cb)).unwrap();
        p.link_down("e1", 1_000);
        assert!(
            p.expired(99_000, 10_000).is_empty(),
            "one link of e1 is left"
        );
        p.link_down("e1", 2_000);
        p.link_down("e2", 2_000);
        assert!(p.expired(11_999, 10_000).is_empty());
        p.link_up("e2");
        let gone: Vec<String> = p
            .expired(12_000, 10_000)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(gone, [a]);
    }

    #[test]
    fn loaded_members_leave_unless_claimed_within_the_grace() {
        let mut p = Presence::default();
        let c = conn("e1", 0, 1);
        let a = key("room", "alice", MemberId::Conn(&c));
        let b = key("room", "bob", MemberId::Device("tv"));
        p.join(None, &a, b"", None).unwrap();
        p.join(None, &b, b"", None).unwrap();
        p.loaded(5_000);
        assert_eq!(p.join(Some("e1"), &a, b"", Some(&c)), Ok(Effect::None));
        assert!(p.expired(14_999, 10_000).is_empty());
        let gone: Vec<String> = p
            .expired(15_000, 10_000)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(gone, [b]);
    }

    #[test]
    fn a_sync_names_the_members_its_worker_no_longer_holds() {
        let mut p = Presence::default();
        let (c1, c2, c3) = (conn("e1", 0, 1), conn("e1", 0, 2), conn("e1", 1, 3));
        let a = key("room", "alice", MemberId::Conn(&c1));
        let b = key("room", "bob", MemberId::Conn(&c2));
        let c = key("room", "carol", MemberId::Conn(&c3));
        for (k, o) in [(&a, &c1), (&b, &c2), (&c, &c3)] {
            p.join(Some("e1"), k, b"", Some(o)).unwrap();
        }
        let announced: HashSet<Box<str>> = [a.clone().into_boxed_str()].into();
        let stale: Vec<String> = p
            .stale("e1", 0, &announced)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(stale, [b]);
    }

    #[test]
    fn pages_follow_key_order() {
        let mut p = Presence::default();
        let keys: Vec<String> = (0..5)
            .map(|i| key("r", &format!("u{i}"), MemberId::Device("d")))
            .collect();
        for k in keys.iter().rev() {
            p.join(None, k, b"", None).unwrap();
        }
        let prefix = presence::channel_prefix("r");
        let first: Vec<String> = p
            .page(&prefix, None, 2)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(first, keys[..2]);
        let next: Vec<String> = p
            .page(&prefix, Some(&keys[1]), 10)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(next, keys[2..]);
    }
}
