//! Subscription groups: one per (worker, key or prefix). Every client subscription is a
//! member of its target's group; the group holds the internal watch(es) whose changes are
//! fanned out to its members, each change encoded once.
//!
//! How a member starts: it gets its own *join* watch on the store (a snapshot, or a resume
//! from its token), so what it receives is exactly consistent with its own position. When
//! the join has answered for all of its partitions, it is either adopted as the group's
//! watch (if the group had none there yet) or retired (`Unwatch`, see `Role::Retired`):
//! the group's watch carries the member from then on. Changes are delivered to a member only past its own
//! position, so a change arriving through both watches, or one the member's snapshot
//! already includes, is never delivered twice.
//!
//! Positions: the group keeps the position it delivered per partition; a member whose
//! positions equal the group's ("synced", the normal state) shares the group's frame and
//! token; a member that is ahead somewhere (it joined after a newer snapshot) keeps its
//! own positions until the group catches up.
//!
//! Link loss: group watches on the lost link are re-established from the group's
//! positions when the link is back (the store answers `Resumed`, or `Reset` + snapshot);
//! members still joining through it get `unavailable` and must subscribe again.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::Arc;

use hashbrown::HashTable;
use wire::client::{
    ChangeOp, Entry, ErrorCode, Position, Response, Target, decode_token, encode_token,
};
use wire::link::internal;

use super::{ConnRef, Delivery, Hub, MAX_SUBS_PER_CONN, Out, newer};

/// Everything about groups, watches and subscriptions of one worker.
#[derive(Debug, Default)]
pub(super) struct Groups {
    slab: Vec<Option<Group>>,
    free: Vec<u32>,
    /// Groups by target (key or prefix): ids only, found through each group's own
    /// copy of its target, so that no key is held twice.
    by_target: HashTable<u32>,
    /// Hashes targets for `by_target`, randomly keyed (targets come from clients).
    hasher: RandomState,
    /// Internal watches by id, but for the groups' own: joins in flight and retired
    /// joins. A group's own watches live in the group (`Group::watches`), found through
    /// the group id inside every watch id (see [`Hub::watch_id`]), so that a key's
    /// steady state costs no entry here.
    watches: HashMap<u64, WatchRef>,
    /// The groups' own watches, counted.
    group_watches: usize,
    /// Subscriptions: (connection, subscription id) → group. Ordered, so that one
    /// connection's subscriptions are a range (no second index per connection).
    subs: BTreeMap<(ConnRef, u64), u32>,
}

impl Groups {
    pub(super) fn watch_count(&self) -> usize {
        self.watches.len() + self.group_watches
    }

    /// Watch `wid`: one of its group's own, or a join from the table.
    fn watch(&self, wid: u64) -> Option<WatchRef> {
        let gid = wid as u32;
        if let Some(g) = self.slab.get(gid as usize).and_then(Option::as_ref)
            && let Some(w) = g.watches.iter().find(|w| w.id == wid)
        {
            return Some(WatchRef {
                gid,
                store: w.store as usize,
                role: Role::Group,
                part: None,
                left: 0,
            });
        }
        self.watches.get(&wid).copied()
    }

    /// Forget watch `wid`, wherever it is kept.
    fn remove_watch(&mut self, wid: u64) -> Option<WatchRef> {
        let w = self.watch(wid)?;
        if w.role == Role::Group {
            if let Some(g) = self.group(w.gid) {
                g.watches.retain(|x| x.id != wid);
            }
            self.group_watches -= 1;
        } else {
            self.watches.remove(&wid);
        }
        Some(w)
    }

    /// Make `wid` (a join in the table, or a new watch) one of its group's own.
    fn own_watch(&mut self, wid: u64, store: usize) {
        self.watches.remove(&wid);
        if let Some(g) = self.group(wid as u32) {
            crate::mem::push_tight(
                &mut g.watches,
                GWatch {
                    id: wid,
                    store: store as u32,
                },
            );
            self.group_watches += 1;
        }
    }

    pub(super) fn sub_count(&self) -> usize {
        self.subs.len()
    }

    pub(super) fn subs_of(&self, conn: ConnRef) -> Vec<u64> {
        self.subs
            .range((conn, 0)..=(conn, u64::MAX))
            .map(|(&(_, id), _)| id)
            .collect()
    }

    pub(super) fn trim(&mut self) {
        crate::mem::trim_map(&mut self.watches);
        let Self {
            by_target,
            slab,
            hasher,
            ..
        } = self;
        crate::mem::trim_table(by_target, |&g| group_hash(hasher, slab, g));
        crate::mem::trim_vec(&mut self.free);
    }

    /// The group following `target`, if any.
    fn find_group(&self, prefix: bool, target: &str) -> Option<u32> {
        let h = self.hasher.hash_one((prefix, target));
        self.by_target
            .find(h, |&g| {
                self.slab
                    .get(g as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|x| x.prefix == prefix && &*x.target == target)
            })
            .copied()
    }

    /// Index group `gid`, already in the slab, by its target.
    fn index_group(&mut self, gid: u32) {
        let Self {
            by_target,
            slab,
            hasher,
            ..
        } = self;
        let h = group_hash(hasher, slab, gid);
        by_target.insert_unique(h, gid, |&g| group_hash(hasher, slab, g));
    }

    /// Forget group `gid` (already out of the slab) following `target`.
    fn unindex_group(&mut self, gid: u32, prefix: bool, target: &str) {
        let h = self.hasher.hash_one((prefix, target));
        if let Ok(e) = self.by_target.find_entry(h, |&g| g == gid) {
            e.remove();
        }
    }

    fn group(&mut self, gid: u32) -> Option<&mut Group> {
        self.slab.get_mut(gid as usize)?.as_mut()
    }
}

/// A join watch to issue: (watch id, store, partition or all, partitions to answer,
/// resume position).
type Join = (u64, usize, Option<u32>, u32, Option<Position>);

/// Which group a change reaches: (group, through one of its own watches, else the
/// members whose joins carried it; only those are visited).
type Carried = (u32, bool, Vec<(ConnRef, u64)>);

/// An internal watch on one store's link (a group's own ones are given out as
/// `part: None, left: 0`: neither is read for them).
#[derive(Debug, Clone, Copy)]
struct WatchRef {
    gid: u32,
    store: usize,
    role: Role,
    /// The one partition it covers; `None`: every partition of the group the store owns.
    part: Option<u32>,
    /// Partitions not answered yet (a join completes at zero).
    left: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Carries the group's changes.
    Group,
    /// Starting one member: its snapshot or resume.
    Join(ConnRef, u64),
    /// A join no longer needed, unwatched: frames the store sent before it saw the
    /// `Unwatch` (a resume's catch-up changes) still reach its member, and only it,
    /// until the store's answer to the ping sent right after the `Unwatch` proves none
    /// is left. The member stays unsynced (`Own::retired`) until then.
    Retired(ConnRef, u64),
    /// A retired join whose member is gone (unsubscribed or restarted): its last
    /// frames reach no one.
    Orphan,
}

/// The clients of one worker following one key or prefix.
#[derive(Debug)]
pub(super) struct Group {
    target: Box<str>,
    prefix: bool,
    /// The partitions the target lives in, ascending (one allocation: a group is
    /// held per subscribed key, so its size is per-connection memory).
    parts: Box<[GPart]>,
    /// The group's own watches (role `Group`; not in the watch table).
    watches: Vec<GWatch>,
    members: Vec<Member>,
    /// Members by (connection, subscription id), once the group is large: a hot key's
    /// subscribe and unsubscribe storms would otherwise search the members linearly
    /// each time, quadratic in its watchers. Boxed: most groups have none, and an
    /// inline table would add 40 bytes to every one of them.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<(ConnRef, u64), u32>>>,
}

/// One of a group's own watches: its id and its store.
#[derive(Debug, Clone, Copy)]
struct GWatch {
    id: u64,
    store: u32,
}

/// Members from which a group keeps an index.
const INDEX_FROM: usize = 32;

/// One partition of a group: 24 bytes, one per subscribed key (a `Position` inside
/// would repeat the partition and need a tag of its own: 40).
#[derive(Debug, Clone, Copy)]
struct GPart {
    partition: u32,
    /// A group watch covers it (issued, on a live link).
    covered: bool,
    /// `epoch` and `seq` hold the last position delivered through the group.
    known: bool,
    epoch: u64,
    seq: u64,
}

const _: () = assert!(std::mem::size_of::<GPart>() == 24);

impl GPart {
    fn new(partition: u32) -> Self {
        Self {
            partition,
            covered: false,
            known: false,
            epoch: 0,
            seq: 0,
        }
    }

    /// The last position delivered through the group, if any.
    fn pos(&self) -> Option<Position> {
        self.known.then_some(Position {
            partition: self.partition,
            epoch: self.epoch,
            seq: self.seq,
        })
    }

    fn set_pos(&mut self, p: Position) {
        self.known = true;
        self.epoch = p.epoch;
        self.seq = p.seq;
    }
}

/// One client subscription.
#[derive(Debug)]
struct Member {
    conn: ConnRef,
    id: u64,
    /// Its own state while starting or ahead of the group; `None` when synced.
    own: Option<Box<Own>>,
}

#[derive(Debug)]
struct Own {
    /// Position per partition (as the group's `parts`).
    pos: Vec<Position>,
    /// Partition still waiting for its snapshot or resume answer.
    pending: Vec<bool>,
    /// Its join watches not yet complete.
    joins: Vec<u64>,
    /// Its retired joins whose last frames may still be on the way.
    retired: Vec<u64>,
    /// `resumed` was sent.
    resumed_sent: bool,
    /// Starting from a snapshot (not a resume): changes of partitions already
    /// snapshotted wait in `held` until the whole snapshot is out, so that a client
    /// never sees a change inside its snapshot.
    snapshotting: bool,
    /// Changes held back while snapshotting: (partition index, position, key, change).
    held: Vec<(usize, Position, Box<str>, ChangeOp<'static>)>,
}

/// Most changes held for one member while its snapshot completes.
const MAX_HELD: usize = 10_000;

impl Own {
    fn empty() -> Self {
        Self {
            pos: Vec::new(),
            pending: Vec::new(),
            joins: Vec::new(),
            retired: Vec::new(),
            resumed_sent: false,
            snapshotting: false,
            held: Vec::new(),
        }
    }

    fn token(&self) -> String {
        encode_token(&self.pos)
    }

    /// Nothing left to start and every position the group's: the group's frames and
    /// tokens are this member's too.
    fn synced(&self, parts: &[GPart]) -> bool {
        self.joins.is_empty()
            && self.retired.is_empty()
            && self.pending.iter().all(|p| !p)
            && self.pos.len() == parts.len()
            && self.pos.iter().zip(parts).all(|(p, g)| g.pos() == Some(*p))
    }
}

impl Group {
    fn idx(&self, partition: u32) -> Option<usize> {
        self.parts
            .binary_search_by_key(&partition, |x| x.partition)
            .ok()
    }

    /// Where member (`conn`, `id`) is in `members`.
    fn find(&self, conn: ConnRef, id: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&(conn, id)).map(|&i| i as usize),
            None => self
                .members
                .iter()
                .position(|m| m.conn == conn && m.id == id),
        }
    }

    fn member(&mut self, conn: ConnRef, id: u64) -> Option<&mut Member> {
        let i = self.find(conn, id)?;
        self.members.get_mut(i)
    }

    fn add_member(&mut self, m: Member) {
        let key = (m.conn, m.id);
        crate::mem::push_tight(&mut self.members, m);
        let at = self.members.len() - 1;
        match &mut self.index {
            Some(index) => {
                index.insert(key, at as u32);
            }
            None if self.members.len() >= INDEX_FROM => {
                let index = self
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| ((m.conn, m.id), i as u32))
                    .collect();
                self.index = Some(Box::new(index));
            }
            None => {}
        }
    }

    fn remove_member(&mut self, conn: ConnRef, id: u64) -> Option<Member> {
        let i = self.find(conn, id)?;
        let m = self.members.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(&(conn, id));
            // The last member moved into the gap.
            if let Some(moved) = self.members.get(i) {
                index.insert((moved.conn, moved.id), i as u32);
            }
            if self.members.len() < INDEX_FROM / 2 {
                self.index = None;
            }
        }
        Some(m)
    }

    /// The group's positions, when known for every partition.
    fn positions(&self) -> Option<Vec<Position>> {
        self.parts.iter().map(GPart::pos).collect()
    }

    /// Drop a member's own state once it matches the group's everywhere.
    fn try_sync(&mut self, conn: ConnRef, id: u64) {
        let Some(i) = self.find(conn, id) else {
            return;
        };
        let Self { parts, members, .. } = self;
        if let Some(m) = members.get_mut(i)
            && m.own.as_deref().is_some_and(|own| own.synced(parts))
        {
            m.own = None;
        }
    }

    /// The own state of member (`conn`, `id`) and the index of `partition`.
    fn own_at(&mut self, partition: u32, conn: ConnRef, id: u64) -> Option<(usize, &mut Own)> {
        let i = self.idx(partition)?;
        let own = self.member(conn, id)?.own.as_deref_mut()?;
        Some((i, own))
    }
}

/// Largest snapshot message, in key and value bytes: a store's page (up to 1 MiB) is
/// cut into parts that any client's default message limit accepts.
const SNAPSHOT_PART: usize = 64 * 1024;

/// Queue snapshot `entries` for subscription `id` of `conn`, in parts of at most
/// [`SNAPSHOT_PART`] bytes (one entry at least); the last part carries `token` and `more`.
fn push_snapshot(
    out: &mut Vec<Out>,
    conn: ConnRef,
    id: u64,
    entries: Vec<Entry<'static>>,
    token: Option<String>,
    more: bool,
) {
    let mut part: Vec<Entry<'static>> = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let size = e.key.len() + e.value.len() + 32;
        if !part.is_empty() && bytes + size > SNAPSHOT_PART {
            out.push(Out::Msg(
                conn,
                Response::Snapshot {
                    id,
                    entries: std::mem::take(&mut part),
                    token: None,
                    more: true,
                },
            ));
            bytes = 0;
        }
        bytes += size;
        part.push(e);
    }
    out.push(Out::Msg(
        conn,
        Response::Snapshot {
            id,
            entries: part,
            token: token.map(Cow::Owned),
            more,
        },
    ));
}

/// The hash `Groups::by_target` files group `gid` under.
fn group_hash(hasher: &RandomState, slab: &[Option<Group>], gid: u32) -> u64 {
    slab.get(gid as usize)
        .and_then(Option::as_ref)
        .map_or(0, |x| hasher.hash_one((x.prefix, &*x.target)))
}

impl Hub {
    /// The partitions `target` lives in: one for a key or a hash-tagged prefix, every
    /// partition for another prefix.
    fn target_parts(&self, prefix: bool, target: &str) -> Vec<u32> {
        let n = self.map.partitions;
        if !prefix {
            return vec![self.map.partition_of(target.as_bytes())];
        }
        match wire::partition::prefix_partition(target.as_bytes(), n) {
            Some(p) => vec![p],
            None => (0..n).collect(),
        }
    }

    /// The stores owning `parts`, each once.
    fn stores_of(&self, parts: &[u32]) -> Vec<usize> {
        let mut stores: Vec<usize> = parts
            .iter()
            .map(|&p| self.map.owner_index(p).unwrap_or(0))
            .collect();
        stores.sort_unstable();
        stores.dedup();
        stores
    }

    /// Start subscription `id` of `conn`.
    pub(super) fn subscribe(
        &mut self,
        conn: ConnRef,
        id: u64,
        target: &Target<'_>,
        from: Option<&str>,
    ) {
        if self.groups.subs.contains_key(&(conn, id)) {
            self.fail(
                conn,
                id,
                ErrorCode::BadRequest,
                "subscription id already in use",
            );
            return;
        }
        if self
            .groups
            .subs
            .range((conn, 0)..=(conn, u64::MAX))
            .nth(MAX_SUBS_PER_CONN - 1)
            .is_some()
        {
            self.fail(
                conn,
                id,
                ErrorCode::BadRequest,
                "too many subscriptions on this connection",
            );
            return;
        }
        let from = match from.map(decode_token).transpose() {
            Ok(f) => f,
            Err(e) => {
                self.fail(
                    conn,
                    id,
                    ErrorCode::BadRequest,
                    format!("invalid token: {e}"),
                );
                return;
            }
        };
        let (prefix, text) = match target {
            Target::Key(k) => (false, &**k),
            Target::Prefix(p) => (true, &**p),
        };
        let existing = self.groups.find_group(prefix, text);
        let parts: Vec<u32> = match existing.and_then(|g| self.groups.slab.get(g as usize)) {
            Some(Some(g)) => g.parts.iter().map(|x| x.partition).collect(),
            _ => self.target_parts(prefix, text),
        };
        if self.stores_of(&parts).iter().any(|&s| !self.is_up(s)) {
            self.fail(
                conn,
                id,
                ErrorCode::Unavailable,
                "a store of this subscription is unreachable",
            );
            return;
        }
        // Resume only when the token holds a position for every partition of the target.
        let resume: Option<Vec<Position>> = from.as_ref().and_then(|positions| {
            parts
                .iter()
                .map(|&p| positions.iter().find(|q| q.partition == p).copied())
                .collect()
        });
        if from.is_some() && resume.is_none() {
            self.reply(
                conn,
                Response::Reset {
                    id,
                    reason: Cow::Borrowed("the token does not match this subscription"),
                },
            );
        }
        let gid = match existing {
            Some(g) => g,
            None => {
                let group = Group {
                    target: text.into(),
                    prefix,
                    parts: parts
                        .iter()
                        .map(|&partition| GPart::new(partition))
                        .collect(),
                    watches: Vec::new(),
                    members: Vec::new(),
                    index: None,
                };
                let g = match self.groups.free.pop() {
                    Some(g) => {
                        if let Some(slot) = self.groups.slab.get_mut(g as usize) {
                            *slot = Some(group);
                        }
                        g
                    }
                    None => {
                        self.groups.slab.push(Some(group));
                        (self.groups.slab.len() - 1) as u32
                    }
                };
                self.groups.index_group(g);
                g
            }
        };
        let own = self.start_member(gid, conn, id, resume);
        if let Some(g) = self.groups.group(gid) {
            g.add_member(Member {
                conn,
                id,
                own: Some(own),
            });
        }
        self.groups.subs.insert((conn, id), gid);
    }

    /// Issue the join watches that start member (`conn`, `id`) of group `gid`: one per
    /// partition to resume from `resume`; to snapshot, one per store (the store
    /// snapshots every partition of the target it owns). Returns its starting state.
    fn start_member(
        &mut self,
        gid: u32,
        conn: ConnRef,
        id: u64,
        resume: Option<Vec<Position>>,
    ) -> Box<Own> {
        let map = Arc::clone(&self.map);
        let owner = |p: u32| map.owner_index(p).unwrap_or(0);
        let Some(g) = self.groups.slab.get(gid as usize).and_then(Option::as_ref) else {
            return Box::new(Own::empty());
        };
        let (text, prefix) = (g.target.clone(), g.prefix);
        let parts: Vec<u32> = g.parts.iter().map(|x| x.partition).collect();
        let stores = self.stores_of(&parts);
        let mut own = Own {
            pos: resume.clone().unwrap_or_else(|| {
                parts
                    .iter()
                    .map(|&p| Position {
                        partition: p,
                        ..Position::default()
                    })
                    .collect()
            }),
            pending: vec![true; parts.len()],
            joins: Vec::new(),
            retired: Vec::new(),
            resumed_sent: false,
            snapshotting: resume.is_none(),
            held: Vec::new(),
        };
        let mut joins: Vec<Join> = Vec::new();
        match &resume {
            Some(positions) => {
                for pos in positions {
                    joins.push((
                        self.watch_id(gid),
                        owner(pos.partition),
                        Some(pos.partition),
                        1,
                        Some(*pos),
                    ));
                }
            }
            None if parts.len() == 1 => {
                let p = parts.first().copied().unwrap_or(0);
                joins.push((self.watch_id(gid), owner(p), Some(p), 1, None));
            }
            None => {
                for &s in &stores {
                    let count = parts.iter().filter(|&&p| owner(p) == s).count() as u32;
                    joins.push((self.watch_id(gid), s, None, count, None));
                }
            }
        }
        for &(wid, s, part, left, pos) in &joins {
            if let Some(out) = self.link_out.get_mut(s) {
                let _ = self
                    .enc
                    .watch(out, wid, wid, &text, prefix, pos.map(Into::into));
            }
            self.groups.watches.insert(
                wid,
                WatchRef {
                    gid,
                    store: s,
                    role: Role::Join(conn, id),
                    part,
                    left,
                },
            );
            own.joins.push(wid);
        }
        Box::new(own)
    }

    /// Start member (`conn`, `id`) over from a fresh snapshot of every partition (after
    /// a reset of one partition of a multi-partition target: a client replaces its
    /// whole state on the snapshot that follows a `reset`).
    fn restart_member(&mut self, gid: u32, conn: ConnRef, id: u64) {
        let old = self
            .groups
            .group(gid)
            .and_then(|g| g.member(conn, id))
            .and_then(|m| m.own.take());
        if let Some(old) = old {
            for wid in old.joins {
                self.drop_watch(wid);
            }
            self.orphan(&old.retired);
        }
        let own = self.start_member(gid, conn, id, None);
        if let Some(m) = self.groups.group(gid).and_then(|g| g.member(conn, id)) {
            m.own = Some(own);
        }
    }

    /// End subscription `id` of `conn`; false if there is none.
    pub(super) fn unsubscribe(&mut self, conn: ConnRef, id: u64) -> bool {
        let Some(gid) = self.groups.subs.remove(&(conn, id)) else {
            return false;
        };
        let mut unwatch: Vec<u64> = Vec::new();
        let mut retired: Vec<u64> = Vec::new();
        let mut empty = false;
        if let Some(g) = self.groups.group(gid) {
            if let Some(m) = g.remove_member(conn, id)
                && let Some(own) = m.own
            {
                unwatch.extend(own.joins);
                retired = own.retired;
            }
            if g.members.is_empty() {
                empty = true;
                unwatch.extend(g.watches.iter().map(|w| w.id));
            }
        }
        for wid in unwatch {
            self.drop_watch(wid);
        }
        self.orphan(&retired);
        if empty && let Some(slot) = self.groups.slab.get_mut(gid as usize) {
            if let Some(g) = slot.take() {
                self.groups.unindex_group(gid, g.prefix, &g.target);
            }
            self.groups.free.push(gid);
        }
        true
    }

    /// A fresh id for a watch of group `gid`: the top bit set (request ids, from the
    /// same sequence, never reach it), a sequence number in bits 32 to 62, never zero
    /// (the link's keep-alive ping nonces are the top bit and a tick below bit 32, so
    /// that no pong of theirs names a watch), the group in bits 0 to 31. The sequence
    /// wraps after 2^31 watches: an id still in use is skipped.
    fn watch_id(&mut self, gid: u32) -> u64 {
        loop {
            let seq = self.id() & 0x7FFF_FFFF;
            let wid = 1 << 63 | seq << 32 | u64::from(gid);
            if seq != 0 && self.groups.watch(wid).is_none() {
                return wid;
            }
        }
    }

    /// Forget watch `wid`, telling its store whatever the link's state: a watch the hub
    /// still holds while its link is down was issued since the drop (a member starting
    /// over), and its `Watch` waits in `link_out` for the link to come back; the
    /// `Unwatch` must follow it there, or the store would keep a watch nobody reads.
    fn drop_watch(&mut self, wid: u64) {
        if let Some(w) = self.groups.remove_watch(wid)
            && let Some(out) = self.link_out.get_mut(w.store)
        {
            let _ = self.enc.unwatch(out, wid, wid);
        }
    }

    /// Unwatch `wid` but keep routing its frames to its group until the store has
    /// answered a ping sent after the `Unwatch`.
    fn retire_watch(&mut self, wid: u64, conn: ConnRef, id: u64) {
        let Some(gid) = self.groups.watches.get(&wid).map(|w| w.gid) else {
            return;
        };
        let own = self
            .groups
            .group(gid)
            .and_then(|g| g.member(conn, id))
            .and_then(|m| m.own.as_deref_mut());
        let role = match own {
            Some(own) => {
                own.retired.push(wid);
                Role::Retired(conn, id)
            }
            None => Role::Orphan,
        };
        let Some(w) = self.groups.watches.get_mut(&wid) else {
            return;
        };
        w.role = role;
        let s = w.store;
        if let Some(out) = self.link_out.get_mut(s) {
            let _ = self.enc.unwatch(out, wid, wid);
            let _ = self.enc.ping(out, wid, wid);
        }
    }

    /// The store answered the ping with `nonce`: a retired watch is gone for good.
    pub(crate) fn on_pong(&mut self, nonce: u64) {
        if let Some(w) = self.groups.watch(nonce)
            && matches!(w.role, Role::Retired(..) | Role::Orphan)
        {
            self.forget_retired(nonce, &w);
        }
    }

    /// Retired watch `wid` is gone: its member no longer waits for it.
    fn forget_retired(&mut self, wid: u64, w: &WatchRef) {
        self.groups.watches.remove(&wid);
        if let Role::Retired(conn, id) = w.role
            && let Some(g) = self.groups.group(w.gid)
        {
            if let Some(own) = g.member(conn, id).and_then(|m| m.own.as_deref_mut()) {
                own.retired.retain(|&x| x != wid);
            }
            g.try_sync(conn, id);
        }
    }

    /// The member of these retired joins is gone: their last frames reach no one.
    fn orphan(&mut self, wids: &[u64]) {
        for wid in wids {
            if let Some(w) = self.groups.watches.get_mut(wid) {
                w.role = Role::Orphan;
            }
        }
    }

    /// Store `s`'s link dropped: its watches are gone.
    pub(super) fn lose_watches(&mut self, s: usize) {
        let lost: Vec<(u64, WatchRef)> = self
            .groups
            .watches
            .iter()
            .filter(|(_, w)| w.store == s)
            .map(|(&wid, w)| (wid, *w))
            .collect();
        let mut failed: Vec<(ConnRef, u64)> = Vec::new();
        for (wid, w) in lost {
            self.groups.watches.remove(&wid);
            match w.role {
                // Groups keep their own watches (below).
                Role::Group => {}
                Role::Join(conn, id) => failed.push((conn, id)),
                Role::Retired(..) | Role::Orphan => self.forget_retired(wid, &w),
            }
        }
        let map = Arc::clone(&self.map);
        let mut gone = 0;
        for g in self.groups.slab.iter_mut().flatten() {
            let before = g.watches.len();
            g.watches.retain(|w| w.store as usize != s);
            gone += before - g.watches.len();
            for gp in g.parts.iter_mut() {
                if map.owner_index(gp.partition) == Some(s) {
                    gp.covered = false;
                }
            }
        }
        self.groups.group_watches -= gone;
        failed.sort_unstable();
        failed.dedup();
        for (conn, id) in failed {
            self.fail(
                conn,
                id,
                ErrorCode::Unavailable,
                "the store became unreachable while the subscription started; subscribe again",
            );
            self.unsubscribe(conn, id);
        }
    }

    /// Store `s`'s link is back: each group resumes, partition by partition, from the
    /// position it delivered.
    pub(super) fn rewatch(&mut self, s: usize) {
        let map = Arc::clone(&self.map);
        let mut issue: Vec<(u32, Position, Box<str>, bool)> = Vec::new();
        for (gid, g) in self.groups.slab.iter_mut().enumerate() {
            let Some(g) = g else { continue };
            for (i, gp) in g.parts.iter_mut().enumerate() {
                if map.owner_index(gp.partition) != Some(s) || gp.covered {
                    continue;
                }
                let Some(mut from) = gp.pos() else { continue };
                // A member still catching up through a watch the link took with it
                // (a resume's retired join) is behind the group: resume from the
                // oldest such position; the position filters keep everyone else from
                // seeing a change twice.
                for m in &g.members {
                    if let Some(own) = &m.own
                        && own.pending.get(i) == Some(&false)
                        && let Some(mp) = own.pos.get(i)
                        && newer(&from, mp)
                    {
                        from = *mp;
                    }
                }
                issue.push((gid as u32, from, g.target.clone(), g.prefix));
                gp.covered = true;
            }
        }
        for (gid, pos, target, prefix) in issue {
            let wid = self.watch_id(gid);
            if let Some(out) = self.link_out.get_mut(s) {
                let _ = self
                    .enc
                    .watch(out, wid, wid, &target, prefix, Some(pos.into()));
            }
            self.groups.own_watch(wid, s);
        }
    }

    /// The store refused watch `wid` (request id = watch id).
    pub(super) fn watch_failed(&mut self, wid: u64, code: ErrorCode, message: &str) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let victims: Vec<(ConnRef, u64)> = match w.role {
            Role::Retired(..) | Role::Orphan => Vec::new(),
            Role::Join(conn, id) => vec![(conn, id)],
            Role::Group => self
                .groups
                .group(w.gid)
                .map(|g| g.members.iter().map(|m| (m.conn, m.id)).collect())
                .unwrap_or_default(),
        };
        if matches!(w.role, Role::Retired(..) | Role::Orphan) {
            self.forget_retired(wid, &w);
            return;
        }
        self.groups.remove_watch(wid);
        for (conn, id) in victims {
            self.fail(conn, id, code, message.to_owned());
            self.unsubscribe(conn, id);
        }
    }

    /// The partitions (indexes into the group's) a join watch answers for.
    fn watch_parts(&self, g: &Group, w: &WatchRef) -> Vec<usize> {
        match w.part {
            Some(p) => g.idx(p).into_iter().collect(),
            None => g
                .parts
                .iter()
                .enumerate()
                .filter(|(_, p)| self.map.owner_index(p.partition) == Some(w.store))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// A join watch has answered for all its partitions: adopt it as the group's watch
    /// where the group has none, else drop it.
    fn complete_join(&mut self, wid: u64, conn: ConnRef, id: u64) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let Some(g) = self
            .groups
            .slab
            .get(w.gid as usize)
            .and_then(Option::as_ref)
        else {
            return;
        };
        let idxs = self.watch_parts(g, &w);
        let mut adopt = false;
        if let Some(g) = self.groups.group(w.gid) {
            let member_pos: Option<Vec<Position>> = g
                .member(conn, id)
                .and_then(|m| m.own.as_ref().map(|o| o.pos.clone()));
            for &i in &idxs {
                if let Some(gp) = g.parts.get_mut(i)
                    && !gp.covered
                {
                    adopt = true;
                    if let Some(mp) = member_pos.as_ref().and_then(|v| v.get(i)) {
                        gp.covered = true;
                        gp.set_pos(*mp);
                    }
                }
            }
            if let Some(m) = g.member(conn, id)
                && let Some(own) = &mut m.own
            {
                own.joins.retain(|&x| x != wid);
            }
        }
        if adopt {
            self.groups.own_watch(wid, w.store);
        } else {
            self.retire_watch(wid, conn, id);
        }
        if let Some(g) = self.groups.group(w.gid) {
            g.try_sync(conn, id);
        }
    }

    pub(super) fn on_snapshot(&mut self, snap: &internal::Snapshot<'_>) {
        let wid = snap.watch_id();
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let p = snap.partition();
        let pos = snap.position().map_or(
            Position {
                partition: p,
                ..Position::default()
            },
            Position::from,
        );
        let more = snap.more();
        let entries: Vec<Entry<'static>> = snap
            .entries()
            .map(|es| {
                es.iter()
                    .map(|e| Entry {
                        key: Cow::Owned(e.key().to_owned()),
                        value: Cow::Owned(
                            e.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                        ),
                        version: e.version(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut complete = None;
        let mut out: Vec<Out> = Vec::new();
        let mut released = 0;
        {
            let Some(g) = self.groups.group(w.gid) else {
                return;
            };
            match w.role {
                Role::Join(conn, id) => {
                    let Some((i, own)) = g.own_at(p, conn, id) else {
                        return;
                    };
                    // An answer for a partition already answered (or not asked) is not
                    // the store's to give: ignore it.
                    if own.pending.get(i) != Some(&true) {
                        return;
                    }
                    if !more
                        && let (Some(pend), Some(mp)) = (own.pending.get_mut(i), own.pos.get_mut(i))
                    {
                        *pend = false;
                        *mp = pos;
                    }
                    let done = own.pending.iter().all(|x| !x);
                    let token = done.then(|| own.token());
                    push_snapshot(&mut out, conn, id, entries, token, !done);
                    if done {
                        // The snapshot is out: what was held behind it follows.
                        own.snapshotting = false;
                        for (hi, hpos, hkey, hop) in std::mem::take(&mut own.held) {
                            if let Some(mp) = own.pos.get_mut(hi) {
                                *mp = hpos;
                            }
                            let d = Delivery::new(&hkey, hop, own.token());
                            out.push(Out::Change(conn, id, Rc::new(d)));
                            released += 1;
                        }
                    }
                    if !more && let Some(wr) = self.groups.watches.get_mut(&wid) {
                        wr.left = wr.left.saturating_sub(1);
                        if wr.left == 0 {
                            complete = Some((conn, id));
                        }
                    }
                }
                Role::Retired(..) | Role::Orphan => {}
                Role::Group => {
                    // After a reset of the group's watch: every member restarts this
                    // partition from the fresh snapshot (a multi-partition target's
                    // members were restarted on their own joins at the reset).
                    let Some(i) = g.idx(p) else {
                        return;
                    };
                    if !more && let Some(gp) = g.parts.get_mut(i) {
                        gp.set_pos(pos);
                    }
                    if g.parts.len() > 1 {
                        return;
                    }
                    let group_pos = g.positions();
                    for m in &mut g.members {
                        let token = match &mut m.own {
                            Some(own) if own.pending.get(i) == Some(&true) => continue,
                            Some(own) => {
                                if !more && let Some(mp) = own.pos.get_mut(i) {
                                    *mp = pos;
                                }
                                own.token()
                            }
                            None => group_pos.as_deref().map(encode_token).unwrap_or_default(),
                        };
                        let token = (!more).then_some(token);
                        push_snapshot(&mut out, m.conn, m.id, entries.clone(), token, more);
                    }
                }
            }
        }
        self.out.append(&mut out);
        self.stats.deliveries += released;
        if let Some((conn, id)) = complete {
            self.complete_join(wid, conn, id);
        }
    }

    pub(super) fn on_resumed(&mut self, wid: u64, p: u32) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let Role::Join(conn, id) = w.role else {
            // A group watch resumed after a link loss: nothing to tell anyone.
            return;
        };
        let mut out: Vec<Out> = Vec::new();
        {
            let Some((i, own)) = self.groups.group(w.gid).and_then(|g| g.own_at(p, conn, id))
            else {
                return;
            };
            // Only a partition still waiting can be resumed (see `on_snapshot`).
            if own.pending.get(i) != Some(&true) {
                return;
            }
            if let Some(pend) = own.pending.get_mut(i) {
                *pend = false;
            }
            if !std::mem::replace(&mut own.resumed_sent, true) {
                out.push(Out::Msg(
                    conn,
                    Response::Resumed {
                        id,
                        token: Cow::Owned(own.token()),
                    },
                ));
            }
        }
        self.out.append(&mut out);
        let done = self.groups.watches.get_mut(&wid).is_some_and(|wr| {
            wr.left = wr.left.saturating_sub(1);
            wr.left == 0
        });
        if done {
            self.complete_join(wid, conn, id);
        }
    }

    pub(super) fn on_reset(&mut self, wid: u64, p: u32, reason: &str) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let Some(g) = self.groups.group(w.gid) else {
            return;
        };
        let Some(i) = g.idx(p) else {
            return;
        };
        let multi = g.parts.len() > 1;
        let gid = w.gid;
        let to: Vec<(ConnRef, u64)> = match w.role {
            Role::Retired(..) | Role::Orphan => Vec::new(),
            Role::Join(conn, id) => vec![(conn, id)],
            // Every member starts over, pending ones included.
            Role::Group if multi => g.members.iter().map(|m| (m.conn, m.id)).collect(),
            // The snapshot that follows on this watch reaches those not pending here.
            Role::Group => g
                .members
                .iter()
                .filter(|m| {
                    m.own
                        .as_ref()
                        .is_none_or(|o| o.pending.get(i) != Some(&true))
                })
                .map(|m| (m.conn, m.id))
                .collect(),
        };
        for (conn, id) in to {
            self.reply(
                conn,
                Response::Reset {
                    id,
                    reason: Cow::Owned(reason.to_owned()),
                },
            );
            // One partition of several cannot be resumed: a fresh snapshot of all of
            // them follows (a single-partition target's follows on this very watch).
            if multi {
                self.restart_member(gid, conn, id);
            }
        }
    }

    pub(super) fn on_change(&mut self, ch: &internal::Change<'_>) {
        let Some(position) = ch.position() else {
            return;
        };
        let pos = Position::from(position);
        // Per group: whether one of the group's own watches carried it (only those
        // move the group's position and reach every member), else the members whose
        // joins carried it. A join's change (a resume catching up) is its member's
        // alone: the group's watch may not have delivered the changes before it yet
        // (a batch landing while the resume read the log), and the others must get
        // those first.
        let mut gids: Vec<Carried> = Vec::new();
        if let Some(ids) = ch.watch_ids() {
            for wid in ids {
                let Some(w) = self.groups.watch(wid) else {
                    continue;
                };
                let (via_group, member) = match w.role {
                    Role::Group => (true, None),
                    Role::Join(conn, id) | Role::Retired(conn, id) => (false, Some((conn, id))),
                    Role::Orphan => continue,
                };
                let i = match gids.iter().position(|(g, ..)| *g == w.gid) {
                    Some(i) => i,
                    None => {
                        gids.push((w.gid, false, Vec::new()));
                        gids.len() - 1
                    }
                };
                if let Some(entry) = gids.get_mut(i) {
                    entry.1 |= via_group;
                    entry.2.extend(member);
                }
            }
        }
        if gids.is_empty() {
            return;
        }
        let value = || ch.value().map(|v| v.bytes().to_vec()).unwrap_or_default();
        let op: ChangeOp<'static> = match ch.kind() {
            internal::ChangeKind::Delete => ChangeOp::Delete {
                version: ch.version(),
            },
            internal::ChangeKind::Publish => ChangeOp::Publish {
                value: Cow::Owned(value()),
            },
            _ => ChangeOp::Put {
                value: Cow::Owned(value()),
                version: ch.version(),
            },
        };
        let key = ch.key();
        let mut delivered = 0u64;
        let mut overflow: Vec<(ConnRef, u64)> = Vec::new();
        for (gid, via_group, only) in gids {
            let Some(g) = self
                .groups
                .slab
                .get_mut(gid as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let Some(i) = g.idx(pos.partition) else {
                continue;
            };
            // A retired watch's id may outlive its group (and the slot be reused): a
            // change is only ever delivered to a group whose target it matches.
            let matches = if g.prefix {
                key.starts_with(&*g.target)
            } else {
                key == &*g.target
            };
            if !matches {
                continue;
            }
            // A join's change visits only its members, not the whole group: a hot key's
            // resume storm would otherwise walk every member for every catch-up change.
            let picked: Option<Vec<usize>> = (!via_group).then(|| {
                let mut at: Vec<usize> = only.iter().filter_map(|&(c, id)| g.find(c, id)).collect();
                at.sort_unstable();
                at.dedup();
                at
            });
            let Group { parts, members, .. } = g;
            let advance = via_group
                && parts
                    .get(i)
                    .is_some_and(|gp| gp.covered && gp.pos().is_none_or(|at| newer(&pos, &at)));
            if advance && let Some(gp) = parts.get_mut(i) {
                gp.set_pos(pos);
            }
            let mut shared: Option<Rc<Delivery>> = None;
            let visits = picked.as_ref().map_or(members.len(), Vec::len);
            for k in 0..visits {
                let at = picked.as_ref().map_or(Some(k), |p| p.get(k).copied());
                let Some(m) = at.and_then(|at| members.get_mut(at)) else {
                    continue;
                };
                let mut caught_up = false;
                match &mut m.own {
                    None => {
                        if advance {
                            // Synced members exist only once every position is known.
                            let d = shared.get_or_insert_with(|| {
                                let at: Vec<Position> =
                                    parts.iter().filter_map(GPart::pos).collect();
                                Rc::new(Delivery::new(key, op.clone(), encode_token(&at)))
                            });
                            self.out.push(Out::Change(m.conn, m.id, Rc::clone(d)));
                            delivered += 1;
                        }
                    }
                    Some(own) => {
                        if own.pending.get(i) != Some(&false) {
                            continue;
                        }
                        // Past what it has, counting changes already held for it.
                        let last = own
                            .held
                            .iter()
                            .rev()
                            .find(|h| h.0 == i)
                            .map(|h| h.1)
                            .or_else(|| own.pos.get(i).copied());
                        if !last.is_some_and(|mp| newer(&pos, &mp)) {
                            // The group's watch may just have brought the group level
                            // with a member that was ahead.
                            if advance && own.synced(parts) {
                                m.own = None;
                            }
                            continue;
                        }
                        if own.snapshotting && own.pending.iter().any(|p| *p) {
                            // Its snapshot is still coming from another store.
                            if own.held.len() >= MAX_HELD {
                                overflow.push((m.conn, m.id));
                            } else {
                                own.held.push((i, pos, key.into(), op.clone()));
                            }
                            continue;
                        }
                        if let Some(mp) = own.pos.get_mut(i) {
                            *mp = pos;
                        }
                        let d = Delivery::new(key, op.clone(), own.token());
                        self.out.push(Out::Change(m.conn, m.id, Rc::new(d)));
                        delivered += 1;
                        caught_up = own.synced(parts);
                    }
                }
                // A member that just caught up with the group shares its frames again.
                if caught_up {
                    m.own = None;
                }
            }
        }
        self.stats.deliveries += delivered;
        for (conn, id) in overflow {
            self.fail(
                conn,
                id,
                ErrorCode::Overloaded,
                "too many changes while the snapshot was coming; subscribe again",
            );
            self.unsubscribe(conn, id);
        }
    }
}
