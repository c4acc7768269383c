//! Real clients against the real edge: Python `websockets` and Node `ws` exchange text,
//! binary, fragmented and pipelined messages, a ping that must get the pong with its
//! payload, and a clean close on `/echo`; a page in headless Chromium exchanges text
//! and binary and closes cleanly. The same three subscribe, write and receive through
//! `/ws` with a real store behind the edge (Python and Node also ping there; Python
//! also resumes with a token).
//! The three also run `/echo` over `wss://`, trusting only a test CA (`rcgen`), and
//! `/echo` and `/ws` against an edge with compression on, where each must agree
//! `permessage-deflate` in its handshake and the edge must have inflated and sent
//! compressed messages.
//! Their installation is `scripts/interop-setup.sh` (run by `make test`); a missing
//! client fails the test with that instruction rather than skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::Edge;
use common::store::Cluster;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &Path, args: &[&str], env: &[(&str, PathBuf)]) {
    assert!(
        program.components().count() == 1 || program.exists(),
        "{} is missing: run scripts/interop-setup.sh (make test does)",
        program.display()
    );
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_websockets_echo() {
    let edge = Edge::start(&[]);
    let url = format!("ws://{}/echo", edge.addr);
    let script = root().join("edge/tests/interop/echo_client.py");
    run(
        &root().join(".venv-interop/bin/python"),
        &[script.to_str().unwrap(), &url],
        &[],
    );
}

#[test]
fn node_ws_echo() {
    let edge = Edge::start(&[]);
    let url = format!("ws://{}/echo", edge.addr);
    let script = root().join("edge/tests/interop/echo_client.cjs");
    let modules = root().join(".interop-node/node_modules");
    assert!(
        modules.join("ws").exists(),
        "Node ws is missing: run scripts/interop-setup.sh (make test does)"
    );
    run(
        Path::new("node"),
        &[script.to_str().unwrap(), &url],
        &[("NODE_PATH", root().join(".interop-node/node_modules"))],
    );
}

/// An edge with a TLS listener and a certificate for `localhost` from a fresh CA.
fn tls_edge() -> (common::tls::TestCa, common::tls::Leaf, common::tls::TlsEdge) {
    let ca = common::tls::TestCa::new();
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], "edge");
    let edge = common::tls::TlsEdge::start(&[&leaf], &[]);
    (ca, leaf, edge)
}

#[test]
fn python_websockets_echo_over_wss() {
    let (ca, _leaf, edge) = tls_edge();
    let url = format!("wss://localhost:{}/echo", edge.tls.port());
    let script = root().join("edge/tests/interop/echo_client.py");
    run(
        &root().join(".venv-interop/bin/python"),
        &[script.to_str().unwrap(), &url],
        &[("RINGLINE_CA", ca.ca_pem.clone())],
    );
    assert!(edge.metric("ringline_edge_tls_handshakes_total") >= 1);
}

#[test]
fn node_ws_echo_over_wss() {
    let (ca, _leaf, edge) = tls_edge();
    let url = format!("wss://localhost:{}/echo", edge.tls.port());
    let script = root().join("edge/tests/interop/echo_client.cjs");
    run(
        Path::new("node"),
        &[script.to_str().unwrap(), &url],
        &[
            ("NODE_PATH", root().join(".interop-node/node_modules")),
            ("RINGLINE_CA", ca.ca_pem.clone()),
        ],
    );
    assert!(edge.metric("ringline_edge_tls_handshakes_total") >= 1);
}

#[test]
fn headless_chromium_page_echo_over_wss() {
    let (_ca, leaf, edge) = tls_edge();
    let url = format!("wss://localhost:{}/echo", edge.tls.port());
    // Chromium trusts the edge's key by its hash (no system CA store is touched).
    let trust = format!("--ignore-certificate-errors-spki-list={}", leaf.spki_sha256);
    let closes = page_closes(edge.addr, "echo_page.html", &url, &[&trust]);
    assert_eq!(closes, (1, 0), "the page did not finish its exchange");
    assert_eq!(edge.metric("ringline_edge_messages_in_total"), 3);
    assert!(edge.metric("ringline_edge_tls_handshakes_total") >= 1);
}

#[test]
fn python_websockets_client_protocol() {
    let c = Cluster::start();
    let url = format!("ws://{}/ws", c.edge.addr);
    let script = root().join("edge/tests/interop/ws_client.py");
    run(
        &root().join(".venv-interop/bin/python"),
        &[script.to_str().unwrap(), &url],
        &[],
    );
}

#[test]
fn node_ws_client_protocol() {
    let c = Cluster::start();
    let url = format!("ws://{}/ws", c.edge.addr);
    let script = root().join("edge/tests/interop/ws_client.cjs");
    run(
        Path::new("node"),
        &[script.to_str().unwrap(), &url],
        &[("NODE_PATH", root().join(".interop-node/node_modules"))],
    );
}

#[test]
fn headless_chromium_page_echo() {
    let edge = Edge::start(&[]);
    chromium_page(&edge, "echo_page.html", "/echo");
    assert_eq!(edge.metric("ringline_edge_messages_in_total"), 3);
}

#[test]
fn headless_chromium_page_client_protocol() {
    let c = Cluster::start();
    chromium_page(&c.edge, "ws_page.html", "/ws");
    // sub + two puts, all answered.
    assert_eq!(c.edge.metric("ringline_edge_messages_in_total"), 3);
}

/// Compression on, and for messages of 32 B or more: the scripts' protocol messages
/// are short (a change with its compact token, under the default 128 B).
const COMPRESSION: [&str; 4] = ["--compression", "true", "--compression-min-bytes", "32"];
const EXPECT_DEFLATE: (&str, &str) = ("RINGLINE_EXPECT_DEFLATE", "1");

/// After a client's exchange with compression on: the edge compressed what it sent,
/// and (`inflated`) inflated what came compressed (figures published once a tick).
fn compressed(edge: &Edge, inflated: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (i, o) = (
            edge.metric("ringline_edge_compressed_in_total"),
            edge.metric("ringline_edge_compressed_out_total"),
        );
        if (i > 0 || !inflated) && o > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compressed in {i}, out {o}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn run_env(program: &Path, args: &[&str], env: &[(&str, PathBuf)], extra: (&str, &str)) {
    let mut env: Vec<(&str, PathBuf)> = env.to_vec();
    env.push((extra.0, PathBuf::from(extra.1)));
    run(program, args, &env);
}

#[test]
fn python_websockets_echo_and_client_protocol_compressed() {
    let python = root().join(".venv-interop/bin/python");
    let edge = Edge::start(&COMPRESSION);
    let url = format!("ws://{}/echo", edge.addr);
    let script = root().join("edge/tests/interop/echo_client.py");
    run_env(
        &python,
        &[script.to_str().unwrap(), &url],
        &[],
        EXPECT_DEFLATE,
    );
    compressed(&edge, true);
    let c = Cluster::start_with(&COMPRESSION);
    let url = format!("ws://{}/ws", c.edge.addr);
    let script = root().join("edge/tests/interop/ws_client.py");
    run_env(
        &python,
        &[script.to_str().unwrap(), &url],
        &[],
        EXPECT_DEFLATE,
    );
    compressed(&c.edge, true);
}

#[test]
fn node_ws_echo_and_client_protocol_compressed() {
    let modules = [("NODE_PATH", root().join(".interop-node/node_modules"))];
    let edge = Edge::start(&COMPRESSION);
    let url = format!("ws://{}/echo", edge.addr);
    let script = root().join("edge/tests/interop/echo_client.cjs");
    run_env(
        Path::new("node"),
        &[script.to_str().unwrap(), &url],
        &modules,
        EXPECT_DEFLATE,
    );
    compressed(&edge, true);
    let c = Cluster::start_with(&COMPRESSION);
    let url = format!("ws://{}/ws", c.edge.addr);
    let script = root().join("edge/tests/interop/ws_client.cjs");
    run_env(
        Path::new("node"),
        &[script.to_str().unwrap(), &url],
        &modules,
        EXPECT_DEFLATE,
    );
    // Node compresses only messages of 1 KiB or more (its echo's 70,000 bytes came so,
    // its requests here do not).
    compressed(&c.edge, false);
}

#[test]
fn headless_chromium_pages_compressed() {
    let edge = Edge::start(&COMPRESSION);
    chromium_page_with(&edge, "echo_page.html", "/echo", "&deflate=1");
    compressed(&edge, true);
    let c = Cluster::start_with(&COMPRESSION);
    chromium_page_with(&c.edge, "ws_page.html", "/ws", "&deflate=1");
    compressed(&c.edge, true);
}

/// Open `page` in headless Chromium against `path` on the edge; the page closes with
/// 1000 when its exchange succeeded, 4000 otherwise.
fn chromium_page(edge: &Edge, page: &str, path: &str) {
    chromium_page_with(edge, page, path, "");
}

/// [`chromium_page`] with `query` (`&name=value...`) added to the page's URL.
fn chromium_page_with(edge: &Edge, page: &str, path: &str, query: &str) {
    let url = format!("ws://{}{path}{query}", edge.addr);
    let closes = page_closes(edge.addr, page, &url, &[]);
    assert_eq!(closes, (1, 0), "the page did not finish its exchange");
}

/// Open `page` in headless Chromium (with `flags`) against WebSocket `url`; wait up to
/// 60 s for its close (the page closes with 1000 only after its exchange succeeded,
/// 4000 otherwise, and the edge answers with the same code). Returns how many
/// 1000 and 4000 closes the edge at `metrics` sent.
fn page_closes(metrics: std::net::SocketAddr, page: &str, url: &str, flags: &[&str]) -> (u64, u64) {
    let page = root().join("edge/tests/interop").join(page);
    let page = std::fs::canonicalize(page).unwrap();
    let url = format!("file://{}?ws={}", page.display(), url);
    let (mut browser, _profile) = chromium_with(&url, flags);
    let sent = |code: &str| {
        let body = common::http_get(metrics, "/metrics").1;
        common::metric_sum(
            &body,
            &format!("ringline_edge_close_frames_sent_total{{code=\"{code}\"}}"),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let closes = loop {
        let n = sent("1000");
        if n > 0 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = browser.kill();
    let _ = browser.wait();
    (closes, sent("4000"))
}

#[test]
fn the_demo_page_at_root_subscribes_writes_and_shows_the_change() {
    let c = Cluster::start();
    let (head, body) = c.edge.http("/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(
        body.contains("/ringline.min.js"),
        "the page runs on the client library"
    );
    let (head, js) = c.edge.http("/ringline.min.js");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/javascript"),
        "{head}"
    );
    assert!(js.contains("ringline.v2.json"));
    // The page drives its own buttons in selftest mode and, once it has shown the
    // change, writes <key>/done.
    let url = format!("http://{}/?selftest=demo/{{page}}/k", c.edge.addr);
    let (mut browser, _profile) = chromium(&url);
    let mut ws = common::ws::Ws::connect_with(c.edge.addr, "/ws", None).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        ws.send(
            true,
            wire::frame::Opcode::Text,
            br#"{"op":"get","id":1,"key":"demo/{page}/k/done"}"#,
        );
        let common::ws::Msg::Text(t) = ws.recv() else {
            panic!("no answer")
        };
        if t.contains(r#""value":true"#) || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = browser.kill();
    let _ = browser.wait();
    assert!(
        done.contains(r#""value":true"#),
        "the page never saw its change: {done}"
    );
}

#[test]
fn a_page_reload_resumes_from_the_token_the_client_library_kept() {
    let c = Cluster::start();
    let key = "demo/{reload}/k";
    let url = format!("http://{}/?reloadtest={key}", c.edge.addr);
    let (mut browser, _profile) = chromium(&url);
    let mut ws = common::ws::Ws::connect_with(c.edge.addr, "/ws", None).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let get = format!(r#"{{"op":"get","id":1,"key":"{key}/done"}}"#);
        ws.send(true, wire::frame::Opcode::Text, get.as_bytes());
        let common::ws::Msg::Text(t) = ws.recv() else {
            panic!("no answer")
        };
        if t.contains(r#""value":""#) || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = browser.kill();
    let _ = browser.wait();
    assert!(
        done.contains(r#""value":"resumed""#),
        "after the reload the page did not resume with exactly the missed change: {done}"
    );
}

/// The value of `key` once it is set, read through `w` (within 90 s).
fn wait_value(w: &mut common::client::Client, key: &str) -> serde_json::Value {
    use wire::client::{Request, Response};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let r = w.call(&Request::Get {
            id: 1,
            key: key.into(),
        });
        if let Response::Value { value: Some(v), .. } = r {
            return serde_json::from_slice(&v).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{key} was never set");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn event_sources_in_chromium_through_haproxy_miss_nothing_across_an_edge_sigkill() {
    use common::cluster::{LocalCluster, key_of};
    use wire::client::{ErrorCode, Response};
    let c = LocalCluster::start(&[]);
    let key = key_of(1, "sse/", 0);
    let n = 2000u64;
    let q = key
        .replace('/', "%2F")
        .replace('{', "%7B")
        .replace('}', "%7D");
    let url = format!("http://{}/?ssetest={q}&n={n}&streams=4", c.front);
    let (mut browser, _profile) = chromium(&url);
    let mut w = common::client::Client::json(c.edges[1].addr);
    wait_value(&mut w, &format!("{key}/ready"));
    // HAProxy (leastconn) put some of the four streams on edge 0.
    assert!(c.edges[0].metric("ringline_edge_event_streams_total") >= 1);
    let t0 = std::time::Instant::now();
    for i in 1..=n {
        if i == n / 5 {
            c.edges[0].signal("KILL");
        }
        // Paced at 500 writes/s: the streams on edge 0 come back while writes flow.
        let due = t0 + std::time::Duration::from_millis(i * 2);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        loop {
            match w.put(i, &key, &i.to_string()) {
                Response::Ok { .. } => break,
                Response::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => std::thread::sleep(std::time::Duration::from_millis(20)),
                r => panic!("write {i}: {r:?}"),
            }
        }
    }
    let report = wait_value(&mut w, &format!("{key}/done"));
    let _ = browser.kill();
    let _ = browser.wait();
    let want: Vec<u64> = (1..=n).collect();
    let streams = report.as_array().unwrap();
    assert_eq!(streams.len(), 4);
    for (s, r) in streams.iter().enumerate() {
        let got: Vec<u64> = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            got == want,
            "stream {s}: not every write exactly once in order: {r}"
        );
        assert_eq!(r["resets"], 0, "stream {s}");
    }
    let broken = streams
        .iter()
        .filter(|r| r["errors"].as_u64() > Some(0))
        .count();
    assert!(broken >= 1, "no stream saw the kill: {report}");
    eprintln!(
        "{broken} of 4 EventSources moved to the other edge; each got all {n} writes once, in order"
    );
}

/// Headless Chromium on `url`, with a throw-away profile (kept alive by the caller).
fn chromium(url: &str) -> (std::process::Child, tempfile::TempDir) {
    chromium_with(url, &[])
}

/// [`chromium`] with extra command-line `flags`.
fn chromium_with(url: &str, flags: &[&str]) -> (std::process::Child, tempfile::TempDir) {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("chromium is missing: run scripts/interop-setup.sh (make test does)");
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, profile)
}
