//! The measuring tools that are built on the Rust client library (`ringline-client`),
//! run small against real stores, edges and HAProxy, so that the library is exercised
//! by them on every CI run: `failover` (100 clients move to the other edge after a
//! SIGKILL and resume by themselves) and `cluster_latency` (its subscriber receives
//! every write).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// Run tool `bin` with `args`; its standard output (it must succeed).
fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{bin} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn failover_with_the_rust_client_catches_every_client_up() {
    let out = run(
        env!("CARGO_BIN_EXE_failover"),
        &["--clients", "100", "--keys", "2", "--write-ms", "20"],
    );
    // The tool stops loudly if a client fails, is reset, or never catches up.
    let row = out
        .lines()
        .find(|l| l.starts_with("| the Rust SDK (this tool's clients) | 1 |"))
        .unwrap_or_else(|| panic!("no row for the Rust SDK:\n{out}"));
    eprintln!("{row}");
}

#[test]
fn cluster_latency_with_the_rust_client_sees_every_write() {
    let out = run(
        env!("CARGO_BIN_EXE_cluster_latency"),
        &["--seconds", "1", "--rate", "200", "--baseline-seconds", "1"],
    );
    // 200 writes a second for 2 s, the first second's not counted.
    let row = out
        .lines()
        .find(|l| l.starts_with("| **delivery**"))
        .unwrap_or_else(|| panic!("no delivery row:\n{out}"));
    let samples: u64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!((190..=210).contains(&samples), "{samples} samples: {row}");
}
