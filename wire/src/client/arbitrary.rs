//! proptest strategies producing random [`Request`]s and [`Response`]s that both client
//! forms can carry exactly, for the round-trip and equivalence tests.

use std::borrow::Cow;

use proptest::prelude::*;

use super::json::is_json;
use super::{
    ChangeOp, Entry, ErrorCode, Member, MemberMeta, PresenceEvent, Request, Response, SubMode,
    Target,
};

/// Keys, prefixes, tokens and messages: any characters, controls and quotes included.
fn text() -> impl Strategy<Value = Cow<'static, str>> {
    proptest::collection::vec(any::<char>(), 1..24)
        .prop_map(|c| Cow::Owned(c.into_iter().collect()))
}

/// An optional idempotency id (within the 128-byte limit: at most 24 chars of 4 bytes).
fn msg_id() -> impl Strategy<Value = Option<Cow<'static, str>>> {
    proptest::option::of(text())
}

/// A compact JSON value (as a JSON client would send it).
fn json_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    value.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default())
}

/// Bytes that are not JSON (sent to JSON clients as `{"b64":...}`).
fn binary_value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..48).prop_filter("not JSON", |b| !is_json(b))
}

/// A request value: JSON (the JSON form can only carry JSON).
fn request_value() -> impl Strategy<Value = Cow<'static, [u8]>> {
    json_value().prop_map(Cow::Owned)
}

/// A stored value: JSON or arbitrary bytes.
fn stored_value() -> impl Strategy<Value = Cow<'static, [u8]>> {
    prop_oneof![json_value(), binary_value()].prop_map(Cow::Owned)
}

/// A channel that can hold presence.
fn channel() -> impl Strategy<Value = Cow<'static, str>> {
    text().prop_filter("a presence channel", |c| {
        crate::presence::check_channel(c).is_ok()
    })
}

/// A member's meta: JSON within the limit.
fn meta() -> impl Strategy<Value = Cow<'static, [u8]>> {
    json_value()
        .prop_filter("within the meta limit", |m| {
            m.len() <= crate::presence::MAX_META_LEN
        })
        .prop_map(Cow::Owned)
}

/// `join`, `leave` and `presence`.
fn presence_request() -> impl Strategy<Value = Request<'static>> {
    prop_oneof![
        (
            any::<u64>(),
            channel(),
            meta(),
            proptest::option::of(text())
        )
            .prop_map(|(id, channel, meta, device)| Request::Join {
                id,
                channel,
                meta,
                device
            }),
        (any::<u64>(), channel()).prop_map(|(id, channel)| Request::Leave { id, channel }),
        (
            any::<u64>(),
            channel(),
            proptest::option::of(text()),
            any::<bool>()
        )
            .prop_map(|(id, channel, cursor, count_only)| Request::Presence {
                id,
                channel,
                cursor,
                count_only
            }),
    ]
}

/// A `members` page or `presence` events.
fn presence_response() -> impl Strategy<Value = Response<'static>> {
    let user = || proptest::option::of(text());
    let member_meta = (text(), meta()).prop_map(|(conn, meta)| MemberMeta { conn, meta });
    let member = (user(), proptest::collection::vec(member_meta, 0..3))
        .prop_map(|(user, metas)| Member { user, metas });
    let event = (proptest::option::of(meta()), user(), text())
        .prop_map(|(joined, user, conn)| PresenceEvent { joined, user, conn });
    prop_oneof![
        (
            any::<u64>(),
            proptest::collection::vec(member, 0..3),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            any::<bool>()
        )
            .prop_map(
                |(id, members, total, cursor, token, more)| Response::Members {
                    id,
                    members,
                    total,
                    cursor,
                    token,
                    more
                }
            ),
        (any::<u64>(), proptest::collection::vec(event, 0..4), text())
            .prop_map(|(id, events, token)| Response::Presence { id, events, token }),
    ]
}

pub(super) fn request() -> impl Strategy<Value = Request<'static>> {
    let target = prop_oneof![
        text().prop_map(Target::Key),
        text().prop_map(Target::Prefix),
        channel().prop_map(Target::Presence),
    ];
    prop_oneof![
        (
            any::<u64>(),
            target,
            proptest::option::of(text()),
            prop_oneof![Just(SubMode::Stream), Just(SubMode::Latest)],
            proptest::option::of(text())
        )
            .prop_map(|(id, target, from, mode, durable)| Request::Sub {
                id,
                target,
                from,
                mode,
                durable
            }),
        any::<u64>().prop_map(|id| Request::Unsub { id }),
        (any::<u64>(), text()).prop_map(|(id, key)| Request::Get { id, key }),
        (
            any::<u64>(),
            text(),
            request_value(),
            proptest::option::of(any::<u64>()),
            msg_id()
        )
            .prop_map(|(id, key, value, if_version, msg_id)| Request::Put {
                id,
                key,
                value,
                if_version,
                msg_id
            }),
        (
            any::<u64>(),
            text(),
            proptest::option::of(any::<u64>()),
            msg_id()
        )
            .prop_map(|(id, key, if_version, msg_id)| Request::Del {
                id,
                key,
                if_version,
                msg_id
            }),
        (
            any::<u64>(),
            text(),
            request_value(),
            msg_id(),
            any::<bool>()
        )
            .prop_map(|(id, key, value, msg_id, echo)| Request::Pub {
                id,
                key,
                value,
                msg_id,
                echo
            }),
        (any::<u64>(), text()).prop_map(|(id, token)| Request::Auth { id, token }),
        (any::<u64>(), text()).prop_map(|(id, token)| Request::Ack { id, token }),
        presence_request(),
    ]
}

pub(super) fn response() -> impl Strategy<Value = Response<'static>> {
    let entry = (text(), stored_value(), any::<u64>()).prop_map(|(key, value, version)| Entry {
        key,
        value,
        version,
    });
    let change = prop_oneof![
        (stored_value(), any::<u64>())
            .prop_map(|(value, version)| ChangeOp::Put { value, version }),
        any::<u64>().prop_map(|version| ChangeOp::Delete { version }),
        stored_value().prop_map(|value| ChangeOp::Publish { value }),
    ];
    let code = proptest::sample::select(ErrorCode::ALL.to_vec());
    let opt_u64 = || proptest::option::of(any::<u64>());
    prop_oneof![
        (
            any::<u64>(),
            proptest::collection::vec(entry, 0..4),
            proptest::option::of(text()),
            any::<bool>()
        )
            .prop_map(|(id, entries, token, more)| Response::Snapshot {
                id,
                entries,
                token,
                more
            }),
        (any::<u64>(), text(), change, text()).prop_map(|(id, key, op, token)| Response::Change {
            id,
            key,
            op,
            token
        }),
        (any::<u64>(), text()).prop_map(|(id, token)| Response::Resumed { id, token }),
        (any::<u64>(), text()).prop_map(|(id, reason)| Response::Reset { id, reason }),
        (
            any::<u64>(),
            text(),
            proptest::option::of((stored_value(), any::<u64>()))
        )
            .prop_map(|(id, key, found)| match found {
                Some((value, version)) => Response::Value {
                    id,
                    key,
                    value: Some(value),
                    version
                },
                None => Response::Value {
                    id,
                    key,
                    value: None,
                    version: 0
                },
            }),
        (any::<u64>(), opt_u64(), proptest::option::of(text()))
            .prop_map(|(id, version, token)| Response::Ok { id, version, token }),
        (opt_u64(), code, text(), opt_u64()).prop_map(|(id, code, message, version)| {
            Response::Error {
                id,
                code,
                message,
                version,
            }
        }),
        presence_response(),
    ]
}
