//! `store`: the storage node. Reads its configuration (file + flags), opens RocksDB
//! and the partitions the cluster map gives it, then runs the core and the edge links'
//! reader and writer tasks on one thread (the committer and admin threads beside it).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use store::changelog::ChangeLog;
use store::cluster::ClusterMap;
use store::config::{Args, Config};
use store::core::CoreConfig;
use store::engine::rocks::RocksEngine;
use store::metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

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

/// Open files the store wants: links from every edge worker, RocksDB's table files.
const WANTED_NOFILE: u64 = 4096;

/// Raise the open-file soft limit to the hard one, and say so when it stays low.
fn check_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            warn!(error = %e, "cannot raise the open-file soft limit to the hard limit");
        }
    }
    let nofile = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if nofile < WANTED_NOFILE {
        warn!(
            nofile,
            wanted = WANTED_NOFILE,
            "the open-file limit is low for edge links and RocksDB's files: raise it (tuning/check, LimitNOFILE= in tuning/systemd/ringline-store.service)"
        );
    } else {
        info!(nofile, "open-file limit");
    }
}

/// The cluster secret links must prove they hold. A store that listens beyond
/// loopback without one refuses to start (anyone who reached the port could read and
/// write every partition); on loopback its absence is a warning.
fn load_cluster_secret(
    cfg: &Config,
    listen: SocketAddr,
) -> Result<Option<wire::link::auth::ClusterSecret>, String> {
    let Some(path) = &cfg.cluster_secret_file else {
        if !listen.ip().is_loopback() {
            return Err(format!(
                "the store listens on {listen}, beyond loopback, without a cluster secret: anyone who can reach it could read and write every partition; set cluster_secret_file (the same file on every store and edge; head -c 32 /dev/urandom | base64 > cluster.secret)"
            ));
        }
        warn!(
            "no cluster secret: edge links are not authenticated (fine on loopback; set cluster_secret_file for anything else)"
        );
        return Ok(None);
    };
    let bytes =
        std::fs::read(path).map_err(|e| format!("cluster secret {}: {e}", path.display()))?;
    let secret = wire::link::auth::ClusterSecret::from_file_bytes(&bytes)
        .map_err(|e| format!("cluster secret {}: {e}", path.display()))?;
    info!(file = %path.display(), "edge links must prove the cluster secret");
    Ok(Some(secret))
}

/// TLS on the links, if configured: the certificate chain and key, checked to match.
fn load_link_tls(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some((cert, key)) = &cfg.link_tls else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("link TLS {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("link TLS {}: {e}", key.display()))?;
    // `ring`, as the edge's: a small build; classical key exchange only.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("link TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("link TLS {}: {e}", cert.display()))?;
    info!(cert = %cert.display(), "edge links in TLS only");
    Ok(Some(Arc::new(config)))
}

/// Open the data directory (made if missing) and the change log of the partitions
/// this store owns, and record that a run begins.
fn open_log(
    cfg: &Config,
    partitions: u32,
    owned: &[u32],
) -> Result<ChangeLog<RocksEngine>, String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("data dir {}: {e}", cfg.data_dir.display()))?;
    let engine = Arc::new(RocksEngine::open(&cfg.data_dir).map_err(|e| e.to_string())?);
    let mut log = ChangeLog::open(engine, partitions, owned, rand::random::<u64>)
        .map_err(|e| e.to_string())?;
    log.set_dedup_limits(cfg.dedup);
    if log
        .begin_run(cfg.sync, rand::random::<u64>)
        .map_err(|e| e.to_string())?
    {
        warn!(
            "the previous run used sync = false and did not stop cleanly: every partition starts a new epoch (clients resuming get a reset)"
        );
    }
    Ok(log)
}

/// Serve `GET /metrics` and `/health` on its own thread, at `admin` (by default the
/// link port + 1 on the same address).
fn serve_admin(
    admin: Option<SocketAddr>,
    listen: SocketAddr,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let admin = admin.unwrap_or_else(|| {
        let port = match listen.port() {
            0 => 0,
            p => p.wrapping_add(1),
        };
        SocketAddr::new(listen.ip(), port)
    });
    let admin_listener =
        std::net::TcpListener::bind(admin).map_err(|e| format!("admin listen on {admin}: {e}"))?;
    let admin_bound = admin_listener.local_addr().map_err(|e| e.to_string())?;
    store::admin::spawn(admin_listener, Arc::clone(metrics))
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    info!(listen = %admin_bound, "serving admin (GET /metrics, /health)");
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let cfg = Config::resolve(args).map_err(|e| e.to_string())?;
    let map = ClusterMap::load(cfg.cluster.as_deref()).map_err(|e| e.to_string())?;
    let me = map
        .store(&cfg.store_id)
        .ok_or_else(|| format!("store id {:?} is not in the cluster map", cfg.store_id))?
        .clone();
    let listen = cfg.listen.unwrap_or(me.addr);
    let cluster_secret = load_cluster_secret(&cfg, listen)?;
    info!(
        store_id = %cfg.store_id, %listen, data_dir = %cfg.data_dir.display(), sync = cfg.sync,
        retention_entries = cfg.retention.min_entries, retention_ms = cfg.retention.min_age_ms,
        map_version = map.version, partitions = map.partitions, owned = me.partitions.len(),
        "store starting"
    );
    check_nofile();
    let log = open_log(&cfg, map.partitions, &me.partitions)?;
    let metrics = Arc::new(Metrics::default());
    serve_admin(cfg.admin, listen, &metrics)?;
    let core_cfg = CoreConfig {
        store_id: cfg.store_id.clone(),
        map_version: map.version,
        sync: cfg.sync,
        retention: cfg.retention,
        presence_grace_ms: cfg.presence_grace_ms,
        metrics: Arc::clone(&metrics),
        cluster_secret: cluster_secret.map(Arc::new),
        link_tls: load_link_tls(&cfg)?,
        ..CoreConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        info!(listen = %bound, "serving edge links");
        metrics
            .serving
            .store(true, std::sync::atomic::Ordering::Release);
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
            }
        };
        store::server::run_node(listener, log, core_cfg, stop)
            .await
            .map_err(|e| e.to_string())
    })?;
    info!("store stopped cleanly");
    Ok(())
}
