//! Flatbuffers encoding: [`Request`]s and [`Response`]s in, one finished flatbuffer appended
//! to a buffer out.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::client::{ChangeOp, Entry, Member, Request, Response, SubMode, Target};
use crate::generated::client as fb;

/// Encodes client messages with one reused `FlatBufferBuilder`.
pub struct FbEncoder {
    fbb: FlatBufferBuilder<'static>,
    entries: Vec<WIPOffset<fb::Entry<'static>>>,
}

impl std::fmt::Debug for FbEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbEncoder").finish_non_exhaustive()
    }
}

impl Default for FbEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FbEncoder {
    /// A new encoder.
    #[must_use]
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(256),
            entries: Vec::new(),
        }
    }

    /// Appends `request` as one `Request` flatbuffer.
    pub fn encode_request(&mut self, request: &Request<'_>, out: &mut Vec<u8>) {
        let fbb = &mut self.fbb;
        fbb.reset();
        let (op_type, op) = match request {
            Request::Sub {
                target,
                from,
                mode,
                durable,
                ..
            } => {
                let (key, prefix, presence) = match target {
                    Target::Key(key) => (Some(fbb.create_string(key)), None, None),
                    Target::Prefix(prefix) => (None, Some(fbb.create_string(prefix)), None),
                    Target::Presence(channel) => (None, None, Some(fbb.create_string(channel))),
                };
                let from = from.as_ref().map(|from| fbb.create_string(from));
                let mode = match mode {
                    SubMode::Stream => fb::SubMode::Stream,
                    SubMode::Latest => fb::SubMode::Latest,
                };
                let durable = durable.as_deref().map(|d| fbb.create_string(d));
                let args = fb::SubArgs {
                    key,
                    prefix,
                    from,
                    mode,
                    durable,
                    presence,
                };
                (fb::Op::Sub, fb::Sub::create(fbb, &args).as_union_value())
            }
            Request::Unsub { .. } => (
                fb::Op::Unsub,
                fb::Unsub::create(fbb, &fb::UnsubArgs {}).as_union_value(),
            ),
            Request::Get { key, .. } => {
                let key = Some(fbb.create_string(key));
                (
                    fb::Op::Get,
                    fb::Get::create(fbb, &fb::GetArgs { key }).as_union_value(),
                )
            }
            Request::Put { .. } | Request::Del { .. } | Request::Pub { .. } => {
                write_op(fbb, request)
            }
            Request::Auth { token, .. } => {
                let token = Some(fbb.create_string(token));
                (
                    fb::Op::Auth,
                    fb::Auth::create(fbb, &fb::AuthArgs { token }).as_union_value(),
                )
            }
            Request::Ack { token, .. } => {
                let token = Some(fbb.create_string(token));
                (
                    fb::Op::Ack,
                    fb::Ack::create(fbb, &fb::AckArgs { token }).as_union_value(),
                )
            }
            Request::Join { .. } | Request::Leave { .. } | Request::Presence { .. } => {
                presence_op(fbb, request)
            }
        };
        let args = fb::RequestArgs {
            id: Some(request.id()),
            op_type,
            op: Some(op),
        };
        let root = fb::Request::create(fbb, &args);
        fbb.finish_minimal(root);
        out.extend_from_slice(fbb.finished_data());
    }

    /// Appends `response` as one `Response` flatbuffer.
    pub fn encode_response(&mut self, response: &Response<'_>, out: &mut Vec<u8>) {
        self.encode_response_locating_id(response, out);
    }

    /// Appends `response` as one `Response` flatbuffer and returns where in `out` its id
    /// sits (8 bytes, little-endian; `None` for a response without an id). Every response
    /// that differs only in its id is this one with those 8 bytes replaced.
    pub fn encode_response_locating_id(
        &mut self,
        response: &Response<'_>,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        self.fbb.reset();
        let (body_type, body) = self.response_body(response);
        let fbb = &mut self.fbb;
        // `fb::Response::create`, field by field, noting where the id lands: a builder
        // writes back to front, so the id's distance from the buffer's end is the
        // builder's used space right after it is pushed, and stays so when finished.
        let start = fbb.start_table();
        let id_from_end = response.id().map(|id| {
            fbb.push_slot_always::<u64>(fb::Response::VT_ID, id);
            fbb.unfinished_data().len()
        });
        fbb.push_slot_always::<WIPOffset<_>>(fb::Response::VT_BODY, body);
        fbb.push_slot::<fb::Reply>(fb::Response::VT_BODY_TYPE, body_type, fb::Reply::NONE);
        let root: WIPOffset<fb::Response<'_>> = WIPOffset::new(fbb.end_table(start).value());
        fbb.finish_minimal(root);
        let data = fbb.finished_data();
        let at = id_from_end.and_then(|from_end| data.len().checked_sub(from_end));
        let base = out.len();
        out.extend_from_slice(data);
        at.map(|at| base + at)
    }

    /// A snapshot page's body (the entries' offsets gathered in a vector kept for
    /// reuse).
    fn snapshot_body(
        &mut self,
        entries: &[Entry<'_>],
        token: Option<&str>,
        more: bool,
    ) -> (fb::Reply, WIPOffset<UnionWIPOffset>) {
        let fbb = &mut self.fbb;
        let mut offsets = std::mem::take(&mut self.entries);
        offsets.clear();
        for entry in entries {
            let value = Some(fbb.create_vector(&entry.value));
            let key = Some(fbb.create_string(&entry.key));
            let args = fb::EntryArgs {
                key,
                value,
                version: entry.version,
            };
            offsets.push(fb::Entry::create(fbb, &args));
        }
        let entries = Some(fbb.create_vector(&offsets));
        self.entries = offsets;
        let token = token.map(|token| fbb.create_string(token));
        let args = fb::SnapshotArgs {
            entries,
            token,
            more,
        };
        (
            fb::Reply::Snapshot,
            fb::Snapshot::create(fbb, &args).as_union_value(),
        )
    }

    fn response_body(&mut self, response: &Response<'_>) -> (fb::Reply, WIPOffset<UnionWIPOffset>) {
        let fbb = &mut self.fbb;
        match response {
            Response::Snapshot {
                entries,
                token,
                more,
                ..
            } => self.snapshot_body(entries, token.as_deref(), *more),
            Response::Change { key, op, token, .. } => change_body(fbb, key, op, token),
            Response::Resumed { token, .. } => {
                let token = Some(fbb.create_string(token));
                let args = fb::ResumedArgs { token };
                (
                    fb::Reply::Resumed,
                    fb::Resumed::create(fbb, &args).as_union_value(),
                )
            }
            Response::Reset { reason, .. } => {
                let reason = Some(fbb.create_string(reason));
                let args = fb::ResetArgs { reason };
                (
                    fb::Reply::Reset,
                    fb::Reset::create(fbb, &args).as_union_value(),
                )
            }
            Response::Value {
                key,
                value,
                version,
                ..
            } => {
                let value = value.as_ref().map(|value| fbb.create_vector(value));
                let key = Some(fbb.create_string(key));
                let version = if value.is_some() { *version } else { 0 };
                let args = fb::ValueArgs {
                    key,
                    value,
                    version,
                };
                (
                    fb::Reply::Value,
                    fb::Value::create(fbb, &args).as_union_value(),
                )
            }
            Response::Ok { version, token, .. } => {
                let token = token.as_ref().map(|token| fbb.create_string(token));
                let args = fb::OkArgs {
                    version: *version,
                    token,
                };
                (fb::Reply::Ok, fb::Ok::create(fbb, &args).as_union_value())
            }
            Response::Members { .. } | Response::Presence { .. } => presence_body(fbb, response),
            Response::Error {
                code,
                message,
                version,
                ..
            } => {
                let code = Some(fbb.create_string(code.as_str()));
                let message = Some(fbb.create_string(message));
                let args = fb::ErrorArgs {
                    code,
                    message,
                    version: *version,
                };
                (
                    fb::Reply::Error,
                    fb::Error::create(fbb, &args).as_union_value(),
                )
            }
        }
    }
}

/// A `members` page's or `presence` events' body (anything else: never reached, an
/// empty `Ok`).
fn presence_body<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    response: &Response<'_>,
) -> (fb::Reply, WIPOffset<UnionWIPOffset>) {
    match response {
        Response::Members {
            members,
            total,
            cursor,
            token,
            more,
            ..
        } => {
            let members = members_vector(fbb, members);
            let cursor = cursor.as_deref().map(|c| fbb.create_string(c));
            let token = token.as_deref().map(|t| fbb.create_string(t));
            let args = fb::MembersArgs {
                members: Some(members),
                total: *total,
                cursor,
                token,
                more: *more,
            };
            (
                fb::Reply::Members,
                fb::Members::create(fbb, &args).as_union_value(),
            )
        }
        Response::Presence { events, token, .. } => {
            let mut offsets = Vec::with_capacity(events.len());
            for e in events {
                let meta = e.joined.as_deref().map(|m| fbb.create_vector(m));
                let user = e.user.as_deref().map(|u| fbb.create_string(u));
                let conn = Some(fbb.create_string(&e.conn));
                let args = fb::PresenceEventArgs {
                    joined: e.joined.is_some(),
                    user,
                    conn,
                    meta,
                };
                offsets.push(fb::PresenceEvent::create(fbb, &args));
            }
            let events = Some(fbb.create_vector(&offsets));
            let token = Some(fbb.create_string(token));
            let args = fb::PresenceEventsArgs { events, token };
            (
                fb::Reply::PresenceEvents,
                fb::PresenceEvents::create(fbb, &args).as_union_value(),
            )
        }
        _ => {
            let args = fb::OkArgs::default();
            (fb::Reply::Ok, fb::Ok::create(fbb, &args).as_union_value())
        }
    }
}

/// A page of members as a vector of `Member` tables.
fn members_vector<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    members: &[Member<'_>],
) -> WIPOffset<flatbuffers::Vector<'f, flatbuffers::ForwardsUOffset<fb::Member<'f>>>> {
    let mut groups = Vec::with_capacity(members.len());
    let mut metas = Vec::new();
    for m in members {
        metas.clear();
        for x in &m.metas {
            let meta = Some(fbb.create_vector(&x.meta));
            let conn = Some(fbb.create_string(&x.conn));
            metas.push(fb::MemberMeta::create(
                fbb,
                &fb::MemberMetaArgs { conn, meta },
            ));
        }
        let metas = Some(fbb.create_vector(&metas));
        let user = m.user.as_deref().map(|u| fbb.create_string(u));
        groups.push(fb::Member::create(fbb, &fb::MemberArgs { user, metas }));
    }
    fbb.create_vector(&groups)
}

/// A `join`, `leave` or `presence` as its union member (anything else: `Unsub`'s empty
/// table, never reached).
fn presence_op(
    fbb: &mut FlatBufferBuilder<'static>,
    request: &Request<'_>,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match request {
        Request::Join {
            channel,
            meta,
            device,
            ..
        } => {
            let meta = Some(fbb.create_vector(meta));
            let channel = Some(fbb.create_string(channel));
            let device = device.as_deref().map(|d| fbb.create_string(d));
            let args = fb::JoinArgs {
                channel,
                meta,
                device,
            };
            (fb::Op::Join, fb::Join::create(fbb, &args).as_union_value())
        }
        Request::Leave { channel, .. } => {
            let channel = Some(fbb.create_string(channel));
            let args = fb::LeaveArgs { channel };
            (
                fb::Op::Leave,
                fb::Leave::create(fbb, &args).as_union_value(),
            )
        }
        Request::Presence {
            channel,
            cursor,
            count_only,
            ..
        } => {
            let channel = Some(fbb.create_string(channel));
            let cursor = cursor.as_deref().map(|c| fbb.create_string(c));
            let args = fb::PresenceArgs {
                channel,
                cursor,
                count_only: *count_only,
            };
            (
                fb::Op::Presence,
                fb::Presence::create(fbb, &args).as_union_value(),
            )
        }
        _ => (
            fb::Op::Unsub,
            fb::Unsub::create(fbb, &fb::UnsubArgs {}).as_union_value(),
        ),
    }
}

/// A change's body.
fn change_body<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    key: &str,
    op: &ChangeOp<'_>,
    token: &str,
) -> (fb::Reply, WIPOffset<UnionWIPOffset>) {
    let (kind, value, version) = match op {
        ChangeOp::Put { value, version } => (fb::ChangeKind::Put, Some(value), *version),
        ChangeOp::Delete { version } => (fb::ChangeKind::Delete, None, *version),
        ChangeOp::Publish { value } => (fb::ChangeKind::Publish, Some(value), 0),
    };
    let value = value.map(|value| fbb.create_vector(value));
    let key = Some(fbb.create_string(key));
    let token = Some(fbb.create_string(token));
    let args = fb::ChangeArgs {
        key,
        kind,
        value,
        version,
        token,
    };
    (
        fb::Reply::Change,
        fb::Change::create(fbb, &args).as_union_value(),
    )
}

/// Appends `request` as one `Request` flatbuffer (with a fresh builder; see [`FbEncoder`]).
pub fn encode_request(request: &Request<'_>, out: &mut Vec<u8>) {
    FbEncoder::new().encode_request(request, out);
}

/// Appends `response` as one `Response` flatbuffer (with a fresh builder; see [`FbEncoder`]).
pub fn encode_response(response: &Response<'_>, out: &mut Vec<u8>) {
    FbEncoder::new().encode_response(response, out);
}

/// A `put`, `del` or `pub` as its union member (anything else: `Unsub`'s empty table,
/// never reached).
fn write_op(
    fbb: &mut FlatBufferBuilder<'static>,
    request: &Request<'_>,
) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
    match request {
        Request::Put {
            key,
            value,
            if_version,
            msg_id,
            ..
        } => {
            let value = Some(fbb.create_vector(value));
            let key = Some(fbb.create_string(key));
            let msg_id = msg_id.as_deref().map(|m| fbb.create_string(m));
            let args = fb::PutArgs {
                key,
                value,
                if_version: *if_version,
                msg_id,
            };
            (fb::Op::Put, fb::Put::create(fbb, &args).as_union_value())
        }
        Request::Del {
            key,
            if_version,
            msg_id,
            ..
        } => {
            let key = Some(fbb.create_string(key));
            let msg_id = msg_id.as_deref().map(|m| fbb.create_string(m));
            let args = fb::DelArgs {
                key,
                if_version: *if_version,
                msg_id,
            };
            (fb::Op::Del, fb::Del::create(fbb, &args).as_union_value())
        }
        Request::Pub {
            key,
            value,
            msg_id,
            echo,
            ..
        } => {
            let value = Some(fbb.create_vector(value));
            let key = Some(fbb.create_string(key));
            let msg_id = msg_id.as_deref().map(|m| fbb.create_string(m));
            let args = fb::PubArgs {
                key,
                value,
                msg_id,
                echo: *echo,
            };
            (fb::Op::Pub, fb::Pub::create(fbb, &args).as_union_value())
        }
        _ => (
            fb::Op::Unsub,
            fb::Unsub::create(fbb, &fb::UnsubArgs {}).as_union_value(),
        ),
    }
}
