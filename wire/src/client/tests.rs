//! Cross-form tests: any request or response survives both encodings unchanged, so the JSON
//! and flatbuffers forms are equivalent; hostile input yields errors, never panics.

use std::borrow::Cow;

use proptest::prelude::*;

use super::arbitrary;
use super::{
    ChangeOp, ClientError, Entry, ErrorCode, Member, MemberMeta, PresenceEvent, Request, Response,
    SubMode, Target, fb, json,
};

fn via_json_request(r: &Request<'_>) -> Result<Request<'static>, ClientError> {
    let mut out = Vec::new();
    json::encode_request(r, &mut out);
    json::decode_request(&out).map(Request::into_owned)
}

fn via_fb_request(r: &Request<'_>) -> Result<Request<'static>, ClientError> {
    let mut out = Vec::new();
    fb::encode_request(r, &mut out);
    fb::decode_request(&out).map(Request::into_owned)
}

fn via_json_response(r: &Response<'_>) -> Result<Response<'static>, ClientError> {
    let mut out = Vec::new();
    json::encode_response(r, &mut out);
    json::decode_response(&out).map(Response::into_owned)
}

fn via_fb_response(r: &Response<'_>) -> Result<Response<'static>, ClientError> {
    let mut out = Vec::new();
    fb::encode_response(r, &mut out);
    fb::decode_response(&out).map(Response::into_owned)
}

/// `response` answering `new` instead (an error without an id keeps none).
fn with_id(mut response: Response<'static>, new: u64) -> Response<'static> {
    match &mut response {
        Response::Snapshot { id, .. }
        | Response::Change { id, .. }
        | Response::Resumed { id, .. }
        | Response::Reset { id, .. }
        | Response::Value { id, .. }
        | Response::Members { id, .. }
        | Response::Presence { id, .. }
        | Response::Ok { id, .. } => *id = new,
        Response::Error { id, .. } => *id = id.map(|_| new),
    }
    response
}

fn value(bytes: &'static [u8]) -> Cow<'static, [u8]> {
    Cow::Borrowed(bytes)
}

#[test]
fn every_request_variant_round_trips_in_both_forms() {
    let requests = [
        Request::Sub {
            id: 1,
            target: Target::Key("room/{42}/title".into()),
            from: None,
            mode: SubMode::Stream,
            durable: None,
        },
        Request::Sub {
            id: 2,
            target: Target::Prefix("room/".into()),
            from: Some("tok".into()),
            mode: SubMode::Latest,
            durable: Some("phone".into()),
        },
        Request::Unsub { id: 1 },
        Request::Get {
            id: 4,
            key: "k".into(),
        },
        Request::Put {
            id: 5,
            key: "k".into(),
            value: value(b"{\"a\":1}"),
            if_version: Some(7),
            msg_id: None,
        },
        Request::Del {
            id: 6,
            key: "k".into(),
            if_version: None,
            msg_id: Some("0b9e4c1a-retry".into()),
        },
        Request::Pub {
            id: 7,
            key: "room/{42}/chat".into(),
            value: value(b"\"hi\""),
            msg_id: Some("m\"1\u{e9}".into()),
            echo: false,
        },
        Request::Auth {
            id: 8,
            token: "eyJhbGciOiJIUzI1NiJ9.e30.c2ln".into(),
        },
        Request::Ack {
            id: 2,
            token: "AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA".into(),
        },
        Request::Sub {
            id: 9,
            target: Target::Presence("room/{42}".into()),
            from: None,
            mode: SubMode::Stream,
            durable: None,
        },
        Request::Join {
            id: 10,
            channel: "room/{42}".into(),
            meta: value(b"{\"name\":\"Alice\"}"),
            device: Some("phone".into()),
        },
        Request::Leave {
            id: 11,
            channel: "room/{42}".into(),
        },
        Request::Presence {
            id: 12,
            channel: "lobby".into(),
            cursor: Some("c".into()),
            count_only: true,
        },
    ];
    for request in requests {
        assert_eq!(via_json_request(&request).unwrap(), request);
        assert_eq!(via_fb_request(&request).unwrap(), request);
    }
}

#[test]
fn every_response_variant_round_trips_in_both_forms() {
    let entry = |key: &'static str, bytes, version| Entry {
        key: key.into(),
        value: value(bytes),
        version,
    };
    let responses = [
        Response::Snapshot {
            id: 1,
            entries: vec![entry("a", b"1", 2), entry("b", b"\xff\x00", 3)],
            token: Some("tok".into()),
            more: false,
        },
        Response::Snapshot {
            id: 1,
            entries: vec![],
            token: None,
            more: true,
        },
        Response::Change {
            id: 1,
            key: "k".into(),
            op: ChangeOp::Put {
                value: value(b"[1]"),
                version: 18,
            },
            token: "t".into(),
        },
        Response::Change {
            id: 1,
            key: "k".into(),
            op: ChangeOp::Delete { version: 19 },
            token: "t".into(),
        },
        Response::Change {
            id: 1,
            key: "k".into(),
            op: ChangeOp::Publish {
                value: value(b"not json"),
            },
            token: "t".into(),
        },
        Response::Resumed {
            id: 3,
            token: "t".into(),
        },
        Response::Reset {
            id: 3,
            reason: "log truncated".into(),
        },
        Response::Value {
            id: 4,
            key: "k".into(),
            value: Some(value(b"null")),
            version: 17,
        },
        Response::Value {
            id: 4,
            key: "k".into(),
            value: None,
            version: 0,
        },
        Response::Ok {
            id: 5,
            version: Some(18),
            token: Some("t".into()),
        },
        Response::Ok {
            id: 6,
            version: None,
            token: None,
        },
        Response::Error {
            id: Some(5),
            code: ErrorCode::Conflict,
            message: "version mismatch".into(),
            version: Some(17),
        },
        Response::Error {
            id: None,
            code: ErrorCode::BadRequest,
            message: "bad".into(),
            version: None,
        },
        Response::Members {
            id: 7,
            members: vec![
                Member {
                    user: Some("alice".into()),
                    metas: vec![
                        MemberMeta {
                            conn: "e/0/1.1".into(),
                            meta: value(b"{\"on\":\"phone\"}"),
                        },
                        MemberMeta {
                            conn: "e/1/4.2".into(),
                            meta: value(b"null"),
                        },
                    ],
                },
                Member {
                    user: None,
                    metas: vec![],
                },
            ],
            total: Some(3),
            cursor: Some("c".into()),
            token: None,
            more: true,
        },
        Response::Presence {
            id: 7,
            events: vec![
                PresenceEvent {
                    joined: Some(value(b"1")),
                    user: Some("bob".into()),
                    conn: "e/0/2.1".into(),
                },
                PresenceEvent {
                    joined: None,
                    user: None,
                    conn: "e/0/3.1".into(),
                },
            ],
            token: "t".into(),
        },
    ];
    for response in responses {
        assert_eq!(via_json_response(&response).unwrap(), response);
        assert_eq!(via_fb_response(&response).unwrap(), response);
    }
}

#[test]
fn client_errors_answer_in_both_forms() {
    let err = json::decode_request(br#"{"op":"get","id":3}"#).unwrap_err();
    let response = err.to_response();
    let mut out = Vec::new();
    json::encode_response(&response, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"op":"error","id":3,"code":"bad_request","message":"missing field `key`"}"#
    );
    assert_eq!(via_fb_response(&response).unwrap(), response);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_are_the_same_in_both_forms(request in arbitrary::request()) {
        prop_assert_eq!(via_json_request(&request)?, request.clone());
        prop_assert_eq!(via_fb_request(&request)?, request);
    }

    #[test]
    fn responses_are_the_same_in_both_forms(response in arbitrary::response()) {
        prop_assert_eq!(via_json_response(&response)?, response.clone());
        prop_assert_eq!(via_fb_response(&response)?, response);
    }

    #[test]
    fn reused_fb_encoder_matches_fresh_encoding(
        responses in proptest::collection::vec(arbitrary::response(), 1..6)
    ) {
        let mut encoder = fb::FbEncoder::new();
        for response in &responses {
            let (mut reused, mut fresh) = (Vec::new(), Vec::new());
            encoder.encode_response(response, &mut reused);
            fb::encode_response(response, &mut fresh);
            prop_assert_eq!(reused, fresh);
        }
    }

    #[test]
    fn the_located_id_is_the_only_difference_between_ids(
        response in arbitrary::response(),
        other in any::<u64>(),
        before in proptest::collection::vec(any::<u8>(), 0..9),
    ) {
        let mut encoder = fb::FbEncoder::new();
        let mut located = before.clone();
        let at = encoder.encode_response_locating_id(&response, &mut located);
        prop_assert_eq!(at.is_some(), response.id().is_some());
        let Some(at) = at else { return Ok(()) };
        prop_assert_eq!(&located[at..at + 8], &response.id().unwrap().to_le_bytes()[..]);
        located[at..at + 8].copy_from_slice(&other.to_le_bytes());
        let mut direct = before;
        encoder.encode_response(&with_id(response, other), &mut direct);
        prop_assert_eq!(located, direct);
    }

    #[test]
    fn json_encoding_is_valid_json(response in arbitrary::response()) {
        let mut out = Vec::new();
        json::encode_response(&response, &mut out);
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = json::decode_request(&bytes);
        let _ = json::decode_response(&bytes);
        let _ = fb::decode_request(&bytes);
        let _ = fb::decode_response(&bytes);
    }

    #[test]
    fn json_like_input_never_panics(text in r#"\{("(op|id|key|prefix|from|value|if_version)"|[:,\[\]{} 0-9"a-z-]){0,40}\}"#) {
        if let Err(err) = json::decode_request(text.as_bytes()) {
            prop_assert!(!err.message().is_empty());
        }
    }
}

/// Found by the `client_fb` fuzz target: a binary `value` reply carrying a version but
/// no value must decode as "not found" (version 0), like the JSON form, so that it
/// re-encodes to the same thing.
#[test]
fn fb_value_without_value_has_no_version() {
    use crate::generated::client as g;
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let key = b.create_string("conflict");
    let body = g::Value::create(
        &mut b,
        &g::ValueArgs {
            key: Some(key),
            value: None,
            version: 55305,
        },
    );
    let root = g::Response::create(
        &mut b,
        &g::ResponseArgs {
            id: Some(5),
            body_type: g::Reply::Value,
            body: Some(body.as_union_value()),
        },
    );
    b.finish_minimal(root);
    let decoded = fb::decode_response(b.finished_data()).unwrap();
    assert_eq!(
        decoded,
        Response::Value {
            id: 5,
            key: Cow::Borrowed("conflict"),
            value: None,
            version: 0
        }
    );
    let mut out = Vec::new();
    fb::encode_response(&decoded, &mut out);
    assert_eq!(fb::decode_response(&out).unwrap(), decoded);
}
