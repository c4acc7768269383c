//! The client against the real binaries: a store and two edges (built beside this test
//! by `cargo test --workspace`). Snapshot then changes, typed errors, presence, and
//! an edge SIGKILLed under a subscriber while sequenced writes flow: the subscriber
//! ends with every write exactly once, in order, with no application code beyond
//! `subscribe` (the client reconnects to the other edge and resumes by itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use ringline_client::{ChangeOp, Client, Config, Error, Event, WriteOptions};

/// A binary of the workspace, next to this test's.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let b = dir.join(name);
    assert!(
        b.exists(),
        "{} missing: cargo build --release --workspace",
        b.display()
    );
    b
}

/// A server process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` and read its `listen=ADDR` from the log line holding `marker`.
fn spawn(cmd: &mut Command, marker: &str) -> (Proc, SocketAddr) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("exited early").unwrap();
        if line.contains(marker)
            && let Some(rest) = line.split("listen=").nth(1)
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (Proc(child), addr)
}

/// A store and two edges: (processes, the edges' `/ws` URLs).
fn cluster(dir: &Path) -> (Proc, Vec<Proc>, Vec<String>) {
    let (store, addr) = spawn(
        Command::new(bin("store"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("store")),
        "serving edge links",
    );
    let map = dir.join("cluster.toml");
    let text = wire::cluster::even_split_toml(1, 256, &[("store-1", &addr.to_string())]);
    std::fs::write(&map, text).unwrap();
    let mut edges = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let (edge, addr) = spawn(
            Command::new(bin("edge"))
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--pin",
                    "false",
                    "--workers",
                    "1",
                ])
                .arg("--cluster")
                .arg(&map),
            "edge listening",
        );
        edges.push(edge);
        urls.push(format!("ws://{addr}/ws"));
    }
    // Both edges' links up: a write through each answers.
    std::thread::sleep(Duration::from_millis(300));
    (store, edges, urls)
}

fn config(urls: &[String]) -> Config {
    let mut c = Config::new(&urls[0]);
    c.urls = urls.to_vec();
    c.backoff_min = Duration::from_millis(50);
    c
}

#[tokio::test(flavor = "current_thread")]
async fn snapshot_changes_typed_errors_and_presence_in_json() {
    snapshot_changes_typed_errors_and_presence(false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn snapshot_changes_typed_errors_and_presence_in_flatbuffers() {
    snapshot_changes_typed_errors_and_presence(true).await;
}

async fn snapshot_changes_typed_errors_and_presence(binary: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _edges, urls) = cluster(dir.path());
    let mut cfg = config(&urls);
    cfg.binary = binary;
    let c = Client::connect(cfg);
    let w = c.put("doc/{1}", br#""v1""#).await.unwrap();
    assert!(w.version.is_some() && w.token.is_some());
    let mut sub = c.subscribe("doc/{1}").await.unwrap();
    let Some(Event::Snapshot {
        entries,
        last: true,
    }) = sub.next().await
    else {
        panic!("a snapshot first")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(&*entries[0].value, br#""v1""#);
    c.put("doc/{1}", br#""v2""#).await.unwrap();
    let Some(Event::Change {
        op: ChangeOp::Put { value, .. },
        ..
    }) = sub.next().await
    else {
        panic!("then the change")
    };
    assert_eq!(&*value, br#""v2""#);
    let stale = WriteOptions {
        if_version: Some(1),
        ..WriteOptions::default()
    };
    let current = c.get("doc/{1}").await.unwrap().unwrap().1;
    assert_eq!(
        c.put_with("doc/{1}", b"3", stale).await,
        Err(Error::Conflict { current })
    );
    assert!(matches!(
        c.get("@presence/x").await,
        Err(Error::Forbidden(_))
    ));
    c.join("room/{2}", br#"{"name":"a"}"#, None).await.unwrap();
    assert_eq!(c.count("room/{2}").await.unwrap(), 1);
    // A broadcast reaches every connection's inbox stream without a subscription.
    let mut inbox = c.inbox().unwrap();
    c.publish("@all", br#""to everyone""#).await.unwrap();
    let Some(Event::Change { key, .. }) = inbox.next().await else {
        panic!("the broadcast")
    };
    assert_eq!(key, "@all");
    let page = c.presence("room/{2}", None).await.unwrap();
    assert_eq!((page.total, page.members.len(), page.cursor), (1, 1, None));
    if binary {
        // The binary form carries any bytes.
        c.put("bin/{1}", b"\x00\xff").await.unwrap();
        let (v, _) = c.get("bin/{1}").await.unwrap().unwrap();
        assert_eq!(v, b"\x00\xff");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_gets_every_write_exactly_once_in_order_through_an_edge_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, mut edges, urls) = cluster(dir.path());
    // The subscriber starts on edge 0; the writer writes through edge 1.
    let reader = Client::connect(config(&urls));
    let mut sub = reader.subscribe("seq/{1}").await.unwrap();
    assert!(matches!(sub.next().await, Some(Event::Snapshot { .. })));
    let writer = Client::connect(config(&[urls[1].clone(), urls[0].clone()]));
    const N: u64 = 300;
    let writes = tokio::spawn(async move {
        for i in 1..=N {
            writer
                .put("seq/{1}", i.to_string().as_bytes())
                .await
                .unwrap();
            if i == N / 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut got = Vec::new();
    let mut killed = false;
    while got.last() != Some(&N) {
        let event = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("the subscriber stalled")
            .expect("the subscription ended");
        match event {
            Event::Change {
                op: ChangeOp::Put { value, .. },
                ..
            } => {
                got.push(std::str::from_utf8(&value).unwrap().parse::<u64>().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        if got.len() == (N / 3) as usize && !killed {
            // SIGKILL the subscriber's edge mid-stream.
            let _ = edges[0].0.kill();
            killed = true;
        }
    }
    writes.await.unwrap();
    assert!(killed);
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "every write once, in order"
    );
    edges.truncate(1);
}
