//! `edge`: terminates client WebSockets on io_uring. One worker thread per core, each
//! with its own ring and `SO_REUSEPORT` listeners (cleartext, TLS) on the same
//! addresses; the main thread
//! only starts them and waits for SIGTERM/SIGINT, which starts a graceful drain, and
//! SIGHUP, which reloads the TLS certificates at once.
#![deny(unsafe_code)]

mod auth;
mod config;
mod hub;
mod mem;
mod metrics;
mod tls;
mod uring;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use tracing::{error, info, warn};

use config::{Args, Config};
use metrics::WorkerMetrics;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // Raised first: the default max_connections is what the limit allows.
    let nofile = uring::net::raise_nofile().map_err(|e| format!("open-file limit: {e}"))?;
    let mut cfg = Config::resolve(args).map_err(|e| e.to_string())?;
    check_host_limits(&cfg, nofile);
    // Signals go to the main thread only: block them before any thread starts.
    uring::net::block_stop_signals().map_err(|e| format!("signals: {e}"))?;
    let listeners = bind_listeners(&mut cfg)?;
    let map = load_map(&cfg)?;
    let keys = load_auth(&cfg)?;
    let certs = load_tls(&cfg)?;
    let secret = load_cluster_secret(&cfg, &map)?;
    let map = Arc::new(map);
    let cfg = Arc::new(cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let keys = keys.map(|(keys, bytes)| {
        let keys = Arc::new(keys);
        let (cfg, keys2, stop) = (Arc::clone(&cfg), Arc::clone(&keys), Arc::clone(&stop));
        std::thread::spawn(move || auth::keys::watch(cfg, keys2, bytes, stop));
        keys
    });
    let certs = certs.map(|certs| {
        let certs = Arc::new(certs);
        let (certs2, stop) = (Arc::clone(&certs), Arc::clone(&stop));
        std::thread::spawn(move || tls::certs::watch(certs2, stop));
        certs
    });
    let handles = start_workers(
        listeners,
        &cfg,
        &map,
        &stop,
        Secrets {
            keys,
            certs: certs.clone(),
            cluster: secret.map(Arc::new),
            link_tls: load_link_tls(&cfg)?,
        },
    )?;
    info!(
        listen = %if cfg.tls_only { "none".to_string() } else { cfg.listen.to_string() },
        listen_tls = %cfg.listen_tls.map_or_else(|| "none".to_string(), |a| a.to_string()),
        workers = cfg.workers, echo = cfg.echo,
        stores = map.stores.len(), partitions = map.partitions,
        "edge listening (GET /healthz, /metrics; WebSocket /ws, /echo)"
    );
    let stopper = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let sig = uring::net::wait_for_stop(|| match &certs {
                Some(c) => {
                    info!("SIGHUP: reloading the TLS certificates");
                    c.reload(true);
                }
                None => info!("SIGHUP: no TLS certificates to reload"),
            });
            info!("{sig}: draining");
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some("a worker panicked".into()),
        }
    }
    drop(stopper);
    match failed {
        Some(e) => Err(e),
        None => {
            info!("edge stopped");
            Ok(())
        }
    }
}

/// Warn where the host falls short of the configuration (open files, accept queue).
fn check_host_limits(cfg: &Config, nofile: u64) {
    let wanted = (cfg.max_connections as u64).saturating_mul(cfg.workers as u64) + 64;
    if nofile < wanted {
        warn!(
            nofile,
            wanted,
            "the open-file limit is below workers × max_connections: raise it (tuning/check --connections N says what falls short; LimitNOFILE= in tuning/systemd/ringline-edge.service) or lower max_connections"
        );
    }
    // The listen backlog asked for below is cut to this; a reconnect wave needs room.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let queue = (wanted / 16).clamp(4096, 65535);
    if let Some(q) = somaxconn.filter(|&q| q < queue) {
        warn!(
            somaxconn = q,
            wanted = queue,
            "the accept queue is short for a reconnect wave: raise net.core.somaxconn (tuning/check --connections N)"
        );
    }
}

/// Each worker's listeners: cleartext (unless TLS only) and TLS (if configured).
type Listeners = [Option<std::os::fd::OwnedFd>; 2];

/// One `SO_REUSEPORT` listener per worker and address. The first picks the port when
/// it is 0 (and the config learns it); the others share it.
fn bind_listeners(cfg: &mut Config) -> Result<Vec<Listeners>, String> {
    let mut listeners: Vec<Listeners> = (0..cfg.workers).map(|_| [None, None]).collect();
    let clear = (!cfg.tls_only).then_some(&mut cfg.listen);
    for (i, addr) in [clear, cfg.listen_tls.as_mut()].into_iter().enumerate() {
        let Some(addr) = addr else {
            continue;
        };
        for l in &mut listeners {
            let fd = uring::net::listener(*addr, 65535, cfg.send_lowat)
                .map_err(|e| format!("listen on {addr}: {e}"))?;
            if addr.port() == 0 {
                *addr = uring::net::local_addr(&fd).map_err(|e| e.to_string())?;
            }
            l[i] = Some(fd);
        }
    }
    Ok(listeners)
}

/// What the workers check and prove: token keys, TLS certificates, the cluster secret.
struct Secrets {
    keys: Option<Arc<auth::keys::Keys>>,
    certs: Option<Arc<tls::certs::Certs>>,
    cluster: Option<Arc<wire::link::auth::ClusterSecret>>,
    link_tls: Option<Arc<rustls::ClientConfig>>,
}

/// TLS on the store links, if `link_tls_ca_file` is set.
fn load_link_tls(cfg: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let Some(ca) = &cfg.link_tls_ca_file else {
        return Ok(None);
    };
    let config = tls::link::client_config(ca).map_err(|e| format!("link TLS: {e}"))?;
    info!(ca = %ca.display(), "store links run in TLS (each store's certificate must name its id)");
    Ok(Some(config))
}

/// The cluster secret store links prove. Without one, a map with a store beyond
/// loopback is refused (its links would cross a network unauthenticated, and the
/// store, rightly configured, would refuse them anyway); on loopback it is a warning.
fn load_cluster_secret(
    cfg: &Config,
    map: &wire::cluster::ClusterMap,
) -> Result<Option<wire::link::auth::ClusterSecret>, String> {
    let Some(path) = &cfg.cluster_secret_file else {
        if let Some(s) = map.stores.iter().find(|s| !s.addr.ip().is_loopback()) {
            return Err(format!(
                "store {} is at {}, beyond loopback, and there is no cluster secret: set cluster_secret_file (the stores' own file)",
                s.id, s.addr
            ));
        }
        warn!("no cluster secret: store links are not authenticated (fine on loopback)");
        return Ok(None);
    };
    let bytes =
        std::fs::read(path).map_err(|e| format!("cluster secret {}: {e}", path.display()))?;
    let secret = wire::link::auth::ClusterSecret::from_file_bytes(&bytes)
        .map_err(|e| format!("cluster secret {}: {e}", path.display()))?;
    info!(file = %path.display(), "store links prove the cluster secret");
    Ok(Some(secret))
}

/// The TLS listener's certificates, if it is configured; says which TLS path runs.
fn load_tls(cfg: &Config) -> Result<Option<tls::certs::Certs>, String> {
    if cfg.listen_tls.is_none() {
        return Ok(None);
    }
    let certs = tls::certs::Certs::load(cfg.tls_certs.clone())
        .map_err(|e| format!("TLS certificates: {e}"))?;
    if tls::kernel_tls_available() {
        info!(
            certificates = cfg.tls_certs.len(),
            "TLS in user space (rustls): this kernel offers kTLS, which this build does not use yet"
        );
    } else {
        info!(
            certificates = cfg.tls_certs.len(),
            "TLS in user space (rustls): kTLS is not available on this kernel (no `tls` in net.ipv4.tcp_available_ulp)"
        );
    }
    Ok(Some(certs))
}

/// The cluster map (checked against what a resume token can hold), logged with the
/// configuration.
fn load_map(cfg: &Config) -> Result<wire::cluster::ClusterMap, String> {
    let map = wire::cluster::ClusterMap::load(cfg.cluster.as_deref()).map_err(|e| e.to_string())?;
    if map.partitions as usize > wire::client::token::MAX_TOKEN_POSITIONS {
        return Err(format!(
            "the cluster map has {} partitions; the edge supports at most {} (a resume token holds one position per partition)",
            map.partitions,
            wire::client::token::MAX_TOKEN_POSITIONS
        ));
    }
    info!(
        listen = %cfg.listen, workers = cfg.workers, max_connections = cfg.max_connections,
        max_message = cfg.max_message, max_outbound = cfg.max_outbound,
        heartbeat_secs = cfg.heartbeat.as_secs(), handshake_timeout_secs = cfg.handshake_timeout.as_secs(),
        drain_secs = cfg.drain.as_secs(), echo = cfg.echo, pin = cfg.pin, recv_mode = ?cfg.recv_mode,
        cluster = %cfg.cluster.as_ref().map_or_else(|| "embedded default".into(), |p| p.display().to_string()),
        "configuration"
    );
    for s in &map.stores {
        info!(
            store = %s.id, addr = %s.addr, partitions = s.partitions.len(), map_version = map.version,
            "store in the cluster map"
        );
    }
    Ok(map)
}

/// The token verifier and the key file's bytes, if auth is on; a loud warning if it
/// is off.
fn load_auth(cfg: &Config) -> Result<Option<(auth::keys::Keys, Vec<u8>)>, String> {
    let keys = auth::keys::load(cfg)?;
    match &keys {
        None => warn!(
            "auth is off: every client may read, write and publish every key (set auth = \"required\" for anything reachable from a network)"
        ),
        Some((k, _)) => info!(mode = ?cfg.auth, verifier = ?k.current(), "client authentication"),
    }
    Ok(keys)
}

/// A worker thread on each listener (pinned to a core if configured).
fn start_workers(
    listeners: Vec<Listeners>,
    cfg: &Arc<Config>,
    map: &Arc<wire::cluster::ClusterMap>,
    stop: &Arc<AtomicBool>,
    secrets: Secrets,
) -> Result<Vec<std::thread::JoinHandle<Result<(), String>>>, String> {
    let store_ids: Vec<String> = map.stores.iter().map(|s| s.id.clone()).collect();
    let all: Arc<Vec<Arc<WorkerMetrics>>> = Arc::new(
        (0..cfg.workers)
            .map(|_| Arc::new(WorkerMetrics::for_stores(store_ids.clone())))
            .collect(),
    );
    let mut shared = worker::Shared::new(
        Arc::clone(cfg),
        Arc::clone(map),
        Arc::clone(stop),
        all,
        secrets.keys,
        secrets.certs,
    );
    shared.cluster_secret = secrets.cluster;
    shared.link_tls = secrets.link_tls;
    let shared = Arc::new(shared);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut handles = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let h = std::thread::Builder::new()
            .name(format!("edge-worker-{id}"))
            .spawn(move || -> Result<(), String> {
                if shared.cfg.pin
                    && let Err(e) = uring::net::pin_to_cpu(id % cores)
                {
                    warn!(worker = id, error = %e, "cannot pin to a core");
                }
                let w = worker::Worker::new(id, listener, shared)
                    .map_err(|e| format!("worker {id}: {e}"))?;
                w.run().map_err(|e| format!("worker {id}: {e}"))
            })
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}
