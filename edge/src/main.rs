//! `edge`: terminates client WebSockets on io_uring and routes requests to stores.
//! The event loop lands with the edge issue; this binary currently only parses its
//! command line so that packaging, CI and the allocator are in place.
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ringline edge node: WebSocket termination and fan-out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "ringline edge {}: the edge node is not built yet (see issue 4)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
