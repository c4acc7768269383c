//! Subscribing and unsubscribing: a member joins its target's group (made on first use)
//! through join watches of its own, and leaves it. In: `sub` and `unsub` requests, and a
//! join's last answer; out: `Watch` frames for the joins (one per partition to resume,
//! else one per store to snapshot; a resume from where an open join of the group resumes
//! rides on it instead), then, when a join is complete, its adoption as the group's watch
//! or its retirement; `Unwatch` frames for what a leaving member leaves.
//! A connection whose grant narrows leaves what it may no longer read (`forbidden`).

use std::borrow::Cow;
use std::sync::Arc;

use wire::client::{ErrorCode, Position, Response, Target, decode_token};
use wire::link::WatchId;

use super::group::Group;
use super::index::GroupId;
use super::members::{Member, Own};
use super::watches::{Role, WatchRef};
use super::{ConnRef, Hub, Out, SubRef};

/// A join watch to issue (its id is taken only when it is: a resume riding on an open
/// join issues none).
#[derive(Debug)]
struct Join {
    store: usize,
    /// The one partition it covers; `None`: every partition of the target the store owns.
    part: Option<u32>,
    /// Partitions to answer.
    left: u32,
    /// Resume after this position; `None`: snapshot.
    from: Option<Position>,
}

impl Hub {
    /// The partitions `target` lives in: one for a key or a hash-tagged prefix, every
    /// partition for another prefix.
    fn target_parts(&self, prefix: bool, target: &str) -> Vec<u32> {
        // The one rule, shared with the store.
        wire::partition::target_partitions(target.as_bytes(), prefix, self.map.partitions)
            .into_iter()
            .collect()
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
        let sub = SubRef { conn, id };
        if let Some((code, why)) = self.refusal(sub) {
            self.fail(conn, id, code, why);
            return;
        }
        let from = match from.map(decode_token).transpose() {
            Ok(f) => f,
            Err(e) => {
                let message = format!("invalid token: {e}");
                self.fail(conn, id, ErrorCode::BadRequest, message);
                return;
            }
        };
        let members;
        let (prefix, text) = match target {
            Target::Key(k) => (false, &**k),
            Target::Prefix(p) => (true, &**p),
            Target::Presence(channel) => {
                // A channel's members: the keys under its prefix, on its one partition.
                members = wire::presence::channel_prefix(channel);
                (true, members.as_str())
            }
        };
        let existing = self.groups.find_group(prefix, text);
        let parts: Vec<u32> = match existing.and_then(|g| self.groups.get(g)) {
            Some(g) => g.partitions(),
            None => self.target_parts(prefix, text),
        };
        if self.stores_of(&parts).iter().any(|&s| !self.is_up(s)) {
            let message = "a store of this subscription is unreachable";
            self.fail(conn, id, ErrorCode::Unavailable, message);
            return;
        }
        let resume = self.resume_positions(sub, &parts, from);
        let gid = match existing {
            Some(g) => g,
            None => self.groups.insert_group(Group::new(text, prefix, &parts)),
        };
        let own = self.start_member(gid, sub, resume);
        if let Some(g) = self.groups.group(gid) {
            g.add_member(Member {
                sub,
                own: Some(own),
            });
        }
        self.groups.add_sub(sub, gid);
    }

    /// Why subscription `sub` cannot be taken, if it cannot.
    fn refusal(&self, sub: SubRef) -> Option<(ErrorCode, &'static str)> {
        if self.groups.has_sub(sub) {
            return Some((ErrorCode::BadRequest, "subscription id already in use"));
        }
        if self
            .groups
            .subs_on(sub.conn)
            .nth(self.max_subs.saturating_sub(1))
            .is_some()
        {
            return Some((
                ErrorCode::TooManySubscriptions,
                "this connection holds as many subscriptions as it may",
            ));
        }
        None
    }

    /// The positions to resume `sub` from: only when its token (`from`) holds one for
    /// every partition of the target. A token that does not fit gets `reset` (and a
    /// snapshot follows).
    fn resume_positions(
        &mut self,
        sub: SubRef,
        parts: &[u32],
        from: Option<Vec<Position>>,
    ) -> Option<Vec<Position>> {
        let resume: Option<Vec<Position>> = from.as_ref().and_then(|positions| {
            parts
                .iter()
                .map(|&p| positions.iter().find(|q| q.partition == p).copied())
                .collect()
        });
        if from.is_some() && resume.is_none() {
            self.reply(
                sub.conn,
                Response::Reset {
                    id: sub.id,
                    reason: Cow::Borrowed("the token does not match this subscription"),
                },
            );
        }
        resume
    }

    /// Issue the join watches that start member `sub` of group `gid`: one per partition
    /// to resume from `resume`; to snapshot, one per store (the store snapshots every
    /// partition of the target it owns). Returns its starting state.
    fn start_member(
        &mut self,
        gid: GroupId,
        sub: SubRef,
        resume: Option<Vec<Position>>,
    ) -> Box<Own> {
        let Some(g) = self.groups.get(gid) else {
            return Box::new(Own::empty());
        };
        let (target, prefix) = (g.target.clone(), g.prefix);
        let parts = g.partitions();
        let joins = self.plan_joins(&parts, resume.as_deref());
        let mut own = Own::starting(&parts, resume);
        for join in joins {
            if let Some(wid) = join.from.and_then(|from| self.groups.open_join(gid, from)) {
                // Resuming from where an open join resumes: the store's answer to it is
                // this member's too.
                self.groups.add_rider(wid, sub);
                self.stats.joins_shared += 1;
                own.joins.push(wid);
                continue;
            }
            let wid = self.watch_id(gid);
            if let Some(out) = self.link_out.get_mut(join.store) {
                let from = join.from.map(Into::into);
                let _ = self
                    .enc
                    .watch(out, wid.get(), wid.get(), &target, prefix, from);
            }
            let w = WatchRef {
                gid,
                store: join.store,
                role: Role::Join(sub),
                part: join.part,
                left: join.left,
                from: join.from,
            };
            self.groups.add_join(wid, w);
            if let Some(from) = join.from {
                self.groups.add_open(gid, from, wid);
            }
            own.joins.push(wid);
        }
        Box::new(own)
    }

    /// The join watches a member of a group (in `parts`) starts through.
    fn plan_joins(&self, parts: &[u32], resume: Option<&[Position]>) -> Vec<Join> {
        let map = Arc::clone(&self.map);
        let owner = |p: u32| map.owner_index(p).unwrap_or(0);
        match resume {
            Some(positions) => positions
                .iter()
                .map(|pos| Join {
                    store: owner(pos.partition),
                    part: Some(pos.partition),
                    left: 1,
                    from: Some(*pos),
                })
                .collect(),
            None if parts.len() == 1 => {
                let p = parts.first().copied().unwrap_or(0);
                vec![Join {
                    store: owner(p),
                    part: Some(p),
                    left: 1,
                    from: None,
                }]
            }
            None => self
                .stores_of(parts)
                .into_iter()
                .map(|s| Join {
                    store: s,
                    part: None,
                    left: parts.iter().filter(|&&p| owner(p) == s).count() as u32,
                    from: None,
                })
                .collect(),
        }
    }

    /// Start member `sub` over from a fresh snapshot of every partition (after a reset of
    /// one partition of a multi-partition target: a client replaces its whole state on
    /// the snapshot that follows a `reset`).
    pub(super) fn restart_member(&mut self, gid: GroupId, sub: SubRef) {
        let old = self
            .groups
            .group(gid)
            .and_then(|g| g.member(sub))
            .and_then(|m| m.own.take());
        if let Some(old) = old {
            for wid in old.joins {
                self.release_watch(wid, sub);
            }
            self.orphan(sub, &old.retired);
        }
        let own = self.start_member(gid, sub, None);
        if let Some(m) = self.groups.group(gid).and_then(|g| g.member(sub)) {
            m.own = Some(own);
        }
    }

    /// Connection `conn`'s grant narrowed: each of its subscriptions whose target
    /// `keep` refuses ends, answered `forbidden`. Returns how many ended.
    pub fn narrow(&mut self, conn: ConnRef, keep: impl Fn(&Target<'_>) -> bool) -> u64 {
        let mut ended = 0;
        for id in self.groups.subs_of(conn) {
            let sub = SubRef { conn, id };
            let Some(g) = self
                .groups
                .group_of(sub)
                .and_then(|gid| self.groups.get(gid))
            else {
                continue;
            };
            // A channel's presence is granted as presence, not as reading its records.
            let target = match wire::presence::channel_of_prefix(&g.target) {
                Some(channel) if g.prefix => Target::Presence(Cow::Borrowed(channel)),
                _ if g.prefix => Target::Prefix(Cow::Borrowed(&g.target)),
                _ => Target::Key(Cow::Borrowed(&g.target)),
            };
            if keep(&target) {
                continue;
            }
            self.unsubscribe(sub);
            self.fail(
                conn,
                id,
                ErrorCode::Forbidden,
                "no longer granted by this connection's token",
            );
            ended += 1;
        }
        ended
    }

    /// End subscription `sub`; false if there is none.
    pub(super) fn unsubscribe(&mut self, sub: SubRef) -> bool {
        let Some(gid) = self.groups.remove_sub(sub) else {
            return false;
        };
        if self.latest.remove(&sub) {
            self.out.push(Out::Ended(sub.conn, sub.id));
        }
        self.presence_unsubscribed(sub);
        self.durables.remove(&sub);
        let left = self
            .groups
            .group(gid)
            .map(|g| g.leave(sub))
            .unwrap_or_default();
        for wid in left.drop {
            self.release_watch(wid, sub);
        }
        self.orphan(sub, &left.orphan);
        if left.empty {
            self.groups.remove_group(gid);
        }
        true
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

    /// Join `wid` has answered for all its partitions, to each member on it (`subs`):
    /// adopt it as the group's watch where the group has none, else retire it.
    pub(super) fn complete_join(&mut self, wid: WatchId, subs: &[SubRef]) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let Some(g) = self.groups.get(w.gid) else {
            return;
        };
        let idxs = self.watch_parts(g, &w);
        let mut adopt = false;
        if let Some(g) = self.groups.group(w.gid) {
            for &sub in subs {
                // The first takes the partitions over; the others' positions are its.
                adopt |= g.take_over(wid, sub, &idxs);
            }
        }
        if adopt {
            self.groups.own_watch(wid, w.store);
        } else {
            self.retire_watch(wid, subs);
        }
        if let Some(g) = self.groups.group(w.gid) {
            for &sub in subs {
                g.try_sync(sub);
            }
        }
    }
}
