//! One group: the clients of one worker following one key or prefix. It holds the
//! position delivered per partition (24 bytes each: one per subscribed key), its own
//! watches, and its members (indexed once it is large). In: members joining and leaving,
//! a join handing over its partitions; out: what the caller must do with watches
//! ([`Left`]), whether a join is adopted, where a lost watch resumes.

use std::collections::HashMap;

use wire::client::Position;
use wire::link::WatchId;

use super::members::{Member, Own};
use super::{SubRef, newer};

/// The clients of one worker following one key or prefix.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) target: Box<str>,
    pub(super) prefix: bool,
    /// The partitions the target lives in, ascending (one allocation: a group is
    /// held per subscribed key, so its size is per-connection memory).
    pub(super) parts: Box<[GPart]>,
    /// The group's own watches (role `Group`; not in the watch table).
    pub(super) watches: Vec<GWatch>,
    pub(super) members: Vec<Member>,
    /// Members by subscription, once the group is large: a hot key's subscribe and
    /// unsubscribe storms would otherwise search the members linearly each time,
    /// quadratic in its watchers. Boxed: most groups have none, and an inline table
    /// would add 40 bytes to every one of them.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<SubRef, u32>>>,
}

/// One of a group's own watches: its id and its store.
#[derive(Debug, Clone, Copy)]
pub(super) struct GWatch {
    pub(super) id: WatchId,
    pub(super) store: u32,
}

/// Members from which a group keeps an index.
const INDEX_FROM: usize = 32;

/// One partition of a group: 24 bytes, one per subscribed key (a `Position` inside
/// would repeat the partition and need a tag of its own: 40).
#[derive(Debug, Clone, Copy)]
pub(super) struct GPart {
    pub(super) partition: u32,
    /// A group watch covers it (issued, on a live link).
    pub(super) covered: bool,
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
    pub(super) fn pos(&self) -> Option<Position> {
        self.known.then_some(Position {
            partition: self.partition,
            epoch: self.epoch,
            seq: self.seq,
        })
    }

    pub(super) fn set_pos(&mut self, p: Position) {
        self.known = true;
        self.epoch = p.epoch;
        self.seq = p.seq;
    }
}

/// What a member's leaving leaves to do.
#[derive(Debug, Default)]
pub(super) struct Left {
    /// Watches to drop: its joins, and the group's own if it was the last member.
    pub(super) drop: Vec<WatchId>,
    /// Its retired joins, whose last frames now reach no one.
    pub(super) orphan: Vec<WatchId>,
    /// It was the last member: the group goes.
    pub(super) empty: bool,
}

impl Group {
    /// A group following `target` in `parts`, with no watch and no member yet.
    pub(super) fn new(target: &str, prefix: bool, parts: &[u32]) -> Self {
        Self {
            target: target.into(),
            prefix,
            parts: parts.iter().map(|&p| GPart::new(p)).collect(),
            watches: Vec::new(),
            members: Vec::new(),
            index: None,
        }
    }

    /// Index of `partition` in `parts`.
    pub(super) fn idx(&self, partition: u32) -> Option<usize> {
        self.parts
            .binary_search_by_key(&partition, |x| x.partition)
            .ok()
    }

    /// The partitions, ascending.
    pub(super) fn partitions(&self) -> Vec<u32> {
        self.parts.iter().map(|x| x.partition).collect()
    }

    /// Whether a change of `key` belongs to this group.
    pub(super) fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&*self.target)
        } else {
            key == &*self.target
        }
    }

    /// Where member `sub` is in `members`.
    pub(super) fn find(&self, sub: SubRef) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&sub).map(|&i| i as usize),
            None => self.members.iter().position(|m| m.sub == sub),
        }
    }

    pub(super) fn member(&mut self, sub: SubRef) -> Option<&mut Member> {
        let i = self.find(sub)?;
        self.members.get_mut(i)
    }

    /// Every member's subscription.
    pub(super) fn subs(&self) -> Vec<SubRef> {
        self.members.iter().map(|m| m.sub).collect()
    }

    pub(super) fn add_member(&mut self, m: Member) {
        let sub = m.sub;
        crate::mem::push_tight(&mut self.members, m);
        let at = self.members.len() - 1;
        match &mut self.index {
            Some(index) => {
                index.insert(sub, at as u32);
            }
            None if self.members.len() >= INDEX_FROM => {
                let index = self
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.sub, i as u32))
                    .collect();
                self.index = Some(Box::new(index));
            }
            None => {}
        }
    }

    fn remove_member(&mut self, sub: SubRef) -> Option<Member> {
        let i = self.find(sub)?;
        let m = self.members.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(&sub);
            // The last member moved into the gap.
            if let Some(moved) = self.members.get(i) {
                index.insert(moved.sub, i as u32);
            }
            if self.members.len() < INDEX_FROM / 2 {
                self.index = None;
            }
        }
        Some(m)
    }

    /// Member `sub` leaves: what of its watches (and the group's) must go.
    pub(super) fn leave(&mut self, sub: SubRef) -> Left {
        let mut left = Left::default();
        if let Some(m) = self.remove_member(sub)
            && let Some(own) = m.own
        {
            left.drop.extend(own.joins);
            left.orphan = own.retired;
        }
        if self.members.is_empty() {
            left.empty = true;
            left.drop.extend(self.watches.iter().map(|w| w.id));
        }
        left
    }

    /// The group's positions, when known for every partition.
    pub(super) fn positions(&self) -> Option<Vec<Position>> {
        self.parts.iter().map(GPart::pos).collect()
    }

    /// Drop member `sub`'s own state once it matches the group's everywhere.
    pub(super) fn try_sync(&mut self, sub: SubRef) {
        let Some(i) = self.find(sub) else {
            return;
        };
        let Self { parts, members, .. } = self;
        if let Some(m) = members.get_mut(i)
            && m.own.as_deref().is_some_and(|own| own.synced(parts))
        {
            m.own = None;
        }
    }

    /// The own state of member `sub` and the index of `partition`.
    pub(super) fn own_at(&mut self, partition: u32, sub: SubRef) -> Option<(usize, &mut Own)> {
        let i = self.idx(partition)?;
        let own = self.member(sub)?.own.as_deref_mut()?;
        Some((i, own))
    }

    /// Join `wid` of member `sub` has answered for the partitions `idxs`: the group takes
    /// the member's positions where no watch of its own covers them yet. Returns whether
    /// the group adopts the join as its watch (it covered none of them).
    pub(super) fn take_over(&mut self, wid: WatchId, sub: SubRef, idxs: &[usize]) -> bool {
        let member_pos: Option<Vec<Position>> = self
            .member(sub)
            .and_then(|m| m.own.as_ref().map(|o| o.pos.clone()));
        let mut adopt = false;
        for &i in idxs {
            if let Some(gp) = self.parts.get_mut(i)
                && !gp.covered
            {
                adopt = true;
                if let Some(mp) = member_pos.as_ref().and_then(|v| v.get(i)) {
                    gp.covered = true;
                    gp.set_pos(*mp);
                }
            }
        }
        if let Some(own) = self.member(sub).and_then(|m| m.own.as_deref_mut()) {
            own.joins.retain(|&x| x != wid);
        }
        adopt
    }

    /// Where a new group watch for partition `i` resumes: the group's position, or, if a
    /// member still catching up through a watch the link took with it (a resume's retired
    /// join) is behind the group, the oldest such position; the position filters keep
    /// everyone else from seeing a change twice. `None` if the group has delivered nothing
    /// there yet.
    pub(super) fn resume_from(&self, i: usize) -> Option<Position> {
        let mut from = self.parts.get(i)?.pos()?;
        for m in &self.members {
            if let Some(mp) = m.own.as_ref().and_then(|own| own.started_at(i))
                && newer(&from, &mp)
            {
                from = mp;
            }
        }
        Some(from)
    }

    /// Partition `i`'s position moves to `pos` if a group watch covers it and `pos` is
    /// newer: whether it moved (then every synced member gets the change).
    pub(super) fn advance(&mut self, i: usize, pos: Position) -> bool {
        let Some(gp) = self.parts.get_mut(i) else {
            return false;
        };
        let advance = gp.covered && gp.pos().is_none_or(|at| newer(&pos, &at));
        if advance {
            gp.set_pos(pos);
        }
        advance
    }

    /// Where the members `subs` are, ascending, each once.
    pub(super) fn slots_of(&self, subs: &[SubRef]) -> Vec<usize> {
        let mut at: Vec<usize> = subs.iter().filter_map(|&s| self.find(s)).collect();
        at.sort_unstable();
        at.dedup();
        at
    }
}
