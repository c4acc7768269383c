//! Replays every fuzz target's committed seed corpus (`seeds/<target>/`) through the
//! target's own body, on the stable toolchain and without libFuzzer, so that `make test`
//! catches a decoder change that breaks a property the fuzzers check. Every target must
//! have seeds, and every seed directory must belong to a target.

use std::path::Path;

type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 10] = [
    ("handshake", ringline_fuzz::handshake::run),
    ("api_request", ringline_fuzz::api_request::run),
    ("frame", ringline_fuzz::frame::run),
    ("link_frame", ringline_fuzz::link_frame::run),
    ("client_json", ringline_fuzz::client_json::run),
    ("client_fb", ringline_fuzz::client_fb::run),
    ("token", ringline_fuzz::token::run),
    ("auth_message", ringline_fuzz::auth_message::run),
    ("grant", ringline_fuzz::patterns::run),
    ("proxy", ringline_fuzz::proxy::run),
];

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_of_every_target_passes_its_target() {
    let mut total = 0;
    for (name, run) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "fuzz target {name} has no seeds");
        for (path, bytes) in &seeds {
            // A panic names the seed that caused it.
            let r = std::panic::catch_unwind(|| run(bytes));
            assert!(r.is_ok(), "fuzz target {name} fails on seed {path}");
        }
        eprintln!("{name}: {} seeds replayed", seeds.len());
        total += seeds.len();
    }
    eprintln!("{total} seeds replayed");
}

#[test]
fn every_seed_directory_is_a_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for e in std::fs::read_dir(&dir).expect("fuzz/seeds") {
        let name = e.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "seeds/{name} belongs to no target in tests/seeds.rs"
        );
    }
}
