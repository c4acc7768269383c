//! Real clients against the real edge: Python `websockets` and Node `ws` exchange text,
//! binary, fragmented and pipelined messages, pings and a clean close on `/echo`.
//! Their installation is `scripts/interop-setup.sh` (run by `make test`); a missing
//! client fails the test with that instruction rather than skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Edge(Child, String);

impl Edge {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--pin",
                "false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("edge exited before listening").unwrap();
            if line.contains("edge listening")
                && let Some(rest) = line.split("listen=").nth(1)
            {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self(child, format!("ws://{addr}/echo"))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(program: &Path, args: &[&str], env: &[(&str, PathBuf)]) {
    assert!(
        program.components().count() == 1 || program.exists(),
        "{} is missing: run scripts/interop-setup.sh (make test does)",
        program.display()
    );
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_websockets_echo() {
    let edge = Edge::start();
    let script = root().join("edge/tests/interop/echo_client.py");
    run(
        &root().join(".venv-interop/bin/python"),
        &[script.to_str().unwrap(), &edge.1],
        &[],
    );
}

#[test]
fn node_ws_echo() {
    let edge = Edge::start();
    let script = root().join("edge/tests/interop/echo_client.cjs");
    let modules = root().join(".interop-node/node_modules");
    assert!(
        modules.join("ws").exists(),
        "Node ws is missing: run scripts/interop-setup.sh (make test does)"
    );
    run(
        Path::new("node"),
        &[script.to_str().unwrap(), &edge.1],
        &[("NODE_PATH", root().join(".interop-node/node_modules"))],
    );
}
