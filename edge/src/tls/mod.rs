//! TLS in the edge: the certificates the `listen_tls` listener serves ([`certs`]: PEM
//! files in, one rustls `ServerConfig` out, picked by SNI, reloaded when the files
//! change or on SIGHUP), and one session's sans-IO record layer ([`session`]), between
//! a connection's receive buffers and the WebSocket framer, or a store link's and its
//! frame decoder; the store links' client config ([`link`]).

pub mod certs;
pub mod link;
pub mod session;

/// The crypto provider of every TLS config of the edge: `ring`, a small C and assembly
/// build. Its key exchanges are the classical ones (X25519, P-256, P-384), which is why
/// rustls marks it deprecated; the post-quantum hybrid needs the `aws-lc-rs` provider
/// (a CMake build of AWS-LC).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    let p = rustls::crypto::ring::default_provider();
    std::sync::Arc::new(p)
}

/// Whether the kernel offers kTLS (the `tls` upper-layer protocol is registered). When it
/// does not, records are sealed and opened in user space (every connection encrypts its
/// own copy of a shared frame); the log says which path runs.
pub fn kernel_tls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
}
