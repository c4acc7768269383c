//! A local cluster for scenario tests: two real stores (partitions split by the map),
//! two real edges, and real HAProxy in front (the config users start from,
//! `tuning/haproxy/haproxy.cfg`, pointed at the test's edges; or
//! `tuning/haproxy/haproxy-tls.cfg`, terminating TLS with a test CA's certificate and
//! sending the PROXY protocol to the edges).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Edge;
use super::store::Store;

/// The address HAProxy connects to the edges from when it terminates TLS.
pub const TLS_HAPROXY_SOURCE: &str = "127.0.0.2";

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
        Self::launch(store_flags, &[], None)
    }

    /// Start it all; `store_flags` go to both stores, `edge_flags` to both edges.
    pub fn start_with(store_flags: &[&str], edge_flags: &[&str]) -> Self {
        Self::launch(store_flags, edge_flags, None)
    }

    /// Start it all with HAProxy terminating TLS with `pem` (the chain, then the key)
    /// and sending the PROXY protocol from [`TLS_HAPROXY_SOURCE`] (the test itself
    /// talks to the edges from 127.0.0.1, without a header); `edge_flags` go to both
    /// edges.
    pub fn start_tls(store_flags: &[&str], edge_flags: &[&str], pem: &Path) -> Self {
        let mut flags = vec!["--proxy-protocol-from", TLS_HAPROXY_SOURCE];
        flags.extend_from_slice(edge_flags);
        Self::launch(store_flags, &flags, Some(pem))
    }

    fn launch(store_flags: &[&str], edge_flags: &[&str], tls: Option<&Path>) -> Self {
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
                let mut flags = vec![
                    "--cluster",
                    m,
                    "--drain-secs",
                    "6",
                    "--max-connections",
                    "4000",
                ];
                flags.extend_from_slice(edge_flags);
                Edge::start(&flags)
            })
            .collect();
        for e in &edges {
            e.wait_links_up();
        }
        let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let haproxy = Self::start_haproxy(dir.path(), front, &edges, tls);
        Self {
            dir,
            stores,
            edges,
            haproxy,
            front,
            admin,
        }
    }

    fn start_haproxy(dir: &Path, front: SocketAddr, edges: &[Edge], tls: Option<&Path>) -> Child {
        let file = if tls.is_some() {
            "haproxy-tls.cfg"
        } else {
            "haproxy.cfg"
        };
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tuning/haproxy")
                .join(file),
        )
        .unwrap();
        let sock = dir.join("haproxy.sock");
        let mut servers = String::new();
        for (i, e) in edges.iter().enumerate() {
            servers.push_str(&format!("    server edge{} {} check\n", i + 1, e.addr));
        }
        let cfg: String = template
            .lines()
            .filter(|l| !l.trim_start().starts_with("server edge"))
            .map(|l| match l.trim() {
                // Its runtime API, to see its servers' health.
                "global" => format!("global\n    stats socket {}\n", sock.display()),
                "bind :8080" => format!("    bind {front}\n"),
                l if l.starts_with("default-server ") && tls.is_some() => {
                    format!("    {l} source {TLS_HAPROXY_SOURCE}\n")
                }
                l if l.starts_with("bind :443 ssl crt ") => {
                    let pem = tls.unwrap().display();
                    format!("    bind {front} ssl crt {pem} alpn http/1.1\n")
                }
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
        // (Through TLS: the runtime API below says when it is up.)
        while tls.is_none() {
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
        // And once each edge has passed a health check (its traffic goes to both).
        loop {
            let servers = haproxy_servers(&sock);
            if servers.len() == edges.len()
                && servers
                    .iter()
                    .all(|(_, status, check)| status == "UP" && check == "L7OK")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy's edges never passed their checks: {servers:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// A figure of store `s`'s `/metrics`, summed over labels.
    pub fn store_metric(&self, s: usize, name: &str) -> u64 {
        super::metric_sum(&super::http_get(self.admin[s], "/metrics").1, name)
    }
}

/// Each server of HAProxy's backend `edges`: (name, status, last check's status), from
/// `show stat` on its runtime API at `sock` (empty while it is not up).
fn haproxy_servers(sock: &Path) -> Vec<(String, String, String)> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return Vec::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut csv = String::new();
    if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut csv).is_err() {
        return Vec::new();
    }
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(status), Some(check)) = (col("status"), col("check_status")) else {
        return Vec::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"edges") && f.get(1).is_some_and(|s| s.starts_with("edge")))
        .map(|f| {
            let field = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            (field(1), field(status), field(check))
        })
        .collect()
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}
