//! The real `edge` binary, started for a test on a port the OS picks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod client;
pub mod cluster;
pub mod store;
pub mod tls;
pub mod ws;

/// Start a server and wait for its log line containing `marker`, reading the address
/// from its `listen=ADDR` field. The rest of its log is drained in the background
/// (shown when the environment variable `show` is set, for debugging a test).
pub fn spawn_listening(cmd: &mut Command, marker: &str, show: &str) -> (Child, SocketAddr) {
    spawn_logged(cmd, marker, show, None)
}

/// [`spawn_listening`], also keeping every log line in `keep` when given.
pub fn spawn_logged(
    cmd: &mut Command,
    marker: &str,
    show: &str,
    keep: Option<Arc<Mutex<Vec<String>>>>,
) -> (Child, SocketAddr) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let record = move |line: &str| {
        if let Some(k) = &keep {
            k.lock().unwrap().push(line.to_owned());
        }
    };
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("exited before logging {marker:?}"))
            .unwrap();
        record(&line);
        if line.contains(marker)
            && let Some(rest) = line.split("listen=").nth(1)
        {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let show = std::env::var_os(show).is_some();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if show {
                eprintln!("{line}");
            }
            record(&line);
        }
    });
    (child, addr)
}

/// Resident memory of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// `GET path` on `addr`: (head, body).
/// Send signal `name` (`TERM`, `KILL`, `STOP`, `CONT`...) to a child process.
pub fn send_signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success()
    );
}

pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The sum of a Prometheus figure over its series. `name` may carry a label filter:
/// `name{code="1000"}` sums only the series with that label.
pub fn metric_sum(body: &str, name: &str) -> u64 {
    let (base, labels) = match name.split_once('{') {
        Some((base, labels)) => (base, Some(labels.trim_end_matches('}'))),
        None => (name, None),
    };
    body.lines()
        .filter(|l| {
            l.strip_prefix(base)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| labels.is_none_or(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub struct Edge {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Edge {
    pub fn start(extra: &[&str]) -> Self {
        let (child, addr) = spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_edge"))
                .args(["--listen", "127.0.0.1:0", "--pin", "false"])
                .args(if extra.contains(&"--workers") {
                    &[][..]
                } else {
                    &["--workers", "2"][..]
                })
                .args(extra),
            "edge listening",
            "EDGE_LOG",
        );
        Self { child, addr }
    }

    pub fn http(&self, path: &str) -> (String, String) {
        http_get(self.addr, path)
    }

    /// A figure of `/metrics`, summed over workers (see [`metric_sum`]).
    pub fn metric(&self, name: &str) -> u64 {
        metric_sum(&self.http("/metrics").1, name)
    }

    /// Wait until every worker's link to every store is up (metrics say 2).
    pub fn wait_links_up(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.http("/metrics");
            let states: Vec<&str> = body
                .lines()
                .filter(|l| l.starts_with("ringline_edge_link_state{"))
                .collect();
            if !states.is_empty() && states.iter().all(|l| l.ends_with(" 2")) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "links not up: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Send signal `name` (`TERM`, `KILL`...) to the process.
    pub fn signal(&self, name: &str) {
        send_signal(&self.child, name);
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HS256 JWT for `sub` with grant `rl` (the `rl` claim: `read`, `write`, `publish`,
/// `presence` lists), expiring `exp_in` seconds from now (negative: already expired),
/// signed with `secret`.
pub fn hs256_token(sub: &str, rl: serde_json::Value, exp_in: i64, secret: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({ "sub": sub, "exp": now + exp_in, "iat": now, "rl": rl });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}
