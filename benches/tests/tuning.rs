//! `tuning/check` and `tuning/apply` against a fake `/proc/sys` (a temporary tree named
//! by `RINGLINE_SYSCTL_ROOT`), so that nothing on the host changes: the shipped sysctl
//! file meets a million connections; gaps are reported with their size; `apply` raises
//! only what falls short, never lowers a value, is idempotent, and reports a refusal
//! without stopping at it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn tuning() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning")
}

/// Write `key = value` into the fake tree rooted at `root`.
fn set(root: &Path, key: &str, value: &str) {
    let path = root.join(key.replace('.', "/"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{value}\n")).unwrap();
}

fn get(root: &Path, key: &str) -> String {
    std::fs::read_to_string(root.join(key.replace('.', "/")))
        .unwrap()
        .trim()
        .to_owned()
}

/// Run `tuning/<cmd>` with `args` on the fake tree: (exit code, stdout).
fn run(root: &Path, cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(tuning().join(cmd))
        .args(args)
        .env("RINGLINE_SYSCTL_ROOT", root)
        .output()
        .unwrap_or_else(|e| panic!("tuning/{cmd}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

/// The table row of `key` in `text`.
fn row<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("| {key} ")))
        .unwrap_or_else(|| panic!("no row for {key} in:\n{text}"))
}

/// A host with the kernel's usual defaults (this one's, at the time of writing).
fn defaults(root: &Path) {
    for (k, v) in [
        ("fs.nr_open", "1048576"),
        ("fs.file-max", "2466193"),
        ("net.core.somaxconn", "4096"),
        ("net.ipv4.tcp_max_syn_backlog", "2048"),
        ("net.core.netdev_max_backlog", "1000"),
        ("net.ipv4.tcp_mem", "287901\t383869\t575802"),
        ("net.ipv4.tcp_rmem", "4096\t131072\t33554432"),
        ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
        ("net.ipv4.ip_local_port_range", "32768\t60999"),
        ("net.ipv4.tcp_tw_reuse", "2"),
        ("net.netfilter.nf_conntrack_max", "262144"),
    ] {
        set(root, k, v);
    }
}

#[test]
fn the_shipped_sysctl_file_meets_a_million_connections() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tuning().join("sysctl.d/90-ringline.conf")).unwrap();
    let mut keys = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        set(dir.path(), k.trim().trim_start_matches('-'), v.trim());
        keys += 1;
    }
    assert!(keys >= 12, "{keys} settings");
    // 100 edge processes, so that the open-file row fits this host's 20,000 hard limit.
    let (code, out) = run(
        dir.path(),
        "check",
        &["--connections", "1000000", "--processes", "100"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("READY: every setting meets the need."),
        "{out}"
    );
    assert!(!out.contains("short"), "{out}");
}

#[test]
fn check_reports_each_gap_and_apply_raises_it_once_without_lowering_anything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    defaults(root);
    // Already above the need: must stay as it is.
    set(root, "fs.file-max", "9999999");

    let (code, out) = run(root, "check", &["--connections", "1000000"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT READY"), "{out}");
    // need min(65535, 1,000,000 / 16) = 62,500 against 4,096 live.
    assert!(row(&out, "net.core.somaxconn").contains("58,404 short"));
    assert!(row(&out, "net.ipv4.tcp_max_syn_backlog").contains("60,452 short"));
    assert!(row(&out, "fs.nr_open").contains("16,960 short"));
    assert!(row(&out, "fs.file-max").contains("| ok "));
    assert!(row(&out, "net.ipv4.tcp_rmem").contains("| ok "));
    assert!(row(&out, "net.ipv4.ip_local_port_range").contains("ports short"));

    // A dry run changes nothing.
    let (code, out) = run(root, "apply", &["--connections", "1000000", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(row(&out, "net.core.somaxconn").contains("would change"));
    assert_eq!(get(root, "net.core.somaxconn"), "4096");

    let (code, out) = run(root, "apply", &["--connections", "1000000"]);
    assert_eq!(code, 0, "{out}");
    assert!(row(&out, "net.core.somaxconn").contains("| 4096 "));
    assert!(row(&out, "net.core.somaxconn").contains("| 62500 "));
    assert_eq!(get(root, "net.core.somaxconn"), "62500");
    assert_eq!(get(root, "net.ipv4.tcp_mem"), "287901 1000000 1500000");
    assert_eq!(get(root, "net.ipv4.ip_local_port_range"), "1024 65535");
    assert_eq!(get(root, "fs.file-max"), "9999999");
    assert_eq!(get(root, "net.ipv4.tcp_rmem"), "4096\t131072\t33554432");

    // Every kernel setting now meets the need (the open-file row is the shell's own).
    let (_, out) = run(root, "check", &["--connections", "1000000"]);
    for l in out
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('.'))
    {
        if !l.contains("open-file limit") {
            assert!(l.contains("| ok "), "{l}");
        }
    }
    // A second apply changes nothing.
    let before: Vec<String> = ["net.core.somaxconn", "net.ipv4.tcp_mem", "fs.nr_open"]
        .iter()
        .map(|k| get(root, k))
        .collect();
    let (code, out) = run(root, "apply", &["--connections", "1000000"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("changed"), "{out}");
    let after: Vec<String> = ["net.core.somaxconn", "net.ipv4.tcp_mem", "fs.nr_open"]
        .iter()
        .map(|k| get(root, k))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn apply_reports_a_refusal_and_goes_on_and_absent_settings_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    defaults(root);
    // The kernel refuses this one: a read-only sysctl (mode 0444, even for root).
    let somaxconn = root.join("net/core/somaxconn");
    std::fs::remove_file(&somaxconn).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/cap_last_cap", &somaxconn).unwrap();
    // Conntrack not loaded: nothing to track, nothing to do.
    std::fs::remove_file(root.join("net/netfilter/nf_conntrack_max")).unwrap();
    // A required setting this kernel lacks.
    std::fs::remove_file(root.join("net/ipv4/tcp_tw_reuse")).unwrap();

    let (code, out) = run(root, "apply", &["--connections", "100000"]);
    assert_eq!(code, 1, "{out}");
    let refused = row(&out, "net.core.somaxconn");
    assert!(
        refused.contains("refused: read-only") || refused.contains("refused: permission denied"),
        "{out}"
    );
    assert_eq!(
        get(root, "net.core.somaxconn"),
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
    );
    assert!(row(&out, "net.netfilter.nf_conntrack_max").contains("nothing to do"));
    assert!(row(&out, "net.ipv4.tcp_tw_reuse").contains("refused: the kernel has no such setting"));
    // The others were still applied.
    assert_eq!(get(root, "net.ipv4.tcp_max_syn_backlog"), "6250");

    let (code, out) = run(root, "check", &["--connections", "100000"]);
    assert_eq!(code, 1, "{out}");
    assert!(row(&out, "net.netfilter.nf_conntrack_max").contains("| ok "));
    assert!(row(&out, "net.ipv4.tcp_tw_reuse").contains("not available"));
}
