//! One member of a group (one client subscription) and its transitions. A member that
//! is synced with its group holds nothing of its own; one that is starting, or ahead of
//! the group somewhere, holds its own positions ([`Own`]). In: a change, a snapshot part
//! or a resume answer for one partition; out: what to deliver to the member
//! ([`ChangeStep`], [`SnapshotAnswer`], [`ResumeAnswer`]), never a message itself.

use wire::client::{ChangeOp, Position, encode_token};
use wire::link::WatchId;

use super::delivery::Delivery;
use super::group::GPart;
use super::{ConnRef, SubRef, newer};

/// Most changes held for one member while its snapshot completes.
const MAX_HELD: usize = 10_000;

/// One client subscription.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) sub: SubRef,
    /// Its own state while starting or ahead of the group; `None` when synced.
    pub(super) own: Option<Box<Own>>,
}

/// A member's own state while it is starting or ahead of its group.
#[derive(Debug)]
pub(super) struct Own {
    /// Position per partition (as the group's `parts`).
    pub(super) pos: Vec<Position>,
    /// Partition still waiting for its snapshot or resume answer.
    pub(super) pending: Vec<bool>,
    /// Its join watches not yet complete.
    pub(super) joins: Vec<WatchId>,
    /// Its retired joins whose last frames may still be on the way.
    pub(super) retired: Vec<WatchId>,
    /// `resumed` was sent.
    resumed_sent: bool,
    /// Starting from a snapshot (not a resume): changes of partitions already
    /// snapshotted wait in `held` until the whole snapshot is out, so that a client
    /// never sees a change inside its snapshot.
    snapshotting: bool,
    /// Changes held back while snapshotting.
    held: Vec<Held>,
}

/// A change held back for a member until its snapshot is out.
#[derive(Debug)]
struct Held {
    /// Index of its partition in the group's.
    idx: usize,
    pos: Position,
    key: Box<str>,
    op: ChangeOp<'static>,
}

/// A change as it reaches one group.
#[derive(Debug)]
pub(super) struct Arriving<'a> {
    /// Index of its partition in the group's.
    pub(super) idx: usize,
    pub(super) pos: Position,
    pub(super) key: &'a str,
    pub(super) op: &'a ChangeOp<'static>,
    /// The connection that published it with `"echo":false`: its members skip it.
    pub(super) skip: Option<ConnRef>,
}

/// What a change means for one member.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChangeStep {
    /// Nothing: the member is synced and the change did not move the group, or its
    /// partition is still starting.
    Skip,
    /// Nothing: the member already has it (its snapshot or an earlier watch did).
    Stale,
    /// Held back until the member's snapshot is out.
    Held,
    /// Too many held: the subscription ends.
    Overflow,
    /// Deliver it with the group's token (the member is synced).
    Shared,
    /// Deliver it with this token, the member's own.
    Own(String),
}

/// A snapshot part for one of a member's pending partitions, taken.
#[derive(Debug)]
pub(super) struct SnapshotAnswer {
    /// Every partition has answered: the snapshot is out with this part.
    pub(super) done: bool,
    /// The token the last part carries (when `done`).
    pub(super) token: Option<String>,
}

/// A resume answer for one of a member's pending partitions, taken.
#[derive(Debug)]
pub(super) struct ResumeAnswer {
    /// The first of its partitions to resume: tell the client, with this token.
    pub(super) first: Option<String>,
}

impl Member {
    /// Change `c` reaches this member; `advance`: it moved the group's position.
    pub(super) fn on_change(
        &mut self,
        c: &Arriving<'_>,
        parts: &[GPart],
        advance: bool,
    ) -> ChangeStep {
        let Some(own) = self.own.as_deref_mut() else {
            return if advance {
                ChangeStep::Shared
            } else {
                ChangeStep::Skip
            };
        };
        let step = own.on_change(c);
        // A member that just caught up with the group, or that the group's watch just
        // brought level with it (it was ahead), shares the group's frames again.
        let may_sync = match step {
            ChangeStep::Own(_) => true,
            ChangeStep::Stale => advance,
            _ => false,
        };
        if may_sync && own.synced(parts) {
            self.own = None;
        }
        step
    }
}

impl Own {
    /// A member starting in `parts`: from `resume` (a position per partition), else from
    /// a snapshot; every partition pending.
    pub(super) fn starting(parts: &[u32], resume: Option<Vec<Position>>) -> Self {
        let snapshotting = resume.is_none();
        let pos = resume.unwrap_or_else(|| {
            parts
                .iter()
                .map(|&p| Position {
                    partition: p,
                    ..Position::default()
                })
                .collect()
        });
        Self {
            pos,
            pending: vec![true; parts.len()],
            joins: Vec::new(),
            retired: Vec::new(),
            resumed_sent: false,
            snapshotting,
            held: Vec::new(),
        }
    }

    /// The state of a member whose group is gone (never read).
    pub(super) fn empty() -> Self {
        Self::starting(&[], Some(Vec::new()))
    }

    pub(super) fn token(&self) -> String {
        encode_token(&self.pos)
    }

    /// Nothing left to start and every position the group's: the group's frames and
    /// tokens are this member's too.
    pub(super) fn synced(&self, parts: &[GPart]) -> bool {
        self.joins.is_empty()
            && self.retired.is_empty()
            && self.pending.iter().all(|p| !p)
            && self.pos.len() == parts.len()
            && self.pos.iter().zip(parts).all(|(p, g)| g.pos() == Some(*p))
    }

    /// Its position in partition `i`, once that partition has started.
    pub(super) fn started_at(&self, i: usize) -> Option<Position> {
        if self.pending.get(i) != Some(&false) {
            return None;
        }
        self.pos.get(i).copied()
    }

    /// Change `c` reaches this member: deliver it only past what the member has (counting
    /// changes already held for it), and hold it while the member's snapshot is still
    /// coming from another store.
    fn on_change(&mut self, c: &Arriving<'_>) -> ChangeStep {
        if self.pending.get(c.idx) != Some(&false) {
            return ChangeStep::Skip;
        }
        let last = self
            .held
            .iter()
            .rev()
            .find(|h| h.idx == c.idx)
            .map(|h| h.pos)
            .or_else(|| self.pos.get(c.idx).copied());
        if !last.is_some_and(|mp| newer(&c.pos, &mp)) {
            return ChangeStep::Stale;
        }
        if self.snapshotting && self.pending.iter().any(|p| *p) {
            if self.held.len() >= MAX_HELD {
                return ChangeStep::Overflow;
            }
            self.held.push(Held {
                idx: c.idx,
                pos: c.pos,
                key: c.key.into(),
                op: c.op.clone(),
            });
            return ChangeStep::Held;
        }
        if let Some(mp) = self.pos.get_mut(c.idx) {
            *mp = c.pos;
        }
        ChangeStep::Own(self.token())
    }

    /// A snapshot part of partition `i` through the member's join (`more`: others of the
    /// same partition follow). `None` if partition `i` is not waiting for one: an answer
    /// for a partition already answered (or not asked) is not the store's to give.
    pub(super) fn answer_snapshot(
        &mut self,
        i: usize,
        pos: Position,
        more: bool,
    ) -> Option<SnapshotAnswer> {
        if self.pending.get(i) != Some(&true) {
            return None;
        }
        if !more && let (Some(pend), Some(mp)) = (self.pending.get_mut(i), self.pos.get_mut(i)) {
            *pend = false;
            *mp = pos;
        }
        let done = self.pending.iter().all(|x| !x);
        Some(SnapshotAnswer {
            done,
            token: done.then(|| self.token()),
        })
    }

    /// The snapshot is out: what was held behind it follows, each change with the
    /// member's token after it.
    pub(super) fn release_held(&mut self) -> Vec<Delivery> {
        self.snapshotting = false;
        let mut out = Vec::new();
        for h in std::mem::take(&mut self.held) {
            if let Some(mp) = self.pos.get_mut(h.idx) {
                *mp = h.pos;
            }
            out.push(Delivery::new(&h.key, h.op, self.token()));
        }
        out
    }

    /// Partition `i` was resumed through the member's join. `None` if it was not waiting
    /// (see [`Self::answer_snapshot`]).
    pub(super) fn answer_resume(&mut self, i: usize) -> Option<ResumeAnswer> {
        let pend = self.pending.get_mut(i).filter(|p| **p)?;
        *pend = false;
        let first = !std::mem::replace(&mut self.resumed_sent, true);
        Some(ResumeAnswer {
            first: first.then(|| self.token()),
        })
    }

    /// A snapshot part of partition `i` through the group's watch, after a reset: the
    /// member restarts the partition from it, unless it is still starting there. The
    /// token for the part, or `None` to leave the member out.
    pub(super) fn restart_partition(
        &mut self,
        i: usize,
        pos: Position,
        more: bool,
    ) -> Option<String> {
        if self.pending.get(i) == Some(&true) {
            return None;
        }
        if !more && let Some(mp) = self.pos.get_mut(i) {
            *mp = pos;
        }
        Some(self.token())
    }
}
