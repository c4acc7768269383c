//! Where one worker finds its groups, subscriptions and watches. In: a target, a
//! subscription ([`SubRef`]) or a watch id; out: the group ([`GroupId`]) or the watch
//! ([`WatchRef`]) it names.
//!
//! - Groups sit in a slab by [`GroupId`] (freed slots are reused), found by target through
//!   a hash table of ids only: each group's own copy of its target is the key, so that no
//!   key is held twice.
//! - Subscriptions map to their group in an ordered map, so that one connection's
//!   subscriptions are a range (no second index per connection).
//! - Watches: a group's own watches live in the group ([`Group::watches`]), found through
//!   the group id every watch id carries as its tag, so that a key's steady state costs
//!   no entry here; the table holds only joins in flight and retired joins.
//! - Shared joins: a resume join that has heard nothing from its store yet is open, found
//!   by (group, position); a later member resuming the group from the same position
//!   rides on it instead of issuing its own. The first member is in the join's role, the
//!   riders in a table of their own (most joins have none).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use wire::client::Position;
use wire::cluster::ClusterMap;
use wire::link::WatchId;

use super::group::{GWatch, Group};
use super::watches::{Role, WatchRef};
use super::{ConnRef, SubRef};

/// A group's place in the slab, and the tag of every watch id the group issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GroupId(u32);

impl GroupId {
    /// The group watch `wid` was issued for (a retired watch may outlive its group, and
    /// the slot be reused).
    pub(super) fn of(wid: WatchId) -> Self {
        Self(wid.tag())
    }

    /// The tag of the group's watch ids.
    pub(super) fn tag(self) -> u32 {
        self.0
    }

    fn slot(self) -> usize {
        self.0 as usize
    }
}

/// Everything about groups, watches and subscriptions of one worker.
#[derive(Debug, Default)]
pub(super) struct Groups {
    slab: Vec<Option<Group>>,
    free: Vec<GroupId>,
    /// Groups by target (key or prefix): ids only, found through each group's own copy
    /// of its target.
    by_target: HashTable<GroupId>,
    /// Hashes targets for `by_target`, randomly keyed (targets come from clients).
    hasher: RandomState,
    /// Internal watches by id, but for the groups' own: joins in flight and retired joins.
    watches: HashMap<WatchId, WatchRef>,
    /// The groups' own watches, counted.
    group_watches: usize,
    /// Members beyond the first on shared joins and retired shared joins.
    riders: HashMap<WatchId, Vec<SubRef>>,
    /// Resume joins that have heard nothing from their store yet, by group and the
    /// position they resume after.
    open: HashMap<(GroupId, Position), WatchId>,
    /// Subscriptions → group, ordered (one connection's are a range).
    subs: BTreeMap<SubRef, GroupId>,
}

impl Groups {
    pub(super) fn watch_count(&self) -> usize {
        self.watches.len() + self.group_watches
    }

    pub(super) fn sub_count(&self) -> usize {
        self.subs.len()
    }

    /// The subscription ids connection `conn` holds, ascending.
    pub(super) fn subs_on(&self, conn: ConnRef) -> impl Iterator<Item = u64> + '_ {
        let range = SubRef { conn, id: 0 }..=SubRef { conn, id: u64::MAX };
        self.subs.range(range).map(|(sub, _)| sub.id)
    }

    pub(super) fn subs_of(&self, conn: ConnRef) -> Vec<u64> {
        self.subs_on(conn).collect()
    }

    /// The group subscription `sub` is a member of.
    pub(super) fn group_of(&self, sub: SubRef) -> Option<GroupId> {
        self.subs.get(&sub).copied()
    }

    pub(super) fn has_sub(&self, sub: SubRef) -> bool {
        self.subs.contains_key(&sub)
    }

    pub(super) fn add_sub(&mut self, sub: SubRef, gid: GroupId) {
        self.subs.insert(sub, gid);
    }

    /// Forget subscription `sub`; the group it was in.
    pub(super) fn remove_sub(&mut self, sub: SubRef) -> Option<GroupId> {
        self.subs.remove(&sub)
    }

    pub(super) fn trim(&mut self) {
        crate::mem::trim_map(&mut self.watches);
        crate::mem::trim_map(&mut self.riders);
        crate::mem::trim_map(&mut self.open);
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
    pub(super) fn find_group(&self, prefix: bool, target: &str) -> Option<GroupId> {
        let h = self.hasher.hash_one((prefix, target));
        self.by_target
            .find(h, |&g| {
                self.get(g)
                    .is_some_and(|x| x.prefix == prefix && &*x.target == target)
            })
            .copied()
    }

    /// Place `group` in the slab (a free slot first) and index it by its target.
    pub(super) fn insert_group(&mut self, group: Group) -> GroupId {
        let gid = match self.free.pop() {
            Some(g) => {
                if let Some(slot) = self.slab.get_mut(g.slot()) {
                    *slot = Some(group);
                }
                g
            }
            None => {
                self.slab.push(Some(group));
                GroupId((self.slab.len() - 1) as u32)
            }
        };
        let Self {
            by_target,
            slab,
            hasher,
            ..
        } = self;
        let h = group_hash(hasher, slab, gid);
        by_target.insert_unique(h, gid, |&g| group_hash(hasher, slab, g));
        gid
    }

    /// Take group `gid` out of the slab and the target index; its slot is free.
    pub(super) fn remove_group(&mut self, gid: GroupId) {
        let Some(slot) = self.slab.get_mut(gid.slot()) else {
            return;
        };
        if let Some(g) = slot.take() {
            let h = self.hasher.hash_one((g.prefix, &*g.target));
            if let Ok(e) = self.by_target.find_entry(h, |&x| x == gid) {
                e.remove();
            }
        }
        self.free.push(gid);
    }

    pub(super) fn get(&self, gid: GroupId) -> Option<&Group> {
        self.slab.get(gid.slot())?.as_ref()
    }

    pub(super) fn group(&mut self, gid: GroupId) -> Option<&mut Group> {
        self.slab.get_mut(gid.slot())?.as_mut()
    }

    /// Every group, with its id.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (GroupId, &mut Group)> {
        self.slab
            .iter_mut()
            .enumerate()
            .filter_map(|(i, g)| Some((GroupId(i as u32), g.as_mut()?)))
    }

    /// Watch `wid`: one of its group's own, or a join from the table.
    pub(super) fn watch(&self, wid: WatchId) -> Option<WatchRef> {
        let gid = GroupId::of(wid);
        if let Some(g) = self.get(gid)
            && let Some(w) = g.watches.iter().find(|w| w.id == wid)
        {
            return Some(WatchRef {
                gid,
                store: w.store as usize,
                role: Role::Group,
                part: None,
                left: 0,
                from: None,
            });
        }
        self.watches.get(&wid).copied()
    }

    /// Forget watch `wid`, wherever it is kept.
    pub(super) fn remove_watch(&mut self, wid: WatchId) -> Option<WatchRef> {
        let w = self.watch(wid)?;
        if w.role == Role::Group {
            if let Some(g) = self.group(w.gid) {
                g.watches.retain(|x| x.id != wid);
            }
            self.group_watches -= 1;
        } else {
            self.forget_join(wid);
        }
        Some(w)
    }

    /// Make `wid` (a join in the table, or a new watch) one of its group's own.
    pub(super) fn own_watch(&mut self, wid: WatchId, store: usize) {
        self.forget_join(wid);
        if let Some(g) = self.group(GroupId::of(wid)) {
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

    /// File a join (or a retired join) in the table.
    pub(super) fn add_join(&mut self, wid: WatchId, w: WatchRef) {
        self.watches.insert(wid, w);
    }

    /// A join (or retired join) in the table.
    pub(super) fn join(&self, wid: WatchId) -> Option<WatchRef> {
        self.watches.get(&wid).copied()
    }

    /// A join (or retired join) in the table, to change.
    pub(super) fn join_mut(&mut self, wid: WatchId) -> Option<&mut WatchRef> {
        self.watches.get_mut(&wid)
    }

    /// Take a join (or retired join) out of the table, with its riders.
    pub(super) fn forget_join(&mut self, wid: WatchId) {
        self.heard(wid);
        self.watches.remove(&wid);
        self.riders.remove(&wid);
    }

    /// File resume join `wid` of group `gid`, resuming after `from`, as open: it has
    /// heard nothing yet.
    pub(super) fn add_open(&mut self, gid: GroupId, from: Position, wid: WatchId) {
        self.open.insert((gid, from), wid);
    }

    /// The open resume join of group `gid` resuming after `from`, if there is one: a
    /// member resuming from there too may ride on it.
    pub(super) fn open_join(&self, gid: GroupId, from: Position) -> Option<WatchId> {
        let wid = *self.open.get(&(gid, from))?;
        let w = self.watches.get(&wid)?;
        matches!(w.role, Role::Join(_)).then_some(wid)
    }

    /// Whether any join is open (most of the time none is: then a change costs no
    /// lookup for it).
    pub(super) fn any_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Watch `wid` has heard from its store: it is no longer open, for a member riding on
    /// it from now on would miss what it heard.
    pub(super) fn heard(&mut self, wid: WatchId) {
        if self.open.is_empty() {
            return;
        }
        if let Some(w) = self.watches.get(&wid)
            && let Some(from) = w.from
            && self.open.get(&(w.gid, from)) == Some(&wid)
        {
            self.open.remove(&(w.gid, from));
        }
    }

    /// Member `sub` rides on join `wid` from now on.
    pub(super) fn add_rider(&mut self, wid: WatchId, sub: SubRef) {
        self.riders.entry(wid).or_default().push(sub);
    }

    /// The members riding on join (or retired join) `wid`, beyond the one in its role.
    pub(super) fn riders_of(&self, wid: WatchId) -> &[SubRef] {
        self.riders.get(&wid).map_or(&[][..], Vec::as_slice)
    }

    /// Every member join (or retired join) `wid` serves, `first` (the one in its role)
    /// first.
    pub(super) fn join_subs(&self, wid: WatchId, first: SubRef) -> Vec<SubRef> {
        std::iter::once(first)
            .chain(self.riders_of(wid).iter().copied())
            .collect()
    }

    /// Set the members a join (or retired join) serves: the role's one and the riders.
    pub(super) fn set_riders(&mut self, wid: WatchId, riders: Vec<SubRef>) {
        if riders.is_empty() {
            self.riders.remove(&wid);
        } else {
            self.riders.insert(wid, riders);
        }
    }

    /// Member `sub` no longer waits for join (or retired join) `wid`: whether other
    /// members still do (else the caller drops or orphans it). False too for a watch
    /// that is not a member's.
    pub(super) fn leave_join(&mut self, wid: WatchId, sub: SubRef) -> bool {
        let Some(w) = self.watches.get_mut(&wid) else {
            return false;
        };
        let (Role::Join(first) | Role::Retired(first)) = &mut w.role else {
            return false;
        };
        let Some(riders) = self.riders.get_mut(&wid) else {
            // Not shared: the first still waits for it unless it is `sub`.
            return *first != sub;
        };
        if *first == sub {
            match riders.pop() {
                Some(next) => *first = next,
                None => return false,
            }
        } else if let Some(at) = riders.iter().position(|&r| r == sub) {
            riders.swap_remove(at);
        }
        if riders.is_empty() {
            self.riders.remove(&wid);
        }
        true
    }

    /// Join `wid` has answered for one more partition: whether that was its last.
    pub(super) fn count_answer(&mut self, wid: WatchId) -> bool {
        self.watches.get_mut(&wid).is_some_and(|w| {
            w.left = w.left.saturating_sub(1);
            w.left == 0
        })
    }

    /// The joins and retired joins on store `s`'s link.
    pub(super) fn joins_on(&self, s: usize) -> Vec<WatchId> {
        self.watches
            .iter()
            .filter(|(_, w)| w.store == s)
            .map(|(&wid, _)| wid)
            .collect()
    }

    /// Store `s`'s link dropped: the groups' own watches on it are gone, and no
    /// partition it owns is covered any longer.
    pub(super) fn drop_group_watches_on(&mut self, s: usize, map: &ClusterMap) {
        let mut gone = 0;
        for g in self.slab.iter_mut().flatten() {
            let before = g.watches.len();
            g.watches.retain(|w| w.store as usize != s);
            gone += before - g.watches.len();
            for gp in g.parts.iter_mut() {
                if map.owner_index(gp.partition) == Some(s) {
                    gp.covered = false;
                }
            }
        }
        self.group_watches -= gone;
    }
}

/// The hash `Groups::by_target` files group `gid` under.
fn group_hash(hasher: &RandomState, slab: &[Option<Group>], gid: GroupId) -> u64 {
    slab.get(gid.slot())
        .and_then(Option::as_ref)
        .map_or(0, |x| hasher.hash_one((x.prefix, &*x.target)))
}
