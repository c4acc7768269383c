//! Shared by Ringline's criterion benchmarks, the measuring tools and the load generator: the
//! global allocator is the one the `edge` and `store` binaries ship with (mimalloc),
//! so allocation-heavy figures (shared frames, link encoding) are the production ones.
//! Each bench links this crate with `use benches as _;`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod aws;
pub mod cluster;
pub mod tls;
pub mod ws;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// CPU seconds (user + system, all threads) used so far by process `pid` ("self" for
/// this one), from `/proc/<pid>/stat`; 0 if it cannot be read.
pub fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here. Linux
    // reports them in USER_HZ, which is 100 on every architecture it runs on.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// JSON sensor rows of about `size` bytes, as a dashboard's message: an object that
/// starts with `head` (fields and a comma, or nothing), then `"rows"`, the readings
/// varying with `seed`.
pub fn json_rows(head: &str, seed: u64, size: usize) -> String {
    let mut v = format!(r#"{{{head}"rows":["#);
    let mut i = 0u64;
    while v.len() + 2 < size {
        if i > 0 {
            v.push(',');
        }
        let reading = (seed * 7 + i * 13) % 1000;
        v.push_str(&format!(
            r#"{{"sensor":"temperature-{i}","value":{}.{},"unit":"celsius","ok":true}}"#,
            reading / 10,
            reading % 10
        ));
        i += 1;
    }
    v.push_str("]}");
    v
}

/// The median of `v` (the upper one of an even count; 0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Start a server process and wait for its log line containing `marker`; the address
/// is read from that line's `listen=ADDR` field, or else its last word. The rest of
/// its log is drained in the background so that it never blocks on a full pipe.
/// Panics (the tools that use it stop loudly) if the process exits first.
pub fn spawn_listening(cmd: &mut Command, marker: &str) -> (Child, SocketAddr) {
    spawn_listening_on(cmd, marker, "listen=")
}

/// [`spawn_listening`], reading the address from the `field` (`listen_tls=`, say) of
/// the marker's line.
#[allow(clippy::panic)]
pub fn spawn_listening_on(cmd: &mut Command, marker: &str, field: &str) -> (Child, SocketAddr) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start server: {e}"));
    let Some(stderr) = child.stderr.take() else {
        panic!("no stderr pipe");
    };
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited before listening"))
            .unwrap_or_default();
        if line.contains(marker) {
            let word = match line.split(field).nth(1) {
                Some(rest) => rest.split_whitespace().next().unwrap_or_default(),
                None => line.rsplit(' ').next().unwrap_or_default(),
            };
            break word
                .parse()
                .unwrap_or_else(|_| panic!("no address in: {line}"));
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
