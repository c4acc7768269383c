//! Server-Sent Events (`/v1/events`) against the real `edge` and `store` binaries, read
//! by `curl -N`: a key's snapshot then its changes, each with its resume token as the
//! event id, heartbeat comments, resuming with `Last-Event-ID` (exactly the missed
//! changes), a `reset` and a fresh snapshot once the id is older than the log (through
//! HAProxy), and tokens from the header or the cookie with the grant applied.
//! (A browser's `EventSource` through HAProxy across an edge's SIGKILL is in
//! `interop.rs`, beside the other Chromium tests.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

mod common;
use common::cluster::{LocalCluster, key_of};
use common::store::Cluster;

/// One event of a stream.
#[derive(Debug, Default, Clone)]
struct Event {
    name: String,
    id: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// `curl -sN` reading an event stream, its lines parsed into events on a thread.
struct Stream {
    curl: Child,
    events: Receiver<Event>,
    comments: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    head: Receiver<String>,
}

impl Stream {
    fn open(url: &str, headers: &[&str]) -> Self {
        let mut cmd = Command::new("curl");
        cmd.args(["-sN", "-i", "--globoff"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut curl = cmd
            .arg(url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl (Debian's curl) is needed");
        let out = BufReader::new(curl.stdout.take().unwrap());
        let (tx, events) = channel();
        let (head_tx, head) = channel();
        let comments = std::sync::Arc::default();
        let seen = std::sync::Arc::clone(&comments);
        std::thread::spawn(move || read_events(out, &tx, &head_tx, &seen));
        Self {
            curl,
            events,
            comments,
            head,
        }
    }

    /// The answer's status line and headers.
    fn head(&self) -> String {
        self.head.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    fn next(&self) -> Event {
        match self.events.recv_timeout(Duration::from_secs(10)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => panic!("no event within 10 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the stream ended"),
        }
    }

    fn comments(&self) -> usize {
        self.comments.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

/// Parse curl's output: the head (sent once whole), then events; comments counted.
fn read_events(
    mut out: impl BufRead,
    tx: &std::sync::mpsc::Sender<Event>,
    head_tx: &std::sync::mpsc::Sender<String>,
    comments: &std::sync::atomic::AtomicUsize,
) {
    let mut head = String::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            return;
        }
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    let _ = head_tx.send(head);
    let mut e = Event::default();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        let l = line.trim_end_matches('\n');
        if l.is_empty() {
            if !e.name.is_empty() {
                let _ = tx.send(std::mem::take(&mut e));
            }
        } else if l.starts_with(':') {
            comments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(v) = l.strip_prefix("event: ") {
            e.name = v.to_owned();
        } else if let Some(v) = l.strip_prefix("id: ") {
            e.id = Some(v.to_owned());
        } else if let Some(v) = l.strip_prefix("data: ") {
            if !e.data.is_empty() {
                e.data.push('\n');
            }
            e.data.push_str(v);
        }
        line.clear();
    }
}

/// `PUT value` to `key` through the HTTP API at `addr`.
fn put(addr: SocketAddr, key: &str, value: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let path = key
        .replace('/', "%2F")
        .replace('{', "%7B")
        .replace('}', "%7D");
    write!(
        s,
        "PUT /v1/keys/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{value}",
        value.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn curl_follows_a_key_and_resumes_from_its_last_event_id() {
    let c = Cluster::start_with(&["--heartbeat-secs", "1"]);
    let url = format!("http://{}/v1/events?key=sse%2Fa", c.edge.addr);
    let s = Stream::open(&url, &[]);
    let head = s.head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let snap = s.next();
    assert_eq!(snap.name, "snapshot");
    assert_eq!(snap.json()["entries"], serde_json::json!([]));
    for v in 1..=3 {
        put(c.edge.addr, "sse/a", &v.to_string());
    }
    let mut last = None;
    for v in 1..=3 {
        let e = s.next();
        assert_eq!(
            (e.name.as_str(), e.json()["value"].as_u64()),
            ("change", Some(v))
        );
        assert_eq!(
            e.id.as_deref(),
            e.json()["token"].as_str(),
            "the id is the resume token"
        );
        last = e.id;
    }
    // Heartbeat comments keep the idle stream alive.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(s.comments() >= 1, "no heartbeat comment in 2.5 s");
    assert!(c.edge.metric("ringline_edge_event_streams_total") >= 1);
    drop(s);
    put(c.edge.addr, "sse/a", "4");
    put(c.edge.addr, "sse/a", "5");
    let last_id = format!("Last-Event-ID: {}", last.unwrap());
    let s = Stream::open(&url, &[&last_id]);
    assert_eq!(s.next().name, "resumed");
    for v in 4..=5 {
        let e = s.next();
        assert_eq!(
            (e.name.as_str(), e.json()["value"].as_u64()),
            ("change", Some(v))
        );
    }
    put(c.edge.addr, "sse/a", "6");
    assert_eq!(
        s.next().json()["value"].as_u64(),
        Some(6),
        "nothing else came between"
    );
}

#[test]
fn one_stream_follows_several_subscriptions_and_one_id_resumes_them_all() {
    let c = Cluster::start();
    let url = format!("http://{}/v1/events?sub=m%2Fa&prefix=m%2Fp%2F", c.edge.addr);
    let s = Stream::open(&url, &[]);
    // Each subscription's snapshot, ending with a part without `more` (a prefix's may
    // come in several).
    let mut whole = Vec::new();
    while whole.len() < 2 {
        let e = s.next();
        assert_eq!(e.name, "snapshot");
        if e.json()["more"] != true {
            whole.push(e.json()["id"].as_u64().unwrap());
        }
    }
    whole.sort_unstable();
    assert_eq!(whole, [1, 2]);
    put(c.edge.addr, "m/a", "1");
    let a = s.next();
    assert_eq!(
        (a.json()["id"].as_u64(), a.json()["value"].as_u64()),
        (Some(1), Some(1))
    );
    put(c.edge.addr, "m/p/x", "2");
    let p = s.next();
    assert_eq!(
        (p.json()["id"].as_u64(), p.json()["key"].as_str()),
        (Some(2), Some("m/p/x"))
    );
    // The id holds both subscriptions' tokens.
    let id = p.id.clone().unwrap();
    let parts: Vec<&str> = id.split('.').collect();
    assert_eq!(
        parts,
        [
            a.json()["token"].as_str().unwrap(),
            p.json()["token"].as_str().unwrap()
        ]
    );
    drop(s);
    put(c.edge.addr, "m/a", "3");
    put(c.edge.addr, "m/p/y", "4");
    let s = Stream::open(&url, &[&format!("Last-Event-ID: {id}")]);
    let mut got = Vec::new();
    while got.len() < 4 {
        let e = s.next();
        got.push((
            e.name.clone(),
            e.json()["id"].as_u64().unwrap(),
            e.json()["value"].as_u64(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("change".into(), 1, Some(3)),
            ("change".into(), 2, Some(4)),
            ("resumed".into(), 1, None),
            ("resumed".into(), 2, None),
        ]
    );
    // Prefixes without a hash tag hold a position per partition: eight of them would
    // make an id longer than a reconnect may send, and are refused up front.
    let eight = "prefix=x%2F&".repeat(8);
    let refused = Stream::open(&format!("http://{}/v1/events?{eight}", c.edge.addr), &[]);
    assert!(refused.head().starts_with("HTTP/1.1 400"));
}

#[test]
fn an_id_older_than_the_log_gets_a_reset_and_a_fresh_snapshot_through_haproxy() {
    let c = LocalCluster::start(&["--retention-entries", "50", "--retention-secs", "0"]);
    let key = key_of(0, "old/", 0);
    let path = key
        .replace('/', "%2F")
        .replace('{', "%7B")
        .replace('}', "%7D");
    let url = format!("http://{}/v1/events?key={path}", c.front);
    let s = Stream::open(&url, &[]);
    assert_eq!(s.next().name, "snapshot");
    put(c.front, &key, "1");
    let first = s.next().id.unwrap();
    drop(s);
    // Far more writes than the log keeps, pipelined on one API connection.
    let mut w = std::net::TcpStream::connect(c.edges[1].addr).unwrap();
    let mut all = Vec::new();
    for v in 2..=1500 {
        let body = v.to_string();
        write!(
            all,
            "PUT /v1/keys/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }
    w.write_all(&all).unwrap();
    // Answers follow one another without a line end between: count status lines.
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    let count = |b: &[u8], pat: &[u8]| b.windows(pat.len()).filter(|w| *w == pat).count();
    while count(&got, b"HTTP/1.1 ") < 1499 {
        let n = w.read(&mut chunk).unwrap();
        assert!(n > 0, "the API connection ended");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        count(&got, b"HTTP/1.1 200 OK"),
        1499,
        "every write answered 200"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.store_metric(0, "ringline_store_log_trimmed_seq") == 0 {
        assert!(Instant::now() < deadline, "the log was never trimmed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = Stream::open(&url, &[&format!("Last-Event-ID: {first}")]);
    assert_eq!(s.next().name, "reset");
    let snap = s.next();
    assert_eq!(snap.name, "snapshot");
    assert_eq!(snap.json()["entries"][0]["value"].as_u64(), Some(1500));
    assert!(
        snap.id.is_some(),
        "the fresh snapshot gives the id to resume from"
    );
}

/// The HS256 secret of the auth test (test-only).
const AUTH_SECRET: &str = "a test secret of at least thirty-two bytes";

fn token(sub: &str, read: &[&str]) -> String {
    common::hs256_token(sub, serde_json::json!({ "read": read }), 600, AUTH_SECRET)
}

#[test]
fn the_token_comes_in_the_header_or_the_cookie_and_the_grant_applies() {
    let c = Cluster::start_with_auth(AUTH_SECRET);
    let url = format!("http://{}/v1/events?key=feed%2F1", c.edge.addr);
    let t = token("ann", &["feed/*"]);
    let status = |headers: &[&str], url: &str| {
        let s = Stream::open(url, headers);
        s.head().lines().next().unwrap().to_owned()
    };
    assert!(status(&[], &url).starts_with("HTTP/1.1 401"));
    assert!(status(&["Authorization: Bearer not.a.token"], &url).starts_with("HTTP/1.1 401"));
    let other = format!("http://{}/v1/events?key=secret%2F1", c.edge.addr);
    let bearer = format!("Authorization: Bearer {t}");
    assert!(status(&[&bearer], &other).starts_with("HTTP/1.1 403"));
    // A query token is refused unless the config allows it (it ends up in logs).
    let query = format!("{url}&token={t}");
    assert!(status(&[], &query).starts_with("HTTP/1.1 401"));
    for h in [
        bearer.clone(),
        format!("Cookie: theme=dark; ringline_token={t}"),
    ] {
        let s = Stream::open(&url, &[&h]);
        assert!(s.head().starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(s.next().name, "snapshot");
    }
}
