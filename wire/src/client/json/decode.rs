//! JSON decoding: one complete text message in, a [`Request`] (the edge's input) or a
//! [`Response`] (test clients, load generators) out, borrowing from the message.
//!
//! serde cannot combine an internally tagged enum with borrowed `RawValue`s, so a message is
//! first read into a flat struct of optional fields, then checked and converted per `op`.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::client::error::shorten;
use crate::client::validate;
use crate::client::{
    ChangeOp, ClientError, ClientErrorKind, Entry, ErrorCode, Member, MemberMeta, PresenceEvent,
    Request, Response, SubMode, Target,
};

/// A string field, borrowed from the input unless it contains escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deserializes a present field into `Some`, so that `"value":null` is the JSON value
/// `null` rather than an absent value (absent fields get `None` from `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(borrow)]
    op: Option<Str<'a>>,
    id: Option<u64>,
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(borrow)]
    prefix: Option<Str<'a>>,
    #[serde(borrow)]
    from: Option<Str<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    if_version: Option<u64>,
    #[serde(borrow)]
    token: Option<Str<'a>>,
    #[serde(borrow)]
    msg_id: Option<Str<'a>>,
    #[serde(borrow)]
    mode: Option<Str<'a>>,
    #[serde(borrow)]
    durable: Option<Str<'a>>,
    echo: Option<bool>,
    #[serde(borrow)]
    presence: Option<Str<'a>>,
    #[serde(borrow)]
    channel: Option<Str<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    cursor: Option<Str<'a>>,
    count_only: Option<bool>,
    #[serde(borrow)]
    device: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireEntry<'a> {
    #[serde(borrow)]
    key: Str<'a>,
    #[serde(borrow)]
    value: &'a RawValue,
    version: u64,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(borrow)]
    op: Option<Str<'a>>,
    id: Option<u64>,
    /// A compact change's subscription id (`ringline.v2.json`); its other fields are
    /// the short names below.
    c: Option<u64>,
    #[serde(borrow)]
    entries: Option<Vec<WireEntry<'a>>>,
    #[serde(borrow, alias = "t")]
    token: Option<Str<'a>>,
    more: Option<bool>,
    #[serde(borrow, alias = "k")]
    key: Option<Str<'a>>,
    #[serde(default, borrow, deserialize_with = "present", alias = "v")]
    value: Option<&'a RawValue>,
    #[serde(alias = "d")]
    deleted: Option<bool>,
    #[serde(rename = "pub", alias = "p")]
    publish: Option<bool>,
    #[serde(alias = "n")]
    version: Option<u64>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
    #[serde(borrow)]
    code: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow)]
    members: Option<Vec<WireMember<'a>>>,
    total: Option<u64>,
    #[serde(borrow)]
    cursor: Option<Str<'a>>,
    #[serde(borrow)]
    events: Option<Vec<WireEvent<'a>>>,
}

#[derive(Deserialize)]
struct WireMember<'a> {
    #[serde(borrow)]
    user: Option<Str<'a>>,
    #[serde(borrow)]
    metas: Vec<WireMeta<'a>>,
}

#[derive(Deserialize)]
struct WireMeta<'a> {
    #[serde(borrow)]
    conn: Str<'a>,
    #[serde(borrow)]
    meta: &'a RawValue,
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow)]
    event: Str<'a>,
    #[serde(borrow)]
    user: Option<Str<'a>>,
    #[serde(borrow)]
    conn: Str<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

/// Just the id, for errors about messages that are valid JSON but not a valid message.
#[derive(Deserialize)]
struct WireId {
    id: Option<u64>,
}

/// Parses a JSON object (never an array, which serde would accept for a struct).
fn parse<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, ClientError> {
    let first = text
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(ClientErrorKind::Malformed("expected a JSON object".into()).into());
    }
    serde_json::from_slice(text).map_err(|err| {
        let id = serde_json::from_slice::<WireId>(text)
            .ok()
            .and_then(|w| w.id);
        ClientError::new(id, ClientErrorKind::Malformed(shorten(&err.to_string())))
    })
}

fn cow(s: Option<Str<'_>>) -> Option<Cow<'_, str>> {
    s.map(|Str(s)| s)
}

fn raw(value: &RawValue) -> Cow<'_, [u8]> {
    Cow::Borrowed(value.get().as_bytes())
}

/// Decodes one client → edge message (a whole text frame).
pub fn decode_request(text: &[u8]) -> Result<Request<'_>, ClientError> {
    let wire: WireRequest<'_> = parse(text)?;
    let id = wire.id;
    request(wire).map_err(|kind| ClientError::new(id, kind))
}

fn request(wire: WireRequest<'_>) -> Result<Request<'_>, ClientErrorKind> {
    let op = cow(wire.op).ok_or(ClientErrorKind::Missing("op"))?;
    let id = validate::id(wire.id)?;
    let value = wire.value.map(raw);
    let (key, prefix) = (cow(wire.key), cow(wire.prefix));
    Ok(match op.as_ref() {
        "sub" => {
            let target = match (key, prefix, cow(wire.presence)) {
                (Some(key), None, None) => Target::Key(validate::key("key", Some(key))?),
                (None, Some(prefix), None) => {
                    Target::Prefix(validate::key("prefix", Some(prefix))?)
                }
                (None, None, Some(channel)) => Target::Presence(validate::channel(Some(channel))?),
                _ => return Err(ClientErrorKind::SubTarget),
            };
            Request::Sub {
                id,
                target,
                from: validate::token(cow(wire.from))?,
                mode: match cow(wire.mode) {
                    None => SubMode::Stream,
                    Some(m) => SubMode::from_wire(&m).ok_or_else(|| {
                        ClientErrorKind::Malformed(format!("unknown mode {:?}", shorten(&m)))
                    })?,
                },
                durable: validate::durable(cow(wire.durable))?,
            }
        }
        "unsub" => Request::Unsub { id },
        "get" => Request::Get {
            id,
            key: validate::key("key", key)?,
        },
        "put" => Request::Put {
            id,
            key: validate::key("key", key)?,
            value: validate::value(value)?,
            if_version: wire.if_version,
            msg_id: validate::msg_id(cow(wire.msg_id))?,
        },
        "del" => Request::Del {
            id,
            key: validate::key("key", key)?,
            if_version: wire.if_version,
            msg_id: validate::msg_id(cow(wire.msg_id))?,
        },
        "pub" => Request::Pub {
            id,
            key: validate::key("key", key)?,
            value: validate::value(value)?,
            msg_id: validate::msg_id(cow(wire.msg_id))?,
            echo: wire.echo.unwrap_or(true),
        },
        "auth" => Request::Auth {
            id,
            token: validate::jwt(cow(wire.token))?,
        },
        "ack" => Request::Ack {
            id,
            token: validate::ack_token(cow(wire.token))?,
        },
        "join" => Request::Join {
            id,
            channel: validate::channel(cow(wire.channel))?,
            meta: validate::meta(wire.meta.map(raw))?,
            device: validate::device(cow(wire.device))?,
        },
        "leave" => Request::Leave {
            id,
            channel: validate::channel(cow(wire.channel))?,
        },
        "presence" => Request::Presence {
            id,
            channel: validate::channel(cow(wire.channel))?,
            cursor: validate::token(cow(wire.cursor))?,
            count_only: wire.count_only.unwrap_or(false),
        },
        other => return Err(ClientErrorKind::UnknownOp(shorten(other))),
    })
}

/// A response value: the raw JSON text, or the bytes of a `{"b64":"..."}` wrapper exactly
/// as [`super::encode_response`] writes it.
fn unwrap_value(value: &RawValue) -> Cow<'_, [u8]> {
    let text = value.get();
    let b64 = text
        .strip_prefix("{\"b64\":\"")
        .and_then(|rest| rest.strip_suffix("\"}"));
    match b64.and_then(|b64| STANDARD.decode(b64).ok()) {
        Some(bytes) => Cow::Owned(bytes),
        None => raw(value),
    }
}

/// Decodes one edge → client message (a whole text frame). Values sent as `{"b64":"..."}`
/// come back as the original bytes.
pub fn decode_response(text: &[u8]) -> Result<Response<'_>, ClientError> {
    let wire: WireResponse<'_> = parse(text)?;
    let id = wire.id;
    response(wire).map_err(|kind| ClientError::new(id, kind))
}

/// What a `change` message did: a put, a deletion (`deleted`) or a publish (`pub`).
fn change_op(
    value: Option<Cow<'_, [u8]>>,
    version: Option<u64>,
    deleted: bool,
    publish: bool,
) -> Result<ChangeOp<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    Ok(match (deleted, publish) {
        (false, false) => ChangeOp::Put {
            value: value.ok_or(Missing("value"))?,
            version: version.ok_or(Missing("version"))?,
        },
        (true, false) => ChangeOp::Delete {
            version: version.ok_or(Missing("version"))?,
        },
        (false, true) => ChangeOp::Publish {
            value: value.ok_or(Missing("value"))?,
        },
        (true, true) => {
            return Err(ClientErrorKind::Malformed(
                "change is both deleted and pub".into(),
            ));
        }
    })
}

/// One presence event: `joined` (with its meta) or `left`.
fn event(e: WireEvent<'_>) -> Result<PresenceEvent<'_>, ClientErrorKind> {
    let joined = match e.event.0.as_ref() {
        "joined" => Some(e.meta.map(raw).ok_or(ClientErrorKind::Missing("meta"))?),
        "left" => None,
        other => {
            return Err(ClientErrorKind::Malformed(format!(
                "unknown presence event {:?}",
                shorten(other)
            )));
        }
    };
    Ok(PresenceEvent {
        joined,
        user: cow(e.user),
        conn: e.conn.0,
    })
}

/// A change message, in either form (the compact one's fields arrive under the same
/// names through their aliases).
fn change(id: u64, wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let key = cow(wire.key).ok_or(Missing("key"))?;
    let op = change_op(
        wire.value.map(unwrap_value),
        wire.version,
        wire.deleted.unwrap_or(false),
        wire.publish.unwrap_or(false),
    )?;
    Ok(Response::Change {
        id,
        key,
        op,
        token: cow(wire.token).ok_or(Missing("token"))?,
    })
}

fn response(mut wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    if wire.op.is_none()
        && let Some(id) = wire.c
    {
        // A compact change (`ringline.v2.json`): `{"c":<id>,"k":..,"v":..,"n":..,"t":..}`.
        return change(validate::id(Some(id))?, wire);
    }
    if wire.op.as_ref().is_some_and(|op| op.0 == "change") {
        return change(validate::id(wire.id)?, wire);
    }
    let op = cow(wire.op.take()).ok_or(Missing("op"))?;
    if op == "error" {
        return error(wire);
    }
    let id = validate::id(wire.id)?;
    Ok(match op.as_ref() {
        "snapshot" => snapshot(id, wire)?,
        "resumed" => Response::Resumed {
            id,
            token: cow(wire.token).ok_or(Missing("token"))?,
        },
        "reset" => Response::Reset {
            id,
            reason: cow(wire.reason).ok_or(Missing("reason"))?,
        },
        "value" => value(id, wire)?,
        "ok" => Response::Ok {
            id,
            version: wire.version,
            token: cow(wire.token),
        },
        "members" => members(id, wire)?,
        "presence" => Response::Presence {
            id,
            events: wire
                .events
                .ok_or(Missing("events"))?
                .into_iter()
                .map(event)
                .collect::<Result<_, _>>()?,
            token: cow(wire.token).ok_or(Missing("token"))?,
        },
        other => return Err(ClientErrorKind::UnknownOp(shorten(other))),
    })
}

fn error(wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let code = cow(wire.code).ok_or(Missing("code"))?;
    let code =
        ErrorCode::from_wire(&code).ok_or_else(|| ClientErrorKind::UnknownCode(shorten(&code)))?;
    let message = cow(wire.message).ok_or(Missing("message"))?;
    Ok(Response::Error {
        id: wire.id,
        code,
        message,
        version: wire.version,
    })
}

fn snapshot(id: u64, wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    let entries = wire.entries.ok_or(ClientErrorKind::Missing("entries"))?;
    Ok(Response::Snapshot {
        id,
        entries: entries
            .into_iter()
            .map(|e| Entry {
                key: e.key.0,
                value: unwrap_value(e.value),
                version: e.version,
            })
            .collect(),
        token: cow(wire.token),
        more: wire.more.unwrap_or(false),
    })
}

/// A `value` answer: with its version, the value; without, the key is absent (its
/// value missing or `null`).
fn value(id: u64, wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let key = cow(wire.key).ok_or(Missing("key"))?;
    match wire.version {
        Some(version) => {
            let value = wire.value.map(unwrap_value).ok_or(Missing("value"))?;
            Ok(Response::Value {
                id,
                key,
                value: Some(value),
                version,
            })
        }
        None if wire.value.is_none_or(|v| v.get() == "null") => Ok(Response::Value {
            id,
            key,
            value: None,
            version: 0,
        }),
        None => Err(Missing("version")),
    }
}

fn members(id: u64, wire: WireResponse<'_>) -> Result<Response<'_>, ClientErrorKind> {
    let members = wire.members.ok_or(ClientErrorKind::Missing("members"))?;
    Ok(Response::Members {
        id,
        members: members
            .into_iter()
            .map(|m| Member {
                user: cow(m.user),
                metas: m
                    .metas
                    .into_iter()
                    .map(|x| MemberMeta {
                        conn: x.conn.0,
                        meta: raw(x.meta),
                    })
                    .collect(),
            })
            .collect(),
        total: wire.total,
        cursor: cow(wire.cursor),
        token: cow(wire.token),
        more: wire.more.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_request(text: &str) -> ClientError {
        let err = decode_request(text.as_bytes()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest, "{text}: {err}");
        err
    }

    #[test]
    fn requests_decode() {
        let cases: [(&str, Request<'_>); 12] = [
            (
                r#"{"op":"sub","id":1,"key":"room/{42}/title"}"#,
                Request::Sub {
                    id: 1,
                    target: Target::Key("room/{42}/title".into()),
                    from: None,
                    mode: SubMode::Stream,
                    durable: None,
                },
            ),
            (
                r#"{"op":"sub","id":2,"prefix":"room/{42}/"}"#,
                Request::Sub {
                    id: 2,
                    target: Target::Prefix("room/{42}/".into()),
                    from: None,
                    mode: SubMode::Stream,
                    durable: None,
                },
            ),
            (
                r#"{"op":"sub","id":3,"key":"k","from":"tok","mode":"latest","durable":"d"}"#,
                Request::Sub {
                    id: 3,
                    target: Target::Key("k".into()),
                    from: Some("tok".into()),
                    mode: SubMode::Latest,
                    durable: Some("d".into()),
                },
            ),
            (r#"{"op":"unsub","id":1}"#, Request::Unsub { id: 1 }),
            (
                r#"{"op":"get","id":4,"key":"k"}"#,
                Request::Get {
                    id: 4,
                    key: "k".into(),
                },
            ),
            (
                r#" { "op" : "put", "id": 5, "key":"k", "value": {"a": [1, null]} , "if_version":7 } "#,
                Request::Put {
                    id: 5,
                    key: "k".into(),
                    value: Cow::Borrowed(br#"{"a": [1, null]}"#),
                    if_version: Some(7),
                    msg_id: None,
                },
            ),
            (
                r#"{"op":"put","id":5,"key":"k","value":null,"msg_id":"a1"}"#,
                Request::Put {
                    id: 5,
                    key: "k".into(),
                    value: Cow::Borrowed(b"null"),
                    if_version: None,
                    msg_id: Some("a1".into()),
                },
            ),
            (
                r#"{"op":"del","id":6,"key":"k","msg_id":"d\u00e9"}"#,
                Request::Del {
                    id: 6,
                    key: "k".into(),
                    if_version: None,
                    msg_id: Some("d\u{e9}".into()),
                },
            ),
            (
                r#"{"op":"pub","id":7,"key":"room/{42}/chat","value":"hi","extra":1,"echo":false}"#,
                Request::Pub {
                    id: 7,
                    key: "room/{42}/chat".into(),
                    value: Cow::Borrowed(b"\"hi\""),
                    msg_id: None,
                    echo: false,
                },
            ),
            (
                r#"{"op":"get","id":4,"key":"k","msg_id":""}"#,
                Request::Get {
                    id: 4,
                    key: "k".into(),
                },
            ),
            (
                r#"{"op":"ack","id":3,"token":"tok"}"#,
                Request::Ack {
                    id: 3,
                    token: "tok".into(),
                },
            ),
            (
                r#"{"op":"auth","id":8,"token":"h.c.s"}"#,
                Request::Auth {
                    id: 8,
                    token: "h.c.s".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode_request(text.as_bytes()).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn strings_and_values_borrow_from_the_input() {
        let text = br#"{"op":"put","id":1,"key":"plain","value":[1]}"#;
        let Request::Put { key, value, .. } = decode_request(text).unwrap() else {
            panic!()
        };
        assert!(matches!(key, Cow::Borrowed("plain")));
        assert!(matches!(value, Cow::Borrowed(b"[1]")));
        // Escapes need an owned copy.
        let text = br#"{"op":"get","id":1,"key":"a\nb"}"#;
        let Request::Get { key, .. } = decode_request(text).unwrap() else {
            panic!()
        };
        assert_eq!(key, "a\nb");
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        for text in [
            "",
            "   ",
            "nul",
            "[\"sub\",1,\"k\"]",
            "\"sub\"",
            "{",
            "{}",
            r#"{"op":"get","id":1,"key":"k"} x"#,
            r#"{"op":1,"id":1}"#,
            r#"{"op":"get","id":-1,"key":"k"}"#,
            r#"{"op":"get","id":1.5,"key":"k"}"#,
            r#"{"op":"get","id":"1","key":"k"}"#,
            r#"{"op":"get","key":"k"}"#,
            r#"{"op":"get","id":1}"#,
            r#"{"op":"get","id":1,"key":""}"#,
            r#"{"op":"get","id":1,"key":7}"#,
            r#"{"op":"get","id":1,"key":"k","key":"j"}"#,
            r#"{"op":"sub","id":1}"#,
            r#"{"op":"sub","id":1,"key":"k","prefix":"p"}"#,
            r#"{"op":"sub","id":1,"prefix":""}"#,
            r#"{"op":"sub","id":1,"key":"k","mode":"newest"}"#,
            r#"{"op":"sub","id":1,"key":"k","mode":1}"#,
            r#"{"op":"sub","id":1,"key":"k","durable":""}"#,
            r#"{"op":"ack","id":1}"#,
            r#"{"op":"pub","id":1,"key":"k","value":1,"echo":"no"}"#,
            r#"{"op":"ack","id":1,"token":5}"#,
            r#"{"op":"put","id":1,"key":"k"}"#,
            r#"{"op":"pub","id":1,"key":"k"}"#,
            r#"{"op":"put","id":1,"key":"k","value":1,"if_version":-3}"#,
            r#"{"op":"put","id":1,"key":"k","value":1,"msg_id":""}"#,
            r#"{"op":"del","id":1,"key":"k","msg_id":7}"#,
            r#"{"op":"nope","id":1}"#,
            r#"{"op":"auth","id":1}"#,
            r#"{"op":"auth","id":1,"token":""}"#,
            r#"{"op":"auth","id":1,"token":7}"#,
            r#"{"op":"auth","token":"h.c.s"}"#,
            r#"{"id":1}"#,
        ] {
            bad_request(text);
        }
        assert!(decode_request(b"{\"op\":\"get\",\"id\":1,\"key\":\"\xff\"}").is_err());
    }

    #[test]
    fn an_overlong_msg_id_is_too_large() {
        let text = format!(
            r#"{{"op":"pub","id":3,"key":"k","value":1,"msg_id":"{}"}}"#,
            "m".repeat(crate::client::MAX_MSG_ID_LEN + 1)
        );
        let err = decode_request(text.as_bytes()).unwrap_err();
        assert_eq!((err.id, err.code()), (Some(3), ErrorCode::TooLarge));
    }

    #[test]
    fn errors_keep_the_id_when_there_is_one() {
        assert_eq!(bad_request(r#"{"op":"get","id":9}"#).id, Some(9));
        assert_eq!(bad_request(r#"{"op":"get","id":9,"key":7}"#).id, Some(9));
        assert_eq!(bad_request(r#"{"op":"get","key":7}"#).id, None);
        let err = bad_request(r#"{"op":"frobnicate","id":2}"#);
        assert_eq!(err.kind, ClientErrorKind::UnknownOp("frobnicate".into()));
    }

    #[test]
    fn long_keys_are_too_large_and_long_echoes_are_cut() {
        let key = "k".repeat(validate::MAX_KEY_LEN + 1);
        let text = format!(r#"{{"op":"get","id":1,"key":"{key}"}}"#);
        let err = decode_request(text.as_bytes()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooLarge);
        let op = "x".repeat(10_000);
        let err = bad_request(&format!(r#"{{"op":"{op}","id":1}}"#));
        assert!(err.message().len() < 200);
        let text = format!(
            r#"{{"op":"sub","id":1,"key":"k","from":"{}"}}"#,
            "t".repeat(validate::MAX_TOKEN_LEN + 1)
        );
        bad_request(&text);
    }

    #[test]
    fn responses_unwrap_base64_values() {
        let text = br#"{"op":"value","id":4,"key":"k","value":{"b64":"aGk="},"version":2}"#;
        assert_eq!(
            decode_response(text).unwrap(),
            Response::Value {
                id: 4,
                key: "k".into(),
                value: Some(Cow::Borrowed(b"hi")),
                version: 2
            }
        );
        // Anything but our exact wrapper stays JSON.
        let text = br#"{"op":"value","id":4,"key":"k","value":{"b64": "aGk="},"version":2}"#;
        let Response::Value {
            value: Some(value), ..
        } = decode_response(text).unwrap()
        else {
            panic!()
        };
        assert_eq!(&*value, br#"{"b64": "aGk="}"#);
    }

    #[test]
    fn value_null_with_and_without_version() {
        let found = br#"{"op":"value","id":4,"key":"k","value":null,"version":17}"#;
        assert!(matches!(
            decode_response(found).unwrap(),
            Response::Value {
                value: Some(Cow::Borrowed(b"null")),
                version: 17,
                ..
            }
        ));
        let absent = br#"{"op":"value","id":4,"key":"k","value":null}"#;
        assert!(matches!(
            decode_response(absent).unwrap(),
            Response::Value { value: None, .. }
        ));
        assert!(decode_response(br#"{"op":"value","id":4,"key":"k","value":1}"#).is_err());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for text in [
            "{}",
            r#"{"op":"change","id":1,"key":"k","token":"t"}"#,
            r#"{"op":"change","id":1,"key":"k","deleted":true,"pub":true,"version":1,"token":"t"}"#,
            r#"{"op":"snapshot","id":1}"#,
            r#"{"op":"snapshot","id":1,"entries":[{"key":"k","version":1}]}"#,
            r#"{"op":"error","id":1,"code":"weird","message":"m"}"#,
            r#"{"op":"error","id":1,"message":"m"}"#,
            r#"{"op":"resumed","id":1}"#,
            r#"{"op":"ok"}"#,
        ] {
            assert!(decode_response(text.as_bytes()).is_err(), "{text}");
        }
    }
}
