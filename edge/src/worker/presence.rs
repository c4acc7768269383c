//! Presence events, batched per subscription. In: [`Out::Presence`] changes of channel
//! members from the hub; out: one `presence` message per subscription per interval
//! (`presence_batch`, 100 ms by default) with every join and leave of it, oldest first,
//! and the token after the last. A burst of joins costs each subscriber one frame, not
//! one per member. One timer per worker (a ring timeout on [`PRESENCE_TIMER_SLOT`])
//! runs while events wait.
//!
//! Order with the subscription's other messages: a snapshot (`members`) or a reset drops
//! what waits (the list that follows includes it); `resumed` sends it first; the end of
//! the subscription drops it.
//!
//! [`Out::Presence`]: crate::hub::Out::Presence

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use wire::client::{ChangeOp, PresenceEvent, Response};

use super::Worker;
use super::conn::Conn;
use super::dispatch::{Encoders, queue_msg};
use super::slab::Key;
use crate::hub::Delivery;
use crate::uring::{Gen, OpKind, Token};

/// The slot of the presence timer's token.
pub(super) const PRESENCE_TIMER_SLOT: u32 = 2;

/// Events waiting per (connection, subscription id).
#[derive(Debug, Default)]
pub(super) struct Batches {
    pending: HashMap<(Key, u64), Vec<Rc<Delivery>>>,
}

impl Batches {
    /// Whether `key`'s subscription `id` has events waiting.
    pub(super) fn holds(&self, key: Key, id: u64) -> bool {
        !self.pending.is_empty() && self.pending.contains_key(&(key, id))
    }

    /// Drop what waits for `key`'s subscription `id`.
    pub(super) fn drop_sub(&mut self, key: Key, id: u64) {
        if !self.pending.is_empty() {
            self.pending.remove(&(key, id));
        }
    }

    /// Drop what waits for any subscription of `key` (its connection is gone).
    pub(super) fn forget(&mut self, key: Key) {
        if !self.pending.is_empty() {
            self.pending.retain(|(k, _), _| *k != key);
        }
    }

    /// Add `d` to what waits for `key`'s subscription `id`.
    pub(super) fn push(&mut self, key: Key, id: u64, d: Rc<Delivery>) {
        self.pending.entry((key, id)).or_default().push(d);
    }

    /// A message of `key`'s subscription `id` (or one that merely reuses the id) is
    /// about to go out on `conn`: a `members` page or a reset drops what waits, a
    /// `resumed` sends it first.
    pub(super) fn before(
        &mut self,
        key: Key,
        msg: &Response<'_>,
        conn: &mut Conn,
        enc: &mut Encoders,
    ) {
        let Some(id) = msg.id() else {
            return;
        };
        if !self.holds(key, id) {
            return;
        }
        match msg {
            Response::Reset { .. } | Response::Members { .. } => self.drop_sub(key, id),
            Response::Resumed { .. } => {
                let waiting = self.pending.remove(&(key, id)).unwrap_or_default();
                if let Some(m) = events_message(id, &waiting) {
                    queue_msg(conn, &m, enc);
                }
            }
            _ => {}
        }
    }

    /// Events waiting, over every subscription.
    pub(super) fn len(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

/// Largest `presence` message, in member keys and metas (as a snapshot's parts: any
/// client's default message limit takes it).
pub(super) const MESSAGE_PART: usize = 64 * 1024;

/// `changes` cut into runs of at most [`MESSAGE_PART`] bytes (one change at least).
fn parts(changes: &[Rc<Delivery>]) -> Vec<&[Rc<Delivery>]> {
    let size = |d: &Delivery| {
        let value = match &d.op {
            ChangeOp::Put { value, .. } | ChangeOp::Publish { value } => value.len(),
            ChangeOp::Delete { .. } => 0,
        };
        d.key.len() + value + 64
    };
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, d) in changes.iter().enumerate() {
        let n = size(d);
        if i > start && bytes + n > MESSAGE_PART {
            out.extend(changes.get(start..i));
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    out.extend(changes.get(start..).filter(|p| !p.is_empty()));
    out
}

/// The `presence` message of subscription `id` for `changes` (member keys put or
/// deleted), with the token after the last.
pub(super) fn events_message(id: u64, changes: &[Rc<Delivery>]) -> Option<Response<'_>> {
    let last = changes.last()?;
    let events = changes
        .iter()
        .filter_map(|d| {
            let m = wire::presence::parse(&d.key)?;
            let joined = match &d.op {
                ChangeOp::Put { value, .. } => Some(Cow::Borrowed(&**value)),
                ChangeOp::Delete { .. } => None,
                ChangeOp::Publish { .. } => return None,
            };
            Some(PresenceEvent {
                joined,
                user: (!m.user.is_empty()).then_some(Cow::Borrowed(m.user)),
                conn: Cow::Owned(m.member.as_str().to_owned()),
            })
        })
        .collect();
    Some(Response::Presence {
        id,
        events,
        token: Cow::Borrowed(&last.token),
    })
}

impl Worker {
    /// Keep the presence timer running while events wait.
    pub(super) fn arm_presence_timer(&mut self) {
        let t = Token::new(OpKind::Tick, PRESENCE_TIMER_SLOT, Gen::default());
        if !self.batches.pending.is_empty() && !self.ring.in_flight(t.slot, t.kind) {
            let _ = self.ring.tick(self.cfg.presence_batch, t);
        }
    }

    /// Queue the `presence` messages of `changes` on `key` (one, or one per
    /// [`MESSAGE_PART`] of events); whether any was queued.
    pub(super) fn send_presence(&mut self, key: Key, id: u64, changes: &[Rc<Delivery>]) -> bool {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
            return false;
        };
        let mut sent = false;
        for part in parts(changes) {
            if let Some(msg) = events_message(id, part) {
                queue_msg(conn, &msg, &mut self.delivery);
                sent = true;
            }
        }
        sent
    }

    /// The interval is over: every subscription's waiting events go out.
    pub(super) fn on_presence_timer(&mut self) {
        let pending = std::mem::take(&mut self.batches.pending);
        let mut touched: Vec<Key> = Vec::with_capacity(pending.len());
        for ((key, id), changes) in pending {
            if self.send_presence(key, id, &changes) {
                touched.push(key);
            }
        }
        crate::metrics::WorkerMetrics::add(&self.metrics.messages_out, touched.len() as u64);
        touched.sort_unstable_by_key(|k| k.slot);
        touched.dedup();
        for key in touched {
            self.drive(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::presence::{MemberId, MemberKey};

    fn member(user: &str, slot: u32) -> String {
        MemberKey {
            channel: "room",
            user,
            member: MemberId::Conn(&format!("e/0/{slot}.1")),
        }
        .encode()
    }

    #[test]
    fn a_batch_is_one_message_in_order_with_the_last_token() {
        let joined = Rc::new(Delivery::new(
            &member("alice", 1),
            ChangeOp::Put {
                value: Cow::Borrowed(b"{\"on\":1}"),
                version: 3,
            },
            "t1".into(),
        ));
        let left = Rc::new(Delivery::new(
            &member("", 2),
            ChangeOp::Delete { version: 4 },
            "t2".into(),
        ));
        let changes = [joined, left];
        let msg = events_message(7, &changes).unwrap();
        let mut json = Vec::new();
        wire::client::json::encode_response(&msg, &mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"op":"presence","id":7,"events":[{"event":"joined","user":"alice","conn":"e/0/1.1","meta":{"on":1}},{"event":"left","user":null,"conn":"e/0/2.1"}],"token":"t2"}"#
        );
        assert!(events_message(7, &[]).is_none());
    }
}
