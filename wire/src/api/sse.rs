//! Server-Sent Events (WHATWG HTML §9.2, `text/event-stream`) for `/v1/events`: the
//! stream's head, and each of a subscription's messages as an event named after its
//! `op` (`snapshot`, `change`, `resumed`, `reset`, `error`) whose data is the
//! WebSocket protocol's JSON object for it and whose `id` is its resume token, so that
//! a browser's `EventSource` resumes by itself with `Last-Event-ID`. Comments keep an
//! idle stream alive.

use std::borrow::Cow;

use super::error::ApiError;
use super::head::{Head, percent_decode, query_pairs, query_param};
use crate::client::validate;
use crate::client::{Position, Request, Response, SubMode, Target, encode_token};
use crate::partition::target_partitions;

/// The id of the one subscription of an event stream.
pub const EVENTS_SUB: u64 = 1;

/// Milliseconds a browser waits before it reconnects (sent as `retry`).
pub const RETRY_MS: u32 = 1000;

/// Append the head of an event stream (its body ends when the connection does), and
/// the reconnection delay.
pub fn write_stream_head(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n",
    );
    out.extend_from_slice(b"retry: ");
    out.extend_from_slice(itoa::Buffer::new().format(RETRY_MS).as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Append a comment line (ignored by clients; keeps the connection alive).
pub fn write_comment(out: &mut Vec<u8>) {
    out.extend_from_slice(b":\n\n");
}

/// The event name and id of `msg`, a message of the stream's subscription.
#[must_use]
pub fn event_of<'m>(msg: &'m Response<'_>) -> (&'static str, Option<&'m str>) {
    match msg {
        Response::Snapshot { token, .. } => ("snapshot", token.as_deref()),
        Response::Change { token, .. } => ("change", Some(token)),
        Response::Resumed { token, .. } => ("resumed", Some(token)),
        Response::Reset { .. } => ("reset", None),
        // Not `error`: a browser's EventSource fires that for its own connection errors.
        Response::Error { .. } => ("failure", None),
        Response::Value { .. }
        | Response::Ok { .. }
        | Response::Members { .. }
        | Response::Presence { .. } => ("message", None),
    }
}

/// Append one event: its name, its id if any, and `json` as its data (one `data:` line
/// per line of it: a client joins them with `\n` again, and JSON reads the same).
pub fn write_event(out: &mut Vec<u8>, event: &str, id: Option<&str>, json: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        // A token is base64url: no line end, no NUL.
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    for line in json.split(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Most subscriptions one event stream holds.
pub const MAX_STREAM_SUBS: usize = 16;

/// The subscriptions `GET /v1/events` asks for, in the order of the query: each
/// `?sub=` (or `key=`) a key, each `prefix=` a prefix, numbered from
/// [`EVENTS_SUB`]; each from its part of the `Last-Event-ID` header (or of a `from`
/// parameter, for a page that kept its last id; see [`event_id`]).
pub fn events_requests<'a>(head: &Head<'a>) -> Result<Vec<Request<'a>>, ApiError> {
    if head.method != "GET" {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    let mut targets = Vec::new();
    for (name, value) in query_pairs(head.query) {
        let decoded = || {
            percent_decode(value, true).ok_or(ApiError::Malformed("a query parameter is not UTF-8"))
        };
        let target = match name {
            "sub" | "key" => {
                Target::Key(validate::key("key", Some(decoded()?)).map_err(ApiError::Invalid)?)
            }
            "prefix" => Target::Prefix(
                validate::key("prefix", Some(decoded()?)).map_err(ApiError::Invalid)?,
            ),
            _ => continue,
        };
        targets.push(target);
    }
    if targets.is_empty() || targets.len() > MAX_STREAM_SUBS {
        return Err(ApiError::BadHeader(
            "give 1 to 16 of ?sub=<key> and ?prefix=<prefix>",
        ));
    }
    let id = match head.last_event_id.filter(|t| !t.is_empty()) {
        Some(t) => Some(Cow::Borrowed(t)),
        None => query_param(head.query, "from")
            .transpose()?
            .filter(|t| !t.is_empty()),
    };
    let froms = split_id(id.as_deref(), targets.len());
    (EVENTS_SUB..)
        .zip(targets)
        .zip(froms)
        .map(|((id, target), from)| {
            Ok(Request::Sub {
                id,
                target,
                from: validate::token(from.map(|f| Cow::Owned(f.to_owned())))
                    .map_err(ApiError::Invalid)?,
                mode: SubMode::Stream,
                durable: None,
            })
        })
        .collect()
}

/// The event id of a stream whose subscriptions stand at `tokens` (in their order; an
/// empty one has no position yet): the one token itself for a stream of one, else the
/// tokens joined by `.` (not in a token's base64url alphabet).
#[must_use]
pub fn event_id(tokens: &[String]) -> String {
    tokens.join(".")
}

/// The longest event id a stream of `subs` can have in a cluster of `partitions`
/// partitions: each subscription's token at its most (a key's, or a hash-tagged
/// prefix's, holds one position; another prefix's one per partition), joined.
#[must_use]
pub fn max_event_id_len(subs: &[Request<'_>], partitions: u32) -> usize {
    let most = Position {
        partition: u32::MAX,
        epoch: u64::MAX,
        seq: u64::MAX,
    };
    let token_len = |n: usize| encode_token(&vec![most; n]).len();
    let one = token_len(1);
    let tokens: usize = subs
        .iter()
        .map(|s| match s {
            Request::Sub {
                target: Target::Prefix(p),
                ..
            } => match target_partitions(p.as_bytes(), true, partitions).single() {
                Some(_) => one,
                None => token_len(partitions as usize),
            },
            _ => one,
        })
        .sum();
    tokens + subs.len().saturating_sub(1)
}

/// Each of `n` subscriptions' resume token in event id `id` ([`event_id`]): an id
/// holds the tokens of the subscriptions up to the last that had one, so missing
/// trailing parts are fresh snapshots; all are when there is no id or it holds more
/// than `n` parts (it was not this stream's).
fn split_id(id: Option<&str>, n: usize) -> Vec<Option<&str>> {
    let parts: Vec<&str> = id.map(|i| i.split('.').collect()).unwrap_or_default();
    if parts.len() > n {
        return vec![None; n];
    }
    (0..n)
        .map(|i| parts.get(i).copied().filter(|p| !p.is_empty()))
        .collect()
}

/// The value of cookie `name` in a `Cookie` header.
#[must_use]
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HandshakeLimits;

    fn head(raw: &str) -> Head<'static> {
        let raw: &'static str = Box::leak(super::super::head::with_host(raw).into_boxed_str());
        super::super::head::parse_head(raw.as_bytes(), &HandshakeLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn events_carry_their_name_id_and_each_line_of_data() {
        let mut out = Vec::new();
        write_event(&mut out, "change", Some("tok"), b"{\"a\":\r\n1}");
        assert_eq!(
            out,
            b"event: change\nid: tok\ndata: {\"a\":\ndata: \ndata: 1}\n\n"
        );
        let change = Response::Change {
            id: 1,
            key: "k".into(),
            op: crate::client::ChangeOp::Delete { version: 2 },
            token: "t".into(),
        };
        assert_eq!(event_of(&change), ("change", Some("t")));
        let reset = Response::Reset {
            id: 1,
            reason: "r".into(),
        };
        assert_eq!(event_of(&reset), ("reset", None));
        let error = Response::Error {
            id: Some(1),
            code: crate::client::ErrorCode::Unavailable,
            message: "m".into(),
            version: None,
        };
        assert_eq!(event_of(&error), ("failure", None));
    }

    fn subs(raw: &str) -> Result<Vec<Request<'static>>, ApiError> {
        events_requests(&head(raw)).map(|v| v.into_iter().map(Request::into_owned).collect())
    }

    fn sub(id: u64, target: Target<'static>, from: Option<&str>) -> Request<'static> {
        Request::Sub {
            id,
            target,
            from: from.map(|f| f.to_owned().into()),
            mode: SubMode::Stream,
            durable: None,
        }
    }

    #[test]
    fn the_subscriptions_come_from_the_query_and_last_event_id() {
        assert_eq!(
            subs("GET /v1/events?key=a%2Fb HTTP/1.1\r\nLast-Event-ID: t1\r\n\r\n"),
            Ok(vec![sub(1, Target::Key("a/b".into()), Some("t1"))])
        );
        assert_eq!(
            subs("GET /v1/events?prefix=p%2F&from=t2 HTTP/1.1\r\n\r\n"),
            Ok(vec![sub(1, Target::Prefix("p/".into()), Some("t2"))])
        );
        // Several, in order, each from its part of the id.
        assert_eq!(
            subs("GET /v1/events?sub=a&prefix=p&sub=b HTTP/1.1\r\nLast-Event-ID: t1..t3\r\n\r\n"),
            Ok(vec![
                sub(1, Target::Key("a".into()), Some("t1")),
                sub(2, Target::Prefix("p".into()), None),
                sub(3, Target::Key("b".into()), Some("t3")),
            ])
        );
        // An id of the subscriptions up to the last with a position: the rest start
        // fresh; one of more parts than subscriptions: all do.
        assert_eq!(
            subs("GET /v1/events?sub=a&sub=b HTTP/1.1\r\nLast-Event-ID: t1\r\n\r\n"),
            Ok(vec![
                sub(1, Target::Key("a".into()), Some("t1")),
                sub(2, Target::Key("b".into()), None),
            ])
        );
        assert_eq!(
            subs("GET /v1/events?sub=a HTTP/1.1\r\nLast-Event-ID: t1.t2\r\n\r\n"),
            Ok(vec![sub(1, Target::Key("a".into()), None)])
        );
        let many = format!("GET /v1/events?{} HTTP/1.1\r\n\r\n", "sub=a&".repeat(17));
        for bad in [
            "GET /v1/events HTTP/1.1\r\n\r\n",
            "GET /v1/events?key= HTTP/1.1\r\n\r\n",
            "GET /v1/events?key=%ff HTTP/1.1\r\n\r\n",
            many.as_str(),
        ] {
            assert_eq!(subs(bad).unwrap_err().status().code(), 400, "{bad}");
        }
        let post = subs("POST /v1/events?key=a HTTP/1.1\r\n\r\n");
        assert_eq!(post.unwrap_err().status().code(), 405);
    }

    #[test]
    fn the_longest_event_id_counts_a_position_per_partition_a_prefix_spans() {
        let subs = subs("GET /v1/events?sub=a&prefix=room%2F%7B1%7D%2F&prefix=p HTTP/1.1\r\n\r\n")
            .unwrap();
        let one = max_event_id_len(&subs[..1], 256);
        assert_eq!(
            max_event_id_len(&subs[1..2], 256),
            one,
            "a hash-tagged prefix: one partition"
        );
        let all = max_event_id_len(&subs[2..], 256);
        assert!(all > 100 * one, "{all} against {one}");
        assert_eq!(max_event_id_len(&subs, 256), 2 * one + all + 2);
        // What a stream really sends is never longer.
        let real = encode_token(&[Position {
            partition: 7,
            epoch: 3,
            seq: 99,
        }]);
        assert!(real.len() <= one);
    }

    #[test]
    fn an_event_id_holds_every_subscriptions_token() {
        assert_eq!(event_id(&["t1".into()]), "t1");
        assert_eq!(
            event_id(&["t1".into(), String::new(), "t3".into()]),
            "t1..t3"
        );
        assert_eq!(split_id(Some("t1..t3"), 3), [Some("t1"), None, Some("t3")]);
        assert_eq!(split_id(Some("t1"), 1), [Some("t1")]);
        assert_eq!(split_id(Some("t1"), 3), [Some("t1"), None, None]);
        assert_eq!(split_id(Some("a.b"), 1), [None]);
        assert_eq!(split_id(None, 2), [None, None]);
    }

    #[test]
    fn cookies() {
        assert_eq!(
            cookie(Some("a=1; ringline_token=x.y.z; b=2"), "ringline_token"),
            Some("x.y.z")
        );
        assert_eq!(cookie(Some("a=1"), "ringline_token"), None);
        assert_eq!(cookie(None, "ringline_token"), None);
    }
}
