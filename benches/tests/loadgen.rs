//! The load generator against a real store and edge, each mode at a small size, its
//! figures read back from `--json`: every connection held, every delivery counted with
//! a latency, every resuming client caught up with exactly what it missed, in order,
//! and connections the edge refuses reported as failed rather than hidden (real stores
//! and edge, started by [`benches::cluster::Cluster`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use benches::cluster::Cluster;

/// Two stores (no fsync) and one edge with one worker and `edge_args`.
fn node(edge_args: &[&str]) -> Cluster {
    let mut args = vec!["--workers", "1"];
    args.extend_from_slice(edge_args);
    Cluster::start(&["--sync", "false"], 1, &args, false)
}

/// Run loadgen; its `--json` figures.
fn loadgen(args: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn num(m: &serde_json::Map<String, serde_json::Value>, key: &str) -> u64 {
    let v = m
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no {key:?} in {m:?}"));
    v.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn connect_holds_every_connection_and_reports_refusals() {
    let n = node(&["--max-connections", "400"]);
    let target = n.edges[0].1.to_string();
    let m = loadgen(&[
        "connect", "--target", &target, "--path", "/echo", "--conns", "300", "--hold", "1",
        "--procs", "2",
    ]);
    assert_eq!(num(&m, "connected"), 300);
    assert_eq!(num(&m, "still open at the end of the hold"), 300);
    assert_eq!(num(&m, "failed"), 0);
    assert_eq!(num(&m, "worker processes"), 2);
    // Past the edge's limit: the extra connections are refused, and counted so.
    let m = loadgen(&[
        "connect", "--target", &target, "--path", "/echo", "--conns", "500", "--hold", "1",
    ]);
    assert!(num(&m, "failed") >= 100, "{m:?}");
    assert_eq!(num(&m, "connected") + num(&m, "failed"), 500);
}

#[test]
fn fanout_counts_deliveries_with_latency_and_resume_checks_the_sequence() {
    let n = node(&[]);
    let target = n.edges[0].1.to_string();
    let pid = n.edges[0].0.id().to_string();
    let m = loadgen(&[
        "fanout",
        "--target",
        &target,
        "--conns",
        "200",
        "--keys",
        "2",
        "--rate",
        "20",
        "--seconds",
        "2",
        "--edge-pid",
        &pid,
    ]);
    assert_eq!(num(&m, "connected"), 200);
    // 200 subscribers over 2 keys, 20 writes/s round robin: 100 × 20 = 2,000/s.
    let d = num(&m, "deliveries/s");
    assert!((1_600..=2_400).contains(&d), "{m:?}");
    assert!(m.contains_key("deliveries per edge CPU-second"), "{m:?}");
    let lat = m["write → receive p50 / p99 / p99.9 / max"]
        .as_str()
        .unwrap();
    let p50: u64 = lat.split(" / ").next().unwrap().parse().unwrap();
    assert!(p50 > 0 && p50 < 1_000_000, "{lat}");

    let m = loadgen(&[
        "resume", "--target", &target, "--conns", "200", "--keys", "5", "--missed", "10",
    ]);
    assert_eq!(num(&m, "caught up"), 200, "{m:?}");
    assert_eq!(num(&m, "with a gap, duplicate or reorder"), 0);
    assert_eq!(num(&m, "reset instead of resumed"), 0);
    assert!(num(&m, "last client caught up after") < 10_000);
}
