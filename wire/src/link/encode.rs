//! Link frame encoding: typed message fields in, header + flatbuffer payload bytes appended
//! to an output buffer out.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use zerocopy::IntoBytes;

use super::header::{HEADER_LEN, LinkHeader};
use super::internal::{
    self, AuthChallengeArgs, AuthProofArgs, ChangeArgs, ChangesArgs, DeleteArgs, EntryArgs,
    ErrorArgs, GetArgs, GetReplyArgs, HelloAckArgs, HelloArgs, MembersArgs, MembersReplyArgs,
    PingArgs, PongArgs, PresenceSyncArgs, PublishArgs, PutArgs, ResetArgs, ResumedArgs,
    SnapshotArgs, UnwatchArgs, WatchArgs, WriteReplyArgs,
};
use super::{ChangeKind, ErrorCode, FrameTooLarge, Kind, LinkLimits, Position};

/// Appends one frame (header, then `payload`) to `out`.
///
/// Fails, leaving `out` untouched, if the frame would be longer than `max_frame`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    kind: Kind,
    flags: u8,
    request_id: u64,
    payload: &[u8],
    max_frame: usize,
) -> Result<(), FrameTooLarge> {
    let len = HEADER_LEN.saturating_add(payload.len());
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|_| len <= max_frame);
    let Some(payload_len) = payload_len else {
        return Err(FrameTooLarge {
            len,
            max: max_frame,
        });
    };
    out.reserve(len);
    out.extend_from_slice(LinkHeader::new(kind, flags, request_id, payload_len).as_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A write's idempotency id as the store keys it: the client's `id`, within `scope`
/// (whom the edge writes for: a token's subject, empty for anonymous clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgIdRef<'a> {
    /// Whom the write is for.
    pub scope: &'a str,
    /// The client's id.
    pub id: &'a str,
}

/// One snapshot entry to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a str,
    /// The stored value.
    pub value: &'a [u8],
    /// Its version.
    pub version: u64,
}

/// One change to encode into a [`Kind::Changes`] batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeRef<'a> {
    /// Every watch on the link the change matches.
    pub watch_ids: &'a [u64],
    /// Where the change is in its partition's log.
    pub position: Position,
    /// The changed key.
    pub key: &'a str,
    /// Put, Delete or Publish.
    pub kind: ChangeKind,
    /// The new value; `None` for a delete.
    pub value: Option<&'a [u8]>,
    /// The key's version after the change (0 for Publish).
    pub version: u64,
}

/// Builds and frames link messages, reusing one flatbuffer builder (and its allocation)
/// across messages. Each method appends one complete frame to `out`, with flags 0, or fails
/// with [`FrameTooLarge`] leaving `out` as it was.
pub struct LinkEncoder {
    fbb: FlatBufferBuilder<'static>,
    max_frame: usize,
    entries: Vec<WIPOffset<internal::Entry<'static>>>,
    changes: Vec<WIPOffset<internal::Change<'static>>>,
}

impl std::fmt::Debug for LinkEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEncoder")
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl Default for LinkEncoder {
    fn default() -> Self {
        Self::new(&LinkLimits::default())
    }
}

impl LinkEncoder {
    /// An encoder that refuses frames over `limits.max_frame` (use the peer's limits).
    #[must_use]
    pub fn new(limits: &LinkLimits) -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(1024),
            max_frame: limits.max_frame,
            entries: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Finishes the payload rooted at `root` and appends it as a frame.
    fn finish<T>(
        &mut self,
        out: &mut Vec<u8>,
        kind: Kind,
        request_id: u64,
        root: WIPOffset<T>,
    ) -> Result<(), FrameTooLarge> {
        self.fbb.finish_minimal(root);
        let result = encode_frame(
            out,
            kind,
            0,
            request_id,
            self.fbb.finished_data(),
            self.max_frame,
        );
        self.fbb.reset();
        result
    }

    /// [`Kind::Hello`]: the edge introduces itself.
    pub fn hello(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        edge_id: &str,
        worker: u16,
        map_version: u64,
        nonce: Option<&super::auth::Nonce>,
    ) -> Result<(), FrameTooLarge> {
        let edge_id = Some(self.fbb.create_string(edge_id));
        let nonce = nonce.map(|n| self.fbb.create_vector(&n.0));
        let root = internal::Hello::create(
            &mut self.fbb,
            &HelloArgs {
                edge_id,
                worker,
                map_version,
                nonce,
            },
        );
        self.finish(out, Kind::Hello, request_id, root)
    }

    /// [`Kind::AuthChallenge`]: the store's nonce and proof (see [`super::auth`]).
    pub fn auth_challenge(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        nonce: &super::auth::Nonce,
        proof: &super::auth::Proof,
    ) -> Result<(), FrameTooLarge> {
        let nonce = Some(self.fbb.create_vector(&nonce.0));
        let proof = Some(self.fbb.create_vector(&proof.0));
        let root =
            internal::AuthChallenge::create(&mut self.fbb, &AuthChallengeArgs { nonce, proof });
        self.finish(out, Kind::AuthChallenge, request_id, root)
    }

    /// [`Kind::AuthProof`]: the edge's proof (see [`super::auth`]).
    pub fn auth_proof(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        proof: &super::auth::Proof,
    ) -> Result<(), FrameTooLarge> {
        let proof = Some(self.fbb.create_vector(&proof.0));
        let root = internal::AuthProof::create(&mut self.fbb, &AuthProofArgs { proof });
        self.finish(out, Kind::AuthProof, request_id, root)
    }

    /// [`Kind::HelloAck`]: the store answers Hello.
    pub fn hello_ack(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        store_id: &str,
        map_version: u64,
        partitions: u32,
    ) -> Result<(), FrameTooLarge> {
        let store_id = Some(self.fbb.create_string(store_id));
        let args = HelloAckArgs {
            store_id,
            map_version,
            partitions,
        };
        let root = internal::HelloAck::create(&mut self.fbb, &args);
        self.finish(out, Kind::HelloAck, request_id, root)
    }

    /// [`Kind::Ping`].
    pub fn ping(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        nonce: u64,
    ) -> Result<(), FrameTooLarge> {
        let root = internal::Ping::create(&mut self.fbb, &PingArgs { nonce });
        self.finish(out, Kind::Ping, request_id, root)
    }

    /// [`Kind::Pong`]: answers a Ping with its nonce.
    pub fn pong(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        nonce: u64,
    ) -> Result<(), FrameTooLarge> {
        let root = internal::Pong::create(&mut self.fbb, &PongArgs { nonce });
        self.finish(out, Kind::Pong, request_id, root)
    }

    /// [`Kind::Error`]: a request failed. `map_version` matters for `WrongPartition`,
    /// `current_version` for `Conflict`; pass 0 otherwise.
    pub fn error(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        code: ErrorCode,
        message: &str,
        map_version: u64,
        current_version: u64,
    ) -> Result<(), FrameTooLarge> {
        let message = Some(self.fbb.create_string(message));
        let args = ErrorArgs {
            code,
            message,
            map_version,
            current_version,
        };
        let root = internal::Error::create(&mut self.fbb, &args);
        self.finish(out, Kind::Error, request_id, root)
    }

    /// [`Kind::Get`]: read one key.
    pub fn get(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
    ) -> Result<(), FrameTooLarge> {
        let key = Some(self.fbb.create_string(key));
        let root = internal::Get::create(&mut self.fbb, &GetArgs { key });
        self.finish(out, Kind::Get, request_id, root)
    }

    /// [`Kind::GetReply`]: `value` is `None` when the key does not exist (then `version`
    /// should be 0).
    pub fn get_reply(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        value: Option<&[u8]>,
        version: u64,
        position: Position,
    ) -> Result<(), FrameTooLarge> {
        let value_off = value.map(|v| self.fbb.create_vector(v));
        let key = Some(self.fbb.create_string(key));
        let args = GetReplyArgs {
            key,
            found: value.is_some(),
            version,
            value: value_off,
            position: Some(&position),
        };
        let root = internal::GetReply::create(&mut self.fbb, &args);
        self.finish(out, Kind::GetReply, request_id, root)
    }

    /// A write's idempotency strings, `(msg_id, msg_scope)` offsets (both absent: none).
    fn msg_id(
        &mut self,
        msg: Option<MsgIdRef<'_>>,
    ) -> (
        Option<WIPOffset<&'static str>>,
        Option<WIPOffset<&'static str>>,
    ) {
        match msg {
            Some(m) => (
                Some(self.fbb.create_string(m.id)),
                Some(self.fbb.create_string(m.scope)),
            ),
            None => (None, None),
        }
    }

    /// [`Kind::Put`]: store `value` under `key`, if the key's version is `if_version` (when
    /// given; 0 means "key absent"); idempotent under `msg` when given.
    pub fn put(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        value: &[u8],
        if_version: Option<u64>,
        msg: Option<MsgIdRef<'_>>,
    ) -> Result<(), FrameTooLarge> {
        let value = Some(self.fbb.create_vector(value));
        let key = Some(self.fbb.create_string(key));
        let (msg_id, msg_scope) = self.msg_id(msg);
        let args = PutArgs {
            key,
            value,
            if_version,
            msg_id,
            msg_scope,
            owner: None,
        };
        let root = internal::Put::create(&mut self.fbb, &args);
        self.finish(out, Kind::Put, request_id, root)
    }

    /// A [`Kind::Put`] of presence member `key` with `meta`, held by connection `owner`
    /// (a join).
    pub fn join(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        meta: &[u8],
        owner: &str,
    ) -> Result<(), FrameTooLarge> {
        let value = Some(self.fbb.create_vector(meta));
        let key = Some(self.fbb.create_string(key));
        let owner = Some(self.fbb.create_string(owner));
        let args = PutArgs {
            key,
            value,
            owner,
            ..PutArgs::default()
        };
        let root = internal::Put::create(&mut self.fbb, &args);
        self.finish(out, Kind::Put, request_id, root)
    }

    /// A [`Kind::Delete`] of presence member `key` by connection `owner` (a leave).
    pub fn leave(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        owner: &str,
    ) -> Result<(), FrameTooLarge> {
        let key = Some(self.fbb.create_string(key));
        let owner = Some(self.fbb.create_string(owner));
        let args = DeleteArgs {
            key,
            owner,
            ..DeleteArgs::default()
        };
        let root = internal::Delete::create(&mut self.fbb, &args);
        self.finish(out, Kind::Delete, request_id, root)
    }

    /// [`Kind::Delete`]: remove `key`, if its version is `if_version` (when given);
    /// idempotent under `msg` when given.
    pub fn delete(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        if_version: Option<u64>,
        msg: Option<MsgIdRef<'_>>,
    ) -> Result<(), FrameTooLarge> {
        let key = Some(self.fbb.create_string(key));
        let (msg_id, msg_scope) = self.msg_id(msg);
        let args = DeleteArgs {
            key,
            if_version,
            msg_id,
            msg_scope,
            owner: None,
        };
        let root = internal::Delete::create(&mut self.fbb, &args);
        self.finish(out, Kind::Delete, request_id, root)
    }

    /// [`Kind::Publish`]: append a log-only message under `key`; idempotent under `msg`
    /// when given.
    pub fn publish(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        key: &str,
        value: &[u8],
        msg: Option<MsgIdRef<'_>>,
    ) -> Result<(), FrameTooLarge> {
        let value = Some(self.fbb.create_vector(value));
        let key = Some(self.fbb.create_string(key));
        let (msg_id, msg_scope) = self.msg_id(msg);
        let args = PublishArgs {
            key,
            value,
            msg_id,
            msg_scope,
        };
        let root = internal::Publish::create(&mut self.fbb, &args);
        self.finish(out, Kind::Publish, request_id, root)
    }

    /// [`Kind::WriteReply`]: a write succeeded at `position`; `version` is the key's new
    /// version (0 for Publish).
    pub fn write_reply(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        position: Position,
        version: u64,
    ) -> Result<(), FrameTooLarge> {
        let args = WriteReplyArgs {
            position: Some(&position),
            version,
        };
        let root = internal::WriteReply::create(&mut self.fbb, &args);
        self.finish(out, Kind::WriteReply, request_id, root)
    }

    /// [`Kind::Watch`]: follow `key` (or every key under it when `prefix`), from a snapshot,
    /// or resuming after `from`.
    pub fn watch(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        watch_id: u64,
        key: &str,
        prefix: bool,
        from: Option<Position>,
    ) -> Result<(), FrameTooLarge> {
        let key = Some(self.fbb.create_string(key));
        let args = WatchArgs {
            watch_id,
            key,
            prefix,
            from: from.as_ref(),
        };
        let root = internal::Watch::create(&mut self.fbb, &args);
        self.finish(out, Kind::Watch, request_id, root)
    }

    /// [`Kind::Unwatch`]: stop a watch.
    pub fn unwatch(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        watch_id: u64,
    ) -> Result<(), FrameTooLarge> {
        let root = internal::Unwatch::create(&mut self.fbb, &UnwatchArgs { watch_id });
        self.finish(out, Kind::Unwatch, request_id, root)
    }

    /// `entries` as a vector of `Entry` tables (the offsets gathered in a vector kept for
    /// reuse).
    fn entry_vector(
        &mut self,
        entries: &[EntryRef<'_>],
    ) -> WIPOffset<
        flatbuffers::Vector<'static, flatbuffers::ForwardsUOffset<internal::Entry<'static>>>,
    > {
        let mut offsets = std::mem::take(&mut self.entries);
        offsets.clear();
        for entry in entries {
            let value = Some(self.fbb.create_vector(entry.value));
            let key = Some(self.fbb.create_string(entry.key));
            let args = EntryArgs {
                key,
                value,
                version: entry.version,
            };
            offsets.push(internal::Entry::create(&mut self.fbb, &args));
        }
        let vector = self.fbb.create_vector(&offsets);
        self.entries = offsets;
        vector
    }

    /// [`Kind::Members`]: a page of at most `limit` presence members under `prefix`, after
    /// the key `after`; `limit` 0 asks for the count only.
    pub fn members(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(), FrameTooLarge> {
        let prefix = Some(self.fbb.create_string(prefix));
        let after = after.map(|a| self.fbb.create_string(a));
        let args = MembersArgs {
            prefix,
            after,
            limit,
        };
        let root = internal::Members::create(&mut self.fbb, &args);
        self.finish(out, Kind::Members, request_id, root)
    }

    /// [`Kind::MembersReply`]: members (key, meta) and the channel's count.
    pub fn members_reply(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        entries: &[EntryRef<'_>],
        total: u64,
        more: bool,
    ) -> Result<(), FrameTooLarge> {
        let entries = Some(self.entry_vector(entries));
        let args = MembersReplyArgs {
            entries,
            total,
            more,
        };
        let root = internal::MembersReply::create(&mut self.fbb, &args);
        self.finish(out, Kind::MembersReply, request_id, root)
    }

    /// [`Kind::PresenceSync`]: members the link's worker holds (key, meta) and the
    /// connection holding each; `last` on the last frame.
    pub fn presence_sync(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        entries: &[EntryRef<'_>],
        owners: &[&str],
        last: bool,
    ) -> Result<(), FrameTooLarge> {
        let owners: Vec<_> = owners.iter().map(|o| self.fbb.create_string(o)).collect();
        let owners = Some(self.fbb.create_vector(&owners));
        let entries = Some(self.entry_vector(entries));
        let args = PresenceSyncArgs {
            entries,
            owners,
            last,
        };
        let root = internal::PresenceSync::create(&mut self.fbb, &args);
        self.finish(out, Kind::PresenceSync, request_id, root)
    }

    /// [`Kind::Snapshot`]: one partition's entries for a watch, consistent with `position`;
    /// `more` on every frame but the last of a snapshot.
    #[allow(clippy::too_many_arguments)]
    pub fn snapshot(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        watch_id: u64,
        partition: u32,
        entries: &[EntryRef<'_>],
        position: Position,
        more: bool,
    ) -> Result<(), FrameTooLarge> {
        let entries = Some(self.entry_vector(entries));
        let args = SnapshotArgs {
            watch_id,
            partition,
            entries,
            position: Some(&position),
            more,
        };
        let root = internal::Snapshot::create(&mut self.fbb, &args);
        self.finish(out, Kind::Snapshot, request_id, root)
    }

    /// [`Kind::Changes`]: a batch of changes, in log order per partition.
    pub fn changes(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        changes: &[ChangeRef<'_>],
    ) -> Result<(), FrameTooLarge> {
        let mut offsets = std::mem::take(&mut self.changes);
        offsets.clear();
        for change in changes {
            let value = change.value.map(|v| self.fbb.create_vector(v));
            let key = Some(self.fbb.create_string(change.key));
            let watch_ids = Some(self.fbb.create_vector(change.watch_ids));
            let args = ChangeArgs {
                watch_ids,
                position: Some(&change.position),
                key,
                kind: change.kind,
                value,
                version: change.version,
            };
            offsets.push(internal::Change::create(&mut self.fbb, &args));
        }
        let changes = Some(self.fbb.create_vector(&offsets));
        self.changes = offsets;
        let root = internal::Changes::create(&mut self.fbb, &ChangesArgs { changes });
        self.finish(out, Kind::Changes, request_id, root)
    }

    /// [`Kind::Resumed`]: a watch with `from` continues in `partition` without a snapshot.
    pub fn resumed(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        watch_id: u64,
        partition: u32,
    ) -> Result<(), FrameTooLarge> {
        let root = internal::Resumed::create(
            &mut self.fbb,
            &ResumedArgs {
                watch_id,
                partition,
            },
        );
        self.finish(out, Kind::Resumed, request_id, root)
    }

    /// [`Kind::Reset`]: a watch cannot continue in `partition` (now at `epoch`).
    pub fn reset(
        &mut self,
        out: &mut Vec<u8>,
        request_id: u64,
        watch_id: u64,
        partition: u32,
        epoch: u64,
        reason: &str,
    ) -> Result<(), FrameTooLarge> {
        let reason = Some(self.fbb.create_string(reason));
        let args = ResetArgs {
            watch_id,
            partition,
            epoch,
            reason,
        };
        let root = internal::Reset::create(&mut self.fbb, &args);
        self.finish(out, Kind::Reset, request_id, root)
    }
}
