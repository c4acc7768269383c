//! Presence in the core: writes of member keys ([`wire::presence`]) from the links go
//! through the member table ([`crate::presence`]) before the batch, so that a join with
//! an unchanged meta or a leave of no member is answered at once and logs nothing; the
//! others are ordinary puts and deletes, logged and dispatched to watchers of the
//! channel like any change. Also here: pages and counts of members, a relinked worker's
//! announcement (`PresenceSync`), and the store's own leaves for edges gone past the
//! grace period. The table is loaded from the engine at start and after a failed commit.

use tracing::warn;
use wire::presence::PREFIX;

use super::{Core, LinkId, entry_refs, now_ms, text, wire_pos};
use crate::changelog::{Target, Write};
use crate::engine::{BatchOp, Engine};
use crate::error::StoreError;
use crate::metrics::Metrics;
use crate::presence::{Effect, Refusal};

/// The edge process and worker a link serves (from its Hello).
#[derive(Debug)]
pub(super) struct LinkEdge {
    edge: Box<str>,
    worker: u16,
}

/// The link id the store's own writes are answered to: no link has it (link ids start
/// at 1), so their answers go nowhere.
const OWN: LinkId = 0;

/// Most members in one page.
const MAX_PAGE: u32 = 1000;

/// Whether `w` writes a presence member's key.
pub(super) fn is_presence(w: &Write) -> bool {
    w.key().starts_with(PREFIX.as_bytes())
}

impl<E: Engine> Core<E> {
    /// (Re)build the member table from the engine, plus the presence writes queued and
    /// not yet in a batch; every edge without a link counts as gone from now.
    ///
    /// Members keep the owners they had (after a failed commit); the others are
    /// unclaimed until an announcement claims them, and leave if none does within the
    /// grace period.
    pub(super) fn load_presence(&mut self) {
        let owners = self.presence.owners();
        self.presence.clear_members();
        let owned: Vec<u32> = self.log.owned().collect();
        for p in owned {
            match self.log.snapshot(p, Target::Prefix(PREFIX.as_bytes())) {
                Ok((entries, _)) => {
                    for (key, current) in entries {
                        let _ = self.presence.join(None, text(&key), &current.value, None);
                    }
                }
                Err(e) => warn!(partition = p, error = %e, "cannot load presence members"),
            }
        }
        for (_, w) in &self.queue {
            match w {
                Write::Put { key, value, .. } if is_presence(w) => {
                    let _ = self.presence.join(None, text(key), value, None);
                }
                Write::Delete { key, .. } if is_presence(w) => {
                    let _ = self.presence.leave(text(key), None);
                }
                _ => {}
            }
        }
        let owned: Vec<u32> = self.log.owned().collect();
        for p in owned {
            match self.log.owners(p) {
                Ok(records) => {
                    for (key, owner) in records {
                        if !self.presence.claim(text(&key), text(&owner)) {
                            // The record of a member whose write never landed.
                            self.side.push(BatchOp::Delete(crate::keys::owner(p, &key)));
                        }
                    }
                }
                Err(e) => warn!(partition = p, error = %e, "cannot load presence owners"),
            }
        }
        for (key, owner) in owners {
            let _ = self.presence.claim(&key, &owner);
        }
        self.presence.loaded(now_ms());
        self.publish_presence();
    }

    /// A link said which edge process and worker it serves.
    pub(super) fn presence_hello(&mut self, link: LinkId, edge: String, worker: u16) {
        if self.link_edges.contains_key(&link) {
            return;
        }
        self.presence.link_up(&edge);
        let edge = edge.into_boxed_str();
        self.link_edges.insert(link, LinkEdge { edge, worker });
    }

    /// A link went: its edge's last one starts the grace period.
    pub(super) fn presence_link_gone(&mut self, link: LinkId) {
        self.syncing.remove(&link);
        if let Some(le) = self.link_edges.remove(&link) {
            self.presence.link_down(&le.edge, now_ms());
        }
    }

    /// A link's join (`meta`) or leave (`None`) of member `key` by connection `owner`:
    /// answered now, or the write to queue.
    pub(super) fn presence_write(
        &mut self,
        link: LinkId,
        request_id: u64,
        key: String,
        meta: Option<Vec<u8>>,
        owner: &str,
    ) -> Option<Write> {
        let p = self.log.partition_of(key.as_bytes());
        let Some(at) = self.log.position(p) else {
            self.write_error(link, request_id, &StoreError::WrongPartition(p));
            return None;
        };
        let edge = self.link_edges.get(&link).map(|l| &*l.edge);
        let held_by = self.presence.owner(&key).map(str::to_owned);
        let effect = match (&meta, edge) {
            (_, None) => Err(Refusal::NotOwner),
            (Some(meta), Some(edge)) => self.presence.join(Some(edge), &key, meta, Some(owner)),
            (None, Some(_)) => self.presence.leave(&key, Some(owner)),
        };
        if effect.is_ok() {
            self.record_owner(p, &key, held_by.as_deref());
        }
        match effect {
            Err(r) => self.write_error(link, request_id, &StoreError::Presence(r)),
            Ok(Effect::Write) => {
                self.publish_presence();
                let key = key.into_bytes();
                let w = match meta {
                    Some(value) => Write::Put {
                        key,
                        value,
                        if_version: None,
                        msg_id: None,
                    },
                    None => Write::Delete {
                        key,
                        if_version: None,
                        msg_id: None,
                    },
                };
                return Some(w);
            }
            Ok(Effect::None) => {
                let buf = self.pending.entry(link).or_default();
                let _ = self.enc.write_reply(buf, request_id, wire_pos(at), 0);
            }
        }
        None
    }

    /// A page of a channel's members (read from the engine: committed members only)
    /// with the channel's count (from the table: O(1)).
    pub(super) fn members(
        &mut self,
        link: LinkId,
        request_id: u64,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) {
        let total = self.presence.count(prefix);
        let limit = limit.min(MAX_PAGE) as usize;
        let page = if limit == 0 {
            Ok((Vec::new(), total > 0))
        } else {
            self.log
                .page(prefix.as_bytes(), after.map(str::as_bytes), limit)
        };
        match page {
            Ok((entries, more)) => {
                let refs = entry_refs(&entries);
                let buf = self.pending.entry(link).or_default();
                let _ = self.enc.members_reply(buf, request_id, &refs, total, more);
            }
            Err(e) => self.read_error(link, request_id, &e),
        }
    }

    /// One part of a relinked worker's announcement of its members: each is joined (an
    /// unchanged one logs nothing); after the last part, the worker's other members
    /// leave.
    pub(super) fn presence_sync(
        &mut self,
        link: LinkId,
        members: Vec<(String, Vec<u8>, String)>,
        last: bool,
    ) {
        let Some((edge, worker)) = self
            .link_edges
            .get(&link)
            .map(|l| (l.edge.clone(), l.worker))
        else {
            return;
        };
        let mut announced = self.syncing.remove(&link).unwrap_or_default();
        for (key, meta, owner) in members {
            let p = self.log.partition_of(key.as_bytes());
            let owned = self.log.position(p).is_some();
            let held_by = self.presence.owner(&key).map(str::to_owned);
            // A member another connection holds now (a device that moved) is not taken
            // back by the one that held it before.
            let moved = held_by.as_deref().is_some_and(|o| o != owner);
            if !owned || moved {
                continue;
            }
            let joined = self.presence.join(Some(&edge), &key, &meta, Some(&owner));
            if joined.is_ok() {
                self.record_owner(p, &key, held_by.as_deref());
            }
            match joined {
                Ok(Effect::Write) => self.own_write(Write::Put {
                    key: key.clone().into_bytes(),
                    value: meta,
                    if_version: None,
                    msg_id: None,
                }),
                Ok(Effect::None) => {}
                Err(r) => {
                    warn!(link, error = %r, "a presence announcement names a member it cannot hold");
                    continue;
                }
            }
            announced.insert(key.into_boxed_str());
        }
        if !last {
            self.syncing.insert(link, announced);
            return;
        }
        let stale = self.presence.stale(&edge, worker, &announced);
        Metrics::add(&self.cfg.metrics.presence_stale, stale.len() as u64);
        self.leave_all(stale.iter().map(|k| &**k));
    }

    /// The members of edges gone past the grace period leave.
    pub(super) fn expire_presence(&mut self) {
        if self.presence.is_empty() {
            return;
        }
        let gone = self.presence.expired(now_ms(), self.cfg.presence_grace_ms);
        if gone.is_empty() {
            return;
        }
        Metrics::add(&self.cfg.metrics.presence_expired, gone.len() as u64);
        self.leave_all(gone.iter().map(|k| &**k));
    }

    /// The store's own leaves of `keys`.
    fn leave_all<'k>(&mut self, keys: impl Iterator<Item = &'k str>) {
        let keys: Vec<String> = keys.map(str::to_owned).collect();
        for key in keys {
            if self.presence.leave(&key, None) == Ok(Effect::Write) {
                let p = self.log.partition_of(key.as_bytes());
                self.side
                    .push(BatchOp::Delete(crate::keys::owner(p, key.as_bytes())));
                self.own_write(Write::Delete {
                    key: key.into_bytes(),
                    if_version: None,
                    msg_id: None,
                });
            }
        }
        self.publish_presence();
    }

    /// Member `key` of partition `p` was held by `before`: if its owner is another now,
    /// the next batch records it (or removes the record of a member gone).
    fn record_owner(&mut self, p: u32, key: &str, before: Option<&str>) {
        let now = self.presence.owner(key);
        if now == before {
            return;
        }
        let record = crate::keys::owner(p, key.as_bytes());
        self.side.push(match now {
            Some(owner) => BatchOp::Put(record, owner.as_bytes().to_vec()),
            None => BatchOp::Delete(record),
        });
    }

    /// A write of the store's own, answered to no one.
    fn own_write(&mut self, w: Write) {
        let asker = super::Asker {
            link: OWN,
            request_id: 0,
            taken: super::Taken::NONE,
        };
        self.enqueue(asker, w);
    }

    fn publish_presence(&self) {
        let m = &self.cfg.metrics;
        Metrics::set(&m.presence_members, self.presence.len() as u64);
        Metrics::set(&m.presence_channels, self.presence.channels() as u64);
    }
}
