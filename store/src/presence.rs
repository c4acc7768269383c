//! The member table: which presence members ([`wire::presence`] keys) this store holds,
//! per channel and per edge, in memory beside the log that makes them durable. Joins
//! and leaves arrive as writes of member keys; the table decides which of them change
//! anything (a join with an unchanged meta, or a leave of no member, logs nothing), and
//! answers counts in O(1) and pages in key order.
//!
//! Edges: every member belongs to the edge process named in its key. The table counts
//! each edge's links; when the last one goes, the edge's members are kept for a grace
//! period, then leave (so a client that reconnects elsewhere meanwhile never appears to
//! have left). A relinked worker's [`Presence::sync`] makes its members exactly the ones
//! it announces, without touching those that stayed. After a restart every edge counts
//! as gone from the moment the table was loaded.
//!
//! The table is updated when a write is accepted (before it commits), like the change
//! log's own state; a batch that fails to commit reloads it from the engine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use wire::presence::{self, MemberKey};
use xxhash_rust::xxh3::xxh3_64;

/// A member's key, shared by the channel and edge indexes.
type Key = Rc<str>;

/// One edge process's members and links.
#[derive(Debug, Default)]
struct Edge {
    /// Its links up now.
    links: u32,
    /// When its last link went (ms), while it has none.
    gone_since: Option<u64>,
    /// Its members, by worker.
    members: HashMap<u16, HashSet<Key>>,
}

/// What a join or a leave changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: the member is already so (or already gone); nothing is logged.
    None,
    /// The write is to be logged.
    Write,
}

/// The store's presence members.
#[derive(Debug, Default)]
pub struct Presence {
    /// Per channel prefix: its members' keys and their meta's hash, in key order.
    channels: HashMap<Box<str>, BTreeMap<Key, u64>>,
    /// Per edge (its link id).
    edges: HashMap<Box<str>, Edge>,
    /// Members held.
    len: usize,
}

/// Why a member key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a canonical member key.
    #[error("not a presence member key")]
    NotMember,
    /// The member belongs to another edge than the link's.
    #[error("a presence member of another edge")]
    OtherEdge,
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

    /// Whether `key` is a member now.
    pub fn contains(&self, key: &str) -> bool {
        let Some(m) = presence::parse(key) else {
            return false;
        };
        self.channels
            .get(presence::channel_prefix(m.channel).as_str())
            .is_some_and(|c| c.contains_key(key))
    }

    /// A join of `key` with `meta`, written by a link of `edge` (`None`: the store's
    /// own write): whether it changes anything.
    pub fn join(&mut self, edge: Option<&str>, key: &str, meta: &[u8]) -> Result<Effect, Refusal> {
        let m = member(edge, key)?;
        let hash = xxh3_64(meta);
        let channel = self
            .channels
            .entry(presence::channel_prefix(m.channel).into_boxed_str())
            .or_default();
        if let Some(h) = channel.get_mut(key) {
            if *h == hash {
                return Ok(Effect::None);
            }
            *h = hash;
            return Ok(Effect::Write);
        }
        let shared: Key = Rc::from(key);
        channel.insert(Rc::clone(&shared), hash);
        let e = self.edges.entry(m.conn.edge.into()).or_default();
        e.members.entry(m.conn.worker).or_default().insert(shared);
        self.len += 1;
        Ok(Effect::Write)
    }

    /// A leave of `key` by a link of `edge` (`None`: the store's own): whether it was
    /// a member.
    pub fn leave(&mut self, edge: Option<&str>, key: &str) -> Result<Effect, Refusal> {
        let m = member(edge, key)?;
        let prefix = presence::channel_prefix(m.channel);
        let Some(channel) = self.channels.get_mut(prefix.as_str()) else {
            return Ok(Effect::None);
        };
        if channel.remove(key).is_none() {
            return Ok(Effect::None);
        }
        if channel.is_empty() {
            self.channels.remove(prefix.as_str());
        }
        if let Some(e) = self.edges.get_mut(m.conn.edge) {
            if let Some(w) = e.members.get_mut(&m.conn.worker) {
                w.remove(key);
                if w.is_empty() {
                    e.members.remove(&m.conn.worker);
                }
            }
            if e.members.is_empty() && e.links == 0 {
                self.edges.remove(m.conn.edge);
            }
        }
        self.len -= 1;
        Ok(Effect::Write)
    }

    /// Up to `limit` member keys of the channel `prefix` after `after`, in key order.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<Key> {
        let Some(channel) = self.channels.get(prefix) else {
            return Vec::new();
        };
        let range = match after {
            Some(a) => channel.range::<str, _>((
                std::ops::Bound::Excluded(a),
                std::ops::Bound::Unbounded,
            )),
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

    /// Every edge without links counts as gone since `now_ms` (after loading).
    pub fn all_gone(&mut self, now_ms: u64) {
        for e in self.edges.values_mut() {
            if e.links == 0 {
                e.gone_since = Some(now_ms);
            }
        }
    }

    /// The members of edges gone for at least `grace_ms` at `now_ms`: they are to
    /// leave (the caller writes their leaves).
    pub fn expired(&self, now_ms: u64, grace_ms: u64) -> Vec<Key> {
        self.edges
            .values()
            .filter(|e| e.gone_since.is_some_and(|t| now_ms.saturating_sub(t) >= grace_ms))
            .flat_map(|e| e.members.values().flatten().cloned())
            .collect()
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

    /// Forget every member (keeping the edges' links), before a reload.
    pub fn clear_members(&mut self) {
        self.channels.clear();
        self.len = 0;
        self.edges.retain(|_, e| {
            e.members.clear();
            e.links > 0
        });
    }
}

/// `key` parsed as a member of `edge` (any edge for `None`).
fn member<'k>(edge: Option<&str>, key: &'k str) -> Result<MemberKey<'k>, Refusal> {
    let m = presence::parse(key).ok_or(Refusal::NotMember)?;
    match edge {
        Some(e) if e != m.conn.edge => Err(Refusal::OtherEdge),
        _ => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::presence::ConnName;

    fn key(channel: &str, user: &str, edge: &str, worker: u16, slot: u32) -> String {
        MemberKey {
            channel,
            user,
            conn: ConnName {
                edge,
                worker,
                slot,
                generation: 1,
            },
        }
        .encode()
    }

    #[test]
    fn joins_and_leaves_change_only_what_differs() {
        let mut p = Presence::default();
        let a = key("room", "alice", "e1", 0, 1);
        assert_eq!(p.join(Some("e1"), &a, b"1"), Ok(Effect::Write));
        assert_eq!(p.join(Some("e1"), &a, b"1"), Ok(Effect::None));
        assert_eq!(p.join(Some("e1"), &a, b"2"), Ok(Effect::Write));
        assert_eq!(p.join(Some("e2"), &a, b"2"), Err(Refusal::OtherEdge));
        assert_eq!(p.join(None, "room", b"2"), Err(Refusal::NotMember));
        assert_eq!(p.count(&presence::channel_prefix("room")), 1);
        assert_eq!(p.leave(Some("e1"), &a), Ok(Effect::Write));
        assert_eq!(p.leave(Some("e1"), &a), Ok(Effect::None));
        assert!(p.is_empty() && p.channels() == 0 && p.edges.is_empty());
    }

    #[test]
    fn a_gone_edge_expires_after_the_grace_unless_it_returns() {
        let mut p = Presence::default();
        let a = key("room", "alice", "e1", 0, 1);
        let b = key("room", "bob", "e2", 1, 1);
        p.link_up("e1");
        p.link_up("e1");
        p.link_up("e2");
        p.join(Some("e1"), &a, b"").unwrap();
        p.join(Some("e2"), &b, b"").unwrap();
        p.link_down("e1", 1_000);
        assert!(p.expired(99_000, 10_000).is_empty(), "one link of e1 is left");
        p.link_down("e1", 2_000);
        p.link_down("e2", 2_000);
        assert!(p.expired(11_999, 10_000).is_empty());
        p.link_up("e2");
        let gone: Vec<String> = p.expired(12_000, 10_000).iter().map(|k| k.to_string()).collect();
        assert_eq!(gone, [a]);
    }

    #[test]
    fn a_sync_names_the_members_its_worker_no_longer_holds() {
        let mut p = Presence::default();
        let a = key("room", "alice", "e1", 0, 1);
        let b = key("room", "bob", "e1", 0, 2);
        let c = key("room", "carol", "e1", 1, 3);
        for k in [&a, &b, &c] {
            p.join(Some("e1"), k, b"").unwrap();
        }
        let announced: HashSet<Box<str>> = [a.clone().into_boxed_str()].into();
        let stale: Vec<String> = p.stale("e1", 0, &announced).iter().map(|k| k.to_string()).collect();
        assert_eq!(stale, [b]);
    }

    #[test]
    fn pages_follow_key_order() {
        let mut p = Presence::default();
        let keys: Vec<String> = (0..5).map(|i| key("r", &format!("u{i}"), "e", 0, i)).collect();
        for k in keys.iter().rev() {
            p.join(None, k, b"").unwrap();
        }
        let prefix = presence::channel_prefix("r");
        let first: Vec<String> = p.page(&prefix, None, 2).iter().map(|k| k.to_string()).collect();
        assert_eq!(first, keys[..2]);
        let next: Vec<String> =
            p.page(&prefix, Some(&keys[1]), 10).iter().map(|k| k.to_string()).collect();
        assert_eq!(next, keys[2..]);
    }
}
