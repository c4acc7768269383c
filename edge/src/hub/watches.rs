//! Watch roles and watch ids. Each internal watch on a store link is a group's own
//! (carrying its changes), a member's join (its snapshot or resume), a retired join, or
//! an orphan (see [`Role`]); a join may serve several members resuming from one
//! position. In: the hub's decisions to issue, adopt, retire, drop or leave a watch, the store's pongs and refusals, a link dropping and coming back; out: `Watch`,
//! `Unwatch` and `Ping` frames in the store's `link_out`, and `unavailable` (or the
//! store's error) to the members a lost or refused watch was starting.

use wire::client::{ErrorCode, Position};
use wire::link::{KeepAliveNonce, WatchId};

use super::index::GroupId;
use super::{Hub, SubRef};

/// An internal watch on one store's link (a group's own ones are given out as
/// `part: None, left: 0`: neither is read for them).
#[derive(Debug, Clone, Copy)]
pub(super) struct WatchRef {
    pub(super) gid: GroupId,
    pub(super) store: usize,
    pub(super) role: Role,
    /// The one partition it covers; `None`: every partition of the group the store owns.
    pub(super) part: Option<u32>,
    /// Partitions not answered yet (a join completes at zero).
    pub(super) left: u32,
    /// The position a resume join resumes after (`None`: a snapshot join, or a group's
    /// own watch): while it has heard nothing, later resumes from it ride on it.
    pub(super) from: Option<Position>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Carries the group's changes.
    Group,
    /// Starting one member (the first; more resuming from the same position ride on
    /// it, see [`super::index::Groups::join_subs`]): their snapshot or resume.
    Join(SubRef),
    /// A join no longer needed, unwatched: frames the store sent before it saw the
    /// `Unwatch` (a resume's catch-up changes) still reach its member, and only it,
    /// until the store's answer to the ping sent right after the `Unwatch` proves none
    /// is left. The member stays unsynced (`Own::retired`) until then. As for `Join`,
    /// the members riding on it follow the first.
    Retired(SubRef),
    /// A retired join whose members are gone (unsubscribed or restarted): its last
    /// frames reach no one.
    Orphan,
}

impl Role {
    fn retired(self) -> bool {
        matches!(self, Role::Retired(..) | Role::Orphan)
    }
}

/// A group watch to issue on a link that came back.
#[derive(Debug)]
struct Rewatch {
    gid: GroupId,
    from: Position,
    target: Box<str>,
    prefix: bool,
}

impl Hub {
    /// A fresh id for a watch of group `gid` (its tag): the sequence is the hub's one
    /// counter (shared with request ids), wrapping after 2^31 watches; zero and an id
    /// still in use are skipped.
    pub(super) fn watch_id(&mut self, gid: GroupId) -> WatchId {
        loop {
            let seq = self.id() & u64::from(WatchId::MAX_SEQ);
            if let Some(wid) = u32::try_from(seq)
                .ok()
                .and_then(|seq| WatchId::new(seq, gid.tag()))
                && self.groups.watch(wid).is_none()
            {
                return wid;
            }
        }
    }

    /// Forget watch `wid`, telling its store whatever the link's state: a watch the hub
    /// still holds while its link is down was issued since the drop (a member starting
    /// over), and its `Watch` waits in `link_out` for the link to come back; the
    /// `Unwatch` must follow it there, or the store would keep a watch nobody reads.
    pub(super) fn drop_watch(&mut self, wid: WatchId) {
        if let Some(w) = self.groups.remove_watch(wid)
            && let Some(out) = self.link_out.get_mut(w.store)
        {
            let _ = self.enc.unwatch(out, wid.get(), wid.get());
        }
    }

    /// Member `sub` no longer waits for watch `wid` (leaving, or starting over): a join
    /// others still ride on stays theirs; else the watch is dropped.
    pub(super) fn release_watch(&mut self, wid: WatchId, sub: SubRef) {
        if !self.groups.leave_join(wid, sub) {
            self.drop_watch(wid);
        }
    }

    /// Unwatch join `wid` of members `subs` but keep routing its frames to them until the
    /// store has answered a ping sent after the `Unwatch`.
    pub(super) fn retire_watch(&mut self, wid: WatchId, subs: &[SubRef]) {
        let Some(gid) = self.groups.join_mut(wid).map(|w| w.gid) else {
            return;
        };
        let mut waiting: Vec<SubRef> = Vec::new();
        if let Some(g) = self.groups.group(gid) {
            for &sub in subs {
                if let Some(own) = g.member(sub).and_then(|m| m.own.as_deref_mut()) {
                    own.retired.push(wid);
                    waiting.push(sub);
                }
            }
        }
        let role = waiting.first().map_or(Role::Orphan, |&s| Role::Retired(s));
        self.groups
            .set_riders(wid, waiting.get(1..).unwrap_or_default().to_vec());
        let Some(w) = self.groups.join_mut(wid) else {
            return;
        };
        w.role = role;
        let s = w.store;
        if let Some(out) = self.link_out.get_mut(s) {
            let _ = self.enc.unwatch(out, wid.get(), wid.get());
            let _ = self.enc.ping(out, wid.get(), wid.get());
        }
    }

    /// The store answered the ping with `nonce`: a retired watch is gone for good (a
    /// keep-alive nonce names no watch).
    pub(crate) fn on_pong(&mut self, nonce: u64) {
        if KeepAliveNonce::from_raw(nonce).is_some() {
            return;
        }
        let wid = WatchId::from_raw(nonce);
        if let Some(w) = self.groups.watch(wid)
            && w.role.retired()
        {
            self.forget_retired(wid, &w);
        }
    }

    /// Retired watch `wid` is gone: its members no longer wait for it.
    fn forget_retired(&mut self, wid: WatchId, w: &WatchRef) {
        let subs = match w.role {
            Role::Retired(first) => self.groups.join_subs(wid, first),
            _ => Vec::new(),
        };
        self.groups.forget_join(wid);
        let Some(g) = self.groups.group(w.gid) else {
            return;
        };
        for sub in subs {
            if let Some(own) = g.member(sub).and_then(|m| m.own.as_deref_mut()) {
                own.retired.retain(|&x| x != wid);
            }
            g.try_sync(sub);
        }
    }

    /// Member `sub` of these retired joins is gone: those it alone waited for send their
    /// last frames to no one.
    pub(super) fn orphan(&mut self, sub: SubRef, wids: &[WatchId]) {
        for &wid in wids {
            if !self.groups.leave_join(wid, sub)
                && let Some(w) = self.groups.join_mut(wid)
            {
                w.role = Role::Orphan;
            }
        }
    }

    /// Store `s`'s link dropped: its watches are gone. Members starting through it get
    /// `unavailable` and must subscribe again; the groups resume when it is back.
    pub(super) fn lose_watches(&mut self, s: usize) {
        let mut failed: Vec<SubRef> = Vec::new();
        for wid in self.groups.joins_on(s) {
            let Some(w) = self.groups.join(wid) else {
                continue;
            };
            match w.role {
                // Groups keep their own watches (below).
                Role::Group => {}
                Role::Join(first) => {
                    failed.extend(self.groups.join_subs(wid, first));
                    self.groups.forget_join(wid);
                }
                Role::Retired(..) | Role::Orphan => self.forget_retired(wid, &w),
            }
        }
        self.groups.drop_group_watches_on(s, &self.map);
        failed.sort_unstable();
        failed.dedup();
        for sub in failed {
            self.fail(
                sub.conn,
                sub.id,
                ErrorCode::Unavailable,
                "the store became unreachable while the subscription started; subscribe again",
            );
            self.unsubscribe(sub);
        }
    }

    /// Store `s`'s link is back: each group resumes, partition by partition, from the
    /// position it delivered (see [`super::group::Group::resume_from`]).
    pub(super) fn rewatch(&mut self, s: usize) {
        let mut issue: Vec<Rewatch> = Vec::new();
        for (gid, g) in self.groups.iter_mut() {
            for i in 0..g.parts.len() {
                let Some(gp) = g.parts.get(i) else { continue };
                if self.map.owner_index(gp.partition) != Some(s) || gp.covered {
                    continue;
                }
                let Some(from) = g.resume_from(i) else {
                    continue;
                };
                issue.push(Rewatch {
                    gid,
                    from,
                    target: g.target.clone(),
                    prefix: g.prefix,
                });
                if let Some(gp) = g.parts.get_mut(i) {
                    gp.covered = true;
                }
            }
        }
        for r in issue {
            let wid = self.watch_id(r.gid);
            if let Some(out) = self.link_out.get_mut(s) {
                let _ = self.enc.watch(
                    out,
                    wid.get(),
                    wid.get(),
                    &r.target,
                    r.prefix,
                    Some(r.from.into()),
                );
            }
            self.groups.own_watch(wid, s);
        }
    }

    /// The store refused watch `wid` (request id = watch id): the members it served or
    /// was starting get the store's error and are unsubscribed.
    pub(super) fn watch_failed(&mut self, wid: WatchId, code: ErrorCode, message: &str) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let victims: Vec<SubRef> = match w.role {
            Role::Retired(..) | Role::Orphan => {
                self.forget_retired(wid, &w);
                return;
            }
            Role::Join(first) => self.groups.join_subs(wid, first),
            Role::Group => self.groups.get(w.gid).map(|g| g.subs()).unwrap_or_default(),
        };
        self.groups.remove_watch(wid);
        for sub in victims {
            self.fail(sub.conn, sub.id, code, message.to_owned());
            self.unsubscribe(sub);
        }
    }
}
