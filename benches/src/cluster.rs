//! A local cluster for the measuring tools: two real stores (partitions split by the
//! map), edges, and optionally real HAProxy in front, all on loopback. Children are
//! killed when the [`Cluster`] is dropped.
#![allow(clippy::panic)] // a measuring tool should stop loudly on any failure

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Partitions of the map.
pub const PARTITIONS: u32 = 64;

/// Stores, edges and HAProxy started for a measurement.
#[derive(Debug)]
pub struct Cluster {
    /// Holds the stores' data and the configs.
    pub dir: tempfile::TempDir,
    /// The stores.
    pub stores: Vec<Child>,
    /// The stores' admin addresses (`/metrics`).
    pub store_admins: Vec<SocketAddr>,
    /// The edges and their client addresses.
    pub edges: Vec<(Child, SocketAddr)>,
    /// HAProxy and its front address, when started.
    pub haproxy: Option<(Child, SocketAddr)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn map(a: &str, b: &str) -> String {
    wire::cluster::even_split_toml(1, PARTITIONS, &[("store-1", a), ("store-2", b)])
}

/// The store (0 or 1) owning `key`.
pub fn store_of(key: &str) -> usize {
    usize::from(wire::partition::partition_of(key.as_bytes(), PARTITIONS) >= PARTITIONS / 2)
}

/// The `n`th key of store `s` made of `prefix` and a number.
pub fn key_of(s: usize, prefix: &str, n: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| store_of(k) == s)
        .nth(n)
        .unwrap_or_default()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// GET `path` on `addr`: the whole answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut text = String::new();
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut text);
    }
    text
}

impl Cluster {
    /// Two stores (each with `store_args`) and `edges` edges (each with `edge_args`),
    /// links up; HAProxy in
    /// front (the shipped `tuning/haproxy/haproxy.cfg`) when `haproxy`.
    pub fn start(store_args: &[&str], edges: usize, edge_args: &[&str], haproxy: bool) -> Self {
        // The binaries sit beside the tool's own (one folder up from a test binary).
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current exe: {e}"));
        let bin_dir = exe
            .ancestors()
            .skip(1)
            .take(2)
            .find(|d| d.join("store").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no store binary near {}: build the workspace",
                    exe.display()
                )
            });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let placeholder = dir.path().join("stores.toml");
        write(&placeholder, &map("127.0.0.1:1", "127.0.0.1:2"));
        let mut stores = Vec::new();
        let mut addrs = Vec::new();
        let mut store_admins = Vec::new();
        for id in ["store-1", "store-2"] {
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            store_admins.push(admin);
            let (child, addr) = crate::spawn_listening(
                Command::new(bin_dir.join("store"))
                    .args(["--listen", "127.0.0.1:0", "--admin"])
                    .arg(admin.to_string())
                    .args(store_args)
                    .args(["--store-id", id, "--cluster"])
                    .arg(&placeholder)
                    .arg("--data-dir")
                    .arg(dir.path().join(id))
                    .env("RUST_LOG", "warn,store=info"),
                "serving edge links",
            );
            stores.push(child);
            addrs.push(addr.to_string());
        }
        let edge_map = dir.path().join("cluster.toml");
        write(&edge_map, &map(&addrs[0], &addrs[1]));
        let mut started = Vec::new();
        for _ in 0..edges {
            let (child, addr) = crate::spawn_listening(
                Command::new(bin_dir.join("edge"))
                    .args(["--listen", "127.0.0.1:0", "--pin", "false"])
                    // A benchmark's writer sends faster than a client may by default.
                    .args(["--messages-per-sec", "0", "--cluster"])
                    .arg(&edge_map)
                    .args(edge_args)
                    .env("RUST_LOG", "warn,edge=info"),
                "edge listening",
            );
            started.push((child, addr));
        }
        for (_, addr) in &started {
            wait_links(*addr);
        }
        let haproxy = haproxy.then(|| start_haproxy(dir.path(), &started));
        Self {
            dir,
            stores,
            store_admins,
            edges: started,
            haproxy,
        }
    }
}

/// Wait until every link of the edge at `addr` is up.
pub fn wait_links(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http_get(addr, "/metrics");
        let states: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ringline_edge_link_state{"))
            .collect();
        if !states.is_empty() && states.iter().all(|l| l.ends_with(" 2")) {
            return;
        }
        assert!(Instant::now() < deadline, "store links never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_haproxy(dir: &Path, edges: &[(Child, SocketAddr)]) -> (Child, SocketAddr) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(root.join("tuning/haproxy/haproxy.cfg"))
        .unwrap_or_else(|e| panic!("haproxy template: {e}"));
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cfg: String = template
        .lines()
        .filter(|l| !l.trim_start().starts_with("server edge"))
        .map(|l| match l.trim() {
            "bind :8080" => format!("    bind {front}\n"),
            "maxconn 1000000" => "    maxconn 9000\n".to_owned(),
            "log stderr format short local0 notice" => String::new(),
            _ => format!("{l}\n"),
        })
        .collect();
    for (i, (_, addr)) in edges.iter().enumerate() {
        cfg.push_str(&format!("    server edge{} {addr} check\n", i + 1));
    }
    let path = dir.join("haproxy.cfg");
    write(&path, &cfg);
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("haproxy (bash scripts/interop-setup.sh installs it): {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(front, "/healthz").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "haproxy never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every edge's checks pass (rise 2, inter 1 s).
    std::thread::sleep(Duration::from_millis(2500));
    (child, front)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self
            .edges
            .iter_mut()
            .map(|(c, _)| c)
            .chain(self.haproxy.iter_mut().map(|(c, _)| c))
            .chain(self.stores.iter_mut());
        for c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
