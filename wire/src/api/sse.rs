//! Server-Sent Events (WHATWG HTML §9.2, `text/event-stream`) for `/v1/events`: the
//! stream's head, and each of a subscription's messages as an event named after its
//! `op` (`snapshot`, `change`, `resumed`, `reset`, `error`) whose data is the
//! WebSocket protocol's JSON object for it and whose `id` is its resume token, so that
//! a browser's `EventSource` resumes by itself with `Last-Event-ID`. Comments keep an
//! idle stream alive.

use std::borrow::Cow;

use super::error::ApiError;
use super::head::{Head, query_param};
use crate::client::validate;
use crate::client::{Request, Response, SubMode, Target};

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
        Response::Error { .. } => ("error", None),
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

/// The subscription `GET /v1/events` asks for: `?key=` (or `sub=`) or `?prefix=`,
/// from the `Last-Event-ID` header (or a `from` parameter, for a page that kept its
/// last id).
pub fn events_request<'a>(head: &Head<'a>) -> Result<Request<'a>, ApiError> {
    if head.method != "GET" {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    let q = head.query;
    let key = query_param(q, "key")
        .or_else(|| query_param(q, "sub"))
        .transpose()?;
    let prefix = query_param(q, "prefix").transpose()?;
    let target = match (key, prefix) {
        (Some(k), None) => Target::Key(validate::key("key", Some(k)).map_err(ApiError::Invalid)?),
        (None, Some(p)) => {
            Target::Prefix(validate::key("prefix", Some(p)).map_err(ApiError::Invalid)?)
        }
        _ => return Err(ApiError::BadHeader("give one of ?key= and ?prefix=")),
    };
    let from = match head.last_event_id.filter(|t| !t.is_empty()) {
        Some(t) => Some(Cow::Borrowed(t)),
        None => query_param(q, "from")
            .transpose()?
            .filter(|t| !t.is_empty()),
    };
    Ok(Request::Sub {
        id: EVENTS_SUB,
        target,
        from: validate::token(from).map_err(ApiError::Invalid)?,
        mode: SubMode::Stream,
        durable: None,
    })
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

    fn head(raw: &str) -> Head<'_> {
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
    }

    #[test]
    fn the_subscription_comes_from_the_query_and_last_event_id() {
        let r = events_request(&head(
            "GET /v1/events?key=a%2Fb HTTP/1.1\r\nLast-Event-ID: t1\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(
            r,
            Request::Sub {
                id: EVENTS_SUB,
                target: Target::Key("a/b".into()),
                from: Some("t1".into()),
                mode: SubMode::Stream,
                durable: None
            }
        );
        let r =
            events_request(&head("GET /v1/events?prefix=p%2F&from=t2 HTTP/1.1\r\n\r\n")).unwrap();
        assert!(
            matches!(r, Request::Sub { target: Target::Prefix(p), from: Some(f), .. } if p == "p/" && f == "t2")
        );
        for bad in [
            "GET /v1/events HTTP/1.1\r\n\r\n",
            "GET /v1/events?key=a&prefix=b HTTP/1.1\r\n\r\n",
            "GET /v1/events?key= HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                events_request(&head(bad)).unwrap_err().status().code(),
                400,
                "{bad}"
            );
        }
        assert_eq!(
            events_request(&head("POST /v1/events?key=a HTTP/1.1\r\n\r\n"))
                .unwrap_err()
                .status()
                .code(),
            405
        );
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
