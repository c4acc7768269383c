//! Durable subscriptions: a position kept per (user, name, target), so that a client
//! that lost its token (a new device, cleared storage) resumes from what it last
//! acknowledged. In: `sub` with `durable` (and no `from`), `ack`; out: reads and
//! conditional writes of the subscription's record, and, once the record is read, the
//! subscription itself, resumed from it.
//!
//! The record is an ordinary stored key in the reserved space `@durable/` (clients may
//! not touch it: [`touches_reserved`]), named by the user's subject, the subscription's
//! name and its target; its value is a resume token holding, per partition of the
//! target, the newest position acknowledged. An `ack` reads the record, merges the
//! acked token in ([`merge`]: per partition the later position of the same epoch; a
//! position of another epoch replaces it, the partition having been reset), and writes
//! it back conditionally on the version read, reading again on a conflict, so acks from
//! several connections and edges at once never move it backwards.

use std::borrow::Cow;

use wire::client::{ErrorCode, Position, Request, Response, SubMode, Target, encode_token};

use super::{ConnRef, Hub, PendingKind, SubRef};

/// Where durable records live; no client request may name a key under it.
pub const RESERVED: &str = "@durable/";
/// Reads of a record an `ack` makes before giving up on conflicting writers.
const MAX_ACK_TRIES: u8 = 8;

/// A durable `sub` waiting for its record.
#[derive(Debug)]
pub(super) struct DurableSub {
    target: Target<'static>,
    mode: SubMode,
    record: Box<str>,
}

/// An `ack` in progress: the record it updates, what was acked, reads so far.
#[derive(Debug)]
pub(super) struct AckState {
    record: Box<str>,
    acked: Vec<Position>,
    tries: u8,
}

/// The record of durable subscription `name` of `subject` to `target`. Lengths keep the
/// parts apart whatever they hold.
pub fn record_key(subject: &str, name: &str, target: &Target<'_>) -> String {
    let (kind, text) = match target {
        Target::Key(k) => ('k', &**k),
        Target::Prefix(p) => ('p', &**p),
        Target::Presence(c) => ('r', &**c),
    };
    format!(
        "{RESERVED}{}:{subject}{}:{name}{kind}{text}",
        subject.len(),
        name.len()
    )
}

/// The key spaces clients may not name: durable records, and presence members (which
/// they reach only through `join`, `leave`, `presence` and presence subscriptions).
const RESERVED_SPACES: [&str; 2] = [RESERVED, wire::presence::PREFIX];

/// Whether `key` is in a reserved space.
fn reserved_key(key: &str) -> bool {
    RESERVED_SPACES.iter().any(|r| key.starts_with(r))
}

/// Whether `req` names a key in a reserved space (or a prefix reaching into one).
pub fn touches_reserved(req: &Request<'_>) -> bool {
    match req {
        Request::Get { key, .. }
        | Request::Put { key, .. }
        | Request::Del { key, .. }
        | Request::Pub { key, .. } => reserved_key(key),
        Request::Sub {
            target: Target::Key(k),
            ..
        } => reserved_key(k),
        Request::Sub {
            target: Target::Prefix(p),
            ..
        } => reserved_key(p) || RESERVED_SPACES.iter().any(|r| r.starts_with(&**p)),
        Request::Sub {
            target: Target::Presence(_),
            ..
        }
        | Request::Unsub { .. }
        | Request::Auth { .. }
        | Request::Ack { .. }
        | Request::Join { .. }
        | Request::Leave { .. }
        | Request::Presence { .. } => false,
    }
}

/// `kept` with `acked` merged in, or `None` when `acked` moves no partition forward.
/// Per partition: the later of two positions of one epoch; a position of another epoch
/// replaces the kept one (its partition was reset and the client started over).
pub fn merge(kept: &[Position], acked: &[Position]) -> Option<Vec<Position>> {
    let mut out = kept.to_vec();
    let mut moved = false;
    for a in acked {
        match out.iter_mut().find(|k| k.partition == a.partition) {
            Some(k) if k.epoch == a.epoch && k.seq >= a.seq => {}
            Some(k) => {
                *k = *a;
                moved = true;
            }
            None => {
                out.push(*a);
                moved = true;
            }
        }
    }
    out.sort_unstable_by_key(|p| p.partition);
    moved.then_some(out)
}

impl Hub {
    /// `sub` with `durable`: with `from`, a subscription like any other whose acks
    /// are kept; without, its record is read first and the subscription resumes from it.
    pub(super) fn durable_sub(
        &mut self,
        sub: SubRef,
        target: Target<'_>,
        from: Option<&str>,
        mode: SubMode,
        record: String,
    ) {
        if from.is_some() {
            if self.sub_with_mode(sub, &target, from, mode) {
                self.durables.insert(sub, record.into());
            }
            return;
        }
        let kind = PendingKind::DurableSub(Box::new(DurableSub {
            target: target.into_owned(),
            mode,
            record: record.as_str().into(),
        }));
        self.forward(sub.conn, sub.id, &record, kind, |enc, out, rid| {
            enc.get(out, rid, &record)
        });
    }

    /// A durable subscription's record was read (`None`: there is none yet).
    pub(super) fn durable_record(&mut self, sub: SubRef, d: DurableSub, value: Option<&[u8]>) {
        let from = value.and_then(|v| std::str::from_utf8(v).ok());
        if self.sub_with_mode(sub, &d.target, from, d.mode) {
            self.durables.insert(sub, d.record);
        }
    }

    /// `ack` of subscription `id` of `conn`: read its record, to merge `token` in.
    pub(super) fn ack(&mut self, conn: ConnRef, id: u64, token: &str) {
        let Some(record) = self.durables.get(&SubRef { conn, id }).cloned() else {
            let message = "no durable subscription with this id";
            self.fail(conn, id, ErrorCode::BadRequest, message);
            return;
        };
        let acked = match wire::client::decode_token(token) {
            Ok(p) => p,
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
        let state = AckState {
            record,
            acked,
            tries: 0,
        };
        self.read_for_ack(conn, id, state);
    }

    fn read_for_ack(&mut self, conn: ConnRef, id: u64, mut state: AckState) {
        state.tries += 1;
        let record = state.record.clone();
        let kind = PendingKind::AckRead(Box::new(state));
        self.forward(conn, id, &record, kind, |enc, out, rid| {
            enc.get(out, rid, &record)
        });
    }

    /// An `ack`'s record was read (`None`: absent; else its value and version): write
    /// the merge back, unless the ack moves nothing.
    pub(super) fn ack_read(
        &mut self,
        conn: ConnRef,
        id: u64,
        state: AckState,
        read: Option<(&[u8], u64)>,
    ) {
        let kept = read
            .and_then(|(v, _)| std::str::from_utf8(v).ok())
            .and_then(|t| wire::client::decode_token(t).ok())
            .unwrap_or_default();
        let Some(merged) = merge(&kept, &state.acked) else {
            self.acked(conn, id);
            return;
        };
        let value = encode_token(&merged);
        let if_version = Some(read.map_or(0, |(_, version)| version));
        let record = state.record.clone();
        let kind = PendingKind::AckWrite(Box::new(state));
        self.forward(conn, id, &record, kind, |enc, out, rid| {
            enc.put(out, rid, &record, value.as_bytes(), if_version, None)
        });
    }

    /// An `ack`'s write lost to another writer of the record: read it again.
    pub(super) fn ack_conflict(&mut self, conn: ConnRef, id: u64, state: AckState) {
        if state.tries >= MAX_ACK_TRIES {
            let message = "the durable position is being changed by others; ack again";
            self.fail(conn, id, ErrorCode::Unavailable, message);
            return;
        }
        self.read_for_ack(conn, id, state);
    }

    /// An `ack` is done.
    pub(super) fn acked(&mut self, conn: ConnRef, id: u64) {
        self.reply(
            conn,
            Response::Ok {
                id,
                version: None,
                token: None::<Cow<'static, str>>,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: u32, epoch: u64, seq: u64) -> Position {
        Position {
            partition,
            epoch,
            seq,
        }
    }

    #[test]
    fn merging_never_moves_a_partition_back() {
        let kept = [at(1, 7, 10), at(2, 7, 5)];
        assert_eq!(merge(&kept, &[at(1, 7, 9)]), None, "older");
        assert_eq!(merge(&kept, &[at(1, 7, 10)]), None, "the same");
        assert_eq!(
            merge(&kept, &[at(1, 7, 12), at(2, 7, 4)]),
            Some(vec![at(1, 7, 12), at(2, 7, 5)])
        );
        assert_eq!(
            merge(&kept, &[at(2, 9, 1)]),
            Some(vec![at(1, 7, 10), at(2, 9, 1)]),
            "another epoch replaces"
        );
        assert_eq!(merge(&[], &[at(3, 1, 1)]), Some(vec![at(3, 1, 1)]));
    }

    #[test]
    fn records_are_apart_and_reserved() {
        let k = |s: &str| Target::Key(s.to_owned().into());
        assert_ne!(
            record_key("ab", "c", &k("x")),
            record_key("a", "bc", &k("x"))
        );
        assert_ne!(
            record_key("a", "b", &k("x")),
            record_key("a", "b", &Target::Prefix("x".into()))
        );
        let get = |key: &str| Request::Get {
            id: 1,
            key: key.to_owned().into(),
        };
        assert!(touches_reserved(&get(&record_key("a", "b", &k("x")))));
        assert!(!touches_reserved(&get("@durablex")));
        let prefix = |p: &str| Request::Sub {
            id: 1,
            target: Target::Prefix(p.to_owned().into()),
            from: None,
            mode: SubMode::Stream,
            durable: None,
        };
        assert!(touches_reserved(&prefix("@")));
        assert!(touches_reserved(&prefix("@durable/1:a")));
        assert!(!touches_reserved(&prefix("@user/")));
    }
}
