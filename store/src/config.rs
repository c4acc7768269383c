//! The store's configuration: an optional TOML file (every key documented in
//! `store/store.example.toml`), overridden by command-line flags, resolved into one
//! [`Config`] with defaults for everything (the embedded single-store cluster).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::changelog::Retention;
use crate::dedup::DedupLimits;

/// Ringline store node: RocksDB partitions, the durable change log, watcher tables.
#[derive(Debug, Default, Parser)]
#[command(version, about)]
pub struct Args {
    /// TOML config file (see store/store.example.toml); flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the internal (edge↔store) listener [default: the cluster map's address for this store].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin HTTP listener (`GET /metrics`, `GET /health`) [default: the internal listener's IP, its port + 1; port 0 when that is 0].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Data directory (one RocksDB database) [default: data/<store-id>].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This store's id in the cluster map [default: store-1].
    #[arg(long, value_name = "ID")]
    pub store_id: Option<String>,
    /// Cluster map (cluster.toml) [default: embedded, one local store owning every partition].
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Acknowledge writes only after fsync (group commit) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub sync: Option<bool>,
    /// Log entries always kept per partition [default: 1000000].
    #[arg(long, value_name = "N")]
    pub retention_entries: Option<u64>,
    /// Seconds of log always kept per partition [default: 86400].
    #[arg(long, value_name = "SECS")]
    pub retention_secs: Option<u64>,
    /// File holding the cluster secret (at least 32 bytes; a final newline is not part
    /// of it): every edge link must prove it holds the same secret before it is
    /// served. Required when the store listens beyond loopback [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve edge links in TLS only, with this PEM certificate chain (its leaf must name
    /// this store's id) and `--link-tls-key` [default: none, cleartext links].
    #[arg(long, value_name = "FILE")]
    pub link_tls_cert: Option<PathBuf>,
    /// The private key of `--link-tls-cert` (PEM).
    #[arg(long, value_name = "FILE")]
    pub link_tls_key: Option<PathBuf>,
    /// Seconds a write with a msg_id is remembered: a repeat within it is answered with
    /// the first outcome [default: 600].
    #[arg(long, value_name = "SECS")]
    pub dedup_window_secs: Option<u64>,
    /// Writes with a msg_id remembered at most, in all; past it the oldest go early
    /// [default: 1000000].
    #[arg(long, value_name = "N")]
    pub dedup_max_entries: Option<usize>,
    /// Seconds a gone edge's presence members are kept before they leave (a client that
    /// reconnects elsewhere within it never appears to have left) [default: 10].
    #[arg(long, value_name = "SECS")]
    pub presence_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store_id: Option<String>,
    cluster: Option<PathBuf>,
    sync: Option<bool>,
    cluster_secret_file: Option<PathBuf>,
    link_tls_cert: Option<PathBuf>,
    link_tls_key: Option<PathBuf>,
    #[serde(default)]
    retention: FileRetention,
    #[serde(default)]
    dedup: FileDedup,
    #[serde(default)]
    presence: FilePresence,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePresence {
    grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDedup {
    window_secs: Option<u64>,
    max_entries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    entries: Option<u64>,
    seconds: Option<u64>,
}

/// How long a gone edge's presence members are kept by default (10 s).
pub const DEFAULT_PRESENCE_GRACE_MS: u64 = 10_000;

/// A resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Internal listener; `None` means "the cluster map's address for this store".
    pub listen: Option<SocketAddr>,
    /// Admin listener; `None` means "next to the internal listener".
    pub admin: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store id.
    pub store_id: String,
    /// Cluster map file (`None`: embedded default).
    pub cluster: Option<PathBuf>,
    /// fsync before acknowledging.
    pub sync: bool,
    /// Log retention.
    pub retention: Retention,
    /// How long, and how many, writes with a msg_id are remembered.
    pub dedup: DedupLimits,
    /// How long a gone edge's presence members are kept, in ms.
    pub presence_grace_ms: u64,
    /// The cluster secret's file.
    pub cluster_secret_file: Option<PathBuf>,
    /// TLS on the links: the certificate chain's file and its key's.
    pub link_tls: Option<(PathBuf, PathBuf)>,
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {0}: {1}")]
    Io(String, std::io::Error),
    /// The file is not valid.
    #[error("invalid config {0}: {1}")]
    Toml(String, toml::de::Error),
    /// Settings that cannot work.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

impl Config {
    /// Resolve flags over the file over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => Self::read(path)?,
            None => FileConfig::default(),
        };
        let store_id = args
            .store_id
            .clone()
            .or(file.store_id)
            .unwrap_or_else(|| crate::cluster::DEFAULT_STORE_ID.into());
        let defaults = Retention::default();
        let dedup_defaults = DedupLimits::default();
        Ok(Self {
            listen: args.listen.or(file.listen),
            admin: args.admin.or(file.admin),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| Path::new("data").join(&store_id)),
            cluster: args.cluster.clone().or(file.cluster),
            sync: args.sync.or(file.sync).unwrap_or(true),
            cluster_secret_file: args
                .cluster_secret_file
                .clone()
                .or(file.cluster_secret_file),
            link_tls: match (
                args.link_tls_cert.clone().or(file.link_tls_cert),
                args.link_tls_key.clone().or(file.link_tls_key),
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "link_tls_cert and link_tls_key go together",
                    ));
                }
            },
            retention: Retention {
                min_entries: args
                    .retention_entries
                    .or(file.retention.entries)
                    .unwrap_or(defaults.min_entries),
                min_age_ms: args
                    .retention_secs
                    .or(file.retention.seconds)
                    .map_or(defaults.min_age_ms, |s| s.saturating_mul(1000)),
            },
            dedup: DedupLimits {
                window_ms: args
                    .dedup_window_secs
                    .or(file.dedup.window_secs)
                    .map_or(dedup_defaults.window_ms, |s| s.saturating_mul(1000)),
                max_entries: args
                    .dedup_max_entries
                    .or(file.dedup.max_entries)
                    .unwrap_or(dedup_defaults.max_entries),
            },
            presence_grace_ms: args
                .presence_grace_secs
                .or(file.presence.grace_secs)
                .map_or(DEFAULT_PRESENCE_GRACE_MS, |s| s.saturating_mul(1000)),
            store_id,
        })
    }

    fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Toml(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_store() {
        let c = Config::resolve(&Args::default()).unwrap();
        assert_eq!(c.store_id, "store-1");
        assert_eq!(c.data_dir, Path::new("data/store-1"));
        assert!(c.sync);
        assert_eq!(c.retention, Retention::default());
        assert_eq!((c.listen, c.cluster), (None, None));
    }

    #[test]
    fn example_file_parses_and_flags_override_it() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("store.example.toml");
        let args = Args {
            config: Some(example),
            sync: Some(false),
            ..Args::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.store_id, "store-1");
        assert!(!c.sync, "the flag wins over the file");
        assert_eq!(c.retention.min_entries, 1_000_000);
        assert_eq!(c.retention.min_age_ms, 86_400_000);
        assert_eq!(
            c.dedup,
            DedupLimits::default(),
            "the file states the defaults"
        );
        assert_eq!(c.presence_grace_ms, DEFAULT_PRESENCE_GRACE_MS);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, "sink = true\n").unwrap();
        let e = Config::resolve(&Args {
            config: Some(f),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
