//! The TypeScript client library (`clients/js`) against the real cluster: its unit
//! tests (a scripted fake server) and its live tests (2 stores, 2 edges, HAProxy; one
//! edge SIGKILLed under 200 subscribers while 5,000 sequenced writes flow), run with
//! Node's test runner after compiling it with its pinned `tsc`
//! (`scripts/interop-setup.sh` installs Node, npm and `clients/js/node_modules`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::LocalCluster;

fn js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// Compile the library (once per test binary is enough; it is quick).
fn build() {
    let tsc = js().join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "clients/js/node_modules is missing: run scripts/interop-setup.sh (make test does)"
    );
    let out = Command::new("node")
        .arg(tsc)
        .args(["-p", "."])
        .current_dir(js())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tsc failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bundle the library for browsers (esbuild, minified) and return its gzipped size.
fn bundle_gzip_bytes() -> usize {
    // The native binary once its install script has run, else a Node shim: runnable
    // either way.
    let out = Command::new(js().join("node_modules/esbuild/bin/esbuild"))
        .args([
            "src/index.ts",
            "--bundle",
            "--minify",
            "--format=esm",
            "--target=es2020",
            "--outfile=dist/ringline.min.js",
        ])
        .current_dir(js())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "esbuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = Command::new("node")
        .args([
            "-e",
            "const z=require('zlib'),f=require('fs');\
             process.stdout.write(String(z.gzipSync(f.readFileSync('dist/ringline.min.js'),{level:9}).length))",
        ])
        .current_dir(js())
        .output()
        .unwrap();
    String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Run `node --test` on `file` with `env`; fail with its output unless every test
/// passed and none was skipped.
fn node_test(file: &str, env: &[(&str, String)]) -> String {
    let out = Command::new("node")
        .args(["--test", "--test-force-exit", "--test-reporter=tap", file])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(js())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{file} failed:\n{text}");
    assert!(
        text.contains("# fail 0") && text.contains("# skipped 0"),
        "{text}"
    );
    text
}

#[test]
fn the_typescript_client_passes_its_unit_and_live_tests() {
    eprintln!("[js] compiling clients/js ...");
    build();
    eprintln!("[js] browser bundle ...");
    let gz = bundle_gzip_bytes();
    eprintln!("[js] dist/ringline.min.js: {gz} B minified and gzipped");
    assert!(
        gz <= 15 * 1024,
        "the browser bundle is {gz} B gzipped; the budget is 15 KiB"
    );
    // The edge serves the page's copy of it: it must be this build.
    let built = std::fs::read(js().join("dist/ringline.min.js")).unwrap();
    let served = std::fs::read(js().join("../../edge/assets/ringline.min.js")).unwrap();
    assert!(
        built == served,
        "edge/assets/ringline.min.js is not the current build: \
         cp clients/js/dist/ringline.min.js edge/assets/"
    );
    eprintln!("[js] unit tests ...");
    node_test("test/unit.test.mjs", &[]);
    node_test("test/binary.test.mjs", &[]);
    eprintln!("[js] starting 2 stores, 2 edges, HAProxy ...");
    let c = LocalCluster::start(&[]);
    eprintln!("[js] live tests ...");
    let env = [
        ("RINGLINE_URL", format!("ws://{}/ws", c.front)),
        ("RINGLINE_KILL_PID", c.edges[0].child.id().to_string()),
    ];
    let text = node_test("test/live.test.mjs", &env);
    for line in text.lines().filter(|l| l.contains("failover:")) {
        eprintln!("{line}");
    }
}
