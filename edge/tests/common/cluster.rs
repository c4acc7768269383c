//! A local cluster for scenario tests: two real stores (partitions split by the map),
//! two real edges, and real HAProxy in front (the config users start from,
//! `tuning/haproxy/haproxy.cfg`, pointed at the test's edges).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Edge;
use super::store::Store;

/// Partitions of the test cluster's map (store 1 owns the first half).
pub const PARTITIONS: u32 = 16;

pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub stores: Vec<Store>,
    pub edges: Vec<Edge>,
    pub haproxy: Child,
    /// Where clients connect: HAProxy.
    pub front: SocketAddr,
    /// Each store's admin (metrics) address.
    pub admin: Vec<SocketAddr>,
}

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn map(a: &str, b: &str) -> String {
    wire::cluster::even_split_toml(1, PARTITIONS, &[("store-1", a), ("store-2", b)])
}

/// The store (0 or 1) that owns `key`.
pub fn store_of(key: &str) -> usize {
    usize::from(wire::partition::partition_of(key.as_bytes(), PARTITIONS) >= PARTITIONS / 2)
}

/// A key of store `s` (0 or 1), the `n`th such.
pub fn key_of(s: usize, prefix: &str, n: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| store_of(k) == s)
        .nth(n)
        .unwrap()
}

fn haproxy_bin() -> PathBuf {
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("haproxy is missing: run scripts/interop-setup.sh (make test does)")
}

impl LocalCluster {
    /// Start it all; `store_flags` go to both stores (e.g. retention).
    pub fn start(store_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let placeholder = dir.path().join("stores.toml");
        std::fs::write(&placeholder, map("127.0.0.1:1", "127.0.0.1:2")).unwrap();
        let p = placeholder.to_str().unwrap().to_owned();
        let mut stores = Vec::new();
        let mut admin = Vec::new();
        for id in ["store-1", "store-2"] {
            let port = free_port();
            admin.push(SocketAddr::from(([127, 0, 0, 1], port)));
            let admin_addr = format!("127.0.0.1:{port}");
            let mut flags = vec!["--store-id", id, "--cluster", &p, "--admin", &admin_addr];
            flags.extend_from_slice(store_flags);
            stores.push(Store::start_in(&dir.path().join(id), "127.0.0.1:0", &flags));
        }
        let edge_map = dir.path().join("cluster.toml");
        std::fs::write(
            &edge_map,
            map(&stores[0].addr.to_string(), &stores[1].addr.to_string()),
        )
        .unwrap();
        let m = edge_map.to_str().unwrap();
        let edges: Vec<Edge> = (0..2)
            .map(|_| {
                Edge::start(&[
                    "--cluster",
                    m,
                    "--drain-secs",
                    "6",
                    "--max-connections",
                    "4000",
                ])
            })
            .collect();
        for e in &edges {
            e.wait_links_up();
        }
        let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let haproxy = Self::start_haproxy(dir.path(), front, &edges);
        Self {
            dir,
            stores,
            edges,
            haproxy,
            front,
            admin,
        }
    }

    fn start_haproxy(dir: &Path, front: SocketAddr, edges: &[Edge]) -> Child {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/haproxy/haproxy.cfg"),
        )
        .unwrap();
        let mut servers = String::new();
        for (i, e) in edges.iter().enumerate() {
            servers.push_str(&format!("    server edge{} {} check\n", i + 1, e.addr));
        }
        let cfg: String = template
            .lines()
            .filter(|l| !l.trim_start().starts_with("server edge"))
            .map(|l| match l.trim() {
                "bind :8080" => format!("    bind {front}\n"),
                "maxconn 1000000" => "    maxconn 9000\n".to_owned(),
                "log stderr format short local0 notice" => String::new(),
                _ => format!("{l}\n"),
            })
            .collect::<String>()
            + &servers;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new(haproxy_bin())
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Up once both edges pass their health checks through it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(front) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(
                    s,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                );
                let mut t = String::new();
                let _ = s.read_to_string(&mut t);
                if t.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "haproxy never came up");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Give the second edge's checks time to pass too (rise 2, inter 1 s).
        std::thread::sleep(Duration::from_millis(2500));
        child
    }

    /// A figure of store `s`'s `/metrics`, summed over labels.
    pub fn store_metric(&self, s: usize, name: &str) -> u64 {
        super::metric_sum(&super::http_get(self.admin[s], "/metrics").1, name)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}
