//! Flatbuffers decoding: one complete binary message in, a verified [`Request`] (the edge's
//! input) or [`Response`] (test clients, load generators) out, borrowing from the message.

use std::borrow::Cow;

use flatbuffers::{Follow, Verifiable, VerifierOptions};

use crate::client::error::shorten;
use crate::client::validate;
use crate::client::{
    ChangeOp, ClientError, ClientErrorKind, Entry, ErrorCode, Member, MemberMeta, PresenceEvent,
    Request, Response, SubMode, Target,
};
use crate::generated::client as fb;

/// Verifies `buf` as a `T` root within `max_tables` tables.
fn verified<'a, T>(buf: &'a [u8], max_tables: usize) -> Result<T::Inner, ClientError>
where
    T: 'a + Follow<'a> + Verifiable,
{
    let opts = VerifierOptions {
        max_depth: 4,
        max_tables,
        max_apparent_size: buf.len().saturating_mul(8).max(1024),
        ..VerifierOptions::default()
    };
    flatbuffers::root_with_opts::<T>(&opts, buf)
        .map_err(|err| ClientErrorKind::Malformed(shorten(&err.to_string())).into())
}

fn bytes(v: Option<flatbuffers::Vector<'_, u8>>) -> Option<Cow<'_, [u8]>> {
    v.map(|v| Cow::Borrowed(v.bytes()))
}

fn key<'a>(field: &'static str, key: Option<&'a str>) -> Result<Cow<'a, str>, ClientErrorKind> {
    validate::key(field, key.map(Cow::Borrowed))
}

fn required<'a>(s: Option<&'a str>, field: &'static str) -> Result<Cow<'a, str>, ClientErrorKind> {
    s.map(Cow::Borrowed).ok_or(ClientErrorKind::Missing(field))
}

/// Decodes one client → edge message (a whole binary frame).
pub fn decode_request(buf: &[u8]) -> Result<Request<'_>, ClientError> {
    // A request is two tables (the root and its op).
    let root = verified::<fb::Request>(buf, 2)?;
    let id = root.id();
    request(root).map_err(|kind| ClientError::new(id, kind))
}

fn request(root: fb::Request<'_>) -> Result<Request<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let id = validate::id(root.id())?;
    Ok(match root.op_type() {
        fb::Op::Sub => {
            let sub = root.op_as_sub().ok_or(Missing("op"))?;
            let target = match (sub.key(), sub.prefix(), sub.presence()) {
                (Some(k), None, None) => Target::Key(key("key", Some(k))?),
                (None, Some(p), None) => Target::Prefix(key("prefix", Some(p))?),
                (None, None, Some(c)) => Target::Presence(validate::channel(Some(c.into()))?),
                _ => return Err(ClientErrorKind::SubTarget),
            };
            Request::Sub {
                id,
                target,
                from: validate::token(sub.from().map(Cow::Borrowed))?,
                mode: match sub.mode() {
                    fb::SubMode::Stream => SubMode::Stream,
                    fb::SubMode::Latest => SubMode::Latest,
                    other => {
                        return Err(ClientErrorKind::Malformed(format!(
                            "unknown mode {}",
                            other.0
                        )));
                    }
                },
                durable: validate::durable(sub.durable().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Unsub => Request::Unsub { id },
        fb::Op::Get => Request::Get {
            id,
            key: key("key", root.op_as_get().ok_or(Missing("op"))?.key())?,
        },
        fb::Op::Put => {
            let put = root.op_as_put().ok_or(Missing("op"))?;
            Request::Put {
                id,
                key: key("key", put.key())?,
                value: validate::value(bytes(put.value()))?,
                if_version: put.if_version(),
                msg_id: validate::msg_id(put.msg_id().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Del => {
            let del = root.op_as_del().ok_or(Missing("op"))?;
            Request::Del {
                id,
                key: key("key", del.key())?,
                if_version: del.if_version(),
                msg_id: validate::msg_id(del.msg_id().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Pub => {
            let publish = root.op_as_pub().ok_or(Missing("op"))?;
            Request::Pub {
                id,
                key: key("key", publish.key())?,
                value: validate::value(bytes(publish.value()))?,
                msg_id: validate::msg_id(publish.msg_id().map(Cow::Borrowed))?,
                echo: publish.echo(),
            }
        }
        fb::Op::Auth => {
            let auth = root.op_as_auth().ok_or(Missing("op"))?;
            Request::Auth {
                id,
                token: validate::jwt(auth.token().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Ack => {
            let ack = root.op_as_ack().ok_or(Missing("op"))?;
            Request::Ack {
                id,
                token: validate::ack_token(ack.token().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Join | fb::Op::Leave | fb::Op::Presence => presence_request(id, root)?,
        fb::Op::NONE => return Err(Missing("op")),
        other => return Err(ClientErrorKind::UnknownOp(other.0.to_string())),
    })
}

/// A `join`, `leave` or `presence` request (`root`'s op is one of them).
fn presence_request(id: u64, root: fb::Request<'_>) -> Result<Request<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    Ok(match root.op_type() {
        fb::Op::Join => {
            let join = root.op_as_join().ok_or(Missing("op"))?;
            Request::Join {
                id,
                channel: validate::channel(join.channel().map(Cow::Borrowed))?,
                meta: validate::meta(bytes(join.meta()))?,
                device: validate::device(join.device().map(Cow::Borrowed))?,
            }
        }
        fb::Op::Leave => {
            let leave = root.op_as_leave().ok_or(Missing("op"))?;
            Request::Leave {
                id,
                channel: validate::channel(leave.channel().map(Cow::Borrowed))?,
            }
        }
        _ => {
            let p = root.op_as_presence().ok_or(Missing("op"))?;
            Request::Presence {
                id,
                channel: validate::channel(p.channel().map(Cow::Borrowed))?,
                cursor: validate::token(p.cursor().map(Cow::Borrowed))?,
                count_only: p.count_only(),
            }
        }
    })
}

/// Decodes one edge → client message (a whole binary frame).
pub fn decode_response(buf: &[u8]) -> Result<Response<'_>, ClientError> {
    let root = verified::<fb::Response>(buf, 1 << 20)?;
    let id = root.id();
    response(root).map_err(|kind| ClientError::new(id, kind))
}

fn response(root: fb::Response<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    if root.body_type() == fb::Reply::Error {
        return error(root);
    }
    let id = validate::id(root.id())?;
    Ok(match root.body_type() {
        fb::Reply::Snapshot => snapshot(id, root.body_as_snapshot().ok_or(Missing("body"))?)?,
        fb::Reply::Change => change(id, root.body_as_change().ok_or(Missing("body"))?)?,
        fb::Reply::Resumed => {
            let resumed = root.body_as_resumed().ok_or(Missing("body"))?;
            Response::Resumed {
                id,
                token: required(resumed.token(), "token")?,
            }
        }
        fb::Reply::Reset => {
            let reset = root.body_as_reset().ok_or(Missing("body"))?;
            Response::Reset {
                id,
                reason: required(reset.reason(), "reason")?,
            }
        }
        fb::Reply::Value => {
            let value = root.body_as_value().ok_or(Missing("body"))?;
            let key = required(value.key(), "key")?;
            let bytes = bytes(value.value());
            // A missing key has no version (as in the JSON form): whatever the buffer
            // says, `version` is 0 when there is no value.
            let version = if bytes.is_some() { value.version() } else { 0 };
            Response::Value {
                id,
                key,
                value: bytes,
                version,
            }
        }
        fb::Reply::Ok => {
            let ok = root.body_as_ok().ok_or(Missing("body"))?;
            Response::Ok {
                id,
                version: ok.version(),
                token: ok.token().map(Cow::Borrowed),
            }
        }
        fb::Reply::Members => members(id, root.body_as_members().ok_or(Missing("body"))?)?,
        fb::Reply::PresenceEvents => {
            let p = root.body_as_presence_events().ok_or(Missing("body"))?;
            Response::Presence {
                id,
                events: p
                    .events()
                    .ok_or(Missing("events"))?
                    .iter()
                    .map(|e| {
                        Ok(PresenceEvent {
                            joined: match e.joined() {
                                true => Some(bytes(e.meta()).ok_or(Missing("meta"))?),
                                false => None,
                            },
                            user: e.user().map(Cow::Borrowed),
                            conn: required(e.conn(), "conn")?,
                        })
                    })
                    .collect::<Result<_, ClientErrorKind>>()?,
                token: required(p.token(), "token")?,
            }
        }
        fb::Reply::NONE => return Err(Missing("body")),
        other => return Err(ClientErrorKind::UnknownOp(other.0.to_string())),
    })
}

/// An `error` response (its id may be absent).
fn error(root: fb::Response<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let error = root.body_as_error().ok_or(Missing("body"))?;
    let code = error.code().ok_or(Missing("code"))?;
    let code =
        ErrorCode::from_wire(code).ok_or_else(|| ClientErrorKind::UnknownCode(shorten(code)))?;
    let message = Cow::Borrowed(error.message().ok_or(Missing("message"))?);
    Ok(Response::Error {
        id: root.id(),
        code,
        message,
        version: error.version(),
    })
}

/// A `snapshot` page of subscription `id`.
fn snapshot(id: u64, snapshot: fb::Snapshot<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let entries = snapshot
        .entries()
        .ok_or(Missing("entries"))?
        .iter()
        .map(|e| {
            Ok(Entry {
                key: required(e.key(), "key")?,
                value: bytes(e.value()).ok_or(Missing("value"))?,
                version: e.version(),
            })
        })
        .collect::<Result<_, ClientErrorKind>>()?;
    Ok(Response::Snapshot {
        id,
        entries,
        token: snapshot.token().map(Cow::Borrowed),
        more: snapshot.more(),
    })
}

/// A page of members.
fn members(id: u64, m: fb::Members<'_>) -> Result<Response<'_>, ClientErrorKind> {
    use ClientErrorKind::Missing;
    let members = m
        .members()
        .ok_or(Missing("members"))?
        .iter()
        .map(|m| {
            let metas = m.metas().ok_or(Missing("metas"))?;
            Ok(Member {
                user: m.user().map(Cow::Borrowed),
                metas: metas
                    .iter()
                    .map(|x| {
                        Ok(MemberMeta {
                            conn: required(x.conn(), "conn")?,
                            meta: bytes(x.meta()).ok_or(Missing("meta"))?,
                        })
                    })
                    .collect::<Result<_, ClientErrorKind>>()?,
            })
        })
        .collect::<Result<_, ClientErrorKind>>()?;
    Ok(Response::Members {
        id,
        members,
        total: m.total(),
        cursor: m.cursor().map(Cow::Borrowed),
        token: m.token().map(Cow::Borrowed),
        more: m.more(),
    })
}

/// A `change` of subscription `id`.
fn change(id: u64, change: fb::Change<'_>) -> Result<Response<'_>, ClientErrorKind> {
    let value = || bytes(change.value()).ok_or(ClientErrorKind::Missing("value"));
    let op = match change.kind() {
        fb::ChangeKind::Put => ChangeOp::Put {
            value: value()?,
            version: change.version(),
        },
        fb::ChangeKind::Delete => ChangeOp::Delete {
            version: change.version(),
        },
        fb::ChangeKind::Publish => ChangeOp::Publish { value: value()? },
        other => {
            let message = format!("unknown change kind {}", other.0);
            return Err(ClientErrorKind::Malformed(message));
        }
    };
    Ok(Response::Change {
        id,
        key: required(change.key(), "key")?,
        op,
        token: required(change.token(), "token")?,
    })
}

#[cfg(test)]
mod tests {
    use flatbuffers::FlatBufferBuilder;

    use super::*;
    use crate::client::fb::{encode_request, encode_response};

    fn encoded_request(r: &Request<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(r, &mut out);
        out
    }

    #[test]
    fn requests_round_trip_borrowed() {
        let req = Request::Put {
            id: 5,
            key: "k".into(),
            value: Cow::Borrowed(b"\x00\xff"),
            if_version: Some(0),
            msg_id: Some("m".into()),
        };
        let buf = encoded_request(&req);
        let got = decode_request(&buf).unwrap();
        assert_eq!(got, req);
        let Request::Put {
            key, value, msg_id, ..
        } = got
        else {
            panic!()
        };
        assert!(matches!((key, value), (Cow::Borrowed(_), Cow::Borrowed(_))));
        assert!(matches!(msg_id, Some(Cow::Borrowed("m"))));
    }

    #[test]
    fn an_unknown_subscription_mode_is_a_bad_request() {
        let mut fbb = FlatBufferBuilder::new();
        let key = Some(fbb.create_string("k"));
        let args = fb::SubArgs {
            key,
            prefix: None,
            from: None,
            mode: fb::SubMode(9),
            durable: None,
            presence: None,
        };
        let op = Some(fb::Sub::create(&mut fbb, &args).as_union_value());
        let args = fb::RequestArgs {
            id: Some(3),
            op_type: fb::Op::Sub,
            op,
        };
        let root = fb::Request::create(&mut fbb, &args);
        fbb.finish(root, None);
        let err = decode_request(fbb.finished_data()).unwrap_err();
        assert_eq!((err.id, err.code()), (Some(3), ErrorCode::BadRequest));
    }

    /// A request built by hand, for shapes the encoder never produces.
    fn raw_request(id: Option<u64>, sub: Option<(Option<&str>, Option<&str>)>) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let op = sub.map(|(key, prefix)| {
            let key = key.map(|k| fbb.create_string(k));
            let prefix = prefix.map(|p| fbb.create_string(p));
            fb::Sub::create(
                &mut fbb,
                &fb::SubArgs {
                    key,
                    prefix,
                    from: None,
                    mode: fb::SubMode::Stream,
                    durable: None,
                    presence: None,
                },
            )
            .as_union_value()
        });
        let op_type = if op.is_some() {
            fb::Op::Sub
        } else {
            fb::Op::NONE
        };
        let root = fb::Request::create(&mut fbb, &fb::RequestArgs { id, op_type, op });
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    #[test]
    fn invalid_requests_are_bad_requests() {
        let cases = [
            (raw_request(Some(1), None), ClientErrorKind::Missing("op")),
            (
                raw_request(None, Some((Some("k"), None))),
                ClientErrorKind::Missing("id"),
            ),
            (
                raw_request(Some(1), Some((None, None))),
                ClientErrorKind::SubTarget,
            ),
            (
                raw_request(Some(1), Some((Some("k"), Some("p")))),
                ClientErrorKind::SubTarget,
            ),
            (
                raw_request(Some(1), Some((None, Some("")))),
                ClientErrorKind::Empty("prefix"),
            ),
        ];
        for (buf, kind) in cases {
            let err = decode_request(&buf).unwrap_err();
            assert_eq!(err.kind, kind);
            assert_eq!(err.code(), ErrorCode::BadRequest);
        }
        let id_kept = decode_request(&raw_request(Some(7), None)).unwrap_err();
        assert_eq!(id_kept.id, Some(7));
        for garbage in [
            &b""[..],
            b"\x00\x00\x00\x00",
            &[0xff; 40],
            b"{\"op\":\"get\"}",
        ] {
            assert_eq!(
                decode_request(garbage).unwrap_err().code(),
                ErrorCode::BadRequest
            );
        }
    }

    #[test]
    fn long_keys_are_too_large() {
        let key = "k".repeat(validate::MAX_KEY_LEN + 1);
        let buf = encoded_request(&Request::Get {
            id: 1,
            key: key.into(),
        });
        assert_eq!(
            decode_request(&buf).unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn responses_round_trip() {
        let resp = Response::Value {
            id: 4,
            key: "k".into(),
            value: None,
            version: 0,
        };
        let mut buf = Vec::new();
        encode_response(&resp, &mut buf);
        assert_eq!(decode_response(&buf).unwrap(), resp);
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        let reqs = [
            Request::Sub {
                id: 1,
                target: Target::Prefix("p/".into()),
                from: Some("t".into()),
                mode: SubMode::Stream,
                durable: None,
            },
            Request::Put {
                id: 2,
                key: "k".into(),
                value: Cow::Borrowed(b"v"),
                if_version: Some(3),
                msg_id: Some("m-2".into()),
            },
        ];
        for req in reqs {
            let buf = encoded_request(&req);
            for at in 0..buf.len() {
                for byte in [0, 1, 0x7f, 0x80, 0xff] {
                    let mut bad = buf.clone();
                    bad[at] = byte;
                    // Ok or a typed error: never a panic.
                    let _ = decode_request(&bad);
                    let _ = decode_response(&bad);
                }
            }
        }
    }
}
