//! The cluster mesh against the real binaries: a store with a cluster secret serves
//! only links that prove it (HMAC-SHA256 over a nonce from each side,
//! `wire::link::auth`). An edge with another secret, an edge with none, and a replayed
//! handshake are refused, logged with the peer's address and counted, while a good
//! edge on the same store keeps serving its clients. Stores and edges refuse to start
//! beyond loopback without a secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{Client, change};
use common::{Edge, http_get, metric_sum, spawn_logged};
use wire::client::Response;
use wire::link::auth::{ClusterSecret, Nonce, Side};
use wire::link::{LinkEncoder, LinkLimits, LinkMessage, decode_frame};

/// A store with a cluster secret, its log kept, and its admin address.
struct SecureStore {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl SecureStore {
    fn start(dir: &Path, secret: &Path) -> Self {
        Self::start_with(dir, secret, &[])
    }

    fn start_with(dir: &Path, secret: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn_logged(
            Command::new(common::store::store_bin())
                .args(["--listen", "127.0.0.1:0", "--sync", "false"])
                // Port 0: a port picked free beforehand may be taken by another test
                // before the store binds it.
                .args(["--admin", "127.0.0.1:0"])
                .arg("--cluster-secret-file")
                .arg(secret)
                .arg("--data-dir")
                .arg(dir.join("store"))
                .args(extra),
            "serving edge links",
            "STORE_LOG",
            Some(Arc::clone(&log)),
        );
        // It logged where its admin listener is bound before it served links.
        let admin = log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("serving admin"))
            .and_then(|l| {
                l.split("listen=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("the store logs its admin address");
        Self {
            child,
            addr,
            admin,
            log,
        }
    }

    fn refused(&self) -> u64 {
        self.dropped("unauthenticated")
    }

    fn dropped(&self, reason: &str) -> u64 {
        metric_sum(
            &http_get(self.admin, "/metrics").1,
            &format!("ringline_store_links_dropped_total{{reason=\"{reason}\"}}"),
        )
    }

    /// Wait until `n` links were refused, and return the log lines that say so.
    fn wait_refused(&self, n: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.refused() < n {
            assert!(
                Instant::now() < deadline,
                "{} refused, wanted {n}",
                self.refused()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.refusals()
    }

    /// The "link refused" lines so far, once one contains `what` (a refused edge that
    /// went away may still have had attempts under way: their lines can come first).
    fn wait_refusal(&self, what: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.refusals();
            if lines.iter().any(|l| l.contains(what)) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn refusals(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains("link refused"))
            .cloned()
            .collect()
    }
}

impl Drop for SecureStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_secret(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("{}\n", (byte as char).to_string().repeat(44)),
    )
    .unwrap();
    path
}

fn map_for(dir: &Path, store: SocketAddr) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(
        &path,
        wire::cluster::even_split_toml(1, 256, &[("store-1", &store.to_string())]),
    )
    .unwrap();
    path
}

/// One frame from `s` (blocking): the message's kind and its raw bytes.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(wire::link::Kind, Vec<u8>)> {
    loop {
        if let Ok(Some((f, used))) = decode_frame(buf, &LinkLimits::default()) {
            let kind = f.message.kind();
            let raw = buf[..used].to_vec();
            buf.drain(..used);
            return Some((kind, raw));
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A handshake done by hand with the right secret: the bytes this "edge" sent (its
/// hello and its proof), as a recording on the wire would show them.
fn legit_handshake(store: SocketAddr, secret: &ClusterSecret) -> Vec<u8> {
    let mut s = TcpStream::connect(store).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut enc = LinkEncoder::default();
    let edge_nonce = Nonce([0x5a; 32]);
    let mut sent = Vec::new();
    enc.hello(&mut sent, 0, "recorded-edge", 0, 1, Some(&edge_nonce))
        .unwrap();
    s.write_all(&sent).unwrap();
    let mut buf = Vec::new();
    let (kind, raw) = read_frame(&mut s, &mut buf).expect("a challenge");
    assert_eq!(kind, wire::link::Kind::AuthChallenge);
    let Some((frame, _)) = decode_frame(&raw, &LinkLimits::default()).unwrap() else {
        unreachable!()
    };
    let LinkMessage::AuthChallenge(c) = frame.message else {
        unreachable!()
    };
    let store_nonce = Nonce::from_slice(c.nonce().bytes()).unwrap();
    assert!(secret.verify(Side::Store, &edge_nonce, &store_nonce, c.proof().bytes()));
    let mut proof = Vec::new();
    enc.auth_proof(
        &mut proof,
        0,
        &secret.prove(Side::Edge, &edge_nonce, &store_nonce),
    )
    .unwrap();
    s.write_all(&proof).unwrap();
    sent.extend_from_slice(&proof);
    let (kind, _) = read_frame(&mut s, &mut buf).expect("the hello's answer");
    assert_eq!(
        kind,
        wire::link::Kind::HelloAck,
        "the right proof is served"
    );
    sent
}

#[test]
fn only_links_that_prove_the_cluster_secret_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_secret(dir.path(), "cluster.secret", b'g');
    let wrong = write_secret(dir.path(), "wrong.secret", b'w');
    let store = SecureStore::start(dir.path(), &good);
    let map = map_for(dir.path(), store.addr);
    let map = map.to_str().unwrap();
    let edge = Edge::start(&[
        "--cluster",
        map,
        "--cluster-secret-file",
        good.to_str().unwrap(),
    ]);
    edge.wait_links_up();
    let mut watcher = Client::json(edge.addr);
    watcher.sub(1, "mesh/k", None);
    assert!(matches!(watcher.recv(), Response::Snapshot { .. }));
    let mut writer = Client::json(edge.addr);
    let mut n = 0;
    let mut write_and_see = |writer: &mut Client, watcher: &mut Client| {
        n += 1;
        let v = format!("\"{n}\"");
        assert!(matches!(
            writer.put(10 + n, "mesh/k", &v),
            Response::Ok { .. }
        ));
        assert_eq!(change(&watcher.recv()).0, v);
    };
    write_and_see(&mut writer, &mut watcher);

    // Another secret: the edge refuses the store's proof (and the store never sees a
    // proof it accepts); the edge counts it.
    let bad = Edge::start(&[
        "--cluster",
        map,
        "--cluster-secret-file",
        wrong.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bad.metric("ringline_edge_link_auth_failed_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "the wrong secret was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = bad.http("/metrics");
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("ringline_edge_link_state{") && l.ends_with(" 2"))
    );
    // The store counts the links that never proved anything.
    store.wait_refused(1);
    let refused_before = store.refused();
    drop(bad);
    write_and_see(&mut writer, &mut watcher);

    // No secret: the hello carries no nonce; the store refuses it at once.
    let none = Edge::start(&["--cluster", map]);
    store.wait_refused(refused_before + 1);
    let lines = store.wait_refusal("without the cluster secret");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("peer=127.0.0.1:") && l.contains("without the cluster secret")),
        "{lines:?}"
    );
    drop(none);
    write_and_see(&mut writer, &mut watcher);

    // A replayed handshake: the recorded hello and proof, sent again, meet a fresh
    // nonce; the store drops the link without answering the hello.
    let secret = ClusterSecret::from_file_bytes(&std::fs::read(&good).unwrap()).unwrap();
    let recorded = legit_handshake(store.addr, &secret);
    let before = store.refused();
    let mut replay = TcpStream::connect(store.addr).unwrap();
    replay
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    replay.write_all(&recorded).unwrap();
    let mut buf = Vec::new();
    let mut kinds = Vec::new();
    while let Some((kind, _)) = read_frame(&mut replay, &mut buf) {
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [wire::link::Kind::AuthChallenge],
        "only a new challenge, then closed"
    );
    store.wait_refused(before + 1);
    let lines = store.wait_refusal("replayed");
    assert!(lines.iter().any(|l| l.contains("replayed")), "{lines:?}");
    write_and_see(&mut writer, &mut watcher);
    assert_eq!(edge.metric("ringline_edge_link_auth_failed_total"), 0);
}

#[test]
fn beyond_loopback_a_store_and_an_edge_refuse_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::store::store_bin())
        .args(["--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("beyond loopback, without a cluster secret"),
        "{err}"
    );
    let map = map_for(dir.path(), "10.1.2.3:7400".parse().unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--listen", "127.0.0.1:0", "--cluster"])
        .arg(&map)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("beyond loopback, and there is no cluster secret"),
        "{err}"
    );
    // A secret too short is refused too.
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "tiny\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--listen", "127.0.0.1:0", "--cluster"])
        .arg(&map)
        .arg("--cluster-secret-file")
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
}

#[test]
fn links_in_tls_carry_requests_and_cleartext_or_untrusting_edges_are_refused() {
    use common::tls::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path(), "cluster.secret", b's');
    let ca = TestCa::new();
    let leaf = ca.leaf(&["store-1"], "store-1");
    let store = SecureStore::start_with(
        dir.path(),
        &secret,
        &[
            "--link-tls-cert".as_ref(),
            leaf.cert.as_os_str(),
            "--link-tls-key".as_ref(),
            leaf.key.as_os_str(),
        ],
    );
    let map = map_for(dir.path(), store.addr);
    let (map, secret) = (map.to_str().unwrap(), secret.to_str().unwrap());
    let ca_pem = ca.ca_pem.to_str().unwrap();
    let edge = Edge::start(&[
        "--cluster",
        map,
        "--cluster-secret-file",
        secret,
        "--link-tls-ca-file",
        ca_pem,
    ]);
    edge.wait_links_up();
    let mut watcher = Client::json(edge.addr);
    watcher.sub(1, "mesh/tls", None);
    assert!(matches!(watcher.recv(), Response::Snapshot { .. }));
    let mut writer = Client::json(edge.addr);
    assert!(matches!(
        writer.put(2, "mesh/tls", "\"sealed\""),
        Response::Ok { .. }
    ));
    assert_eq!(change(&watcher.recv()).0, "\"sealed\"");

    // An edge speaking cleartext to it: its hello is no TLS handshake.
    let clear = Edge::start(&["--cluster", map, "--cluster-secret-file", secret]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dropped("tls") == 0 {
        assert!(
            Instant::now() < deadline,
            "a cleartext link was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(clear);
    // An edge trusting another CA refuses the store's certificate.
    let other = TestCa::new();
    let before = store.dropped("tls");
    let untrusting = Edge::start(&[
        "--cluster",
        map,
        "--cluster-secret-file",
        secret,
        "--link-tls-ca-file",
        other.ca_pem.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dropped("tls") == before {
        assert!(
            Instant::now() < deadline,
            "an untrusting edge's link was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = untrusting.http("/metrics");
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("ringline_edge_link_state{") && l.ends_with(" 2"))
    );
    drop(untrusting);
    assert!(matches!(
        writer.put(3, "mesh/tls", "\"still\""),
        Response::Ok { .. }
    ));
    assert_eq!(change(&watcher.recv()).0, "\"still\"");
}
