//! The real `store` binary (built beside `edge` by `cargo test --workspace`), started
//! for a test, the cluster map that points an edge at it, and a store + edge pair.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub struct Store {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The extra flags it was started with (a restart uses them again).
    pub extra: Vec<String>,
}

/// The `store` binary next to the `edge` one.
pub fn store_bin() -> PathBuf {
    let edge = Path::new(env!("CARGO_BIN_EXE_edge"));
    let bin = edge.with_file_name("store");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p store, or cargo test --workspace)",
        bin.display()
    );
    bin
}

impl Store {
    /// Start a store keeping its data in `dir`, on `addr` (port 0: the OS picks).
    pub fn start(dir: &Path, addr: &str) -> Self {
        Self::start_in(dir, addr, &[])
    }

    /// [`Store::start`] with more flags (`--store-id`, `--cluster`...).
    pub fn start_in(dir: &Path, addr: &str, extra: &[&str]) -> Self {
        let (child, addr) = super::spawn_listening(
            Command::new(store_bin())
                .args(["--listen", addr, "--sync", "true"])
                .args(if extra.contains(&"--admin") {
                    &[][..]
                } else {
                    &["--admin", "127.0.0.1:0"][..]
                })
                .args(extra)
                .arg("--data-dir")
                .arg(dir),
            "serving edge links",
            "STORE_LOG",
        );
        Self {
            child,
            addr,
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send signal `name` (`STOP`, `CONT`...) to the process.
    pub fn signal(&self, name: &str) {
        super::send_signal(&self.child, name);
    }

    /// Start again on the same address and data (after [`Store::kill`]).
    pub fn restart(&mut self) {
        let addr = self.addr.to_string();
        let extra = self.extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut last = None;
        for _ in 0..50 {
            // The port may take a moment to be free again.
            match std::panic::catch_unwind(|| Store::start_in(&self.dir, &addr, &extra)) {
                Ok(s) => {
                    drop(std::mem::replace(self, s));
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::panic::resume_unwind(last.unwrap());
    }

    /// A cluster map (the embedded default's shape) whose one store is this one.
    pub fn cluster_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("cluster.toml");
        let addr = self.addr.to_string();
        std::fs::write(
            &path,
            wire::cluster::even_split_toml(1, 256, &[("store-1", &addr)]),
        )
        .unwrap();
        path
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store and an edge in front of it, their links up.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub edge: super::Edge,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Cluster::start`] with more edge flags.
    pub fn start_with(edge_flags: &[&str]) -> Self {
        Self::launch(tempfile::tempdir().unwrap(), edge_flags)
    }

    /// [`Cluster::start`] with auth required: tokens signed with HS256 `secret`.
    pub fn start_with_auth(secret: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let file = file.to_str().unwrap().to_owned();
        Self::launch(dir, &["--auth", "required", "--auth-secret-file", &file])
    }

    fn launch(dir: tempfile::TempDir, edge_flags: &[&str]) -> Self {
        let store = Store::start(&dir.path().join("store"), "127.0.0.1:0");
        let map = store.cluster_file(dir.path());
        let mut flags = vec!["--cluster", map.to_str().unwrap()];
        flags.extend_from_slice(edge_flags);
        let edge = super::Edge::start(&flags);
        edge.wait_links_up();
        Self { dir, store, edge }
    }
}
