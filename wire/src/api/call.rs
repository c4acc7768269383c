//! An HTTP API request, framed and whole, as the client protocol's requests for the hub:
//!
//! ```text
//! GET    /v1/keys/{key}                          → get
//! PUT    /v1/keys/{key}    body = the value       → put  (If-Match: "<version>",
//! DELETE /v1/keys/{key}                           → del   If-None-Match: *,
//!                                                         Idempotency-Key: <msg_id>)
//! POST   /v1/publish       {"key":..,"value":<JSON>,"msg_id":..}       → pub
//!                          [{..},{..},...] (at most MAX_BATCH)          → one pub each
//! GET    /v1/presence/{channel}?cursor=..&count_only=true               → presence
//! ```
//!
//! Keys and channels are percent-decoded from the path; every field goes through the
//! same checks as the WebSocket protocol's ([`crate::client::validate`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::head::{Head, percent_decode, query_param};
use crate::client::error::shorten;
use crate::client::validate;
use crate::client::{ClientErrorKind, Request};

/// Most messages in one batch publish.
pub const MAX_BATCH: usize = 1000;

/// What an HTTP API request asks the hub for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    /// One request; its answer is the HTTP answer.
    One(Request<'a>),
    /// A batch publish: one request each, with consecutive ids; their answers, in
    /// order, make one body.
    Batch(Vec<Request<'a>>),
}

impl<'a> Call<'a> {
    /// The requests, in order.
    #[must_use]
    pub fn requests(self) -> Vec<Request<'a>> {
        match self {
            Self::One(r) => vec![r],
            Self::Batch(rs) => rs,
        }
    }
}

/// The request `head` with `body` makes, its first request numbered `id`.
pub fn call<'a>(head: &Head<'a>, body: &'a [u8], id: u64) -> Result<Call<'a>, ApiError> {
    if let Some(key) = head.path.strip_prefix("/v1/keys/") {
        let key = validate::key("key", Some(path_part(key)?)).map_err(ApiError::Invalid)?;
        return keys(head, key, body, id).map(Call::One);
    }
    if head.path == "/v1/publish" {
        if head.method != "POST" {
            return Err(ApiError::MethodNotAllowed("POST"));
        }
        return publish(head, body, id);
    }
    if let Some(channel) = head.path.strip_prefix("/v1/presence/") {
        if head.method != "GET" {
            return Err(ApiError::MethodNotAllowed("GET"));
        }
        let channel = validate::channel(Some(path_part(channel)?)).map_err(ApiError::Invalid)?;
        let cursor = query_param(head.query, "cursor").transpose()?;
        let cursor = validate::token(cursor).map_err(ApiError::Invalid)?;
        let count_only = match query_param(head.query, "count_only")
            .transpose()?
            .as_deref()
        {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(_) => return Err(ApiError::BadHeader("count_only is true or false")),
        };
        return Ok(Call::One(Request::Presence {
            id,
            channel,
            cursor,
            count_only,
        }));
    }
    Err(ApiError::NotFound)
}

/// A key or channel from the path, decoded.
fn path_part(s: &str) -> Result<Cow<'_, str>, ApiError> {
    percent_decode(s, false).ok_or(ApiError::BadHeader(
        "the path's key is not percent-encoded UTF-8",
    ))
}

/// `/v1/keys/{key}`.
fn keys<'a>(
    head: &Head<'a>,
    key: Cow<'a, str>,
    body: &'a [u8],
    id: u64,
) -> Result<Request<'a>, ApiError> {
    let msg_id =
        || validate::msg_id(head.idempotency_key.map(Cow::Borrowed)).map_err(ApiError::Invalid);
    match head.method {
        "GET" => Ok(Request::Get { id, key }),
        "PUT" => Ok(Request::Put {
            id,
            key,
            value: Cow::Borrowed(body),
            if_version: precondition(head)?,
            msg_id: msg_id()?,
        }),
        "DELETE" => Ok(Request::Del {
            id,
            key,
            if_version: precondition(head)?,
            msg_id: msg_id()?,
        }),
        _ => Err(ApiError::MethodNotAllowed("GET, PUT, DELETE")),
    }
}

/// The expected version a write's preconditions give: `If-Match: "<version>"` (the
/// `ETag` a read or write answered with), or `If-None-Match: *` (only if absent: 0).
fn precondition(head: &Head<'_>) -> Result<Option<u64>, ApiError> {
    match (head.if_match, head.if_none_match) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::BadHeader(
            "give If-Match or If-None-Match, not both",
        )),
        (None, Some("*")) => Ok(Some(0)),
        (None, Some(_)) => Err(ApiError::BadHeader(
            "If-None-Match takes only * (write only if the key is absent)",
        )),
        (Some(tag), None) => {
            let v = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            v.unwrap_or(tag)
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadHeader("If-Match takes one version, as \"17\""))
        }
    }
}

/// A string field, borrowed from the body unless it has escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// One message of `POST /v1/publish`.
#[derive(Deserialize)]
struct PubItem<'a> {
    #[serde(borrow)]
    key: Option<Str<'a>>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    msg_id: Option<Str<'a>>,
}

impl<'a> PubItem<'a> {
    fn request(self, id: u64, header_msg_id: Option<&'a str>) -> Result<Request<'a>, ApiError> {
        let check = || -> Result<Request<'a>, ClientErrorKind> {
            let msg_id = self
                .msg_id
                .map(|m| m.0)
                .or(header_msg_id.map(Cow::Borrowed));
            Ok(Request::Pub {
                id,
                key: validate::key("key", self.key.map(|k| k.0))?,
                value: validate::value(self.value.map(|v| Cow::Borrowed(v.get().as_bytes())))?,
                msg_id: validate::msg_id(msg_id)?,
                echo: true,
            })
        };
        check().map_err(ApiError::Invalid)
    }
}

/// `POST /v1/publish`: one message (an object) or a batch (an array of them).
fn publish<'a>(head: &Head<'a>, body: &'a [u8], id: u64) -> Result<Call<'a>, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::Invalid(ClientErrorKind::Malformed(shorten(&e.to_string())))
    };
    if body.trim_ascii_start().first() == Some(&b'[') {
        let items: Vec<PubItem<'a>> = serde_json::from_slice(body).map_err(malformed)?;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(ApiError::BadHeader("a batch holds 1 to 1000 messages"));
        }
        let requests = (id..)
            .zip(items)
            .map(|(id, item)| item.request(id, None))
            .collect::<Result<_, _>>()?;
        return Ok(Call::Batch(requests));
    }
    let item: PubItem<'a> = serde_json::from_slice(body).map_err(malformed)?;
    item.request(id, head.idempotency_key).map(Call::One)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HandshakeLimits;

    fn call_of(raw: &str) -> Result<Call<'static>, ApiError> {
        let raw: &'static str = Box::leak(super::super::head::with_host(raw).into_boxed_str());
        let (head, n) = super::super::head::parse_head(raw.as_bytes(), &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        call(&head, &raw.as_bytes()[n..], 7)
    }

    #[test]
    fn keys_map_to_get_put_and_del() {
        assert_eq!(
            call_of("GET /v1/keys/room%2F%7B42%7D%2Ftitle HTTP/1.1\r\n\r\n"),
            Ok(Call::One(Request::Get {
                id: 7,
                key: "room/{42}/title".into()
            }))
        );
        assert_eq!(
            call_of(
                "PUT /v1/keys/k HTTP/1.1\r\nIf-Match: \"3\"\r\nIdempotency-Key: m1\r\nContent-Length: 4\r\n\r\n\"hi\""
            ),
            Ok(Call::One(Request::Put {
                id: 7,
                key: "k".into(),
                value: Cow::Borrowed(b"\"hi\""),
                if_version: Some(3),
                msg_id: Some("m1".into()),
            }))
        );
        assert_eq!(
            call_of("DELETE /v1/keys/k HTTP/1.1\r\nIf-None-Match: *\r\n\r\n"),
            Ok(Call::One(Request::Del {
                id: 7,
                key: "k".into(),
                if_version: Some(0),
                msg_id: None,
            }))
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let status = |raw: &str| call_of(raw).unwrap_err().status().code();
        assert_eq!(status("POST /v1/keys/k HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET /v1/keys/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /v1/nothing HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("GET /v1/keys/%ff HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET /v1/keys/{} HTTP/1.1\r\n\r\n", "k".repeat(1025));
        assert_eq!(status(&long), 413);
        assert_eq!(
            status("PUT /v1/keys/k HTTP/1.1\r\nIf-Match: \"x\"\r\n\r\n"),
            400
        );
        assert_eq!(
            status("PUT /v1/keys/k HTTP/1.1\r\nIf-None-Match: \"1\"\r\n\r\n"),
            400
        );
        assert_eq!(status("GET /v1/publish HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(
            status("POST /v1/publish HTTP/1.1\r\nContent-Length: 1\r\n\r\n{"),
            400
        );
        assert_eq!(
            status("POST /v1/publish HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]"),
            400
        );
        assert_eq!(
            status("POST /v1/publish HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"key\":\"k\"}"),
            400
        );
        assert_eq!(
            status("GET /v1/presence/room?count_only=maybe HTTP/1.1\r\n\r\n"),
            400
        );
    }

    #[test]
    fn publish_takes_one_message_or_a_batch() {
        let one = "POST /v1/publish HTTP/1.1\r\nIdempotency-Key: h\r\nContent-Length: 29\r\n\r\n{\"key\":\"k\",\"value\":{\"a\":1}}  ";
        assert_eq!(
            call_of(one),
            Ok(Call::One(Request::Pub {
                id: 7,
                key: "k".into(),
                value: Cow::Borrowed(b"{\"a\":1}"),
                msg_id: Some("h".into()),
                echo: true,
            }))
        );
        let body = r#"[{"key":"a","value":1},{"key":"b","value":"x","msg_id":"m"}]"#;
        let raw = format!(
            "POST /v1/publish HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let Ok(Call::Batch(rs)) = call_of(&raw) else {
            panic!("not a batch")
        };
        assert_eq!(rs.len(), 2);
        assert_eq!(rs.iter().map(Request::id).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(rs[1].msg_id(), Some("m"));
    }

    #[test]
    fn presence_reads_a_page_or_the_count() {
        assert_eq!(
            call_of("GET /v1/presence/room%2F%7B1%7D?cursor=abc&count_only=true HTTP/1.1\r\n\r\n"),
            Ok(Call::One(Request::Presence {
                id: 7,
                channel: "room/{1}".into(),
                cursor: Some("abc".into()),
                count_only: true,
            }))
        );
    }
}
