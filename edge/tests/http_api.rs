//! The HTTP API (`/v1/...`) against the real `edge` and `store` binaries, driven by real
//! clients: `curl` (reads, writes with `If-Match` / `If-None-Match` / `Idempotency-Key`,
//! deletes, refusals with their statuses, keep-alive across requests), Python's
//! `urllib` (single and batch publishes that a WebSocket subscriber receives),
//! pipelined requests on one socket answered in order (past the pipeline's depth),
//! tokens and grants as on `/ws`, 503 with `Retry-After` while the store is down,
//! presence reads, `Expect: 100-continue`, and the OpenAPI document checked by
//! `openapi-spec-validator`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::client::Client;
use common::store::Cluster;
use wire::client::{ChangeOp, Request, Response, Target};

/// The message of a publish a subscriber received.
fn published(r: &Response<'_>) -> String {
    match r {
        Response::Change {
            op: ChangeOp::Publish { value },
            ..
        } => String::from_utf8(value.to_vec()).unwrap(),
        other => panic!("expected a publish, got {other:?}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One answer: status, headers (names lower-cased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// Read one HTTP/1.1 answer (framed by Content-Length) from `r`.
fn read_answer(r: &mut impl BufRead) -> Answer {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// `curl` with `args` against `addr`, `-i`: the last answer it printed.
fn curl(addr: SocketAddr, args: &[&str], path: &str) -> Answer {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--globoff", "--max-time", "10"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl (Debian's curl) is needed");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The last answer of the run (after any interim ones).
    let mut r = BufReader::new(text.as_bytes());
    let mut last = read_answer(&mut r);
    while !r.fill_buf().unwrap().is_empty() {
        last = read_answer(&mut r);
    }
    last
}

/// Run Python `script` with `arg` by `interpreter`; it must succeed.
fn python(interpreter: &Path, script: &str, arg: &str) {
    let out = Command::new(interpreter)
        .args(["-c", script, arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The edge's figure `name`.
fn metric(c: &Cluster, name: &str) -> u64 {
    c.edge.metric(name)
}

#[test]
fn keys_are_read_written_and_deleted_over_curl_with_versions_and_idempotency() {
    let c = Cluster::start();
    let a = c.edge.addr;
    let path = "/v1/keys/doc%2F%7B1%7D";
    let put = curl(a, &["-X", "PUT", "--data-binary", r#"{"n":1}"#], path);
    assert_eq!(put.status, 200, "{put:?}");
    let v1: u64 = put.json()["version"].as_u64().unwrap();
    assert_eq!(put.header("etag"), Some(format!("\"{v1}\"").as_str()));
    let get = curl(a, &[], path);
    assert_eq!(
        (get.status, get.json()["value"]["n"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(get.json()["key"], "doc/{1}");
    assert_eq!(get.header("etag"), put.header("etag"));
    // A stale If-Match: 409 and the current version.
    let stale = format!("If-Match: \"{}\"", v1 + 5);
    let conflict = curl(a, &["-X", "PUT", "-H", &stale, "--data-binary", "2"], path);
    assert_eq!(
        (conflict.status, conflict.json()["code"].as_str()),
        (409, Some("conflict"))
    );
    assert_eq!(conflict.json()["version"].as_u64(), Some(v1));
    let fresh = format!("If-Match: \"{v1}\"");
    let ok = curl(a, &["-X", "PUT", "-H", &fresh, "--data-binary", "2"], path);
    assert_eq!(ok.status, 200, "{ok:?}");
    let v2 = ok.json()["version"].as_u64().unwrap();
    assert!(v2 > v1);
    // Create-only on an existing key: 409.
    let exists = curl(
        a,
        &["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "3"],
        path,
    );
    assert_eq!(exists.status, 409);
    // The same Idempotency-Key twice: one write, the first outcome twice.
    let once = [
        "-X",
        "PUT",
        "-H",
        "Idempotency-Key: write-3",
        "--data-binary",
        "3",
    ];
    let first = curl(a, &once, path);
    let again = curl(a, &once, path);
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["version"], again.json()["version"]);
    let after = curl(a, &[], path).json()["version"].as_u64().unwrap();
    assert_eq!(Some(after), first.json()["version"].as_u64());
    let del = curl(a, &["-X", "DELETE"], path);
    assert_eq!(del.status, 200, "{del:?}");
    let gone = curl(a, &[], path);
    assert_eq!((gone.status, gone.json()["value"].is_null()), (404, true));
}

#[test]
fn curl_keeps_one_connection_for_many_requests_and_refusals_say_why() {
    let c = Cluster::start();
    let a = c.edge.addr;
    // Three requests, one connection: curl reports a new connection only for the first.
    let url = format!("http://{a}/v1/keys/k1");
    let out = Command::new("curl")
        .args(["-sS", "-w", "%{http_code} %{num_connects}\n"])
        .args(["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null"])
        .args([&url, &url, &url])
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines, "404 1\n404 0\n404 0\n", "keep-alive");
    let wrong_method = curl(a, &["-X", "POST", "-d", "x"], "/v1/keys/k1");
    assert_eq!(
        (wrong_method.status, wrong_method.header("allow")),
        (405, Some("GET, PUT, DELETE"))
    );
    assert_eq!(wrong_method.json()["code"], "method_not_allowed");
    let nothing = curl(a, &[], "/v1/nothing");
    assert_eq!(
        (nothing.status, nothing.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let chunked = curl(
        a,
        &["-X", "PUT", "-H", "Transfer-Encoding: chunked", "-d", "x"],
        "/v1/keys/k1",
    );
    assert_eq!(
        (chunked.status, chunked.header("connection")),
        (411, Some("close"))
    );
    let big = c.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let at = format!("@{}", big.display());
    let too_large = curl(
        a,
        &["-X", "PUT", "-H", "Expect:", "--data-binary", &at],
        "/v1/keys/k1",
    );
    assert_eq!(
        (too_large.status, too_large.json()["code"].as_str()),
        (413, Some("too_large"))
    );
    let long_key = format!("/v1/keys/{}", "k".repeat(1025));
    assert_eq!(curl(a, &[], &long_key).status, 413);
    let bad_json = curl(
        a,
        &["-H", "Content-Type: application/json", "-d", "{\"key\":"],
        "/v1/publish",
    );
    assert_eq!(
        (bad_json.status, bad_json.json()["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(metric(&c, "ringline_edge_api_refused_total") >= 6);
}

#[test]
fn publishes_from_python_urllib_reach_a_websocket_subscriber_one_and_batched() {
    let c = Cluster::start();
    let mut sub = Client::json(c.edge.addr);
    sub.send(&Request::Sub {
        id: 1,
        target: Target::Prefix("chat/{7}/".into()),
        from: None,
        mode: Default::default(),
        durable: None,
    });
    assert!(matches!(sub.recv(), Response::Snapshot { .. }));
    let script = r#"
import json, sys, urllib.request
base = sys.argv[1]
def post(body, headers={}):
    req = urllib.request.Request(base + "/v1/publish", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)
s, one = post({"key": "chat/{7}/a", "value": {"text": "hello"}}, {"Idempotency-Key": "m-1"})
assert s == 200 and one["op"] == "ok" and one["token"], one
s, batch = post([{"key": "chat/{7}/a", "value": i, "msg_id": "b-%d" % i} for i in range(50)])
assert s == 200 and len(batch["results"]) == 50 and all(r["op"] == "ok" for r in batch["results"]), batch
s, again = post({"key": "chat/{7}/a", "value": {"text": "hello"}}, {"Idempotency-Key": "m-1"})
assert s == 200, again
try:
    post({"key": "chat/{7}/a"})
    raise SystemExit("a message without a value was taken")
except urllib.error.HTTPError as e:
    assert e.code == 400 and json.load(e)["code"] == "bad_request"
print("ok")
"#;
    python(
        Path::new("python3"),
        script,
        &format!("http://{}", c.edge.addr),
    );
    // The first publish, then the batch in order; the repeat of m-1 was not delivered.
    assert_eq!(published(&sub.recv()), r#"{"text": "hello"}"#);
    for i in 0..50 {
        assert_eq!(published(&sub.recv()), i.to_string());
    }
    assert!(
        sub.try_recv().is_none(),
        "the repeated publish was delivered again"
    );
    assert!(metric(&c, "ringline_edge_api_requests_total") >= 4);
}

#[test]
fn pipelined_requests_past_the_pipelines_depth_are_answered_in_order() {
    let c = Cluster::start();
    let mut s = TcpStream::connect(c.edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 100 writes then 100 reads of keys spread over partitions, all in one send.
    let n = 100;
    let mut all = Vec::new();
    for i in 0..n {
        let body = format!("{i}");
        write!(
            all,
            "PUT /v1/keys/p%2F{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }
    for i in 0..n {
        write!(all, "GET /v1/keys/p%2F{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    s.write_all(&all).unwrap();
    let mut r = BufReader::new(s);
    for i in 0..n {
        let a = read_answer(&mut r);
        assert_eq!(
            (a.status, a.json()["op"].as_str()),
            (200, Some("ok")),
            "put {i}"
        );
    }
    for i in 0..n {
        let a = read_answer(&mut r);
        assert_eq!(a.status, 200, "get {i}");
        assert_eq!(
            (a.json()["key"].as_str(), a.json()["value"].as_u64()),
            (Some(format!("p/{i}").as_str()), Some(i))
        );
    }
    // `Connection: close` is answered, then the connection ends.
    let mut s = r.into_inner();
    s.write_all(b"GET /v1/keys/p%2F1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let a = read_answer(&mut r);
    assert_eq!((a.status, a.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the answer"
    );
}

/// `Expect: 100-continue` (RFC 9110 §10.1.1): curl, told to send it and to wait 10 s
/// for the answer, gets `100 Continue` first; on one socket the 100 comes only after
/// the answers to the requests before it, and an HTTP/1.0 request's expectation is
/// ignored.
#[test]
fn a_request_expecting_100_continue_is_told_to_go_on_at_once() {
    let c = Cluster::start();
    let a = c.edge.addr;
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "--expect100-timeout", "10"])
        .args([
            "-H",
            "Expect: 100-continue",
            "-X",
            "PUT",
            "--data-binary",
            "7",
        ])
        .arg(format!("http://{a}/v1/keys/expect"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "),
        "{text}"
    );

    // A read, then a write's head alone: the read's answer, then the 100.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /v1/keys/expect HTTP/1.1\r\nHost: x\r\n\r\n\
          PUT /v1/keys/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let got = read_answer(&mut r);
    assert_eq!((got.status, got.json()["value"].as_u64()), (200, Some(7)));
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    s.write_all(b"8").unwrap();
    let put = read_answer(&mut r);
    assert_eq!((put.status, put.json()["op"].as_str()), (200, Some("ok")));

    // A head that arrives in pieces is told to go on once it is whole.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = b"PUT /v1/keys/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
    for piece in head.chunks(20) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    r.read_line(&mut line).unwrap();
    s.write_all(b"10").unwrap();
    let put = read_answer(&mut r);
    assert_eq!((put.status, put.json()["op"].as_str()), (200, Some("ok")));

    // HTTP/1.0: nothing comes before the content, then the answer alone.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"PUT /v1/keys/expect HTTP/1.0\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut early = [0u8; 64];
    match s.read(&mut early) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the edge sent something before the content: {other:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"9").unwrap();
    let mut r = BufReader::new(s);
    let put = read_answer(&mut r);
    assert_eq!((put.status, put.json()["op"].as_str()), (200, Some("ok")));
    assert!(metric(&c, "ringline_edge_api_requests_total") >= 4);
}

/// The HS256 secret of the auth test (test-only).
const AUTH_SECRET: &str = "a test secret of at least thirty-two bytes";

fn token(sub: &str, read: &[&str], write: &[&str]) -> String {
    let rl = serde_json::json!({ "read": read, "write": write, "publish": write });
    common::hs256_token(sub, rl, 600, AUTH_SECRET)
}

#[test]
fn tokens_and_grants_apply_as_on_websockets() {
    let c = Cluster::start_with_auth(AUTH_SECRET);
    let a = c.edge.addr;
    let none = curl(a, &[], "/v1/keys/k");
    assert_eq!(
        (none.status, none.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    assert_eq!(none.json()["code"], "unauthorized");
    let bad = curl(
        a,
        &["-H", "Authorization: Bearer not.a.token"],
        "/v1/keys/k",
    );
    assert_eq!(bad.status, 401);
    let reader = format!("Authorization: Bearer {}", token("ann", &["pub/*"], &[]));
    let writer = format!("Authorization: Bearer {}", token("bob", &["*"], &["pub/*"]));
    let denied_before = metric(&c, "ringline_edge_denied_total");
    let denied = curl(
        a,
        &["-X", "PUT", "-H", &reader, "-d", "1"],
        "/v1/keys/pub%2Fa",
    );
    assert_eq!(
        (denied.status, denied.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(curl(a, &["-H", &reader], "/v1/keys/secret%2Fa").status, 403);
    assert_eq!(
        curl(
            a,
            &["-X", "PUT", "-H", &writer, "-d", "1"],
            "/v1/keys/pub%2Fa"
        )
        .status,
        200
    );
    let read = curl(a, &["-H", &reader], "/v1/keys/pub%2Fa");
    assert_eq!((read.status, read.json()["value"].as_u64()), (200, Some(1)));
    // A batch: each message granted or forbidden on its own.
    let batch = r#"[{"key":"pub/b","value":1},{"key":"other/b","value":2}]"#;
    let b = curl(a, &["-H", &writer, "-d", batch], "/v1/publish");
    assert_eq!(b.status, 200);
    assert_eq!(b.json()["results"][0]["op"], "ok");
    assert_eq!(b.json()["results"][1]["code"], "forbidden");
    assert!(metric(&c, "ringline_edge_denied_total") >= denied_before + 3);
}

#[test]
fn with_the_store_down_requests_get_503_and_retry_after() {
    let mut c = Cluster::start();
    let a = c.edge.addr;
    assert_eq!(curl(a, &["-X", "PUT", "-d", "1"], "/v1/keys/k").status, 200);
    c.store.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl(a, &[], "/v1/keys/k");
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.json()["code"], "unavailable");
            break;
        }
        assert!(Instant::now() < deadline, "still {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn presence_is_read_over_http() {
    let c = Cluster::start();
    let mut ann = Client::json(c.edge.addr);
    let joined = ann.call(&Request::Join {
        id: 1,
        channel: "room/{3}".into(),
        meta: br#"{"name":"ann"}"#.as_slice().into(),
        device: None,
    });
    assert!(matches!(joined, Response::Ok { .. }), "{joined:?}");
    let page = curl(c.edge.addr, &[], "/v1/presence/room%2F%7B3%7D");
    assert_eq!(page.status, 200, "{page:?}");
    let j = page.json();
    assert_eq!(
        (j["op"].as_str(), j["total"].as_u64()),
        (Some("members"), Some(1))
    );
    assert_eq!(j["members"][0]["metas"][0]["meta"]["name"], "ann");
    let count = curl(
        c.edge.addr,
        &[],
        "/v1/presence/room%2F%7B3%7D?count_only=true",
    );
    assert_eq!(count.json()["total"].as_u64(), Some(1));
}

/// Validates the OpenAPI document at `argv[1]` against the 3.1 schema, and checks that
/// every `$ref` in it resolves (the validator does not look at all of them).
const VALIDATE: &str = r##"
import json, sys
from openapi_spec_validator import validate
doc = json.load(open(sys.argv[1]))
validate(doc)
def walk(node):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            target = doc
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
walk(doc)
print("valid")
"##;

#[test]
fn the_openapi_document_is_served_valid_and_covers_every_route() {
    let c = Cluster::start();
    let doc = curl(c.edge.addr, &[], "/v1/openapi.json");
    assert_eq!(doc.status, 200);
    let j = doc.json();
    for path in [
        "/v1/keys/{key}",
        "/v1/publish",
        "/v1/presence/{channel}",
        "/v1/events",
    ] {
        assert!(
            j["paths"].get(path).is_some(),
            "{path} is not in the document"
        );
    }
    let python = root().join(".venv-interop/bin/python");
    assert!(
        python.exists(),
        "run scripts/interop-setup.sh (make test does)"
    );
    let file = c.dir.path().join("openapi.json");
    std::fs::write(&file, &doc.body).unwrap();
    self::python(&python, VALIDATE, file.to_str().unwrap());
}
