//! Snapshot chunking. In: a store's snapshot frame (a page of up to 1 MiB of one
//! partition); out: `snapshot` messages for a subscription, each at most
//! [`SNAPSHOT_PART`] bytes of keys and values, so that any client's default message limit
//! accepts them.

use std::borrow::Cow;

use wire::client::{Entry, Position, Response};
use wire::link::internal;

use super::{Out, SubRef};

/// Largest snapshot message, in key and value bytes.
const SNAPSHOT_PART: usize = 64 * 1024;

/// One snapshot frame from a store, read.
#[derive(Debug)]
pub(super) struct SnapshotPage {
    pub(super) partition: u32,
    /// The position the snapshot was read at (the partition's start if none).
    pub(super) pos: Position,
    /// Other pages of the same partition follow.
    pub(super) more: bool,
    pub(super) entries: Vec<Entry<'static>>,
}

impl SnapshotPage {
    pub(super) fn read(snap: &internal::Snapshot<'_>) -> Self {
        let partition = snap.partition();
        let pos = snap.position().map_or(
            Position {
                partition,
                ..Position::default()
            },
            Position::from,
        );
        let entries = snap
            .entries()
            .map(|es| {
                es.iter()
                    .map(|e| Entry {
                        key: Cow::Owned(e.key().to_owned()),
                        value: Cow::Owned(
                            e.value().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                        ),
                        version: e.version(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            partition,
            pos,
            more: snap.more(),
            entries,
        }
    }
}

/// Queue snapshot `entries` for subscription `sub`, in parts of at most [`SNAPSHOT_PART`]
/// bytes (one entry at least); the last part carries `token` and `more`.
pub(super) fn push_snapshot(
    out: &mut Vec<Out>,
    sub: SubRef,
    entries: Vec<Entry<'static>>,
    token: Option<String>,
    more: bool,
) {
    let SubRef { conn, id } = sub;
    let mut part: Vec<Entry<'static>> = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let size = e.key.len() + e.value.len() + 32;
        if !part.is_empty() && bytes + size > SNAPSHOT_PART {
            out.push(Out::Msg(
                conn,
                Response::Snapshot {
                    id,
                    entries: std::mem::take(&mut part),
                    token: None,
                    more: true,
                },
            ));
            bytes = 0;
        }
        bytes += size;
        part.push(e);
    }
    out.push(Out::Msg(
        conn,
        Response::Snapshot {
            id,
            entries: part,
            token: token.map(Cow::Owned),
            more,
        },
    ));
}
