//! `store`: RocksDB partitions, the durable change log and watcher tables.
//! The storage node lands with the store issue; this binary currently only parses its
//! command line so that packaging, CI and the allocator are in place.
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ringline store node: partitions, change log, watchers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "ringline store {}: the store node is not built yet (see issue 3)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
