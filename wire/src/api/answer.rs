//! HTTP API answers written into a caller's buffer: the client protocol's JSON answer
//! object (`{"op":"value",...}`, `{"op":"ok",...}`, `{"op":"error",...}`: one schema for
//! both APIs) as the body, with the status, `ETag` and `Retry-After` it implies, and
//! `Connection: keep-alive` or `close`.

use std::io::Write as _;

use super::error::{ApiError, status_of};
use crate::client::{ErrorCode, Response, json};
use crate::handshake::Status;

/// Headers beyond the fixed ones.
#[derive(Debug, Default, Clone, Copy)]
struct Extra<'a> {
    etag: Option<u64>,
    retry_after: Option<u32>,
    allow: Option<&'a str>,
    bearer_challenge: bool,
}

/// Append a response head and its JSON `body`.
fn write(out: &mut Vec<u8>, status: Status, extra: Extra<'_>, body: &[u8], keep_alive: bool) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        status.code(),
        status.reason(),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    if let Some(v) = extra.etag {
        let _ = write!(out, "ETag: \"{v}\"\r\n");
    }
    if let Some(s) = extra.retry_after {
        let _ = write!(out, "Retry-After: {s}\r\n");
    }
    if let Some(a) = extra.allow {
        let _ = write!(out, "Allow: {a}\r\n");
    }
    if extra.bearer_challenge {
        out.extend_from_slice(b"WWW-Authenticate: Bearer\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The status and headers of the answer `resp`.
fn status_and_extra(resp: &Response<'_>) -> (Status, Extra<'static>) {
    let mut extra = Extra::default();
    let status = match resp {
        Response::Value { value: None, .. } => Status::NotFound,
        Response::Value { version, .. } => {
            extra.etag = Some(*version);
            Status::Ok
        }
        Response::Ok { version, .. } => {
            extra.etag = *version;
            Status::Ok
        }
        Response::Members { .. } => Status::Ok,
        Response::Error { code, version, .. } => {
            let (status, retry) = status_of(*code);
            extra.retry_after = retry;
            extra.etag = *version;
            extra.bearer_challenge = *code == ErrorCode::Unauthorized;
            status
        }
        // Subscriptions' messages never answer an HTTP API request.
        _ => Status::InternalServerError,
    };
    (status, extra)
}

/// Append the answer to one request: `resp`, the hub's (or the edge's) answer to it.
pub fn write_answer(out: &mut Vec<u8>, resp: &Response<'_>, keep_alive: bool) {
    let (status, extra) = status_and_extra(resp);
    let mut body = Vec::new();
    json::encode_response(resp, &mut body);
    write(out, status, extra, &body, keep_alive);
}

/// Append the answer to a batch publish: 200, and each message's answer in order in
/// `{"results":[...]}` (each one `ok` or an `error` of its own).
pub fn write_batch(out: &mut Vec<u8>, answers: &[Response<'_>], keep_alive: bool) {
    let mut body = b"{\"results\":[".to_vec();
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        json::encode_response(a, &mut body);
    }
    body.extend_from_slice(b"]}");
    write(out, Status::Ok, Extra::default(), &body, keep_alive);
}

/// Append the answer to a request the edge refused itself.
pub fn write_error(out: &mut Vec<u8>, e: &ApiError, keep_alive: bool) {
    let mut body = b"{\"op\":\"error\",\"code\":\"".to_vec();
    body.extend_from_slice(e.code().as_bytes());
    body.extend_from_slice(b"\",\"message\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, &e.to_string());
    body.push(b'}');
    let extra = Extra {
        allow: match e {
            ApiError::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        },
        ..Extra::default()
    };
    write(out, e.status(), extra, &body, keep_alive && !e.closes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = r.parse(bytes).unwrap() else {
            panic!("partial")
        };
        let hs = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect::<Vec<_>>();
        let len: usize = hs
            .iter()
            .find(|(n, _)| n == "Content-Length")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(bytes.len() - n, len, "Content-Length matches the body");
        (
            r.code.unwrap(),
            hs,
            serde_json::from_slice(&bytes[n..]).unwrap(),
        )
    }

    fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_value_carries_its_version_as_the_etag_and_absence_is_404() {
        let mut out = Vec::new();
        let v = Response::Value {
            id: 1,
            key: "k".into(),
            value: Some(b"[1]".as_slice().into()),
            version: 9,
        };
        write_answer(&mut out, &v, true);
        let (code, hs, body) = parse(&out);
        assert_eq!(
            (code, header(&hs, "ETag"), header(&hs, "Connection")),
            (200, Some("\"9\""), Some("keep-alive"))
        );
        assert_eq!(body["value"], serde_json::json!([1]));
        let mut out = Vec::new();
        write_answer(
            &mut out,
            &Response::Value {
                id: 1,
                key: "k".into(),
                value: None,
                version: 0,
            },
            false,
        );
        let (code, hs, body) = parse(&out);
        assert_eq!((code, header(&hs, "Connection")), (404, Some("close")));
        assert!(body["value"].is_null());
    }

    #[test]
    fn errors_carry_status_retry_after_and_the_current_version() {
        let err = |code, version| Response::Error {
            id: Some(1),
            code,
            message: "m".into(),
            version,
        };
        let mut out = Vec::new();
        write_answer(&mut out, &err(ErrorCode::Conflict, Some(4)), true);
        let (code, hs, body) = parse(&out);
        assert_eq!((code, header(&hs, "ETag")), (409, Some("\"4\"")));
        assert_eq!(body["code"], "conflict");
        let mut out = Vec::new();
        write_answer(&mut out, &err(ErrorCode::Unavailable, None), true);
        let (code, hs, _) = parse(&out);
        assert_eq!((code, header(&hs, "Retry-After")), (503, Some("1")));
        let mut out = Vec::new();
        write_answer(&mut out, &err(ErrorCode::Unauthorized, None), true);
        let (code, hs, _) = parse(&out);
        assert_eq!(
            (code, header(&hs, "WWW-Authenticate")),
            (401, Some("Bearer"))
        );
    }

    #[test]
    fn edge_refusals_name_their_code_and_framing_errors_close() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            &ApiError::MethodNotAllowed("GET, PUT, DELETE"),
            true,
        );
        let (code, hs, body) = parse(&out);
        assert_eq!(
            (code, header(&hs, "Allow")),
            (405, Some("GET, PUT, DELETE"))
        );
        assert_eq!(body["code"], "method_not_allowed");
        let mut out = Vec::new();
        write_error(&mut out, &ApiError::BodyTooLarge { len: 10, max: 5 }, true);
        let (code, hs, body) = parse(&out);
        assert_eq!((code, header(&hs, "Connection")), (413, Some("close")));
        assert_eq!(body["message"], "body is 10 bytes, the limit is 5");
    }

    #[test]
    fn a_batch_answers_each_message_in_order() {
        let mut out = Vec::new();
        let answers = [
            Response::Ok {
                id: 1,
                version: None,
                token: Some("t".into()),
            },
            Response::Error {
                id: Some(2),
                code: ErrorCode::Forbidden,
                message: "no".into(),
                version: None,
            },
        ];
        write_batch(&mut out, &answers, true);
        let (code, _, body) = parse(&out);
        assert_eq!(code, 200);
        assert_eq!(body["results"][0]["op"], "ok");
        assert_eq!(body["results"][1]["code"], "forbidden");
    }
}
