//! Sending to a user and to everyone, on ordinary keys of a reserved form, each carried
//! to a worker by one subscription of its own, whatever the number of connections.
//!
//! - Broadcast is the key [`BROADCAST_KEY`]: each worker's hub subscribes to it as the
//!   pseudo-connection [`WORKER_CONN`] (subscription [`BROADCAST_SUB`]), and the worker
//!   hands each of its changes to every open, admitted `/ws` connection as subscription
//!   [`INBOX_ID`].
//! - A user's inbox is the key `@user/<subject>`. With authentication on, each worker's
//!   hub also subscribes to the prefix `@user/` ([`INBOXES_SUB`]), and keeps which of its
//!   connections are authenticated as whom ([`Hub::open_inbox`], [`Hub::close_inbox`]);
//!   a change of `@user/alice` goes out as [`Out::Inbox`], with a token for that key
//!   alone, and the worker hands it to Alice's connections as subscription
//!   [`INBOX_ID`]. Publishing there needs a `publish` grant covering it, like any key. A
//!   connection that subscribes to its own inbox under an id of its own (to resume it
//!   from a token) leaves the automatic delivery.
//!
//! Both subscriptions are made again within a second ([`Hub::ensure_own_subs`]) after a
//! failure (a store down).

use std::collections::HashMap;
use std::rc::Rc;

pub use wire::client::AUTO_SUB_ID as INBOX_ID;
use wire::client::{
    BROADCAST_KEY, ChangeOp, Position, Request, SubMode, Target, encode_token, inbox_key,
};

use super::delivery::Delivery;
use super::{ConnRef, Hub, Out, SubRef};

/// The pseudo-connection that holds a worker's own subscriptions.
pub const WORKER_CONN: ConnRef = (u32::MAX, u32::MAX);
/// Its subscription to [`BROADCAST_KEY`].
pub const BROADCAST_SUB: u64 = 0;
/// Its subscription to every inbox (the prefix `@user/`).
pub const INBOXES_SUB: u64 = 1;
/// What every inbox key starts with.
const INBOX_PREFIX: &str = "@user/";

/// Which connections of a worker get whose inbox, by a hash of the subject (no copy of
/// it: an entry costs about 40 bytes per user; a collision only makes the worker look
/// at a connection whose subject then does not match: [`Hub::inbox_conns`]).
pub(super) type Inboxes = HashMap<u64, Holders>;

/// The connections of one user on a worker: most users have one.
#[derive(Debug)]
pub(super) enum Holders {
    One(ConnRef),
    Many(Vec<ConnRef>),
}

impl Holders {
    fn as_slice(&self) -> &[ConnRef] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::Many(v) => v,
        }
    }
}

fn subject_hash(subject: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(subject.as_bytes())
}

impl Hub {
    /// Connection `conn` has just been authenticated as `subject`: it gets the user's
    /// inbox.
    pub fn open_inbox(&mut self, conn: ConnRef, subject: &str) {
        if subject.is_empty() {
            return;
        }
        match self.inboxes.entry(subject_hash(subject)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Holders::One(conn));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let h = e.get_mut();
                if !h.as_slice().contains(&conn) {
                    let mut all = h.as_slice().to_vec();
                    all.push(conn);
                    *h = Holders::Many(all);
                }
            }
        }
    }

    /// Connection `conn`, authenticated as `subject`, no longer gets its inbox (it
    /// closed, or follows its inbox by a subscription of its own).
    pub fn close_inbox(&mut self, conn: ConnRef, subject: &str) {
        let h = subject_hash(subject);
        let Some(holders) = self.inboxes.get_mut(&h) else {
            return;
        };
        let rest: Vec<ConnRef> = holders
            .as_slice()
            .iter()
            .copied()
            .filter(|&c| c != conn)
            .collect();
        match rest.as_slice() {
            [] => {
                self.inboxes.remove(&h);
            }
            [one] => *holders = Holders::One(*one),
            _ => *holders = Holders::Many(rest),
        }
    }

    /// The connections that may be `key`'s user's (by the subject's hash: the caller
    /// checks each one's subject against [`inbox_subject`]).
    pub fn inbox_conns(&self, key: &str) -> &[ConnRef] {
        inbox_subject(key)
            .and_then(|subject| self.inboxes.get(&subject_hash(subject)))
            .map_or(&[], Holders::as_slice)
    }

    /// A subscription of `conn` (authenticated as `subject`) to its own inbox under an
    /// id of its own replaces the automatic delivery.
    pub(super) fn replace_inbox(&mut self, conn: ConnRef, target: &Target<'_>, subject: &str) {
        if !subject.is_empty() && matches!(target, Target::Key(k) if *k == inbox_key(subject)) {
            self.close_inbox(conn, subject);
        }
    }

    /// Hold the worker's own subscriptions: to [`BROADCAST_KEY`] if `broadcast`, to every
    /// inbox if `inboxes` (call once a second and when a link comes up: one that failed,
    /// a store being down, is made again).
    pub fn ensure_own_subs(&mut self, broadcast: bool, inboxes: bool) {
        let wanted = [
            (broadcast, BROADCAST_SUB, Target::Key(BROADCAST_KEY.into())),
            (inboxes, INBOXES_SUB, Target::Prefix(INBOX_PREFIX.into())),
        ];
        for (on, id, target) in wanted {
            let sub = SubRef {
                conn: WORKER_CONN,
                id,
            };
            if !on || self.groups.has_sub(sub) || !self.all_up() {
                continue;
            }
            let req = Request::Sub {
                id,
                target,
                from: None,
                mode: SubMode::Stream,
                durable: None,
            };
            self.request(WORKER_CONN, req, "");
        }
    }

    fn all_up(&self) -> bool {
        (0..self.link_out.len()).all(|s| self.is_up(s))
    }
}

/// Whether `sub` is the worker's subscription to every inbox: its changes go out as
/// [`Out::Inbox`] (see [`inbox_change`]).
pub(super) fn is_inboxes(sub: SubRef) -> bool {
    sub.conn == WORKER_CONN && sub.id == INBOXES_SUB
}

/// Change `op` of inbox `key` at `pos`, with a token for that key alone (a subscriber
/// of the key resumes from it; the worker's prefix token would name every partition).
pub(super) fn inbox_change(key: &str, op: &ChangeOp<'static>, pos: Position) -> Out {
    Out::Inbox(Rc::new(Delivery::new(
        key,
        op.clone(),
        encode_token(&[pos]),
    )))
}

/// The subject whose inbox `key` is, if it is an inbox key.
pub fn inbox_subject(key: &str) -> Option<&str> {
    key.strip_prefix(INBOX_PREFIX)
}
