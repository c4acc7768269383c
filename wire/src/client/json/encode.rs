//! JSON encoding: [`Response`]s (the edge's output) and [`Request`]s (test clients, load
//! generators) in, one JSON object appended to a buffer out.

use super::write::{head, name, opt_str_field, str_field, string, uint_field, value_field};
use crate::client::{ChangeOp, Member, PresenceEvent, Request, Response, SubMode, Target};

/// Appends `response` as one JSON object.
pub fn encode_response(response: &Response<'_>, out: &mut Vec<u8>) {
    match response {
        Response::Snapshot {
            id,
            entries,
            token,
            more,
        } => {
            head(out, "snapshot", *id);
            name(out, "entries");
            out.push(b'[');
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"key\":");
                string(out, &entry.key);
                value_field(out, "value", &entry.value);
                uint_field(out, "version", entry.version);
                out.push(b'}');
            }
            out.push(b']');
            if let Some(token) = token {
                str_field(out, "token", token);
            }
            if *more {
                out.extend_from_slice(b",\"more\":true");
            }
        }
        Response::Change { id, key, op, token } => {
            head(out, "change", *id);
            change_tail(out, key, op, token);
            return;
        }
        Response::Resumed { id, token } => {
            head(out, "resumed", *id);
            str_field(out, "token", token);
        }
        Response::Reset { id, reason } => {
            head(out, "reset", *id);
            str_field(out, "reason", reason);
        }
        Response::Value {
            id,
            key,
            value,
            version,
        } => {
            head(out, "value", *id);
            str_field(out, "key", key);
            match value {
                Some(bytes) => {
                    value_field(out, "value", bytes);
                    uint_field(out, "version", *version);
                }
                None => out.extend_from_slice(b",\"value\":null"),
            }
        }
        Response::Ok { id, version, token } => {
            head(out, "ok", *id);
            if let Some(version) = version {
                uint_field(out, "version", *version);
            }
            if let Some(token) = token {
                str_field(out, "token", token);
            }
        }
        Response::Members { .. } | Response::Presence { .. } => presence_response(out, response),
        Response::Error {
            id,
            code,
            message,
            version,
        } => {
            match id {
                Some(id) => head(out, "error", *id),
                None => out.extend_from_slice(b"{\"op\":\"error\""),
            }
            str_field(out, "code", code.as_str());
            str_field(out, "message", message);
            if let Some(version) = version {
                uint_field(out, "version", *version);
            }
        }
    }
    out.push(b'}');
}

/// A `members` page or `presence` events, the object left open (anything else: never
/// reached, nothing written).
fn presence_response(out: &mut Vec<u8>, response: &Response<'_>) {
    match response {
        Response::Members {
            id,
            members,
            total,
            cursor,
            token,
            more,
        } => {
            head(out, "members", *id);
            members_field(out, members);
            if let Some(total) = total {
                uint_field(out, "total", *total);
            }
            opt_str_field(out, "cursor", cursor.as_deref());
            opt_str_field(out, "token", token.as_deref());
            if *more {
                out.extend_from_slice(b",\"more\":true");
            }
        }
        Response::Presence { id, events, token } => {
            head(out, "presence", *id);
            events_field(out, events);
            str_field(out, "token", token);
        }
        _ => {}
    }
}

/// `,"user":"<user>"` or `,"user":null`.
fn user_field(out: &mut Vec<u8>, user: Option<&str>) {
    match user {
        Some(user) => str_field(out, "user", user),
        None => out.extend_from_slice(b",\"user\":null"),
    }
}

/// `,"members":[{"user":..,"metas":[{"conn":..,"meta":..},..]},..]`.
fn members_field(out: &mut Vec<u8>, members: &[Member<'_>]) {
    name(out, "members");
    out.push(b'[');
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"user\":");
        match &m.user {
            Some(user) => string(out, user),
            None => out.extend_from_slice(b"null"),
        }
        name(out, "metas");
        out.push(b'[');
        for (j, x) in m.metas.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"conn\":");
            string(out, &x.conn);
            value_field(out, "meta", &x.meta);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
}

/// `,"events":[{"event":"joined","user":..,"conn":..,"meta":..},{"event":"left",..},..]`.
fn events_field(out: &mut Vec<u8>, events: &[PresenceEvent<'_>]) {
    name(out, "events");
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let what: &[u8] = if e.joined.is_some() {
            b"joined"
        } else {
            b"left"
        };
        out.extend_from_slice(b"{\"event\":\"");
        out.extend_from_slice(what);
        out.push(b'"');
        user_field(out, e.user.as_deref());
        str_field(out, "conn", &e.conn);
        if let Some(meta) = &e.joined {
            value_field(out, "meta", meta);
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// The field names of a change message, in one of the JSON forms.
#[derive(Debug, Clone, Copy)]
struct ChangeNames {
    key: &'static str,
    value: &'static str,
    version: &'static str,
    deleted: &'static str,
    publish: &'static str,
    token: &'static str,
}

/// `ringline.v1.json`.
const NAMES_V1: ChangeNames = ChangeNames {
    key: "key",
    value: "value",
    version: "version",
    deleted: "deleted",
    publish: "pub",
    token: "token",
};

/// `ringline.v2.json`: every other message as in v1.
const NAMES_COMPACT: ChangeNames = ChangeNames {
    key: "k",
    value: "v",
    version: "n",
    deleted: "d",
    publish: "p",
    token: "t",
};

/// Everything of a `change` message after its id, closing brace included.
fn change_tail(out: &mut Vec<u8>, key: &str, op: &ChangeOp<'_>, token: &str) {
    change_tail_named(out, NAMES_V1, key, op, token);
}

/// [`change_tail`] with the field names `n`.
fn change_tail_named(out: &mut Vec<u8>, n: ChangeNames, key: &str, op: &ChangeOp<'_>, token: &str) {
    str_field(out, n.key, key);
    match op {
        ChangeOp::Put {
            value: bytes,
            version,
        } => {
            value_field(out, n.value, bytes);
            uint_field(out, n.version, *version);
        }
        ChangeOp::Delete { version } => {
            name(out, n.deleted);
            out.extend_from_slice(b"true");
            uint_field(out, n.version, *version);
        }
        ChangeOp::Publish { value: bytes } => {
            value_field(out, n.value, bytes);
            name(out, n.publish);
            out.extend_from_slice(b"true");
        }
    }
    str_field(out, n.token, token);
    out.push(b'}');
}

/// Appends `response` as one JSON object in the compact form (`ringline.v2.json`): a
/// change is `{"c":<id>,"k":<key>,"v":<value>,"n":<version>,"t":<token>}` (a delete
/// has `"d":true` for the value, a publish `"p":true` for the version); every other
/// message as [`encode_response`] writes it.
pub fn encode_response_compact(response: &Response<'_>, out: &mut Vec<u8>) {
    match response {
        Response::Change { id, key, op, token } => {
            PreparedChange::write_head_compact(*id, out);
            change_tail_named(out, NAMES_COMPACT, key, op, token);
        }
        other => encode_response(other, out),
    }
}

/// A `change` message encoded once for fan-out: everything but the subscription id, which
/// [`PreparedChange::write`] adds per subscriber. The output is byte-identical to
/// [`encode_response`] of the same [`Response::Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedChange {
    tail: Vec<u8>,
}

impl PreparedChange {
    /// Encodes the parts shared by every subscriber (the value is checked for JSON once).
    #[must_use]
    pub fn new(key: &str, op: &ChangeOp<'_>, token: &str) -> Self {
        let mut tail = Vec::with_capacity(64 + key.len() + token.len());
        change_tail(&mut tail, key, op, token);
        Self { tail }
    }

    /// Appends the complete message for subscription `id`.
    pub fn write(&self, id: u64, out: &mut Vec<u8>) {
        out.reserve(self.tail.len() + 40);
        Self::write_head(id, out);
        out.extend_from_slice(&self.tail);
    }

    /// Appends the per-subscriber start of the message (`{"op":"change","id":N`); the
    /// message is that followed by [`PreparedChange::tail`], which may be sent by reference.
    pub fn write_head(id: u64, out: &mut Vec<u8>) {
        head(out, "change", id);
    }

    /// [`PreparedChange::new`] in the compact form (`ringline.v2.json`): its message is
    /// [`PreparedChange::write_head_compact`] then this tail, byte-identical to
    /// [`encode_response_compact`] of the same change.
    #[must_use]
    pub fn new_compact(key: &str, op: &ChangeOp<'_>, token: &str) -> Self {
        let mut tail = Vec::with_capacity(32 + key.len() + token.len());
        change_tail_named(&mut tail, NAMES_COMPACT, key, op, token);
        Self { tail }
    }

    /// The compact form's per-subscriber start of the message: `{"c":N`.
    pub fn write_head_compact(id: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"c\":");
        super::write::uint(out, id);
    }

    /// The shared part of the message, after the id.
    #[must_use]
    pub fn into_tail(self) -> Vec<u8> {
        self.tail
    }
}

/// Appends `request` as one JSON object. A value that is not JSON is sent as
/// `{"b64":"..."}`, which the edge stores as that JSON text (the JSON form can only put JSON).
pub fn encode_request(request: &Request<'_>, out: &mut Vec<u8>) {
    match request {
        Request::Sub {
            id,
            target,
            from,
            mode,
            durable,
        } => {
            head(out, "sub", *id);
            match target {
                Target::Key(key) => str_field(out, "key", key),
                Target::Prefix(prefix) => str_field(out, "prefix", prefix),
                Target::Presence(channel) => str_field(out, "presence", channel),
            }
            opt_str_field(out, "from", from.as_deref());
            if *mode != SubMode::Stream {
                str_field(out, "mode", mode.as_str());
            }
            opt_str_field(out, "durable", durable.as_deref());
        }
        Request::Unsub { id } => head(out, "unsub", *id),
        Request::Get { id, key } => {
            head(out, "get", *id);
            str_field(out, "key", key);
        }
        Request::Put {
            id,
            key,
            value,
            if_version,
            msg_id,
        } => {
            head(out, "put", *id);
            str_field(out, "key", key);
            value_field(out, "value", value);
            if let Some(version) = if_version {
                uint_field(out, "if_version", *version);
            }
            opt_str_field(out, "msg_id", msg_id.as_deref());
        }
        Request::Del {
            id,
            key,
            if_version,
            msg_id,
        } => {
            head(out, "del", *id);
            str_field(out, "key", key);
            if let Some(version) = if_version {
                uint_field(out, "if_version", *version);
            }
            opt_str_field(out, "msg_id", msg_id.as_deref());
        }
        Request::Pub {
            id,
            key,
            value,
            msg_id,
            echo,
        } => {
            head(out, "pub", *id);
            str_field(out, "key", key);
            value_field(out, "value", value);
            opt_str_field(out, "msg_id", msg_id.as_deref());
            if !*echo {
                name(out, "echo");
                out.extend_from_slice(b"false");
            }
        }
        Request::Auth { id, token } => {
            head(out, "auth", *id);
            str_field(out, "token", token);
        }
        Request::Ack { id, token } => {
            head(out, "ack", *id);
            str_field(out, "token", token);
        }
        Request::Join { .. } | Request::Leave { .. } | Request::Presence { .. } => {
            presence_request(out, request);
        }
    }
    out.push(b'}');
}

/// A `join`, `leave` or `presence` request, the object left open (anything else: never
/// reached, nothing written).
fn presence_request(out: &mut Vec<u8>, request: &Request<'_>) {
    match request {
        Request::Join {
            id,
            channel,
            meta,
            device,
        } => {
            head(out, "join", *id);
            str_field(out, "channel", channel);
            value_field(out, "meta", meta);
            opt_str_field(out, "device", device.as_deref());
        }
        Request::Leave { id, channel } => {
            head(out, "leave", *id);
            str_field(out, "channel", channel);
        }
        Request::Presence {
            id,
            channel,
            cursor,
            count_only,
        } => {
            head(out, "presence", *id);
            str_field(out, "channel", channel);
            opt_str_field(out, "cursor", cursor.as_deref());
            if *count_only {
                out.extend_from_slice(b",\"count_only\":true");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::client::{Entry, ErrorCode};

    fn response(r: &Response<'_>) -> String {
        let mut out = Vec::new();
        encode_response(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn request(r: &Request<'_>) -> String {
        let mut out = Vec::new();
        encode_request(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn v(bytes: &'static [u8]) -> Cow<'static, [u8]> {
        Cow::Borrowed(bytes)
    }

    #[test]
    fn response_shapes() {
        let cases: [(Response<'_>, &str); 14] = [
            (
                Response::Snapshot {
                    id: 1,
                    entries: vec![Entry {
                        key: "k".into(),
                        value: v(b"{\"a\":1}"),
                        version: 17,
                    }],
                    token: Some("t".into()),
                    more: false,
                },
                r#"{"op":"snapshot","id":1,"entries":[{"key":"k","value":{"a":1},"version":17}],"token":"t"}"#,
            ),
            (
                Response::Snapshot {
                    id: 1,
                    entries: vec![
                        Entry {
                            key: "a".into(),
                            value: v(b"1"),
                            version: 2,
                        },
                        Entry {
                            key: "b".into(),
                            value: v(b"\x00"),
                            version: 3,
                        },
                    ],
                    token: None,
                    more: true,
                },
                r#"{"op":"snapshot","id":1,"entries":[{"key":"a","value":1,"version":2},{"key":"b","value":{"b64":"AA=="},"version":3}],"more":true}"#,
            ),
            (
                Response::Snapshot {
                    id: 9,
                    entries: vec![],
                    token: Some("t".into()),
                    more: false,
                },
                r#"{"op":"snapshot","id":9,"entries":[],"token":"t"}"#,
            ),
            (
                Response::Change {
                    id: 1,
                    key: "k".into(),
                    op: ChangeOp::Put {
                        value: v(b"\"hi\""),
                        version: 18,
                    },
                    token: "t".into(),
                },
                r#"{"op":"change","id":1,"key":"k","value":"hi","version":18,"token":"t"}"#,
            ),
            (
                Response::Change {
                    id: 1,
                    key: "k".into(),
                    op: ChangeOp::Delete { version: 19 },
                    token: "t".into(),
                },
                r#"{"op":"change","id":1,"key":"k","deleted":true,"version":19,"token":"t"}"#,
            ),
            (
                Response::Change {
                    id: 1,
                    key: "room/{42}/chat".into(),
                    op: ChangeOp::Publish { value: v(b"[1,2]") },
                    token: "t".into(),
                },
                r#"{"op":"change","id":1,"key":"room/{42}/chat","value":[1,2],"pub":true,"token":"t"}"#,
            ),
            (
                Response::Resumed {
                    id: 3,
                    token: "t".into(),
                },
                r#"{"op":"resumed","id":3,"token":"t"}"#,
            ),
            (
                Response::Reset {
                    id: 3,
                    reason: "log \"truncated\"".into(),
                },
                r#"{"op":"reset","id":3,"reason":"log \"truncated\""}"#,
            ),
            (
                Response::Value {
                    id: 4,
                    key: "k".into(),
                    value: Some(v(b"null")),
                    version: 17,
                },
                r#"{"op":"value","id":4,"key":"k","value":null,"version":17}"#,
            ),
            (
                Response::Value {
                    id: 4,
                    key: "k".into(),
                    value: None,
                    version: 0,
                },
                r#"{"op":"value","id":4,"key":"k","value":null}"#,
            ),
            (
                Response::Ok {
                    id: 5,
                    version: Some(18),
                    token: Some("t".into()),
                },
                r#"{"op":"ok","id":5,"version":18,"token":"t"}"#,
            ),
            (
                Response::Ok {
                    id: 8,
                    version: None,
                    token: None,
                },
                r#"{"op":"ok","id":8}"#,
            ),
            (
                Response::Error {
                    id: Some(5),
                    code: ErrorCode::Conflict,
                    message: "version mismatch".into(),
                    version: Some(17),
                },
                r#"{"op":"error","id":5,"code":"conflict","message":"version mismatch","version":17}"#,
            ),
            (
                Response::Error {
                    id: None,
                    code: ErrorCode::BadRequest,
                    message: "malformed".into(),
                    version: None,
                },
                r#"{"op":"error","code":"bad_request","message":"malformed"}"#,
            ),
        ];
        for (resp, want) in cases {
            assert_eq!(response(&resp), want);
        }
    }

    #[test]
    fn request_shapes() {
        let cases: [(Request<'_>, &str); 8] = [
            (
                Request::Sub {
                    id: 1,
                    target: Target::Key("room/{42}/title".into()),
                    from: None,
                    mode: SubMode::Stream,
                    durable: None,
                },
                r#"{"op":"sub","id":1,"key":"room/{42}/title"}"#,
            ),
            (
                Request::Sub {
                    id: 2,
                    target: Target::Prefix("room/{42}/".into()),
                    from: None,
                    mode: SubMode::Stream,
                    durable: None,
                },
                r#"{"op":"sub","id":2,"prefix":"room/{42}/"}"#,
            ),
            (
                Request::Sub {
                    id: 3,
                    target: Target::Key("k".into()),
                    from: Some("t".into()),
                    mode: SubMode::Latest,
                    durable: None,
                },
                r#"{"op":"sub","id":3,"key":"k","from":"t","mode":"latest"}"#,
            ),
            (Request::Unsub { id: 1 }, r#"{"op":"unsub","id":1}"#),
            (
                Request::Get {
                    id: 4,
                    key: "k".into(),
                },
                r#"{"op":"get","id":4,"key":"k"}"#,
            ),
            (
                Request::Put {
                    id: 5,
                    key: "k".into(),
                    value: v(b"{\"x\":[true]}"),
                    if_version: Some(7),
                    msg_id: Some("m1".into()),
                },
                r#"{"op":"put","id":5,"key":"k","value":{"x":[true]},"if_version":7,"msg_id":"m1"}"#,
            ),
            (
                Request::Del {
                    id: 6,
                    key: "k".into(),
                    if_version: None,
                    msg_id: None,
                },
                r#"{"op":"del","id":6,"key":"k"}"#,
            ),
            (
                Request::Pub {
                    id: 7,
                    key: "room/{42}/chat".into(),
                    value: v(b"\"hello\""),
                    msg_id: None,
                    echo: true,
                },
                r#"{"op":"pub","id":7,"key":"room/{42}/chat","value":"hello"}"#,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(request(&req), want);
        }
    }

    #[test]
    fn keys_are_escaped() {
        let req = Request::Get {
            id: 1,
            key: "a\"b\n".into(),
        };
        assert_eq!(request(&req), r#"{"op":"get","id":1,"key":"a\"b\n"}"#);
    }

    #[test]
    fn prepared_change_matches_encode_response() {
        let ops = [
            ChangeOp::Put {
                value: v(b"{\"a\":1}"),
                version: 3,
            },
            ChangeOp::Delete { version: 4 },
            ChangeOp::Publish { value: v(b"\xff") },
        ];
        for op in ops {
            let prepared = PreparedChange::new("k\u{1}", &op, "tok");
            for id in [0, 1, u64::MAX] {
                let mut out = Vec::new();
                prepared.write(id, &mut out);
                let resp = Response::Change {
                    id,
                    key: "k\u{1}".into(),
                    op: op.clone(),
                    token: "tok".into(),
                };
                assert_eq!(String::from_utf8(out).unwrap(), response(&resp));
            }
        }
    }

    #[test]
    fn compact_changes_are_short_and_decode_as_the_same_change() {
        let ops = [
            (
                ChangeOp::Put {
                    value: v(b"{\"a\":1}"),
                    version: 3,
                },
                r#"{"c":7,"k":"k\u0001","v":{"a":1},"n":3,"t":"tok"}"#,
            ),
            (
                ChangeOp::Delete { version: 4 },
                r#"{"c":7,"k":"k\u0001","d":true,"n":4,"t":"tok"}"#,
            ),
            (
                ChangeOp::Publish { value: v(b"\xff") },
                r#"{"c":7,"k":"k\u0001","v":{"b64":"/w=="},"p":true,"t":"tok"}"#,
            ),
        ];
        for (op, want) in ops {
            let resp = Response::Change {
                id: 7,
                key: "k\u{1}".into(),
                op: op.clone(),
                token: "tok".into(),
            };
            let mut out = Vec::new();
            encode_response_compact(&resp, &mut out);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), want);
            assert!(out.len() < response(&resp).len());
            assert_eq!(super::super::decode_response(&out).unwrap(), resp);
            // Encoded once for fan-out: the same bytes.
            let prepared = PreparedChange::new_compact("k\u{1}", &op, "tok");
            let mut once = Vec::new();
            PreparedChange::write_head_compact(7, &mut once);
            once.extend_from_slice(&prepared.into_tail());
            assert_eq!(once, out);
        }
        // Every other message is written as in v1.
        let ok = Response::Ok {
            id: 1,
            version: Some(2),
            token: None,
        };
        let mut out = Vec::new();
        encode_response_compact(&ok, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), response(&ok));
    }
}
