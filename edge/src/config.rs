//! The edge's configuration: an optional TOML file (every key documented in
//! `edge/edge.example.toml`), overridden by command-line flags, resolved into one
//! [`Config`] with defaults for everything.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::auth::grant::{Grant, GrantSpec};
use crate::auth::origin::OriginPattern;
use crate::hub::MAX_SUBS_PER_CONN;
use crate::tls::certs::CertFiles;

/// Ringline edge node: WebSocket termination and fan-out on io_uring.
#[derive(Debug, Default, Parser)]
#[command(version, about)]
pub struct Args {
    /// TOML config file (see edge/edge.example.toml); flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Client listener (HTTP + WebSocket) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// TLS listener (HTTPS + `wss://`), beside or instead of `listen`; needs
    /// `--tls-cert` and `--tls-key` [default: none].
    #[arg(long, value_name = "ADDR")]
    pub listen_tls: Option<SocketAddr>,
    /// Serve `listen_tls` only: no cleartext listener [default: false].
    #[arg(long, value_name = "BOOL")]
    pub tls_only: Option<bool>,
    /// PEM certificate chain for `listen_tls`, leaf first; repeat with `--tls-key` for
    /// several (picked by SNI, the first by default).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Vec<PathBuf>,
    /// PEM private key of the `--tls-cert` in the same position.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Vec<PathBuf>,
    /// Worker threads, one ring and one listener each [default: one per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Most connections per worker; a new connection goes to the least-loaded worker,
    /// and its handshake gets 503 only when every worker is full [default: what the
    /// open-file limit allows, shared by the workers, at most 250000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Largest WebSocket message in bytes (close 1009 above it) [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,
    /// Bytes queued for one connection before it is closed as a slow consumer (4008); at least max-message + 64 KiB [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub max_outbound: Option<usize>,
    /// Bytes queued for one connection past which its `latest`-mode subscriptions get only the newest change per key, sent once its queue drains [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub latest_above: Option<usize>,
    /// Bytes the kernel may hold written and not yet sent per connection (TCP_NOTSENT_LOWAT); beyond it a connection's backlog waits in its own queue; 0: no limit [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub send_lowat: Option<u32>,
    /// Milliseconds a presence subscription's joins and leaves are gathered into one message; 0: each at once [default: 100].
    #[arg(long, value_name = "MS")]
    pub presence_batch_ms: Option<u64>,
    /// Seconds between server pings; two silent intervals close the connection [default: 25].
    #[arg(long, value_name = "SECS")]
    pub heartbeat_secs: Option<u64>,
    /// Seconds a client has to finish its handshake [default: 10].
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds a SIGTERM drain may take before the edge exits anyway [default: 30].
    #[arg(long, value_name = "SECS")]
    pub drain_secs: Option<u64>,
    /// Serve the `/echo` WebSocket endpoint [default: true].
    #[arg(long, value_name = "BOOL")]
    pub echo: Option<bool>,
    /// Serve the HTTP API (`/v1/keys/..`, `/v1/publish`, `/v1/presence/..`), with the
    /// same tokens and grants as `/ws` [default: true].
    #[arg(long, value_name = "BOOL")]
    pub http_api: Option<bool>,
    /// Accept `permessage-deflate` (RFC 7692) when a client offers it, without context
    /// takeover: a change is compressed once for all its subscribers [default: false].
    #[arg(long, value_name = "BOOL")]
    pub compression: Option<bool>,
    /// Messages shorter than this go uncompressed on a compressed connection [default: 128].
    #[arg(long, value_name = "BYTES")]
    pub compression_min_bytes: Option<usize>,
    /// Deflate level of a change, compressed once for all its subscribers, 1 (fastest) to 9 (smallest) [default: 6].
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub compression_level: Option<u32>,
    /// Deflate level of a message compressed for one connection (an answer, a snapshot, an echo) [default: 1].
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub compression_level_single: Option<u32>,
    /// Subscribe every authenticated connection to its user's inbox `@user/<sub>` (as subscription 0) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub inbox: Option<bool>,
    /// Deliver what is published to `@all` to every open /ws connection (as subscription 0) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub broadcast: Option<bool>,
    /// Pin each worker to a core [default: true].
    #[arg(long, value_name = "BOOL")]
    pub pin: Option<bool>,
    /// How sockets are read: `multishot` (a receive stays armed on every connection)
    /// or `poll` (a multishot readability poll, then one receive per event; less kernel
    /// memory per idle connection, same throughput as measured) [default: poll].
    #[arg(long, value_name = "MODE")]
    pub recv_mode: Option<RecvMode>,
    /// Where a worker puts what its listener accepts: `least-loaded` (the
    /// least-loaded worker with room; 503 only when all are full) or `local` (itself;
    /// 503 when it is full) [default: least-loaded].
    #[arg(long, value_name = "MODE")]
    pub admission: Option<Admission>,
    /// The cluster map (the stores' `cluster.toml`): which store owns which partition
    /// [default: the embedded map, one store on 127.0.0.1:7400 owning every partition].
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// File holding the cluster secret (the stores' own): every store link proves it
    /// and checks the store's proof. Required when a store is beyond loopback
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Run the store links in TLS, checking each store's certificate (it must name
    /// the store's id) against the CA certificates in this PEM file [default: none,
    /// cleartext links].
    #[arg(long, value_name = "FILE")]
    pub link_tls_ca_file: Option<PathBuf>,
    /// Client authentication: `off` (anyone may touch every key), `optional` (a token
    /// if given must be valid; without one, the anonymous grant) or `required` (a
    /// valid token on every `/ws` connection) [default: off].
    #[arg(long, value_name = "MODE")]
    pub auth: Option<AuthMode>,
    /// File holding the HS256 shared secret (at least 32 bytes; trailing newline ignored).
    #[arg(long, value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// JWKS file: RS256, ES256 and EdDSA keys, the token's `kid` picks one.
    #[arg(long, value_name = "FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// The `aud` every token must carry [default: not checked].
    #[arg(long, value_name = "AUD")]
    pub auth_audience: Option<String>,
    /// The `iss` every token must carry [default: not checked].
    #[arg(long, value_name = "ISS")]
    pub auth_issuer: Option<String>,
    /// Clock skew allowed on a token's `exp`, `nbf` and `iat`, in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub auth_skew_secs: Option<u64>,
    /// With auth required, seconds a `/ws` connection upgraded without a token has to
    /// send its `auth` message before it is closed with 4408 [default: 5].
    #[arg(long, value_name = "SECS")]
    pub auth_timeout_secs: Option<u64>,
    /// Also take the token from a `token` query parameter of the upgrade's URL (off:
    /// URLs end up in logs and browser history) [default: false].
    #[arg(long, value_name = "BOOL")]
    pub auth_query_token: Option<bool>,
    /// An origin browsers may open `/ws` from (`https://app.example.com` or
    /// `https://*.example.com`); repeat for more. With any set, a handshake whose
    /// `Origin` is not among them gets 403 [default: none, any origin].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Serve with auth off on an address other than loopback (every key open to anyone
    /// who can reach it); without this the edge refuses to start that way.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Messages per second a `/ws` connection may send; past it they are refused
    /// (`rate_limited`), and a connection over it for longer than the grace is closed
    /// with 1008; 0: no limit [default: 1000].
    #[arg(long, value_name = "N")]
    pub messages_per_sec: Option<u16>,
    /// Messages a `/ws` connection may send at once above its rate [default: 2000].
    #[arg(long, value_name = "N")]
    pub messages_burst: Option<u16>,
    /// Seconds in a row a connection may stay over its message rate before it is
    /// closed with 1008 [default: 2].
    #[arg(long, value_name = "SECS")]
    pub rate_limit_grace_secs: Option<u8>,
    /// Most subscriptions one connection may hold; past it `too_many_subscriptions`
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// WebSockets open at once per source address; past it an upgrade gets 429; 0: no
    /// limit [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// New WebSockets per second per source address (429 past it); 0: no limit
    /// [default: 100].
    #[arg(long, value_name = "N")]
    pub new_connections_per_ip_per_sec: Option<u32>,
    /// New WebSockets at once per source address above that rate [default: 500].
    #[arg(long, value_name = "N")]
    pub new_connections_per_ip_burst: Option<u32>,
    /// A balancer whose `X-Forwarded-For` is believed: for connections from it, the
    /// limits apply to the first address of that header; repeat for more [default:
    /// none].
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A balancer that puts a PROXY protocol header (v1 or v2) before each connection
    /// it forwards: connections from it must start with one, and the client address
    /// it gives is the one the per-address limits count; repeat for more [default:
    /// none].
    #[arg(long = "proxy-protocol-from", value_name = "IP")]
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// Apply the per-address limits to loopback sources too (off: a local balancer
    /// or load generator is not limited) [default: false].
    #[arg(long, value_name = "BOOL")]
    pub limit_loopback: Option<bool>,
    /// With `auth = "optional"`, a key pattern connections without a token may read
    /// (`get`, `sub`); repeat for more [default: none].
    #[arg(long = "anonymous-read", value_name = "PATTERN")]
    pub anonymous_read: Vec<String>,
    /// The same for writing (`put`, `del`).
    #[arg(long = "anonymous-write", value_name = "PATTERN")]
    pub anonymous_write: Vec<String>,
    /// The same for publishing (`pub`).
    #[arg(long = "anonymous-publish", value_name = "PATTERN")]
    pub anonymous_publish: Vec<String>,
    /// The same for presence: the channels connections without a token may join and
    /// list (`join`, `presence`, a presence `sub`).
    #[arg(long = "anonymous-presence", value_name = "PATTERN")]
    pub anonymous_presence: Vec<String>,
}

/// Whether clients must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No tokens: every connection may touch every key.
    Off,
    /// A token, if given, must be valid; without one the connection is anonymous.
    Optional,
    /// Every `/ws` connection needs a valid token.
    Required,
}

/// How a worker reads its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RecvMode {
    /// A multishot receive armed per connection.
    Multishot,
    /// A multishot poll per connection; a receive per readiness event.
    Poll,
}

/// Where a worker puts the connections its listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// On the least-loaded worker with room (handed over through its ring); 503 only
    /// when every worker is full.
    LeastLoaded,
    /// On itself; 503 when it is full, whatever the others hold (for comparison).
    Local,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    listen_tls: Option<SocketAddr>,
    tls_only: Option<bool>,
    tls_certs: Option<Vec<CertFiles>>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    max_message: Option<usize>,
    max_outbound: Option<usize>,
    latest_above: Option<usize>,
    send_lowat: Option<u32>,
    presence_batch_ms: Option<u64>,
    heartbeat_secs: Option<u64>,
    handshake_timeout_secs: Option<u64>,
    drain_secs: Option<u64>,
    echo: Option<bool>,
    http_api: Option<bool>,
    compression: Option<bool>,
    compression_min_bytes: Option<usize>,
    compression_level: Option<u32>,
    compression_level_single: Option<u32>,
    inbox: Option<bool>,
    broadcast: Option<bool>,
    pin: Option<bool>,
    recv_mode: Option<RecvMode>,
    admission: Option<Admission>,
    cluster: Option<PathBuf>,
    cluster_secret_file: Option<PathBuf>,
    link_tls_ca_file: Option<PathBuf>,
    auth: Option<AuthMode>,
    auth_secret_file: Option<PathBuf>,
    auth_jwks_file: Option<PathBuf>,
    auth_audience: Option<String>,
    auth_issuer: Option<String>,
    auth_skew_secs: Option<u64>,
    auth_timeout_secs: Option<u64>,
    auth_query_token: Option<bool>,
    messages_per_sec: Option<u16>,
    messages_burst: Option<u16>,
    rate_limit_grace_secs: Option<u8>,
    max_subscriptions: Option<usize>,
    max_connections_per_ip: Option<u32>,
    new_connections_per_ip_per_sec: Option<u32>,
    new_connections_per_ip_burst: Option<u32>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    proxy_protocol_from: Option<Vec<std::net::IpAddr>>,
    limit_loopback: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    allow_anonymous: Option<bool>,
    anonymous_read: Option<Vec<String>>,
    anonymous_write: Option<Vec<String>>,
    anonymous_publish: Option<Vec<String>>,
    anonymous_presence: Option<Vec<String>>,
}

/// A resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Client listener.
    pub listen: SocketAddr,
    /// TLS client listener.
    pub listen_tls: Option<SocketAddr>,
    /// No cleartext listener.
    pub tls_only: bool,
    /// The TLS listener's certificates (SNI picks; the first by default).
    pub tls_certs: Vec<CertFiles>,
    /// Worker threads.
    pub workers: usize,
    /// Most connections per worker.
    pub max_connections: usize,
    /// Largest message.
    pub max_message: usize,
    /// Outbound bytes per connection before 4008.
    pub max_outbound: usize,
    /// Outbound bytes per connection past which `latest` subscriptions are conflated.
    pub latest_above: usize,
    /// `TCP_NOTSENT_LOWAT` of client connections (0: none).
    pub send_lowat: u32,
    /// How long presence events are gathered per subscription (zero: not at all).
    pub presence_batch: Duration,
    /// Ping interval.
    pub heartbeat: Duration,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// SIGTERM drain limit.
    pub drain: Duration,
    /// `/echo` on.
    pub echo: bool,
    /// The HTTP API on.
    pub http_api: bool,
    /// `permessage-deflate` accepted.
    pub compression: bool,
    /// Messages shorter than this go uncompressed.
    pub compression_min_bytes: usize,
    /// Deflate level of a change, shared by its subscribers (1 to 9).
    pub compression_level: u32,
    /// Deflate level of a message for one connection (1 to 9).
    pub compression_level_single: u32,
    /// Authenticated connections get their inbox.
    pub inbox: bool,
    /// `@all` reaches every connection.
    pub broadcast: bool,
    /// Pin workers to cores.
    pub pin: bool,
    /// How sockets are read.
    pub recv_mode: RecvMode,
    /// Where accepted connections go.
    pub admission: Admission,
    /// The cluster map file (`None`: the embedded default).
    pub cluster: Option<PathBuf>,
    /// The cluster secret's file.
    pub cluster_secret_file: Option<PathBuf>,
    /// TLS on the store links: the CA file stores' certificates are checked against.
    pub link_tls_ca_file: Option<PathBuf>,
    /// Client authentication.
    pub auth: AuthMode,
    /// The HS256 secret's file.
    pub auth_secret_file: Option<PathBuf>,
    /// The JWKS file.
    pub auth_jwks_file: Option<PathBuf>,
    /// Required `aud`.
    pub auth_audience: Option<String>,
    /// Required `iss`.
    pub auth_issuer: Option<String>,
    /// Clock skew allowed on token times.
    pub auth_skew: Duration,
    /// Time a connection upgraded without a token has to send its `auth` message
    /// (auth required).
    pub auth_timeout: Duration,
    /// Tokens are also taken from the upgrade URL's `token` query parameter.
    pub auth_query_token: bool,
    /// Each `/ws` connection's message budget.
    pub messages: crate::worker::conn::rate::Limits,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Limits per source address.
    pub per_ip: crate::worker::per_ip::IpLimits,
    /// Balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Balancers that send the PROXY protocol.
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// Loopback sources are limited too.
    pub limit_loopback: bool,
    /// Origins browsers may open `/ws` from (empty: any).
    pub allowed_origins: Vec<OriginPattern>,
    /// Auth off on a non-loopback address was asked for explicitly.
    pub allow_anonymous: bool,
    /// What connections without a token may touch (with auth optional).
    pub anonymous: Grant,
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
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// An allowed origin or an anonymous pattern does not parse.
    #[error("invalid setting: {0}")]
    Pattern(String),
}

/// Where the edge listens unless told otherwise: loopback only.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The cores this process may run on (workers, unless told otherwise).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A setting: its flag, else its line in the file, else its default.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

impl Config {
    /// Resolve flags over the file over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let f = match &args.config {
            Some(path) => read(path)?,
            None => FileConfig::default(),
        };
        let anonymous = anonymous_grant(args, &f)?;
        let (messages, per_ip) = (message_limits(args, &f), per_ip_limits(args, &f));
        let trusted_proxies = flags_or_file(&args.trusted_proxies, &f.trusted_proxies);
        let proxy_protocol_from = flags_or_file(&args.proxy_protocol_from, &f.proxy_protocol_from);
        let workers = pick(args.workers, f.workers, cores());
        let secs = |flag, file, default| Duration::from_secs(pick(flag, file, default));
        let mut c = Self {
            listen_tls: args.listen_tls.or(f.listen_tls),
            tls_only: pick(args.tls_only, f.tls_only, false),
            tls_certs: tls_certs(args, &f)?,
            listen: pick(args.listen, f.listen, DEFAULT_LISTEN),
            workers,
            max_connections: args
                .max_connections
                .or(f.max_connections)
                .unwrap_or_else(|| max_connections_for(crate::uring::net::nofile(), workers)),
            max_message: pick(args.max_message, f.max_message, 1 << 20),
            max_outbound: pick(args.max_outbound, f.max_outbound, 4 << 20),
            latest_above: pick(args.latest_above, f.latest_above, 64 << 10),
            send_lowat: pick(args.send_lowat, f.send_lowat, 64 << 10),
            presence_batch: Duration::from_millis(pick(
                args.presence_batch_ms,
                f.presence_batch_ms,
                100,
            )),
            heartbeat: secs(args.heartbeat_secs, f.heartbeat_secs, 25),
            handshake_timeout: secs(args.handshake_timeout_secs, f.handshake_timeout_secs, 10),
            drain: secs(args.drain_secs, f.drain_secs, 30),
            echo: pick(args.echo, f.echo, true),
            http_api: pick(args.http_api, f.http_api, true),
            compression: pick(args.compression, f.compression, false),
            compression_min_bytes: pick(args.compression_min_bytes, f.compression_min_bytes, 128),
            compression_level: pick(args.compression_level, f.compression_level, 6).clamp(1, 9),
            compression_level_single: pick(
                args.compression_level_single,
                f.compression_level_single,
                1,
            )
            .clamp(1, 9),
            inbox: pick(args.inbox, f.inbox, true),
            broadcast: pick(args.broadcast, f.broadcast, true),
            pin: pick(args.pin, f.pin, true),
            recv_mode: pick(args.recv_mode, f.recv_mode, RecvMode::Poll),
            admission: pick(args.admission, f.admission, Admission::LeastLoaded),
            cluster: args.cluster.clone().or(f.cluster),
            cluster_secret_file: args.cluster_secret_file.clone().or(f.cluster_secret_file),
            link_tls_ca_file: args.link_tls_ca_file.clone().or(f.link_tls_ca_file),
            auth: pick(args.auth, f.auth, AuthMode::Off),
            auth_secret_file: args.auth_secret_file.clone().or(f.auth_secret_file),
            auth_jwks_file: args.auth_jwks_file.clone().or(f.auth_jwks_file),
            auth_audience: args.auth_audience.clone().or(f.auth_audience),
            auth_issuer: args.auth_issuer.clone().or(f.auth_issuer),
            auth_skew: secs(args.auth_skew_secs, f.auth_skew_secs, 30),
            auth_timeout: secs(args.auth_timeout_secs, f.auth_timeout_secs, 5),
            auth_query_token: pick(args.auth_query_token, f.auth_query_token, false),
            messages,
            max_subscriptions: pick(
                args.max_subscriptions,
                f.max_subscriptions,
                MAX_SUBS_PER_CONN,
            )
            .max(1),
            per_ip,
            trusted_proxies,
            proxy_protocol_from,
            limit_loopback: pick(args.limit_loopback, f.limit_loopback, false),
            anonymous,
            allowed_origins: origins(&args.allowed_origins, f.allowed_origins)?,
            allow_anonymous: args.allow_anonymous || f.allow_anonymous.unwrap_or(false),
        };
        c.fit();
        c.check()?;
        Ok(c)
    }

    /// Bounds that follow from others.
    fn fit(&mut self) {
        // One message must always fit in a connection's outbound queue.
        self.max_outbound = self.max_outbound.max(self.max_message + (64 << 10));
        // Conflation must start well before a connection would be closed as slow.
        self.latest_above = self.latest_above.min(self.max_outbound / 2);
    }

    /// Settings that cannot work together, or cannot work at all.
    fn check(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.workers == 0 {
            return Err(ConfigError::Invalid("workers must be at least 1"));
        }
        if c.auth != AuthMode::Off && (c.auth_secret_file.is_some() == c.auth_jwks_file.is_some()) {
            return Err(ConfigError::Invalid(
                "auth needs exactly one of auth_secret_file and auth_jwks_file",
            ));
        }
        if c.listen_tls.is_some() == c.tls_certs.is_empty() {
            return Err(ConfigError::Invalid(
                "listen_tls and tls_certs go together: a TLS listener needs a certificate, and a certificate a TLS listener",
            ));
        }
        if c.tls_only && c.listen_tls.is_none() {
            return Err(ConfigError::Invalid("tls_only needs listen_tls"));
        }
        let public = |a: Option<SocketAddr>| a.is_some_and(|a| !a.ip().is_loopback());
        let open_beyond_loopback = public(Some(c.listen)) && !c.tls_only || public(c.listen_tls);
        if c.auth == AuthMode::Off && open_beyond_loopback && !c.allow_anonymous {
            return Err(ConfigError::Invalid(
                "auth is off and the listener is not on loopback: anyone who can reach it could read and write every key; set auth (edge.example.toml), or pass --allow-anonymous to mean it",
            ));
        }
        if c.heartbeat.is_zero() || c.handshake_timeout.is_zero() || c.auth_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "heartbeat, handshake and auth timeouts must be ≥ 1 s",
            ));
        }
        Ok(())
    }
}

/// The TLS certificates: `--tls-cert`/`--tls-key` pairs if given, else the file's
/// `tls_certs`.
fn tls_certs(args: &Args, f: &FileConfig) -> Result<Vec<CertFiles>, ConfigError> {
    if args.tls_cert.len() != args.tls_key.len() {
        return Err(ConfigError::Invalid(
            "each --tls-cert needs its --tls-key, in the same order",
        ));
    }
    let flags: Vec<CertFiles> = args
        .tls_cert
        .iter()
        .zip(&args.tls_key)
        .map(|(cert, key)| CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .collect();
    Ok(flags_or_file(&flags, &f.tls_certs))
}

/// A list from its repeatable flag if given, else from the file.
fn flags_or_file<T: Clone>(flags: &[T], file: &Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.clone().unwrap_or_default()
    } else {
        flags.to_vec()
    }
}

/// Each `/ws` connection's message budget.
fn message_limits(args: &Args, f: &FileConfig) -> crate::worker::conn::rate::Limits {
    crate::worker::conn::rate::Limits {
        rate: args.messages_per_sec.or(f.messages_per_sec).unwrap_or(1000),
        burst: args.messages_burst.or(f.messages_burst).unwrap_or(2000),
        grace: args
            .rate_limit_grace_secs
            .or(f.rate_limit_grace_secs)
            .unwrap_or(2),
    }
}

/// The limits per source address.
fn per_ip_limits(args: &Args, f: &FileConfig) -> crate::worker::per_ip::IpLimits {
    crate::worker::per_ip::IpLimits {
        connections: args
            .max_connections_per_ip
            .or(f.max_connections_per_ip)
            .unwrap_or(1000),
        rate: args
            .new_connections_per_ip_per_sec
            .or(f.new_connections_per_ip_per_sec)
            .unwrap_or(100),
        burst: args
            .new_connections_per_ip_burst
            .or(f.new_connections_per_ip_burst)
            .unwrap_or(500)
            .max(1),
    }
}

/// Descriptors kept aside for links, listeners, rings and files.
const RESERVED_FILES: u64 = 256;
/// The default's ceiling per worker (the slab is sized for it up front).
const MAX_CONNECTIONS_DEFAULT_CAP: usize = 250_000;

/// Connections per worker that `nofile` open files allow for `workers` workers.
fn max_connections_for(nofile: u64, workers: usize) -> usize {
    let per = nofile.saturating_sub(RESERVED_FILES) / (workers.max(1) as u64);
    usize::try_from(per).map_or(MAX_CONNECTIONS_DEFAULT_CAP, |p| {
        p.clamp(1, MAX_CONNECTIONS_DEFAULT_CAP)
    })
}

/// The anonymous grant: each list from the flags if given, else from the file. A
/// pattern with `{sub}` is refused (there is no subject).
fn anonymous_grant(args: &Args, f: &FileConfig) -> Result<Grant, ConfigError> {
    let spec = GrantSpec {
        read: flags_or_file(&args.anonymous_read, &f.anonymous_read),
        write: flags_or_file(&args.anonymous_write, &f.anonymous_write),
        publish: flags_or_file(&args.anonymous_publish, &f.anonymous_publish),
        presence: flags_or_file(&args.anonymous_presence, &f.anonymous_presence),
    };
    Grant::compile(&spec, "").map_err(|e| ConfigError::Pattern(format!("anonymous grant: {e}")))
}

/// The origin allow-list: the flags' if any, else the file's.
fn origins(flags: &[String], file: Option<Vec<String>>) -> Result<Vec<OriginPattern>, ConfigError> {
    let list = if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags.to_vec()
    };
    list.iter()
        .map(|p| OriginPattern::parse(p).map_err(|e| ConfigError::Pattern(e.to_string())))
        .collect()
}

fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(name.clone(), e))?;
    toml::from_str(&text).map_err(|e| ConfigError::Toml(name, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::grant::Access;

    #[test]
    fn example_file_parses_and_flags_override_it() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("edge.example.toml");
        let args = Args {
            config: Some(example),
            workers: Some(3),
            ..Args::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.heartbeat, Duration::from_secs(25));
        assert!(c.echo);
    }

    #[test]
    fn the_production_template_requires_auth_beyond_loopback() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/config/edge.toml");
        let args = Args {
            config: Some(PathBuf::from(path)),
            ..Args::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.auth, AuthMode::Required);
        assert!(!c.listen.ip().is_loopback());
        assert!(c.auth_jwks_file.is_some() && c.auth_audience.is_some());
        assert!(!c.auth_query_token && !c.echo && !c.allowed_origins.is_empty());
        // Turned off there, it would not start.
        let off = Args {
            auth: Some(AuthMode::Off),
            ..args
        };
        assert!(Config::resolve(&off).is_err());
    }

    #[test]
    fn max_connections_defaults_to_what_the_open_file_limit_allows() {
        assert_eq!(max_connections_for(20_000, 2), 9_872);
        assert_eq!(max_connections_for(1_048_576, 1), 250_000);
        assert_eq!(max_connections_for(u64::MAX, 3), 250_000);
        assert_eq!(max_connections_for(100, 4), 1);
    }

    #[test]
    fn auth_needs_exactly_one_key_source() {
        let on = |secret: Option<&str>, jwks: Option<&str>| {
            Config::resolve(&Args {
                auth: Some(AuthMode::Required),
                auth_secret_file: secret.map(PathBuf::from),
                auth_jwks_file: jwks.map(PathBuf::from),
                ..Args::default()
            })
        };
        assert!(matches!(on(None, None), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            on(Some("s"), Some("j")),
            Err(ConfigError::Invalid(_))
        ));
        let c = on(Some("s"), None).unwrap();
        assert_eq!(c.auth, AuthMode::Required);
        assert_eq!(c.auth_skew, Duration::from_secs(30));
        assert!(on(None, Some("j")).is_ok());
        // Off is the default and needs nothing.
        assert_eq!(
            Config::resolve(&Args::default()).unwrap().auth,
            AuthMode::Off
        );
    }

    #[test]
    fn the_anonymous_grant_compiles_and_has_no_subject() {
        let with = |read: &str| {
            Config::resolve(&Args {
                anonymous_read: vec![read.to_owned()],
                ..Args::default()
            })
        };
        let c = with("public/*").unwrap();
        assert!(c.anonymous.allows(Access::Read, "public/x"));
        assert!(!c.anonymous.allows(Access::Write, "public/x"));
        assert!(matches!(with("user/{sub}/*"), Err(ConfigError::Pattern(_))));
        assert!(matches!(with("a*b"), Err(ConfigError::Pattern(_))));
        let none = Config::resolve(&Args::default()).unwrap();
        assert!(
            !none.anonymous.allows(Access::Read, "public/x"),
            "empty by default"
        );
    }

    #[test]
    fn auth_off_beyond_loopback_needs_allow_anonymous() {
        let public = |allow: bool, auth: Option<AuthMode>| {
            Config::resolve(&Args {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
                allow_anonymous: allow,
                auth,
                auth_secret_file: auth.map(|_| PathBuf::from("s")),
                ..Args::default()
            })
        };
        assert!(matches!(public(false, None), Err(ConfigError::Invalid(_))));
        assert!(public(true, None).is_ok(), "asked for explicitly");
        assert!(public(false, Some(AuthMode::Required)).is_ok(), "auth on");
        let v6 = Config::resolve(&Args {
            listen: Some("[::1]:8080".parse().unwrap()),
            ..Args::default()
        });
        assert!(v6.is_ok(), "IPv6 loopback is loopback");
    }

    #[test]
    fn unknown_keys_and_zero_workers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.toml");
        std::fs::write(&p, "listne = \"127.0.0.1:1\"\n").unwrap();
        let args = Args {
            config: Some(p),
            ..Args::default()
        };
        assert!(matches!(Config::resolve(&args), Err(ConfigError::Toml(..))));
        let args = Args {
            workers: Some(0),
            ..Args::default()
        };
        assert!(matches!(
            Config::resolve(&args),
            Err(ConfigError::Invalid(_))
        ));
    }
}
