//! Delivery: what the stores send about watches, to the members it concerns. In:
//! changes, snapshot pages, `resumed` and `reset` frames, each naming its watch(es); out:
//! client messages in [`Hub::out`]. What comes through a join goes to every member on
//! it, and closes it to new riders. A change is encoded once per form ([`Delivery`]) and
//! shared by every synced member; a member with positions of its own gets it only past
//! them, with its own token.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::rc::Rc;

use bytes::Bytes;
use wire::client::fb::FbEncoder;
use wire::client::json::PreparedChange;
use wire::client::{ChangeOp, ErrorCode, Position, Response, encode_token};
use wire::link::{WatchId, internal};

use super::group::{GPart, Group};
use super::index::GroupId;
use super::members::{Arriving, ChangeStep};
use super::snapshot::{SnapshotPage, push_snapshot};
use super::watches::Role;
use super::{Hub, Out, SubRef, change_out, sending};

/// The JSON forms of a change message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonForm {
    /// `ringline.v1.json`: `{"op":"change","id":..,"key":..,"value":..,...}`.
    V1 = 0,
    /// `ringline.v2.json`: `{"c":..,"k":..,"v":..,"n":..,"t":..}`.
    Compact = 1,
}

/// One change as delivered to subscribers, encoded once per form.
#[derive(Debug)]
pub struct Delivery {
    /// The key.
    pub key: Box<str>,
    /// What happened.
    pub op: ChangeOp<'static>,
    /// Resume token after it.
    pub token: String,
    /// The JSON message after its subscription id, built on first use, per form
    /// ([`JsonForm`]).
    json: [OnceCell<Bytes>; 2],
    /// The flatbuffers message, built on first use, and the offset of its 8-byte
    /// subscription id (patched per subscriber).
    fb: OnceCell<Option<(Bytes, usize)>>,
    /// The JSON rest deflated (`permessage-deflate`), on first use, per form; `None`:
    /// not worth compressing.
    json_z: [OnceCell<Option<Bytes>>; 2],
    /// The flatbuffers rest (after the id) deflated, the same way.
    fb_z: OnceCell<Option<Bytes>>,
}

impl Delivery {
    /// Change `op` of `key`, with the resume token after it.
    pub fn new(key: &str, op: ChangeOp<'static>, token: String) -> Self {
        Self {
            key: key.into(),
            op,
            token,
            json: [OnceCell::new(), OnceCell::new()],
            fb: OnceCell::new(),
            json_z: [OnceCell::new(), OnceCell::new()],
            fb_z: OnceCell::new(),
        }
    }

    /// The JSON message in `form` after its subscription id, encoded once (each
    /// subscriber's message is its own head, then this).
    pub fn json_tail(&self, form: JsonForm) -> &Bytes {
        self.json[form as usize].get_or_init(|| {
            let (key, op, token) = (&self.key, &self.op_ref(), &self.token);
            Bytes::from(match form {
                JsonForm::V1 => PreparedChange::new(key, op, token).into_tail(),
                JsonForm::Compact => PreparedChange::new_compact(key, op, token).into_tail(),
            })
        })
    }

    /// The binary-form message, encoded once, with the offset of its subscription id:
    /// each subscriber's copy differs from it only in those 8 (little-endian) bytes, as
    /// the encoder reports. (`None` only if the encoder placed no id.)
    pub fn fb_template(&self, enc: &mut FbEncoder) -> Option<&(Bytes, usize)> {
        self.fb
            .get_or_init(|| {
                let mut tpl = Vec::new();
                let at = enc.encode_response_locating_id(&self.response(0), &mut tpl)?;
                Some((Bytes::from(tpl), at))
            })
            .as_ref()
    }

    /// [`json_tail`](Self::json_tail) deflated by `deflate` on first use, once for
    /// every compressed subscriber (`None`: `deflate` found it not worth it).
    pub fn json_tail_deflated(
        &self,
        form: JsonForm,
        deflate: impl FnOnce(&[u8]) -> Option<Bytes>,
    ) -> Option<&Bytes> {
        let rest = self.json_tail(form);
        self.json_z[form as usize]
            .get_or_init(|| deflate(rest))
            .as_ref()
    }

    /// The binary form's shared rest (`rest`, the template after the id) deflated by
    /// `deflate` on first use, the same way.
    pub fn fb_rest_deflated(
        &self,
        rest: &[u8],
        deflate: impl FnOnce(&[u8]) -> Option<Bytes>,
    ) -> Option<&Bytes> {
        self.fb_z.get_or_init(|| deflate(rest)).as_ref()
    }

    /// The change as a protocol response for subscription `id` (borrowing its value).
    pub fn response(&self, id: u64) -> Response<'_> {
        Response::Change {
            id,
            key: Cow::Borrowed(&self.key),
            op: self.op_ref(),
            token: Cow::Borrowed(&self.token),
        }
    }

    fn op_ref(&self) -> ChangeOp<'_> {
        match &self.op {
            ChangeOp::Put { value, version } => ChangeOp::Put {
                value: Cow::Borrowed(value),
                version: *version,
            },
            ChangeOp::Delete { version } => ChangeOp::Delete { version: *version },
            ChangeOp::Publish { value } => ChangeOp::Publish {
                value: Cow::Borrowed(value),
            },
        }
    }
}

/// How a change reaches one group.
#[derive(Debug)]
struct Carried {
    gid: GroupId,
    /// Through one of the group's own watches: it may move the group's position and
    /// reach every member.
    via_group: bool,
    /// Else (or also) through these members' joins: only they are visited.
    joins: Vec<SubRef>,
}

/// What fanning a change out in one group came to.
#[derive(Debug, Default)]
struct Fanned {
    delivered: u64,
    /// Members with too many changes held: their subscriptions end.
    overflow: Vec<SubRef>,
}

/// The change in `ch` as a client sees it.
fn change_op(ch: &internal::Change<'_>) -> ChangeOp<'static> {
    let value = || ch.value().map(|v| v.bytes().to_vec()).unwrap_or_default();
    match ch.kind() {
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
    }
}

/// The token of a group's delivered positions (every one known: synced members exist
/// only then).
fn group_token(parts: &[GPart]) -> String {
    let at: Vec<Position> = parts.iter().filter_map(GPart::pos).collect();
    encode_token(&at)
}

impl Group {
    /// Fan change `c` out to the members `carried` says it reaches.
    fn deliver(
        &mut self,
        c: &Arriving<'_>,
        carried: &Carried,
        latest: &HashSet<SubRef>,
        out: &mut Vec<Out>,
    ) -> Fanned {
        // A join's change visits only its members, not the whole group: a hot key's
        // resume storm would otherwise walk every member for every catch-up change.
        let picked: Option<Vec<usize>> =
            (!carried.via_group).then(|| self.slots_of(&carried.joins));
        let advance = carried.via_group && self.advance(c.idx, c.pos);
        let Group { parts, members, .. } = self;
        let mut shared: Option<Rc<Delivery>> = None;
        // Members with positions of their own are often at the same one (riders of one
        // join): the last such delivery serves the next member with the same token.
        let mut own_last: Option<Rc<Delivery>> = None;
        let mut fanned = Fanned::default();
        let visits = picked.as_ref().map_or(members.len(), Vec::len);
        for k in 0..visits {
            let at = picked.as_ref().map_or(Some(k), |p| p.get(k).copied());
            let Some(m) = at.and_then(|at| members.get_mut(at)) else {
                continue;
            };
            let d = match m.on_change(c, parts, advance) {
                ChangeStep::Shared => Rc::clone(shared.get_or_insert_with(|| {
                    Rc::new(Delivery::new(c.key, c.op.clone(), group_token(parts)))
                })),
                ChangeStep::Own(token) => match &own_last {
                    Some(d) if d.token == token => Rc::clone(d),
                    _ => {
                        let d = Rc::new(Delivery::new(c.key, c.op.clone(), token));
                        own_last = Some(Rc::clone(&d));
                        d
                    }
                },
                ChangeStep::Overflow => {
                    fanned.overflow.push(m.sub);
                    continue;
                }
                ChangeStep::Skip | ChangeStep::Stale | ChangeStep::Held => continue,
            };
            if c.skip == Some(m.sub.conn) {
                // Its own publish, asked not to come back (its position moved all the same).
                continue;
            }
            out.push(if sending::is_inboxes(m.sub) {
                sending::inbox_change(c.key, c.op, c.pos)
            } else {
                change_out(latest, m.sub, d)
            });
            fanned.delivered += 1;
        }
        fanned
    }
}

impl Hub {
    /// A change from a store: to every group one of its watch ids reaches, to the members
    /// it concerns there.
    pub(super) fn on_change(&mut self, ch: &internal::Change<'_>) {
        let Some(position) = ch.position() else {
            return;
        };
        let pos = Position::from(position);
        if self.groups.any_open() {
            for wid in ch.watch_ids().into_iter().flatten() {
                self.groups.heard(WatchId::from_raw(wid));
            }
        }
        let reached = self.groups_reached(ch);
        if reached.is_empty() {
            return;
        }
        let op = change_op(ch);
        let key = ch.key();
        let skip = self.no_echo.take(pos);
        let mut overflow: Vec<SubRef> = Vec::new();
        for carried in reached {
            let Some(g) = self.groups.group(carried.gid) else {
                continue;
            };
            // A retired watch's id may outlive its group (and the slot be reused): a
            // change is only ever delivered to a group whose target it matches.
            let Some(idx) = g.idx(pos.partition).filter(|_| g.matches(key)) else {
                continue;
            };
            let c = Arriving {
                idx,
                pos,
                key,
                op: &op,
                skip,
            };
            let fanned = g.deliver(&c, &carried, &self.latest, &mut self.out);
            self.stats.deliveries += fanned.delivered;
            overflow.extend(fanned.overflow);
        }
        for sub in overflow {
            let message = "too many changes while the snapshot was coming; subscribe again";
            self.fail(sub.conn, sub.id, ErrorCode::Overloaded, message);
            self.unsubscribe(sub);
        }
    }

    /// The groups change `ch` reaches, in the order its watch ids name them. A join's
    /// change (a resume catching up) is its member's alone: the group's watch may not
    /// have delivered the changes before it yet (a batch landing while the resume read
    /// the log), and the others must get those first.
    fn groups_reached(&self, ch: &internal::Change<'_>) -> Vec<Carried> {
        let mut reached: Vec<Carried> = Vec::new();
        for wid in ch.watch_ids().into_iter().flatten() {
            let Some(w) = self.groups.watch(WatchId::from_raw(wid)) else {
                continue;
            };
            let (via_group, join) = match w.role {
                Role::Group => (true, None),
                Role::Join(first) | Role::Retired(first) => (false, Some(first)),
                Role::Orphan => continue,
            };
            let at = match reached.iter().position(|c| c.gid == w.gid) {
                Some(at) => at,
                None => {
                    reached.push(Carried {
                        gid: w.gid,
                        via_group: false,
                        joins: Vec::new(),
                    });
                    reached.len() - 1
                }
            };
            if let Some(c) = reached.get_mut(at) {
                c.via_group |= via_group;
                if let Some(first) = join {
                    c.joins.push(first);
                    c.joins
                        .extend_from_slice(self.groups.riders_of(WatchId::from_raw(wid)));
                }
            }
        }
        reached
    }

    /// A snapshot page from a store, for a member's join or (after a reset) a group's watch.
    pub(super) fn on_snapshot(&mut self, snap: &internal::Snapshot<'_>) {
        let wid = WatchId::from_raw(snap.watch_id());
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        self.groups.heard(wid);
        match w.role {
            Role::Join(first) => {
                let subs = self.groups.join_subs(wid, first);
                self.join_snapshot(wid, w.gid, &subs, SnapshotPage::read(snap));
            }
            Role::Group => self.group_snapshot(w.gid, SnapshotPage::read(snap)),
            Role::Retired(..) | Role::Orphan => {}
        }
    }

    /// A snapshot page through join `wid` of members `subs`: out to each member; once a
    /// member's every partition has answered, the changes held behind it follow.
    fn join_snapshot(
        &mut self,
        wid: WatchId,
        gid: GroupId,
        subs: &[SubRef],
        mut page: SnapshotPage,
    ) {
        for (k, &sub) in subs.iter().enumerate() {
            let Some((i, own)) = self
                .groups
                .group(gid)
                .and_then(|g| g.own_at(page.partition, sub))
            else {
                continue;
            };
            let Some(answer) = own.answer_snapshot(i, page.pos, page.more) else {
                continue;
            };
            // The last member takes the entries; the others get copies.
            let entries = if k + 1 == subs.len() {
                std::mem::take(&mut page.entries)
            } else {
                page.entries.clone()
            };
            push_snapshot(&mut self.out, sub, entries, answer.token, !answer.done);
            if answer.done {
                for d in own.release_held() {
                    self.out.push(change_out(&self.latest, sub, Rc::new(d)));
                    self.stats.deliveries += 1;
                }
            }
        }
        if !page.more && self.groups.count_answer(wid) {
            self.complete_join(wid, subs);
        }
    }

    /// A snapshot page through group `gid`'s own watch, after its reset: every member
    /// restarts this partition from it (a multi-partition target's members were
    /// restarted on their own joins at the reset).
    fn group_snapshot(&mut self, gid: GroupId, page: SnapshotPage) {
        let Some(g) = self.groups.group(gid) else {
            return;
        };
        let Some(i) = g.idx(page.partition) else {
            return;
        };
        if !page.more
            && let Some(gp) = g.parts.get_mut(i)
        {
            gp.set_pos(page.pos);
        }
        if g.parts.len() > 1 {
            return;
        }
        let group_pos = g.positions();
        for m in &mut g.members {
            let token = match &mut m.own {
                Some(own) => match own.restart_partition(i, page.pos, page.more) {
                    Some(token) => token,
                    None => continue,
                },
                None => group_pos.as_deref().map(encode_token).unwrap_or_default(),
            };
            let token = (!page.more).then_some(token);
            push_snapshot(&mut self.out, m.sub, page.entries.clone(), token, page.more);
        }
    }

    /// Partition `p` of join `wid` was resumed.
    pub(super) fn on_resumed(&mut self, wid: WatchId, p: u32) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        let Role::Join(first) = w.role else {
            // A group watch resumed after a link loss: nothing to tell anyone.
            return;
        };
        self.groups.heard(wid);
        let subs = self.groups.join_subs(wid, first);
        for &sub in &subs {
            let Some((i, own)) = self.groups.group(w.gid).and_then(|g| g.own_at(p, sub)) else {
                continue;
            };
            let Some(answer) = own.answer_resume(i) else {
                continue;
            };
            if let Some(token) = answer.first {
                let token = Cow::Owned(token);
                self.out
                    .push(Out::Msg(sub.conn, Response::Resumed { id: sub.id, token }));
            }
        }
        if self.groups.count_answer(wid) {
            self.complete_join(wid, &subs);
        }
    }

    /// Watch `wid` could not resume partition `p`: the members it concerns get `reset`
    /// (and then a fresh snapshot).
    pub(super) fn on_reset(&mut self, wid: WatchId, p: u32, reason: &str) {
        let Some(w) = self.groups.watch(wid) else {
            return;
        };
        self.groups.heard(wid);
        let Some(g) = self.groups.get(w.gid) else {
            return;
        };
        let Some(i) = g.idx(p) else {
            return;
        };
        let multi = g.parts.len() > 1;
        let to: Vec<SubRef> = match w.role {
            Role::Retired(..) | Role::Orphan => Vec::new(),
            Role::Join(first) => self.groups.join_subs(wid, first),
            // Every member starts over, pending ones included.
            Role::Group if multi => g.subs(),
            // The snapshot that follows on this watch reaches those not pending here.
            Role::Group => g
                .members
                .iter()
                .filter(|m| {
                    m.own
                        .as_ref()
                        .is_none_or(|o| o.pending.get(i) != Some(&true))
                })
                .map(|m| m.sub)
                .collect(),
        };
        for sub in to {
            let reason = Cow::Owned(reason.to_owned());
            self.reply(sub.conn, Response::Reset { id: sub.id, reason });
            // One partition of several cannot be resumed: a fresh snapshot of all of
            // them follows (a single-partition target's follows on this very watch).
            if multi {
                self.restart_member(w.gid, sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_template_patched_with_an_id_is_that_ids_encoding() {
        let d = Delivery::new(
            "room/{1}/k",
            ChangeOp::Put {
                value: Cow::Owned(vec![7; 3000]),
                version: 9,
            },
            "tok".into(),
        );
        let mut enc = FbEncoder::new();
        let (tpl, at) = d.fb_template(&mut enc).cloned().unwrap();
        for id in [0, 1, 255, 1 << 40, u64::MAX] {
            let mut patched = tpl.to_vec();
            patched[at..at + 8].copy_from_slice(&id.to_le_bytes());
            let mut direct = Vec::new();
            enc.encode_response(&d.response(id), &mut direct);
            assert_eq!(patched, direct, "id {id}");
        }
    }
}
